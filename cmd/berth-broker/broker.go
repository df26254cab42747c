package main

import (
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/internal/agentcert"
	"github.com/berth-dev/berth/internal/agentextend"
	"github.com/berth-dev/berth/internal/agenthub"
	"github.com/berth-dev/berth/internal/audit"
	"github.com/berth-dev/berth/internal/broker"
	"github.com/berth-dev/berth/internal/cluster"
	"github.com/berth-dev/berth/internal/httpapi"
	"github.com/berth-dev/berth/internal/jwks"
	"github.com/berth-dev/berth/internal/listencert"
	"github.com/berth-dev/berth/internal/logattr"
	"github.com/berth-dev/berth/internal/logging"
	"github.com/berth-dev/berth/internal/metrics"
	"github.com/berth-dev/berth/internal/netlimit"
	"github.com/berth-dev/berth/internal/oauth"
	"github.com/berth-dev/berth/internal/pki"
	"github.com/berth-dev/berth/internal/portal"
	"github.com/berth-dev/berth/internal/postgres"
	"github.com/berth-dev/berth/internal/sqlite"
	"github.com/berth-dev/berth/internal/tlsaccept"
)

// defaultConfigPath is where the packaged broker keeps its properties file.
const defaultConfigPath = "/etc/berth/broker.properties"

// SoftwareStatementFile is the file, in the working path, that holds the initial
// software statement for local agents.
const SoftwareStatementFile = "agent-software-statement"

// Main is the broker process: tests run it in-process exactly as main does.
type Main struct {
	Config     Config
	ConfigPath string
	Logger     *slog.Logger
	// Stderr receives config warnings before the logger exists, and the
	// log when no log-directory is set.
	Stderr io.Writer

	// certValidity is the lifetime of the certificates the broker issues
	// itself for its listeners (pki.LeafValidity); certCheck is how often
	// they are checked for renewal (listencert.DefaultCheck); statsMaxAge is how
	// long the metrics reuse the broker's figures (5s). Tests shorten them.
	certValidity time.Duration
	certCheck    time.Duration
	statsMaxAge  time.Duration

	// logger is the logger Run opened (nil when Logger was given).
	logger *logging.Logger
	certs  *listencert.Manager
	// metrics is nil unless metrics-port is set.
	metrics   *metrics.Broker
	metricsLn net.Listener

	store store
	// node is the broker's membership of a cluster on PostgreSQL; nil on SQLite.
	node *cluster.Node
	auth *oauth.Authority
	// external verifies the tokens of the registered external authorization
	// servers (register-auth-server).
	external *oauth.External
	svc      *broker.Service
	hub      *agenthub.Hub
	ca       *pki.CA
	// webGatewayCA signs the agents' web gateway certificates (loadWebGatewayCA).
	webGatewayCA *pki.CA
	servers      []*http.Server
	clientLn     net.Listener
	agentLn      net.Listener
	// resolverLn is the Connection Gateway resolver's listener; nil unless
	// enable-gateway.
	resolverLn net.Listener
	// limited are the connection limits of the listeners, by name.
	limited map[string]*netlimit.Listener
	// handshakes are the listeners' TLS handshake pools, by name.
	handshakes map[string]*tlsaccept.Listener
	// ticketSecret derives the connectors' session ticket keys
	// (loadTicketSecret); runCtx ends with Close.
	ticketSecret []byte
	runCtx       context.Context
	webhooks     httpapi.WebhookRegistry // startWebhooks (webhooks.go); nil without one
	// webhookBackoff, when set, is the first retry delay of webhook
	// deliveries (tests; the default is webhook.DefaultBackoffMin).
	webhookBackoff time.Duration

	// audit records the API's state-changing calls (startAudit, audit.go).
	audit *audit.Appender

	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// NewMain returns a Main with the default configuration.
func NewMain() *Main {
	return &Main{Config: DefaultConfig(), ConfigPath: defaultConfigPath, Stderr: os.Stderr}
}

// ParseFlags reads --config and loads the file.
func (m *Main) ParseFlags(args []string) error {
	fs := flag.NewFlagSet("berth-broker", flag.ContinueOnError)
	fs.SetOutput(m.Stderr)
	fs.StringVar(&m.ConfigPath, "config", m.ConfigPath, "broker properties `file`")
	showVersion := fs.Bool("version", false, "print the version and exit")
	fs.Usage = func() {
		fmt.Fprintf(m.Stderr, `Usage: berth-broker [--config FILE]
       berth-broker COMMAND [--config FILE] [options]

Runs the berth Session Manager broker (client API on
client-to-broker-connector-https-port, agents on agent-to-broker-connector-https-port).

Admin commands (run on the broker host; they use the broker's store directly):
%s
Options:
`, adminUsage())
		fs.PrintDefaults()
		fmt.Fprintf(m.Stderr, "\nExample:\n  berth-broker --config /etc/berth/broker.properties\n")
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *showVersion {
		fmt.Fprintln(m.Stderr, "berth-broker", version)
		return exitError{0}
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q (see berth-broker --help)", fs.Arg(0))
	}
	return m.loadConfig()
}

func (m *Main) loadConfig() error {
	cfg, err := LoadConfig(m.ConfigPath, func(key, msg string) {
		fmt.Fprintf(m.Stderr, "berth-broker: warning: %s: %s\n", key, msg)
	})
	if err != nil {
		return err
	}
	m.Config = cfg
	return nil
}

// openStore opens the configured store and the token authority on it. admin
// opens it beside a running broker, for the admin commands.
func (m *Main) openStore(ctx context.Context, admin bool) error {
	c := &m.Config
	if err := os.MkdirAll(c.WorkingPath, 0o700); err != nil {
		return fmt.Errorf("create working path: %w", err)
	}
	switch c.PersistenceDB {
	case "", "sqlite":
		path := c.PersistenceDSN
		if path == "" {
			path = filepath.Join(c.WorkingPath, "berth.db")
		}
		st, err := sqlite.OpenWith(ctx, path, sqlite.Options{NoSessionCache: admin, LoadInBackground: !admin})
		if err != nil {
			return fmt.Errorf("open store: %w", err)
		}
		m.store = st
	case "postgresql":
		log := m.Logger
		if log == nil {
			log = slog.New(slog.DiscardHandler)
		}
		st, err := postgres.Open(ctx, c.PersistenceDSN, log)
		if err != nil {
			return fmt.Errorf("open store (persistence-dsn): %w", err)
		}
		m.store = st
	default:
		return fmt.Errorf("persistence-db: %q is not supported (use sqlite or postgresql)", c.PersistenceDB)
	}
	m.auth = oauth.New(m.store, oauth.BrokerIssuer)
	m.auth.AccessTokenTTL = c.AccessTokenDuration
	m.auth.ConnectionTokenTTL = c.ConnectTokenDuration
	m.auth.Registrations = oauth.RegistrationLimits{PerMinute: c.RegistrationsPerMinute, PerAddressPerMinute: c.RegistrationsPerAddress}
	m.auth.UnlinkedAgentClientTTL = c.UnlinkedAgentTimeout
	if m.Logger != nil {
		m.auth.Logger = m.Logger
	}
	return nil
}

// Run starts the broker and returns once it listens; Close stops it. Each
// step below is one method, run in this order; when one fails, Close stops
// what the earlier ones started.
func (m *Main) Run(ctx context.Context) (err error) {
	if m.Logger == nil {
		if err := m.openLogger(); err != nil {
			return err
		}
	}
	defer func() {
		if err != nil {
			m.Close()
		}
	}()
	// Headroom first: every agent link and client connection holds a file.
	raiseOpenFileLimit(m.Logger, m.Config.AgentMaxConns+m.Config.ClientMaxConns+256)
	if err := m.openStore(ctx, false); err != nil {
		return err
	}
	if err := m.prepareTokens(ctx); err != nil {
		return err
	}
	if err := m.loadAuthServers(ctx); err != nil {
		return err
	}
	if err := m.loadAuthorities(ctx); err != nil {
		return err
	}
	clientCert, agentCert, err := m.connectorCertificates()
	if err != nil {
		return err
	}
	brokerID := m.brokerID()
	hubDisp := &hubDispatcher{}
	disp, leaser, err := m.startCluster(ctx, brokerID, hubDisp)
	if err != nil {
		return err
	}
	if err := m.startService(ctx, brokerID, disp, leaser); err != nil {
		return err
	}
	m.newMetrics(leaser)
	m.startHub(hubDisp)
	m.runBackground()
	m.startWebhooks(leaser) // webhooks.go
	m.startAudit(leaser)
	if err := m.startListeners(ctx, clientCert, agentCert); err != nil {
		return err
	}
	m.Logger.Info("broker started", "version", version, "client_addr", m.clientLn.Addr().String(),
		"agent_addr", m.agentLn.Addr().String(), "working_path", m.Config.WorkingPath, logattr.BrokerID, brokerID)
	return nil
}

// backgroundLoader is a store that loads its caches in the background after
// it opens (SQLite's session mirror).
type backgroundLoader interface {
	Loaded() <-chan struct{}
	LoadError() error
}

// waitStoreLoaded waits for the store's background load, which ran while
// the rest of the broker started. Listening only after it keeps the first
// agents' handshakes from starving the load, which their session writes
// would wait for. A failed load is logged, not fatal: the store then reads
// with SQL, and its next session write loads it again.
func (m *Main) waitStoreLoaded(ctx context.Context) error {
	l, ok := m.store.(backgroundLoader)
	if !ok {
		return nil
	}
	select {
	case <-l.Loaded():
	case <-ctx.Done():
		return fmt.Errorf("load store: %w", ctx.Err())
	}
	if err := l.LoadError(); err != nil && m.Logger != nil {
		m.Logger.Warn("store: sessions not loaded into memory; reads use SQL until the next session write loads them", "err", err)
	}
	return nil
}

// prepareTokens makes sure the token authority has a signing key and local
// agents a software statement.
func (m *Main) prepareTokens(ctx context.Context) error {
	if err := m.auth.EnsureKey(ctx); err != nil {
		return fmt.Errorf("signing key: %w", err)
	}
	return m.ensureSoftwareStatement(ctx)
}

// loadAuthServers reads the external authorization servers registered in the
// store, whose access tokens the API accepts; runBackground reads them again
// every 2 s.
func (m *Main) loadAuthServers(ctx context.Context) error {
	client, err := m.authServerClient()
	if err != nil {
		return err
	}
	m.external = &oauth.External{Store: m.store, Client: client, Logger: m.Logger}
	if err := m.external.Load(ctx); err != nil {
		return err
	}
	if !m.Config.EnableAuthorizationServer && m.Config.EnableAuthorization {
		m.Logger.Info("enable-authorization-server = false: the API accepts only the tokens of registered auth servers",
			"auth_servers", len(m.external.Status()))
	}
	return nil
}

// authServerClient is the HTTP client that fetches the key sets of external
// authorization servers: the system roots plus auth-server-ca-bundle-file.
func (m *Main) authServerClient() (*http.Client, error) {
	var bundle []byte
	if f := m.Config.AuthServerCABundleFile; f != "" {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, fmt.Errorf("auth-server-ca-bundle-file: %w", err)
		}
		bundle = b
	}
	c, err := jwks.NewClient(bundle, 0)
	if err != nil {
		return nil, fmt.Errorf("auth-server-ca-bundle-file %s: %w", m.Config.AuthServerCABundleFile, err)
	}
	return c, nil
}

// loadAuthorities loads the broker's CA, the web gateway CA and the TLS
// session ticket secret, and builds the manager of the listeners'
// certificates on the broker's CA.
func (m *Main) loadAuthorities(ctx context.Context) error {
	c := &m.Config
	if err := m.loadTicketSecret(ctx); err != nil {
		return err
	}
	ca, err := m.loadCA(ctx)
	if err != nil {
		return fmt.Errorf("certificate authority: %w", err)
	}
	m.ca = ca
	if m.webGatewayCA, err = m.loadWebGatewayCA(ctx); err != nil {
		return fmt.Errorf("web gateway certificate authority: %w", err)
	}
	m.certs = listencert.New(listencert.Config{
		Dir:      c.WorkingPath,
		CA:       ca,
		Names:    func() []string { return append(pki.HostNames(), c.certificateNames()...) },
		Validity: m.certValidity,
		Logger:   m.Logger.With("component", "certificates"),
	})
	return nil
}

// connectorCertificates returns the holders of the client and agent
// connectors' certificates: their configured files, or the one the broker
// issues.
func (m *Main) connectorCertificates() (client, agent *pki.Holder, err error) {
	c := &m.Config
	if client, err = m.certs.Holder("client", c.ClientCertFile, c.ClientKeyFile); err != nil {
		return nil, nil, err
	}
	if agent, err = m.certs.Holder("agent", c.AgentCertFile, c.AgentKeyFile); err != nil {
		return nil, nil, err
	}
	return client, agent, nil
}

// brokerID is broker-id, or the host name when it is not set.
func (m *Main) brokerID() string {
	if id := m.Config.BrokerID; id != "" {
		return id
	}
	host, _ := os.Hostname()
	return host
}

// startCluster joins the brokers sharing the PostgreSQL store: the cluster
// node relays commands for agents linked to other brokers and holds the
// maintenance lease. On SQLite there is no cluster: commands go to the hub
// and leaser is nil.
func (m *Main) startCluster(ctx context.Context, brokerID string, hubDisp *hubDispatcher) (broker.Dispatcher, broker.Leaser, error) {
	pg, ok := m.store.(*postgres.Store)
	if !ok {
		return hubDisp, nil, nil
	}
	m.node = cluster.New(pg.Pool(), brokerID, hubDisp, m.locateAgent, cluster.Options{
		Logger:       m.Logger,
		OnBrokerDead: func(ctx context.Context, _ string) { m.svc.Redrive(ctx, 0) },
		Address:      m.clusterAddress(),
	})
	if err := m.node.Start(ctx); err != nil {
		return nil, nil, err
	}
	return m.node, m.node, nil
}

// startService builds the broker core on the store.
func (m *Main) startService(ctx context.Context, brokerID string, disp broker.Dispatcher, leaser broker.Leaser) error {
	c := &m.Config
	points, extension, interval := c.lifetimeSettings()
	groupSrc, groupLimits, err := c.groupSources(m.Logger)
	if err != nil {
		return err
	}
	svc, err := broker.New(ctx, m.store, disp, m.auth, broker.Config{
		BrokerID:               brokerID,
		QueueMaxSize:           c.QueueMaxSize,
		QueueMaxTime:           c.QueueMaxTime,
		Retries:                retries(c.Retries),
		DeletedRetention:       max(c.DeleteSessionDuration, time.Nanosecond), // 0: purge at once
		UnreachableServerTTL:   c.UnreachableServerTimeout,
		UnreachableSessionsTTL: c.UnreachableSessionsTimeout,
		HeartbeatTimeout:       c.AgentHeartbeatTimeout,
		UpdateInterval:         c.AgentHeartbeatTimeout / 3,
		MaxUpdateRate:          c.AgentMaxUpdatesPerSecond,
		ScreenshotMaxWidth:     c.ScreenshotMaxWidth,
		ScreenshotMaxHeight:    c.ScreenshotMaxHeight,
		ScreenshotFormat:       c.ScreenshotFormat,
		AutorunMaxArgs:         c.AutorunMaxArgs,
		AutorunMaxArgLength:    c.AutorunMaxArgLength,
		Limits:                 c.quotaLimits(c.sessionLimits()),
		Groups:                 groupSrc,
		GroupLimits:            groupLimits,
		WarningPoints:          points,
		ExtensionDefault:       extension,
		PolicyInterval:         interval,
		Scaling: broker.ScalingConfig{IdleAfter: time.Duration(c.ScalingIdleServerMinutes * float64(time.Minute)),
			Interval: time.Duration(c.ScalingInterval * float64(time.Second))},
		EventRetention: time.Duration(c.EventRetentionHours * float64(time.Hour)),
	}, m.Logger)
	if err != nil {
		return fmt.Errorf("start broker: %w", err)
	}
	svc.Leaser = leaser
	svc.Pruners = []broker.Pruner{m.auth}
	m.svc = svc
	return nil
}

// newMetrics builds the Prometheus metrics (metrics-port set) and makes the
// broker core and the token authority report to them; the hub does too
// (startHub).
func (m *Main) newMetrics(leaser broker.Leaser) {
	if m.Config.MetricsPort == MetricsOff {
		return
	}
	m.metrics = metrics.New(metrics.Source{
		Stats:             m.svc.Stats,
		Capacity:          m.svc.LastCapacity,
		AgentLinks:        func() int { return m.hub.Count() },
		Leader:            func(ctx context.Context) bool { return leaser == nil || leaser.IsLeader(ctx) },
		CertificateExpiry: m.certs.Expiry,
		AuthServers:       m.external.Status,
	}, metrics.Options{Version: version, StatsMaxAge: m.statsMaxAge, Logger: m.Logger})
	m.svc.SetMetrics(m.metrics)
	m.auth.Observer = m.metrics
	m.external.Observer = m.metrics
}

// startHub builds the agent hub, the broker's side of the agent links, and
// gives it to hubDisp.
func (m *Main) startHub(hubDisp *hubDispatcher) {
	c := &m.Config
	opts := agenthub.Options{
		RequireAuth:      c.EnableAgentAuthorization,
		HeartbeatTimeout: c.AgentHeartbeatTimeout,
		UpdateInterval:   c.AgentHeartbeatTimeout / 3,
		Timing:           m.svc.LinkTiming,
		GatewayCAKeyID:   m.webGatewayCA.KeyID(),
		Logger:           m.Logger,
		FleetSize:        m.svc.ServerCount,
		GCHeadroom:       agenthub.DefaultGCHeadroom,
	}
	if m.metrics != nil {
		opts.Observer = m.metrics
	}
	m.hub = agenthub.New(m.svc, agentAuth{m.auth}, opts)
	hubDisp.hub = m.hub
}

// runBackground starts the broker core's loop, the cluster node's, the
// certificate checks and the reading of the registered auth servers, until
// Close.
func (m *Main) runBackground() {
	runCtx, cancel := context.WithCancel(context.Background())
	m.cancel, m.runCtx = cancel, runCtx
	m.goRun(func() { _ = m.svc.Run(runCtx) })
	if m.node != nil {
		m.goRun(func() { _ = m.node.Run(runCtx) })
	}
	m.goRun(func() { m.external.Run(runCtx) })
	m.goRun(func() { m.certs.Run(runCtx, cmp.Or(m.certCheck, listencert.DefaultCheck)) })
}

// goRun runs f in a goroutine that Close waits for.
func (m *Main) goRun(f func()) {
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		f()
	}()
}

// apiHandler is the client connector: the client API, and the web portal
// at /portal/ (portal-enabled) in front of it. Amazon's paths and berth's
// /berth/v1/ stay the API's.
func (m *Main) apiHandler() (http.Handler, error) {
	api := m.clientAPI()
	if !m.Config.PortalEnabled {
		return api, nil
	}
	p, err := m.newPortal()
	if err != nil {
		return nil, err
	}
	mux := http.NewServeMux()
	mux.Handle("/portal/", p)
	mux.Handle("/portal", p)
	mux.Handle("/", api)
	if m.runCtx != nil {
		m.goRun(func() { p.Run(m.runCtx, 0) })
	}
	return mux, nil
}

// newPortal builds the web portal from the portal-* keys.
func (m *Main) newPortal() (*portal.Portal, error) {
	c := &m.Config
	ps, ok := m.store.(portal.Store)
	if !ok {
		return nil, errors.New("portal-enabled: this store cannot keep portal sessions")
	}
	cfg := portal.Config{Service: m.svc, Store: ps, AdminGroup: c.PortalAdminGroup, SessionLifetime: c.PortalSessionLifetime,
		ExternalURL: c.PortalExternalURL, Logger: m.Logger}
	if m.audit != nil {
		cfg.Audit = m.audit // audit.go: portal actions are audited
	}
	if c.PortalOIDCIssuer != "" {
		o := &portal.OIDCConfig{Issuer: c.PortalOIDCIssuer, ClientID: c.PortalOIDCClientID, ClientSecret: c.PortalOIDCClientSecret,
			Scopes: portalScopes(c.PortalOIDCScopes), UserClaim: c.PortalUserClaim, GroupsClaim: c.PortalGroupsClaim}
		if f := c.PortalOIDCClientSecretFile; f != "" {
			b, err := os.ReadFile(f)
			if err != nil {
				return nil, fmt.Errorf("portal-oidc-client-secret-file: %w", err)
			}
			if o.ClientSecret = strings.TrimSpace(string(b)); o.ClientSecret == "" {
				return nil, fmt.Errorf("portal-oidc-client-secret-file %s: the file is empty", f)
			}
		}
		if c.PortalUserClaimPattern != "" {
			re, err := regexp.Compile(c.PortalUserClaimPattern)
			if err != nil {
				return nil, fmt.Errorf("portal-user-claim-pattern: %w", err)
			}
			o.UserPattern = re
		}
		var bundle []byte
		if f := c.PortalOIDCCABundleFile; f != "" {
			b, err := os.ReadFile(f)
			if err != nil {
				return nil, fmt.Errorf("portal-oidc-ca-bundle-file: %w", err)
			}
			bundle = b
		}
		hc, err := jwks.NewClient(bundle, 15*time.Second)
		if err != nil {
			return nil, fmt.Errorf("portal-oidc-ca-bundle-file %s: %w", c.PortalOIDCCABundleFile, err)
		}
		o.HTTPClient = hc
		cfg.OIDC = o
	}
	return portal.New(cfg)
}

// clientAPI is the client API (httpapi).
func (m *Main) clientAPI() http.Handler {
	c := &m.Config
	apiSrv := &httpapi.Server{Service: m.svc, Health: m.store, Logger: m.Logger, Webhooks: m.webhooks}
	if m.metrics != nil {
		apiSrv.Observer = m.metrics
	}
	if m.audit != nil {
		apiSrv.Audit, apiSrv.AuditLog, apiSrv.AuditClients = m.audit, m.store.(httpapi.AuditReader), c.auditClients()
	}
	if c.EnableAuthorization {
		apiSrv.Verifier = &oauth.APIVerifier{Authority: m.auth, BrokerTokens: c.EnableAuthorizationServer, External: m.external}
	}
	if c.EnableAuthorizationServer {
		apiSrv.TokenHandler = m.auth.TokenHandler()
		apiSrv.JWKSHandler = m.auth.JWKSHandler()
	}
	if c.EnableAPIYAML {
		apiSrv.Spec = api.OpenAPIDocument
	}
	return apiSrv.Handler()
}

// agentMux is the agent connector: agent links and registration, the web
// gateway certificates (with agent authorization), the DCV token verifier
// and health.
func (m *Main) agentMux() http.Handler {
	c := &m.Config
	mux := http.NewServeMux()
	dcv := m.dcvVerifier()
	mux.Handle("/agent/connect", dcv.TrackLinks(m.hub.Handler()))
	mux.Handle("POST /agent/register", m.auth.RegisterAgentHandler())
	mux.Handle("GET /.well-known/jwks.json", m.auth.JWKSHandler())
	if c.EnableAgentAuthorization {
		var issued func()
		if m.metrics != nil {
			issued = m.metrics.AgentCertificateIssued
		}
		mux.Handle("POST /agent/certificate", &agentcert.Handler{
			Auth:     agentAuth{m.auth},
			Reports:  reportedNames{m.svc},
			CA:       m.webGatewayCA,
			Validity: c.AgentCertValidity,
			OwnNames: m.certs.Names,
			IsLocal:  agentcert.LocalAddrs,
			Issued:   issued,
			Logger:   m.Logger.With("component", "certificates"),
		})
	}
	mux.Handle("POST /agent/sessions/{id}/extend", &agentextend.Handler{Auth: agentAuth{m.auth}, Sessions: m.svc, Extender: m.svc,
		Logger: m.Logger.With("component", "extend")})
	mux.Handle("POST /agent/validate-authentication-token", dcv)
	mux.Handle("GET /health", httpapi.HealthHandler(m.store))
	return mux
}

// startListeners waits for the store's background load (waitStoreLoaded),
// then opens the client and agent connectors, then the Connection
// Gateway resolver (enable-gateway) and the metrics listener (metrics-port).
func (m *Main) startListeners(ctx context.Context, clientCert, agentCert *pki.Holder) error {
	if err := m.waitStoreLoaded(ctx); err != nil {
		return err
	}
	c := &m.Config
	api, err := m.apiHandler()
	if err != nil {
		return err
	}
	agents := m.agentMux()
	clientTLS, agentTLS := listencert.ServerTLS(clientCert), listencert.ServerTLS(agentCert)
	if m.ticketSecret != nil {
		// Tickets any broker on the store accepts, after a restart too.
		if err := tlsaccept.RotateTicketKeys(cmp.Or(m.runCtx, context.Background()), m.ticketSecret,
			tlsaccept.DefaultTicketPeriod, clientTLS, agentTLS); err != nil {
			return err
		}
	}
	if m.clientLn, err = m.listenTLS("client", c.ClientBindHost, c.ClientPort,
		netlimit.Limits{Max: c.ClientMaxConns, MaxPerAddr: c.ClientMaxConnsPerAddr}, clientTLS); err != nil {
		return fmt.Errorf("client-to-broker-connector: %w", err)
	}
	if m.agentLn, err = m.listenTLS("agent", c.AgentBindHost, c.AgentPort,
		netlimit.Limits{Max: c.AgentMaxConns, MaxPerAddr: c.AgentMaxConnsPerAddr}, agentTLS); err != nil {
		return fmt.Errorf("agent-to-broker-connector: %w", err)
	}
	m.serve(m.clientLn, api)
	m.serve(m.agentLn, agents)
	if c.EnableConnectionGateway {
		if err := m.startResolver(); err != nil {
			return err
		}
	}
	if m.metrics != nil {
		if err := m.startMetrics(); err != nil {
			return err
		}
	}
	return nil
}

func retries(n int) int {
	if n == 0 {
		return -1 // broker.Config: 0 means default, -1 none
	}
	return n
}

// serve serves h on ln until Close. A connection must finish its TLS
// handshake and each request its header within
// connector-request-header-timeout-seconds, and a whole request, body
// included, within connector-request-read-timeout-seconds of its first byte;
// a kept-alive connection idle for connector-idle-timeout-seconds is closed.
// A hijacked connection (a WebSocket: agent links) is bound by none of them:
// net/http clears its deadlines on Hijack.
func (m *Main) serve(ln net.Listener, h http.Handler) {
	c := &m.Config
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: cmp.Or(c.RequestHeaderTimeout, 10*time.Second),
		ReadTimeout:       cmp.Or(c.RequestReadTimeout, 30*time.Second),
		IdleTimeout:       cmp.Or(c.IdleTimeout, 2*time.Minute),
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(m.Logger.Handler(), slog.LevelDebug),
	}
	m.servers = append(m.servers, srv)
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			m.Logger.Error("listener stopped", "addr", ln.Addr().String(), "err", err)
		}
	}()
}

// metricsLimits bound the metrics listener's connections: scrapers are few.
var metricsLimits = netlimit.Limits{Max: 64, MaxPerAddr: 16}

// listenTLS listens on host:port with the connection limits lim (the
// listener named name in logs and metrics), then TLS: handshakes run on a
// bounded pool, oldest first, each within
// connector-request-header-timeout-seconds, and a connection that waited
// longer than tlsaccept.DefaultMaxWait for its handshake is closed
// (berth_broker_connections_refused_total{reason="handshake_queue"}), so
// that a connect storm's admitted handshakes finish well inside the agents'
// dial timeout instead of all slowing down together.
func (m *Main) listenTLS(name, host string, port int, lim netlimit.Limits, cfg *tls.Config) (net.Listener, error) {
	ln, err := net.Listen("tcp", net.JoinHostPort(host, strconv.Itoa(port)))
	if err != nil {
		return nil, err
	}
	opts := netlimit.Options{Name: name, Logger: m.Logger}
	if o, ok := any(m.metrics).(netlimit.Observer); ok && m.metrics != nil {
		opts.Observer = o
	}
	l := netlimit.Wrap(ln, lim, opts)
	if m.limited == nil {
		m.limited = make(map[string]*netlimit.Listener)
	}
	m.limited[name] = l
	hopts := tlsaccept.Options{Name: name, Logger: m.Logger,
		HandshakeTimeout: cmp.Or(m.Config.RequestHeaderTimeout, 10*time.Second)}
	if opts.Observer != nil {
		hopts.Observer = opts.Observer
	}
	h := tlsaccept.New(l, cfg, hopts)
	if m.handshakes == nil {
		m.handshakes = make(map[string]*tlsaccept.Listener)
	}
	m.handshakes[name] = h
	return h, nil
}

// startMetrics opens the metrics listener (metrics-port): Prometheus metrics
// at /metrics over HTTPS, with the certificate the broker issues from its
// CA, so that a scraper trusts it with ca.pem whatever certificates the
// other listeners use.
func (m *Main) startMetrics() error {
	c := &m.Config
	h, err := m.certs.Holder("metrics", "", "")
	if err != nil {
		return err
	}
	if m.metricsLn, err = m.listenTLS("metrics", c.MetricsBindHost, c.MetricsPort, metricsLimits, listencert.ServerTLS(h)); err != nil {
		return fmt.Errorf("metrics-port: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", m.metrics.Handler())
	m.serve(m.metricsLn, mux)
	m.Logger.Info("metrics listener started", "metrics_addr", m.metricsLn.Addr().String())
	return nil
}

// openLogger opens the process logger of the log-* keys: to Stderr, or to
// broker.log in log-directory, rotated by size and age (and daily with
// log-rotation = daily).
func (m *Main) openLogger() error {
	c := &m.Config
	var every time.Duration
	if c.LogRotation == "daily" {
		every = 24 * time.Hour
	}
	l, err := logging.New(logging.Options{
		Level:       c.LogLevel,
		Format:      c.LogFormat,
		Dir:         c.LogDirectory,
		Group:       c.LogGroup,
		File:        "broker.log",
		MaxSizeMB:   c.LogMaxSizeMB,
		MaxAgeDays:  c.LogMaxAgeDays,
		MaxBackups:  c.LogMaxBackups,
		RotateEvery: every,
		Stderr:      m.Stderr,
	})
	if err != nil {
		return fmt.Errorf("log-directory: %w", err)
	}
	m.logger, m.Logger = l, l.Logger
	return nil
}

// ensureSoftwareStatement writes a new software statement into the working
// path when the file is missing (first start), so local agents register with
// no manual step; the store keeps only statements' hashes, so the file is the
// only copy of its text. It warns of active statements from older versions.
func (m *Main) ensureSoftwareStatement(ctx context.Context) error {
	path := filepath.Join(m.Config.WorkingPath, SoftwareStatementFile)
	if _, err := os.Stat(path); err != nil {
		st, err := m.auth.GenerateSoftwareStatement(ctx, version, oauth.StatementLimits{})
		if err != nil {
			return fmt.Errorf("generate software statement: %w", err)
		}
		if err := os.WriteFile(path, []byte(st.Statement+"\n"), 0o600); err != nil {
			return fmt.Errorf("write software statement: %w", err)
		}
	}
	return m.auth.WarnLegacyStatements(ctx)
}

// ClientAddr is the client API listener's address.
func (m *Main) ClientAddr() string { return m.clientLn.Addr().String() }

// AgentAddr is the agent listener's address.
func (m *Main) AgentAddr() string { return m.agentLn.Addr().String() }

// MetricsAddr is the metrics listener's address, "" when metrics-port is
// not set.
func (m *Main) MetricsAddr() string {
	if m.metricsLn == nil {
		return ""
	}
	return m.metricsLn.Addr().String()
}

// Service returns the broker core (for in-process tests and benchmarks).
func (m *Main) Service() *broker.Service { return m.svc }

// Close stops listeners, agent links and background work, then closes the store.
func (m *Main) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, s := range m.servers {
		_ = s.Shutdown(ctx)
	}
	if m.svc != nil {
		m.svc.Stopping(ctx) // links that close now are not lost agents
	}
	if m.hub != nil {
		_ = m.hub.Close()
	}
	if m.cancel != nil {
		m.cancel()
	}
	m.wg.Wait()
	if m.audit != nil {
		_ = m.audit.Close(ctx) // the records of the last calls
	}
	var err error
	if m.store != nil {
		err = m.store.Close()
	}
	if m.logger != nil {
		_ = m.logger.Close()
	}
	return err
}

// agentAuth adapts the token authority to the hub's authenticator.
type agentAuth struct{ a *oauth.Authority }

func (x agentAuth) AuthenticateAgent(ctx context.Context, id, secret string) (string, error) {
	c, err := x.a.Authenticate(ctx, oauth.KindAgent, id, secret)
	if err != nil {
		return "", err
	}
	return c.ID, nil
}

// stderrLogger returns a text logger to w at level, for the admin commands.
func stderrLogger(level string, w io.Writer) *slog.Logger {
	l, err := logging.New(logging.Options{Level: level, Format: "text", Stderr: w})
	if err != nil {
		return slog.New(slog.NewTextHandler(w, nil))
	}
	return l.Logger
}

// reportedNames adapts the broker core to the certificate service.
type reportedNames struct{ svc *broker.Service }

func (r reportedNames) ReportedNames(ctx context.Context, agentClientID, serverID string) ([]string, error) {
	names, err := r.svc.ReportedNames(ctx, agentClientID, serverID)
	if errors.Is(err, broker.ErrNotFound) {
		return nil, fmt.Errorf("%w: %w", agentcert.ErrUnknownServer, err)
	}
	return names, err
}

// hubDispatcher lets the broker core and the hub, which need each other, be
// built one after the other.
type hubDispatcher struct{ hub *agenthub.Hub }

func (d *hubDispatcher) Dispatch(ctx context.Context, serverID string, cmd broker.Command) (*broker.Result, error) {
	return d.hub.Dispatch(ctx, serverID, cmd)
}

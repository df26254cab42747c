package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/berth-dev/berth/internal/account"
	"github.com/berth-dev/berth/internal/agent"
	"github.com/berth-dev/berth/internal/agentmetrics"
	"github.com/berth-dev/berth/internal/agentproto"
	"github.com/berth-dev/berth/internal/driver/dcv"
	"github.com/berth-dev/berth/internal/driver/sim"
	"github.com/berth-dev/berth/internal/driver/vnc"
	"github.com/berth-dev/berth/internal/gateway"
	"github.com/berth-dev/berth/internal/hostinfo"
	"github.com/berth-dev/berth/internal/logattr"
	"github.com/berth-dev/berth/internal/logging"
	"github.com/berth-dev/berth/internal/oauth"
	"github.com/berth-dev/berth/internal/pki"
)

// defaultConfigPath is where the packaged agent keeps its configuration.
const defaultConfigPath = "/etc/berth/agent.conf"

// driverFactory builds a session driver from the configuration.
type driverFactory func(c *Config, log *slog.Logger) (agent.Driver, error)

// drivers are the session drivers built into this agent, by agent.driver name.
var drivers = map[string]driverFactory{
	// sim runs no desktop: sessions are map entries. Load testing only.
	"sim": func(*Config, *slog.Logger) (agent.Driver, error) { return sim.New(), nil },
	"vnc": func(c *Config, log *slog.Logger) (agent.Driver, error) {
		return vnc.New(vnc.Config{
			InitFolder:     c.Agent.InitFolder,
			AutorunFolder:  c.Agent.AutorunFolder,
			StateDir:       filepath.Join(c.Agent.StateDir, "vnc"),
			DesktopCommand: c.VNC.DesktopCommand,
			Account:        &account.Checker{Policy: c.Account.Policy()},
			PAM:            c.Account.PAM,
			PAMService:     c.Account.PAMService,
			Logger:         log,
			// Validate keeps it at 1 s or more.
			ActivityInterval: time.Duration(c.Activity.IntervalSeconds) * time.Second,
		})
	},
	"dcv": func(c *Config, log *slog.Logger) (agent.Driver, error) {
		return dcv.New(dcv.Config{
			DCVPath:       c.Agent.DCVRoot,
			InitFolder:    c.Agent.InitFolder,
			AutorunFolder: c.Agent.AutorunFolder,
			StateDir:      filepath.Join(c.Agent.StateDir, "dcv"),
			ScriptDir:     dcvScriptDir,
			Account:       &account.Checker{Policy: c.Account.Policy()},
			Logger:        log,
		})
	},
}

// dcvScriptDir receives the dcv driver's per-session autorun wrappers. Session
// users run them, so it cannot live under agent.state_dir (0700).
const dcvScriptDir = "/run/berth-agent/dcv-init"

// plannedDrivers are valid agent.driver names whose drivers this build lacks.
var plannedDrivers []string

// driverNames lists every valid agent.driver name, built or planned.
func driverNames() []string {
	names := slices.Sorted(maps.Keys(drivers))
	return append(names, plannedDrivers...)
}

// Main is the agent process: tests run it in-process exactly as main does.
// Set the fields (or call ParseFlags), then Run; Close stops it.
type Main struct {
	// Config is the configuration Run uses.
	Config Config
	// ConfigPath is the file ParseFlags loads.
	ConfigPath string
	// Logger receives the agent's logs; nil makes Run build one from the [log]
	// table (JSON on stderr unless stderr is a terminal, plus
	// log.directory/agent.log when set).
	Logger *slog.Logger
	// Stdout and Stderr receive --help, --version and messages from before
	// the logger exists; nil means os.Stdout and os.Stderr.
	Stdout, Stderr io.Writer
	// Prober describes the host; nil probes the real machine.
	Prober *hostinfo.Prober

	serverID string
	driver   agent.Driver
	// webGateway is the web gateway of a webGatewayDriver; nil for others.
	webGateway *gateway.Server
	// webGatewayPort is the port the web gateway listens on.
	webGatewayPort int
	webGatewayDone chan struct{}
	tags           map[string]string
	logs           *logging.Logger // the log file, when log.directory is set
	metrics        *agentmetrics.Metrics
	metricsSrv     *http.Server
	metricsAddr    string
	cancel         context.CancelFunc
	done           chan struct{}
	bg             sync.WaitGroup // certificate renewal, file watchers, metrics listener
	// reportNames are the names a certificate of this host must cover, from
	// the last report (host name, DNS name, IP).
	reportNames atomic.Pointer[[]string]
	closeMu     sync.Mutex
}

// NewMain returns a Main with the default configuration.
func NewMain() *Main {
	return &Main{Config: DefaultConfig(), ConfigPath: defaultConfigPath}
}

func (m *Main) stdout() io.Writer {
	if m.Stdout == nil {
		return os.Stdout
	}
	return m.Stdout
}

func (m *Main) stderr() io.Writer {
	if m.Stderr == nil {
		return os.Stderr
	}
	return m.Stderr
}

// ParseFlags reads the command line and loads the configuration file. It
// returns flag.ErrHelp after --help and exitError{0} after --version.
func (m *Main) ParseFlags(args []string) error {
	fs := flag.NewFlagSet("berth-agent", flag.ContinueOnError)
	fs.SetOutput(m.stderr())
	fs.StringVar(&m.ConfigPath, "config", m.ConfigPath, "configuration `file` (TOML)")
	showVersion := fs.Bool("version", false, "print the version and exit")
	fs.Usage = func() {
		w := fs.Output()
		fmt.Fprintf(w, `Usage: berth-agent [--config FILE]

Runs the berth Session Manager agent: it connects to the broker's agent port
(agent.broker_host, agent.broker_port), reports this host and its sessions, and
starts and ends sessions with its driver (agent.driver).

Drivers in this build:
  vnc   a TigerVNC desktop per session, run as its owner, opened in a browser
        through the agent's web gateway (noVNC) on vnc.web_port
  dcv   Amazon DCV: sessions of the host's DCV server, driven through the
        dcv command (agent.dcv_root); endpoints from /etc/dcv/dcv.conf
  sim   simulated sessions, for load testing only: it runs no desktop and
        users cannot connect to its sessions

Options:
`)
		fs.PrintDefaults()
		fmt.Fprintf(w, "\nThe configuration keys are described in docs/agent-config.md.\n\nExample:\n  berth-agent --config /etc/berth/agent.conf\n")
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return exitError{2} // flag has printed the problem and the usage
	}
	if *showVersion {
		fmt.Fprintln(m.stdout(), "berth-agent", version)
		return exitError{0}
	}
	if fs.NArg() > 0 {
		return usageError(fmt.Sprintf("unexpected argument %q", fs.Arg(0)))
	}
	c, err := LoadConfig(m.ConfigPath)
	if err != nil {
		return err
	}
	m.Config = c
	return nil
}

// Run validates the configuration, loads the tags, the software statement and
// the server ID, builds the driver and starts the agent, then returns; the
// agent keeps its broker link until Close. Errors name the configuration key
// concerned.
func (m *Main) Run(ctx context.Context) (err error) {
	c := &m.Config
	if err := c.Validate(); err != nil {
		return err
	}
	if m.Logger == nil {
		if err := m.openLog(); err != nil {
			return err
		}
	}
	defer func() {
		if err != nil {
			m.Close()
		}
	}()
	log := m.Logger

	a := &c.Agent
	addrs, err := brokerAddrs(a.BrokerHost, a.BrokerPort)
	if err != nil {
		return fmt.Errorf("agent.broker_host: %w", err)
	}
	urls := make([]string, len(addrs))
	for i, addr := range addrs {
		urls[i] = "wss://" + addr
	}
	tlsConf, err := m.tlsConfig()
	if err != nil {
		return err
	}
	var statement string
	if a.SoftwareStatementPath != "" {
		if statement, err = readSoftwareStatement(a.SoftwareStatementPath); err != nil {
			return fmt.Errorf("agent.software_statement_path: %w", err)
		}
	}
	if m.tags, err = LoadTags(a.TagsFolder); err != nil {
		return fmt.Errorf("agent.tags_folder: %w", err)
	}
	if m.serverID, err = agent.LoadOrCreateServerID(a.StateDir); err != nil {
		return fmt.Errorf("agent.state_dir: %w", err)
	}
	if m.driver, err = drivers[a.Driver](c, log); err != nil {
		return fmt.Errorf("agent.driver: start %s driver: %w", a.Driver, err)
	}
	if m.Prober == nil {
		m.Prober = &hostinfo.Prober{}
	}
	if m.Prober.Logger == nil {
		m.Prober.Logger = log.With("component", "hostinfo")
	}
	if m.Prober.PreferredInterface == "" {
		m.Prober.PreferredInterface = a.PreferredNetworkInterface
	}
	if !a.EnableQueryLoggedInUsers && !slices.Contains(m.Prober.Skip, "users") {
		m.Prober.Skip = append(slices.Clone(m.Prober.Skip), "users")
	}

	ag := &agent.Agent{
		BrokerURLs:        urls,
		TLSConfig:         tlsConf,
		ServerID:          m.serverID,
		StateDir:          a.StateDir,
		SoftwareStatement: statement,
		Driver:            m.driver,
		Report:            m.report,
		UpdateInterval:    a.updateInterval(),
		Version:           version,
		Logger:            log,
	}
	if c.Metrics.Port != 0 {
		m.metrics = agentmetrics.New(agentmetrics.Options{Version: version, Driver: a.Driver})
		ag.Metrics = m.metrics
	}
	if a.Driver == "sim" {
		log.Warn("agent.driver is sim: sessions are simulated and run no desktop; use it for load testing only")
	}
	log.Info("agent started", "version", version, logattr.ServerID, m.serverID, "driver", a.Driver,
		"brokers", strings.Join(urls, ","), "tags", len(m.tags), "state_dir", a.StateDir,
		"software_statement_configured", statement != "")
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	m.cancel = cancel
	drv, hasWebGateway := m.driver.(webGatewayDriver)
	var gwLn net.Listener
	if hasWebGateway {
		// Listen first: the host report that the link sends advertises the
		// web gateway's port.
		v := &m.Config.VNC
		if gwLn, err = net.Listen("tcp", net.JoinHostPort(v.WebBindHost, strconv.Itoa(v.WebPort))); err != nil {
			return fmt.Errorf("vnc.web_port: %w", err)
		}
		m.webGatewayPort = gwLn.Addr().(*net.TCPAddr).Port
	}
	m.done = make(chan struct{})
	go func() {
		defer close(m.done)
		if err := ag.Run(runCtx); err != nil {
			log.Error("agent stopped", "err", err)
		}
	}()
	var gwCert *pki.Holder
	if hasWebGateway {
		if gwCert, err = m.startWebGateway(ctx, runCtx, ag, drv, gwLn, addrs[0], tlsConf); err != nil {
			gwLn.Close()
			return err
		}
	}
	if m.metrics != nil {
		if err := m.startMetrics(ctx, runCtx, gwCert); err != nil {
			return err
		}
	}
	return nil
}

// webGatewayDriver is a driver whose sessions the agent's web gateway
// bridges to browsers (the vnc driver): the agent runs a web gateway for
// any driver that offers them, on vnc.web_port.
type webGatewayDriver interface {
	agent.Driver
	gateway.Sessions
}

// The vnc driver's sessions are opened in a browser through the web gateway.
var _ webGatewayDriver = (*vnc.Driver)(nil)

// startWebGateway starts the web gateway of drv's sessions: HTTPS with the
// configured certificate or one issued by the broker's web gateway CA,
// either kept current while it runs, checking ConnectionTokens against the
// broker's published keys. It returns the holder of the gateway's
// certificate.
func (m *Main) startWebGateway(ctx, runCtx context.Context, ag *agent.Agent, drv webGatewayDriver, ln net.Listener, brokerAddr string, tlsConf *tls.Config) (*pki.Holder, error) {
	v := &m.Config.VNC
	cert, err := m.webGatewayCertificate(ctx, runCtx, ag)
	if err != nil {
		return nil, err
	}
	hc := &http.Client{Timeout: 15 * time.Second, Transport: &http.Transport{TLSClientConfig: tlsConf.Clone()}}
	gc := gateway.Config{
		Addr:           net.JoinHostPort(v.WebBindHost, strconv.Itoa(v.WebPort)),
		GetCertificate: cert.GetCertificate,
		NoVNCPath:      v.NoVNCPath,
		WebURLPath:     "/",
		Verifier:       &oauth.RemoteKeySet{URL: "https://" + brokerAddr + "/.well-known/jwks.json", Client: hc},
		Sessions:       drv,
		Logger:         m.Logger,
		Limits:         v.gatewayLimits(),
		MaxUploadBytes: int64(v.FileMaxUploadMB) << 20,
		Extend:         ag.ExtendSession,
	}
	if m.metrics != nil {
		gc.Metrics = m.metrics
	}
	gw := gateway.New(gc)
	m.webGateway = gw
	m.webGatewayDone = make(chan struct{})
	go func() {
		defer close(m.webGatewayDone)
		if err := gw.Serve(runCtx, ln); err != nil {
			m.Logger.Error("web gateway stopped", "err", err)
		}
	}()
	return cert, nil
}

// report is the host report the agent sends: the probed host plus what the
// configuration says. The agent adds the driver's health.
func (m *Main) report(ctx context.Context) (agentproto.HostReport, error) {
	r := m.Prober.Report(ctx)
	r.AgentVersion = version
	r.Driver = m.driver.Name()
	r.MaxVirtualSessions = m.Config.Agent.MaxVirtualSessions
	r.MaxConcurrentSessionsPerUser = m.Config.Agent.MaxConcurrentSessionsPerUser
	r.Tags = maps.Clone(m.tags)
	if m.webGatewayPort != 0 {
		// A gateway bound to one address is reachable only there: advertise it.
		if ip := net.ParseIP(m.Config.VNC.WebBindHost); ip != nil && !ip.IsUnspecified() {
			r.IP = ip.String()
		}
		r.Port, r.WebURLPath = m.webGatewayPort, "/"
		r.Endpoints = []agentproto.Endpoint{{IP: r.IP, Port: m.webGatewayPort, WebURLPath: "/", Protocol: "HTTP"}}
		r.Version = "berth-vnc"
	}
	if drv, ok := m.driver.(*dcv.Driver); ok {
		dcvEndpoints(&r, drv)
	}
	names := reportedNames(r)
	m.reportNames.Store(&names)
	return r, nil
}

// dcvEndpoints sets the report's endpoints from the DCV server's dcv.conf:
// HTTP on web-port, and QUIC on quic-port when the QUIC frontend is enabled.
func dcvEndpoints(r *agentproto.HostReport, drv *dcv.Driver) {
	web, path, quic := drv.Endpoints()
	r.Port, r.WebURLPath = web, path
	r.Endpoints = []agentproto.Endpoint{{IP: r.IP, Port: web, WebURLPath: path, Protocol: agentproto.ProtocolHTTP}}
	if quic > 0 {
		r.Endpoints = append(r.Endpoints, agentproto.Endpoint{IP: r.IP, Port: quic, WebURLPath: path, Protocol: agentproto.ProtocolQUIC})
	}
}

// tlsConfig verifies the broker against agent.ca_file (or the system roots),
// or accepts any certificate when agent.tls_strict is false.
func (m *Main) tlsConfig() (*tls.Config, error) {
	a := &m.Config.Agent
	conf := &tls.Config{MinVersion: tls.VersionTLS12}
	switch {
	case !a.TLSStrict:
		m.Logger.Warn("agent.tls_strict is false: the broker's certificate is not verified, so anyone on the network path can impersonate the broker")
		conf.InsecureSkipVerify = true
	case a.CAFile != "":
		pool, err := pki.LoadPool(a.CAFile)
		if err != nil {
			return nil, fmt.Errorf("agent.ca_file: %w", err)
		}
		conf.RootCAs = pool
	}
	return conf, nil
}

// ServerID is the host's server ID, once Run has returned nil.
func (m *Main) ServerID() string { return m.serverID }

// Close stops the agent, waits for its commands to end, and closes the driver
// (when it is an io.Closer) and the log file. It may be called more than once.
func (m *Main) Close() error {
	m.closeMu.Lock()
	defer m.closeMu.Unlock()
	if m.cancel != nil {
		m.cancel()
		if m.done != nil {
			<-m.done
		}
		m.cancel = nil
	}
	if m.webGateway != nil {
		m.webGateway.Close()
		<-m.webGatewayDone
		m.webGateway = nil
	}
	m.stopMetrics()
	m.bg.Wait()
	var errs []error
	if cl, ok := m.driver.(io.Closer); ok {
		if err := cl.Close(); err != nil {
			errs = append(errs, fmt.Errorf("close driver: %w", err))
		}
		m.driver = nil
	}
	if m.logs != nil {
		if err := m.logs.Close(); err != nil {
			errs = append(errs, fmt.Errorf("close log file: %w", err))
		}
		m.logs = nil
	}
	return errors.Join(errs...)
}

// updateInterval is the agent's own update interval: broker_update_interval
// when the file sets it, else 0, which follows the broker (agent.Agent).
func (a *AgentConfig) updateInterval() time.Duration {
	if !a.updateIntervalSet {
		return 0
	}
	return time.Duration(a.BrokerUpdateInterval) * time.Second
}

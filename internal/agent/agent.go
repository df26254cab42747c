// Package agent is the agent side of the broker⇄agent link: it registers the
// agent with a broker, keeps a WebSocket link to one of the brokers open
// (reconnecting with jittered exponential backoff and failing over between
// brokers), reports the host and its sessions, and runs the broker's commands
// on a [Driver].
//
// The package never imports the broker's packages; the protocol lives in
// internal/agentproto. Drivers (internal/driver/...) implement [Driver] and any
// of its optional capabilities.
package agent

import (
	"context"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/berth-dev/berth/internal/agentproto"
	"github.com/berth-dev/berth/internal/logattr"
	"github.com/coder/websocket"
)

// Defaults and limits.
const (
	// DefaultUpdateInterval is the update interval of an agent without one
	// of its own (Agent.UpdateInterval 0) whose broker asks for none.
	DefaultUpdateInterval = 30 * time.Second
	// DefaultCommandTimeout bounds a command that carries no deadline.
	DefaultCommandTimeout = 5 * time.Minute
	// MaxConcurrentCommands bounds the commands that run at once; the agent
	// answers further ones with the failure "agent busy".
	MaxConcurrentCommands = 64

	dialTimeout  = 15 * time.Second
	helloTimeout = 15 * time.Second
)

// Agent keeps the link of one desktop host to the broker. Set the fields, then
// call Run. The fields must not change while Run runs.
type Agent struct {
	// BrokerURLs are the brokers' agent endpoints, "wss://host:8445". With
	// several, the agent tries them in order and then round-robin. A path, if
	// any, is a prefix for /agent/connect and /agent/register.
	BrokerURLs []string
	// TLSConfig verifies the brokers; nil means the system roots.
	TLSConfig *tls.Config
	// ServerID identifies the host; see LoadOrCreateServerID.
	ServerID string
	// StateDir keeps the agent client credentials (a 0600 file). Empty keeps them
	// in memory only, so the agent registers again after every restart.
	StateDir string
	// SoftwareStatement registers the agent (POST /agent/register) when no
	// credentials are stored. Empty: connect without credentials.
	SoftwareStatement string
	// Driver runs the sessions.
	Driver Driver
	// Report describes the host. The agent fills AgentVersion and Driver when
	// empty and always sets Healthy and HealthReason from the driver (healthy
	// without a HealthChecker). Nil reports just the hostname.
	Report func(ctx context.Context) (agentproto.HostReport, error)
	// UpdateInterval is the longest time between two updates (the
	// heartbeat); the broker may ask for a shorter one. 0: the interval the
	// broker asks for, shorter or longer (a large fleet's broker asks for
	// less), or DefaultUpdateInterval when it asks for none.
	UpdateInterval time.Duration
	// Version is the agent's software version, sent in Hello and host reports.
	Version string
	// Logger receives the agent's logs; nil discards them. Secrets are never logged.
	Logger *slog.Logger
	// Metrics receives the agent's measurements; nil records nothing.
	Metrics Metrics
	// CertCheckInterval is how often RenewGatewayCertificate compares the
	// gateway certificate's names with the host's; 0 means
	// DefaultCertCheckInterval.
	CertCheckInterval time.Duration

	link *linkState // see state
}

// endpoint is one broker, as the agent reaches it.
type endpoint struct {
	name     string // scheme://host[/prefix], for logs
	connect  string // ws(s)://host/prefix/agent/connect
	register string // http(s)://host/prefix/agent/register
}

// parseBrokerURL turns a configured broker URL into an endpoint.
func parseBrokerURL(raw string) (endpoint, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return endpoint{}, fmt.Errorf("broker url %q: %w", raw, err)
	}
	var ws, web string
	switch u.Scheme {
	case "wss", "https":
		ws, web = "wss", "https"
	case "ws", "http":
		ws, web = "ws", "http"
	default:
		return endpoint{}, fmt.Errorf("broker url %q: scheme must be wss or https", raw)
	}
	if u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return endpoint{}, fmt.Errorf("broker url %q: want scheme://host:port[/prefix]", raw)
	}
	prefix := strings.TrimSuffix(u.Path, "/")
	return endpoint{
		name:     ws + "://" + u.Host + prefix,
		connect:  ws + "://" + u.Host + prefix + "/agent/connect",
		register: web + "://" + u.Host + prefix + "/agent/register",
	}, nil
}

// errRetryNow asks the connect loop to try the same broker again at once.
var errRetryNow = errors.New("retry at once")

// runner is the state of one Run.
type runner struct {
	a       *Agent
	log     *slog.Logger
	hc      *http.Client
	ctx     context.Context // Run's context; commands derive from it
	changed chan struct{}   // a driver change is pending (capacity 1)
	cmdSem  chan struct{}
	cmds    sync.WaitGroup
	metrics Metrics
	ready   readyClock

	// Owned by the connect loop.
	creds        *credentials
	reregistered bool // re-registered after a 401 since the last good link
	// fleetSize is the Welcome's FleetSize on the last link (0: unknown).
	fleetSize int

	// Tests replace the backoff's randomness and the loop's sleeps.
	uniform func(d time.Duration) time.Duration
	sleepFn func(ctx context.Context, d time.Duration) bool
}

// Run connects to a broker and keeps the link: it registers when needed, says
// hello with the full host report and session list, reports every change and
// at least every update interval, and runs commands concurrently within their
// deadlines. When a link fails it reconnects with jittered exponential backoff
// (capped at about 10 s), failing over between BrokerURLs. Run returns nil once
// ctx is done and every command it started has returned, or an error at once
// if the Agent is misconfigured.
func (a *Agent) Run(ctx context.Context) error {
	eps, err := a.check()
	if err != nil {
		return err
	}
	log := a.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("component", "agent", logattr.ServerID, a.ServerID)
	creds, err := loadCredentials(a.StateDir)
	if err != nil {
		// A damaged file: register again rather than stay offline.
		log.Warn("ignoring stored agent credentials", "err", err)
		creds = nil
	}
	tc := a.TLSConfig.Clone()
	if tc == nil {
		tc = &tls.Config{}
	}
	if tc.ClientSessionCache == nil {
		// The link that follows a registration, and reconnects to a broker
		// process that is still up (a dropped link, failover back), resume
		// the TLS session: no certificate signed or verified (perf in the
		// fleet benchmark: a quarter of an agent's full handshake).
		tc.ClientSessionCache = tls.NewLRUClientSessionCache(len(eps))
	}
	tr := &http.Transport{
		Proxy:               http.ProxyFromEnvironment,
		TLSClientConfig:     tc,
		TLSHandshakeTimeout: dialTimeout,
		ForceAttemptHTTP2:   false, // WebSocket needs HTTP/1.1
	}
	defer tr.CloseIdleConnections()
	r := &runner{
		a:       a,
		log:     log,
		hc:      &http.Client{Transport: tr},
		ctx:     ctx,
		changed: make(chan struct{}, 1),
		cmdSem:  make(chan struct{}, MaxConcurrentCommands),
		creds:   creds,
		metrics: a.metrics(),
	}
	if n, ok := a.Driver.(Notifier); ok {
		n.Notify(r.notify)
	}
	defer r.cmds.Wait()
	r.loop(ctx, eps)
	return nil
}

func (a *Agent) check() ([]endpoint, error) {
	if len(a.BrokerURLs) == 0 {
		return nil, errors.New("agent: no broker url")
	}
	if !agentproto.ValidID(a.ServerID) {
		return nil, errors.New("agent: invalid server id")
	}
	if a.Driver == nil {
		return nil, errors.New("agent: no driver")
	}
	eps := make([]endpoint, len(a.BrokerURLs))
	for i, raw := range a.BrokerURLs {
		ep, err := parseBrokerURL(raw)
		if err != nil {
			return nil, fmt.Errorf("agent: %w", err)
		}
		eps[i] = ep
	}
	return eps, nil
}

// notify records a driver change; the link sends an update at once.
func (r *runner) notify() {
	select {
	case r.changed <- struct{}{}:
	default:
	}
}

// loop connects and reconnects until ctx is done. It tries the brokers in
// order, moving on after a failure, and sleeps with backoff after a full pass
// of failures or after a link ends: the first delay after a link ends is
// spread over the reconnect window of the fleet size the broker last told,
// and a broker that shed the connect (503) is not tried again before its
// Retry-After.
func (r *runner) loop(ctx context.Context, eps []endpoint) {
	bo := backoff{uniform: r.uniform}
	idx, failed := 0, 0
	var hold time.Duration // the longest Retry-After of this pass
	for ctx.Err() == nil {
		ep := eps[idx]
		up, err := r.connect(ctx, ep)
		if ctx.Err() != nil {
			return
		}
		var busy *busyError
		switch {
		case errors.Is(err, errRetryNow):
			continue
		case up:
			bo.linkEnded(reconnectWindow(r.fleetSize))
			failed, hold = 0, 0
			r.reregistered = false
			r.log.Warn("broker link closed", "broker", ep.name, "err", err)
		default:
			if errors.As(err, &busy) {
				r.log.Info("broker busy; connecting later", "broker", ep.name, "retry_after", busy.after)
				hold = max(hold, busy.after)
			} else {
				r.log.Warn("cannot connect to broker", "broker", ep.name, "err", err)
			}
			idx = (idx + 1) % len(eps)
			failed++
			if failed < len(eps) {
				continue // try the next broker at once
			}
			failed = 0
		}
		d := max(bo.next(), hold)
		hold = 0
		if !r.sleep(ctx, d) {
			return
		}
	}
}

// busyError is a connect the broker shed with 503: retry after after.
type busyError struct{ after time.Duration }

func (e *busyError) Error() string {
	return fmt.Sprintf("broker busy (503), retry after %s", e.after)
}

// sleep waits d or until ctx is done (r.sleepFn in tests); it reports
// whether d passed.
func (r *runner) sleep(ctx context.Context, d time.Duration) bool {
	if r.sleepFn != nil {
		return r.sleepFn(ctx, d)
	}
	return sleep(ctx, d)
}

// connect registers if needed, dials ep and serves the link until it ends. up
// reports whether the broker welcomed the agent.
func (r *runner) connect(ctx context.Context, ep endpoint) (up bool, err error) {
	a := r.a
	hc := r.hc
	if r.creds == nil && a.SoftwareStatement != "" {
		c, kept, err := r.register(ctx, ep)
		if kept != nil {
			// The link upgrades the registration's connection.
			hc = &http.Client{Transport: kept}
			defer kept.CloseIdleConnections()
		}
		switch {
		case errors.Is(err, errRegistrationUnavailable):
			r.log.Info("broker offers no agent registration; connecting without credentials", "broker", ep.name)
		case err != nil:
			return false, err
		default:
			if err := saveCredentials(a.StateDir, c); err != nil {
				r.log.Error("cannot store agent credentials; they last until the agent stops", "err", err)
			}
			r.creds = c
			r.log.Info("registered with broker", "broker", ep.name, logattr.AgentID, c.ClientID)
		}
	}
	header := http.Header{}
	if r.creds != nil {
		header.Set("Authorization", "Basic "+base64.StdEncoding.EncodeToString([]byte(r.creds.ClientID+":"+r.creds.ClientSecret)))
	}
	dctx, cancel := context.WithTimeout(ctx, dialTimeout)
	conn, resp, err := websocket.Dial(dctx, ep.connect, &websocket.DialOptions{HTTPClient: hc, HTTPHeader: header})
	cancel()
	if err != nil {
		switch {
		case resp != nil && resp.StatusCode == http.StatusUnauthorized:
			return false, r.refused()
		case resp != nil && resp.StatusCode == http.StatusServiceUnavailable:
			return false, &busyError{after: retryAfter(resp.Header, time.Now())}
		}
		return false, fmt.Errorf("dial: %w", err)
	}
	l := &link{r: r, conn: conn, log: r.log.With("broker", ep.name), failed: make(chan struct{}), retimed: make(chan struct{}, 1)}
	return l.serve(ctx)
}

// register registers with the broker of ep. Unless a proxy stands between
// them, it does so on a connection of its own, which it returns for the
// link to upgrade (connTransport); the caller closes it.
func (r *runner) register(ctx context.Context, ep endpoint) (*credentials, *connTransport, error) {
	a := r.a
	u, err := url.Parse(ep.register)
	tr, ok := r.hc.Transport.(*http.Transport)
	if err != nil || !ok || proxied(tr, u) {
		c, err := register(ctx, r.hc, ep.register, a.SoftwareStatement, clientName(a.ServerID), a.ServerID)
		return c, nil, err
	}
	kept := newConnTransport(u, tr.TLSClientConfig)
	c, err := register(ctx, &http.Client{Transport: kept}, ep.register, a.SoftwareStatement, clientName(a.ServerID), a.ServerID)
	if err != nil {
		return nil, nil, err // register closed the connection
	}
	return c, kept, nil
}

// proxied reports whether tr sends requests to u through a proxy.
func proxied(tr *http.Transport, u *url.URL) bool {
	if tr.Proxy == nil {
		return false
	}
	p, err := tr.Proxy(&http.Request{URL: u, Header: http.Header{}})
	return err != nil || p != nil
}

// refused handles a 401 from the broker: stored credentials get one
// re-registration (then backoff); without credentials it is a configuration
// problem.
func (r *runner) refused() error {
	switch {
	case r.creds != nil && r.a.SoftwareStatement != "" && !r.reregistered:
		r.log.Warn("broker refused the stored agent credentials; registering again", logattr.AgentID, r.creds.ClientID)
		r.reregistered = true
		if err := removeCredentials(r.a.StateDir); err != nil {
			r.log.Error("cannot remove refused agent credentials", "err", err)
		}
		r.creds = nil
		return errRetryNow
	case r.creds != nil:
		return fmt.Errorf("broker refused agent credentials of client %s", r.creds.ClientID)
	case r.a.SoftwareStatement != "":
		return errors.New("broker requires agent credentials but offers no registration")
	default:
		return errors.New("broker requires agent credentials and no software statement is configured")
	}
}

// clientName is the name the agent registers under: the hostname, or the
// server ID without one.
func clientName(serverID string) string {
	if h, err := os.Hostname(); err == nil && h != "" {
		return h
	}
	return serverID
}

// sleep waits d or until ctx is done; it reports whether d passed.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

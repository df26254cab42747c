// Package gateway is the agent's web gateway for the vnc driver: an HTTPS
// server that serves the noVNC client and bridges its WebSocket to the VNC
// unix socket of a session, after checking the connection token the broker
// issued.
//
// The connection URL has the shape of a DCV web URL:
//
//	https://{Ip}:{Port}{WebUrlPath}?authToken={ConnectionToken}#{SessionId}
//
// GET {WebUrlPath} serves the session page (http.go, web/: its own script
// and style files under a strict CSP) that loads noVNC (served under
// "novnc/" next to it), asks "session-info" what the user may do and who
// else is connected (peers.go), and opens the WebSocket
// "websockify?authToken=…&sessionId=…". Both check the token: the broker's
// signature (TokenVerifier), its expiry, that it names the session, and that
// the session's current permissions let its user connect ("display"). They
// refuse with 401 or 403 and a short reason that says nothing about other
// sessions, with 404 for a valid token whose session is gone (deleted, or
// not READY: the page says the session has ended), and with 503 when the
// session has its MaxConcurrentClients.
//
// A bridged connection is filtered both ways: a user without "keyboard"
// cannot send key events, one without "mouse" pointer events, one without
// "clipboard-paste" clipboard text, and one without "clipboard-copy"
// receives no clipboard from the session; a user with neither keyboard nor
// mouse is view-only. The gateway parses every message in both directions
// and closes a connection it cannot parse (see rfb.go and rfbserver.go). Permission changes apply at once to live connections (losing
// "display" drops them), and deleting a session drops its connections. The
// gateway reports each session's number of connections and its last
// disconnection time back to the driver.
//
// Tokens are never logged.
package gateway

import (
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"log"
	"log/slog"
	"net"
	"net/http"
	"path"
	"strings"
	"sync"
	"time"

	"github.com/berth-dev/berth/internal/logattr"
	"github.com/berth-dev/berth/internal/netlimit"
	"github.com/berth-dev/berth/internal/oauth"
	"github.com/berth-dev/berth/internal/permfile"
)

// Defaults of Config.
const (
	DefaultNoVNCPath    = "/usr/share/novnc"
	DefaultWebURLPath   = "/"
	DefaultPingInterval = 30 * time.Second
	// DefaultMaxConnections and DefaultMaxConnectionsPerAddress are
	// Config.Limits when it is zero.
	DefaultMaxConnections           = 1024
	DefaultMaxConnectionsPerAddress = 256
	// DefaultReadHeaderTimeout, DefaultReadTimeout and DefaultIdleTimeout
	// are the Config timeouts when they are zero.
	DefaultReadHeaderTimeout = 10 * time.Second
	DefaultReadTimeout       = 30 * time.Second
	DefaultIdleTimeout       = 2 * time.Minute
)

// TokenVerifier checks a connection token's signature and lifetime.
// *oauth.RemoteKeySet implements it. It returns a *oauth.TokenError for a
// token that is not acceptable, and another error when it cannot tell (the
// broker's keys could not be fetched).
type TokenVerifier interface {
	VerifyConnectionToken(ctx context.Context, token string) (*oauth.ConnectionClaims, error)
}

// Session is what the gateway needs to know about a session to bridge to it.
type Session struct {
	ID    string
	Owner string
	// Socket is the session's VNC unix socket.
	Socket string
	// UID is the user the VNC server runs as, and PID (0: not checked) its
	// process: the gateway checks both on the socket's peer credentials, so
	// a socket planted in the session's place is never used.
	UID int
	PID int
	// GID is the owner's primary group and Home their home directory: the
	// files panel reads and writes as the owner.
	GID  int
	Home string
	// MaxClients bounds the session's concurrent connections; 0 is no bound.
	MaxClients int
	// StorageRoot is the absolute path of the session's storage root
	// (StorageRoot in CreateSessions), the folder of the files panel; empty
	// when the session has none.
	StorageRoot string
	// Permissions are the session's current permissions; nil means the
	// default (the owner may do everything, nobody else anything).
	Permissions *permfile.File
}

// Sessions is the gateway's view of the driver's sessions. The vnc driver
// implements it.
type Sessions interface {
	// Session returns a session that can be connected to (READY), or false.
	Session(id string) (Session, bool)
	// ConnectionChanged receives a session's number of bridged connections
	// after every change, and the time of its last disconnection (zero if
	// none yet).
	ConnectionChanged(id string, n int, lastDisconnect time.Time)
	// Watch registers f, called with a session's ID after its permissions
	// changed or it ended; stop unregisters it.
	Watch(f func(id string)) (stop func())
}

// Config configures a Server.
type Config struct {
	// Addr is the address Run listens on ("host:port").
	Addr string
	// Certificate is the gateway's TLS certificate. Run and Serve require it
	// or GetCertificate.
	Certificate tls.Certificate
	// GetCertificate, when set, gives the certificate of each TLS handshake
	// instead of Certificate (tls.Config.GetCertificate), so that the
	// certificate can be renewed while the gateway runs: new connections get
	// the new one, and connections already made are not touched.
	GetCertificate func(*tls.ClientHelloInfo) (*tls.Certificate, error)
	// NoVNCPath is the noVNC directory (Debian's novnc package); empty means
	// DefaultNoVNCPath.
	NoVNCPath string
	// WebURLPath is the path of the session page, the WebUrlPath of the
	// connection URL; empty means "/". The noVNC files, "session-info" and
	// "websockify" live in the same directory.
	WebURLPath string
	// Verifier checks connection tokens. Required.
	Verifier TokenVerifier
	// Sessions gives the sessions. Required.
	Sessions Sessions
	// Groups resolves a user's OS groups for osgroup: rules; nil means the
	// host's groups (os/user).
	Groups permfile.GroupResolver
	// PingInterval is how often idle WebSocket clients are pinged (a client
	// that does not answer within the interval is dropped); 0 means
	// DefaultPingInterval.
	PingInterval time.Duration
	// Now returns the current time; nil means time.Now.
	Now func() time.Time
	// Logger receives operational messages, never tokens; nil means
	// slog.Default().
	Logger *slog.Logger
	// Metrics receives the gateway's measurements; nil records nothing.
	Metrics Metrics

	// Limits bound the connections Serve holds, in all and from one client
	// network (an IPv4 address or an IPv6 /64); connections over them are
	// closed on accept. Zero means DefaultMaxConnections and
	// DefaultMaxConnectionsPerAddress; a negative field means no bound.
	Limits netlimit.Limits
	// LimitObserver, when set, is told of each connection refused over
	// Limits.
	LimitObserver netlimit.Observer
	// ReadHeaderTimeout bounds a new connection's TLS handshake and each
	// request's header; ReadTimeout a whole request from its first byte;
	// IdleTimeout a kept-alive connection between requests. Zero means the
	// Default* value. A WebSocket (a desktop stream) is bound by none of
	// them once upgraded: net/http clears a hijacked connection's deadlines.
	ReadHeaderTimeout time.Duration
	ReadTimeout       time.Duration
	IdleTimeout       time.Duration

	// MaxUploadBytes bounds a file uploaded through the files panel
	// (files.go, docs/files.md); zero or less means DefaultMaxUploadBytes.
	MaxUploadBytes int64

	// Extend forwards the page's Extend button (POST extend) to the broker
	// (the agent's ExtendSession); nil answers 501 and the page offers no
	// Extend button.
	Extend ExtendFunc
}

// Metrics receives the gateway's measurements; internal/agentmetrics exports
// them to Prometheus. The methods are called from many goroutines and must
// not block.
type Metrics interface {
	// ConnectionOpened records a client whose WebSocket is bridged to its
	// session's VNC server; ConnectionClosed records its end.
	ConnectionOpened()
	ConnectionClosed()
	// ConnectionRefused records a WebSocket connection the gateway refused,
	// for reason: one of the Refused* constants.
	ConnectionRefused(reason string)
}

// Reasons a connection was refused, as Metrics.ConnectionRefused receives
// them.
const (
	// RefusedBadRequest: the request lacks a session ID.
	RefusedBadRequest = "bad_request"
	// RefusedUnauthorized: no token, or a token that is invalid or expired.
	RefusedUnauthorized = "unauthorized"
	// RefusedForbidden: the token is for another session, or the session's
	// permissions do not let its user connect.
	RefusedForbidden = "forbidden"
	// RefusedNotFound: no such session, or it is not READY.
	RefusedNotFound = "not_found"
	// RefusedFull: the session has its MaxConcurrentClients.
	RefusedFull = "full"
	// RefusedUnavailable: the token cannot be verified now (the broker's
	// keys cannot be fetched), or the gateway is not configured or closing.
	RefusedUnavailable = "unavailable"
	// RefusedUnreachable: the session's VNC server did not answer.
	RefusedUnreachable = "unreachable"
)

// RefusedReasons lists every Refused* value.
var RefusedReasons = []string{RefusedBadRequest, RefusedUnauthorized, RefusedForbidden, RefusedNotFound, RefusedFull, RefusedUnavailable, RefusedUnreachable}

// noMetrics records nothing.
type noMetrics struct{}

func (noMetrics) ConnectionOpened()        {}
func (noMetrics) ConnectionClosed()        {}
func (noMetrics) ConnectionRefused(string) {}

// Server is the web gateway. Create it with New, serve with Run or Serve (or
// mount Handler), and Close it.
type Server struct {
	cfg     Config
	log     *slog.Logger
	handler http.Handler
	base    string // directory of the page, with a trailing slash
	unwatch func()

	ctx    context.Context // cancelled by Close
	cancel context.CancelFunc
	wg     sync.WaitGroup // live bridges

	reportMu sync.Mutex // orders ConnectionChanged calls

	detach func() // from an Attacher; nil when none

	mu           sync.Mutex
	conns        map[string]map[*bridge]struct{} // session → live bridges; guarded by mu
	notices      map[string]kept                 // session → current notice (notice.go); guarded by mu
	noticeStates map[string]*noticeState         // session → notice version for notice-wait; guarded by mu
	kicks        map[string]kick                 // clientId → why it was disconnected (notice.go); guarded by mu
	lastDis      map[string]time.Time            // guarded by mu
	srvs         map[*http.Server]struct{}       // guarded by mu
	limited      *netlimit.Listener              // of the last Serve; guarded by mu
	closed       bool                            // guarded by mu
}

// New returns a gateway for cfg. It registers with cfg.Sessions to learn of
// permission changes and ended sessions.
func New(cfg Config) *Server {
	if cfg.NoVNCPath == "" {
		cfg.NoVNCPath = DefaultNoVNCPath
	}
	if cfg.WebURLPath == "" {
		cfg.WebURLPath = DefaultWebURLPath
	}
	if !strings.HasPrefix(cfg.WebURLPath, "/") {
		cfg.WebURLPath = "/" + cfg.WebURLPath
	}
	if cfg.PingInterval <= 0 {
		cfg.PingInterval = DefaultPingInterval
	}
	if cfg.Limits == (netlimit.Limits{}) {
		cfg.Limits = netlimit.Limits{Max: DefaultMaxConnections, MaxPerAddr: DefaultMaxConnectionsPerAddress}
	}
	cfg.Limits.Max, cfg.Limits.MaxPerAddr = max(cfg.Limits.Max, 0), max(cfg.Limits.MaxPerAddr, 0)
	cfg.ReadHeaderTimeout = cmp.Or(cfg.ReadHeaderTimeout, DefaultReadHeaderTimeout)
	cfg.ReadTimeout = cmp.Or(cfg.ReadTimeout, DefaultReadTimeout)
	cfg.IdleTimeout = cmp.Or(cfg.IdleTimeout, DefaultIdleTimeout)
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Groups == nil {
		cfg.Groups = osGroups
	}
	if cfg.Metrics == nil {
		cfg.Metrics = noMetrics{}
	}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.Default()
	}
	s := &Server{
		cfg:     cfg,
		log:     logger.With("component", "gateway"),
		conns:   make(map[string]map[*bridge]struct{}),
		lastDis: make(map[string]time.Time),
		srvs:    make(map[*http.Server]struct{}),
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.base = cfg.WebURLPath
	if !strings.HasSuffix(s.base, "/") {
		s.base = path.Dir(s.base)
		if !strings.HasSuffix(s.base, "/") {
			s.base += "/"
		}
	}
	s.handler = s.routes()
	if cfg.Sessions != nil {
		s.unwatch = cfg.Sessions.Watch(s.SessionChanged)
		if a, ok := cfg.Sessions.(Attacher); ok {
			s.detach = a.Attach(s)
		}
	}
	return s
}

// Handler returns the gateway's HTTP handler (for tests and for mounting
// under another server; it must be served over TLS).
func (s *Server) Handler() http.Handler { return s.handler }

// Run listens on cfg.Addr and serves until ctx ends or Close is called.
func (s *Server) Run(ctx context.Context) error {
	ln, err := net.Listen("tcp", s.cfg.Addr)
	if err != nil {
		return err
	}
	return s.Serve(ctx, ln)
}

// Serve serves HTTPS on ln until ctx ends or Close is called; it closes ln.
// It returns nil after a shutdown. It applies Config.Limits to ln and the
// Config timeouts to every connection.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	if len(s.cfg.Certificate.Certificate) == 0 && s.cfg.GetCertificate == nil {
		ln.Close()
		return errors.New("gateway: a TLS certificate is required")
	}
	tlsCfg := &tls.Config{
		MinVersion: tls.VersionTLS12,
		// WebSockets need HTTP/1.1 (an HTTP/2 connection cannot be hijacked).
		NextProtos: []string{"http/1.1"},
	}
	if s.cfg.GetCertificate != nil {
		tlsCfg.GetCertificate = s.cfg.GetCertificate
	} else {
		tlsCfg.Certificates = []tls.Certificate{s.cfg.Certificate}
	}
	srv := &http.Server{
		Handler:           s.handler,
		ReadHeaderTimeout: s.cfg.ReadHeaderTimeout,
		ReadTimeout:       s.cfg.ReadTimeout,
		IdleTimeout:       s.cfg.IdleTimeout,
		ErrorLog:          log.New(slogWriter{s.log}, "", 0),
	}
	limited := netlimit.Wrap(ln, s.cfg.Limits, netlimit.Options{Name: "gateway", Observer: s.cfg.LimitObserver, Logger: s.log})
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		ln.Close()
		return errors.New("gateway: closed")
	}
	s.srvs[srv] = struct{}{}
	s.limited = limited
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.srvs, srv)
		s.mu.Unlock()
	}()
	stop := context.AfterFunc(ctx, func() { s.shutdown(srv) })
	defer stop()
	s.log.Info("web gateway listening", "addr", ln.Addr().String())
	err := srv.Serve(tls.NewListener(limited, tlsCfg))
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// shutdown stops an http.Server gracefully (bridges are hijacked
// connections: Close ends those).
func (s *Server) shutdown(srv *http.Server) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		srv.Close()
	}
}

// Close stops serving, drops every bridged connection and waits for them.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		s.wg.Wait()
		return nil
	}
	s.closed = true
	var srvs []*http.Server
	for srv := range s.srvs {
		srvs = append(srvs, srv)
	}
	var bs []*bridge
	for _, m := range s.conns {
		for b := range m {
			bs = append(bs, b)
		}
	}
	s.mu.Unlock()
	if s.unwatch != nil {
		s.unwatch()
	}
	if s.detach != nil {
		s.detach()
	}
	// Bridges first: Shutdown may wait (up to its 5 s) for a connection
	// that has not sent its first request, and a bridge's client must not
	// wait that long for its close frame.
	for _, b := range bs {
		b.stop(closeGoingAway, "the gateway is shutting down")
	}
	for _, srv := range srvs {
		s.shutdown(srv)
	}
	s.cancel()
	s.wg.Wait()
	return nil
}

// SessionChanged re-applies a session's permissions to its live connections:
// connections whose user lost "display" (or of a session that ended) are
// dropped, the others get their input rights updated. The driver calls it
// through Sessions.Watch.
func (s *Server) SessionChanged(id string) {
	if _, ok := s.cfg.Sessions.Session(id); !ok {
		s.forgetSession(id)
	}
	s.mu.Lock()
	var bs []*bridge
	for b := range s.conns[id] {
		bs = append(bs, b)
	}
	s.mu.Unlock()
	if len(bs) == 0 {
		return
	}
	sess, ok := s.cfg.Sessions.Session(id)
	for _, b := range bs {
		if !ok {
			b.stop(closeGoingAway, "the session ended")
			continue
		}
		r := s.rights(sess, b.user)
		if !r.display {
			s.log.Info("dropping connection: display permission revoked", logattr.SessionID, id, logattr.User, b.user)
			b.stop(closePolicy, "permission revoked")
			continue
		}
		b.rights.Store(&r)
	}
}

// slogWriter turns http.Server's error log into debug messages (TLS
// handshake noise from scanners and browsers).
type slogWriter struct{ l *slog.Logger }

func (w slogWriter) Write(p []byte) (int, error) {
	w.l.Debug(strings.TrimSpace(string(p)))
	return len(p), nil
}

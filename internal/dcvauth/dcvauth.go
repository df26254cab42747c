// Package dcvauth is the broker's DCV token verifier: the external
// authenticator that Amazon DCV servers call (dcv.conf [security]
// auth-token-verifier) to check the ConnectionToken a client brings.
//
// The DCV server posts a form with sessionId, authenticationToken and
// clientAddress, and reads the XML answer
//
//	<auth result="yes"><username>USER</username></auth>
//	<auth result="no"><message>REASON</message></auth>
//
// The answer is "yes" when the token is signed by the broker and not
// expired, names the posted session, names the session's owner, and the
// session is READY and its current permissions still let the token's user
// connect. DCV looks at the body only, so every answer has status 200,
// except the refusal of a caller that may not use the verifier (403, with
// the same XML); none is ever a 5xx.
//
// Callers are trusted by the connection's remote address, never by the
// clientAddress they post: a caller must be in one of the configured
// networks or, with Config.Servers, be a DCV server the broker knows (the
// remote address of a live agent link, see Handler.TrackLinks, or an
// address the session's server reports). Each caller network (an IPv4
// address, an IPv6 /64) has its own token bucket, and the broker remembers
// a bounded number of them. Refusals are logged at debug, plus one info line
// per caller network at most every LogEvery with their count. Tokens are
// never logged.
package dcvauth

import (
	"bufio"
	"bytes"
	"container/list"
	"context"
	"encoding/xml"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/berth-dev/berth/internal/broker"
	"github.com/berth-dev/berth/internal/logattr"
	"github.com/berth-dev/berth/internal/netlimit"
	"github.com/berth-dev/berth/internal/oauth"
	"github.com/berth-dev/berth/internal/permfile"
)

// Defaults and bounds of Config.
const (
	// MaxBody bounds the form a DCV server posts.
	MaxBody = 16 << 10
	// DefaultMaxCallers is Config.MaxCallers when it is 0.
	DefaultMaxCallers = 10000
	// DefaultLogEvery is Config.LogEvery when it is 0.
	DefaultLogEvery = time.Minute
)

// TokenVerifier checks ConnectionTokens (*oauth.Authority). It returns an
// *oauth.TokenError for a token that is not acceptable.
type TokenVerifier interface {
	VerifyConnectionToken(ctx context.Context, token string) (*oauth.ConnectionClaims, error)
}

// Sessions reads a session as clients see it (*broker.Service). An error
// whose broker.ErrorCode is CodeInternal means the store did not answer;
// any other error means there is no such session.
type Sessions interface {
	SessionForConnection(ctx context.Context, id string) (*broker.SessionView, error)
}

// Config configures a Handler.
type Config struct {
	// Tokens verifies tokens and Sessions gives sessions. Required.
	Tokens   TokenVerifier
	Sessions Sessions
	// Allowed are networks whose callers may use the verifier.
	Allowed []netip.Prefix
	// Servers also lets the broker's DCV servers use it: a caller at the
	// remote address of a live agent link (TrackLinks), or at an address
	// that the server of the posted session reports (its IP or an
	// endpoint's).
	Servers bool
	// Rate is the verifications per second allowed to one caller network,
	// with bursts of Burst; Rate 0 is no limit.
	Rate  rate.Limit
	Burst int
	// MaxCallers bounds the caller networks remembered (their token
	// buckets and refusal counts), the least recently seen forgotten
	// first; 0 means DefaultMaxCallers.
	MaxCallers int
	// LogEvery is the least time between two info lines about one caller's
	// refusals; 0 means DefaultLogEvery.
	LogEvery time.Duration
	// Logger receives operational messages, never tokens; nil means
	// slog.Default().
	Logger *slog.Logger
	// Now returns the current time; nil means time.Now.
	Now func() time.Time
}

// Handler serves POST /agent/validate-authentication-token. Create it with
// New.
type Handler struct {
	cfg Config
	log *slog.Logger

	mu      sync.Mutex
	callers map[netip.Prefix]*list.Element // of *caller; guarded by mu
	lru     list.List                      // most recently seen first; guarded by mu

	linkMu sync.Mutex
	links  map[netip.Addr]int // live agent links by remote address; guarded by linkMu
}

// caller is what the handler remembers of one caller network.
type caller struct {
	key     netip.Prefix
	lim     *rate.Limiter // nil: no limit
	refused int           // refusals since logged
	logged  time.Time     // last info line; zero: none yet
}

// New returns a verifier for cfg.
func New(cfg Config) *Handler {
	if cfg.MaxCallers <= 0 {
		cfg.MaxCallers = DefaultMaxCallers
	}
	if cfg.LogEvery <= 0 {
		cfg.LogEvery = DefaultLogEvery
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Burst < 1 {
		cfg.Burst = 1
	}
	l := cfg.Logger
	if l == nil {
		l = slog.Default()
	}
	return &Handler{
		cfg:     cfg,
		log:     l.With("component", "dcv-token-verifier"),
		callers: make(map[netip.Prefix]*list.Element),
		links:   make(map[netip.Addr]int),
	}
}

// refusal is a "no" answer: its status, the message the DCV server gets and
// the reason logged.
type refusal struct {
	status int
	msg    string
}

var (
	refuseCaller  = refusal{http.StatusForbidden, "this address may not verify DCV tokens"}
	refuseLimited = refusal{http.StatusOK, "too many requests"}
)

func no(msg string) refusal { return refusal{http.StatusOK, msg} }

// ServeHTTP answers one verification.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	ip := remoteIP(r.RemoteAddr)
	c := h.caller(ip)
	if c.lim != nil && !c.lim.AllowN(h.cfg.Now(), 1) {
		h.refuse(w, c, ip, "", refuseLimited)
		return
	}
	name, sessionID, ref := h.verify(r, ip)
	if ref.msg != "" {
		h.refuse(w, c, ip, sessionID, ref)
		return
	}
	var b bytes.Buffer
	b.WriteString(`<auth result="yes"><username>`)
	_ = xml.EscapeText(&b, []byte(name))
	b.WriteString(`</username></auth>`)
	writeXML(w, http.StatusOK, b.Bytes())
}

// verify checks the request and returns the user to answer, or why not,
// and the posted session.
func (h *Handler) verify(r *http.Request, ip netip.Addr) (user, sessionID string, _ refusal) {
	ctx := r.Context()
	body, readErr := io.ReadAll(io.LimitReader(r.Body, MaxBody+1))
	form, formErr := url.ParseQuery(string(body))
	sessionID, token := form.Get("sessionId"), form.Get("authenticationToken")

	allowed := h.allowedNetwork(ip) || h.cfg.Servers && h.linked(ip)
	var view *broker.SessionView
	var viewErr error
	if !allowed && h.cfg.Servers && sessionID != "" && len(sessionID) <= 256 {
		view, viewErr = h.cfg.Sessions.SessionForConnection(ctx, sessionID)
		if viewErr != nil && broker.ErrorCode(viewErr) == broker.CodeInternal {
			h.log.Error("read session", logattr.SessionID, sessionID, "err", viewErr)
			return "", sessionID, no("could not read the session; retry")
		}
		allowed = viewErr == nil && reports(view.Server, ip)
	}
	if !allowed {
		return "", sessionID, refuseCaller
	}

	switch {
	case readErr != nil:
		return "", sessionID, no("could not read the request")
	case len(body) > MaxBody:
		return "", sessionID, no("request larger than 16 KiB")
	case formErr != nil:
		return "", sessionID, no("malformed form body")
	case sessionID == "":
		return "", sessionID, no("sessionId is required")
	case token == "":
		return "", sessionID, no("authenticationToken is required")
	}
	claims, err := h.cfg.Tokens.VerifyConnectionToken(ctx, token)
	if err != nil {
		var te *oauth.TokenError
		if errors.As(err, &te) {
			return "", sessionID, no("authentication token refused: " + te.Reason)
		}
		h.log.Error("verify token", logattr.SessionID, sessionID, "err", err)
		return "", sessionID, no("could not verify the token; retry")
	}
	if claims.SessionID != sessionID {
		return "", sessionID, no("the token is for another session")
	}
	if view == nil {
		view, viewErr = h.cfg.Sessions.SessionForConnection(ctx, sessionID)
	}
	if viewErr != nil {
		if broker.ErrorCode(viewErr) == broker.CodeInternal {
			h.log.Error("read session", logattr.SessionID, sessionID, "err", viewErr)
			return "", sessionID, no("could not read the session; retry")
		}
		return "", sessionID, no("the session does not exist")
	}
	if view.State != broker.StateReady {
		return "", sessionID, no("the session is " + view.State + ", not READY")
	}
	if claims.Owner != view.Owner {
		return "", sessionID, no("the token is for another owner")
	}
	pf := permfile.Default()
	if text := view.Spec.PermissionsFile; text != "" {
		if pf, err = permfile.Parse(text); err != nil {
			h.log.Error("parse the session's permissions", logattr.SessionID, sessionID, "err", err)
			return "", sessionID, no("could not read the session's permissions")
		}
	}
	if !pf.CanConnect(claims.User, view.Owner, nil) {
		return "", sessionID, no("the session's permissions do not let the user connect")
	}
	h.log.Debug("dcv token accepted", logattr.SessionID, sessionID, logattr.User, claims.User, "caller", ip.String())
	return claims.User, sessionID, refusal{}
}

// refuse answers "no" and logs it: at debug each time, at info once per
// caller network per LogEvery with the count.
func (h *Handler) refuse(w http.ResponseWriter, c *caller, ip netip.Addr, sessionID string, ref refusal) {
	var b bytes.Buffer
	b.WriteString(`<auth result="no"><message>`)
	_ = xml.EscapeText(&b, []byte(ref.msg))
	b.WriteString(`</message></auth>`)
	writeXML(w, ref.status, b.Bytes())

	if len(sessionID) > 256 {
		sessionID = sessionID[:256]
	}
	h.log.Debug("dcv token refused", "caller", ip.String(), logattr.SessionID, sessionID, "reason", ref.msg)
	now := h.cfg.Now()
	h.mu.Lock()
	c.refused++
	n := c.refused
	due := c.logged.IsZero() || now.Sub(c.logged) >= h.cfg.LogEvery
	if due {
		c.refused, c.logged = 0, now
	}
	h.mu.Unlock()
	if due {
		h.log.Info("dcv token verifications refused", "caller", c.key.String(), "count", n,
			"last_reason", ref.msg, "last_session_id", sessionID)
	}
}

// caller returns the state of ip's network, remembering it.
func (h *Handler) caller(ip netip.Addr) *caller {
	key := netlimit.Key(ip)
	h.mu.Lock()
	defer h.mu.Unlock()
	if e, ok := h.callers[key]; ok {
		h.lru.MoveToFront(e)
		return e.Value.(*caller)
	}
	for len(h.callers) >= h.cfg.MaxCallers {
		old := h.lru.Back()
		h.lru.Remove(old)
		delete(h.callers, old.Value.(*caller).key)
	}
	c := &caller{key: key}
	if h.cfg.Rate > 0 {
		c.lim = rate.NewLimiter(h.cfg.Rate, h.cfg.Burst)
	}
	h.callers[key] = h.lru.PushFront(c)
	return c
}

// callerCount is how many caller networks the handler remembers.
func (h *Handler) callerCount() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.callers)
}

func (h *Handler) allowedNetwork(ip netip.Addr) bool {
	return ip.IsValid() && slices.ContainsFunc(h.cfg.Allowed, func(p netip.Prefix) bool { return p.Contains(ip) })
}

// reports tells whether ip is an address the server reports: its IP or an
// endpoint's.
func reports(srv *broker.Server, ip netip.Addr) bool {
	if srv == nil || !ip.IsValid() {
		return false
	}
	if sameIP(srv.Info.IP, ip) {
		return true
	}
	return slices.ContainsFunc(srv.Info.Endpoints, func(e broker.Endpoint) bool { return sameIP(e.IPAddress, ip) })
}

func sameIP(s string, ip netip.Addr) bool {
	a, err := netip.ParseAddr(s)
	return err == nil && a.Unmap().WithZone("") == ip
}

// TrackLinks wraps the agent link handler (/agent/connect): from the hijack
// of a connection (a WebSocket link, only made after the agent
// authenticated) until that connection is closed, its remote address counts
// as a DCV server's for Config.Servers.
func (h *Handler) TrackLinks(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ip := remoteIP(r.RemoteAddr)
		tw := &trackingWriter{ResponseWriter: w,
			onHijack: func() { h.addLink(ip, 1) },
			onClose:  func() { h.addLink(ip, -1) }}
		next.ServeHTTP(tw, r)
	})
}

func (h *Handler) addLink(ip netip.Addr, d int) {
	if !ip.IsValid() {
		return
	}
	h.linkMu.Lock()
	defer h.linkMu.Unlock()
	if n := h.links[ip] + d; n > 0 {
		h.links[ip] = n
	} else {
		delete(h.links, ip)
	}
}

func (h *Handler) linked(ip netip.Addr) bool {
	h.linkMu.Lock()
	defer h.linkMu.Unlock()
	return h.links[ip] > 0
}

// trackingWriter counts a successful Hijack as a link until the hijacked
// connection closes.
type trackingWriter struct {
	http.ResponseWriter
	onHijack func()
	onClose  func()
}

func (w *trackingWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	hj, ok := w.ResponseWriter.(http.Hijacker)
	if !ok {
		return nil, nil, http.ErrNotSupported
	}
	c, brw, err := hj.Hijack()
	if err != nil {
		return nil, nil, err
	}
	w.onHijack()
	return &trackedConn{Conn: c, onClose: w.onClose}, brw, nil
}

// trackedConn is a hijacked agent connection: the link is live until it is
// closed, whichever goroutine serves it (the hub may go on serving a link
// after its handler returned).
type trackedConn struct {
	net.Conn
	once    sync.Once
	onClose func()
}

// NetConn returns the connection under c, so that a WebSocket server can
// find what it offers (internal/wslink parks idle readers on tlsaccept's
// connections).
func (c *trackedConn) NetConn() net.Conn { return c.Conn }

// Close closes the connection and, the first time, ends its link.
func (c *trackedConn) Close() error {
	c.once.Do(c.onClose)
	return c.Conn.Close()
}

// Unwrap lets http.ResponseController reach the server's writer.
func (w *trackingWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// remoteIP is the IP of an http.Request's RemoteAddr, unmapped and without
// zone; the zero Addr when it has none.
func remoteIP(remoteAddr string) netip.Addr {
	ap, err := netip.ParseAddrPort(remoteAddr)
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr().Unmap().WithZone("")
}

func writeXML(w http.ResponseWriter, status int, body []byte) {
	w.Header().Set("Content-Type", "text/xml; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

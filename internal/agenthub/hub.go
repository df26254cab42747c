// Package agenthub is the broker side of the broker⇄agent link. It serves the
// agents' WebSocket at GET /agent/connect, authenticates agents (HTTP Basic
// agent client credentials, when required), negotiates the protocol version,
// keeps a registry of live links (one per server ID; a newer link replaces an
// older one), feeds hellos, updates and disconnects into the broker core through
// [Service], and implements broker.Dispatcher by sending commands over the
// links and waiting for their results.
//
// The protocol is defined in internal/agentproto and described in
// docs/protocol.md.
package agenthub

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/berth-dev/berth/internal/agentproto"
	"github.com/berth-dev/berth/internal/broker"
	"github.com/berth-dev/berth/internal/logattr"
	"github.com/berth-dev/berth/internal/wslink"
)

// Interface guard.
var _ broker.Dispatcher = (*Hub)(nil)

// DefaultUpdateInterval is Options.UpdateInterval when unset.
const DefaultUpdateInterval = 30 * time.Second

// writeTimeout bounds writing one message to an agent.
const writeTimeout = 15 * time.Second

// Service is the part of the broker core that the hub feeds. The broker core
// satisfies it. Calls for one server ID never overlap, and arrive in the order
// of the links: the hub calls AgentConnected for a new link only after every
// call for the link it replaces, and never calls AgentDisconnected for a link
// that a newer one replaced.
type Service interface {
	// AgentConnected registers or refreshes the server and reconciles its
	// sessions with the agent's list. It returns broker.ErrConflict if serverID
	// belongs to another agent client.
	AgentConnected(ctx context.Context, agentClientID, serverID string, info broker.ServerInfo, sessions []broker.SessionReport) error
	// AgentUpdate records a report: info and/or sessions may be nil when
	// unchanged; a nil-nil update is a heartbeat. sessions is a full list,
	// reconciled with the broker's.
	AgentUpdate(ctx context.Context, serverID string, info *broker.ServerInfo, sessions []broker.SessionReport) error
	// AgentSessionChanges applies the sessions that changed since the
	// agent's previous update (ended ones in state DELETED), without the
	// server's other sessions. The hub calls it only for changes that follow
	// the last update it passed on; after a gap it asks the agent for its
	// full list and passes that to AgentUpdate.
	AgentSessionChanges(ctx context.Context, serverID string, changes []broker.SessionReport) error
	// AgentFigures records the volatile host figures (load, memory and swap
	// in use) that the agent sent alone, on top of its last full report, and
	// counts as a contact as AgentUpdate does (version 3).
	AgentFigures(ctx context.Context, serverID string, f broker.HostFigures) error
	// AgentDisconnected marks the server unreachable (its link is gone).
	AgentDisconnected(ctx context.Context, serverID string)
}

// Authenticator checks agent client credentials. The broker adapts its OAuth
// authority to it.
type Authenticator interface {
	// AuthenticateAgent returns the agent client ID for valid credentials, and
	// an error otherwise; the hub answers any error with 401.
	AuthenticateAgent(ctx context.Context, id, secret string) (clientID string, err error)
}

// Observer is told of agent link events, for metrics. Its methods must be
// quick and safe for concurrent use.
type Observer interface {
	// LinkUp counts a link that completed its handshake. reconnect is true
	// when this hub had a link of the same server before (since it started).
	LinkUp(reconnect bool)
	// LinkDown counts a link that closed after LinkUp.
	LinkDown()
	// LinkRefused counts a connection refused before its link was up:
	// reason is one of RefusalReasons.
	LinkRefused(reason string)
}

// Reasons given to Observer.LinkRefused.
const (
	// RefusedAuth: no or invalid agent client credentials.
	RefusedAuth = "auth"
	// RefusedVersion: a protocol version the broker does not support.
	RefusedVersion = "protocol_version"
	// RefusedBadHello: the first message was not a valid hello.
	RefusedBadHello = "bad_hello"
	// RefusedConflict: the server ID belongs to another agent client.
	RefusedConflict = "conflict"
	// RefusedInternal: the broker could not record the agent.
	RefusedInternal = "internal"
	// RefusedShuttingDown: the hub was closing.
	RefusedShuttingDown = "shutting_down"
	// RefusedBusy: shed with 503 and Retry-After before the upgrade, because
	// the broker was starting or had MaxHandshakes handshakes under way.
	RefusedBusy = "busy"
)

// RefusalReasons lists every reason of Observer.LinkRefused.
func RefusalReasons() []string {
	return []string{RefusedAuth, RefusedVersion, RefusedBadHello, RefusedConflict, RefusedInternal, RefusedShuttingDown, RefusedBusy}
}

// noObserver is the Observer of a hub given none.
type noObserver struct{}

func (noObserver) LinkUp(bool)        {}
func (noObserver) LinkDown()          {}
func (noObserver) LinkRefused(string) {}

// Options tune a Hub.
type Options struct {
	// RequireAuth (enable-agent-authorization) makes agents present HTTP Basic
	// agent client credentials on the upgrade request. Without it every agent is
	// anonymous (client ID "").
	RequireAuth bool
	// HeartbeatTimeout closes a link that sent nothing for this long; 0 means
	// three update intervals. Keep it well above UpdateInterval.
	HeartbeatTimeout time.Duration
	// UpdateInterval is the longest time between two agent updates, sent to
	// agents in Welcome; 0 means DefaultUpdateInterval.
	UpdateInterval time.Duration
	// Timing, when set, gives the update interval and heartbeat timeout for
	// the fleet as it is now (broker.Service.LinkTiming), in place of
	// UpdateInterval and HeartbeatTimeout: a link gets them in its Welcome,
	// and a version 5 link is retimed by its next ack when they changed.
	Timing func() (interval, timeout time.Duration)
	// Logger receives the hub's logs; nil discards them.
	Logger *slog.Logger
	// Observer, when set, is told of link events (for metrics).
	Observer Observer
	// GatewayCAKeyID is the web gateway CA's key ID, sent to agents of
	// protocol version 2 and later in Welcome.
	GatewayCAKeyID string
	// MaxHandshakes bounds the connects handled at once, from the
	// WebSocket handshake (authenticated, its connection taken over from
	// net/http) to the Welcome; 0 means DefaultMaxHandshakes. A connect
	// that finds no slot within HandshakeWait (0: DefaultHandshakeWait) is
	// shed before the upgrade: 503 with a Retry-After of 1 s to RetryAfter
	// (0: DefaultRetryAfter), which agents wait out.
	MaxHandshakes int
	HandshakeWait time.Duration
	RetryAfter    time.Duration
	// Ready, when set, reports whether the broker takes agents yet; until it
	// does, connects are answered 503 with a Retry-After of 1 s.
	Ready func() bool
	// FleetSize, when set, is the number of servers the broker knows,
	// sent to agents in Welcome (they spread their reconnects over a window
	// that grows with it); unset, the number of servers that linked to the
	// hub.
	FleetSize func() int
	// GCHeadroom, when positive, is the garbage the GC may let pile up
	// before it collects, once the heap is large: the hub lowers GOGC to
	// about GCHeadroom over the live heap, within 25..100 (memory.go). 0
	// leaves the GC alone, as does a GOGC or GOMEMLIMIT in the environment.
	GCHeadroom int64
}

// Hub is the registry of agent links. Create it with New, mount Handler on the
// agent port, and Close it before the Service it feeds.
type Hub struct {
	svc  Service
	auth Authenticator
	opts Options
	log  *slog.Logger

	ctx    context.Context // cancelled by Close
	cancel context.CancelFunc
	wg     sync.WaitGroup // one per connection being served, until its link is torn down

	mu     sync.Mutex
	closed bool
	links  map[string]*link // the current link of each server ID
	// greeting holds the links in handshake (not yet in links), for Close.
	greeting map[*link]struct{}
	servers  map[string]*serverLock // serializes Service calls per server ID
	// linked holds every server ID that had a link to this hub, to tell
	// reconnections from first connections.
	linked map[string]struct{}

	handshakes chan struct{} // one per connect being admitted (admit)

	shedMu     sync.Mutex
	shedCount  int       // sheds since shedLogged
	shedLogged time.Time // last log line of sheds

	// The returned-memory policy (memory.go).
	memMu        sync.Mutex
	churn        int         // link changes since the last return
	memTimer     *time.Timer // fires stormQuiet after the last change of a storm
	storm        int         // link changes that make a storm
	quiet        time.Duration
	freeOSMemory func()
	gc           gcPolicy
	// Bursts (memory.go): commands sent and link changes, and when the
	// last burstEvents of each began (UnixNano).
	sent       atomic.Int64
	burstMark  atomic.Int64
	linkEvents atomic.Int64
	linkMark   atomic.Int64
	burstQuiet time.Duration
}

// serverLock is a reference-counted mutex for one server ID.
type serverLock struct {
	mu   sync.Mutex
	refs int
}

// New returns a hub that feeds svc. auth may be nil unless opts.RequireAuth.
func New(svc Service, auth Authenticator, opts Options) *Hub {
	if svc == nil {
		panic("agenthub: nil Service")
	}
	if opts.RequireAuth && auth == nil {
		panic("agenthub: RequireAuth without Authenticator")
	}
	if opts.UpdateInterval <= 0 {
		opts.UpdateInterval = DefaultUpdateInterval
	}
	if opts.HeartbeatTimeout <= 0 {
		opts.HeartbeatTimeout = 3 * opts.UpdateInterval
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if opts.Observer == nil {
		opts.Observer = noObserver{}
	}
	if opts.MaxHandshakes <= 0 {
		opts.MaxHandshakes = DefaultMaxHandshakes
	}
	if opts.HandshakeWait <= 0 {
		opts.HandshakeWait = DefaultHandshakeWait
	}
	if opts.RetryAfter <= 0 {
		opts.RetryAfter = DefaultRetryAfter
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Hub{
		svc:     svc,
		auth:    auth,
		opts:    opts,
		log:     log.With("component", "agenthub"),
		ctx:     ctx,
		cancel:  cancel,
		links:   make(map[string]*link),
		servers: make(map[string]*serverLock),
		linked:  make(map[string]struct{}),

		handshakes: make(chan struct{}, opts.MaxHandshakes),

		storm:        stormLinks,
		quiet:        stormQuiet,
		freeOSMemory: debug.FreeOSMemory,
		burstQuiet:   burstQuiet,
	}
}

// Handler serves the agent WebSocket at GET /agent/connect.
func (h *Hub) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /agent/connect", h.serveConnect)
	return mux
}

// Connected reports whether serverID's agent has a live link to this hub.
func (h *Hub) Connected(serverID string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	_, ok := h.links[serverID]
	return ok
}

// Count returns the number of live agent links.
func (h *Hub) Count() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.links)
}

// Close closes every link (telling agents the broker shuts down), refuses new
// ones, and waits until every connection handler has returned, including their
// AgentDisconnected calls. It is safe to call more than once.
func (h *Hub) Close() error {
	h.mu.Lock()
	h.closed = true
	links := make([]*link, 0, len(h.links)+len(h.greeting))
	for _, l := range h.links {
		links = append(links, l)
	}
	for l := range h.greeting { // ends handshakes in progress
		links = append(links, l)
	}
	h.mu.Unlock()
	for _, l := range links {
		l.close(agentproto.CodeShuttingDown, "broker shutting down", wslink.StatusGoingAway)
	}
	h.cancel()
	h.wg.Wait()
	h.stopMemory()
	return nil
}

// Dispatch implements broker.Dispatcher: it sends cmd to serverID's agent and
// waits for the result until ctx is done. The deadline of ctx travels with the
// command. It returns broker.ErrAgentUnreachable when the server has no link or
// the link fails before the result, a *broker.CommandError when the agent
// reports a failure, or ctx.Err(); a failure that arrives once ctx's deadline
// has passed is reported as context.DeadlineExceeded.
func (h *Hub) Dispatch(ctx context.Context, serverID string, cmd broker.Command) (*broker.Result, error) {
	c, err := commandBody(cmd)
	if err != nil {
		return nil, err
	}
	h.mu.Lock()
	l := h.links[serverID]
	opening := l == nil && h.servers[serverID] != nil
	h.mu.Unlock()
	if opening {
		// The server's agent is connecting: the broker is reconciling its
		// sessions under the server lock, and registers the link after.
		if err := h.waitServer(ctx, serverID); err != nil {
			return nil, err
		}
		h.mu.Lock()
		l = h.links[serverID]
		h.mu.Unlock()
	}
	if l == nil {
		return nil, broker.ErrAgentUnreachable
	}
	h.commandSent()
	return l.dispatch(ctx, c)
}

// waitServer waits until no Service call holds the server lock of id, or ctx
// ends.
func (h *Hub) waitServer(ctx context.Context, id string) error {
	done := make(chan struct{})
	go func() {
		h.lockServer(id)
		h.unlockServer(id)
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (h *Hub) serveConnect(w http.ResponseWriter, r *http.Request) {
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		http.Error(w, "broker shutting down", http.StatusServiceUnavailable)
		return
	}
	h.wg.Add(1)
	h.mu.Unlock()
	linked := false
	defer func() {
		if !linked {
			h.wg.Done()
		}
	}()
	if !h.ready(w) {
		return
	}

	log := h.log.With(logattr.Remote, r.RemoteAddr)
	var clientID string
	if h.opts.RequireAuth {
		id, secret, ok := r.BasicAuth()
		if !ok {
			log.Warn("agent refused: no credentials")
			h.opts.Observer.LinkRefused(RefusedAuth)
			unauthorized(w)
			return
		}
		cid, err := h.auth.AuthenticateAgent(r.Context(), id, secret)
		if err != nil {
			log.Warn("agent refused: authentication failed", logattr.AgentID, id, "err", err)
			h.opts.Observer.LinkRefused(RefusedAuth)
			unauthorized(w)
			return
		}
		clientID = cid
		log = log.With(logattr.AgentID, clientID)
	}
	p, err := wslink.Hijack(w, r)
	if err != nil {
		log.Info("agent websocket upgrade failed", "err", err)
		return
	}
	if !h.admit(r.Context(), p) {
		return
	}
	defer h.handshakeDone()
	conn, err := p.Accept(wslink.Options{ReadLimit: agentproto.MaxMessageSize, WriteTimeout: writeTimeout})
	if err != nil {
		log.Info("agent websocket upgrade failed", "err", err)
		return
	}
	linked = true
	l := newLink(h, conn, clientID, r.RemoteAddr)
	if !h.greet(l) {
		l.close(agentproto.CodeShuttingDown, "broker shutting down", wslink.StatusGoingAway)
	}
	l.serve(h.wg.Done)
}

// greet adds l to the links in handshake, which Close closes; it reports
// false, and adds nothing, once the hub is closed.
func (h *Hub) greet(l *link) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return false
	}
	if h.greeting == nil {
		h.greeting = make(map[*link]struct{})
	}
	h.greeting[l] = struct{}{}
	return true
}

// greeted removes l from the links in handshake, once its handshake ended
// (registered or not).
func (h *Hub) greeted(l *link) {
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.greeting, l)
	if len(h.greeting) == 0 {
		h.greeting = nil // a map keeps its size: give a storm's back
	}
}

func unauthorized(w http.ResponseWriter) {
	w.Header().Set("WWW-Authenticate", `Basic realm="berth-agent", charset="UTF-8"`)
	http.Error(w, "agent authentication required", http.StatusUnauthorized)
}

// lockServer takes the per-server lock of id; unlock with unlockServer.
func (h *Hub) lockServer(id string) {
	h.mu.Lock()
	s := h.servers[id]
	if s == nil {
		s = &serverLock{}
		h.servers[id] = s
	}
	s.refs++
	h.mu.Unlock()
	s.mu.Lock()
}

func (h *Hub) unlockServer(id string) {
	h.mu.Lock()
	s := h.servers[id]
	s.refs--
	if s.refs == 0 {
		delete(h.servers, id)
	}
	h.mu.Unlock()
	s.mu.Unlock()
}

// register makes l the current link of its server and returns the link it
// replaces, if any, and whether the server had a link to this hub before. It
// fails once the hub is closed. Hold the server lock.
func (h *Hub) register(l *link) (old *link, again bool, err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return nil, false, errHubClosed
	}
	old = h.links[l.serverID]
	h.links[l.serverID] = l
	_, again = h.linked[l.serverID]
	h.linked[l.serverID] = struct{}{}
	h.churned()
	return old, again, nil
}

// unregister removes l if it is still the current link of its server, and
// reports whether it was. Hold the server lock.
func (h *Hub) unregister(l *link) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.links[l.serverID] != l {
		return false
	}
	delete(h.links, l.serverID)
	h.churned()
	return true
}

// current reports whether l is the current link of its server.
func (h *Hub) current(l *link) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.links[l.serverID] == l
}

var errHubClosed = errors.New("hub closed")

package agenthub

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/berth-dev/berth/internal/agentproto"
	"github.com/berth-dev/berth/internal/broker"
	"github.com/berth-dev/berth/internal/logattr"
	"github.com/berth-dev/berth/internal/wslink"
)

// link is one agent connection, from upgrade to close.
type link struct {
	h        *Hub
	conn     *wslink.Conn
	remote   string // the agent's address, for logs
	clientID string
	serverID string // set by the hello

	// ctx is done once the link is closing. It descends from no other
	// context, so that it costs no entry in a parent's children: the hub
	// closes its links itself (Hub.Close).
	ctx    context.Context
	cancel context.CancelFunc
	// closing counts the closer (closeWith), which the end of serve waits
	// for.
	closing sync.WaitGroup
	ready   chan struct{} // closed once Welcome is sent; commands wait for it
	seq     atomic.Uint64

	// timeout is the link's heartbeat timeout, told in the Welcome or a
	// later ack; told is the update interval told with it (owned by the
	// applier after the handshake). deadlineMu orders the read loop's
	// arming of the read deadline with a retime's: a read already waiting
	// when the applier retimes the link gets the new timeout too.
	deadlineMu sync.Mutex
	timeout    time.Duration
	told       time.Duration

	// The session report stream, owned by the applier (set by the
	// handshake): the protocol version of the link, the Seq of the last
	// update, and whether changes wait for a full list (version 3).
	version int
	lastSeq uint64
	resync  bool
	// owed: the broker asked for a resync, or failed to record an update,
	// on an update without ID (no ack): the next ack says resync.
	owed bool

	closeOnce   sync.Once
	closeErr    *agentproto.Error // sent before closing, if not nil
	closeStatus wslink.StatusCode

	pmu     sync.Mutex
	pending map[string]chan *agentproto.Result // by command ID; made by the first command
	gone    bool                               // failPending ran: no more commands

	apply applier // the updates waiting to be applied (applier.go)
}

func newLink(h *Hub, conn *wslink.Conn, clientID, remote string) *link {
	ctx, cancel := context.WithCancel(context.Background())
	return &link{
		h:        h,
		conn:     conn,
		remote:   remote,
		clientID: clientID,
		ctx:      ctx,
		cancel:   cancel,
		ready:    make(chan struct{}),
	}
}

// logger is the hub's logger with the link's agent address, agent client
// and (after the hello) server. It is built for each message rather than
// kept: links log rarely, and a logger kept per link cost 10,000 idle links
// about 3.5 MB.
func (l *link) logger() *slog.Logger {
	args := make([]any, 0, 6)
	args = append(args, logattr.Remote, l.remote)
	if l.clientID != "" {
		args = append(args, logattr.AgentID, l.clientID)
	}
	if l.serverID != "" {
		args = append(args, logattr.ServerID, l.serverID)
	}
	return l.h.log.With(args...)
}

// close starts closing the link: the closer sends an Error with code (unless
// empty), then closes the WebSocket with status. The first call wins.
func (l *link) close(code, msg string, status wslink.StatusCode) {
	var e *agentproto.Error
	if code != "" {
		e = &agentproto.Error{Code: code, Message: msg}
	}
	l.closeWith(e, status)
}

// closeWith is close with a full Error message (nil: none).
func (l *link) closeWith(e *agentproto.Error, status wslink.StatusCode) {
	l.closeOnce.Do(func() {
		l.closeErr, l.closeStatus = e, status
		l.cancel()
		l.closing.Add(1)
		go l.closer()
	})
}

// closer sends the closing Error, if any, and closes the connection: the one
// place the connection is closed. Reads then fail, and the link ends.
func (l *link) closer() {
	defer l.closing.Done()
	reason := ""
	if l.closeErr != nil {
		_ = l.send("", l.closeErr)
		reason = l.closeErr.Code
	}
	_ = l.conn.Close(l.closeStatus, reason)
}

// refuse closes the link after sending e, as a policy violation.
func (l *link) refuse(e *agentproto.Error) {
	l.closeWith(e, wslink.StatusPolicyViolation)
}

// serve runs the link: the handshake on the handler's goroutine, then the
// reads (wake) and teardown on goroutines of their own (the handler returns, so
// that net/http's connection goroutine, whose stack the TLS handshake and the
// hello grew, ends). done is called once the link is torn down.
//
// There is no goroutine waiting for the link to close: closing runs the closer
// on a goroutine of its own (closeWith), and the hub closes every link when it
// closes. Neither a context.AfterFunc nor a parent context is needed, which
// cost 10,000 idle links about 10 MB.
func (l *link) serve(done func()) {
	finish := func() {
		l.close("", "", wslink.StatusNormalClosure)
		l.closing.Wait()
		done()
	}
	if !l.handshake() {
		finish()
		return
	}
	go l.wake(func() {
		defer finish()
		l.waitApplied()
		l.teardown()
	})
}

// teardown reports the link gone once its read loop ended: only the current
// link of a server may report it gone.
func (l *link) teardown() {
	l.h.lockServer(l.serverID)
	defer l.h.unlockServer(l.serverID)
	l.failPending()
	l.h.opts.Observer.LinkDown()
	if !l.h.unregister(l) {
		l.logger().Info("replaced agent link closed")
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(l.h.ctx), 10*time.Second)
	defer cancel()
	l.h.svc.AgentDisconnected(ctx, l.serverID)
	l.logger().Info("agent disconnected")
}

// handshake reads the Hello, hands it to the Service, registers the link and
// sends the Welcome. It reports whether the link is up; if not, it has asked
// for the link to close.
func (l *link) handshake() bool {
	h := l.h
	defer h.greeted(l)
	_ = l.conn.SetReadDeadline(time.Now().Add(h.opts.HeartbeatTimeout))
	typ, data, err := l.conn.ReadMessage()
	if err != nil {
		l.logger().Info("agent left before hello", "err", err)
		l.close("", "", wslink.StatusNormalClosure)
		return false
	}
	m, err := agentproto.Decode(data)
	var ve *agentproto.VersionError
	switch {
	case errors.As(err, &ve):
		l.logger().Warn("agent refused: protocol version not supported", "version", ve.Version)
		h.opts.Observer.LinkRefused(RefusedVersion)
		l.refuse(&agentproto.Error{Code: agentproto.CodeVersionUnsupported, Message: ve.Error(),
			MinVersion: agentproto.MinProtocolVersion, MaxVersion: agentproto.ProtocolVersion})
		return false
	case err == nil && typ != wslink.MessageText:
		err = errors.New("binary message")
	case err == nil && m.Type != agentproto.TypeHello:
		err = fmt.Errorf("first message is %s, want hello", m.Type)
	}
	if err != nil {
		l.logger().Warn("agent refused: bad hello", "err", err)
		h.opts.Observer.LinkRefused(RefusedBadHello)
		l.refuse(&agentproto.Error{Code: agentproto.CodeBadMessage, Message: err.Error()})
		return false
	}
	hello := m.Body.(*agentproto.Hello)
	l.serverID = hello.ServerID

	info := serverInfo(&hello.Host, hello.AgentVersion)
	sessions := sessionReports(hello.Sessions)
	if sessions == nil {
		sessions = []broker.SessionReport{}
	}
	h.lockServer(l.serverID)
	err = h.svc.AgentConnected(l.ctx, l.clientID, l.serverID, info, sessions)
	var old *link
	var again bool
	if err == nil {
		old, again, err = h.register(l)
		if err != nil { // the hub closed meanwhile: undo AgentConnected
			ctx, cancel := context.WithTimeout(context.WithoutCancel(h.ctx), 10*time.Second)
			h.svc.AgentDisconnected(ctx, l.serverID)
			cancel()
		}
	}
	h.unlockServer(l.serverID)
	switch {
	case errors.Is(err, errHubClosed):
		h.opts.Observer.LinkRefused(RefusedShuttingDown)
		l.refuse(&agentproto.Error{Code: agentproto.CodeShuttingDown, Message: "broker shutting down"})
		return false
	case errors.Is(err, broker.ErrConflict):
		l.logger().Warn("agent refused: server id belongs to another agent client", "err", err)
		h.opts.Observer.LinkRefused(RefusedConflict)
		l.refuse(&agentproto.Error{Code: agentproto.CodeConflict, Message: "server id belongs to another agent client"})
		return false
	case err != nil:
		l.logger().Error("agent refused: cannot record it", "err", err)
		h.opts.Observer.LinkRefused(RefusedInternal)
		l.refuse(&agentproto.Error{Code: agentproto.CodeInternal, Message: "broker cannot record the agent; try again later"})
		return false
	}
	h.opts.Observer.LinkUp(again)
	if old != nil {
		old.logger().Info("agent link replaced by a newer one")
		old.close(agentproto.CodeReplaced, "a newer link of this server took over", wslink.StatusPolicyViolation)
	}
	l.version = min(hello.ProtocolVersion, agentproto.ProtocolVersion)
	interval, timeout := h.timing()
	l.told, l.timeout = interval, timeout // before the read loop starts
	welcome := &agentproto.Welcome{
		ProtocolVersion:    l.version,
		UpdateIntervalMS:   interval.Milliseconds(),
		HeartbeatTimeoutMS: timeout.Milliseconds(),
	}
	if welcome.ProtocolVersion >= 2 {
		welcome.GatewayCAKeyID = h.opts.GatewayCAKeyID
	}
	if welcome.ProtocolVersion >= 3 {
		welcome.FleetSize = h.FleetSize()
	}
	if err := l.send("", welcome); err != nil {
		l.close("", "", wslink.StatusGoingAway)
		return true // registered: teardown reports it gone
	}
	close(l.ready)
	// The one line of a connect (the broker core logs none).
	l.logger().Info("agent connected", "agent_version", hello.AgentVersion,
		"protocol_version", l.version, "sessions", len(hello.Sessions), "reconnect", again)
	return true
}

// wake reads and handles the messages that arrived, then arranges for the
// next ones to be read on a new goroutine; once the link closes or the agent
// falls silent for the heartbeat timeout, it calls end.
//
// On a connection that parks (berth-broker's agent connector) no goroutine
// waits for an idle link: the messages that arrived are read and handled
// here, then the connection is armed in the shared idle poller
// (internal/idlepoll), which starts a new goroutine for the next bytes, the
// deadline or the close. So an idle link costs no goroutine, no stack and
// no read buffer. Where the connection cannot notify, the wait runs on a new
// goroutine (wait), which starts with a small stack and keeps it, since it
// only parks on the socket. On a connection that does not park,
// ReadMessageNow blocks, so the reads run here until the link ends.
func (l *link) wake(end func()) {
	if !l.readMessages() {
		end()
		return
	}
	if l.conn.NotifyReadable(func(err error) { l.woken(err, end) }) {
		return // no goroutine waits (internal/idlepoll)
	}
	go l.wait(end)
}

// wait parks until bytes arrive, then hands them to a new goroutine.
func (l *link) wait(end func()) {
	err := l.conn.WaitReadable()
	if err == nil {
		go l.wake(end)
		return
	}
	l.woken(err, end)
}

// woken reads what arrived, or ends the link after a failed wait.
func (l *link) woken(err error, end func()) {
	if err != nil {
		l.readFailed(err)
		end()
		return
	}
	l.wake(end)
}

// readMessages reads and handles messages until none is ready (it reports
// true) or the link ends (false).
func (l *link) readMessages() bool {
	for {
		// The heartbeat timeout is a read deadline on the connection, not a
		// context: a context with a timeout costs a timer and an AfterFunc per
		// message. Nor is a read bound to l.ctx: the closer sends a close
		// frame, and the read ends with the close handshake. The deadline
		// also bounds the wait.
		l.deadlineMu.Lock()
		_ = l.conn.SetReadDeadline(time.Now().Add(l.timeout))
		l.deadlineMu.Unlock()
		typ, data, err := l.conn.ReadMessageNow()
		if errors.Is(err, wslink.ErrWouldPark) {
			return true
		}
		if err != nil {
			l.readFailed(err)
			return false
		}
		if !l.handle(typ, data) {
			return false
		}
	}
}

// readFailed closes the link after a failed read or wait.
func (l *link) readFailed(err error) {
	if errors.Is(err, os.ErrDeadlineExceeded) {
		l.deadlineMu.Lock()
		timeout := l.timeout
		l.deadlineMu.Unlock()
		l.logger().Warn("agent silent past the heartbeat timeout", "timeout", timeout)
	} else if l.ctx.Err() == nil {
		l.logger().Debug("agent link read failed", "err", err)
	}
	l.close("", "", wslink.StatusGoingAway)
}

// handle handles one agent message. It reports whether the link goes on.
func (l *link) handle(typ wslink.MessageType, data []byte) bool {
	m, err := agentproto.Decode(data)
	if errors.Is(err, agentproto.ErrUnknownType) {
		l.logger().Debug("skipping unknown message", "type", m.Type)
		return true
	}
	if err == nil && typ != wslink.MessageText {
		err = errors.New("binary message")
	}
	if err != nil {
		l.logger().Warn("closing agent link: bad message", "err", err)
		l.refuse(&agentproto.Error{Code: agentproto.CodeBadMessage, Message: err.Error()})
		return false
	}
	switch b := m.Body.(type) {
	case *agentproto.Update:
		// Applied in order off this loop (applier.go), so that results
		// are delivered while an update waits for the store.
		return l.enqueue(m.ID, b)
	case *agentproto.Result:
		l.deliver(m.ID, b)
		return true
	case *agentproto.Error:
		l.logger().Info("agent closed the link", "code", b.Code, "message", b.Message)
		l.close("", "", wslink.StatusNormalClosure)
		return false
	default:
		l.logger().Warn("closing agent link: unexpected message", "type", m.Type)
		l.refuse(&agentproto.Error{Code: agentproto.CodeBadMessage, Message: "unexpected " + m.Type})
		return false
	}
}

// update records an Update and acks it. It reports whether the link goes on.
//
// Figures sent alone (version 3) go to AgentFigures, which applies them to
// the broker's copy of the last report without converting or comparing a
// whole one.
//
// On a version 3 link the update's session changes are applied only when its
// Seq follows the last update's; after a gap, or after an update the broker
// failed to record, changes are ignored until the agent sends its full list
// (the ack asks for it with Resync after a gap, and with Error after a
// failure), which is reconciled like a hello's.
func (l *link) update(id string, u *agentproto.Update) bool {
	var info *broker.ServerInfo
	if u.Host != nil {
		si := serverInfo(u.Host, "")
		info = &si
	}
	full := sessionReports(u.Sessions)
	var changes []broker.SessionReport
	ask := false
	if l.version >= 3 {
		switch {
		case u.Sessions != nil: // a full list: the new base, whatever its Seq
		case l.resync: // the agent knows: its next update brings the full list
		case u.Seq != l.lastSeq+1:
			l.logger().Warn("agent update out of sequence; asking for the full session list", "seq", u.Seq, "want", l.lastSeq+1)
			l.resync, ask = true, true
		default:
			changes = sessionReports(u.Changes)
		}
		l.lastSeq = u.Seq
	}
	l.h.lockServer(l.serverID)
	var err error
	if l.h.current(l) {
		if u.Figures != nil {
			// Figures alone: applied to the broker's copy of the last full
			// report, which AgentFigures counts as a contact.
			err = l.h.svc.AgentFigures(l.ctx, l.serverID, hostFigures(u.Figures))
		}
		if err == nil && (u.Figures == nil || full != nil) {
			err = l.h.svc.AgentUpdate(l.ctx, l.serverID, info, full)
		}
		if err == nil && len(changes) > 0 {
			err = l.h.svc.AgentSessionChanges(l.ctx, l.serverID, changes)
		}
	} else {
		err = errReplaced
	}
	l.h.unlockServer(l.serverID)
	if errors.Is(err, errReplaced) {
		l.close(agentproto.CodeReplaced, "a newer link of this server took over", wslink.StatusPolicyViolation)
		return false
	}
	ack := &agentproto.Ack{Resync: ask}
	switch {
	case err != nil:
		l.logger().Error("cannot record agent update", "err", err)
		ack.Error = "broker could not record the update"
		l.resync = l.version >= 3 // the agent sends everything next
	case full != nil:
		l.resync, l.owed = false, false
	}
	if id == "" {
		// A version 3 agent wants no ack for a heartbeat or figures
		// while the link is lively; what the ack would say goes with the
		// next one.
		l.owed = l.owed || ask || err != nil
		return true
	}
	if l.owed && l.resync {
		ack.Resync = true
	}
	l.owed = false
	l.retime(ack)
	if err := l.sendAck(id, ack); err != nil {
		l.close("", "", wslink.StatusGoingAway)
		return false
	}
	return true
}

var errReplaced = errors.New("link replaced")

// retime puts the fleet's update interval and heartbeat timeout in ack when
// they changed since the link was told (version 5), and holds the link to
// the new timeout at once: the read waiting now (updates other than bare
// heartbeats are applied off the read loop, which already waits for the
// next message) gets a deadline of the new timeout from now. The agent
// re-arms its timer on the ack, so its next update comes within the new
// interval.
func (l *link) retime(ack *agentproto.Ack) {
	if l.version < 5 || l.h.opts.Timing == nil {
		return
	}
	interval, timeout := l.h.timing()
	if interval == l.told {
		return
	}
	l.told = interval
	ack.UpdateIntervalMS, ack.HeartbeatTimeoutMS = interval.Milliseconds(), timeout.Milliseconds()
	l.deadlineMu.Lock()
	defer l.deadlineMu.Unlock()
	l.timeout = timeout
	_ = l.conn.SetReadDeadline(time.Now().Add(timeout))
}

// hostFigures converts the figures of an update.
func hostFigures(f *agentproto.HostFigures) broker.HostFigures {
	return broker.HostFigures{Load1: f.Load.One, Load5: f.Load.Five, Load15: f.Load.Fifteen,
		MemUsed: f.MemoryUsedBytes, SwapUsed: f.SwapUsedBytes}
}

// send encodes and writes one message, within the hub's write timeout.
func (l *link) send(id string, body agentproto.Body) error {
	data, err := agentproto.Encode(id, body)
	if err != nil {
		return err
	}
	return l.conn.WriteMessage(wslink.MessageText, data)
}

// dispatch sends a command and waits for its result.
func (l *link) dispatch(ctx context.Context, c *agentproto.Command) (*broker.Result, error) {
	select {
	case <-l.ready:
	case <-l.ctx.Done():
		return nil, broker.ErrAgentUnreachable
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	if need := minVersion(c.Kind); l.version < need {
		// An older agent's decoder refuses unknown kinds and would drop the link.
		return nil, &broker.CommandError{Reason: fmt.Sprintf("the agent speaks protocol version %d; %s needs version %d or later (upgrade the agent)", l.version, c.Kind, need)}
	}
	if dl, ok := ctx.Deadline(); ok {
		left := time.Until(dl)
		if left <= 0 {
			return nil, context.DeadlineExceeded
		}
		c.TimeoutMS = max(1, left.Milliseconds())
	}
	id := strconv.FormatUint(l.seq.Add(1), 10)
	ch := make(chan *agentproto.Result, 1)
	l.pmu.Lock()
	if l.gone {
		l.pmu.Unlock()
		return nil, broker.ErrAgentUnreachable
	}
	if l.pending == nil {
		l.pending = make(map[string]chan *agentproto.Result)
	}
	l.pending[id] = ch
	l.pmu.Unlock()
	defer func() {
		l.pmu.Lock()
		delete(l.pending, id)
		l.pmu.Unlock()
	}()

	if err := l.send(id, c); err != nil {
		l.close("", "", wslink.StatusGoingAway)
		return nil, fmt.Errorf("send %s command: %w", c.Kind, broker.ErrAgentUnreachable)
	}
	select {
	case r := <-ch:
		if !r.OK {
			// The agent may have given up because the deadline passed: say so
			// the way the caller's context does.
			if err := ctx.Err(); err != nil {
				return nil, err
			}
			if pastDeadline(ctx) {
				return nil, context.DeadlineExceeded
			}
		}
		return result(r)
	case <-l.ctx.Done():
		select {
		case r := <-ch: // it came in just before the link closed
			return result(r)
		default:
		}
		return nil, broker.ErrAgentUnreachable
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// pastDeadline reports whether ctx's deadline has passed, even if its timer has
// not fired yet.
func pastDeadline(ctx context.Context) bool {
	dl, ok := ctx.Deadline()
	return ok && !time.Now().Before(dl)
}

// deliver hands a result to the dispatch waiting for it; late results (the
// dispatch gave up) are dropped.
func (l *link) deliver(id string, r *agentproto.Result) {
	l.pmu.Lock()
	ch := l.pending[id]
	delete(l.pending, id)
	l.pmu.Unlock()
	if ch == nil {
		l.logger().Debug("dropping result of an abandoned command", "id", id)
		return
	}
	ch <- r // buffered, one sender
}

// failPending makes later dispatches fail at once; waiting ones see l.ctx done.
func (l *link) failPending() {
	l.pmu.Lock()
	l.pending, l.gone = nil, true
	l.pmu.Unlock()
}

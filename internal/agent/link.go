package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/berth-dev/berth/internal/agentproto"
	"github.com/coder/websocket"
)

// writeTimeout bounds writing one message: a base plus one second per MiB, so
// that a large screenshot on a slow link is not cut off.
func writeTimeout(n int) time.Duration {
	return 30*time.Second + time.Duration(n>>20)*time.Second
}

// link is one connection to a broker, from dial to close.
type link struct {
	r    *runner
	conn *websocket.Conn
	log  *slog.Logger

	// interval and readTimeout are set by the handshake, and again by an
	// ack that retimes the link (version 5); retimed then wakes serve to
	// re-arm its timer.
	interval    atomicDuration
	readTimeout atomicDuration
	retimed     chan struct{}
	version     int           // the link's protocol version, set by the handshake
	seq         atomic.Uint64 // updates sent: the Seq (version 3) and ID of the last one
	heard       atomic.Int64  // when the last broker message arrived (Unix nanoseconds)
	force       atomic.Bool   // the broker lost an update or asked: resend everything

	// Owned by serve's goroutine.
	host     agentproto.HostReport  // latest Report result
	sentRest []byte                 // the broker's last host report, figures left out (JSON)
	sentFigs agentproto.HostFigures // the figures the broker last got
	sentSess []byte                 // the session list the broker last got (versions 1 and 2)
	// sent holds the sessions as the broker last got them, by ID (version
	// 3): the base that the next update's changes are computed against.
	sent map[string]agentproto.Session

	failOnce  sync.Once
	failed    chan struct{} // closed by fail
	failErr   error
	closeCode websocket.StatusCode
}

// serve says hello, then runs the link until ctx is done or the link fails.
// up reports whether the broker welcomed the agent. It returns only after its
// reader goroutine has ended.
func (l *link) serve(ctx context.Context) (up bool, err error) {
	l.conn.SetReadLimit(agentproto.MaxMessageSize)
	if err := l.handshake(ctx); err != nil {
		l.conn.Close(websocket.StatusNormalClosure, "")
		return false, err
	}
	l.log.Info("connected to broker", "interval", l.interval.Load())
	l.r.metrics.BrokerLink(true)
	defer l.r.metrics.BrokerLink(false)

	readerDone := make(chan struct{})
	go func() {
		defer close(readerDone)
		l.readLoop()
	}()
	tick := time.NewTicker(l.interval.Load())
	defer tick.Stop()
	for {
		select {
		case <-l.retimed:
			tick.Reset(l.interval.Load())
		case <-ctx.Done():
			l.conn.Close(websocket.StatusGoingAway, "agent stopping")
			<-readerDone
			return true, nil
		case <-l.failed:
			code := l.closeCode
			if code == 0 {
				code = websocket.StatusGoingAway
			}
			l.conn.Close(code, "")
			<-readerDone
			return true, l.failErr
		case <-tick.C:
			l.update(ctx, true)
		case <-l.r.changed:
			l.update(ctx, false)
		}
	}
}

// fail ends the link with err (the first failure wins).
func (l *link) fail(code websocket.StatusCode, err error) {
	l.failOnce.Do(func() {
		l.failErr = err
		l.closeCode = code
		close(l.failed)
	})
}

// handshake sends Hello and waits for Welcome.
func (l *link) handshake(ctx context.Context) error {
	r := l.r
	host, err := r.hostReport(ctx)
	if err != nil {
		return fmt.Errorf("host report: %w", err)
	}
	sessions, err := r.sessions(ctx)
	if err != nil {
		// Never say hello with a partial list: the broker would end the missing sessions.
		return fmt.Errorf("list sessions: %w", err)
	}
	l.host = host
	hello := &agentproto.Hello{
		ProtocolVersion: agentproto.ProtocolVersion,
		ServerID:        r.a.ServerID,
		AgentVersion:    r.a.Version,
		Host:            host,
		Sessions:        sessions,
	}
	if err := l.send(ctx, "", hello); err != nil {
		return err
	}
	rctx, cancel := context.WithTimeout(ctx, helloTimeout)
	defer cancel()
	_, data, err := l.conn.Read(rctx)
	if err != nil {
		return fmt.Errorf("wait for welcome: %w", err)
	}
	m, err := agentproto.Decode(data)
	if err != nil {
		return fmt.Errorf("wait for welcome: %w", err)
	}
	switch b := m.Body.(type) {
	case *agentproto.Welcome:
		if !agentproto.SupportedVersion(b.ProtocolVersion) {
			return fmt.Errorf("broker speaks protocol version %d; this agent speaks %d to %d",
				b.ProtocolVersion, agentproto.MinProtocolVersion, agentproto.ProtocolVersion)
		}
		l.setTiming(b.UpdateInterval(), b.HeartbeatTimeout())
		l.version = b.ProtocolVersion
		l.heard.Store(time.Now().UnixNano())
		l.sentRest, l.sentFigs = hostRest(&host), host.Figures()
		if l.version >= 3 {
			l.sent = make(map[string]agentproto.Session, len(sessions))
			l.base(sessions)
		} else {
			l.sentSess, _ = json.Marshal(sessions)
		}
		r.a.welcomed(r.creds, b.GatewayCAKeyID)
		r.fleetSize = b.FleetSize
		return nil
	case *agentproto.Error:
		return fmt.Errorf("broker refused the agent: %w", b)
	default:
		return fmt.Errorf("wait for welcome: got %s", m.Type)
	}
}

// maxInterval bounds the update interval and heartbeat timeout a broker may
// set: a day, as the agent's own broker_update_interval.
const maxInterval = 24 * time.Hour

// linkTiming returns the update interval and read timeout of a link whose
// broker asked for interval and timeout (0: unsaid), for an agent whose own
// interval is own (0: none set).
//
// An agent with an interval of its own keeps it unless the broker asks for
// a shorter one; one without follows the broker, longer or shorter (a large
// fleet's broker asks for less, so that its load stays bounded), and
// DefaultUpdateInterval when the broker says nothing.
func linkTiming(own, interval, timeout time.Duration) (time.Duration, time.Duration) {
	interval, timeout = min(interval, maxInterval), min(timeout, maxInterval)
	switch {
	case own > 0 && interval > 0:
		interval = min(own, interval)
	case own > 0:
		interval = own
	case interval <= 0:
		interval = DefaultUpdateInterval
	}
	if timeout <= 0 {
		timeout = 3 * interval
	}
	// The broker acks the updates that ask, and update asks at least every
	// half of this: silence past the broker's own timeout plus one interval
	// means the link is dead.
	return interval, timeout + interval
}

// setTiming sets the link's interval and read timeout for what the broker
// asked (linkTiming).
func (l *link) setTiming(interval, timeout time.Duration) {
	interval, timeout = linkTiming(l.r.a.UpdateInterval, interval, timeout)
	l.interval.Store(interval)
	l.readTimeout.Store(timeout)
}

// update sends an Update with whatever changed since the broker last heard;
// refresh re-runs the host report (on the periodic tick). With nothing changed
// it is a heartbeat on the tick and nothing otherwise.
//
// On a version 3 link the sessions travel as changes against what the broker
// last got, numbered by Seq; the full list only when the broker asked for it
// or failed to record an update. Likewise the host report: when only its
// volatile figures (load, memory and swap in use) moved, they travel alone
// (Update.Figures). Older brokers get the full list and report whenever they
// changed.
func (l *link) update(ctx context.Context, refresh bool) {
	r := l.r
	if refresh {
		host, err := r.hostReport(ctx)
		if err != nil {
			l.log.Warn("host report failed; sending the previous one", "err", err)
		} else {
			l.host = host
		}
	}
	host := l.host
	r.applyHealth(ctx, &host)
	force := l.force.Swap(false)
	u := &agentproto.Update{}
	figs := host.Figures()
	if !finite(figs) {
		// Not encodable: keep the figures the broker has.
		figs = l.sentFigs
		host.SetFigures(figs)
	}
	switch rest := hostRest(&host); {
	case force || !bytes.Equal(rest, l.sentRest):
		u.Host = &host
		l.sentRest, l.sentFigs = rest, figs
	case figs == l.sentFigs:
	case l.version >= 3:
		// Only the figures moved: they travel alone.
		u.Figures = &figs
		l.sentFigs = figs
	default:
		u.Host = &host
		l.sentFigs = figs
	}
	sessions, err := r.sessions(ctx)
	switch {
	case err != nil:
		l.log.Warn("list sessions failed; not reporting them", "err", err)
		if force {
			l.force.Store(true) // the full list is still owed
		}
	case l.version >= 3 && force:
		u.Sessions = sessions
		clear(l.sent)
		l.base(sessions)
	case l.version >= 3:
		u.Changes = l.changes(sessions)
	default:
		if sb, err := json.Marshal(sessions); err == nil && (force || !bytes.Equal(sb, l.sentSess)) {
			u.Sessions = sessions
			l.sentSess = sb
		}
	}
	if !refresh && u.Host == nil && u.Figures == nil && u.Sessions == nil && len(u.Changes) == 0 {
		return
	}
	seq := l.seq.Add(1)
	id := "u" + strconv.FormatUint(seq, 10)
	if l.version >= 3 {
		u.Seq = seq
		if u.Host == nil && u.Sessions == nil && len(u.Changes) == 0 &&
			time.Since(time.Unix(0, l.heard.Load())) < l.readTimeout.Load()/2 {
			// A heartbeat or figures alone, and the broker spoke lately:
			// no ack wanted (the broker tells of a failure or gap in the
			// next ack it sends). Asking for one at least every half read
			// timeout leaves the other half for it to come.
			id = ""
		}
	}
	if err := l.send(ctx, id, u); err != nil {
		l.fail(websocket.StatusGoingAway, err)
	}
}

// atomicDuration is a time.Duration that goroutines share.
type atomicDuration struct{ v atomic.Int64 }

// Load returns the duration.
func (d *atomicDuration) Load() time.Duration { return time.Duration(d.v.Load()) }

// Store sets the duration.
func (d *atomicDuration) Store(x time.Duration) { d.v.Store(int64(x)) }

// hostRest returns the JSON of h without its volatile figures: what, when it
// is unchanged, lets figures travel alone.
func hostRest(h *agentproto.HostReport) []byte {
	rest := *h
	rest.SetFigures(agentproto.HostFigures{})
	b, _ := json.Marshal(rest) // cannot fail: no figures, no floats
	return b
}

// finite reports whether f can be encoded (JSON has no NaN or infinities).
func finite(f agentproto.HostFigures) bool {
	for _, x := range []float64{f.Load.One, f.Load.Five, f.Load.Fifteen} {
		if math.IsNaN(x) || math.IsInf(x, 0) {
			return false
		}
	}
	return true
}

// base records sessions as what the broker has.
func (l *link) base(sessions []agentproto.Session) {
	for _, s := range sessions {
		l.sent[s.ID] = s
	}
}

// changes returns the sessions that differ from what the broker last got, and
// records them as sent: new and changed ones as they are, and those gone from
// the host as DELETED (unless already reported so). They are sorted by ID.
func (l *link) changes(sessions []agentproto.Session) []agentproto.Session {
	var out []agentproto.Session
	now := make(map[string]struct{}, len(sessions))
	for _, s := range sessions {
		now[s.ID] = struct{}{}
		if old, ok := l.sent[s.ID]; ok && sameSession(&old, &s) {
			continue
		}
		l.sent[s.ID] = s
		out = append(out, s)
	}
	for id, old := range l.sent {
		if _, ok := now[id]; ok {
			continue
		}
		delete(l.sent, id)
		if old.State == agentproto.StateDeleted {
			continue
		}
		old.State, old.StateReason, old.NumConnections = agentproto.StateDeleted, "", 0
		out = append(out, old)
	}
	slices.SortFunc(out, func(a, b agentproto.Session) int { return strings.Compare(a.ID, b.ID) })
	return out
}

// sameSession reports whether a and b would say the same on the wire.
func sameSession(a, b *agentproto.Session) bool {
	return a.ID == b.ID && a.Name == b.Name && a.Owner == b.Owner && a.Type == b.Type &&
		a.State == b.State && a.StateReason == b.StateReason &&
		a.MaxConcurrentClients == b.MaxConcurrentClients && a.StorageRoot == b.StorageRoot &&
		a.CreationTime.Equal(b.CreationTime) && a.LastDisconnectionTime.Equal(b.LastDisconnectionTime) &&
		a.NumConnections == b.NumConnections && a.LastInputTime.Equal(b.LastInputTime) &&
		slices.Equal(a.OwnerGroups, b.OwnerGroups)
}

// readLoop reads broker messages until the link fails.
func (l *link) readLoop() {
	for {
		timeout := l.readTimeout.Load()
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		typ, data, err := l.conn.Read(ctx)
		// Before cancel, which would make every failure look like the timeout.
		silent := errors.Is(ctx.Err(), context.DeadlineExceeded)
		cancel()
		if err != nil {
			if silent {
				err = fmt.Errorf("broker silent for %s", timeout)
			}
			l.fail(websocket.StatusGoingAway, err)
			return
		}
		l.heard.Store(time.Now().UnixNano())
		m, err := agentproto.Decode(data)
		if typ != websocket.MessageText && err == nil {
			err = errors.New("binary message")
		}
		if errors.Is(err, agentproto.ErrUnknownType) {
			l.log.Debug("skipping unknown message", "type", m.Type)
			continue
		}
		if err != nil {
			l.sendError(agentproto.CodeBadMessage, err.Error())
			l.fail(websocket.StatusPolicyViolation, fmt.Errorf("bad message from broker: %w", err))
			return
		}
		switch b := m.Body.(type) {
		case *agentproto.Command:
			l.r.startCommand(l, m.ID, b)
		case *agentproto.Ack:
			switch {
			case b.Error != "":
				l.log.Warn("broker could not record an update; resending everything", "err", b.Error)
				l.force.Store(true)
			case b.Resync:
				l.log.Info("broker asked for the full session list")
				l.force.Store(true)
			}
			if b.UpdateIntervalMS > 0 || b.HeartbeatTimeoutMS > 0 {
				before := l.interval.Load()
				l.setTiming(b.UpdateInterval(), b.HeartbeatTimeout())
				if after := l.interval.Load(); after != before {
					l.log.Info("broker retimed the link", "interval", after, "was", before)
					select {
					case l.retimed <- struct{}{}:
					default: // serve has one to read already
					}
				}
			}
		case *agentproto.Error:
			l.fail(websocket.StatusNormalClosure, fmt.Errorf("broker closed the link: %w", b))
			return
		default:
			l.log.Warn("unexpected message from broker", "type", m.Type)
		}
	}
}

// send encodes and writes one message.
func (l *link) send(ctx context.Context, id string, body agentproto.Body) error {
	data, err := agentproto.Encode(id, body)
	if err != nil {
		return err
	}
	// Not bound to ctx: cancelling a write midway would tear down the link.
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), writeTimeout(len(data)))
	defer cancel()
	if err := l.conn.Write(wctx, websocket.MessageText, data); err != nil {
		return fmt.Errorf("send %s: %w", body.MessageType(), err)
	}
	return nil
}

// sendError tells the broker why the agent closes the link.
func (l *link) sendError(code, msg string) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = l.send(ctx, "", &agentproto.Error{Code: code, Message: msg})
}

// sendResult answers a command; a result too large for one message becomes a
// failure.
func (l *link) sendResult(id string, res *agentproto.Result) {
	data, err := agentproto.Encode(id, res)
	if errors.Is(err, agentproto.ErrTooLarge) {
		res = &agentproto.Result{Error: fmt.Sprintf("result too large for the agent link (over %d MiB)", agentproto.MaxMessageSize>>20)}
		data, err = agentproto.Encode(id, res)
	}
	if err != nil {
		l.log.Error("cannot encode command result", "err", err)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), writeTimeout(len(data)))
	defer cancel()
	if err := l.conn.Write(ctx, websocket.MessageText, data); err != nil {
		l.log.Info("command result not delivered; the link is gone", "err", err)
	}
}

package gateway

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/berth-dev/berth/internal/logattr"
	"github.com/coder/websocket"
)

// dialTimeout bounds connecting to a session's VNC socket.
const dialTimeout = 5 * time.Second

// bridge is one bridged WebSocket connection.
type bridge struct {
	session string
	user    string
	client  string // the page's clientId, for session-info's peers (peers.go)
	rights  atomic.Pointer[rights]
	// lastInput is the Unix second of the last input reported to the
	// InputObserver.
	lastInput atomic.Int64

	stopOnce sync.Once
	stopped  chan struct{} // closed by stop
	code     websocket.StatusCode
	reason   string
}

// stop asks the bridge to end with a close code and reason.
func (b *bridge) stop(code websocket.StatusCode, reason string) {
	b.stopOnce.Do(func() {
		b.code, b.reason = code, reason
		close(b.stopped)
	})
}

// reserve registers a new bridge for g unless the session is full.
func (s *Server) reserve(g *grant) (*bridge, bool) {
	b := &bridge{session: g.session.ID, user: g.claims.User, client: g.client, stopped: make(chan struct{})}
	r := g.rights
	b.rights.Store(&r)
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil, false
	}
	m := s.conns[b.session]
	if g.session.MaxClients > 0 && len(m) >= g.session.MaxClients {
		s.mu.Unlock()
		return nil, false
	}
	if m == nil {
		m = make(map[*bridge]struct{})
		s.conns[b.session] = m
	}
	m[b] = struct{}{}
	if b.client != "" {
		delete(s.kicks, b.client) // the page connects again: its disconnection is over
	}
	s.wg.Add(1)
	s.mu.Unlock()
	s.report(b.session)
	return b, true
}

// release unregisters a bridge and records the disconnection.
func (s *Server) release(b *bridge) {
	s.mu.Lock()
	if m := s.conns[b.session]; m != nil {
		delete(m, b)
		if len(m) == 0 {
			delete(s.conns, b.session)
		}
	}
	s.lastDis[b.session] = s.cfg.Now().UTC()
	s.mu.Unlock()
	s.report(b.session)
	s.wg.Done()
}

// report tells the driver a session's connection count, in order.
func (s *Server) report(id string) {
	s.reportMu.Lock()
	defer s.reportMu.Unlock()
	s.mu.Lock()
	n, last := len(s.conns[id]), s.lastDis[id]
	if n == 0 {
		// Forget sessions without connections only once reported; the
		// driver keeps the time.
		delete(s.lastDis, id)
	}
	s.mu.Unlock()
	if s.cfg.Sessions != nil {
		s.cfg.Sessions.ConnectionChanged(id, n, last)
	}
}

// isClosed reports whether Close has been called.
func (s *Server) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

// Connections returns the number of live bridged connections of a session.
func (s *Server) Connections(id string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.conns[id])
}

func (s *Server) serveWebSocket(w http.ResponseWriter, r *http.Request) {
	m := s.cfg.Metrics
	g, herr := s.authorize(r.Context(), r)
	if herr != nil {
		m.ConnectionRefused(herr.metricReason())
		herr.write(w)
		return
	}
	b, ok := s.reserve(g)
	if !ok {
		reason := RefusedFull
		if s.isClosed() {
			reason = RefusedUnavailable
		}
		m.ConnectionRefused(reason)
		(&httpError{http.StatusServiceUnavailable, "the session has its maximum number of clients"}).write(w)
		return
	}
	defer s.release(b)
	c, err := websocket.Accept(w, r, &websocket.AcceptOptions{Subprotocols: []string{"binary"}})
	if err != nil {
		m.ConnectionRefused(RefusedBadRequest) // not a WebSocket handshake; Accept has answered
		return
	}
	vnc, err := dialSession(r.Context(), g.session)
	if err != nil {
		m.ConnectionRefused(RefusedUnreachable)
		s.log.Warn("cannot reach the session's VNC server", logattr.SessionID, b.session, "err", err)
		c.Close(websocket.StatusTryAgainLater, "the session is not reachable")
		return
	}
	m.ConnectionOpened()
	defer m.ConnectionClosed()
	s.inputSeen(b) // a new connection counts as input
	log := s.log.With(logattr.SessionID, b.session, logattr.User, b.user, logattr.Remote, r.RemoteAddr)
	log.Info("client connected", "view_only", g.rights.viewOnly())
	why := s.pump(c, vnc, b)
	log.Info("client disconnected", "why", why)
}

// dialSession connects to a session's VNC socket and checks that the peer
// is the session's server.
func dialSession(ctx context.Context, sess Session) (net.Conn, error) {
	d := net.Dialer{Timeout: dialTimeout}
	conn, err := d.DialContext(ctx, "unix", sess.Socket)
	if err != nil {
		return nil, err
	}
	if err := checkPeer(conn, sess.UID, sess.PID); err != nil {
		conn.Close()
		return nil, err
	}
	return conn, nil
}

// unparsable starts the reason of a bridge whose server parser failed.
const unparsable = "session sent a message the gateway cannot parse: "

// pump copies between the WebSocket and the VNC socket until either side
// ends or the bridge is stopped, and returns why it ended.
func (s *Server) pump(c *websocket.Conn, vnc net.Conn, b *bridge) string {
	// Not derived from s.ctx: cancelling would cut the WebSocket without a
	// close frame; the select below handles the gateway's shutdown.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	nc := websocket.NetConn(ctx, c, websocket.MessageBinary)
	link := newLink()
	ended := make(chan string, 3)
	var wg sync.WaitGroup
	wg.Add(3)
	go func() { // server → client, parsed and filtered
		defer wg.Done()
		p := newServerParser(nc, vnc, link, func() bool { return b.rights.Load().clipboardCopy })
		err := p.run()
		if errors.Is(err, errRFB) {
			ended <- unparsable + err.Error()
			return
		}
		ended <- "session closed the connection" + errSuffix(err)
	}()
	go func() { // client → server, filtered
		defer wg.Done()
		ended <- "client closed the connection" + errSuffix(s.filterCopy(vnc, nc, b, link))
	}()
	go func() { // keepalive
		defer wg.Done()
		t := time.NewTicker(s.cfg.PingInterval)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				pctx, pcancel := context.WithTimeout(ctx, s.cfg.PingInterval)
				err := c.Ping(pctx)
				pcancel()
				if err != nil && ctx.Err() == nil {
					ended <- "client stopped answering pings"
					return
				}
			}
		}
	}()
	var why string
	code, reason := websocket.StatusNormalClosure, ""
	select {
	case why = <-ended:
		if strings.HasPrefix(why, unparsable) {
			code, reason = websocket.StatusGoingAway, "the gateway cannot parse the session's messages"
		} else if why[0] == 's' {
			code, reason = websocket.StatusGoingAway, "the session closed the connection"
		}
	case <-b.stopped:
		why, code, reason = b.reason, b.code, b.reason
	case <-s.ctx.Done():
		why, code, reason = "gateway closed", websocket.StatusGoingAway, "the gateway is shutting down"
	}
	vnc.Close()
	closed := make(chan struct{})
	go func() {
		c.Close(code, reason) // waits (bounded) for the client's close frame
		close(closed)
	}()
	select {
	case <-closed:
	case <-time.After(2 * time.Second):
		c.CloseNow()
		<-closed
	}
	cancel()
	wg.Wait()
	return why
}

func errSuffix(err error) string {
	if err == nil || errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) || errors.Is(err, context.Canceled) {
		return ""
	}
	var ce websocket.CloseError
	if errors.As(err, &ce) {
		return ""
	}
	return ": " + err.Error()
}

// filterCopy copies client messages to the VNC server, dropping what the
// bridge's current rights do not allow. It returns when either side fails
// or the client breaks the protocol.
func (s *Server) filterCopy(dst io.Writer, src io.Reader, b *bridge, link *rfbLink) error {
	f := &clientFilter{allow: func(in input) bool {
		ok := b.rights.Load().allows(in)
		if ok && (in == inputKeyboard || in == inputMouse) {
			s.inputSeen(b)
		}
		return ok
	}, link: link}
	buf := make([]byte, 32<<10)
	var out []byte
	for {
		n, err := src.Read(buf)
		if n > 0 {
			var ferr error
			out, ferr = f.feed(out[:0], buf[:n])
			if len(out) > 0 {
				if _, werr := dst.Write(out); werr != nil {
					return werr
				}
			}
			if ferr != nil {
				return ferr
			}
		}
		if err != nil {
			return err
		}
	}
}

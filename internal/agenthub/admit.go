package agenthub

import (
	"bufio"
	"bytes"
	"context"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"time"
)

// Handshake admission defaults (Options).
const (
	// DefaultMaxHandshakes is Options.MaxHandshakes when unset. A connect
	// holds its slot mostly while it waits for its agent's hello, which
	// costs the broker nothing, so the bound is on memory, not CPU (the
	// TLS handshakes' cryptography has its own, internal/tlsaccept).
	DefaultMaxHandshakes = 512
	// DefaultHandshakeWait is Options.HandshakeWait when unset: a connect
	// waits that long for a slot before it is shed, because a shed connect
	// has paid for its TLS handshake and costs another when it comes back
	// (in the fleet benchmark, 128 slots and a 1 s wait shed 4,383 of
	// 10,000 relinking agents, each waiting out a Retry-After of 1–5 s).
	DefaultHandshakeWait = 5 * time.Second
	// DefaultRetryAfter is Options.RetryAfter when unset.
	DefaultRetryAfter = 5 * time.Second
)

// Buffer sizes of an agent link's WebSocket once upgraded. net/http hands a
// hijacked connection its 4 KiB read and write buffers, which the link would
// keep for its whole life (8 KiB of each link's ~50 KiB): agent messages are
// small (an ack is under 100 bytes) and TLS buffers a whole record anyway, so
// small buffers cost nothing measurable, and larger writes bypass them.
const (
	linkReadBuffer  = 512
	linkWriteBuffer = 512
)

// admit takes a handshake slot for a connect request, waiting at most
// HandshakeWait for one, or answers 503 with a Retry-After and reports
// false. Before the broker is ready (Options.Ready) every request is
// answered so. Release the slot with handshakeDone.
func (h *Hub) admit(ctx context.Context, w http.ResponseWriter) bool {
	if h.opts.Ready != nil && !h.opts.Ready() {
		h.shed(w, "broker starting", time.Second)
		return false
	}
	select {
	case h.handshakes <- struct{}{}:
		return true
	default:
	}
	t := time.NewTimer(h.opts.HandshakeWait)
	defer t.Stop()
	select {
	case h.handshakes <- struct{}{}:
		return true
	case <-t.C:
	case <-ctx.Done():
	}
	h.shed(w, "broker busy: too many agents connecting", h.opts.RetryAfter)
	return false
}

// handshakeDone releases the slot admit took.
func (h *Hub) handshakeDone() { <-h.handshakes }

// shed answers a connect request with 503 and a Retry-After drawn uniformly
// from [1 s, most] (whole seconds), so that the agents it sheds come back
// spread out, and logs the sheds at most once every 10 s.
func (h *Hub) shed(w http.ResponseWriter, msg string, most time.Duration) {
	secs := 1 + rand.Int64N(max(1, int64(most/time.Second)))
	w.Header().Set("Retry-After", strconv.FormatInt(secs, 10))
	http.Error(w, msg, http.StatusServiceUnavailable)
	h.opts.Observer.LinkRefused(RefusedBusy)
	now := time.Now()
	h.shedMu.Lock()
	h.shedCount++
	if now.Sub(h.shedLogged) < 10*time.Second {
		h.shedMu.Unlock()
		return
	}
	n := h.shedCount
	h.shedCount, h.shedLogged = 0, now
	h.shedMu.Unlock()
	h.log.Warn("agent connects shed", "reason", msg, "count", n, "max_handshakes", h.opts.MaxHandshakes)
}

// timing returns the update interval and heartbeat timeout links get now:
// Options.Timing's, else Options.UpdateInterval and HeartbeatTimeout.
func (h *Hub) timing() (interval, timeout time.Duration) {
	if h.opts.Timing != nil {
		if interval, timeout = h.opts.Timing(); interval > 0 && timeout > 0 {
			return interval, timeout
		}
	}
	return h.opts.UpdateInterval, h.opts.HeartbeatTimeout
}

// FleetSize is the number of servers the broker knows of, as Welcome tells
// the agents: Options.FleetSize, or the servers that linked to this hub.
func (h *Hub) FleetSize() int {
	if h.opts.FleetSize != nil {
		return h.opts.FleetSize()
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.linked)
}

// smallBuffers is the ResponseWriter the WebSocket upgrade hijacks: it hands
// websocket.Accept the connection with small buffers (linkReadBuffer,
// linkWriteBuffer) instead of net/http's 4 KiB ones, and keeps the
// connection (for the link's read deadlines).
type smallBuffers struct {
	http.ResponseWriter
	conn net.Conn // set by Hijack
}

// Hijack implements http.Hijacker.
func (s *smallBuffers) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	conn, brw, err := http.NewResponseController(s.ResponseWriter).Hijack()
	if err != nil {
		return nil, nil, err
	}
	if err := brw.Writer.Flush(); err != nil { // empty: net/http flushed the 101
		conn.Close()
		return nil, nil, err
	}
	if n := brw.Reader.Buffered(); n > 0 {
		// The agent wrote ahead of the 101: keep those bytes. (Accept resets
		// the reader onto the connection, so they go in front of it.)
		b, _ := brw.Reader.Peek(n)
		conn = &prefixConn{Conn: conn, rest: bytes.Clone(b)}
	}
	s.conn = conn
	return conn, bufio.NewReadWriter(bufio.NewReaderSize(conn, linkReadBuffer), bufio.NewWriterSize(conn, linkWriteBuffer)), nil
}

// prefixConn reads rest before its connection.
type prefixConn struct {
	net.Conn
	rest []byte
}

func (c *prefixConn) Read(p []byte) (int, error) {
	if len(c.rest) > 0 {
		n := copy(p, c.rest)
		c.rest = c.rest[n:]
		return n, nil
	}
	return c.Conn.Read(p)
}

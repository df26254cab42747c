package agenthub

import (
	"context"
	"math/rand/v2"
	"net/http"
	"strconv"
	"time"

	"github.com/berth-dev/berth/internal/wslink"
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

// ready reports whether the broker takes connects (Options.Ready); before it
// does, it answers 503 with a Retry-After of 1 s and reports false.
func (h *Hub) ready(w http.ResponseWriter) bool {
	if h.opts.Ready == nil || h.opts.Ready() {
		return true
	}
	msg := "broker starting"
	w.Header().Set("Retry-After", h.shed(msg, time.Second))
	http.Error(w, msg, http.StatusServiceUnavailable)
	return false
}

// admit takes a handshake slot for a connect whose connection is taken over
// (p), waiting at most HandshakeWait for one, or answers 503 with a
// Retry-After and reports false. The wait holds the connect's goroutine
// only: net/http's read goroutine and buffers went with the hijack, and
// thousands of agents relinking at once wait here. Release the slot with
// handshakeDone.
func (h *Hub) admit(ctx context.Context, p *wslink.Pending) bool {
	select {
	case h.handshakes <- struct{}{}:
		return true
	default:
	}
	t := time.NewTimer(h.opts.HandshakeWait)
	defer t.Stop()
	msg, most := "broker busy: too many agents connecting", h.opts.RetryAfter
	select {
	case h.handshakes <- struct{}{}:
		return true
	case <-t.C:
	case <-ctx.Done():
	case <-h.ctx.Done():
		msg, most = "broker shutting down", time.Second
	}
	_ = p.Refuse(http.StatusServiceUnavailable, http.Header{"Retry-After": {h.shed(msg, most)}}, msg)
	return false
}

// handshakeDone releases the slot admit took.
func (h *Hub) handshakeDone() { <-h.handshakes }

// shed counts a connect answered 503 and returns its Retry-After, drawn
// uniformly from [1 s, most] (whole seconds), so that the agents it sheds come
// back spread out; it logs the sheds at most once every 10 s.
func (h *Hub) shed(msg string, most time.Duration) (retryAfter string) {
	secs := 1 + rand.Int64N(max(1, int64(most/time.Second)))
	h.opts.Observer.LinkRefused(RefusedBusy)
	now := time.Now()
	h.shedMu.Lock()
	h.shedCount++
	if now.Sub(h.shedLogged) < 10*time.Second {
		h.shedMu.Unlock()
		return strconv.FormatInt(secs, 10)
	}
	n := h.shedCount
	h.shedCount, h.shedLogged = 0, now
	h.shedMu.Unlock()
	h.log.Warn("agent connects shed", "reason", msg, "count", n, "max_handshakes", h.opts.MaxHandshakes)
	return strconv.FormatInt(secs, 10)
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

package agent

import (
	"math/rand/v2"
	"net/http"
	"strconv"
	"time"
)

// Reconnect backoff bounds.
const (
	backoffMin = 500 * time.Millisecond
	backoffMax = 10 * time.Second
	// fleetSpread is how much of the reconnect window one server of the
	// fleet adds: a broker relinks an agent for about 0.5 ms of CPU (its
	// CPU over a 10,000-agent restart in the fleet benchmark), about 4,000
	// agents a second on two cores of its own, so a fleet of N spreads its
	// first reconnects over N/4000 s. Beyond that rate the broker's
	// handshake slots queue and shed the rest with a Retry-After.
	fleetSpread = 250 * time.Microsecond
	// maxReconnectWindow caps the window: 10 s from 40,000 servers up.
	maxReconnectWindow = 10 * time.Second
)

// reconnectWindow is the window over which an agent delays its first
// reconnect after a link ends, for a fleet of the given size (the number
// of servers the broker last said it knows): fleet/4000 s, at most 10 s.
func reconnectWindow(fleet int) time.Duration {
	if fleet <= 0 {
		return 0
	}
	return min(time.Duration(fleet)*fleetSpread, maxReconnectWindow)
}

// backoff yields the delays between connect attempts: the n-th is uniform
// in [d/2, d) with d = min(backoffMin·2ⁿ, backoffMax), so that agents that
// keep failing do not retry in lockstep. After a link ends (linkEnded) the
// first delay is uniform in [0, max(window, backoffMin)) instead, so that a
// fleet that lost its broker comes back spread over its reconnect window
// rather than at once.
type backoff struct {
	n int
	// spread makes the next delay the reconnect window's; window is
	// reconnectWindow of the fleet size the ended link was welcomed with.
	spread bool
	window time.Duration
	// uniform returns a duration uniform in [0, d); nil means math/rand/v2.
	uniform func(d time.Duration) time.Duration
}

func (b *backoff) rand(d time.Duration) time.Duration {
	if d <= 0 {
		return 0
	}
	if b.uniform != nil {
		return b.uniform(d)
	}
	return rand.N(d)
}

func (b *backoff) next() time.Duration {
	if b.spread {
		b.spread = false
		return b.rand(max(b.window, backoffMin))
	}
	d := backoffMax
	if b.n < 16 {
		d = min(backoffMin<<b.n, backoffMax)
	}
	b.n++
	return d/2 + b.rand(d/2)
}

func (b *backoff) reset() { b.n, b.spread = 0, false }

// linkEnded resets the backoff after a link that was up ended; window is
// the reconnect window of the fleet size the broker told.
func (b *backoff) linkEnded(window time.Duration) {
	b.n, b.spread, b.window = 0, true, window
}

// maxRetryAfter bounds how long a broker's Retry-After can hold an agent off.
const maxRetryAfter = 5 * time.Minute

// retryAfter reads a 503's Retry-After (seconds or an HTTP date), 0 when
// absent or unreadable.
func retryAfter(h http.Header, now time.Time) time.Duration {
	v := h.Get("Retry-After")
	if v == "" {
		return 0
	}
	var d time.Duration
	if secs, err := strconv.ParseInt(v, 10, 64); err == nil {
		d = time.Duration(min(max(secs, 0), int64(maxRetryAfter/time.Second))) * time.Second
	} else if t, err := http.ParseTime(v); err == nil {
		d = t.Sub(now)
	}
	return min(max(d, 0), maxRetryAfter)
}

package agent

import (
	"math/rand/v2"
	"time"
)

// Reconnect backoff bounds.
const (
	backoffMin = 500 * time.Millisecond
	backoffMax = 10 * time.Second
)

// backoff yields jittered exponential delays: the n-th is uniform in
// [d/2, d) with d = min(backoffMin·2ⁿ, backoffMax), so that a fleet of agents
// that lost one broker does not reconnect in lockstep.
type backoff struct {
	n int
}

func (b *backoff) next() time.Duration {
	d := backoffMax
	if b.n < 16 {
		d = min(backoffMin<<b.n, backoffMax)
	}
	b.n++
	return d/2 + rand.N(d/2)
}

func (b *backoff) reset() { b.n = 0 }

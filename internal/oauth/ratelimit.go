package oauth

import (
	"net"
	"net/netip"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// RegistrationLimits bound how fast agents register on one broker (each
// broker of a cluster counts its own). Every request to the registration
// endpoint counts, refused ones too, so a flood of made-up statements is
// slowed as well. Zero values set no limit.
type RegistrationLimits struct {
	// PerMinute bounds the registrations on this broker, with bursts of as
	// many.
	PerMinute int
	// PerAddressPerMinute bounds the registrations from one remote address
	// (an IPv6 address counts with its /64), with bursts of as many.
	PerAddressPerMinute int
	// Concurrent bounds the registrations handled at once (admission
	// control); past it a request is answered 503 with Retry-After at once,
	// before it counts against the rates, instead of queueing until it
	// times out. 0 means DefaultConcurrentRegistrations.
	Concurrent int
}

// DefaultConcurrentRegistrations is RegistrationLimits.Concurrent when unset:
// a registration is one short store transaction, so a few dozen at once keep
// the store busy without queueing behind it.
const DefaultConcurrentRegistrations = 32

// registrationRetryAfter is the Retry-After of a registration shed by
// admission control; agents add a random part of it again.
const registrationRetryAfter = 1 * time.Second

const (
	// maxTrackedAddresses bounds the per-address limiters; past it, new
	// addresses are held to the broker-wide limit only.
	maxTrackedAddresses = 1 << 16
	// sweepInterval is how often idle per-address limiters are dropped.
	sweepInterval = time.Minute
)

// registrationLimiter applies RegistrationLimits.
type registrationLimiter struct {
	all     *rate.Limiter // nil: no broker-wide limit
	perAddr int           // 0: no per-address limit

	mu    sync.Mutex
	addrs map[netip.Prefix]*rate.Limiter
	swept time.Time

	// slots holds one token per registration being handled.
	slots chan struct{}
	// shed counts registrations shed since shedLogged, when the last one
	// was logged (guarded by mu).
	shed       int
	shedLogged time.Time
}

// shedLogDue counts a shed registration and returns how many were shed
// since the last log line when one is due (at most one a minute), else 0.
func (l *registrationLimiter) shedLogDue(now time.Time) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.shed++
	if !l.shedLogged.IsZero() && now.Sub(l.shedLogged) < time.Minute {
		return 0
	}
	n := l.shed
	l.shed, l.shedLogged = 0, now
	return n
}

func newRegistrationLimiter(l RegistrationLimits) *registrationLimiter {
	n := l.Concurrent
	if n <= 0 {
		n = DefaultConcurrentRegistrations
	}
	rl := &registrationLimiter{perAddr: max(l.PerAddressPerMinute, 0), addrs: map[netip.Prefix]*rate.Limiter{}, slots: make(chan struct{}, n)}
	if l.PerMinute > 0 {
		rl.all = perMinute(l.PerMinute)
	}
	return rl
}

func perMinute(n int) *rate.Limiter {
	return rate.NewLimiter(rate.Every(time.Minute/time.Duration(n)), n)
}

// admit takes a slot for one registration, or reports false at once when
// every slot is taken. Call the returned release when done.
func (l *registrationLimiter) admit() (release func(), ok bool) {
	select {
	case l.slots <- struct{}{}:
		return func() { <-l.slots }, true
	default:
		return nil, false
	}
}

// allow reports whether a registration from remote (an http.Request's
// RemoteAddr) may go ahead at now; if not, it says after how long one may.
// A refused attempt takes nothing from either limit.
func (l *registrationLimiter) allow(remote string, now time.Time) (bool, time.Duration) {
	var reservations []*rate.Reservation
	cancel := func() {
		for _, r := range reservations {
			r.CancelAt(now)
		}
	}
	if lim := l.addrLimiter(remote, now); lim != nil {
		reservations = append(reservations, lim.ReserveN(now, 1))
	}
	if l.all != nil {
		reservations = append(reservations, l.all.ReserveN(now, 1))
	}
	var wait time.Duration
	for _, r := range reservations {
		wait = max(wait, r.DelayFrom(now))
	}
	if wait > 0 {
		cancel()
		return false, wait
	}
	return true, 0
}

// addrLimiter returns the limiter of remote's address, nil when there is no
// per-address limit or too many addresses are tracked.
func (l *registrationLimiter) addrLimiter(remote string, now time.Time) *rate.Limiter {
	if l.perAddr == 0 {
		return nil
	}
	key := addressKey(remote)
	l.mu.Lock()
	defer l.mu.Unlock()
	if now.Sub(l.swept) >= sweepInterval || len(l.addrs) >= maxTrackedAddresses {
		l.swept = now
		for k, lim := range l.addrs {
			if lim.TokensAt(now) >= float64(lim.Burst()) {
				delete(l.addrs, k) // idle: a new limiter is the same
			}
		}
	}
	lim := l.addrs[key]
	if lim == nil {
		if len(l.addrs) >= maxTrackedAddresses {
			return nil
		}
		lim = perMinute(l.perAddr)
		l.addrs[key] = lim
	}
	return lim
}

// addressKey returns what the per-address limit counts by: the IPv4 address,
// or the /64 of an IPv6 address (one host commonly has a whole /64).
func addressKey(remote string) netip.Prefix {
	host, _, err := net.SplitHostPort(remote)
	if err != nil {
		host = remote
	}
	a, err := netip.ParseAddr(host)
	if err != nil {
		return netip.Prefix{} // unparsable addresses share one limiter
	}
	a = a.Unmap().WithZone("")
	if a.Is4() {
		return netip.PrefixFrom(a, 32)
	}
	p, _ := a.Prefix(64)
	return p
}

// Package netlimit bounds the connections a TCP listener holds: at most Max
// in all and at most MaxPerAddr from one client network, so that slow or
// idle clients cannot exhaust the memory and file descriptors of a server,
// and one client cannot take every slot.
//
// A client network is one IPv4 address, or the /64 prefix of an IPv6 address
// (a host usually gets a whole /64, so counting single IPv6 addresses would
// let one host open 2^64 times the limit). IPv4-mapped IPv6 addresses count
// as IPv4.
//
// A connection over either limit is closed as soon as it is accepted, before
// any TLS handshake: the client sees its connection reset and may retry
// later. Refusals are reported to an Observer and summarized in the log at
// most once a minute per listener, never one line per connection. So are
// accept errors (a process out of file descriptors), at WARN.
//
// Wrap the TCP listener, then put TLS on top, so that the limits apply
// before the handshake:
//
//	ln, _ := net.Listen("tcp", addr)
//	ln = tls.NewListener(netlimit.Wrap(ln, netlimit.Limits{Max: 4096, MaxPerAddr: 512}, opts), cfg)
//
// The deadlines that cut slow clients belong to http.Server: with a
// ReadHeaderTimeout (which also bounds the TLS handshake), a ReadTimeout
// (the whole request, body included) and an IdleTimeout. net/http clears a
// connection's deadlines when a handler hijacks it, so WebSockets outlive
// them.
package netlimit

import (
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Limits are the bounds of a listener; 0 means no bound.
type Limits struct {
	// Max bounds the connections open at once.
	Max int
	// MaxPerAddr bounds the connections open at once from one client
	// network (Key).
	MaxPerAddr int
}

// Reasons a connection is refused, as Observer.ConnectionRefused receives
// them.
const (
	// ReasonTotal: the listener holds Limits.Max connections.
	ReasonTotal = "total"
	// ReasonPerAddress: the client's network holds Limits.MaxPerAddr
	// connections.
	ReasonPerAddress = "per_address"
)

// Observer receives the refusals of a listener. Its methods are called from
// the accepting goroutine and must not block.
type Observer interface {
	// ConnectionRefused records a connection closed on accept; listener is
	// Options.Name and reason ReasonTotal or ReasonPerAddress.
	ConnectionRefused(listener, reason string)
}

// DefaultLogEvery is how often, at most, a listener logs its refusals.
const DefaultLogEvery = time.Minute

// Options configure a Listener beyond its limits.
type Options struct {
	// Name names the listener in log lines and Observer calls ("client",
	// "agent", ...).
	Name string
	// Observer, when set, is told of each refusal.
	Observer Observer
	// Logger receives a warning when connections are refused: at the first
	// refusal, then at most once every LogEvery with the count since the last
	// line. Nil means slog.Default().
	Logger *slog.Logger
	// LogEvery is the least time between two log lines; 0 means
	// DefaultLogEvery.
	LogEvery time.Duration
	// Now returns the current time; nil means time.Now.
	Now func() time.Time
}

// Listener is a net.Listener that enforces Limits. Create it with Wrap.
type Listener struct {
	net.Listener
	lim  Limits
	opts Options

	mu      sync.Mutex
	open    int
	perAddr map[netip.Prefix]int // guarded by mu

	refusedTotal atomic.Uint64
	refusedAddr  atomic.Uint64

	logMu    sync.Mutex
	lastLog  time.Time    // guarded by logMu
	sinceLog int          // refusals since lastLog; guarded by logMu
	lastAddr netip.Prefix // guarded by logMu

	acceptErrs    atomic.Uint64
	failLogged    time.Time // last log line of accept errors; guarded by logMu
	failsSinceLog int       // accept errors since failLogged; guarded by logMu
}

// Wrap returns ln limited to lim.
func Wrap(ln net.Listener, lim Limits, opts Options) *Listener {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.LogEvery <= 0 {
		opts.LogEvery = DefaultLogEvery
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	return &Listener{Listener: ln, lim: lim, opts: opts, perAddr: make(map[netip.Prefix]int)}
}

// Accept returns the next connection within the limits, closing those over
// them.
func (l *Listener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			if !errors.Is(err, net.ErrClosed) {
				l.acceptFailed(err)
			}
			return nil, err
		}
		key := KeyOf(c.RemoteAddr())
		if reason := l.take(key); reason != "" {
			l.refused(key, reason) // first, so that it is counted when the client sees the close
			c.Close()
			continue
		}
		return &conn{Conn: c, l: l, key: key}, nil
	}
}

// take counts a new connection from key, or returns why it may not be.
func (l *Listener) take(key netip.Prefix) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.lim.Max > 0 && l.open >= l.lim.Max {
		return ReasonTotal
	}
	if l.lim.MaxPerAddr > 0 && l.perAddr[key] >= l.lim.MaxPerAddr {
		return ReasonPerAddress
	}
	l.open++
	l.perAddr[key]++
	return ""
}

func (l *Listener) release(key netip.Prefix) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.open--
	if n := l.perAddr[key] - 1; n > 0 {
		l.perAddr[key] = n
	} else {
		delete(l.perAddr, key)
	}
}

func (l *Listener) refused(key netip.Prefix, reason string) {
	if reason == ReasonTotal {
		l.refusedTotal.Add(1)
	} else {
		l.refusedAddr.Add(1)
	}
	if l.opts.Observer != nil {
		l.opts.Observer.ConnectionRefused(l.opts.Name, reason)
	}
	now := l.opts.Now()
	l.logMu.Lock()
	l.sinceLog++
	l.lastAddr = key
	if !l.lastLog.IsZero() && now.Sub(l.lastLog) < l.opts.LogEvery {
		l.logMu.Unlock()
		return
	}
	n, addr := l.sinceLog, l.lastAddr
	l.sinceLog, l.lastLog = 0, now
	l.logMu.Unlock()
	l.opts.Logger.Warn("connections refused: limit reached", "listener", l.opts.Name,
		"count", n, "reason", reason, "last_client", addr.String(),
		"max_connections", l.lim.Max, "max_connections_per_address", l.lim.MaxPerAddr)
}

// acceptFailed logs an accept error (out of file descriptors: "accept4:
// too many open files", which net/http retries after a pause) at WARN: the
// first, then at most one line every LogEvery with the count since the last.
func (l *Listener) acceptFailed(err error) {
	l.acceptErrs.Add(1)
	now := l.opts.Now()
	l.logMu.Lock()
	l.failsSinceLog++
	if !l.failLogged.IsZero() && now.Sub(l.failLogged) < l.opts.LogEvery {
		l.logMu.Unlock()
		return
	}
	n := l.failsSinceLog
	l.failsSinceLog, l.failLogged = 0, now
	l.logMu.Unlock()
	l.opts.Logger.Warn("cannot accept connections", "listener", l.opts.Name, "count", n, "err", err,
		"open", l.Open())
}

// AcceptErrors returns how many accepts failed since Wrap (the listener
// closed aside).
func (l *Listener) AcceptErrors() uint64 { return l.acceptErrs.Load() }

// Open is the number of connections open now.
func (l *Listener) Open() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.open
}

// OpenFrom is the number of connections open now from key's network.
func (l *Listener) OpenFrom(key netip.Prefix) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.perAddr[key]
}

// Refused returns how many connections were closed on accept since Wrap,
// over Max and over MaxPerAddr.
func (l *Listener) Refused() (total, perAddr uint64) {
	return l.refusedTotal.Load(), l.refusedAddr.Load()
}

// conn releases its slot once, on the first Close.
type conn struct {
	net.Conn
	l    *Listener
	key  netip.Prefix
	once sync.Once
}

// SyscallConn returns the socket under the connection, for readers that
// wait for readability themselves (tlsaccept's parked reads).
func (c *conn) SyscallConn() (syscall.RawConn, error) {
	sc, ok := c.Conn.(syscall.Conn)
	if !ok {
		return nil, errors.ErrUnsupported
	}
	return sc.SyscallConn()
}

func (c *conn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() { c.l.release(c.key) })
	return err
}

// KeyOf is the client network of a remote address: Key of its IP, or the
// zero prefix (one shared key) for an address that is not IP.
func KeyOf(a net.Addr) netip.Prefix {
	var ip netip.Addr
	switch a := a.(type) {
	case *net.TCPAddr:
		ip, _ = netip.AddrFromSlice(a.IP)
	case *net.UDPAddr:
		ip, _ = netip.AddrFromSlice(a.IP)
	default:
		if a != nil {
			if ap, err := netip.ParseAddrPort(a.String()); err == nil {
				ip = ap.Addr()
			}
		}
	}
	return Key(ip)
}

// Key is the client network of ip: the address itself (/32) for IPv4 and
// IPv4-mapped IPv6, its /64 for other IPv6 addresses, the zero prefix for
// the zero Addr.
func Key(ip netip.Addr) netip.Prefix {
	if !ip.IsValid() {
		return netip.Prefix{}
	}
	ip = ip.Unmap().WithZone("")
	bits := 32
	if ip.Is6() {
		bits = 64
	}
	p, _ := ip.Prefix(bits)
	return p
}

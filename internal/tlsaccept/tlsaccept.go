// Package tlsaccept is a TLS listener that finishes each handshake before
// Accept returns the connection, with the handshakes' cryptography bounded
// to a few at a time and served in arrival order, so that a connect storm
// (thousands of agents relinking after a broker restart) costs no more CPU
// at once than the machine has.
//
// tls.NewListener returns a connection at once and leaves its handshake to
// whoever reads first: behind http.Server that is one goroutine per
// connection, so ten thousand arriving agents run ten thousand handshakes
// together, each slowed by all the others, until many pass their deadline
// and are done again from scratch. Here each connection waits for its
// client's first bytes (the ClientHello) on its own goroutine, holding
// nothing; then it takes one of Workers slots, in the order the
// ClientHellos arrived, and holds it while the server computes and writes
// its reply (key exchange, signature), until it waits on the client again.
// A connection that waited longer than MaxWait for a slot is closed before
// any cryptography (shed), since its client is likely to give up before its
// handshake could finish; the client sees its connection closed and retries
// later. A client that sends nothing, or stalls mid-handshake, holds no
// slot and is closed after HandshakeTimeout.
//
// Where the socket can tell when it is readable without a goroutine
// (internal/idlepoll, on Linux), a connection has no goroutine until its
// handshake starts: it waits for its ClientHello in the shared poller and
// for a slot in the queue, and the slot given back starts the next
// handshake. A storm of ten thousand connects then costs Workers
// goroutines, not ten thousand (each one's descriptor stays with the
// process for good, and its stack until the next collection).
//
// Wrap the connection-limited listener (internal/netlimit) so that its
// limits count the connections in handshake too, and serve it with
// http.Server.Serve: net/http sees the *tls.Conn, uses the finished
// handshake (Request.TLS is set) and hijacks it for WebSockets as usual.
//
//	ln = tlsaccept.New(netlimit.Wrap(tcp, lim, nopts), cfg, tlsaccept.Options{Name: "agent"})
//	srv.Serve(ln)
//
// TicketKeys derives stable session ticket keys from a secret, so that
// clients resume their TLS sessions across a restart.
package tlsaccept

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"github.com/berth-dev/berth/internal/idlepoll"
	"github.com/berth-dev/berth/internal/logattr"
)

// Defaults of Options.
const (
	// DefaultHandshakeTimeout bounds one handshake once it started.
	DefaultHandshakeTimeout = 10 * time.Second
	// DefaultMaxWait bounds the time a connection waits for a slot.
	DefaultMaxWait = 3 * time.Second
	// DefaultQueue bounds the connections waiting for a slot.
	DefaultQueue = 16384
	// DefaultWorkersPerCPU is the number of slots per CPU (GOMAXPROCS)
	// when Options.Workers is 0.
	DefaultWorkersPerCPU = 4
	// DefaultLogEvery is the least time between two warnings of shed
	// connections.
	DefaultLogEvery = time.Minute
)

// ReasonHandshakeQueue is the reason an Observer receives for a connection
// shed because it waited too long for a handshake slot, or found too many
// waiting.
const ReasonHandshakeQueue = "handshake_queue"

// Observer receives the connections a Listener sheds; netlimit.Observer has
// the same method. It is called from the listener's goroutines and must not
// block.
type Observer interface {
	// ConnectionRefused records a connection closed before its handshake;
	// listener is Options.Name and reason ReasonHandshakeQueue.
	ConnectionRefused(listener, reason string)
}

// Options configure a Listener.
type Options struct {
	// Name names the listener in log lines and Observer calls.
	Name string
	// Workers bounds the handshakes computing at once (the slots); 0
	// means DefaultWorkersPerCPU per GOMAXPROCS.
	Workers int
	// HandshakeTimeout bounds a handshake from the connection's accept;
	// 0 means DefaultHandshakeTimeout.
	HandshakeTimeout time.Duration
	// MaxWait bounds the time a connection waits for a slot once its
	// ClientHello arrived; one that waited longer is closed without a
	// handshake. 0 means DefaultMaxWait.
	MaxWait time.Duration
	// Queue bounds the connections waiting for a slot; one whose
	// ClientHello arrives with Queue waiting is closed. 0 means
	// DefaultQueue.
	Queue int
	// Observer, when set, is told of each shed connection.
	Observer Observer
	// Logger receives failed handshakes at DEBUG (as net/http logs them)
	// and shed connections at WARN, at most once every LogEvery with the
	// count since the last line. Nil means slog.Default().
	Logger *slog.Logger
	// LogEvery is the least time between two warnings; 0 means
	// DefaultLogEvery.
	LogEvery time.Duration
	// Now returns the current time, for the queue's wait; nil means
	// time.Now.
	Now func() time.Time
}

// Listener is a net.Listener whose Accept returns *tls.Conn connections with
// their handshake done. Create it with New.
type Listener struct {
	inner net.Listener
	cfg   *tls.Config
	opts  Options

	ready  chan net.Conn
	ctx    context.Context // canceled by Close: cuts handshakes in progress
	cancel context.CancelFunc
	done   chan struct{} // closed by Close or a permanent accept error
	once   sync.Once
	err    error // why done closed; set before done is closed
	wg     sync.WaitGroup

	// The slots and the queue for them. A connection whose ClientHello
	// arrived takes a free slot or joins the queue; a slot given back
	// goes to the queue's head (release). parked holds the connections
	// that wait without a goroutine, for their ClientHello or in the
	// queue: whoever takes one out of it (the poller's callback, release,
	// Close) owns it.
	mu     sync.Mutex
	held   int          // slots held
	queue  []*gatedConn // waiting for a slot, oldest first
	parked map[*gatedConn]struct{}
	closed bool // Close took the parked connections

	pending atomic.Int64 // connections in handshake
	shed    atomic.Uint64
	failed  atomic.Uint64
	handshk atomic.Uint64

	logMu    sync.Mutex
	lastLog  time.Time // guarded by logMu
	sinceLog int       // shed since lastLog; guarded by logMu
}

// New returns a listener that accepts from inner and hands out connections
// whose TLS handshake with cfg completed. It starts accepting at once.
func New(inner net.Listener, cfg *tls.Config, opts Options) *Listener {
	if opts.Workers <= 0 {
		opts.Workers = DefaultWorkersPerCPU * runtime.GOMAXPROCS(0)
	}
	if opts.HandshakeTimeout <= 0 {
		opts.HandshakeTimeout = DefaultHandshakeTimeout
	}
	if opts.MaxWait <= 0 {
		opts.MaxWait = DefaultMaxWait
	}
	if opts.Queue <= 0 {
		opts.Queue = DefaultQueue
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.LogEvery <= 0 {
		opts.LogEvery = DefaultLogEvery
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	ctx, cancel := context.WithCancel(context.Background())
	l := &Listener{
		inner: inner, cfg: cfg, opts: opts,
		ready: make(chan net.Conn, opts.Workers),
		ctx:   ctx, cancel: cancel,
		done: make(chan struct{}),
	}
	l.wg.Add(1)
	go l.acceptLoop()
	return l
}

// Accept returns the next connection whose handshake completed, a
// *tls.Conn.
func (l *Listener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ready:
		return c, nil
	case <-l.done:
		return nil, l.err
	}
}

// Close stops accepting, closes the connections in handshake, and returns
// once the listener's goroutines have ended. Connections already returned
// by Accept stay open.
func (l *Listener) Close() error {
	l.stop(net.ErrClosed)
	err := l.inner.Close()
	l.mu.Lock()
	l.closed = true
	parked := l.parked
	l.parked = nil
	l.mu.Unlock()
	for c := range parked {
		l.drop(c, dropClosed)
	}
	l.wg.Wait()
	for {
		select {
		case c := <-l.ready:
			c.Close()
		default:
			return err
		}
	}
}

// closing reports whether the listener is closing (stop ran).
func (l *Listener) closing() bool {
	select {
	case <-l.done:
		return true
	default:
		return false
	}
}

// stop ends the listener with err as Accept's error.
func (l *Listener) stop(err error) {
	l.once.Do(func() {
		l.err = err
		l.cancel()
		close(l.done)
	})
}

// Addr is the inner listener's address.
func (l *Listener) Addr() net.Addr { return l.inner.Addr() }

// acceptLoop starts the handshake of each of the inner listener's
// connections. Temporary errors (a process out of file descriptors) are
// retried after a pause, as http.Server does; any other ends the listener.
func (l *Listener) acceptLoop() {
	defer l.wg.Done()
	var delay time.Duration
	for {
		c, err := l.inner.Accept()
		if err != nil {
			var ne net.Error
			//lint:ignore SA1019 the accept errors net/http retries (EMFILE, ENFILE, ECONNABORTED)
			if errors.As(err, &ne) && ne.Temporary() {
				delay = min(max(2*delay, 5*time.Millisecond), time.Second)
				t := time.NewTimer(delay)
				select {
				case <-t.C:
					continue
				case <-l.done:
					t.Stop()
					return
				}
			}
			if errors.Is(err, net.ErrClosed) {
				err = net.ErrClosed
			}
			l.stop(err)
			return
		}
		delay = 0
		l.pending.Add(1)
		l.wg.Add(1)
		gc := &gatedConn{Conn: c, l: l, deadline: time.Now().Add(l.opts.HandshakeTimeout)}
		if !l.park(gc) {
			go l.handshake(gc)
		}
	}
}

// park has c wait for its ClientHello in the shared poller, without a
// goroutine (helloReadable). It reports false where the connection cannot
// notify; then its handshake's goroutine waits.
func (l *Listener) park(c *gatedConn) bool {
	if !c.SetNonblocking(true) {
		return false
	}
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		l.drop(c, dropClosed)
		return true
	}
	if l.parked == nil {
		l.parked = make(map[*gatedConn]struct{})
	}
	l.parked[c] = struct{}{}
	l.mu.Unlock()
	_ = c.SetReadDeadline(c.deadline)
	if c.NotifyReadable(c.helloReadable) {
		return true
	}
	if !l.unpark(c) {
		return true // Close took it
	}
	c.SetNonblocking(false)
	return false
}

// unpark takes c out of the parked connections; it reports false when
// someone else did (c is theirs).
func (l *Listener) unpark(c *gatedConn) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, ok := l.parked[c]; !ok {
		return false
	}
	delete(l.parked, c)
	if len(l.parked) == 0 {
		l.parked = nil // a map keeps its size: give a storm's back
	}
	return true
}

// Why a connection is dropped before its handshake (drop).
const (
	dropFailed = iota // it timed out, closed or sent garbage
	dropShed          // it waited too long for a slot, or found the queue full
	dropClosed        // the listener closed
)

// drop closes a connection that leaves the listener before its handshake
// and counts it; the caller owns c.
func (l *Listener) drop(c *gatedConn, why int) {
	if why == dropShed {
		l.shedOne() // counted before the close, as in handshake
	} else if why == dropFailed {
		l.failed.Add(1)
	}
	c.Close()
	l.pending.Add(-1)
	l.wg.Done()
}

// helloReadable runs when a parked connection's socket has bytes, or its
// deadline passed, or it closed: it reads what came of the ClientHello's
// record without waiting, waits again for the rest, and once it is whole
// takes a slot and runs the handshake here, or joins the queue.
func (c *gatedConn) helloReadable(err error) {
	l := c.l
	whole := false
	if err == nil {
		whole, err = c.readHello()
	}
	switch {
	case err != nil && !errors.Is(err, syscall.EAGAIN):
		if l.unpark(c) {
			l.opts.Logger.Debug("TLS handshake failed", "listener", l.opts.Name,
				logattr.Remote, c.RemoteAddr().String(), "err", err)
			l.drop(c, dropFailed)
		}
		return
	case !whole:
		if !c.NotifyReadable(c.helloReadable) && l.unpark(c) {
			l.drop(c, dropFailed)
		}
		return
	}
	c.started = true
	c.SetNonblocking(false) // the handshake's reads wait
	l.mu.Lock()
	if _, ok := l.parked[c]; !ok {
		l.mu.Unlock()
		return // Close took it
	}
	if l.closing() {
		delete(l.parked, c)
		l.mu.Unlock()
		l.drop(c, dropClosed)
		return
	}
	granted, full := l.claimLocked(c)
	if granted || full {
		delete(l.parked, c)
	}
	l.mu.Unlock()
	switch {
	case granted:
		l.handshake(c)
	case full:
		c.shed = true
		l.drop(c, dropShed)
	}
}

// claimLocked gives c a free slot (granted) or puts it at the end of the
// queue; it reports full, doing neither, when Queue connections wait. A
// queued connection gets its slot from release. l.mu held.
func (l *Listener) claimLocked(c *gatedConn) (granted, full bool) {
	if l.held < l.opts.Workers && len(l.queue) == 0 {
		l.held++
		c.holding = true
		return true, false
	}
	if len(l.queue) >= l.opts.Queue {
		return false, true
	}
	c.arrived = l.opts.Now()
	l.queue = append(l.queue, c)
	return false, false
}

// readHello reads what arrived of the connection's first TLS record without
// waiting, and reports whether it is whole (in c.first).
func (c *gatedConn) readHello() (bool, error) {
	for {
		if c.got < len(c.hdr) {
			n, err := c.readNow(c.hdr[c.got:])
			c.got += n
			if err != nil {
				return false, err
			}
			if c.got < len(c.hdr) {
				continue
			}
			c.first = make([]byte, len(c.hdr)+min(int(binary.BigEndian.Uint16(c.hdr[3:])), maxRecord))
			copy(c.first, c.hdr[:])
		}
		if c.got == len(c.first) {
			return true, nil
		}
		n, err := c.readNow(c.first[c.got:])
		c.got += n
		if err != nil {
			return false, err
		}
	}
}

// errShed is the error a shed connection's handshake fails with.
var errShed = errors.New("tlsaccept: shed: waited too long for a handshake slot")

// gatedConn takes a slot once the client's first TLS record (its
// ClientHello) arrived whole, before crypto/tls parses it, and gives it back
// on its first write (the server's reply, computed) or at the end of the
// handshake. A client that sends part of a record and stalls holds no slot.
//
// After the handshake it can park an idle reader (wslink.Parker): with
// SetNonblocking(true) its reads return at once, with an error wrapping
// syscall.EAGAIN when the socket has nothing (crypto/tls keeps a partial
// record for the next read, since the error is temporary), and
// WaitReadable waits for the socket in a shallow stack frame, or
// NotifyReadable without a goroutine (internal/idlepoll).
type gatedConn struct {
	net.Conn
	l        *Listener
	deadline time.Time // of the handshake: HandshakeTimeout after the accept
	first    []byte    // the first record, read before crypto/tls asked, not yet returned
	started  bool      // the first record was read; one goroutine at a time touches these
	holding  bool      // a slot; set by whoever gave it
	shed     bool
	arrived  time.Time // when it joined the queue (Options.Now)
	// granted is closed when a queued connection whose goroutine waits
	// (take) got its slot, or was shed.
	granted chan struct{}
	// The first record's header and how much of it, then of first, a
	// parked connection read (readHello).
	hdr [5]byte
	got int

	raw      syscall.RawConn // the socket, once SetNonblocking found it
	nonblock atomic.Bool

	// The idle reader's notification (NotifyReadable); wmu orders its
	// arming with deadline changes and Close.
	wmu          sync.Mutex
	watch        *idlepoll.Watch // registered on the first NotifyReadable
	readDeadline time.Time       // as last set; guarded by wmu
	closed       bool            // guarded by wmu
}

// maxRecord bounds a TLS record's body (RFC 8446 5.2, TLSCiphertext).
const maxRecord = 16384 + 256

func (c *gatedConn) Read(p []byte) (int, error) {
	if !c.started {
		c.started = true
		hdr := c.hdr[:]
		if _, err := io.ReadFull(c.Conn, hdr); err != nil {
			return 0, err
		}
		rec := make([]byte, 5+min(int(binary.BigEndian.Uint16(hdr[3:])), maxRecord))
		copy(rec, hdr)
		if _, err := io.ReadFull(c.Conn, rec[5:]); err != nil {
			return 0, err
		}
		if err := c.take(); err != nil {
			return 0, err
		}
		c.first = rec
	}
	if len(c.first) > 0 {
		n := copy(p, c.first)
		if c.first = c.first[n:]; len(c.first) == 0 {
			c.first = nil // not kept for the connection's life
		}
		return n, nil
	}
	if c.nonblock.Load() {
		return c.readNow(p)
	}
	return c.Conn.Read(p)
}

// errWouldBlock is readNow's error when the socket has nothing to read: a
// net.Error whose Temporary (and Timeout) is true, as crypto/tls requires to
// keep the connection usable, wrapping syscall.EAGAIN.
var errWouldBlock error = &net.OpError{Op: "read", Net: "tcp", Err: os.NewSyscallError("read", syscall.EAGAIN)}

// readNow reads what the socket holds without waiting.
func (c *gatedConn) readNow(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	var n int
	var errno error
	err := c.raw.Read(func(fd uintptr) bool {
		for {
			n, errno = syscall.Read(int(fd), p)
			if errno != syscall.EINTR {
				return true
			}
		}
	})
	switch {
	case err != nil: // closed, or the read deadline passed
		return 0, err
	case errno == syscall.EAGAIN:
		return 0, errWouldBlock
	case errno != nil:
		return 0, &net.OpError{Op: "read", Net: "tcp", Source: c.LocalAddr(), Addr: c.RemoteAddr(), Err: os.NewSyscallError("read", errno)}
	case n <= 0:
		return 0, io.EOF
	}
	return n, nil
}

// SetNonblocking switches the connection's reads to return at once (see
// gatedConn). It reports false, and changes nothing, when the connection
// under it offers no socket (syscall.Conn).
func (c *gatedConn) SetNonblocking(on bool) bool {
	if c.raw == nil {
		sc, ok := c.Conn.(syscall.Conn)
		if !ok {
			return false
		}
		raw, err := sc.SyscallConn()
		if err != nil {
			return false
		}
		c.raw = raw
	}
	c.nonblock.Store(on)
	return true
}

// WaitReadable returns once the socket has bytes to read, or its end or an
// error is there to read, or the read deadline passed (os.ErrDeadlineExceeded)
// or the connection closed. Call SetNonblocking first.
func (c *gatedConn) WaitReadable() error {
	if c.raw == nil {
		return errors.New("tlsaccept: WaitReadable before SetNonblocking")
	}
	return c.raw.Read(func(fd uintptr) bool {
		var b [1]byte
		_, _, errno := syscall.Syscall6(syscall.SYS_RECVFROM, fd, uintptr(unsafe.Pointer(&b[0])), 1,
			syscall.MSG_PEEK|syscall.MSG_DONTWAIT, 0, 0)
		// EAGAIN: nothing yet, wait. Anything else (bytes, the end, an
		// error) is for the next read to see.
		return errno != syscall.EAGAIN
	})
}

// NotifyReadable runs fn, once, on a new goroutine when the socket has bytes
// to read (or its end or an error), when the read deadline passes
// (os.ErrDeadlineExceeded, including a deadline set meanwhile), or when the
// connection closes (net.ErrClosed). No goroutine waits meanwhile. It
// reports false, and fn will not run, where the platform cannot (then wait
// with WaitReadable). Call SetNonblocking first.
func (c *gatedConn) NotifyReadable(fn func(error)) bool {
	if c.raw == nil {
		return false
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.closed {
		go fn(net.ErrClosed)
		return true
	}
	if c.watch == nil {
		p, err := idlepoll.Shared()
		if err != nil {
			return false
		}
		fd := -1
		if err := c.raw.Control(func(u uintptr) { fd = int(u) }); err != nil || fd < 0 {
			return false
		}
		if c.watch, err = p.Watch(fd); err != nil {
			return false
		}
	}
	return c.watch.Arm(c.readDeadline, fn) == nil
}

// SetReadDeadline sets the socket's read deadline and that of an armed
// NotifyReadable.
func (c *gatedConn) SetReadDeadline(t time.Time) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.readDeadline = t
	if c.watch != nil {
		c.watch.SetDeadline(t)
	}
	return c.Conn.SetReadDeadline(t)
}

// SetDeadline sets both deadlines (see SetReadDeadline).
func (c *gatedConn) SetDeadline(t time.Time) error {
	if err := c.SetReadDeadline(t); err != nil {
		return err
	}
	return c.Conn.SetWriteDeadline(t)
}

// Close takes the socket out of the idle poller, whose armed callback
// gets net.ErrClosed, and closes it.
func (c *gatedConn) Close() error {
	c.wmu.Lock()
	c.closed = true
	if c.watch != nil {
		c.watch.Close()
	}
	c.wmu.Unlock()
	return c.Conn.Close()
}

func (c *gatedConn) Write(p []byte) (int, error) {
	c.release()
	return c.Conn.Write(p)
}

// take waits for a slot, in arrival order, and sheds the connection when it
// waited longer than MaxWait or found Queue connections waiting.
func (c *gatedConn) take() error {
	l := c.l
	c.granted = make(chan struct{}) // marks c as waiting on its goroutine
	l.mu.Lock()
	granted, full := l.claimLocked(c)
	l.mu.Unlock()
	switch {
	case granted:
		return nil
	case full:
		c.shed = true
		return errShed
	}
	select {
	case <-c.granted:
		if c.shed {
			return errShed
		}
		return nil
	case <-l.done:
	}
	l.mu.Lock()
	if i := slices.Index(l.queue, c); i >= 0 {
		l.queue = slices.Delete(l.queue, i, i+1)
	}
	l.mu.Unlock()
	c.release() // if it got the slot meanwhile
	return net.ErrClosed
}

// release gives back c's slot, if it holds one: to the oldest connection in
// the queue that has not waited longer than MaxWait (those are shed).
func (c *gatedConn) release() {
	l := c.l
	var next *gatedConn
	var shed []*gatedConn
	l.mu.Lock()
	if !c.holding {
		l.mu.Unlock()
		return
	}
	c.holding = false
	if l.closing() {
		// No handshake starts any more: Close drops the parked
		// connections, and those waiting on goroutines see it closed.
		l.held--
		l.mu.Unlock()
		return
	}
	now := l.opts.Now()
	for len(l.queue) > 0 && next == nil {
		q := l.queue[0]
		l.queue[0] = nil
		l.queue = l.queue[1:]
		if q.granted == nil { // parked: now ours, unless Close took it
			if _, ok := l.parked[q]; !ok {
				continue
			}
			delete(l.parked, q)
		}
		if now.Sub(q.arrived) > l.opts.MaxWait {
			q.shed = true
			shed = append(shed, q)
			continue
		}
		q.holding = true // the slot passes on
		next = q
	}
	if len(l.queue) == 0 {
		l.queue = nil // give a storm's array back
	}
	if next == nil {
		l.held--
	}
	l.mu.Unlock()
	for _, q := range shed {
		if q.granted != nil {
			close(q.granted)
		} else {
			l.drop(q, dropShed)
		}
	}
	switch {
	case next == nil:
	case next.granted != nil:
		close(next.granted)
	default:
		go l.handshake(next)
	}
}

// handshake completes c's TLS handshake and hands the connection to Accept,
// or closes it: when it was shed, when the handshake fails or takes longer
// than HandshakeTimeout, or when the listener closed.
func (l *Listener) handshake(c *gatedConn) {
	defer l.wg.Done()
	defer l.pending.Add(-1)
	tc := tls.Server(c, l.cfg)
	tc.SetDeadline(c.deadline)
	err := tc.HandshakeContext(l.ctx)
	c.release()
	if err == nil {
		err = tc.SetDeadline(time.Time{})
	}
	if err != nil {
		// Counted before the close: a client that sees its connection
		// closed finds it in Stats and the Observer's count.
		if c.shed {
			l.shedOne()
			tc.Close()
			return
		}
		l.failed.Add(1)
		tc.Close()
		l.opts.Logger.Debug("TLS handshake failed", "listener", l.opts.Name,
			logattr.Remote, c.RemoteAddr().String(), "err", err)
		return
	}
	l.handshk.Add(1)
	select {
	case l.ready <- tc:
	case <-l.done:
		tc.Close()
	}
}

// shedOne counts a connection closed before its handshake, tells the
// Observer and logs, rate-limited.
func (l *Listener) shedOne() {
	l.shed.Add(1)
	if l.opts.Observer != nil {
		l.opts.Observer.ConnectionRefused(l.opts.Name, ReasonHandshakeQueue)
	}
	now := l.opts.Now()
	l.logMu.Lock()
	l.sinceLog++
	if !l.lastLog.IsZero() && now.Sub(l.lastLog) < l.opts.LogEvery {
		l.logMu.Unlock()
		return
	}
	n := l.sinceLog
	l.sinceLog, l.lastLog = 0, now
	l.logMu.Unlock()
	l.opts.Logger.Warn("connections shed: they waited too long for a TLS handshake", "listener", l.opts.Name,
		"count", n, "workers", l.opts.Workers, "max_wait", l.opts.MaxWait)
}

// Stats are a Listener's counts since New.
type Stats struct {
	// Pending is the number of connections in handshake now, waiting
	// for their client or a slot or computing.
	Pending int
	// Queued is the number of connections waiting for a slot now.
	Queued int
	// InFlight is the number of slots held now.
	InFlight int
	// Handshakes counts the handshakes completed.
	Handshakes uint64
	// Failed counts the handshakes that failed or timed out.
	Failed uint64
	// Shed counts the connections closed before their handshake.
	Shed uint64
}

// Stats returns the listener's counts.
func (l *Listener) Stats() Stats {
	l.mu.Lock()
	queued, held := len(l.queue), l.held
	l.mu.Unlock()
	return Stats{
		Pending:    int(l.pending.Load()),
		Queued:     queued,
		InFlight:   held,
		Handshakes: l.handshk.Load(),
		Failed:     l.failed.Load(),
		Shed:       l.shed.Load(),
	}
}

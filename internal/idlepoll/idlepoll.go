// Package idlepoll tells when idle sockets become readable, from one epoll
// instance and one goroutine shared by all of them, so that an idle
// connection holds no goroutine and no stack while it waits.
//
// Go's runtime parks a goroutine per waiting reader; at ten thousand idle
// agent links that is ten thousand stacks (2–8 KiB each) doing nothing.
// Here a connection arms a one-shot Watch with a callback and a deadline;
// the poller's goroutine runs the callback on a new goroutine once the
// socket has something to read (bytes, its end or an error), the deadline
// passes (os.ErrDeadlineExceeded), or the watch is closed (net.ErrClosed).
// A callback runs at most once per Arm.
//
// The socket stays in Go's own poller too, so the connection's reads and
// writes work as usual; close the Watch before the connection, so that the
// descriptor leaves the epoll set before its number can be reused.
package idlepoll

import (
	"errors"
	"net"
	"os"
	"sync"
	"time"
)

// ErrClosed is the error Arm returns on a closed watch or poller.
var ErrClosed = errors.New("idlepoll: closed")

// The errors callbacks get.
var (
	errWatchClosed = net.ErrClosed
	errDeadline    = os.ErrDeadlineExceeded
)

// sysPoller is the platform's part: an epoll set and a way to wake its
// waiter.
type sysPoller interface {
	// arm asks for one readiness event of fd, reported as key; again
	// re-arms a descriptor already in the set.
	arm(fd int, key uint64, again bool) error
	// remove takes fd out of the set.
	remove(fd int)
	// wait appends the keys of the events that came within timeout ms
	// (-1: no limit), or none after a wake.
	wait(keys []uint64, timeout int) []uint64
	// wake ends a wait in progress, or the next one.
	wake()
	close() error
}

// Poller is one epoll instance and the goroutine that waits on it. Create
// it with New or use Shared.
type Poller struct {
	sys sysPoller

	mu       sync.Mutex
	watches  map[uint64]*Watch // by key; armed or not
	next     uint64            // the last key given out
	earliest int64             // the earliest deadline (Unix ns) of an armed watch; 0: none
	closed   bool
	done     chan struct{} // closed when the loop ended
}

// Watch is one socket's registration with a Poller.
type Watch struct {
	p   *Poller
	key uint64
	fd  int

	// Guarded by p.mu.
	added    bool            // in the epoll set
	armed    bool            // waiting; fn is set
	closed   bool            // Close ran
	deadline int64           // Unix ns; 0: none
	fn       func(err error) // the armed callback
}

var (
	sharedOnce sync.Once
	shared     *Poller
	sharedErr  error
)

// Shared returns the process's poller, started on first use and never
// closed (like Go's own network poller). It fails where the platform has no
// epoll; callers then wait on a goroutine of their own.
func Shared() (*Poller, error) {
	sharedOnce.Do(func() { shared, sharedErr = New() })
	return shared, sharedErr
}

// New starts a poller. Close it when done.
func New() (*Poller, error) {
	sys, err := newSysPoller()
	if err != nil {
		return nil, err
	}
	p := &Poller{sys: sys, watches: make(map[uint64]*Watch), done: make(chan struct{})}
	go p.loop()
	return p, nil
}

// Watch registers the socket fd. The descriptor must stay open until the
// watch is closed.
func (p *Poller) Watch(fd int) (*Watch, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil, ErrClosed
	}
	p.next++
	w := &Watch{p: p, key: p.next, fd: fd}
	p.watches[w.key] = w
	return w, nil
}

// Len returns the number of watches not closed.
func (p *Poller) Len() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.watches)
}

// Close stops the poller: armed callbacks get net.ErrClosed,
// and it returns once its goroutine has ended.
func (p *Poller) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		<-p.done
		return nil
	}
	p.closed = true
	var fire []func(error)
	for _, w := range p.watches {
		if f := w.disarmLocked(); f != nil {
			fire = append(fire, f)
		}
		w.closed = true
	}
	clear(p.watches)
	p.mu.Unlock()
	for _, f := range fire {
		go f(errWatchClosed)
	}
	p.sys.wake()
	<-p.done
	return p.sys.close()
}

// Arm waits, once, for the socket to become readable: fn runs on a new
// goroutine with nil once it is (or its end or an error is there to read),
// with os.ErrDeadlineExceeded once deadline passed (a zero deadline never
// passes), or with net.ErrClosed when the watch closes first. Arm while
// armed replaces neither: it returns an error.
func (w *Watch) Arm(deadline time.Time, fn func(err error)) error {
	p := w.p
	p.mu.Lock()
	defer p.mu.Unlock()
	switch {
	case w.closed || p.closed:
		return ErrClosed
	case w.armed:
		return errors.New("idlepoll: already armed")
	}
	if err := p.sys.arm(w.fd, w.key, w.added); err != nil {
		return err
	}
	w.added = true
	w.armed, w.fn = true, fn
	w.setDeadlineLocked(deadline)
	return nil
}

// SetDeadline moves an armed watch's deadline (a zero time: none); on a
// watch that is not armed it does nothing, since Arm takes the deadline.
func (w *Watch) SetDeadline(t time.Time) {
	p := w.p
	p.mu.Lock()
	defer p.mu.Unlock()
	if w.armed {
		w.setDeadlineLocked(t)
	}
}

// setDeadlineLocked sets an armed watch's deadline and wakes the loop when
// it is now the earliest (p.mu held).
func (w *Watch) setDeadlineLocked(t time.Time) {
	w.deadline = 0
	if !t.IsZero() {
		w.deadline = max(t.UnixNano(), 1)
	}
	if w.deadline != 0 && (w.p.earliest == 0 || w.deadline < w.p.earliest) {
		w.p.earliest = w.deadline
		w.p.sys.wake()
	}
}

// disarmLocked takes the armed callback, if any (p.mu held).
func (w *Watch) disarmLocked() func(error) {
	if !w.armed {
		return nil
	}
	f := w.fn
	w.armed, w.fn, w.deadline = false, nil, 0
	return f
}

// Close removes the socket from the poller; an armed callback runs with
// net.ErrClosed. Call it before closing the socket. It may be called more
// than once.
func (w *Watch) Close() {
	p := w.p
	p.mu.Lock()
	if w.closed {
		p.mu.Unlock()
		return
	}
	w.closed = true
	delete(p.watches, w.key)
	if w.added && !p.closed {
		p.sys.remove(w.fd)
	}
	f := w.disarmLocked()
	p.mu.Unlock()
	if f != nil {
		go f(errWatchClosed)
	}
}

// loop waits for events and deadlines and runs the callbacks they are for.
func (p *Poller) loop() {
	defer close(p.done)
	var keys []uint64
	var fire []func(error)
	var expired []func(error)
	for {
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			return
		}
		timeout := -1 // no deadline: wait for an event
		if p.earliest != 0 {
			d := time.Until(time.Unix(0, p.earliest))
			timeout = int(min(max(d, 0)+time.Millisecond-1, time.Hour) / time.Millisecond)
		}
		p.mu.Unlock()

		keys = p.sys.wait(keys[:0], timeout)

		p.mu.Lock()
		fire, expired = fire[:0], expired[:0]
		for _, k := range keys {
			if w := p.watches[k]; w != nil {
				if f := w.disarmLocked(); f != nil {
					fire = append(fire, f)
				}
			}
		}
		if now := time.Now().UnixNano(); p.earliest != 0 && now >= p.earliest {
			// Fire what passed its deadline and find the next one: a scan
			// of the watches, needed only as often as the earliest
			// deadline passes, which re-arming keeps pushing back.
			p.earliest = 0
			for _, w := range p.watches {
				switch {
				case !w.armed || w.deadline == 0:
				case w.deadline <= now:
					expired = append(expired, w.disarmLocked())
				case p.earliest == 0 || w.deadline < p.earliest:
					p.earliest = w.deadline
				}
			}
		}
		p.mu.Unlock()
		for _, f := range fire {
			go f(nil)
		}
		for _, f := range expired {
			go f(errDeadline)
		}
		// Kept for reuse, the slices must not keep the callbacks (and
		// the connections they hold) alive.
		clear(fire)
		clear(expired)
	}
}

//go:build linux

package idlepoll_test

import (
	"errors"
	"net"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/idlepoll"
)

// pair returns both ends of a loopback TCP connection and the server end's
// descriptor.
func pair(t *testing.T) (server, client net.Conn, fd int) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	client, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server, err = ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { server.Close(); client.Close() })
	raw, err := server.(*net.TCPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	if err := raw.Control(func(u uintptr) { fd = int(u) }); err != nil {
		t.Fatal(err)
	}
	return server, client, fd
}

func newPoller(t *testing.T) *idlepoll.Poller {
	t.Helper()
	p, err := idlepoll.New()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

// result is one callback's error, with how many times the callback ran.
type result struct {
	err   chan error
	calls atomic.Int32
}

func newResult() *result { return &result{err: make(chan error, 4)} }

func (r *result) fn(err error) { r.calls.Add(1); r.err <- err }

// await returns the callback's error, failing after a few seconds.
func (r *result) await(t *testing.T) error {
	t.Helper()
	select {
	case err := <-r.err:
		return err
	case <-time.After(5 * time.Second):
		t.Fatal("the callback did not run")
		return nil
	}
}

// quiet checks that the callback has not run within d.
func (r *result) quiet(t *testing.T, d time.Duration) {
	t.Helper()
	select {
	case err := <-r.err:
		t.Fatalf("the callback ran early, with %v", err)
	case <-time.After(d):
	}
}

func TestArm(t *testing.T) {
	tests := []struct {
		name string
		// before runs before Arm, after after it; either may be nil.
		before, after func(t *testing.T, server, client net.Conn, w *idlepoll.Watch)
		deadline      time.Duration // 0: none
		want          error
	}{
		{name: "bytes arrive", after: func(t *testing.T, _, c net.Conn, _ *idlepoll.Watch) { c.Write([]byte("x")) }},
		{name: "bytes already there", before: func(t *testing.T, _, c net.Conn, _ *idlepoll.Watch) {
			c.Write([]byte("x"))
			time.Sleep(20 * time.Millisecond) //sleep-ok: the byte crosses loopback before Arm
		}},
		{name: "peer closes", after: func(t *testing.T, _, c net.Conn, _ *idlepoll.Watch) { c.Close() }},
		{name: "deadline", deadline: 50 * time.Millisecond, want: os.ErrDeadlineExceeded},
		{name: "deadline moved earlier", deadline: time.Hour, want: os.ErrDeadlineExceeded,
			after: func(t *testing.T, _, _ net.Conn, w *idlepoll.Watch) {
				w.SetDeadline(time.Now().Add(30 * time.Millisecond))
			}},
		{name: "deadline already passed", deadline: -time.Second, want: os.ErrDeadlineExceeded},
		{name: "watch closed", want: net.ErrClosed, after: func(t *testing.T, _, _ net.Conn, w *idlepoll.Watch) { w.Close() }},
		{name: "bytes before the deadline", deadline: time.Hour,
			after: func(t *testing.T, _, c net.Conn, _ *idlepoll.Watch) { c.Write([]byte("x")) }},
	}
	p := newPoller(t)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, c, fd := pair(t)
			w, err := p.Watch(fd)
			if err != nil {
				t.Fatal(err)
			}
			defer w.Close()
			if tt.before != nil {
				tt.before(t, s, c, w)
			}
			var dl time.Time
			if tt.deadline != 0 {
				dl = time.Now().Add(tt.deadline)
			}
			r := newResult()
			if err := w.Arm(dl, r.fn); err != nil {
				t.Fatal(err)
			}
			if tt.after != nil {
				tt.after(t, s, c, w)
			}
			if err := r.await(t); !errors.Is(err, tt.want) {
				t.Fatalf("callback error %v, want %v", err, tt.want)
			}
			w.Close() // after the callback ran: no second call
			r.quiet(t, 50*time.Millisecond)
			if n := r.calls.Load(); n != 1 {
				t.Fatalf("callback ran %d times, want 1", n)
			}
		})
	}
}

// TestRearm arms the same socket again and again, reading between, as an
// idle link does; a wait with nothing to read does not fire.
func TestRearm(t *testing.T) {
	p := newPoller(t)
	s, c, fd := pair(t)
	w, err := p.Watch(fd)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	buf := make([]byte, 16)
	for i := range 20 {
		r := newResult()
		if err := w.Arm(time.Now().Add(time.Hour), r.fn); err != nil {
			t.Fatal(err)
		}
		if err := w.Arm(time.Time{}, r.fn); err == nil {
			t.Fatal("a second Arm while armed succeeded")
		}
		if i == 0 {
			r.quiet(t, 50*time.Millisecond)
		}
		c.Write([]byte{byte(i)})
		if err := r.await(t); err != nil {
			t.Fatal(err)
		}
		if n, err := s.Read(buf); err != nil || n != 1 || buf[0] != byte(i) {
			t.Fatalf("read %d %v %v", n, buf[:n], err)
		}
	}
}

// TestManyWatches arms many sockets with different deadlines; each
// callback runs once, with the right cause.
func TestManyWatches(t *testing.T) {
	p := newPoller(t)
	const n = 200
	results := make([]*result, n)
	clients := make([]net.Conn, n)
	for i := range n {
		_, c, fd := pair(t)
		w, err := p.Watch(fd)
		if err != nil {
			t.Fatal(err)
		}
		defer w.Close()
		clients[i] = c
		results[i] = newResult()
		dl := time.Now().Add(time.Hour)
		if i%2 == 1 {
			dl = time.Now().Add(time.Duration(i) * time.Millisecond)
		}
		if err := w.Arm(dl, results[i].fn); err != nil {
			t.Fatal(err)
		}
	}
	if got := p.Len(); got != n {
		t.Fatalf("Len %d, want %d", got, n)
	}
	for i := 0; i < n; i += 2 {
		clients[i].Write([]byte("x"))
	}
	for i, r := range results {
		err := r.await(t)
		if want := error(nil); i%2 == 1 {
			if !errors.Is(err, os.ErrDeadlineExceeded) {
				t.Fatalf("watch %d: %v, want the deadline", i, err)
			}
		} else if err != want {
			t.Fatalf("watch %d: %v, want readable", i, err)
		}
	}
	for i, r := range results {
		r.quiet(t, time.Millisecond)
		if c := r.calls.Load(); c != 1 {
			t.Fatalf("watch %d: callback ran %d times", i, c)
		}
	}
}

// TestClosedWatchIgnoresReusedDescriptor closes a watch and its socket; a
// new socket that gets the same descriptor number is not reported to the
// old watch's callback, and Arm on the closed watch fails.
func TestClosedWatchIgnoresReusedDescriptor(t *testing.T) {
	p := newPoller(t)
	s, _, fd := pair(t)
	w, err := p.Watch(fd)
	if err != nil {
		t.Fatal(err)
	}
	old := newResult()
	if err := w.Arm(time.Time{}, old.fn); err != nil {
		t.Fatal(err)
	}
	w.Close()
	if err := old.await(t); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("closed watch: %v, want net.ErrClosed", err)
	}
	s.Close()
	if err := w.Arm(time.Time{}, old.fn); !errors.Is(err, idlepoll.ErrClosed) {
		t.Fatalf("Arm after Close: %v, want ErrClosed", err)
	}
	_, c2, fd2 := pair(t)
	w2, err := p.Watch(fd2)
	if err != nil {
		t.Fatal(err)
	}
	defer w2.Close()
	r2 := newResult()
	if err := w2.Arm(time.Time{}, r2.fn); err != nil {
		t.Fatal(err)
	}
	c2.Write([]byte("x"))
	if err := r2.await(t); err != nil {
		t.Fatal(err)
	}
	old.quiet(t, 20*time.Millisecond)
	if p.Len() != 1 {
		t.Fatalf("Len %d, want 1", p.Len())
	}
}

// TestPollerClose closes a poller with an armed watch: its callback runs
// with net.ErrClosed and later Arms fail.
func TestPollerClose(t *testing.T) {
	p, err := idlepoll.New()
	if err != nil {
		t.Fatal(err)
	}
	_, _, fd := pair(t)
	w, err := p.Watch(fd)
	if err != nil {
		t.Fatal(err)
	}
	r := newResult()
	if err := w.Arm(time.Time{}, r.fn); err != nil {
		t.Fatal(err)
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if err := r.await(t); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("%v, want net.ErrClosed", err)
	}
	if err := w.Arm(time.Time{}, r.fn); !errors.Is(err, idlepoll.ErrClosed) {
		t.Fatalf("Arm after the poller closed: %v", err)
	}
	if _, err := p.Watch(fd); !errors.Is(err, idlepoll.ErrClosed) {
		t.Fatalf("Watch after the poller closed: %v", err)
	}
	w.Close()
	if err := p.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

func TestShared(t *testing.T) {
	a, err := idlepoll.Shared()
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := idlepoll.Shared(); a != b {
		t.Fatal("Shared returned two pollers")
	}
}

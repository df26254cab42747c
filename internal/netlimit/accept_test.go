package netlimit

import (
	"bytes"
	"errors"
	"log/slog"
	"net"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// failingListener fails every Accept with err until closed.
type failingListener struct {
	net.Listener
	err error
}

func (f *failingListener) Accept() (net.Conn, error) { return nil, f.err }

// TestAcceptErrors_WarnRateLimited: accept errors (out of file descriptors)
// are logged at WARN, the first at once, then one line per LogEvery with
// the count since the last line; a closed listener's error is not logged.
func TestAcceptErrors_WarnRateLimited(t *testing.T) {
	var mu sync.Mutex
	now := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	advance := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }
	var buf bytes.Buffer
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	emfile := &net.OpError{Op: "accept", Net: "tcp", Err: syscall.EMFILE}
	fl := &failingListener{Listener: raw, err: emfile}
	l := Wrap(fl, Limits{}, Options{Name: "agent", Logger: slog.New(slog.NewTextHandler(&buf, nil)), LogEvery: time.Minute, Now: clock})

	for range 100 {
		if _, err := l.Accept(); !errors.Is(err, syscall.EMFILE) {
			t.Fatalf("Accept: %v, want EMFILE passed on", err)
		}
	}
	if n := strings.Count(buf.String(), "level=WARN msg=\"cannot accept connections\""); n != 1 {
		t.Fatalf("%d WARN lines for 100 errors within a minute, want 1:\n%s", n, buf.String())
	}
	if !strings.Contains(buf.String(), "too many open files") || !strings.Contains(buf.String(), "listener=agent") {
		t.Errorf("line lacks the error or the listener: %s", buf.String())
	}
	advance(30 * time.Second)
	_, _ = l.Accept()
	advance(31 * time.Second)
	_, _ = l.Accept()
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 2 || !strings.Contains(lines[1], "count=101") {
		t.Errorf("after a minute: %d lines, want a second one counting 101 errors:\n%s", len(lines), buf.String())
	}
	if got := l.AcceptErrors(); got != 102 {
		t.Errorf("AcceptErrors = %d, want 102", got)
	}

	fl.err = net.ErrClosed
	advance(time.Hour)
	_, _ = l.Accept()
	if n := len(strings.Split(strings.TrimSpace(buf.String()), "\n")); n != 2 {
		t.Errorf("a closed listener was logged:\n%s", buf.String())
	}
}

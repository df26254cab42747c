package netlimit

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"
)

// server accepts on a limited loopback listener and keeps every connection
// open until the test ends.
type server struct {
	*Listener
	mu    sync.Mutex
	conns []net.Conn
}

func startServer(t *testing.T, lim Limits, opts Options) *server {
	t.Helper()
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &server{Listener: Wrap(raw, lim, opts)}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := s.Accept()
			if err != nil {
				return
			}
			s.mu.Lock()
			s.conns = append(s.conns, c)
			s.mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		s.Close()
		<-done
		s.mu.Lock()
		defer s.mu.Unlock()
		for _, c := range s.conns {
			c.Close()
		}
	})
	return s
}

// closeFirst closes the oldest connection the server holds.
func (s *server) closeFirst() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.conns[0].Close()
	s.conns[0].Close() // a second Close must not release the slot twice
	s.conns = s.conns[1:]
}

// dial connects from the loopback address from (127.0.0.x).
func dial(t *testing.T, addr, from string) net.Conn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// mustBeClosed fails unless the server closed c.
func mustBeClosed(t *testing.T, c net.Conn) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, err := c.Read(make([]byte, 1))
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatal("the connection over the limit was left open")
	}
	if err == nil {
		t.Fatal("read a byte from a refused connection")
	}
}

func waitOpen(t *testing.T, s *server, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for s.Open() != n {
		if time.Now().After(deadline) {
			t.Fatalf("%d connections open, want %d", s.Open(), n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

type countingObserver struct {
	mu sync.Mutex
	n  map[string]int
}

func (o *countingObserver) ConnectionRefused(listener, reason string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.n[listener+"/"+reason]++
}

func (o *countingObserver) get(k string) int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.n[k]
}

func TestListener_PerAddress(t *testing.T) {
	obs := &countingObserver{n: map[string]int{}}
	s := startServer(t, Limits{Max: 100, MaxPerAddr: 3}, Options{Name: "api", Observer: obs, Logger: slog.New(slog.DiscardHandler)})
	addr := s.Addr().String()
	for range 3 {
		dial(t, addr, "127.0.0.2")
	}
	waitOpen(t, s, 3)
	// The fourth from the same address is closed; another address is not
	// affected.
	mustBeClosed(t, dial(t, addr, "127.0.0.2"))
	dial(t, addr, "127.0.0.3")
	waitOpen(t, s, 4)
	if got := s.OpenFrom(Key(netip.MustParseAddr("127.0.0.2"))); got != 3 {
		t.Fatalf("127.0.0.2 holds %d connections, want 3", got)
	}
	if _, per := s.Refused(); per != 1 || obs.get("api/per_address") != 1 {
		t.Fatalf("refused per address: counter %d, observer %d; want 1", per, obs.get("api/per_address"))
	}
	// A closed connection frees its slot, once.
	s.closeFirst()
	waitOpen(t, s, 3)
	dial(t, addr, "127.0.0.2")
	waitOpen(t, s, 4)
	mustBeClosed(t, dial(t, addr, "127.0.0.2"))
}

func TestListener_Total(t *testing.T) {
	obs := &countingObserver{n: map[string]int{}}
	s := startServer(t, Limits{Max: 4}, Options{Name: "agent", Observer: obs, Logger: slog.New(slog.DiscardHandler)})
	addr := s.Addr().String()
	for i := range 4 {
		dial(t, addr, fmt.Sprintf("127.0.0.%d", 2+i))
	}
	waitOpen(t, s, 4)
	for _, from := range []string{"127.0.0.2", "127.0.0.9"} {
		mustBeClosed(t, dial(t, addr, from))
	}
	if total, _ := s.Refused(); total != 2 || obs.get("agent/total") != 2 {
		t.Fatalf("refused over the total: counter %d, observer %d; want 2", total, obs.get("agent/total"))
	}
	s.closeFirst()
	waitOpen(t, s, 3)
	dial(t, addr, "127.0.0.9")
	waitOpen(t, s, 4)
}

func TestListener_NoLimits(t *testing.T) {
	s := startServer(t, Limits{}, Options{})
	for range 50 {
		dial(t, s.Addr().String(), "127.0.0.2")
	}
	waitOpen(t, s, 50)
}

// TestListener_LogSampled refuses 1,000 connections and expects one log line
// at the first and one more after LogEvery, with the count.
func TestListener_LogSampled(t *testing.T) {
	var buf bytes.Buffer
	var mu sync.Mutex
	now := time.Unix(1000, 0)
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	s := startServer(t, Limits{MaxPerAddr: 1}, Options{Name: "client",
		Logger: slog.New(slog.NewTextHandler(&lockedWriter{w: &buf, mu: &mu}, nil)), Now: clock})
	addr := s.Addr().String()
	dial(t, addr, "127.0.0.2")
	waitOpen(t, s, 1)
	for range 1000 {
		mustBeClosed(t, dial(t, addr, "127.0.0.2"))
	}
	mu.Lock()
	now = now.Add(DefaultLogEvery)
	mu.Unlock()
	mustBeClosed(t, dial(t, addr, "127.0.0.2"))
	mu.Lock()
	out := buf.String()
	mu.Unlock()
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 2 {
		t.Fatalf("%d log lines for 1001 refusals, want 2:\n%s", len(lines), out)
	}
	if !strings.Contains(lines[0], "count=1 ") || !strings.Contains(lines[1], "count=1000 ") ||
		!strings.Contains(lines[1], "listener=client") || !strings.Contains(lines[1], "last_client=127.0.0.2/32") {
		t.Fatalf("log lines:\n%s", out)
	}
}

type lockedWriter struct {
	w  io.Writer
	mu *sync.Mutex
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

func TestKey(t *testing.T) {
	for _, tc := range []struct {
		addr net.Addr
		want string
	}{
		{&net.TCPAddr{IP: net.ParseIP("192.0.2.7"), Port: 5}, "192.0.2.7/32"},
		{&net.TCPAddr{IP: net.ParseIP("::ffff:192.0.2.7"), Port: 5}, "192.0.2.7/32"},
		{&net.TCPAddr{IP: net.ParseIP("2001:db8:1:2:3:4:5:6"), Port: 5}, "2001:db8:1:2::/64"},
		{&net.TCPAddr{IP: net.ParseIP("2001:db8:1:2:ffff::1"), Port: 5}, "2001:db8:1:2::/64"},
		{&net.TCPAddr{IP: net.ParseIP("2001:db8:1:3::1"), Port: 5}, "2001:db8:1:3::/64"},
		{&net.TCPAddr{IP: net.ParseIP("fe80::1"), Zone: "eth0"}, "fe80::/64"},
		{&net.UnixAddr{Name: "/run/x.sock", Net: "unix"}, "invalid Prefix"},
		{nil, "invalid Prefix"},
	} {
		if got := KeyOf(tc.addr).String(); got != tc.want {
			t.Errorf("KeyOf(%v) = %s, want %s", tc.addr, got, tc.want)
		}
	}
}

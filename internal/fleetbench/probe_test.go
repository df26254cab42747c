package fleetbench

import (
	"context"
	"encoding/pem"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/berth-dev/berth/api"
)

// recvScan waits for the next pass of a watch.
func recvScan(t *testing.T, scans <-chan probeScan) probeScan {
	t.Helper()
	select {
	case s := <-scans:
		return s
	case <-time.After(30 * time.Second):
		t.Fatal("no pass from the API-client process in 30 s")
		return probeScan{}
	}
}

// startTestProber starts the probe process for the API served by ts; the
// test's cleanup ends it.
func startTestProber(t *testing.T, ts *httptest.Server) *prober {
	t.Helper()
	ca := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ts.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	p, err := startProber(&api.Client{BrokerURL: ts.URL}, ca)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.close)
	return p
}

// TestProber runs the API-client process (this test binary, started the way
// berth-bench starts itself) against the real API handler with 3 AVAILABLE
// servers: a watch that cannot be met reports passes until it is stopped;
// the next watch's passes carry its own ID, its last pass is the one that
// saw every server AVAILABLE, stamped with when its page came, and nothing
// follows it.
func TestProber(t *testing.T) {
	ts := pagesBroker(t, 10)
	p := startTestProber(t, ts)
	if p.cmd.Process.Pid == os.Getpid() {
		t.Fatal("the probe runs in this process")
	}

	scans, err := p.watchAvailable(4)
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if s := recvScan(t, scans); s.Watch != 1 || s.Err != "" || s.Available != 3 {
			t.Fatalf("unmet watch: pass %+v, want watch 1 with 3 AVAILABLE", s)
		}
	}
	p.stop()

	before := time.Now()
	scans, err = p.watchAvailable(3)
	if err != nil {
		t.Fatal(err)
	}
	s := recvScan(t, scans)
	after := time.Now()
	if s.Watch != 2 || s.Err != "" || s.Available != 3 {
		t.Fatalf("met watch: pass %+v, want watch 2 with 3 AVAILABLE", s)
	}
	if at := time.Unix(0, s.At); at.Before(before) || at.After(after) {
		t.Errorf("pass stamped %s, not between the watch's start %s and its line %s", at, before, after)
	}
	if s.Slowest <= 0 || s.FirstByte <= 0 || s.FirstByte > s.Slowest {
		t.Errorf("page times: slowest %d ns, first byte %d ns", s.Slowest, s.FirstByte)
	}
	select {
	case s := <-scans:
		t.Fatalf("a pass after the watch was met: %+v", s)
	case <-time.After(5 * probeInterval):
	}
	p.stop()
}

// TestProber_Listening: the probe tells when a TCP address starts to
// accept connections, after the call, not before it listened.
func TestProber_Listening(t *testing.T) {
	ts := pagesBroker(t, 0)
	p := startTestProber(t, ts)
	// A port nobody listens on yet: take one, close it, listen later.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	openedAt := make(chan time.Time, 1)
	go func() {
		time.Sleep(300 * time.Millisecond)
		openedAt <- time.Now()
		l, err := net.Listen("tcp", addr)
		if err != nil {
			t.Error(err)
			return
		}
		t.Cleanup(func() { l.Close() })
		go func() {
			for {
				c, err := l.Accept()
				if err != nil {
					return
				}
				c.Close()
			}
		}()
	}()
	at, err := p.listening(t.Context(), strings.TrimPrefix(ts.URL, "https://"), addr)
	if err != nil {
		t.Fatal(err)
	}
	if opened := <-openedAt; at.Before(opened) {
		t.Fatalf("listening at %s, the port opened at %s", at, opened)
	}
}

// TestProber_Create: the probe creates sessions through CreateSessions in
// calls of batchSize, one or several in flight at once, and hands back
// every one, with its owner.
func TestProber_Create(t *testing.T) {
	for _, tc := range []struct {
		name    string
		clients int
		n       int
	}{
		{"one call at a time", 1, batchSize + 500},
		{"three calls in flight", 3, 3*batchSize + 500},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// Each call waits (up to 5 s) until another is in flight, or
			// the calls it is in a batch with are all sent: with several
			// clients, the broker sees calls at once.
			var mu sync.Mutex
			inFlight, most := 0, 0
			twoIn := make(chan struct{})
			ts := pagesBrokerWith(t, 0, func(h http.Handler) http.Handler {
				return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					if r.URL.Path == "/createSessions" {
						mu.Lock()
						inFlight++
						if inFlight == 2 && most < 2 {
							close(twoIn)
						}
						most = max(most, inFlight)
						mu.Unlock()
						if tc.clients > 1 {
							select {
							case <-twoIn:
							case <-time.After(5 * time.Second):
							}
						}
						defer func() { mu.Lock(); inFlight--; mu.Unlock() }()
					}
					h.ServeHTTP(w, r)
				})
			})
			p := startTestProber(t, ts)
			created, failed, reasons, err := p.create(t.Context(), tc.n, tc.clients, "probe")
			if err != nil || failed != 0 || len(reasons) != 0 {
				t.Fatalf("create: %v, %d failed %v", err, failed, reasons)
			}
			if len(created) != tc.n {
				t.Fatalf("created %d sessions, want %d", len(created), tc.n)
			}
			owners := map[string]int{}
			for _, o := range created {
				owners[o]++
			}
			// Owners go round user0000 to user0999: the first 500 once more.
			per := tc.n / 1000
			if len(owners) != 1000 || owners["user0000"] != per+1 || owners["user0999"] != per {
				t.Errorf("owners: %d distinct, user0000 %d, user0999 %d; want 1000, %d, %d",
					len(owners), owners["user0000"], owners["user0999"], per+1, per)
			}
			mu.Lock()
			if (tc.clients == 1) != (most == 1) {
				t.Errorf("at most %d calls in flight with %d clients", most, tc.clients)
			}
			mu.Unlock()
			// The watch after it still works: the create ended cleanly.
			scans, err := p.watchAvailable(3)
			if err != nil {
				t.Fatal(err)
			}
			if s := recvScan(t, scans); s.Err != "" || s.Available != 3 {
				t.Fatalf("watch after create: %+v", s)
			}
			p.stop()
		})
	}
}

// TestProber_Ready: the probe's ready watch counts only the sessions asked
// for, and answers once they are all READY.
func TestProber_Ready(t *testing.T) {
	ts := pagesBroker(t, 30) // sess-0000 to sess-0029, READY
	p := startTestProber(t, ts)
	var passes []int
	at, err := p.ready(t.Context(), []string{"sess-0003", "sess-0029"}, func(n int) { passes = append(passes, n) })
	if err != nil || at.IsZero() {
		t.Fatalf("ready: %v, %v", at, err)
	}
	if len(passes) != 0 {
		t.Errorf("passes before all READY: %v, want none", passes)
	}
	// A session that is not listed: the watch goes on, counting the others.
	ctx, cancel := context.WithTimeout(t.Context(), time.Second)
	defer cancel()
	_, err = p.ready(ctx, []string{"sess-0001", "nope"}, func(n int) { passes = append(passes, n) })
	if !errors.Is(err, context.DeadlineExceeded) || len(passes) == 0 || passes[0] != 1 {
		t.Errorf("ready with a missing session: %v, passes %v; want the deadline after passes of 1", err, passes)
	}
}

package agenthub_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/base64"
	"fmt"
	"net/http"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/agenthub"
	"github.com/berth-dev/berth/internal/agentproto"
	"github.com/berth-dev/berth/internal/poll"
	"github.com/coder/websocket"
)

// tryDial attempts a WebSocket connect and returns the HTTP response of a
// refused one (nil when the upgrade succeeded, then closed).
func (e *env) tryDial(t testing.TB) *http.Response {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, resp, err := websocket.Dial(ctx, e.url+"/agent/connect", &websocket.DialOptions{HTTPClient: e.srv.Client()})
	if err == nil {
		c.CloseNow()
		return nil
	}
	if resp == nil {
		t.Fatalf("dial: %v", err)
	}
	return resp
}

// holdHandshakeSlot links an agent whose connect the service holds until
// release is closed: it takes one handshake slot until then.
func holdHandshakeSlot(t *testing.T, e *env) (slow *websocket.Conn, release chan struct{}) {
	t.Helper()
	entered, release := make(chan struct{}), make(chan struct{})
	e.svc.ConnectErr = func(_, serverID string) error {
		if serverID == "srv-slow" {
			close(entered)
			<-release
		}
		return nil
	}
	slow = e.dial(t)
	write(t, slow, "", hello("srv-slow"))
	<-entered
	return slow, release
}

// TestHub_ShedsHandshakes: with MaxHandshakes handshakes under way, a
// connect that finds no slot within HandshakeWait is answered 503 with a
// Retry-After of 1 s to RetryAfter, before any upgrade; once the slot is
// free, connects are taken again.
func TestHub_ShedsHandshakes(t *testing.T) {
	e := mustStartHub(t, agenthub.Options{MaxHandshakes: 1, HandshakeWait: 50 * time.Millisecond, RetryAfter: 3 * time.Second}, nil)
	slow, release := holdHandshakeSlot(t, e)

	seen := map[string]bool{}
	for range 20 {
		resp := e.tryDial(t)
		if resp == nil || resp.StatusCode != http.StatusServiceUnavailable {
			t.Fatalf("connect during a full handshake table: %v, want 503", resp)
		}
		ra := resp.Header.Get("Retry-After")
		if n, err := strconv.Atoi(ra); err != nil || n < 1 || n > 3 {
			t.Fatalf("Retry-After %q, want 1 to 3 seconds", ra)
		}
		seen[ra] = true
	}
	if len(seen) < 2 {
		t.Errorf("Retry-After always %v: want it spread over 1 to 3 s", seen)
	}
	if !strings.Contains(e.logs.String(), "agent connects shed") {
		t.Errorf("no log line of the sheds:\n%s", e.logs)
	}
	if n := strings.Count(e.logs.String(), "agent connects shed"); n != 1 {
		t.Errorf("%d log lines for 20 sheds in 10 s, want 1", n)
	}

	close(release)
	if m := read(t, slow); m.Type != agentproto.TypeWelcome {
		t.Fatalf("slow agent got %s, want welcome", m.Type)
	}
	if resp := e.tryDial(t); resp != nil {
		t.Fatalf("connect after the handshake ended: %d, want an upgrade", resp.StatusCode)
	}
}

// TestHub_WaitsForHandshakeSlot: a connect that finds every slot taken
// waits for one, up to HandshakeWait, instead of being shed at once: it
// has paid for its TLS handshake already.
func TestHub_WaitsForHandshakeSlot(t *testing.T) {
	e := mustStartHub(t, agenthub.Options{MaxHandshakes: 1, HandshakeWait: time.Minute}, nil)
	slow, release := holdHandshakeSlot(t, e)
	waited := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		c, resp, err := websocket.Dial(ctx, e.url+"/agent/connect", &websocket.DialOptions{HTTPClient: e.srv.Client()})
		if err == nil {
			c.CloseNow()
		} else if resp != nil {
			err = fmt.Errorf("answered %d: %w", resp.StatusCode, err)
		}
		waited <- err
	}()
	select {
	case err := <-waited:
		t.Fatalf("a connect ended (%v) while the slot was taken, want it to wait", err)
	case <-time.After(200 * time.Millisecond):
	}
	close(release)
	if m := read(t, slow); m.Type != agentproto.TypeWelcome {
		t.Fatalf("slow agent got %s, want welcome", m.Type)
	}
	if err := <-waited; err != nil {
		t.Fatalf("the waiting connect: %v, want an upgrade once the slot was free", err)
	}
}

// TestHub_NotReady: until Ready, connects are answered 503 with
// Retry-After 1.
func TestHub_NotReady(t *testing.T) {
	var ready atomic.Bool
	e := mustStartHub(t, agenthub.Options{Ready: ready.Load}, nil)
	resp := e.tryDial(t)
	if resp == nil || resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") != "1" {
		t.Fatalf("connect before ready: %v, want 503 with Retry-After 1", resp)
	}
	ready.Store(true)
	c := e.dial(t)
	write(t, c, "", hello("srv-ready"))
	if m := read(t, c); m.Type != agentproto.TypeWelcome {
		t.Fatalf("got %s, want welcome", m.Type)
	}
}

// TestHub_WelcomeFleetSize: Welcome carries Options.FleetSize, or without
// it the number of servers that linked to the hub.
func TestHub_WelcomeFleetSize(t *testing.T) {
	e := mustStartHub(t, agenthub.Options{FleetSize: func() int { return 12345 }}, nil)
	c := e.dial(t)
	write(t, c, "", hello("srv-f"))
	if w, ok := read(t, c).Body.(*agentproto.Welcome); !ok || w.FleetSize != 12345 {
		t.Fatalf("welcome %+v, want fleet size 12345", w)
	}

	e = mustStartHub(t, agenthub.Options{}, nil)
	for i := range 3 {
		c := e.dial(t)
		write(t, c, "", hello(fmt.Sprintf("srv-%d", i)))
		w, ok := read(t, c).Body.(*agentproto.Welcome)
		if !ok || w.FleetSize != i+1 {
			t.Fatalf("welcome %d: %+v, want fleet size %d", i, w, i+1)
		}
	}
}

// TestHub_BytesAheadOfUpgrade: an agent that sends its hello right behind
// the upgrade request, before the 101, is served: the bytes net/http read
// ahead survive the switch to the link's own small buffers.
func TestHub_BytesAheadOfUpgrade(t *testing.T) {
	e := mustStartHub(t, agenthub.Options{}, nil)
	conn, err := tls.Dial("tcp", e.srv.Listener.Addr().String(), e.tls)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	data, err := agentproto.Encode("", hello("srv-eager"))
	if err != nil {
		t.Fatal(err)
	}
	key := base64.StdEncoding.EncodeToString([]byte("0123456789abcdef"))
	req := "GET /agent/connect HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: " + key + "\r\n\r\n"
	if _, err := conn.Write(append([]byte(req), maskedText(data)...)); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("upgrade: %v %v", resp, err)
	}
	e.svc.wait(t, "connected", "srv-eager", nil)
	// The Welcome frame follows: an unmasked text frame of the broker.
	_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	h := make([]byte, 2)
	if _, err := br.Read(h[:1]); err != nil || h[0] != 0x81 {
		t.Fatalf("first frame byte %#x %v, want a final text frame", h[0], err)
	}
}

// maskedText is p as one masked (client) WebSocket text frame.
func maskedText(p []byte) []byte {
	mask := [4]byte{1, 2, 3, 4}
	out := []byte{0x81}
	switch n := len(p); {
	case n < 126:
		out = append(out, 0x80|byte(n))
	default:
		out = append(out, 0x80|126, byte(n>>8), byte(n))
	}
	out = append(out, mask[:]...)
	for i, b := range p {
		out = append(out, b^mask[i%4])
	}
	return out
}

// TestHub_ReturnsMemoryAfterStorm: once a storm of link changes has been
// quiet for the quiet period, the hub returns free memory to the OS, once.
func TestHub_ReturnsMemoryAfterStorm(t *testing.T) {
	e := mustStartHub(t, agenthub.Options{}, nil)
	var returned atomic.Int32
	e.hub.SetMemoryReturn(4, 100*time.Millisecond, func() { returned.Add(1) })
	for i := range 3 {
		c := e.dial(t)
		write(t, c, "", hello(fmt.Sprintf("srv-m%d", i)))
		read(t, c)
	}
	c := e.dial(t)
	write(t, c, "", hello("srv-m3")) // the fourth change: a storm
	read(t, c)
	poll.Until(t, 10*time.Second, "memory returned", func() bool { return returned.Load() == 1 })
	c.Close(websocket.StatusNormalClosure, "") // one change: no storm
	e.svc.wait(t, "disconnected", "srv-m3", nil)
	e.hub.Close()
	if n := returned.Load(); n != 1 {
		t.Errorf("memory returned %d times, want 1", n)
	}
}

// TestHub_WaitingConnectsHoldLittle: a connect waiting for a handshake slot
// has its connection taken over from net/http first, so that it holds no
// background read goroutine of net/http's (a relinking fleet has thousands
// waiting); once a slot is free it is upgraded as before.
func TestHub_WaitingConnectsHoldLittle(t *testing.T) {
	e := mustStartHub(t, agenthub.Options{MaxHandshakes: 1, HandshakeWait: time.Minute}, nil)
	slow, release := holdHandshakeSlot(t, e)
	const waiting = 10
	done := make(chan error, waiting)
	for range waiting {
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			c, _, err := websocket.Dial(ctx, e.url+"/agent/connect", &websocket.DialOptions{HTTPClient: e.srv.Client()})
			if err == nil {
				c.CloseNow()
			}
			done <- err
		}()
	}
	poll.Until(t, 10*time.Second, "the connects waiting for a slot", func() bool {
		return goroutinesIn("agenthub.(*Hub).admit(") == waiting
	})
	if n := goroutinesIn("net/http.(*connReader).backgroundRead("); n != 0 {
		t.Errorf("%d net/http read goroutines for %d waiting connects, want none", n, waiting)
	}
	close(release)
	if m := read(t, slow); m.Type != agentproto.TypeWelcome {
		t.Fatalf("slow agent got %s, want welcome", m.Type)
	}
	for range waiting {
		if err := <-done; err != nil {
			t.Errorf("a waiting connect: %v, want an upgrade once a slot was free", err)
		}
	}
}

// goroutinesIn counts the goroutines whose stack holds fn.
func goroutinesIn(fn string) int {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			return bytes.Count(buf[:n], []byte(fn))
		}
		buf = make([]byte, 2*len(buf))
	}
}

package gateway_test

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"net/url"
	"os"
	"os/exec"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/berth-dev/berth/internal/agent"
	"github.com/berth-dev/berth/internal/driver/vnc"
	"github.com/berth-dev/berth/internal/gateway"
	"github.com/berth-dev/berth/internal/poll"
)

// pointerAt is an RFB PointerEvent at x, y with no button down.
func pointerAt(x, y int) []byte {
	b := []byte{5, 0, 0, 0, 0, 0}
	binary.BigEndian.PutUint16(b[2:], uint16(x))
	binary.BigEndian.PutUint16(b[4:], uint16(y))
	return b
}

// TestActivity_RealXvnc: a real session's reported LastInputTime moves
// with input from a browser client (through the gateway) and with input
// from inside the session (xdotool, seen through the X server's idle
// time), stays put without input, and changes at most once per activity
// interval however much input there is. The driver's activity clock is
// advanced by hand; PollActivity is what the driver's ticker runs.
func TestActivity_RealXvnc(t *testing.T) {
	if _, err := exec.LookPath("xdotool"); err != nil {
		t.Skip("xdotool is not installed")
	}
	var off atomic.Int64
	d, b, srv := realSessionEnvConfig(t, func(c *vnc.Config) {
		c.ActivityInterval = time.Hour // the ticker stays out of the way
		c.Now = func() time.Time { return time.Now().Add(time.Duration(off.Load())) }
	})
	nextInterval := func() { off.Add(int64(2 * time.Hour)) }
	ctx := context.Background()
	id := "gw-act-" + time.Now().Format("150405.000")[7:]
	cctx, cancel := context.WithTimeout(ctx, 40*time.Second)
	defer cancel()
	if err := d.Create(cctx, agent.CreateRequest{ID: id, Owner: "berthtest1"}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Delete(ctx, id) })
	last := func() time.Time {
		d.PollActivity(ctx)
		return driverSession(t, d, id).LastInputTime
	}
	if s := driverSession(t, d, id); len(s.OwnerGroups) == 0 || s.OwnerGroups[0] != "berthtest1" {
		t.Errorf("owner groups %q, want berthtest1's groups", s.OwnerGroups)
	}

	c, status, body := dialWS(t, srv, b.token(t, id, "berthtest1", "berthtest1"), id)
	if c == nil {
		t.Fatalf("connect: %d %s", status, body)
	}
	rc, _, _, _ := handshake(t, c)
	sess, _ := d.Session(id)
	x := openDisplay(t, sess.PID)
	r0 := last()
	if r0.IsZero() {
		t.Fatal("no last input after a client connected")
	}

	// Browser input moves it, in the next interval.
	pos := 100
	move := func() {
		pos++
		rc.write(pointerAt(pos, 200))
		poll.Until(t, 10*time.Second, "the pointer to move", func() bool { px, _, _ := x.pointer(); return px == pos })
	}
	var r1 time.Time
	poll.Until(t, 20*time.Second, "client input to move the last input", func() bool {
		move()
		nextInterval()
		r1 = last()
		return r1.After(r0)
	})

	// More input within the interval changes nothing, though it is later.
	poll.Until(t, 10*time.Second, "a later second", func() bool { return time.Since(r1) > 2*time.Second })
	move()
	if got := last(); !got.Equal(r1) {
		t.Fatalf("last input changed to %v within the interval (was %v)", got, r1)
	}
	nextInterval()
	r2 := last()
	if !r2.After(r1) {
		t.Fatalf("last input %v did not move after the interval (was %v)", r2, r1)
	}

	// Without input it stays, interval or not.
	poll.Until(t, 10*time.Second, "a later second", func() bool { return time.Since(r2) > 2*time.Second })
	nextInterval()
	if got := last(); !got.Equal(r2) {
		t.Fatalf("last input moved to %v without input (was %v)", got, r2)
	}

	// Input inside the session, which the gateway never sees.
	cmd := exec.Command("xdotool", "mousemove", "300", "300")
	cmd.Env = append(os.Environ(), "DISPLAY="+x.display, "XAUTHORITY="+x.auth)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("xdotool: %v: %s", err, out)
	}
	if px, py, _ := x.pointer(); px != 300 || py != 300 {
		t.Fatalf("xdotool did not move the pointer: %d,%d", px, py)
	}
	nextInterval()
	if got := last(); !got.After(r2) {
		t.Fatalf("last input %v did not move after xdotool input (was %v)", got, r2)
	}
}

// TestCommands_RealXvnc: the vnc driver's Disconnect and NotifyUsers (the
// broker's disconnect and notify commands) reach the pages of a real
// session through the gateway attached to it.
func TestCommands_RealXvnc(t *testing.T) {
	d, b, srv := realSessionEnv(t)
	ctx := context.Background()
	id := "gw-cmd-" + time.Now().Format("150405.000")[7:]
	cctx, cancel := context.WithTimeout(ctx, 40*time.Second)
	defer cancel()
	if err := d.Create(cctx, agent.CreateRequest{ID: id, Owner: "berthtest1"}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Delete(ctx, id) })
	tok := b.token(t, id, "berthtest1", "berthtest1")
	wctx, wcancel := context.WithTimeout(ctx, 10*time.Second)
	defer wcancel()
	q := "?authToken=" + url.QueryEscape(tok) + "&sessionId=" + id + "&clientId=page-1"
	c, _, err := websocket.Dial(wctx, "wss"+srv.URL[len("https"):]+"/websockify"+q, &websocket.DialOptions{HTTPClient: srv.Client()})
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()
	poll.Until(t, 10*time.Second, "connected", func() bool { return driverSession(t, d, id).NumConnections == 1 })
	info := func() map[string]any {
		t.Helper()
		resp, err := srv.Client().Get(srv.URL + "/session-info" + q)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var m map[string]any
		if err := json.NewDecoder(resp.Body).Decode(&m); err != nil {
			t.Fatal(err)
		}
		return m
	}

	deadline := time.Now().Add(15 * time.Minute)
	if err := d.NotifyUsers(ctx, id, agent.Notice{Message: "This session ends in 15 minutes.", Policy: "session-max-lifetime-hours", Deadline: deadline}); err != nil {
		t.Fatal(err)
	}
	if n, _ := info()["notice"].(map[string]any); n == nil || n["message"] != "This session ends in 15 minutes." {
		t.Errorf("notice on the page: %v", n)
	}
	const why = "Disconnected after 30 minutes without input"
	if err := d.Disconnect(ctx, id, agent.Notice{Message: why, Policy: "session-idle-timeout-minutes"}); err != nil {
		t.Fatal(err)
	}
	var ce websocket.CloseError
	if err := readToClose(c); !errors.As(err, &ce) || ce.Code != gateway.CloseDisconnected || ce.Reason != why {
		t.Errorf("page after Disconnect: %v", err)
	}
	poll.Until(t, 10*time.Second, "no connections and a disconnection time", func() bool {
		s := driverSession(t, d, id)
		return s.NumConnections == 0 && !s.LastDisconnectionTime.IsZero()
	})
	if m := info(); m["disconnected"] != why {
		t.Errorf("session-info after Disconnect: %v", m)
	}
	if err := d.Disconnect(ctx, "no-such-session", agent.Notice{}); !errors.Is(err, vnc.ErrNotFound) {
		t.Errorf("Disconnect of an unknown session: %v", err)
	}
	if err := d.NotifyUsers(ctx, "no-such-session", agent.Notice{Message: "x"}); !errors.Is(err, vnc.ErrNotFound) {
		t.Errorf("NotifyUsers of an unknown session: %v", err)
	}
}

package gateway_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/berth-dev/berth/internal/gateway"
	"github.com/berth-dev/berth/internal/poll"
)

// RFB client messages the tests send.
var (
	msgKey     = []byte{4, 1, 0, 0, 0, 0, 0, 0x61}      // KeyEvent down 'a'
	msgPointer = []byte{5, 0, 0, 10, 0, 10}             // PointerEvent at 10,10
	msgFBReq   = []byte{3, 1, 0, 0, 0, 0, 0, 16, 0, 16} // FramebufferUpdateRequest
	lifePerms  = "[permissions]\n%owner% allow builtin\nbob allow display\n"
)

// clock is a settable clock near the real time (tokens are checked against
// it too).
type clock struct{ off atomic.Int64 }

func (c *clock) now() time.Time          { return time.Now().Add(time.Duration(c.off.Load())) }
func (c *clock) advance(d time.Duration) { c.off.Add(int64(d)) }

// TestInput_Reported: a new connection and the keyboard and pointer input
// a connection forwards are reported to the InputObserver, at most once a
// second per connection; input the user may not send is not.
func TestInput_Reported(t *testing.T) {
	// A frozen clock: only advance moves it.
	var base = time.Now()
	var off atomic.Int64
	now := func() time.Time { return base.Add(time.Duration(off.Load())) }
	e := newEnvConfig(t, lifePerms, 0, func(c *gateway.Config) { c.Now = now })
	ownerTok := e.broker.token(t, sessID, owner, owner)

	c := e.dialClient(t, ownerTok, "owner-page")
	rc, _, _, _ := handshake(t, c)
	poll.Until(t, 10*time.Second, "the connection reported as input", func() bool { return len(e.sessions.input(sessID)) == 1 })

	// Input within the same second is not reported again.
	rc.write(msgKey)
	rc.write(msgFBReq)
	poll.Until(t, 10*time.Second, "the key forwarded", func() bool { return bytes.HasSuffix(e.rfb.received(0), msgFBReq) })
	if n := len(e.sessions.input(sessID)); n != 1 {
		t.Fatalf("%d input reports within one second, want 1", n)
	}
	// A second later it is.
	off.Add(int64(2 * time.Second))
	rc.write(msgPointer)
	poll.Until(t, 10*time.Second, "the pointer reported", func() bool { return len(e.sessions.input(sessID)) == 2 })
	if got := e.sessions.input(sessID)[1]; !got.Equal(now()) {
		t.Errorf("input reported at %v, want %v", got, now())
	}

	// bob may only watch: his connection counts, his pointer does not.
	off.Add(int64(2 * time.Second))
	bc := e.dialClient(t, e.broker.token(t, sessID, owner, "bob"), "bob-page")
	rb, _, _, _ := handshake(t, bc)
	poll.Until(t, 10*time.Second, "bob's connection reported", func() bool { return len(e.sessions.input(sessID)) == 3 })
	off.Add(int64(2 * time.Second))
	rb.write(msgPointer)
	rb.write(msgKey)
	rb.write(msgFBReq)
	poll.Until(t, 10*time.Second, "bob's update request forwarded", func() bool { return bytes.HasSuffix(e.rfb.received(1), msgFBReq) })
	if n := len(e.sessions.input(sessID)); n != 3 {
		t.Errorf("%d input reports after a view-only user's input, want 3", n)
	}
}

// TestNotify_SessionInfo: a notice reaches every page of the session
// through session-info, with the time left; only the owner is offered
// Extend; it ends at its deadline.
func TestNotify_SessionInfo(t *testing.T) {
	clk := &clock{}
	e := newEnvConfig(t, lifePerms, 0, func(c *gateway.Config) {
		c.Now = clk.now
		c.Extend = func(context.Context, string, string, time.Duration) (time.Time, error) { return time.Time{}, nil }
	})
	ownerTok := e.broker.token(t, sessID, owner, owner)
	bobTok := e.broker.token(t, sessID, owner, "bob")
	e.dialClient(t, ownerTok, "owner-page")
	poll.Until(t, 10*time.Second, "connected", func() bool { return e.gw.Connections(sessID) == 1 })
	if _, body, m := e.info(t, ownerTok, sessID, "owner-page"); m == nil || m["notice"] != nil {
		t.Fatalf("notice before any: %s", body)
	}

	deadline := clk.now().Add(15 * time.Minute).Truncate(time.Second)
	n := e.gw.Notify(sessID, gateway.Notice{Message: "This session ends in 15 minutes.", Policy: "session-max-lifetime-hours", Deadline: deadline, Extendable: true})
	if n != 1 {
		t.Errorf("Notify reached %d connections, want 1", n)
	}
	notice := func(tok, client string) map[string]any {
		t.Helper()
		_, body, m := e.info(t, tok, sessID, client)
		if m == nil {
			t.Fatalf("session-info: %s", body)
		}
		nm, _ := m["notice"].(map[string]any)
		return nm
	}
	nm := notice(ownerTok, "owner-page")
	if nm == nil || nm["message"] != "This session ends in 15 minutes." || nm["policy"] != "session-max-lifetime-hours" ||
		nm["extendable"] != true || nm["deadline"] != deadline.UTC().Format(time.RFC3339) {
		t.Fatalf("owner's notice %v", nm)
	}
	if left, _ := nm["secondsLeft"].(float64); left < 880 || left > 900 {
		t.Errorf("secondsLeft %v, want about 900", nm["secondsLeft"])
	}
	// bob, who may not extend, sees it without Extend; so does a page
	// that connects later.
	if nm := notice(bobTok, ""); nm == nil || nm["extendable"] != false {
		t.Errorf("bob's notice %v", nm)
	}
	// A later notice replaces it; a notice without deadline has no time.
	e.gw.Notify(sessID, gateway.Notice{Message: "Maintenance tonight."})
	if nm := notice(ownerTok, ""); nm == nil || nm["message"] != "Maintenance tonight." || nm["secondsLeft"] != nil || nm["extendable"] != false {
		t.Errorf("replaced notice %v", nm)
	}
	e.gw.Notify(sessID, gateway.Notice{Message: "soon", Deadline: clk.now().Add(time.Minute)})
	clk.advance(2 * time.Minute)
	if nm := notice(ownerTok, ""); nm != nil {
		t.Errorf("notice after its deadline: %v", nm)
	}
}

// TestDisconnect_ClosesWithReason: Disconnect closes every page of the
// session with CloseDisconnected and the reason, session-info then tells
// those pages why (so they do not reconnect by themselves) until they
// connect again; other sessions are untouched.
func TestDisconnect_ClosesWithReason(t *testing.T) {
	e := newEnv(t, lifePerms, 0)
	ownerTok := e.broker.token(t, sessID, owner, owner)
	c1 := e.dialClient(t, ownerTok, "page-1")
	c2 := e.dialClient(t, e.broker.token(t, sessID, owner, "bob"), "page-2")
	poll.Until(t, 10*time.Second, "two connections", func() bool { return e.gw.Connections(sessID) == 2 })
	if n := e.gw.Disconnect("other-session", gateway.Notice{Message: "x"}); n != 0 {
		t.Errorf("Disconnect of another session closed %d", n)
	}

	const why = "Disconnected after 30 minutes without input"
	if n := e.gw.Disconnect(sessID, gateway.Notice{Message: why, Policy: "session-idle-timeout-minutes"}); n != 2 {
		t.Errorf("Disconnect closed %d connections, want 2", n)
	}
	for i, c := range []*websocket.Conn{c1, c2} {
		err := readToClose(c)
		var ce websocket.CloseError
		if !errors.As(err, &ce) || ce.Code != gateway.CloseDisconnected || ce.Reason != why {
			t.Errorf("page %d: %v, want close %d %q", i+1, err, gateway.CloseDisconnected, why)
		}
	}
	poll.Until(t, 10*time.Second, "no connections", func() bool { return e.gw.Connections(sessID) == 0 })
	if _, body, m := e.info(t, ownerTok, sessID, "page-1"); m == nil || m["disconnected"] != why {
		t.Errorf("session-info of the disconnected page: %s", body)
	}
	if _, body, m := e.info(t, ownerTok, sessID, "another-page"); m == nil || m["disconnected"] != nil {
		t.Errorf("session-info of another page: %s", body)
	}
	// Connecting again (the user's choice) forgets it.
	e.dialClient(t, ownerTok, "page-1")
	poll.Until(t, 10*time.Second, "connected again", func() bool { return e.gw.Connections(sessID) == 1 })
	if _, body, m := e.info(t, ownerTok, sessID, "page-1"); m == nil || m["disconnected"] != nil {
		t.Errorf("session-info after connecting again: %s", body)
	}
	// A long reason is cut to what a close frame holds.
	long := strings.Repeat("é", 100)
	c3 := e.dialClient(t, ownerTok, "page-3")
	poll.Until(t, 10*time.Second, "connected", func() bool { return e.gw.Connections(sessID) == 2 })
	e.gw.Disconnect(sessID, gateway.Notice{Message: long})
	err := readToClose(c3)
	var ce websocket.CloseError
	if !errors.As(err, &ce) || len(ce.Reason) > 123 || !strings.HasPrefix(long, ce.Reason) {
		t.Errorf("long reason: %v", err)
	}
}

// readToClose reads a page's WebSocket (the session's handshake first)
// until it fails, and returns the failure: the close.
func readToClose(c *websocket.Conn) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for {
		if _, _, err := c.Read(ctx); err != nil {
			return err
		}
	}
}

// refusal is an extension refused by the broker.
type refusal struct {
	status int
	msg    string
}

func (r *refusal) Error() string   { return r.msg }
func (r *refusal) HTTPStatus() int { return r.status }

// TestExtend: the page's Extend button: the owner's request from the
// page's origin reaches the agent (Config.Extend) and answers the new
// deadline; others are refused before it.
func TestExtend(t *testing.T) {
	var mu sync.Mutex
	var calls []string
	deadline := time.Now().Add(3 * time.Hour).Truncate(time.Second)
	var answer error
	e := newEnvConfig(t, lifePerms, 0, func(c *gateway.Config) {
		c.Extend = func(_ context.Context, id, user string, by time.Duration) (time.Time, error) {
			mu.Lock()
			defer mu.Unlock()
			calls = append(calls, id+" "+user+" "+by.String())
			if answer != nil {
				return time.Time{}, answer
			}
			return deadline, nil
		}
	})
	ownerTok := e.broker.token(t, sessID, owner, owner)
	post := func(tok, origin, site, body string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodPost, e.srv.URL+"/extend?authToken="+url.QueryEscape(tok)+"&sessionId="+sessID, strings.NewReader(body))
		if origin != "" {
			req.Header.Set("Origin", origin)
		}
		if site != "" {
			req.Header.Set("Sec-Fetch-Site", site)
		}
		resp, err := e.srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	e.gw.Notify(sessID, gateway.Notice{Message: "ends soon", Deadline: time.Now().Add(10 * time.Minute), Extendable: true})

	status, body := post(ownerTok, e.srv.URL, "same-origin", "{}")
	var out struct {
		Deadline    string
		SecondsLeft int64
	}
	if status != 200 || json.Unmarshal([]byte(body), &out) != nil || out.Deadline != deadline.UTC().Format(time.RFC3339) || out.SecondsLeft < 3*3600-60 {
		t.Fatalf("owner's extend: %d %s", status, body)
	}
	if _, b, m := e.info(t, ownerTok, sessID, ""); m == nil || m["notice"] != nil {
		t.Errorf("the extendable notice outlived the extension: %s", b)
	}
	if status, body := post(ownerTok, "", "", `{"bySeconds":7200}`); status != 200 {
		t.Errorf("extend by 2h: %d %s", status, body)
	}

	for _, tc := range []struct {
		name, tok, origin, site, body string
		status                        int
		want                          string
	}{
		{"not the owner", e.broker.token(t, sessID, owner, "bob"), "", "", "", 403, "only the session's owner"},
		{"another origin", ownerTok, "https://evil.example", "", "", 403, "Origin"},
		{"cross-site fetch", ownerTok, "", "cross-site", "", 403, "Origin"},
		{"no token", "", "", "", "", 401, "missing authToken"},
		{"bad body", ownerTok, "", "", "{", 400, "bySeconds"},
		{"negative", ownerTok, "", "", `{"bySeconds":-1}`, 400, "bySeconds"},
	} {
		if status, body := post(tc.tok, tc.origin, tc.site, tc.body); status != tc.status || !strings.Contains(body, tc.want) {
			t.Errorf("%s: %d %q, want %d %q", tc.name, status, body, tc.status, tc.want)
		}
	}
	mu.Lock()
	if got := strings.Join(calls, "|"); got != "s-1 alice 0s|s-1 alice 2h0m0s" {
		t.Errorf("Extend calls %q", got)
	}
	answer = &refusal{status: 400, msg: "session-max-extension-hours: no extension remains (2h of 2h used)"}
	mu.Unlock()
	if status, body := post(ownerTok, "", "", ""); status != 400 || !strings.Contains(body, "session-max-extension-hours") {
		t.Errorf("refused by the broker: %d %q", status, body)
	}
	mu.Lock()
	answer = errors.New("dial tcp 10.0.0.1:8445: connection refused")
	mu.Unlock()
	if status, body := post(ownerTok, "", "", ""); status != 502 || strings.Contains(body, "10.0.0.1") {
		t.Errorf("broker unreachable: %d %q", status, body)
	}

	// Without Extend (a gateway not wired to an agent) the page is told.
	e2 := newEnv(t, lifePerms, 0)
	req, _ := http.NewRequest(http.MethodPost, e2.srv.URL+"/extend?authToken="+url.QueryEscape(e2.broker.token(t, sessID, owner, owner))+"&sessionId="+sessID, nil)
	resp, err := e2.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotImplemented {
		t.Errorf("extend without Config.Extend: %d", resp.StatusCode)
	}
}

// TestNoticeWait: notice-wait answers at once without "after" (or with an
// old version), and otherwise when the session's notice changes, so that
// a page shows the broker's warning within a moment.
func TestNoticeWait(t *testing.T) {
	e := newEnv(t, lifePerms, 0)
	tok := e.broker.token(t, sessID, owner, owner)
	type answer struct {
		Seq    uint64
		Notice map[string]any
	}
	wait := func(after string) (int, answer) {
		q := "/notice-wait?authToken=" + url.QueryEscape(tok) + "&sessionId=" + sessID
		if after != "" {
			q += "&after=" + after
		}
		resp, err := e.srv.Client().Get(e.srv.URL + q)
		if err != nil {
			return 0, answer{}
		}
		defer resp.Body.Close()
		var a answer
		json.NewDecoder(resp.Body).Decode(&a)
		return resp.StatusCode, a
	}
	status, first := wait("")
	if status != 200 || first.Notice != nil {
		t.Fatalf("first wait: %d %+v", status, first)
	}
	got := make(chan answer, 1)
	go func() {
		_, a := wait(strconv.FormatUint(first.Seq, 10))
		got <- a
	}()
	// The waiter is parked until the notice changes.
	e.gw.Notify(sessID, gateway.Notice{Message: "ends in 2 minutes", Deadline: time.Now().Add(2 * time.Minute)})
	select {
	case a := <-got:
		if a.Seq == first.Seq || a.Notice == nil || a.Notice["message"] != "ends in 2 minutes" {
			t.Errorf("woken wait: %+v", a)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("notice-wait did not answer the new notice (it waits 25 s otherwise)")
	}
	// An old version answers at once with the current notice.
	if _, a := wait(strconv.FormatUint(first.Seq, 10)); a.Notice == nil {
		t.Errorf("wait with an old version: %+v", a)
	}
	// The token is checked as for session-info.
	q := "/notice-wait?authToken=bad&sessionId=" + sessID
	if resp, body := e.get(t, q, nil); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("bad token: %d %s", resp.StatusCode, body)
	}
}

// TestPage_ScriptParses: page.js is a valid ES module (node --check), so a
// syntax slip does not reach a browser; skipped where node is missing (the
// e2e tests run the page in Chromium).
func TestPage_ScriptParses(t *testing.T) {
	node, err := exec.LookPath("node")
	if err != nil {
		t.Skip("node is not installed")
	}
	src, err := os.ReadFile("web/page.js")
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "page.mjs")
	if err := os.WriteFile(p, src, 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(node, "--check", p).CombinedOutput(); err != nil {
		t.Fatalf("page.js does not parse: %v\n%s", err, out)
	}
}

package gateway_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/berth-dev/berth/internal/gateway"
	"github.com/berth-dev/berth/internal/poll"
)

// Client messages.
var (
	keyEvent     = []byte{4, 1, 0, 0, 0, 0, 0, 0x61}
	pointerEvent = []byte{5, 1, 0, 10, 0, 20}
	cutText      = []byte{6, 0, 0, 0, 0, 0, 0, 2, 'h', 'i'}
	fbUpdate     = []byte{3, 1, 0, 0, 0, 0, 2, 128, 1, 224}
	setEncodings = []byte{2, 0, 0, 1, 0, 0, 0, 0}
)

func cat(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

func TestServer_Page(t *testing.T) {
	e := newEnv(t, "", 0)
	c := e.srv.Client()
	resp, err := c.Get(e.srv.URL + "/?authToken=x#" + sessID)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(body), `<script type="module" src="page.js?v=`) {
		t.Fatalf("page: %s\n%s", resp.Status, body)
	}
	csp := resp.Header.Get("Content-Security-Policy")
	if !strings.Contains(csp, "script-src 'self';") || resp.Header.Get("Referrer-Policy") != "no-referrer" || resp.Header.Get("Cache-Control") != "no-store" {
		t.Errorf("headers: %v", resp.Header)
	}
	if _, err := os.Stat(gateway.DefaultNoVNCPath + "/core/rfb.js"); err != nil {
		t.Skip("noVNC is not installed (apt-get install novnc)")
	}
	for path, want := range map[string]int{
		"/novnc/core/rfb.js":                     200,
		"/novnc/vendor/pako/lib/zlib/inflate.js": 200,
		"/novnc/core/":                           404,
		"/novnc/../../etc/passwd":                404,
		"/other":                                 404,
	} {
		resp, err := c.Get(e.srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("GET %s: %s, want %d", path, resp.Status, want)
		}
		if want == 200 && !strings.Contains(resp.Header.Get("Content-Type"), "javascript") {
			t.Errorf("GET %s: content type %q", path, resp.Header.Get("Content-Type"))
		}
	}
}

func TestServer_Bridge(t *testing.T) {
	e := newEnv(t, "", 0)
	tok := e.broker.token(t, sessID, owner, owner)
	c, status, body := e.dial(tok, sessID)
	if c == nil {
		t.Fatalf("dial: %d %s", status, body)
	}
	r, w, h, name := handshake(t, c)
	if w != 640 || h != 480 || name != "fake" {
		t.Errorf("server init %dx%d %q", w, h, name)
	}
	if n, _ := e.sessions.count(sessID); n != 1 || e.gw.Connections(sessID) != 1 {
		t.Errorf("connections reported %d", n)
	}
	msgs := cat(setEncodings, keyEvent, pointerEvent, cutText, fbUpdate)
	r.write(msgs)
	poll.Until(t, 5*time.Second, "the messages", func() bool { return bytes.Equal(e.rfb.received(0), msgs) })

	// session-info says the owner has full rights.
	if vo := viewOnly(t, e, tok); vo {
		t.Error("owner is view-only")
	}
	before := time.Now().UTC()
	c.Close(websocket.StatusNormalClosure, "")
	poll.Until(t, 5*time.Second, "the disconnection report", func() bool {
		n, last := e.sessions.count(sessID)
		return n == 0 && !last.Before(before.Truncate(time.Second))
	})
}

// viewOnly asks session-info.
func viewOnly(t *testing.T, e *env, tok string) bool {
	t.Helper()
	resp, err := e.srv.Client().Get(e.srv.URL + "/session-info?authToken=" + tok + "&sessionId=" + sessID)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("session-info: %s %s", resp.Status, b)
	}
	var info struct{ ViewOnly bool }
	if err := json.NewDecoder(resp.Body).Decode(&info); err != nil {
		t.Fatal(err)
	}
	return info.ViewOnly
}

func TestServer_Refused(t *testing.T) {
	e := newEnv(t, "[permissions]\n%owner% allow builtin\nbob allow display\n", 0)
	good := e.broker.token(t, sessID, owner, owner)
	parts := strings.Split(good, ".")
	sig := []byte(parts[2])
	if sig[5] == 'A' {
		sig[5] = 'B'
	} else {
		sig[5] = 'A'
	}
	badSig := parts[0] + "." + parts[1] + "." + string(sig)
	expired, err := e.broker.past.IssueConnectionToken(context.Background(), sessID, owner, owner)
	if err != nil {
		t.Fatal(err)
	}
	other := newBroker(t) // another broker's keys
	cases := []struct {
		name, token, session string
		status               int
		reason               string
	}{
		{"no token", "", sessID, 401, "missing authToken"},
		{"garbage", "not-a-token", sessID, 401, "invalid token"},
		{"bad signature", badSig, sessID, 401, "invalid token"},
		{"expired", expired, sessID, 401, "expired"},
		{"other broker", other.token(t, sessID, owner, owner), sessID, 401, "invalid token"},
		{"other session's token", e.broker.token(t, "s-2", owner, owner), sessID, 403, "not for this session"},
		{"token for the session, asking another", good, "s-2", 403, "not for this session"},
		{"wrong owner", e.broker.token(t, sessID, "mallory", owner), sessID, 403, "not for this session"},
		{"user not allowed", e.broker.token(t, sessID, owner, "carol"), sessID, 403, "not allowed"},
		{"unknown session", e.broker.token(t, "gone", owner, owner), "gone", 404, "session not found"},
		{"no session id", good, "", 400, "missing sessionId"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			conn, status, body := e.dial(c.token, c.session)
			if conn != nil {
				t.Fatal("connected")
			}
			if status != c.status || !strings.Contains(body, c.reason) {
				t.Errorf("websocket: %d %q, want %d %q", status, body, c.status, c.reason)
			}
			if strings.Contains(body, "s-2") && c.session != "s-2" {
				t.Errorf("reason names another session: %q", body)
			}
			resp, err := e.srv.Client().Get(e.srv.URL + "/session-info?authToken=" + c.token + "&sessionId=" + c.session)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != c.status {
				t.Errorf("session-info: %d, want %d", resp.StatusCode, c.status)
			}
		})
	}
	if n := e.rfb.accepted(); n != 0 {
		t.Errorf("refused requests reached the VNC server %d times", n)
	}
	// bob may look.
	if c, status, body := e.dial(e.broker.token(t, sessID, owner, "bob"), sessID); c == nil {
		t.Errorf("bob: %d %s", status, body)
	}
}

func TestServer_MaxClients(t *testing.T) {
	e := newEnv(t, "", 2)
	tok := e.broker.token(t, sessID, owner, owner)
	c1, _, _ := e.dial(tok, sessID)
	c2, _, _ := e.dial(tok, sessID)
	if c1 == nil || c2 == nil {
		t.Fatal("first two refused")
	}
	handshake(t, c1)
	handshake(t, c2)
	c3, status, body := e.dial(tok, sessID)
	if c3 != nil || status != http.StatusServiceUnavailable || !strings.Contains(body, "maximum number of clients") {
		t.Fatalf("third: %d %q", status, body)
	}
	c1.Close(websocket.StatusNormalClosure, "")
	poll.Until(t, 5*time.Second, "the slot to free", func() bool { return e.gw.Connections(sessID) == 1 })
	c4, status, _ := e.dial(tok, sessID)
	if c4 == nil {
		t.Fatalf("after a disconnection: %d", status)
	}
	handshake(t, c4)
}

func TestServer_ViewOnly(t *testing.T) {
	e := newEnv(t, "[permissions]\n%owner% allow builtin\nbob allow display pointer\n", 0)
	tok := e.broker.token(t, sessID, owner, "bob")
	if !viewOnly(t, e, tok) {
		t.Error("bob is not view-only")
	}
	c, status, body := e.dial(tok, sessID)
	if c == nil {
		t.Fatalf("dial: %d %s", status, body)
	}
	r, _, _, _ := handshake(t, c)
	r.write(cat(setEncodings, keyEvent, pointerEvent, cutText, fbUpdate))
	// The last message passes: once it is in, the gateway has dealt with
	// every message before it.
	want := cat(setEncodings, fbUpdate)
	poll.Until(t, 5*time.Second, "the messages", func() bool { return len(e.rfb.received(0)) >= len(want) })
	if got := e.rfb.received(0); !bytes.Equal(got, want) {
		t.Errorf("server got %v, want %v", got, want)
	}
}

func TestServer_PermissionsLive(t *testing.T) {
	e := newEnv(t, "[permissions]\n%owner% allow builtin\nbob allow builtin\n", 0)
	tok := e.broker.token(t, sessID, owner, "bob")
	c, _, _ := e.dial(tok, sessID)
	if c == nil {
		t.Fatal("refused")
	}
	r, _, _, _ := handshake(t, c)
	r.write(cat(keyEvent, fbUpdate))
	poll.Until(t, 5*time.Second, "input to pass", func() bool { return bytes.Equal(e.rfb.received(0), cat(keyEvent, fbUpdate)) })

	// bob loses input: the live connection becomes view-only.
	sess, _ := e.sessions.Session(sessID)
	sess.Permissions = mustPerms(t, "[permissions]\n%owner% allow builtin\nbob allow display\n")
	e.sessions.set(sess)
	r.write(cat(keyEvent, pointerEvent, fbUpdate))
	want := cat(keyEvent, fbUpdate, fbUpdate) // the last passes, after everything before it
	poll.Until(t, 5*time.Second, "the update request", func() bool { return len(e.rfb.received(0)) >= len(want) })
	if got := e.rfb.received(0); !bytes.Equal(got, want) {
		t.Errorf("after the change the server got %v, want %v", got, want)
	}
	if !viewOnly(t, e, tok) {
		t.Error("new connections are not view-only")
	}

	// bob loses display: dropped, and refused from now on.
	sess.Permissions = mustPerms(t, "[permissions]\n%owner% allow builtin\n")
	e.sessions.set(sess)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, _, err := c.Read(ctx)
	if websocket.CloseStatus(err) != websocket.StatusPolicyViolation {
		t.Errorf("read after revocation: %v", err)
	}
	if c, status, _ := e.dial(tok, sessID); c != nil || status != 403 {
		t.Errorf("new connection after revocation: %d", status)
	}
	poll.Until(t, 5*time.Second, "the count to drop", func() bool { n, _ := e.sessions.count(sessID); return n == 0 })
}

func TestServer_SessionDeleted(t *testing.T) {
	e := newEnv(t, "", 0)
	tok := e.broker.token(t, sessID, owner, owner)
	var conns []*websocket.Conn
	for range 3 {
		c, _, _ := e.dial(tok, sessID)
		if c == nil {
			t.Fatal("refused")
		}
		handshake(t, c)
		conns = append(conns, c)
	}
	e.sessions.remove(sessID)
	for _, c := range conns {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, _, err := c.Read(ctx)
		cancel()
		if websocket.CloseStatus(err) != websocket.StatusGoingAway {
			t.Errorf("read after delete: %v", err)
		}
	}
	poll.Until(t, 5*time.Second, "the count to drop", func() bool { n, _ := e.sessions.count(sessID); return n == 0 })
}

func TestServer_PeerCheck(t *testing.T) {
	e := newEnv(t, "", 0)
	sess, _ := e.sessions.Session(sessID)
	sess.PID = 1 // not the process serving the socket
	e.sessions.set(sess)
	c, _, _ := e.dial(e.broker.token(t, sessID, owner, owner), sessID)
	if c == nil {
		t.Fatal("refused before upgrade")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, _, err := c.Read(ctx); websocket.CloseStatus(err) != websocket.StatusTryAgainLater {
		t.Errorf("read: %v", err)
	}
	poll.Until(t, 5*time.Second, "the count to drop", func() bool { return e.gw.Connections(sessID) == 0 })
}

func TestServer_ServeAndClose(t *testing.T) {
	e := newEnv(t, "", 0)
	cert := e.srv.TLS.Certificates[0]
	gw := gateway.New(gateway.Config{
		Certificate: cert,
		Verifier:    e.broker.verifier,
		Sessions:    e.sessions,
		WebURLPath:  "/berth/desktop",
		Logger:      slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- gw.Serve(ctx, ln) }()
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	base := "https://" + ln.Addr().String()
	var resp *http.Response
	poll.Until(t, 5*time.Second, "the server", func() bool {
		resp, err = client.Get(base + "/berth/desktop?authToken=x")
		return err == nil
	})
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.ProtoMajor != 1 {
		t.Errorf("page: %s %s", resp.Status, resp.Proto)
	}
	resp, err = client.Get(base + "/berth/novnc/core/rfb.js")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("novnc under the page's directory: %v %v", resp, err)
	}
	resp.Body.Close()
	// A bridged connection ends with Close.
	wctx, wcancel := context.WithTimeout(ctx, 5*time.Second)
	defer wcancel()
	c, _, err := websocket.Dial(wctx, "wss://"+ln.Addr().String()+"/berth/websockify?authToken="+e.broker.token(t, sessID, owner, owner)+"&sessionId="+sessID,
		&websocket.DialOptions{HTTPClient: client})
	if err != nil {
		t.Fatal(err)
	}
	r, _, _, _ := handshake(t, c)
	// A connection the client dialled but sent no request on would hold
	// Close's Shutdown for its 5 s.
	client.CloseIdleConnections()
	closed := make(chan struct{})
	go func() {
		gw.Close()
		close(closed)
	}()
	// NetConn reads a going-away close frame as io.EOF; a cut connection
	// would be another error.
	r.nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := r.nc.Read(make([]byte, 1)); err != io.EOF {
		t.Errorf("read after Close: %v", err)
	}
	<-closed
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Serve: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return")
	}
	if err := gw.Serve(context.Background(), ln); err == nil {
		t.Error("Serve after Close")
	}
	if err := gateway.New(gateway.Config{}).Serve(ctx, ln); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Errorf("Serve without a certificate: %v", err)
	}
}

package dcvauth

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/berth-dev/berth/internal/broker"
	"github.com/berth-dev/berth/internal/oauth"
	"github.com/berth-dev/berth/internal/sqlite"
)

// sessionTable is the broker's view of a few sessions, as
// broker.Service.SessionForConnection gives it.
type sessionTable map[string]*broker.SessionView

func (t sessionTable) SessionForConnection(_ context.Context, id string) (*broker.SessionView, error) {
	if v, ok := t[id]; ok {
		return v, nil
	}
	return nil, broker.Errorf(broker.CodeNotFound, "session %q does not exist", id)
}

func session(id, owner, state, serverIP, perms string) *broker.SessionView {
	return &broker.SessionView{
		Session: &broker.Session{ID: id, Owner: owner, State: state, Spec: broker.SessionSpec{PermissionsFile: perms}},
		Server:  &broker.Server{ID: "srv-" + id, Info: broker.ServerInfo{IP: serverIP}},
	}
}

// authority is a real token authority on a SQLite store.
func authority(t *testing.T) *oauth.Authority {
	t.Helper()
	ctx := context.Background()
	st, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "berth.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	a := oauth.New(st, "berth-broker")
	if err := a.EnsureKey(ctx); err != nil {
		t.Fatal(err)
	}
	return a
}

func token(t *testing.T, a *oauth.Authority, session, owner, user string) string {
	t.Helper()
	tok, err := a.IssueConnectionToken(context.Background(), session, owner, user)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// serve runs h on a loopback HTTP server and returns its URL.
func serve(t *testing.T, h http.Handler) string {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv.URL
}

// clientFrom is an HTTP client whose connections come from the loopback
// address from (127.0.0.x).
func clientFrom(from string) *http.Client {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}}
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DialContext: d.DialContext}}
}

// post posts a verification form and returns the status and body.
func post(t *testing.T, hc *http.Client, base string, form url.Values) (int, string) {
	t.Helper()
	return postRaw(t, hc, base, form.Encode())
}

func postRaw(t *testing.T, hc *http.Client, base, body string) (int, string) {
	t.Helper()
	resp, err := hc.Post(base+"/agent/validate-authentication-token", "application/x-www-form-urlencoded", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/xml") {
		t.Fatalf("content type %q", ct)
	}
	return resp.StatusCode, string(b)
}

const yesAlice = `<auth result="yes"><username>alice</username></auth>`

func noMsg(msg string) string { return `<auth result="no"><message>` + msg + `</message></auth>` }

func loopback() []netip.Prefix { return []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")} }

func TestHandler_Answers(t *testing.T) {
	a := authority(t)
	revoked := "[permissions]\n%owner% allow builtin\n"
	shared := "[permissions]\n%owner% allow builtin\ncarol allow display\n"
	sessions := sessionTable{
		"s-alice":   session("s-alice", "alice", broker.StateReady, "", ""),
		"s-bob":     session("s-bob", "bob", broker.StateReady, "", ""),
		"s-shared":  session("s-shared", "alice", broker.StateReady, "", shared),
		"s-revoked": session("s-revoked", "alice", broker.StateReady, "", revoked),
		"s-gone":    session("s-gone", "alice", broker.StateDeleting, "", ""),
		"s-odd":     session("s-odd", `a<b&"c"`, broker.StateReady, "", ""),
	}
	h := New(Config{Tokens: a, Sessions: sessions, Allowed: loopback(), Logger: slog.New(slog.DiscardHandler)})
	base := serve(t, h)
	hc := clientFrom("127.0.0.1")

	good := token(t, a, "s-alice", "alice", "alice")
	past := oauth.New(a.Store, "berth-broker")
	past.Now = func() time.Time { return time.Now().Add(-2 * time.Hour) }
	expired, err := past.IssueConnectionToken(context.Background(), "s-alice", "alice", "alice")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		form url.Values
		want string
	}{
		{"good", url.Values{"sessionId": {"s-alice"}, "authenticationToken": {good}, "clientAddress": {"10.0.0.1"}}, yesAlice},
		{"no client address", url.Values{"sessionId": {"s-alice"}, "authenticationToken": {good}}, yesAlice},
		{"another allowed user", url.Values{"sessionId": {"s-shared"}, "authenticationToken": {token(t, a, "s-shared", "alice", "carol")}},
			`<auth result="yes"><username>carol</username></auth>`},
		{"escaped user", url.Values{"sessionId": {"s-odd"}, "authenticationToken": {token(t, a, "s-odd", `a<b&"c"`, `a<b&"c"`)}},
			`<auth result="yes"><username>a&lt;b&amp;&#34;c&#34;</username></auth>`},
		// The attack of finding 8: a token issued for another owner's
		// session of the same ID (a session ID used again), for a user the
		// present session's permissions let in.
		{"token of another owner", url.Values{"sessionId": {"s-shared"}, "authenticationToken": {token(t, a, "s-shared", "bob", "carol")}},
			noMsg("the token is for another owner")},
		// Permissions changed after the token was issued.
		{"user no longer allowed", url.Values{"sessionId": {"s-revoked"}, "authenticationToken": {token(t, a, "s-revoked", "alice", "carol")}},
			noMsg("the session&#39;s permissions do not let the user connect")},
		{"other session", url.Values{"sessionId": {"s-bob"}, "authenticationToken": {good}}, noMsg("the token is for another session")},
		{"not READY", url.Values{"sessionId": {"s-gone"}, "authenticationToken": {token(t, a, "s-gone", "alice", "alice")}},
			noMsg("the session is DELETING, not READY")},
		{"unknown session", url.Values{"sessionId": {"nope"}, "authenticationToken": {token(t, a, "nope", "alice", "alice")}},
			noMsg("the session does not exist")},
		{"expired", url.Values{"sessionId": {"s-alice"}, "authenticationToken": {expired}}, noMsg("authentication token refused: token expired")},
		{"malformed token", url.Values{"sessionId": {"s-alice"}, "authenticationToken": {"not.a.jwt"}}, noMsg("authentication token refused: malformed token")},
		{"missing session", url.Values{"authenticationToken": {good}}, noMsg("sessionId is required")},
		{"missing token", url.Values{"sessionId": {"s-alice"}}, noMsg("authenticationToken is required")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, body := post(t, hc, base, tc.form)
			if code != http.StatusOK || body != tc.want {
				t.Fatalf("status %d, body %q; want 200, %q", code, body, tc.want)
			}
		})
	}
	for _, raw := range []string{"%zz=1&sessionId=x", strings.Repeat("a", MaxBody+10), ""} {
		if code, body := postRaw(t, hc, base, raw); code != http.StatusOK || !strings.HasPrefix(body, `<auth result="no"><message>`) {
			t.Fatalf("body of %d bytes: status %d, %q", len(raw), code, body)
		}
	}
}

// TestHandler_RateLimitByRemoteAddress rotates the posted clientAddress, as
// the review's attack did: the bucket is the connection's address, so the
// rotation gains nothing.
func TestHandler_RateLimitByRemoteAddress(t *testing.T) {
	a := authority(t)
	now := time.Unix(1_000_000, 0) // frozen: no token comes back during the test
	h := New(Config{Tokens: a, Sessions: sessionTable{"s-alice": session("s-alice", "alice", broker.StateReady, "", "")},
		Allowed: loopback(), Rate: 20, Burst: 40, Now: func() time.Time { return now }, Logger: slog.New(slog.DiscardHandler)})
	base := serve(t, h)
	good := token(t, a, "s-alice", "alice", "alice")
	hc := clientFrom("127.0.0.2")
	yes, limited := 0, 0
	for i := range 100 {
		form := url.Values{"sessionId": {"s-alice"}, "authenticationToken": {good}, "clientAddress": {"198.51.100." + strconv.Itoa(i)}}
		code, body := post(t, hc, base, form)
		switch {
		case code == http.StatusOK && body == yesAlice:
			yes++
		case code == http.StatusOK && body == noMsg("too many requests"):
			limited++
		default:
			t.Fatalf("status %d, body %q", code, body)
		}
	}
	if yes != 40 || limited != 60 {
		t.Fatalf("%d accepted and %d rate limited out of 100 with rotating clientAddress; want 40 (the burst) and 60", yes, limited)
	}
	// Another caller has its own bucket.
	if _, body := post(t, clientFrom("127.0.0.3"), base, url.Values{"sessionId": {"s-alice"}, "authenticationToken": {good}}); body != yesAlice {
		t.Fatalf("another caller: %q", body)
	}
}

// TestHandler_CallerNotAllowed calls from an address outside the allowed
// networks.
func TestHandler_CallerNotAllowed(t *testing.T) {
	a := authority(t)
	h := New(Config{Tokens: a, Sessions: sessionTable{"s-alice": session("s-alice", "alice", broker.StateReady, "", "")},
		Allowed: []netip.Prefix{netip.MustParsePrefix("127.0.0.2/32")}, Logger: slog.New(slog.DiscardHandler)})
	base := serve(t, h)
	form := url.Values{"sessionId": {"s-alice"}, "authenticationToken": {token(t, a, "s-alice", "alice", "alice")}}
	if code, body := post(t, clientFrom("127.0.0.2"), base, form); code != http.StatusOK || body != yesAlice {
		t.Fatalf("allowed caller: status %d, %q", code, body)
	}
	for _, f := range []url.Values{form, {"sessionId": {"nope"}}, {}} {
		code, body := post(t, clientFrom("127.0.0.3"), base, f)
		if code != http.StatusForbidden || body != noMsg("this address may not verify DCV tokens") {
			t.Fatalf("caller outside the allowed networks, form %v: status %d, %q", f, code, body)
		}
	}
}

// TestHandler_Servers lets DCV servers in by what the broker knows of them:
// the address the session's server reports, and the address of a live
// agent link.
func TestHandler_Servers(t *testing.T) {
	a := authority(t)
	h := New(Config{Tokens: a, Servers: true, Logger: slog.New(slog.DiscardHandler),
		Sessions: sessionTable{
			"s-alice": session("s-alice", "alice", broker.StateReady, "127.0.0.5", ""),
			"s-ep": {Session: &broker.Session{ID: "s-ep", Owner: "alice", State: broker.StateReady},
				Server: &broker.Server{Info: broker.ServerInfo{IP: "10.1.1.1", Endpoints: []broker.Endpoint{{IPAddress: "127.0.0.7", Port: 8443}}}}},
		}})
	linkUp := make(chan struct{})
	mux := http.NewServeMux()
	mux.Handle("/agent/validate-authentication-token", h)
	mux.Handle("/agent/connect", h.TrackLinks(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		linkUp <- struct{}{}
		// Served after the handler returns, as the hub serves its links.
		go func() {
			_, _, _ = c.Read(context.Background()) // until the agent closes
			c.CloseNow()
		}()
	})))
	base := serve(t, mux)
	alice := url.Values{"sessionId": {"s-alice"}, "authenticationToken": {token(t, a, "s-alice", "alice", "alice")}}
	ep := url.Values{"sessionId": {"s-ep"}, "authenticationToken": {token(t, a, "s-ep", "alice", "alice")}}
	check := func(from string, form url.Values, wantCode int, want string) {
		t.Helper()
		if code, body := post(t, clientFrom(from), base, form); code != wantCode || body != want {
			t.Fatalf("from %s for %s: status %d, %q; want %d, %q", from, form.Get("sessionId"), code, body, wantCode, want)
		}
	}
	forbidden := noMsg("this address may not verify DCV tokens")
	check("127.0.0.5", alice, http.StatusOK, yesAlice)                // the session's server
	check("127.0.0.7", ep, http.StatusOK, yesAlice)                   // an endpoint of the session's server
	check("127.0.0.5", ep, http.StatusForbidden, forbidden)           // another server's session
	check("127.0.0.6", alice, http.StatusForbidden, forbidden)        // nobody the broker knows
	check("127.0.0.6", url.Values{}, http.StatusForbidden, forbidden) // nothing posted

	// An agent links from 127.0.0.6: its host may verify while linked.
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.6")}}
	ws, _, err := websocket.Dial(context.Background(), "ws"+strings.TrimPrefix(base, "http")+"/agent/connect",
		&websocket.DialOptions{HTTPClient: &http.Client{Transport: &http.Transport{DialContext: d.DialContext}}})
	if err != nil {
		t.Fatal(err)
	}
	<-linkUp
	check("127.0.0.6", alice, http.StatusOK, yesAlice)
	ws.Close(websocket.StatusNormalClosure, "")
	deadline := time.Now().Add(10 * time.Second)
	for h.linked(netip.MustParseAddr("127.0.0.6")) {
		if time.Now().After(deadline) {
			t.Fatal("the closed link still counts")
		}
		time.Sleep(10 * time.Millisecond)
	}
	check("127.0.0.6", alice, http.StatusForbidden, forbidden)
}

// TestHandler_RefusalLogVolume sends 1,000 refused verifications, with
// rotating clientAddress, and counts the log: one info line per caller per
// LogEvery, the details at debug only.
func TestHandler_RefusalLogVolume(t *testing.T) {
	a := authority(t)
	var mu sync.Mutex
	var info, debug bytes.Buffer
	now := time.Unix(1_000_000, 0)
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	logger := slog.New(teeHandler{
		slog.NewTextHandler(&lockedWriter{w: &info, mu: &mu}, &slog.HandlerOptions{Level: slog.LevelInfo}),
		slog.NewTextHandler(&lockedWriter{w: &debug, mu: &mu}, &slog.HandlerOptions{Level: slog.LevelDebug}),
	})
	h := New(Config{Tokens: a, Sessions: sessionTable{"s-alice": session("s-alice", "alice", broker.StateReady, "", "")},
		Allowed: loopback(), Rate: 1000, Burst: 2000, Now: clock, Logger: logger})
	base := serve(t, h)
	hc := clientFrom("127.0.0.2")
	for i := range 1000 {
		form := url.Values{"sessionId": {"s-alice"}, "authenticationToken": {"bad.token." + strconv.Itoa(i)}, "clientAddress": {"198.51.100." + strconv.Itoa(i%250)}}
		if _, body := post(t, hc, base, form); !strings.HasPrefix(body, `<auth result="no">`) {
			t.Fatalf("refusal %d: %q", i, body)
		}
	}
	mu.Lock()
	now = now.Add(DefaultLogEvery)
	mu.Unlock()
	post(t, hc, base, url.Values{"sessionId": {"s-alice"}, "authenticationToken": {"bad"}})
	mu.Lock()
	infoText, debugLines := info.String(), strings.Count(debug.String(), "dcv token refused")
	mu.Unlock()
	lines := strings.Split(strings.TrimSpace(infoText), "\n")
	t.Logf("1,001 refusals: %d info lines (%d bytes), %d debug lines", len(lines), len(infoText), debugLines)
	if len(lines) != 2 || !strings.Contains(lines[0], "count=1 ") || !strings.Contains(lines[1], "count=1000 ") {
		t.Fatalf("info log of 1,001 refusals:\n%s", infoText)
	}
	if debugLines != 1001 {
		t.Fatalf("%d debug lines, want one per refusal", debugLines)
	}
	if strings.Contains(infoText+debug.String(), "bad.token") {
		t.Fatal("a token reached the log")
	}
}

// TestHandler_CallersBounded calls from more networks than MaxCallers.
func TestHandler_CallersBounded(t *testing.T) {
	a := authority(t)
	h := New(Config{Tokens: a, Sessions: sessionTable{}, Allowed: loopback(), Rate: 1, Burst: 1, MaxCallers: 3, Logger: slog.New(slog.DiscardHandler)})
	base := serve(t, h)
	for i := 2; i < 10; i++ {
		post(t, clientFrom("127.0.0."+strconv.Itoa(i)), base, url.Values{})
		if n := h.callerCount(); n > 3 {
			t.Fatalf("%d callers remembered, bound 3", n)
		}
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

// teeHandler sends each record to every handler that takes its level.
type teeHandler []slog.Handler

func (t teeHandler) Enabled(ctx context.Context, l slog.Level) bool {
	for _, h := range t {
		if h.Enabled(ctx, l) {
			return true
		}
	}
	return false
}

func (t teeHandler) Handle(ctx context.Context, r slog.Record) error {
	for _, h := range t {
		if h.Enabled(ctx, r.Level) {
			_ = h.Handle(ctx, r.Clone())
		}
	}
	return nil
}

func (t teeHandler) WithAttrs(as []slog.Attr) slog.Handler {
	out := make(teeHandler, len(t))
	for i, h := range t {
		out[i] = h.WithAttrs(as)
	}
	return out
}

func (t teeHandler) WithGroup(g string) slog.Handler {
	out := make(teeHandler, len(t))
	for i, h := range t {
		out[i] = h.WithGroup(g)
	}
	return out
}

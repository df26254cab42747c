package portal

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"image"
	"image/color"
	"image/png"
	"io"
	"log/slog"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/broker"
	"github.com/berth-dev/berth/internal/oauth"
	"github.com/berth-dev/berth/internal/poll"
	"github.com/berth-dev/berth/internal/sqlite"
)

// userAgents answers commands as agents do: screenshots are a real PNG,
// other commands succeed. It counts screenshots.
type userAgents struct {
	shots atomic.Int64
	png   []byte
}

func newUserAgents(tb testing.TB) *userAgents {
	img := image.NewRGBA(image.Rect(0, 0, 16, 10))
	for i := range img.Pix {
		img.Pix[i] = 0xff
	}
	img.Set(3, 3, color.RGBA{R: 0x11, A: 0xff})
	var b bytes.Buffer
	if err := png.Encode(&b, img); err != nil {
		tb.Fatal(err)
	}
	return &userAgents{png: b.Bytes()}
}

func (a *userAgents) Dispatch(ctx context.Context, serverID string, cmd broker.Command) (*broker.Result, error) {
	if cmd.Kind == broker.CommandScreenshot {
		a.shots.Add(1)
		return &broker.Result{Images: []broker.Image{{Format: "png", Data: a.png, CreationTime: time.Now(), Primary: true}}}, nil
	}
	return &broker.Result{}, nil
}

// testClock is a clock a test moves.
type testClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *testClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *testClock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// userEnv is a portal on a real broker core, a real SQLite store and the
// broker's real token authority, served over HTTPS on loopback in front of
// another handler (as berth-broker mounts it before the API).
type userEnv struct {
	st     *sqlite.Store
	svc    *broker.Service
	portal *Portal
	srv    *httptest.Server
	agents *userAgents
	clock  *testClock
}

func newUserEnv(tb testing.TB, edit func(*Config)) *userEnv {
	tb.Helper()
	ctx := context.Background()
	st, err := sqlite.Open(ctx, filepath.Join(tb.TempDir(), "berth.db"))
	if err != nil {
		tb.Fatal(err)
	}
	auth := oauth.New(st, oauth.BrokerIssuer)
	if err := auth.EnsureKey(ctx); err != nil {
		tb.Fatal(err)
	}
	log := slog.New(slog.DiscardHandler)
	agents := newUserAgents(tb)
	svc, err := broker.New(ctx, st, agents, auth, broker.Config{BrokerID: "user-test", HeartbeatTimeout: time.Hour}, log)
	if err != nil {
		tb.Fatal(err)
	}
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { _ = svc.Run(rctx); close(done) }()
	tb.Cleanup(func() { cancel(); <-done; st.Close() })
	clock := &testClock{t: time.Now()}
	cfg := Config{Service: svc, Store: st, AdminGroup: "berth-admins", Logger: log, Now: clock.Now}
	if edit != nil {
		edit(&cfg)
	}
	p, err := New(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle("/portal/", p.Handler())
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) { http.Error(w, "the API", http.StatusTeapot) })
	srv := httptest.NewTLSServer(mux)
	tb.Cleanup(srv.Close)
	return &userEnv{st: st, svc: svc, portal: p, srv: srv, agents: agents, clock: clock}
}

// addServer links a server as its agent does.
func (e *userEnv) addServer(tb testing.TB, id string) {
	tb.Helper()
	info := broker.ServerInfo{Hostname: "host-" + id, IP: "10.0.0.7", Port: 8444, WebURLPath: "/", Version: "2024.0", AgentVersion: "test",
		Driver: "sim", Healthy: true, Endpoints: []broker.Endpoint{{IPAddress: "10.0.0.7", Port: 8444, WebURLPath: "/", Protocol: "HTTP"}},
		Host: broker.Host{OSFamily: "linux", OSName: "Debian GNU/Linux", OSVersion: "12", MemTotal: 16 << 30}}
	if err := e.svc.AgentConnected(context.Background(), "", id, info, nil); err != nil {
		tb.Fatal(err)
	}
}

// readySession stores a READY session of owner on server (as after the
// agent reported it running).
func (e *userEnv) readySession(tb testing.TB, id, name, owner, server string) {
	tb.Helper()
	now := time.Now().UTC().Truncate(time.Millisecond)
	if err := e.st.InsertSessions(context.Background(), []*broker.Session{{ID: id, Name: name, Owner: owner, Type: broker.TypeVirtual,
		ServerID: server, State: broker.StateReady, CreationTime: now, UpdatedAt: now}}); err != nil {
		tb.Fatal(err)
	}
}

// browser is a client of the portal with a cookie jar that does not follow
// redirects.
type browser struct {
	e    *userEnv
	hc   *http.Client
	csrf string
}

func (e *userEnv) browser() *browser {
	jar, _ := cookiejar.New(nil)
	c := *e.srv.Client()
	c.Jar = jar
	c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	return &browser{e: e, hc: &c}
}

// signIn signs user in with a portal link and reads its CSRF token.
func (e *userEnv) signIn(tb testing.TB, user string, groups ...string) *browser {
	tb.Helper()
	tok, err := CreateLink(context.Background(), e.st, user, groups, false, time.Minute, e.clock.Now())
	if err != nil {
		tb.Fatal(err)
	}
	b := e.browser()
	if resp, body := b.do(tb, "POST", "/portal/link", url.Values{"token": {tok}}, nil); resp.StatusCode != http.StatusSeeOther {
		tb.Fatalf("sign in by link: %s\n%.300s", resp.Status, body)
	}
	_, body := b.do(tb, "GET", "/portal/", nil, nil)
	m := regexp.MustCompile(`name="csrf" value="([^"]+)"`).FindStringSubmatch(body)
	if m == nil {
		tb.Fatalf("no CSRF token in My sessions of %s:\n%.500s", user, body)
	}
	b.csrf = m[1]
	return b
}

// do sends a request; a form is posted with the portal's own Origin unless
// hdr sets another. It returns the answer and its body.
func (b *browser) do(tb testing.TB, method, path string, form url.Values, hdr map[string]string) (*http.Response, string) {
	tb.Helper()
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, err := http.NewRequest(method, b.e.srv.URL+path, body)
	if err != nil {
		tb.Fatal(err)
	}
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.Header.Set("Origin", b.e.srv.URL)
	}
	for k, v := range hdr {
		if v == "" {
			req.Header.Del(k)
		} else {
			req.Header.Set(k, v)
		}
	}
	resp, err := b.hc.Do(req)
	if err != nil {
		tb.Fatal(err)
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(resp.Body)
	if err != nil {
		tb.Fatal(err)
	}
	return resp, string(out)
}

// post posts form with the browser's CSRF token.
func (b *browser) post(tb testing.TB, path string, form url.Values) (*http.Response, string) {
	tb.Helper()
	if form == nil {
		form = url.Values{}
	}
	form.Set("csrf", b.csrf)
	return b.do(tb, "POST", path, form, nil)
}

// sessions is the script's view of My sessions.
func (b *browser) sessions(tb testing.TB) []sessionItem {
	tb.Helper()
	resp, body := b.do(tb, "GET", "/portal/api/sessions", nil, nil)
	if resp.StatusCode != http.StatusOK {
		tb.Fatalf("GET /portal/api/sessions: %s %s", resp.Status, body)
	}
	var d struct{ Sessions []sessionItem }
	if err := json.Unmarshal([]byte(body), &d); err != nil {
		tb.Fatal(err)
	}
	return d.Sessions
}

func TestPortal_CSPOnEveryPage(t *testing.T) {
	e := newUserEnv(t, nil)
	e.addServer(t, "s1")
	e.readySession(t, "sess-a", "desk", "ann", "s1")
	anon := e.browser()
	ann := e.signIn(t, "ann")
	css := e.portal.assets["portal.css"]
	js := e.portal.assets["portal.js"]
	tests := []struct {
		b      *browser
		method string
		path   string
		status int
	}{
		{anon, "GET", "/portal/signin", 200},
		{anon, "GET", "/portal/", 303},
		{anon, "GET", "/portal/link?token=abc", 200},
		{anon, "GET", "/portal/link", 400},
		{anon, "GET", "/portal/login", 404},
		{anon, "GET", "/portal/api/sessions", 401},
		{anon, "GET", "/portal/nothing-here", 404},
		{anon, "GET", css, 200},
		{anon, "GET", js, 200},
		{anon, "GET", "/portal/static/portal.css", 404},
		{ann, "GET", "/portal/", 200},
		{ann, "GET", "/portal/api/sessions", 200},
		{ann, "GET", "/portal/sessions/sess-a/thumbnail", 200},
		{ann, "GET", "/portal/sessions/sess-a/connect", 303},
		{ann, "GET", "/portal/sessions/nope/connect", 404},
		{ann, "POST", "/portal/sessions/sess-a/delete", 403},
		{anon, "POST", "/portal/logout", 200},
	}
	for _, tt := range tests {
		t.Run(tt.method+" "+tt.path, func(t *testing.T) {
			var form url.Values
			if tt.method == "POST" {
				form = url.Values{}
			}
			resp, body := tt.b.do(t, tt.method, tt.path, form, nil)
			if resp.StatusCode != tt.status {
				t.Errorf("status %s, want %d\n%.300s", resp.Status, tt.status, body)
			}
			if got := resp.Header.Get("Content-Security-Policy"); got != CSP {
				t.Errorf("Content-Security-Policy %q, want %q", got, CSP)
			}
			if resp.Header.Get("X-Content-Type-Options") != "nosniff" || resp.Header.Get("Referrer-Policy") != "same-origin" {
				t.Errorf("headers %v", resp.Header)
			}
			if strings.Contains(resp.Header.Get("Content-Type"), "text/html") {
				for _, bad := range []string{"<script>", " style=", "<style", " onclick=", " onload=", "javascript:"} {
					if strings.Contains(body, bad) {
						t.Errorf("page holds inline %q", bad)
					}
				}
			}
		})
	}
}

func TestPortal_LinkSingleUseAndExpiry(t *testing.T) {
	e := newUserEnv(t, nil)
	ctx := context.Background()
	tok, err := CreateLink(ctx, e.st, "ann", []string{"users"}, false, 5*time.Minute, e.clock.Now())
	if err != nil {
		t.Fatal(err)
	}
	b := e.browser()
	// Fetching the link (a mail scanner, a chat preview) does not use it.
	for range 2 {
		if resp, body := b.do(t, "GET", "/portal/link?token="+tok, nil, nil); resp.StatusCode != 200 || !strings.Contains(body, `value="`+tok+`"`) {
			t.Fatalf("GET link: %s\n%.300s", resp.Status, body)
		}
	}
	resp, _ := b.do(t, "POST", "/portal/link", url.Values{"token": {tok}}, nil)
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/portal/" {
		t.Fatalf("first use: %s -> %q, want 303 to /portal/", resp.Status, resp.Header.Get("Location"))
	}
	if _, body := b.do(t, "GET", "/portal/", nil, nil); !strings.Contains(body, "My sessions") || !strings.Contains(body, "ann") {
		t.Fatalf("signed in page:\n%.500s", body)
	}
	// Used: refused, in another browser too.
	other := e.browser()
	resp, body := other.do(t, "POST", "/portal/link", url.Values{"token": {tok}}, nil)
	if resp.StatusCode != http.StatusGone || !strings.Contains(body, "already used or has expired") || !strings.Contains(body, "portal-link") {
		t.Fatalf("second use: %s\n%.500s", resp.Status, body)
	}
	if len(resp.Cookies()) != 0 {
		t.Errorf("second use set cookies %v", resp.Cookies())
	}
	// Expired: refused, and not usable afterwards either.
	tok2, err := CreateLink(ctx, e.st, "ann", nil, false, 2*time.Minute, e.clock.Now())
	if err != nil {
		t.Fatal(err)
	}
	e.clock.Add(2*time.Minute + time.Second)
	if resp, body := other.do(t, "POST", "/portal/link", url.Values{"token": {tok2}}, nil); resp.StatusCode != http.StatusGone {
		t.Fatalf("expired link: %s\n%.300s", resp.Status, body)
	}
	// A link from another site is refused before it is used.
	tok3, err := CreateLink(ctx, e.st, "ann", nil, false, time.Minute, e.clock.Now())
	if err != nil {
		t.Fatal(err)
	}
	if resp, _ := other.do(t, "POST", "/portal/link", url.Values{"token": {tok3}}, map[string]string{"Origin": "https://evil.example"}); resp.StatusCode != http.StatusForbidden {
		t.Fatalf("cross-site link sign-in: %s, want 403", resp.Status)
	}
	if resp, _ := other.do(t, "POST", "/portal/link", url.Values{"token": {tok3}}, nil); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("the link after a refused cross-site use: %s, want 303", resp.Status)
	}
	// Bad input names the problem.
	for _, bad := range []struct{ user, why string }{{"", "user"}, {"../root", "user"}, {"a b", "user"}} {
		if _, err := CreateLink(ctx, e.st, bad.user, nil, false, time.Minute, e.clock.Now()); err == nil || !strings.Contains(err.Error(), bad.why) {
			t.Errorf("CreateLink(%q) = %v, want an error naming %s", bad.user, err, bad.why)
		}
	}
	if _, err := CreateLink(ctx, e.st, "ann", nil, false, 48*time.Hour, e.clock.Now()); err == nil || !strings.Contains(err.Error(), "expires-in") {
		t.Errorf("CreateLink 48h = %v, want an error naming expires-in", err)
	}
}

func TestPortal_CookieAttributes(t *testing.T) {
	e := newUserEnv(t, func(c *Config) { c.SessionLifetime = 90 * time.Minute })
	tok, err := CreateLink(context.Background(), e.st, "ann", nil, false, time.Minute, e.clock.Now())
	if err != nil {
		t.Fatal(err)
	}
	resp, _ := e.browser().do(t, "POST", "/portal/link", url.Values{"token": {tok}}, nil)
	var c *http.Cookie
	for _, x := range resp.Cookies() {
		if x.Name == sessionCookie {
			c = x
		}
	}
	if c == nil {
		t.Fatalf("no %s cookie in %v", sessionCookie, resp.Header["Set-Cookie"])
	}
	raw := resp.Header.Get("Set-Cookie")
	if !c.HttpOnly || !c.Secure || c.SameSite != http.SameSiteLaxMode || c.Path != "/portal/" || c.MaxAge != 90*60 {
		t.Errorf("cookie %q: want HttpOnly, Secure, SameSite=Lax, Path=/portal/, Max-Age=5400", raw)
	}
	if len(c.Value) < 43 {
		t.Errorf("cookie value %q is shorter than 256 bits", c.Value)
	}
	// The store keeps the hash, not the value.
	if _, _, err := e.st.PortalSession(context.Background(), []byte(c.Value)); !errors.Is(err, broker.ErrNotFound) {
		t.Errorf("the store knows the raw cookie value: %v", err)
	}
	data, exp, err := e.st.PortalSession(context.Background(), hashKey("session", c.Value))
	if err != nil || bytes.Contains(data, []byte(c.Value)) {
		t.Fatalf("stored session: %v %s", err, data)
	}
	if d := exp.Sub(e.clock.Now()); d < 89*time.Minute || d > 90*time.Minute {
		t.Errorf("stored expiry in %s, want 90m", d)
	}
}

func TestPortal_SessionExpiryAndLogout(t *testing.T) {
	e := newUserEnv(t, func(c *Config) { c.SessionLifetime = 10 * time.Minute })
	ann := e.signIn(t, "ann")
	if resp, _ := ann.do(t, "GET", "/portal/", nil, nil); resp.StatusCode != 200 {
		t.Fatalf("signed in: %s", resp.Status)
	}
	e.clock.Add(11 * time.Minute)
	if resp, _ := ann.do(t, "GET", "/portal/", nil, nil); resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/portal/signin" {
		t.Fatalf("expired session: %s %q, want 303 to the sign-in page", resp.Status, resp.Header.Get("Location"))
	}
	if n, err := e.st.PurgePortal(context.Background(), e.clock.Now()); err != nil || n < 1 {
		t.Fatalf("PurgePortal = %d, %v; want the expired session purged", n, err)
	}
	// Sign-out deletes the session from the store, not just the cookie.
	bob := e.signIn(t, "bob")
	cookie := bob.hc.Jar.Cookies(mustURL(t, e.srv.URL+"/portal/"))
	if resp, body := bob.do(t, "POST", "/portal/logout", url.Values{}, nil); resp.StatusCode != http.StatusForbidden {
		t.Fatalf("logout without the CSRF token: %s, want 403\n%.300s", resp.Status, body)
	}
	if resp, body := bob.post(t, "/portal/logout", nil); resp.StatusCode != 200 || !strings.Contains(body, "signed out") {
		t.Fatalf("logout: %s\n%.300s", resp.Status, body)
	}
	replay := e.browser()
	replay.hc.Jar.SetCookies(mustURL(t, e.srv.URL+"/portal/"), cookie)
	if resp, _ := replay.do(t, "GET", "/portal/api/sessions", nil, nil); resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("the signed-out cookie replayed: %s, want 401", resp.Status)
	}
}

func mustURL(tb testing.TB, s string) *url.URL {
	u, err := url.Parse(s)
	if err != nil {
		tb.Fatal(err)
	}
	return u
}

func TestPortal_CSRF(t *testing.T) {
	e := newUserEnv(t, nil)
	e.addServer(t, "s1")
	e.readySession(t, "sess-a", "desk", "ann", "s1")
	ann := e.signIn(t, "ann")
	path := "/portal/sessions/sess-a/delete"
	tests := []struct {
		name string
		form url.Values
		hdr  map[string]string
		want string
	}{
		{"cross-site post without the token", url.Values{}, map[string]string{"Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site"}, "another site"},
		{"same-origin post without the token", url.Values{}, nil, "csrf"},
		{"a wrong token", url.Values{"csrf": {"x" + ann.csrf}}, nil, "csrf"},
		{"the token from another site", url.Values{"csrf": {ann.csrf}}, map[string]string{"Origin": "https://evil.example"}, "another site"},
		{"the token, same-site but not same-origin", url.Values{"csrf": {ann.csrf}}, map[string]string{"Sec-Fetch-Site": "same-site"}, "another site"},
		{"the token with Origin null", url.Values{"csrf": {ann.csrf}}, map[string]string{"Origin": "null"}, "another site"},
		{"another user's token", url.Values{"csrf": {e.signIn(t, "bob").csrf}}, nil, "csrf"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, body := ann.do(t, "POST", path, tt.form, tt.hdr)
			if resp.StatusCode != http.StatusForbidden || !strings.Contains(body, tt.want) {
				t.Fatalf("%s, want 403 naming %q\n%.400s", resp.Status, tt.want, body)
			}
		})
	}
	if s, err := e.st.GetSession(context.Background(), "sess-a"); err != nil || s.State != broker.StateReady {
		t.Fatalf("after refused posts the session is %v %v, want READY", s, err)
	}
	// The script's header carries the token as well as the form field.
	resp, body := ann.do(t, "POST", path, url.Values{}, map[string]string{csrfHeader: ann.csrf, "Accept": "application/json"})
	if resp.StatusCode != 200 || !strings.Contains(body, `"deleted"`) {
		t.Fatalf("delete with the header token: %s %s", resp.Status, body)
	}
	if s, err := e.st.GetSession(context.Background(), "sess-a"); err != nil || s.State != broker.StateDeleting && s.State != broker.StateDeleted {
		t.Fatalf("after delete: %+v %v, want DELETING or DELETED", s, err)
	}
}

// TestPortal_OtherUsersSession: a user cannot see, connect to, screenshot,
// share or delete another user's session; the answers are the same 404 as
// for a session that does not exist.
func TestPortal_OtherUsersSession(t *testing.T) {
	e := newUserEnv(t, nil)
	e.addServer(t, "s1")
	e.readySession(t, "sess-ann", "ann's desk", "ann", "s1")
	e.readySession(t, "sess-bob", "bob's desk", "bob", "s1")
	ann, bob := e.signIn(t, "ann"), e.signIn(t, "bob")
	if got := bob.sessions(t); len(got) != 1 || got[0].ID != "sess-bob" {
		t.Fatalf("bob's sessions: %+v", got)
	}
	if _, body := bob.do(t, "GET", "/portal/", nil, nil); strings.Contains(body, "sess-ann") || strings.Contains(body, "ann&#39;s desk") {
		t.Fatalf("bob's page shows ann's session")
	}
	for _, id := range []string{"sess-ann", "no-such-session"} {
		for _, c := range []struct{ method, path string }{
			{"GET", "/portal/sessions/" + id + "/thumbnail"},
			{"GET", "/portal/sessions/" + id + "/connect"},
			{"POST", "/portal/sessions/" + id + "/delete"},
			{"POST", "/portal/sessions/" + id + "/share"},
		} {
			var resp *http.Response
			var body string
			if c.method == "POST" {
				resp, body = bob.post(t, c.path, url.Values{"user": {"bob"}, "level": {"full"}})
			} else {
				resp, body = bob.do(t, c.method, c.path, nil, nil)
			}
			if resp.StatusCode != http.StatusNotFound || !strings.Contains(body, "no such desktop") || strings.Contains(body, "ann") {
				t.Errorf("bob %s %s: %s, want 404 that does not leak\n%.300s", c.method, c.path, resp.Status, body)
			}
		}
	}
	if s, err := e.st.GetSession(context.Background(), "sess-ann"); err != nil || s.State != broker.StateReady {
		t.Fatalf("ann's session after bob's tries: %+v %v", s, err)
	}
	// Ann reaches her own.
	if resp, _ := ann.do(t, "GET", "/portal/sessions/sess-ann/connect", nil, nil); resp.StatusCode != http.StatusSeeOther ||
		!strings.HasPrefix(resp.Header.Get("Location"), "https://10.0.0.7:8444/?authToken=") || !strings.HasSuffix(resp.Header.Get("Location"), "#sess-ann") {
		t.Fatalf("ann connects: %s %q", resp.Status, resp.Header.Get("Location"))
	}
	// Shared with bob (when the core shares): he sees it and may connect,
	// but may not share or delete it.
	if resp, body := ann.post(t, "/portal/sessions/sess-ann/share", url.Values{"user": {"bob"}, "level": {"view"}}); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("ann shares with bob: %s\n%.500s", resp.Status, body)
	}
	if _, body := ann.do(t, "GET", "/portal/?done=shared", nil, nil); !strings.Contains(body, "bob: view only") || !strings.Contains(body, "Sharing updated") {
		t.Errorf("ann's page does not list the share:\n%.2000s", body)
	}
	got := bob.sessions(t)
	i := slices.IndexFunc(got, func(s sessionItem) bool { return s.ID == "sess-ann" })
	if i < 0 || !got[i].Shared || got[i].Deletable || got[i].Owner != "ann" {
		t.Fatalf("bob's sessions after the share: %+v", got)
	}
	if resp, _ := bob.do(t, "GET", "/portal/sessions/sess-ann/thumbnail", nil, nil); resp.StatusCode != 200 {
		t.Errorf("bob's thumbnail of the shared session: %s", resp.Status)
	}
	// Connect gives bob a token of his own (the sharee's).
	if resp, body := bob.do(t, "GET", "/portal/sessions/sess-ann/connect", nil, nil); resp.StatusCode != http.StatusSeeOther ||
		!strings.Contains(resp.Header.Get("Location"), "authToken=") {
		t.Errorf("bob connects to the shared session: %s %q\n%.300s", resp.Status, resp.Header.Get("Location"), body)
	}
	if resp, _ := bob.post(t, "/portal/sessions/sess-ann/delete", nil); resp.StatusCode != http.StatusForbidden {
		t.Errorf("bob deletes the shared session: %s, want 403", resp.Status)
	}
	if resp, _ := bob.post(t, "/portal/sessions/sess-ann/share", url.Values{"user": {"carol"}, "level": {"full"}}); resp.StatusCode != http.StatusForbidden {
		t.Errorf("bob shares the shared session: %s, want 403", resp.Status)
	}
	// Access removed: gone from bob's list, 404 again.
	if resp, _ := ann.post(t, "/portal/sessions/sess-ann/share", url.Values{"user": {"bob"}, "level": {"none"}}); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("ann removes bob's access: %s", resp.Status)
	}
	if got := bob.sessions(t); slices.ContainsFunc(got, func(s sessionItem) bool { return s.ID == "sess-ann" }) {
		t.Fatalf("bob still lists ann's session: %+v", got)
	}
	if resp, _ := bob.do(t, "GET", "/portal/sessions/sess-ann/thumbnail", nil, nil); resp.StatusCode != http.StatusNotFound {
		t.Fatalf("bob's thumbnail after the share was removed: %s, want 404", resp.Status)
	}
}

func TestPortal_Thumbnail(t *testing.T) {
	e := newUserEnv(t, nil)
	e.addServer(t, "s1")
	e.readySession(t, "sess-a", "desk", "ann", "s1")
	ann := e.signIn(t, "ann")
	for range 3 {
		resp, body := ann.do(t, "GET", "/portal/sessions/sess-a/thumbnail", nil, nil)
		if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "image/png" || body != string(e.agents.png) {
			t.Fatalf("thumbnail: %s %q (%d bytes)", resp.Status, resp.Header.Get("Content-Type"), len(body))
		}
	}
	if n := e.agents.shots.Load(); n != 1 {
		t.Fatalf("3 thumbnails within 10 s took %d screenshots, want 1", n)
	}
	e.clock.Add(thumbEvery + time.Second)
	ann.do(t, "GET", "/portal/sessions/sess-a/thumbnail", nil, nil)
	if n := e.agents.shots.Load(); n != 2 {
		t.Fatalf("after 10 s: %d screenshots, want 2", n)
	}
	// Not READY: no image.
	now := time.Now()
	var queued []*broker.Session
	for _, q := range [][2]string{{"q-bob", "bob"}, {"q-carl", "carl"}, {"sess-q", "ann"}} {
		queued = append(queued, &broker.Session{ID: q[0], Name: "queued", Owner: q[1], Type: broker.TypeVirtual,
			State: broker.StateCreating, Substate: "SESSION_PLACING", Enqueued: true, EnqueuedAt: now, CreationTime: now, UpdatedAt: now})
	}
	if err := e.st.InsertSessions(context.Background(), queued); err != nil {
		t.Fatal(err)
	}
	if resp, _ := ann.do(t, "GET", "/portal/sessions/sess-q/thumbnail", nil, nil); resp.StatusCode != http.StatusNoContent {
		t.Fatalf("thumbnail of a queued session: %s, want 204", resp.Status)
	}
	got := ann.sessions(t)
	i := slices.IndexFunc(got, func(s sessionItem) bool { return s.ID == "sess-q" })
	if i < 0 || !got[i].Queued || got[i].Thumb != "" || got[i].Connect != "" || !strings.Contains(got[i].Reason, "queue") ||
		got[i].Position != 3 || !strings.Contains(got[i].Label, "number 3 in the queue") {
		t.Fatalf("queued session in the list: %+v", got)
	}
	if _, body := ann.do(t, "GET", "/portal/", nil, nil); !strings.Contains(body, "number 3 in the queue") || !strings.Contains(body, "3 requests are waiting") {
		t.Fatalf("My sessions lacks the queue position:\n%.2000s", body)
	}
}

func TestPortal_BadInput(t *testing.T) {
	e := newUserEnv(t, nil)
	e.addServer(t, "s1")
	e.readySession(t, "sess-a", "desk", "ann", "s1")
	ann := e.signIn(t, "ann")
	long := strings.Repeat("x", 300)
	tests := []struct {
		name   string
		path   string
		form   url.Values
		status int
		want   string
	}{
		{"share with a bad user name", "/portal/sessions/sess-a/share", url.Values{"user": {"a;b"}, "level": {"view"}}, 400, "Share with"},
		{"share with nobody", "/portal/sessions/sess-a/share", url.Values{"level": {"view"}}, 400, "Share with"},
		{"share with oneself", "/portal/sessions/sess-a/share", url.Values{"user": {"ann"}, "level": {"view"}}, 400, "that is you"},
		{"share at a bad level", "/portal/sessions/sess-a/share", url.Values{"user": {"bob"}, "level": {"admin"}}, 400, "level must be view, full or none"},
		{"launch without a template", "/portal/launch", url.Values{}, 400, "Template"},
		{"launch a template too long", "/portal/launch", url.Values{"template": {long}}, 400, "Template"},
		{"a session ID too long", "/portal/sessions/" + long + "/delete", url.Values{}, 400, "session ID"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, body := ann.post(t, tt.path, tt.form)
			if resp.StatusCode != tt.status || !strings.Contains(body, tt.want) {
				t.Fatalf("%s, want %d naming %q\n%.500s", resp.Status, tt.status, tt.want, body)
			}
		})
	}
	anon := e.browser()
	if resp, body := anon.do(t, "POST", "/portal/link", url.Values{}, nil); resp.StatusCode != 400 || !strings.Contains(body, "token") {
		t.Fatalf("link without a token: %s\n%.300s", resp.Status, body)
	}
	if resp, body := anon.do(t, "GET", "/portal/callback?state=x&code=y", nil, nil); resp.StatusCode != 404 || !strings.Contains(body, "portal-link") {
		t.Fatalf("callback without an IdP: %s\n%.300s", resp.Status, body)
	}
}

func TestPortal_StoreSessionsHashed(t *testing.T) {
	e := newUserEnv(t, nil)
	e.signIn(t, "ann")
	rows, err := e.st.PurgePortal(context.Background(), e.clock.Now().Add(-time.Hour))
	if err != nil || rows != 0 {
		t.Fatalf("purge of nothing expired: %d %v", rows, err)
	}
	key := hashKey("session", "x")
	if len(hex.EncodeToString(key)) != 64 {
		t.Fatalf("hashKey: %d bytes", len(key))
	}
}

// TestPortal_Launch: a user sees the templates published to them or their
// groups, launches one and sees the session; another user is refused the
// template by the core; an unknown template is a 404.
func TestPortal_Launch(t *testing.T) {
	e := newUserEnv(t, nil)
	e.addServer(t, "s1")
	tpl, err := e.svc.CreateTemplate(context.Background(), broker.Template{Name: "Dev desktop", Description: "XFCE and tools",
		Type: broker.TypeVirtual, Groups: []string{"devs"}})
	if err != nil {
		t.Fatal(err)
	}
	ann, bob := e.signIn(t, "ann", "devs"), e.signIn(t, "bob", "sales")
	if _, body := ann.do(t, "GET", "/portal/", nil, nil); !strings.Contains(body, `value="`+tpl.ID+`"`) || !strings.Contains(body, "Dev desktop") {
		t.Fatalf("ann's page lacks the template:\n%.1500s", body)
	}
	if _, body := bob.do(t, "GET", "/portal/", nil, nil); strings.Contains(body, tpl.ID) || !strings.Contains(body, "No template is published to you") {
		t.Fatalf("bob's page shows the template, or no hint:\n%.1500s", body)
	}
	resp, body := ann.post(t, "/portal/launch", url.Values{"template": {tpl.ID}})
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/portal/?done=launched" {
		t.Fatalf("launch: %s %q\n%.500s", resp.Status, resp.Header.Get("Location"), body)
	}
	got := ann.sessions(t)
	if len(got) != 1 || got[0].Owner != "ann" || got[0].Name == "" || got[0].Shared {
		t.Fatalf("ann's sessions after the launch: %+v", got)
	}
	if _, body := ann.do(t, "GET", "/portal/?done=launched", nil, nil); !strings.Contains(body, "Your desktop is starting") {
		t.Errorf("no notice after the launch")
	}
	if resp, body := bob.post(t, "/portal/launch", url.Values{"template": {tpl.ID}}); resp.StatusCode != http.StatusForbidden {
		t.Fatalf("bob launches ann's template: %s, want 403\n%.500s", resp.Status, body)
	}
	if got := bob.sessions(t); len(got) != 0 {
		t.Fatalf("bob's sessions: %+v", got)
	}
	if resp, body := ann.post(t, "/portal/launch", url.Values{"template": {"no-such-template"}}); resp.StatusCode != http.StatusNotFound || !strings.Contains(body, "does not exist") {
		t.Fatalf("unknown template: %s\n%.500s", resp.Status, body)
	}
}

// TestPortal_RunPurges: the portal's background loop removes expired
// portal sessions from the store.
func TestPortal_RunPurges(t *testing.T) {
	e := newUserEnv(t, func(c *Config) { c.SessionLifetime = 10 * time.Minute })
	ann := e.signIn(t, "ann")
	var key []byte
	for _, c := range ann.hc.Jar.Cookies(mustURL(t, e.srv.URL+"/portal/")) {
		if c.Name == sessionCookie {
			key = hashKey("session", c.Value)
		}
	}
	if _, _, err := e.st.PortalSession(context.Background(), key); err != nil {
		t.Fatalf("the session before: %v", err)
	}
	e.clock.Add(11 * time.Minute)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { e.portal.Run(ctx, 20*time.Millisecond); close(done) }()
	defer func() { cancel(); <-done }()
	poll.Until(t, 10*time.Second, "the expired portal session purged", func() bool {
		_, _, err := e.st.PortalSession(context.Background(), key)
		return errors.Is(err, broker.ErrNotFound)
	})
}

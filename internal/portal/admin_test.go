package portal

import (
	"context"
	"fmt"
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
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/broker"
	"github.com/berth-dev/berth/internal/oauth"
	"github.com/berth-dev/berth/internal/sqlite"
)

// adminTestGroup is the admin group of the admin tests' portal.
const adminTestGroup = "berth-admins"

// adminAccept is a dispatcher whose agents accept every command.
type adminAccept struct{}

func (adminAccept) Dispatch(ctx context.Context, serverID string, cmd broker.Command) (*broker.Result, error) {
	return &broker.Result{}, nil
}

// adminNoTokens issues empty connection tokens.
type adminNoTokens struct{}

func (adminNoTokens) IssueConnectionToken(ctx context.Context, sessionID, owner, user string) (string, error) {
	return "", nil
}

// adminEnv is a portal on a real broker core and SQLite store, served over
// HTTPS on loopback at /portal/.
type adminEnv struct {
	st     *sqlite.Store
	svc    *broker.Service
	portal *Portal
	srv    *httptest.Server
}

// newAdminEnv starts the broker core (its Run too), the portal with admin
// group adminTestGroup, and an HTTPS server for it.
func newAdminEnv(tb testing.TB) *adminEnv {
	tb.Helper()
	ctx := context.Background()
	st, err := sqlite.Open(ctx, filepath.Join(tb.TempDir(), "berth.db"))
	if err != nil {
		tb.Fatal(err)
	}
	log := slog.New(slog.DiscardHandler)
	svc, err := broker.New(ctx, st, adminAccept{}, adminNoTokens{}, broker.Config{BrokerID: "admin-test", HeartbeatTimeout: time.Hour}, log)
	if err != nil {
		tb.Fatal(err)
	}
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { _ = svc.Run(rctx); close(done) }()
	tb.Cleanup(func() { cancel(); <-done; st.Close() })
	p, err := New(Config{Service: svc, Store: st, AdminGroup: adminTestGroup, Logger: log})
	if err != nil {
		tb.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle("/portal/", p.Handler())
	srv := httptest.NewTLSServer(mux)
	tb.Cleanup(srv.Close)
	return &adminEnv{st: st, svc: svc, portal: p, srv: srv}
}

// addServer registers a server as its agent's link does.
func (e *adminEnv) addServer(tb testing.TB, id string) {
	tb.Helper()
	info := broker.ServerInfo{Hostname: "host-" + id, IP: "10.0.0.1", Port: 8443, WebURLPath: "/", Version: "2024.0", AgentVersion: "test",
		Driver: "sim", Healthy: true, Endpoints: []broker.Endpoint{{IPAddress: "10.0.0.1", Port: 8443, WebURLPath: "/", Protocol: "HTTP"}},
		Host: broker.Host{OSFamily: "linux", OSName: "Debian GNU/Linux", OSVersion: "12", MemTotal: 16 << 30, MemUsed: 2 << 30,
			CPUVendor: "GenuineIntel", CPUModel: "Xeon", CPUArch: "x86_64", CPUs: 4, GPUs: []broker.GPU{{Vendor: "NVIDIA", Model: "L4"}}}}
	if err := e.svc.AgentConnected(context.Background(), "", id, info, nil); err != nil {
		tb.Fatal(err)
	}
}

// adminUser is a browser signed in to the portal.
type adminUser struct {
	e    *adminEnv
	hc   *http.Client
	csrf string
}

// signIn signs a user in with a portal link (the real link flow) and
// reads the CSRF token of its portal session from a page's form.
func (e *adminEnv) signIn(tb testing.TB, user string, groups []string, admin bool) *adminUser {
	tb.Helper()
	ctx := context.Background()
	tok, err := CreateLink(ctx, e.st, user, groups, admin, time.Minute, time.Now())
	if err != nil {
		tb.Fatal(err)
	}
	jar, _ := cookiejar.New(nil)
	c := *e.srv.Client()
	hc := &c
	hc.Jar = jar
	hc.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	u := &adminUser{e: e, hc: hc}
	resp := u.post(tb, "/portal/link", url.Values{"token": {tok}}, false)
	if resp.StatusCode != http.StatusSeeOther {
		tb.Fatalf("sign in by link: %s, want 303", resp.Status)
	}
	// Any signed-in page carries the token in the sign-out form.
	_, body := u.get(tb, "/portal/admin/servers")
	m := regexp.MustCompile(`name="csrf" value="([^"]+)"`).FindStringSubmatch(body)
	if m == nil {
		tb.Fatalf("no CSRF token in the page of %s:\n%.500s", user, body)
	}
	u.csrf = m[1]
	return u
}

// get fetches path and returns the answer and its body.
func (u *adminUser) get(tb testing.TB, path string) (*http.Response, string) {
	tb.Helper()
	resp, err := u.hc.Get(u.e.srv.URL + path)
	if err != nil {
		tb.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		tb.Fatal(err)
	}
	return resp, string(b)
}

// post sends a form as the portal's own pages do (same Origin), with the
// CSRF token if withCSRF; the body is read into resp's Body again.
func (u *adminUser) post(tb testing.TB, path string, form url.Values, withCSRF bool) *http.Response {
	tb.Helper()
	if form == nil {
		form = url.Values{}
	}
	if withCSRF {
		form.Set("csrf", u.csrf)
	}
	req, err := http.NewRequest(http.MethodPost, u.e.srv.URL+path, strings.NewReader(form.Encode()))
	if err != nil {
		tb.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Origin", u.e.srv.URL)
	resp, err := u.hc.Do(req)
	if err != nil {
		tb.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	resp.Body = io.NopCloser(strings.NewReader(string(b)))
	return resp
}

// bodyOf reads a response body post left readable.
func bodyOf(resp *http.Response) string {
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// TestAdmin_NonAdminForbidden: every admin route answers 403 to a signed-in
// user who is not an admin (with a valid CSRF token: the refusal is the
// role's), and an admin reaches each one; signed out, a page goes to the
// sign-in page and a form post is 401.
func TestAdmin_NonAdminForbidden(t *testing.T) {
	e := newAdminEnv(t)
	e.addServer(t, "srv-1")
	ann := e.signIn(t, "ann", []string{"users"}, false)
	byGroup := e.signIn(t, "carol", []string{"users", adminTestGroup}, false)
	byLink := e.signIn(t, "dave", nil, true)
	c := *e.srv.Client()
	anon := &adminUser{e: e, hc: &c}
	anon.hc.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }

	routes := append(slices.Clone(AdminRoutes), "GET /portal/admin/no-such-page", "POST /portal/admin/no-such-page", "DELETE /portal/admin/servers")
	for _, rt := range routes {
		method, path, _ := strings.Cut(rt, " ")
		path = strings.ReplaceAll(path, "{id}", "srv-1")
		t.Run(strings.ReplaceAll(rt, "/", "_"), func(t *testing.T) {
			send := func(u *adminUser) (*http.Response, string) {
				if method == http.MethodGet {
					return u.get(t, path)
				}
				form := url.Values{"name": {"x"}}
				if method != http.MethodPost {
					req, _ := http.NewRequest(method, e.srv.URL+path, nil)
					req.Header.Set("X-CSRF-Token", u.csrf)
					req.Header.Set("Origin", e.srv.URL)
					resp, err := u.hc.Do(req)
					if err != nil {
						t.Fatal(err)
					}
					b, _ := io.ReadAll(resp.Body)
					resp.Body.Close()
					return resp, string(b)
				}
				resp := u.post(t, path, form, u.csrf != "")
				return resp, bodyOf(resp)
			}
			resp, body := send(ann)
			if resp.StatusCode != http.StatusForbidden {
				t.Errorf("non-admin: %s, want 403: %.300s", resp.Status, body)
			}
			if !strings.Contains(body, "administrators") {
				t.Errorf("non-admin: the 403 page does not say the page is for administrators: %.300s", body)
			}
			if got := resp.Header.Get("Content-Security-Policy"); got != CSP {
				t.Errorf("non-admin: CSP %q", got)
			}
			for _, admin := range []*adminUser{byGroup, byLink} {
				if resp, body := send(admin); resp.StatusCode == http.StatusForbidden || resp.StatusCode == http.StatusUnauthorized {
					t.Errorf("admin: %s: %.300s", resp.Status, body)
				}
			}
			resp, _ = send(anon)
			switch {
			case method == http.MethodGet && (resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/portal/signin"):
				t.Errorf("signed out: %s to %q, want 303 to /portal/signin", resp.Status, resp.Header.Get("Location"))
			case method != http.MethodGet && resp.StatusCode != http.StatusUnauthorized:
				t.Errorf("signed out: %s, want 401", resp.Status)
			}
		})
	}
}

// serverAvailability reads a server's availability cell from the servers
// page.
func serverAvailability(body, id string) string {
	re := regexp.MustCompile(`(?s)<tr data-server="` + regexp.QuoteMeta(id) + `">.*?data-f="availability">([A-Z_]+)<`)
	if m := re.FindStringSubmatch(body); m != nil {
		return m[1]
	}
	return ""
}

// TestAdmin_CloseOpenServer: an admin closes and opens a server from the
// servers page (through the core's CloseServers / OpenServers); a post
// without the CSRF token or from another site changes nothing; a server
// running sessions closes only with Force.
func TestAdmin_CloseOpenServer(t *testing.T) {
	e := newAdminEnv(t)
	e.addServer(t, "srv-1")
	e.addServer(t, "srv-2")
	admin := e.signIn(t, "admin", []string{adminTestGroup}, false)

	resp, body := admin.get(t, "/portal/admin/servers")
	if resp.StatusCode != http.StatusOK || serverAvailability(body, "srv-1") != broker.Available {
		t.Fatalf("servers page: %s, srv-1 %q, want AVAILABLE:\n%.1000s", resp.Status, serverAvailability(body, "srv-1"), body)
	}
	for _, want := range []string{"host-srv-1", "Debian GNU/Linux 12", "4 × Xeon", "2.0 GiB of 16.0 GiB used", "NVIDIA L4", "0 virtual"} {
		if !strings.Contains(body, want) {
			t.Errorf("servers page lacks the host fact %q", want)
		}
	}

	// Refused: no token; and a cross-site post with the token.
	if resp := admin.post(t, "/portal/admin/servers/srv-1/close", nil, false); resp.StatusCode != http.StatusForbidden {
		t.Errorf("close without CSRF token: %s, want 403", resp.Status)
	}
	req, _ := http.NewRequest(http.MethodPost, e.srv.URL+"/portal/admin/servers/srv-1/close", strings.NewReader(url.Values{"csrf": {admin.csrf}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Origin", "https://evil.example")
	req.Header.Set("Sec-Fetch-Site", "cross-site")
	if resp, err := admin.hc.Do(req); err != nil {
		t.Fatal(err)
	} else if resp.Body.Close(); resp.StatusCode != http.StatusForbidden {
		t.Errorf("cross-site close: %s, want 403", resp.Status)
	}
	if !e.svc.ServerByID("srv-1").Open {
		t.Fatal("a refused close closed srv-1")
	}

	resp = admin.post(t, "/portal/admin/servers/srv-1/close", nil, true)
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("close: %s, want 303: %.300s", resp.Status, bodyOf(resp))
	}
	if e.svc.ServerByID("srv-1").Open {
		t.Fatal("srv-1 is open after Close")
	}
	_, body = admin.get(t, resp.Header.Get("Location"))
	if serverAvailability(body, "srv-1") != broker.Unavailable || !strings.Contains(body, "Server srv-1 is closed") || !strings.Contains(body, "closed: no new sessions") {
		t.Errorf("after Close the page does not show srv-1 closed (availability %q):\n%.2000s", serverAvailability(body, "srv-1"), body)
	}
	if serverAvailability(body, "srv-2") != broker.Available {
		t.Errorf("srv-2 is %q after closing srv-1", serverAvailability(body, "srv-2"))
	}

	if resp := admin.post(t, "/portal/admin/servers/srv-1/open", nil, true); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("open: %s", resp.Status)
	}
	if !e.svc.ServerByID("srv-1").Open {
		t.Fatal("srv-1 is closed after Open")
	}

	// A server that runs a session closes with Force only.
	now := time.Now().UTC()
	if err := e.st.InsertSessions(context.Background(), []*broker.Session{{ID: "s-on-2", Name: "d", Owner: "ann", Type: broker.TypeVirtual,
		ServerID: "srv-2", State: broker.StateReady, CreationTime: now, UpdatedAt: now}}); err != nil {
		t.Fatal(err)
	}
	resp = admin.post(t, "/portal/admin/servers/srv-2/close", nil, true)
	if body := bodyOf(resp); resp.StatusCode != http.StatusConflict || !strings.Contains(body, "tick Force") {
		t.Errorf("close a server with sessions: %s, want 409 saying to tick Force: %.500s", resp.Status, body)
	}
	if !e.svc.ServerByID("srv-2").Open {
		t.Fatal("srv-2 closed without Force")
	}
	if resp := admin.post(t, "/portal/admin/servers/srv-2/close", url.Values{"force": {"1"}}, true); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("close with Force: %s", resp.Status)
	}
	if e.svc.ServerByID("srv-2").Open {
		t.Fatal("srv-2 open after a forced close")
	}
	// An unknown server: 404 with what to do.
	if resp := admin.post(t, "/portal/admin/servers/nope/close", nil, true); resp.StatusCode != http.StatusNotFound {
		t.Errorf("close an unknown server: %s, want 404", resp.Status)
	}
}

// pageSessions returns the session IDs of a sessions page in order and its
// Next link ("" if none).
func pageSessions(body string) (ids []string, next string) {
	for _, m := range regexp.MustCompile(`<tr data-session="([^"]+)">`).FindAllStringSubmatch(body, -1) {
		ids = append(ids, m[1])
	}
	if m := regexp.MustCompile(`<a class="btn" href="([^"]+)" rel="next">`).FindStringSubmatch(body); m != nil {
		next = strings.ReplaceAll(m[1], "&amp;", "&")
	}
	return ids, next
}

// TestAdmin_SessionsFiltersAndPaging: the sessions page lists every
// session a page at a time, in creation order, with owner, state and
// server filters (alone and together) that keep exactly the matching
// sessions across pages; bad filters are 400 with what to do; an admin
// deletes a session of another user.
func TestAdmin_SessionsFiltersAndPaging(t *testing.T) {
	e := newAdminEnv(t)
	e.addServer(t, "srv-1")
	e.addServer(t, "srv-2")
	admin := e.signIn(t, "admin", []string{adminTestGroup}, false)

	const n = 237
	owners := []string{"ann", "bob", "carol"}
	states := []string{broker.StateReady, broker.StateReady, broker.StateCreating, broker.StateDeleting, broker.StateReady, broker.StateDeleted, broker.StateReady}
	now := time.Now().UTC().Truncate(time.Millisecond)
	type row struct{ id, owner, state, server string }
	var all []row
	var ss []*broker.Session
	for i := range n {
		r := row{fmt.Sprintf("sess-%04d", i), owners[i%3], states[i%len(states)], []string{"srv-1", "srv-2"}[i/7%2]}
		all = append(all, r)
		ss = append(ss, &broker.Session{ID: r.id, Name: "desk", Owner: r.owner, Type: broker.TypeVirtual, ServerID: r.server,
			State: r.state, CreationTime: now, UpdatedAt: now})
	}
	if err := e.st.InsertSessions(context.Background(), ss); err != nil {
		t.Fatal(err)
	}

	walk := func(t *testing.T, query string) []string {
		t.Helper()
		var got []string
		next := "/portal/admin/sessions" + query
		for pages := 0; next != ""; pages++ {
			if pages > n {
				t.Fatal("the pages do not end")
			}
			resp, body := admin.get(t, next)
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("%s: %s: %.500s", next, resp.Status, body)
			}
			var ids []string
			ids, next = pageSessions(body)
			if len(ids) > adminSessionsPage {
				t.Errorf("%s: %d sessions on a page, want at most %d", next, len(ids), adminSessionsPage)
			}
			if next != "" && len(ids) != adminSessionsPage {
				t.Errorf("a page with a next page holds %d sessions, want %d", len(ids), adminSessionsPage)
			}
			got = append(got, ids...)
		}
		return got
	}
	for _, c := range []struct {
		query string
		keep  func(row) bool
	}{
		{"", func(row) bool { return true }},
		{"?owner=bob", func(r row) bool { return r.owner == "bob" }},
		{"?state=DELETING", func(r row) bool { return r.state == broker.StateDeleting }},
		{"?state=ready", func(r row) bool { return r.state == broker.StateReady }},
		{"?server=srv-2", func(r row) bool { return r.server == "srv-2" }},
		{"?owner=carol&state=READY&server=srv-1", func(r row) bool {
			return r.owner == "carol" && r.state == broker.StateReady && r.server == "srv-1"
		}},
		{"?owner=nobody", func(row) bool { return false }},
	} {
		t.Run(c.query, func(t *testing.T) {
			var want []string
			for _, r := range all {
				if c.keep(r) {
					want = append(want, r.id)
				}
			}
			if got := walk(t, c.query); !slices.Equal(got, want) {
				t.Errorf("got %d sessions %v\nwant %d %v", len(got), got, len(want), want)
			}
		})
	}

	// Refusals: 400 saying what to do, never 5xx.
	for _, q := range []string{"?state=SLEEPING", "?owner=" + strings.Repeat("a", 300), "?next=garbage", "?next=" + strings.Repeat("x", 2000)} {
		resp, body := admin.get(t, "/portal/admin/sessions"+q)
		if resp.StatusCode != http.StatusBadRequest || !strings.Contains(body, "role=\"alert\"") {
			t.Errorf("%.40s: %s, want 400 with an alert: %.300s", q, resp.Status, body)
		}
	}

	// The store narrows by stored state; UNKNOWN also reads the READY
	// sessions (shown UNKNOWN when their server is unreachable), and the
	// search stops after its budget and offers to go on from there.
	rows, next, scanned, err := e.portal.findSessions(context.Background(), adminFilter{State: broker.StateUnknown}, "", 50, 100)
	if err != nil || next == "" || scanned < 100 || len(rows) >= 50 {
		t.Errorf("findSessions with budget 100: %d rows, next %q, scanned %d, err %v; want a partial page and a next token", len(rows), next, scanned, err)
	}

	// Delete a session of bob's, with the filter kept.
	resp := admin.post(t, "/portal/admin/sessions/sess-0001/delete", url.Values{"owner": {"bob"}}, true)
	if resp.StatusCode != http.StatusSeeOther || !strings.HasPrefix(resp.Header.Get("Location"), "/portal/admin/sessions?") ||
		!strings.Contains(resp.Header.Get("Location"), "owner=bob") {
		t.Fatalf("delete: %s to %q", resp.Status, resp.Header.Get("Location"))
	}
	views, _, err := e.svc.DescribeSessions(context.Background(), broker.DescribeQuery{SessionIDs: []string{"sess-0001"}})
	if err != nil || len(views) != 1 || (views[0].State != broker.StateDeleting && views[0].State != broker.StateDeleted) {
		t.Fatalf("after delete: %v %v", views, err)
	}
	if _, body := admin.get(t, resp.Header.Get("Location")); !strings.Contains(body, "Session sess-0001 is being deleted") {
		t.Errorf("the page after delete does not say so")
	}
	if resp := admin.post(t, "/portal/admin/sessions/no-such/delete", nil, true); resp.StatusCode != http.StatusNotFound {
		t.Errorf("delete an unknown session: %s, want 404", resp.Status)
	}
	if resp := admin.post(t, "/portal/admin/sessions/sess-0002/delete", nil, false); resp.StatusCode != http.StatusForbidden {
		t.Errorf("delete without CSRF token: %s, want 403", resp.Status)
	}
}

// TestAdmin_Templates: an admin creates a template from the form, sees it
// listed, publishes it to a group by editing it, and deletes it; the core's
// refusals come back on the form with the field named.
func TestAdmin_Templates(t *testing.T) {
	e := newAdminEnv(t)
	admin := e.signIn(t, "admin", []string{adminTestGroup}, false)
	form := url.Values{"name": {"Dev desktop"}, "description": {"XFCE"}, "type": {"VIRTUAL"}, "max_clients": {"2"},
		"users": {"ann\nbob\n"}, "autorun_file": {"xterm.sh"}, "args": {"--a\n--b"}}
	resp := admin.post(t, "/portal/admin/templates", form, true)
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("create: %s: %s", resp.Status, regexp.MustCompile(`(?s)role="alert"[^>]*>(.*?)</p>`).FindString(bodyOf(resp)))
	}
	list, err := e.svc.ListTemplates(context.Background())
	if err != nil || len(list) != 1 {
		t.Fatalf("templates after create: %v %v", list, err)
	}
	tp := list[0]
	if tp.Name != "Dev desktop" || !slices.Equal(tp.Users, []string{"ann", "bob"}) || !slices.Equal(tp.AutorunFileArguments, []string{"--a", "--b"}) || tp.MaxConcurrentClients != 2 {
		t.Errorf("created %+v", tp)
	}
	_, body := admin.get(t, resp.Header.Get("Location"))
	if !strings.Contains(body, "Template Dev desktop was created") || !strings.Contains(body, `data-template="`+tp.ID+`"`) {
		t.Errorf("the list does not show the new template:\n%.2000s", body)
	}
	if _, body := admin.get(t, "/portal/admin/templates/"+tp.ID); !strings.Contains(body, `value="Dev desktop"`) {
		t.Errorf("the edit form does not hold the template")
	}

	// Publish to a group.
	form.Set("groups", "engineering")
	form.Set("users", "")
	if resp := admin.post(t, "/portal/admin/templates/"+tp.ID, form, true); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("save: %s: %.1000s", resp.Status, bodyOf(resp))
	}
	got, err := e.svc.GetTemplate(context.Background(), tp.ID)
	if err != nil || !slices.Equal(got.Groups, []string{"engineering"}) || len(got.Users) != 0 {
		t.Fatalf("after publishing to a group: %+v %v", got, err)
	}
	if ts, _ := e.svc.TemplatesFor(context.Background(), "zed", []string{"engineering"}); len(ts) != 1 {
		t.Errorf("TemplatesFor a member of the group: %d templates, want 1", len(ts))
	}

	// Refusals on the form: a bad number (here), a duplicate name, an empty
	// name (the core's).
	bad := url.Values{"name": {"X"}, "type": {"VIRTUAL"}, "max_clients": {"many"}}
	if resp := admin.post(t, "/portal/admin/templates", bad, true); resp.StatusCode != http.StatusBadRequest || !strings.Contains(bodyOf(resp), "Max concurrent clients") {
		t.Errorf("bad max clients: %s", resp.Status)
	}
	if resp := admin.post(t, "/portal/admin/templates", form, true); resp.StatusCode != http.StatusConflict {
		t.Errorf("duplicate name: %s, want 409: %.500s", resp.Status, bodyOf(resp))
	}
	if resp := admin.post(t, "/portal/admin/templates", url.Values{"name": {""}, "type": {"VIRTUAL"}}, true); resp.StatusCode != http.StatusBadRequest {
		t.Errorf("empty name: %s, want 400: %.500s", resp.Status, bodyOf(resp))
	}

	if resp := admin.post(t, "/portal/admin/templates/"+tp.ID+"/delete", nil, true); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("delete: %s", resp.Status)
	}
	if _, err := e.svc.GetTemplate(context.Background(), tp.ID); err == nil {
		t.Error("the template is there after delete")
	}
	if resp, _ := admin.get(t, "/portal/admin/templates/"+tp.ID); resp.StatusCode != http.StatusNotFound {
		t.Errorf("edit a deleted template: %s, want 404", resp.Status)
	}
}

// TestAdmin_Clients: the API clients page lists the broker's API clients
// (as describe-api-clients does), with no secret.
func TestAdmin_Clients(t *testing.T) {
	e := newAdminEnv(t)
	auth := oauth.New(e.st, "https://broker.test")
	id, secret, err := auth.RegisterClient(context.Background(), oauth.KindAPI, "ops-portal")
	if err != nil {
		t.Fatal(err)
	}
	admin := e.signIn(t, "admin", []string{adminTestGroup}, false)
	resp, body := admin.get(t, "/portal/admin/clients")
	if resp.StatusCode != http.StatusOK || !strings.Contains(body, "ops-portal") || !strings.Contains(body, id) {
		t.Fatalf("clients page: %s:\n%.2000s", resp.Status, body)
	}
	if strings.Contains(body, secret) {
		t.Error("the clients page shows the secret")
	}
	if strings.Contains(body, "<form class=\"inline\" method=\"post\" action=\"/portal/admin/clients") {
		t.Error("the clients page has a form that changes clients: it is read-only")
	}
}

// TestAdmin_PageWeight: every admin page, with its stylesheet and script,
// weighs under 200 KB, carries the CSP, and labels each input.
func TestAdmin_PageWeight(t *testing.T) {
	e := newAdminEnv(t)
	e.addServer(t, "srv-1")
	admin := e.signIn(t, "admin", []string{adminTestGroup}, false)
	tp, err := e.svc.CreateTemplate(context.Background(), broker.Template{Name: "t", Type: broker.TypeVirtual, Users: []string{"ann"}})
	if err != nil {
		t.Fatal(err)
	}
	assets := regexp.MustCompile(`(?:href|src)="(/portal/static/[^"]+)"`)
	for _, path := range []string{"/portal/admin/servers", "/portal/admin/sessions", "/portal/admin/templates", "/portal/admin/templates/new",
		"/portal/admin/templates/" + tp.ID, "/portal/admin/clients"} {
		resp, body := admin.get(t, path)
		if resp.StatusCode != http.StatusOK {
			t.Errorf("%s: %s", path, resp.Status)
			continue
		}
		if resp.Header.Get("Content-Security-Policy") != CSP {
			t.Errorf("%s: no CSP", path)
		}
		if strings.Contains(body, "<script>") || strings.Contains(body, " style=") {
			t.Errorf("%s: inline script or style", path)
		}
		total := len(body)
		for _, m := range assets.FindAllStringSubmatch(body, -1) {
			_, a := admin.get(t, m[1])
			total += len(a)
		}
		if total >= 200_000 {
			t.Errorf("%s weighs %d bytes with its assets, want < 200 KB", path, total)
		}
		// Each input, select and textarea has a label (for=ID or around it).
		for _, m := range regexp.MustCompile(`<(?:input|select|textarea) ([^>]*)>`).FindAllStringSubmatch(body, -1) {
			attrs := m[1]
			if strings.Contains(attrs, `type="hidden"`) || strings.Contains(attrs, `type="checkbox"`) {
				continue
			}
			id := regexp.MustCompile(`id="([^"]+)"`).FindStringSubmatch(attrs)
			if id == nil || !strings.Contains(body, `for="`+id[1]+`"`) {
				t.Errorf("%s: an unlabelled field <%s>", path, attrs)
			}
		}
		t.Logf("%s: %d bytes with its assets", path, total)
	}
}

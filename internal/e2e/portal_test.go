package e2e

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/internal/idptest"
	"github.com/berth-dev/berth/internal/poll"
	"github.com/berth-dev/berth/internal/postgres/pgtest"
)

// The portal tests' identity provider users: two local users of the test
// sessions and an admin (no local account: admins only run the fleet).
const (
	portalAdmin      = "portaladmin"
	portalAdminGroup = "berth-admins"
	portalUsersGroup = "staff"
)

// Bounds of the portal tests' waits (generous: the machine is small and
// shared).
const (
	portalPageTimeout  = 60 * time.Second  // a page's answer or script change
	portalReadyTimeout = 120 * time.Second // Launch → Ready on the page
)

// portalUsers are the IdP's users: name → groups.
var portalUsers = map[string][]string{
	user1:       {portalUsersGroup},
	user2:       {portalUsersGroup},
	portalAdmin: {portalAdminGroup, portalUsersGroup},
}

// mustStartPortalIdP starts Hydra as the portal's OpenID Connect provider
// with the portal tests' users.
func mustStartPortalIdP(t *testing.T) *idptest.OIDC {
	t.Helper()
	return idptest.StartOIDCWith(t, idptest.OIDCOptions{Users: portalUsers})
}

// portalProps are the broker properties of a portal that signs users in
// with o, admins being portalAdminGroup.
func portalProps(o *idptest.OIDC) []string {
	return []string{
		"portal-enabled = true",
		"portal-oidc-issuer = " + o.Issuer,
		"portal-oidc-client-id = " + o.ClientID,
		"portal-oidc-client-secret = " + o.ClientSecret,
		"portal-oidc-ca-bundle-file = " + o.CAFile,
		"portal-oidc-scopes = openid profile email groups",
		"portal-admin-group = " + portalAdminGroup,
	}
}

// portalAPI is c without the OpenAPI check of the harness, which checks
// every path against Amazon's document too, where berth's own /berth/v1/
// paths are missing.
func portalAPI(c *api.Client, hc *http.Client) *api.Client {
	return &api.Client{BrokerURL: c.BrokerURL, ClientID: c.ClientID, ClientSecret: c.ClientSecret, HTTPClient: hc}
}

// portalJS finds an element by CSS selector (JSON-quoted into the script).
func portalJS(sel string) string { return "document.querySelector(" + jsString(sel) + ")" }

// mustPortalClick scrolls the element sel into view and clicks its middle
// with the mouse, as a user does.
func mustPortalClick(t *testing.T, page *Page, sel string) {
	t.Helper()
	// Laid out with its stylesheet: a click on a page still loading can
	// land where the element was before the styles applied.
	page.MustWaitTrue(t, portalPageTimeout, "the page loaded before a click on "+sel, `document.readyState === 'complete'`)
	var at struct {
		X, Y float64
		OK   bool
	}
	page.MustEval(t, `(() => { const e = `+portalJS(sel)+`; if (!e) return {OK: false};
	  e.scrollIntoView({block: 'center'}); const r = e.getBoundingClientRect();
	  return {X: r.left + r.width / 2, Y: r.top + r.height / 2, OK: r.width > 0 && r.height > 0}; })()`, &at)
	if !at.OK {
		t.Fatalf("no visible element %s to click", sel)
	}
	page.MustClick(t, at.X, at.Y)
}

// mustPortalType focuses the field sel with a click and types s into it.
func mustPortalType(t *testing.T, page *Page, sel, s string) {
	t.Helper()
	mustPortalClick(t, page, sel)
	page.MustWaitTrue(t, portalPageTimeout, sel+" focused", `document.activeElement === `+portalJS(sel))
	page.MustType(t, s)
}

// mustPortalSignIn signs user in to the portal at base in page, the way a
// user does: the portal's Sign in button, the IdP's login page (the user
// name typed, its Sign in button clicked), back on My sessions.
func mustPortalSignIn(t *testing.T, page *Page, o *idptest.OIDC, base, user string) {
	t.Helper()
	page.MustNavigate(t, base+"/portal/signin")
	page.MustWaitTrue(t, portalPageTimeout, "the portal's sign-in page", `!!document.querySelector('a[href="/portal/login"]')`)
	mustPortalClick(t, page, `a[href="/portal/login"]`)
	page.MustWaitTrue(t, portalPageTimeout, "the IdP's login page", `location.href.startsWith(`+jsString(o.LoginURL)+`) && !!document.getElementById('user')`)
	mustPortalType(t, page, "#user", user)
	mustPortalClick(t, page, "#signin")
	page.MustWaitTrue(t, portalPageTimeout, user+" signed in on My sessions",
		`location.href === `+jsString(base+"/portal/")+` && (document.querySelector('.who') || {textContent: ''}).textContent.startsWith(`+jsString(user)+`)`)
}

// mustPortalSignOut signs out with the header's Sign out button.
func mustPortalSignOut(t *testing.T, page *Page) {
	t.Helper()
	mustPortalClick(t, page, "form.signout button")
	page.MustWaitTrue(t, portalPageTimeout, "the signed-out page", `location.pathname === '/portal/logout' && !document.querySelector('.who')`)
}

// mustLogPortalPageOnFailure logs the page's address and text if the test
// fails.
func mustLogPortalPageOnFailure(t *testing.T, page *Page) {
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		var v struct{ URL, Text string }
		if err := page.Eval(ctx, `({URL: location.href, Text: document.body ? document.body.innerText.slice(0, 3000) : ''})`, &v); err != nil {
			t.Logf("the portal page: %v", err)
			return
		}
		t.Logf("the portal page at %s:\n%s", redact(v.URL), v.Text)
	})
}

// portalRow is the My sessions row of a session, as a script expression.
func portalRow(id string) string { return portalJS(`li.session[data-id="` + id + `"]`) }

// TestE2E_Portal (acceptance 1, 2 and 4 of issue 16): against a real
// OpenID Connect provider (Hydra with the idptest login page) and real vnc
// sessions, in headless Chromium:
//  1. user A signs in, launches a desktop from a template, sees it Ready
//     without reloading, sees its thumbnail, and Connect opens the desktop;
//  2. A shares it view-only with user B, who signs in, sees it, connects,
//     sees the View only badge, and what B types does not reach the
//     session (what A types does);
//  3. an admin closes the server and sees it closed (and opens it again);
//  4. A deletes the session.
//
// axe-core finds no serious or critical violation on each portal page, the
// pages' CSP blocks nothing, and screenshots are saved as artifacts.
func TestE2E_Portal(t *testing.T) {
	skipWithoutBrowser(t)
	mustInstallPageAutorun(t)
	o := mustStartPortalIdP(t)
	e := MustStartEnvWith(t, EnvOptions{BrokerProps: portalProps(o)})
	o.SetRedirectURLs(t, e.BrokerURL+"/portal/callback")
	srv := e.MustWaitServer(t)
	owner, viewer := user2, user1
	_, home := mustUser(t, owner)
	typed := filepath.Join(home, "typed.txt")
	os.Remove(typed)

	// The template, through the API (the admin pages' form is tested in
	// internal/portal and below for axe).
	ctx := apiCtx(t)
	tr, err := portalAPI(e.Client, e.HTTP).CreateTemplate(ctx, api.Template{Name: "E2E desktop", Description: "xterm that records typing",
		Type: api.TypeVirtual, AutorunFile: pageAutorun, Groups: []string{portalUsersGroup}})
	if err != nil {
		t.Fatal(err)
	}
	tmplID := tr.Template.Id

	browser := mustStartPageBrowser(t)
	dir := artifactDir(t)
	page := browser.MustNewPage(t)
	mustLogPortalPageOnFailure(t, page)
	mustRecordCSPViolations(t, page)
	page.MustNavigate(t, e.BrokerURL+"/portal/signin")
	page.MustWaitTrue(t, portalPageTimeout, "the sign-in page", `!!document.querySelector('a[href="/portal/login"]')`)
	mustAxe(t, page, "sign-in page")

	// 1. A signs in and launches from the template.
	mustPortalSignIn(t, page, o, e.BrokerURL, owner)
	page.MustEval(t, `(() => { window.__noReload = true; return true; })()`, nil)
	page.MustWaitTrue(t, portalPageTimeout, "the template in the Launch list",
		`[...document.querySelectorAll('#launch-template option')].some((o) => o.value === `+jsString(tmplID)+`)`)
	page.MustEval(t, `(() => { document.getElementById('launch-template').value = `+jsString(tmplID)+`; return true; })()`, nil)
	mustAxe(t, page, "My sessions (empty)")
	mustPortalClick(t, page, `form[action="/portal/launch"] button[type="submit"]`)
	page.MustWaitTrue(t, portalPageTimeout, "a session row after Launch", `!!document.querySelector('li.session[data-id]:not([data-id=""])')`)
	var id string
	page.MustEval(t, `document.querySelector('li.session[data-id]:not([data-id=""])').dataset.id`, &id)
	e.track([]api.Session{{Id: id, Owner: owner}})
	page.MustEval(t, `(() => { window.__noReload = true; return true; })()`, nil)
	page.MustSaveScreenshot(t, dir, "1-launched")
	page.MustWaitTrue(t, portalReadyTimeout, "the session Ready on the page without a reload",
		`window.__noReload === true && `+portalRow(id)+`.querySelector('[data-f="label"]').textContent === 'Ready'`)
	page.MustWaitTrue(t, portalPageTimeout, "the session's thumbnail shown",
		`(() => { const i = `+portalRow(id)+`.querySelector('img[data-f="thumb"]'); return !i.hidden && i.complete && i.naturalWidth > 0; })()`)
	page.MustWaitTrue(t, portalPageTimeout, "the launch notice ('starting…') gone once the desktop is Ready",
		`!document.getElementById('notice')`)
	page.MustSaveScreenshot(t, dir, "1-ready-thumbnail")
	mustAxe(t, page, "My sessions (a Ready desktop)")

	// Connect: the link opens the desktop in a new tab.
	ownerTab := mustPortalConnect(t, browser, page, id, "A's desktop")
	ownerTab.MustSaveScreenshot(t, dir, "1-desktop")

	// 2. Share it view-only with B.
	page.MustEval(t, `(() => { `+portalRow(id)+`.querySelector('details[data-f="share"]').open = true; return true; })()`, nil)
	mustPortalType(t, page, `li.session[data-id="`+id+`"] form[data-f="shareform"] input[name="user"]`, viewer)
	page.MustEval(t, `(() => { `+portalRow(id)+`.querySelector('select[name="level"]').value = 'view'; return true; })()`, nil)
	mustPortalClick(t, page, `li.session[data-id="`+id+`"] form[data-f="shareform"] button[type="submit"]`)
	page.MustWaitTrue(t, portalPageTimeout, "the share listed on A's row",
		`!!`+portalRow(id)+` && `+portalRow(id)+`.querySelector('[data-f="shares"]').textContent.includes(`+jsString(viewer+": view only")+`)`)
	page.MustSaveScreenshot(t, dir, "2-shared")
	checkCSP(t, page, "A's portal pages")
	mustPortalSignOut(t, page)
	mustAxe(t, page, "signed-out page")

	// B signs in and sees it, shared by A.
	mustPortalSignIn(t, page, o, e.BrokerURL, viewer)
	page.MustWaitTrue(t, portalPageTimeout, "the shared desktop in B's list",
		`!!`+portalRow(id)+` && `+portalRow(id)+`.querySelector('[data-f="owner"]').textContent.includes(`+jsString("Shared by "+owner)+`)`)
	page.MustWaitTrue(t, portalPageTimeout, "B's row without Delete", `(() => { const f = `+portalRow(id)+`.querySelector('form[data-f="delete"]'); return !f || f.hidden; })()`)
	page.MustSaveScreenshot(t, dir, "2-viewer-list")
	mustAxe(t, page, "My sessions (shared with B)")
	viewerTab := mustPortalConnect(t, browser, page, id, "B's view of the desktop")
	viewerTab.MustWaitTrue(t, pageConnectTimeout, "the View only badge on B's page", `!document.getElementById('viewonly').hidden`)
	viewerTab.MustSaveScreenshot(t, dir, "2-viewer-desktop")
	// B types; then A types: A's text reaches the xterm, B's never does.
	var st pageState
	viewerTab.MustEval(t, pageStateJS, &st)
	viewerTab.MustClick(t, st.X+st.CW/2, st.Y+st.CH/2)
	viewerMarker := fmt.Sprintf("viewer-%d", time.Now().UnixNano()%1000000)
	viewerTab.MustType(t, viewerMarker+"\n")
	bringToFront(t, ownerTab)
	ownerTab.MustEval(t, pageStateJS, &st)
	ownerTab.MustClick(t, st.X+st.CW/2, st.Y+st.CH/2)
	ownerMarker := fmt.Sprintf("owner-%d", time.Now().UnixNano()%1000000)
	ownerTab.MustType(t, ownerMarker+"\n")
	poll.Until(t, pageChangeTimeout, "A's typing in "+typed, func() bool {
		b, _ := os.ReadFile(typed)
		return strings.Contains(string(b), ownerMarker)
	})
	if b, _ := os.ReadFile(typed); strings.Contains(string(b), viewerMarker) {
		t.Errorf("the view-only user's typing reached the session: %q", b)
	}
	bringToFront(t, page)
	checkCSP(t, page, "B's portal pages")
	// B's admin pages: 403, saying so.
	page.MustNavigate(t, e.BrokerURL+"/portal/admin/servers")
	page.MustWaitTrue(t, portalPageTimeout, "the admin page refused to B", `document.body.textContent.includes('for administrators')`)
	mustAxe(t, page, "403 page")
	page.MustNavigate(t, e.BrokerURL+"/portal/")
	page.MustWaitTrue(t, portalPageTimeout, "My sessions", `!!document.querySelector('form.signout')`)
	mustPortalSignOut(t, page)

	// 3. The admin closes the server (Force: it runs A's desktop) and sees
	// it closed.
	mustPortalSignIn(t, page, o, e.BrokerURL, portalAdmin)
	page.MustNavigate(t, e.BrokerURL+"/portal/admin/servers")
	srvRow := `tr[data-server="` + srv.Id + `"]`
	page.MustWaitTrue(t, portalPageTimeout, "the server listed AVAILABLE",
		`!!`+portalJS(srvRow)+` && `+portalJS(srvRow+` [data-f="availability"]`)+`.textContent === 'AVAILABLE'`)
	mustAxe(t, page, "admin servers")
	mustPortalClick(t, page, srvRow+` input[name="force"]`)
	mustPortalClick(t, page, srvRow+` button[data-action="close"]`)
	page.MustWaitTrue(t, portalPageTimeout, "the server shown closed",
		portalJS(srvRow+` [data-f="availability"]`)+`.textContent === 'UNAVAILABLE' && document.body.textContent.includes('is closed')`)
	page.MustSaveScreenshot(t, dir, "3-server-closed")
	ctx = apiCtx(t)
	servers, err := e.Client.DescribeServers(ctx, api.DescribeServersRequest{ServerIds: []string{srv.Id}})
	if err != nil || len(servers.Servers) != 1 || servers.Servers[0].Availability != "UNAVAILABLE" || servers.Servers[0].UnavailabilityReason != "SERVER_CLOSED" {
		t.Errorf("DescribeServers after the admin's Close: %+v %v, want UNAVAILABLE SERVER_CLOSED", servers, err)
	}
	mustPortalClick(t, page, srvRow+` button[data-action="open"]`)
	page.MustWaitTrue(t, portalPageTimeout, "the server open again",
		portalJS(srvRow+` [data-f="availability"]`)+`.textContent === 'AVAILABLE'`)
	// The other admin pages, for axe (and the template form's labels).
	for _, p := range []struct{ path, ready string }{
		{"/portal/admin/sessions?owner=" + owner, `!!document.querySelector('tr[data-session="` + id + `"]')`},
		{"/portal/admin/templates", `!!document.querySelector('tr[data-template="` + tmplID + `"]')`},
		{"/portal/admin/templates/" + tmplID, `document.getElementById('t-name').value === 'E2E desktop'`},
		{"/portal/admin/templates/new", `!!document.getElementById('template-form')`},
		{"/portal/admin/clients", `!!document.querySelector('#clients tbody tr')`},
	} {
		page.MustNavigate(t, e.BrokerURL+p.path)
		page.MustWaitTrue(t, portalPageTimeout, p.path, p.ready)
		mustAxe(t, page, "admin "+p.path)
	}
	page.MustSaveScreenshot(t, dir, "3-admin-clients")
	// A phone-sized screen: the admin sessions page fits, its table scrolls
	// in its own region.
	page.MustSetViewport(t, 375, 740, true)
	page.MustNavigate(t, e.BrokerURL+"/portal/admin/sessions")
	page.MustWaitTrue(t, portalPageTimeout, "the sessions page within 375 px",
		`!!document.querySelector('#admin-sessions') && document.documentElement.scrollWidth <= 375`)
	page.MustSaveScreenshot(t, dir, "3-admin-sessions-375px")
	mustAxe(t, page, "admin sessions at 375 px")
	page.MustSetViewport(t, 1280, 800, false)
	checkCSP(t, page, "the admin's pages")
	page.MustNavigate(t, e.BrokerURL+"/portal/")
	page.MustWaitTrue(t, portalPageTimeout, "My sessions", `!!document.querySelector('form.signout')`)
	mustPortalSignOut(t, page)

	// 4. A deletes the desktop.
	mustPortalSignIn(t, page, o, e.BrokerURL, owner)
	page.MustWaitTrue(t, portalPageTimeout, "A's desktop Ready", `!!`+portalRow(id)+` && `+portalRow(id)+`.querySelector('[data-f="label"]').textContent === 'Ready'`)
	page.MustEval(t, `(() => { window.confirm = () => true; return true; })()`, nil)
	mustPortalClick(t, page, `li.session[data-id="`+id+`"] form[data-f="delete"] button`)
	page.MustWaitTrue(t, portalPageTimeout, "the desktop closing or gone on the page",
		`!`+portalRow(id)+` || ['Closing', 'Ended'].includes(`+portalRow(id)+`.querySelector('[data-f="label"]').textContent)`)
	page.MustSaveScreenshot(t, dir, "4-deleted")
	e.MustWaitState(t, id, api.StateDeleted, deletedTimeout)
	ownerTab.MustWaitTrue(t, pageConnectTimeout, "A's desktop tab told the session ended", `document.body.dataset.state !== 'connected'`)
	checkCSP(t, page, "A's portal pages (delete)")
	t.Logf("IdP sign-ins: %v", o.Logins())
}

// mustPortalConnect clicks the Connect link of session id on My sessions
// (a link to a new tab) and returns the new tab, attached, once its page
// shows the desktop connected.
func mustPortalConnect(t *testing.T, browser *Chromium, page *Page, id, what string) *Page {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	type targetInfo struct {
		TargetID string `json:"targetId"`
		Type     string `json:"type"`
		URL      string `json:"url"`
	}
	var before struct {
		Infos []targetInfo `json:"targetInfos"`
	}
	if err := browser.Call(ctx, "", "Target.getTargets", nil, &before); err != nil {
		t.Fatal(err)
	}
	known := map[string]bool{}
	for _, ti := range before.Infos {
		known[ti.TargetID] = true
	}
	var link struct{ Href, Target string }
	page.MustEval(t, `(() => { const a = `+portalRow(id)+`.querySelector('a[data-f="connect"]'); return {Href: a.href, Target: a.target}; })()`, &link)
	if link.Target != "_blank" || !strings.Contains(link.Href, "/portal/sessions/") {
		t.Fatalf("Connect links to %q in target %q, want the portal's connect URL in a new tab", link.Href, link.Target)
	}
	mustPortalClick(t, page, `li.session[data-id="`+id+`"] a[data-f="connect"]`)
	var tab string
	poll.Until(t, portalPageTimeout, "the tab that Connect opens", func() bool {
		var now struct {
			Infos []targetInfo `json:"targetInfos"`
		}
		if err := browser.Call(ctx, "", "Target.getTargets", nil, &now); err != nil {
			return false
		}
		for _, ti := range now.Infos {
			if ti.Type == "page" && !known[ti.TargetID] {
				tab = ti.TargetID
				return true
			}
		}
		return false
	})
	var att struct {
		SessionID string `json:"sessionId"`
	}
	if err := browser.Call(ctx, "", "Target.attachToTarget", map[string]any{"targetId": tab, "flatten": true}, &att); err != nil {
		t.Fatal(err)
	}
	p := &Page{c: browser, session: att.SessionID}
	for _, m := range []string{"Page.enable", "Runtime.enable"} {
		if err := p.Call(ctx, m, nil, nil); err != nil {
			t.Fatal(err)
		}
	}
	if err := p.Call(ctx, "Emulation.setFocusEmulationEnabled", map[string]any{"enabled": true}, nil); err != nil {
		t.Fatal(err)
	}
	p.MustWaitTrue(t, pageConnectTimeout, what+" connected in the tab Connect opened",
		`!!document.body && document.body.dataset.state === 'connected' && !!document.querySelector('#screen canvas')`)
	return p
}

// portalBrowserClient is an HTTP client with a cookie jar that trusts the
// broker's CA and the IdP's, as a browser of the portal; it follows no
// redirect.
func portalBrowserClient(t *testing.T, o *idptest.OIDC, brokerCAs ...string) *http.Client {
	t.Helper()
	pool := x509.NewCertPool()
	for _, f := range append([]string{o.CAFile}, brokerCAs...) {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		pool.AppendCertsFromPEM(b)
	}
	jar, _ := cookiejar.New(nil)
	return &http.Client{Jar: jar, Timeout: 30 * time.Second,
		Transport:     &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

// portalHTTPSignIn signs user in at base through the IdP with hc (the
// login form posted as a browser does) and returns the CSRF token of the
// portal session, read from My sessions.
func portalHTTPSignIn(t *testing.T, o *idptest.OIDC, hc *http.Client, base, user string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), portalPageTimeout)
	defer cancel()
	resp, err := o.SignIn(ctx, hc, base+"/portal/login", user)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	_, body := portalGet(t, hc, base+"/portal/")
	m := regexp.MustCompile(`name="csrf" value="([^"]+)"`).FindStringSubmatch(body)
	if m == nil || !strings.Contains(body, user) {
		t.Fatalf("%s is not signed in at %s (sign-in ended %s):\n%.1000s", user, base, resp.Status, body)
	}
	return m[1]
}

// portalGet GETs u and returns the answer and its body.
func portalGet(t *testing.T, hc *http.Client, u string) (*http.Response, string) {
	t.Helper()
	resp, err := hc.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

// portalPost posts form to u with the given headers and returns the answer
// and its body.
func portalPost(t *testing.T, hc *http.Client, u string, form url.Values, headers map[string]string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, u, strings.NewReader(form.Encode()))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

// mustPortalLink runs berth-broker portal-link and returns the link.
func mustPortalLink(t *testing.T, e *Env, args ...string) string {
	t.Helper()
	out, err := exec.Command(filepath.Join(e.Bin, "berth-broker"), append([]string{"portal-link", "--config", e.BrokerConf, "--base-url", e.BrokerURL}, args...)...).Output()
	if err != nil {
		t.Fatalf("berth-broker portal-link %v: %v", args, err)
	}
	link := strings.TrimSpace(string(out))
	if !strings.HasPrefix(link, e.BrokerURL+"/portal/link?token=") {
		t.Fatalf("portal-link printed %q", link)
	}
	return link
}

// TestE2E_Portal_Refusals (acceptance 2 of issue 16, end to end): a used
// and an expired portal link are refused (410, saying what to do); a
// cross-site POST without the CSRF token is refused, from another origin
// of the same site in Chromium (whose SameSite=Lax cookie goes with it)
// and over HTTP, and creates nothing; a user cannot delete or share
// another user's session, nor connect to it.
func TestE2E_Portal_Refusals(t *testing.T) {
	skipWithoutBrowser(t)
	o := mustStartPortalIdP(t)
	e := MustStartEnvWith(t, EnvOptions{BrokerProps: portalProps(o)})
	o.SetRedirectURLs(t, e.BrokerURL+"/portal/callback")
	ctx := apiCtx(t)
	tr, err := portalAPI(e.Client, e.HTTP).CreateTemplate(ctx, api.Template{Name: "refusals", Type: api.TypeVirtual, Groups: []string{portalUsersGroup}})
	if err != nil {
		t.Fatal(err)
	}

	// Portal links: once, then refused; expired, refused.
	link := mustPortalLink(t, e, "--user", user1, "--expires-in", "5m")
	hc := portalBrowserClient(t, o, e.CAFile)
	u, _ := url.Parse(link)
	tok := u.Query().Get("token")
	if resp, body := portalGet(t, hc, link); resp.StatusCode != http.StatusOK || !strings.Contains(body, "Continue") {
		t.Fatalf("the link's page: %s", resp.Status)
	}
	if resp, _ := portalPost(t, hc, e.BrokerURL+"/portal/link", url.Values{"token": {tok}}, nil); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("first use of the link: %s, want 303", resp.Status)
	}
	if resp, body := portalPost(t, portalBrowserClient(t, o, e.CAFile), e.BrokerURL+"/portal/link", url.Values{"token": {tok}}, nil); resp.StatusCode != http.StatusGone || !strings.Contains(body, "already used or has expired") {
		t.Errorf("second use of the link: %s, want 410 saying it was used: %.300s", resp.Status, body)
	}
	expiring := mustPortalLink(t, e, "--user", user1, "--expires-in", "1s")
	eu, _ := url.Parse(expiring)
	created := time.Now()
	// The link's lifetime must pass; nothing can be polled without using it up.
	time.Sleep(time.Until(created.Add(1500 * time.Millisecond))) //sleep-ok: waits out the link's 1 s lifetime, no state to poll
	if resp, body := portalPost(t, portalBrowserClient(t, o, e.CAFile), e.BrokerURL+"/portal/link", url.Values{"token": {eu.Query().Get("token")}}, nil); resp.StatusCode != http.StatusGone || !strings.Contains(body, "expired") {
		t.Errorf("an expired link: %s, want 410 saying it expired: %.300s", resp.Status, body)
	}

	// Cross-site POSTs, over HTTP: no token, another origin, or both.
	annHC := portalBrowserClient(t, o, e.CAFile)
	csrf := portalHTTPSignIn(t, o, annHC, e.BrokerURL, user2)
	launch := url.Values{"template": {tr.Template.Id}}
	for _, c := range []struct {
		name    string
		form    url.Values
		headers map[string]string
	}{
		{"same origin, no token", launch, map[string]string{"Origin": e.BrokerURL}},
		{"cross-site, no token", launch, map[string]string{"Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site"}},
		{"cross-site, with the token", url.Values{"template": {tr.Template.Id}, "csrf": {csrf}}, map[string]string{"Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site"}},
		{"wrong token", url.Values{"template": {tr.Template.Id}, "csrf": {csrf + "x"}}, map[string]string{"Origin": e.BrokerURL}},
	} {
		if resp, body := portalPost(t, annHC, e.BrokerURL+"/portal/launch", c.form, c.headers); resp.StatusCode != http.StatusForbidden || !strings.Contains(body, "Refused") {
			t.Errorf("%s: %s, want 403 Refused: %.300s", c.name, resp.Status, body)
		}
	}

	// In Chromium: a page of another origin of the same site (127.0.0.1,
	// another port, HTTPS) posts a launch form to the portal; the browser
	// sends the SameSite=Lax cookie (same site) and the evil origin.
	browser := mustStartPageBrowser(t)
	page := browser.MustNewPage(t)
	mustLogPortalPageOnFailure(t, page)
	// The link page and a used link's page, for axe.
	page.MustNavigate(t, mustPortalLink(t, e, "--user", user1))
	page.MustWaitTrue(t, portalPageTimeout, "the link page", `document.readyState === 'complete' && !!document.querySelector('form[action="/portal/link"] button')`)
	mustAxe(t, page, "portal link page")
	page.MustNavigate(t, link)
	page.MustWaitTrue(t, portalPageTimeout, "a used link's page", `document.readyState === 'complete' && !!document.querySelector('form[action="/portal/link"] button')`)
	mustPortalClick(t, page, `form[action="/portal/link"] button`)
	page.MustWaitTrue(t, portalPageTimeout, "the used link refused in the browser", `document.body.textContent.includes('already used or has expired')`)
	mustAxe(t, page, "used link page")
	mustPortalSignIn(t, page, o, e.BrokerURL, user2)
	evil := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		fmt.Fprintf(w, `<!doctype html><html lang="en"><title>evil</title><form method="post" action="%s/portal/launch"><input type="hidden" name="template" value="%s"><button id="go" type="submit">Win a prize</button></form></html>`,
			e.BrokerURL, tr.Template.Id)
	}))
	defer evil.Close()
	page.MustNavigate(t, evil.URL)
	page.MustWaitTrue(t, portalPageTimeout, "the other site's page", `!!document.getElementById('go')`)
	mustPortalClick(t, page, "#go")
	page.MustWaitTrue(t, portalPageTimeout, "the portal refusing the other site's post",
		`location.href === `+jsString(e.BrokerURL+"/portal/launch")+` && document.body.textContent.includes('Refused')`)
	page.MustSaveScreenshot(t, artifactDir(t), "cross-site-refused")
	sessions, err := e.Client.DescribeSessions(apiCtx(t), api.DescribeSessionsRequest{Filters: []api.KeyValuePair{{Key: "owner", Value: user2}}})
	if err != nil || len(sessions.Sessions) != 0 {
		t.Fatalf("sessions of %s after the refused posts: %v %v, want none", user2, sessions, err)
	}

	// Another user's session: no delete, share or connect.
	resp, _ := portalPost(t, annHC, e.BrokerURL+"/portal/launch", url.Values{"template": {tr.Template.Id}, "csrf": {csrf}}, map[string]string{"Origin": e.BrokerURL})
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("launch with the token: %s, want 303", resp.Status)
	}
	poll.Until(t, portalPageTimeout, "the launched session", func() bool {
		s, err := e.Client.DescribeSessions(apiCtx(t), api.DescribeSessionsRequest{Filters: []api.KeyValuePair{{Key: "owner", Value: user2}}})
		if err == nil && len(s.Sessions) == 1 {
			e.track(s.Sessions)
			sessions = s
			return true
		}
		return false
	})
	id := sessions.Sessions[0].Id
	bobHC := portalBrowserClient(t, o, e.CAFile)
	bobCSRF := portalHTTPSignIn(t, o, bobHC, e.BrokerURL, user1)
	same := map[string]string{"Origin": e.BrokerURL}
	for _, c := range []struct {
		path string
		form url.Values
	}{
		{"/portal/sessions/" + id + "/delete", url.Values{"csrf": {bobCSRF}}},
		{"/portal/sessions/" + id + "/share", url.Values{"csrf": {bobCSRF}, "user": {user1}, "level": {"full"}}},
	} {
		if resp, body := portalPost(t, bobHC, e.BrokerURL+c.path, c.form, same); resp.StatusCode != http.StatusForbidden && resp.StatusCode != http.StatusNotFound {
			t.Errorf("another user's %s: %s, want 403 or 404: %.300s", c.path, resp.Status, body)
		}
	}
	if resp, _ := portalGet(t, bobHC, e.BrokerURL+"/portal/sessions/"+id+"/connect"); resp.StatusCode != http.StatusForbidden && resp.StatusCode != http.StatusNotFound {
		t.Errorf("another user's connect: %s, want 403 or 404", resp.Status)
	}
	if _, body := portalGet(t, bobHC, e.BrokerURL+"/portal/api/sessions"); strings.Contains(body, id) {
		t.Errorf("another user's session is in the user's list: %.300s", body)
	}
	if s, err := e.Describe(t, id); err != nil || s.State == api.StateDeleting || s.State == api.StateDeleted {
		t.Errorf("the owner's session after the other user's refused delete: %+v %v", s, err)
	}
}

// TestE2E_Portal_TwoBrokers (acceptance 3 of issue 16): two brokers on one
// PostgreSQL database; a user signs in on the first and keeps working on
// the second with the same cookie (launch there, listed on the first), and
// signing out on the second signs out on the first.
func TestE2E_Portal_TwoBrokers(t *testing.T) {
	o := mustStartPortalIdP(t)
	c := MustStartCluster(t, pgtest.DSN(t), 2, portalProps(o)...)
	b1, b2 := c.Brokers[0], c.Brokers[1]
	o.SetRedirectURLs(t, b1.URL+"/portal/callback", b2.URL+"/portal/callback")
	ctx := apiCtx(t)
	tr, err := portalAPI(b1.Client, b1.HTTP).CreateTemplate(ctx, api.Template{Name: "cluster", Type: api.TypeVirtual, Groups: []string{portalUsersGroup}})
	if err != nil {
		t.Fatal(err)
	}

	hc := portalBrowserClient(t, o, c.CAFile)
	csrf := portalHTTPSignIn(t, o, hc, b1.URL, user1)
	// The second broker knows the portal session: same page, same token.
	resp, body := portalGet(t, hc, b2.URL+"/portal/")
	if resp.StatusCode != http.StatusOK || !strings.Contains(body, user1) || !strings.Contains(body, csrf) || !strings.Contains(body, "cluster") {
		t.Fatalf("My sessions on the second broker: %s:\n%.1000s", resp.Status, body)
	}
	resp, body = portalPost(t, hc, b2.URL+"/portal/launch", url.Values{"template": {tr.Template.Id}, "csrf": {csrf}}, map[string]string{"Origin": b2.URL})
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("launch on the second broker: %s: %.500s", resp.Status, body)
	}
	var listed string
	poll.Until(t, portalPageTimeout, "the session launched on b2 listed by b1", func() bool {
		_, listed = portalGet(t, hc, b1.URL+"/portal/api/sessions")
		return strings.Contains(listed, `"id":`)
	})
	id := regexp.MustCompile(`"id":"([^"]+)"`).FindStringSubmatch(listed)[1]
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), apiTimeout)
		defer cancel()
		b1.Client.DeleteSessions(ctx, []api.DeleteSessionRequest{{SessionId: id, Owner: user1, Force: true}})
	})
	// Sign out on b2: b1 no longer knows the cookie.
	b1URL, _ := url.Parse(b1.URL + "/portal/")
	old := hc.Jar.Cookies(b1URL)
	if resp, _ := portalPost(t, hc, b2.URL+"/portal/logout", url.Values{"csrf": {csrf}}, map[string]string{"Origin": b2.URL}); resp.StatusCode != http.StatusOK {
		t.Fatalf("sign out on b2: %s", resp.Status)
	}
	// The jar dropped the cookie (Max-Age -1); the old value, sent again,
	// is refused by b1 too: the portal session is gone from the store.
	if resp, _ := portalGet(t, hc, b1.URL+"/portal/"); resp.StatusCode != http.StatusSeeOther {
		t.Errorf("My sessions on b1 after signing out on b2: %s, want 303 to sign-in", resp.Status)
	}
	if len(old) == 0 {
		t.Fatal("no portal cookie for b1 before signing out")
	}
	req, _ := http.NewRequest(http.MethodGet, b1.URL+"/portal/", nil)
	for _, ck := range old {
		req.AddCookie(ck)
	}
	bare := *hc
	bare.Jar = nil
	if resp, err := bare.Do(req); err != nil {
		t.Fatal(err)
	} else if resp.Body.Close(); resp.StatusCode != http.StatusSeeOther {
		t.Errorf("the signed-out cookie on b1: %s, want 303 to sign-in", resp.Status)
	}
}

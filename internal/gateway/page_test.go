package gateway_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/berth-dev/berth/internal/gateway"
	"github.com/berth-dev/berth/internal/poll"
)

// get fetches path from the env's gateway with optional request headers and
// returns the response with its body read.
func (e *env) get(t *testing.T, path string, hdr map[string]string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, e.srv.URL+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := e.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

// TestPage_CSP: the session page runs only served scripts and styles.
func TestPage_CSP(t *testing.T) {
	e := newEnv(t, "", 0)
	resp, body := e.get(t, "/?authToken=x", nil)
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/html; charset=utf-8" {
		t.Fatalf("page: %s %q", resp.Status, resp.Header.Get("Content-Type"))
	}
	if got := resp.Header.Get("Cache-Control"); got != "no-store" {
		t.Errorf("page Cache-Control %q, want no-store (its URL holds the token)", got)
	}
	csp := map[string]string{}
	for _, d := range strings.Split(resp.Header.Get("Content-Security-Policy"), ";") {
		name, value, _ := strings.Cut(strings.TrimSpace(d), " ")
		csp[name] = value
	}
	for name, want := range map[string]string{
		"default-src":     "'none'",
		"script-src":      "'self'",
		"style-src":       "'self'",
		"connect-src":     "'self'",
		"img-src":         "'self' data: blob:",
		"base-uri":        "'none'",
		"form-action":     "'none'",
		"frame-ancestors": "'none'",
	} {
		if csp[name] != want {
			t.Errorf("CSP %s %q, want %q (whole: %q)", name, csp[name], want, resp.Header.Get("Content-Security-Policy"))
		}
	}
	if h := resp.Header.Get("Content-Security-Policy"); strings.Contains(h, "unsafe-") || strings.Contains(h, "sha256-") {
		t.Errorf("CSP allows inline or eval'd code: %q", h)
	}
	// Nothing inline that the CSP would block: every script has a src, no
	// style element or attribute, no inline event handler.
	for _, s := range regexp.MustCompile(`<script[^>]*>`).FindAllString(body, -1) {
		if !strings.Contains(s, ` src="`) {
			t.Errorf("inline script %s", s)
		}
	}
	if m := regexp.MustCompile(`<style|\sstyle=|\son[a-z]+=`).FindString(body); m != "" {
		t.Errorf("the page has inline style or handlers: %q", m)
	}
	// The hooks the e2e tests read.
	for _, id := range []string{`id="screen"`, `id="status"`, `data-state="connecting"`, `id="toolbar"`} {
		if !strings.Contains(body, id) {
			t.Errorf("the page lacks %s", id)
		}
	}
}

// TestPage_Assets: the embedded script and style are served with their
// types, cached for good under the hash the page links, and revalidated
// otherwise.
func TestPage_Assets(t *testing.T) {
	e := newEnv(t, "", 0)
	_, page := e.get(t, "/", nil)
	for _, tc := range []struct{ name, ctype, want string }{
		{"page.js", "text/javascript; charset=utf-8", "from './novnc/core/rfb.js'"},
		{"page.css", "text/css; charset=utf-8", "#screen"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := regexp.MustCompile(regexp.QuoteMeta(tc.name) + `\?v=([0-9a-f]+)"`).FindStringSubmatch(page)
			if m == nil {
				t.Fatalf("the page does not link %s with a hash:\n%s", tc.name, page)
			}
			resp, body := e.get(t, "/"+tc.name+"?v="+m[1], nil)
			if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != tc.ctype || !strings.Contains(body, tc.want) {
				t.Fatalf("GET %s: %s %q, body has %q: %v", tc.name, resp.Status, resp.Header.Get("Content-Type"), tc.want, strings.Contains(body, tc.want))
			}
			if got := resp.Header.Get("Cache-Control"); got != "public, max-age=31536000, immutable" {
				t.Errorf("versioned %s Cache-Control %q", tc.name, got)
			}
			if resp.Header.Get("X-Content-Type-Options") != "nosniff" {
				t.Errorf("no nosniff on %s", tc.name)
			}
			etag := resp.Header.Get("ETag")
			resp, _ = e.get(t, "/"+tc.name, nil)
			if got := resp.Header.Get("Cache-Control"); resp.StatusCode != 200 || got != "no-cache" || resp.Header.Get("ETag") != etag {
				t.Errorf("unversioned %s: %s, Cache-Control %q, ETag %q (want no-cache, %q)", tc.name, resp.Status, got, resp.Header.Get("ETag"), etag)
			}
			resp, body = e.get(t, "/"+tc.name+"?v=old", map[string]string{"If-None-Match": `"x", ` + etag})
			if resp.StatusCode != http.StatusNotModified || body != "" {
				t.Errorf("revalidating %s with its ETag: %s, %d bytes, want 304", tc.name, resp.Status, len(body))
			}
		})
	}
	for _, p := range []string{"/nope.js", "/page.html", "/web/page.js", "/page.js/x"} {
		if resp, _ := e.get(t, p, nil); resp.StatusCode != 404 {
			t.Errorf("GET %s: %s, want 404", p, resp.Status)
		}
	}
}

// info asks session-info with a token (and a clientId when not empty).
func (e *env) info(t *testing.T, token, session, client string) (int, string, map[string]any) {
	t.Helper()
	q := "/session-info?authToken=" + url.QueryEscape(token) + "&sessionId=" + url.QueryEscape(session)
	if client != "" {
		q += "&clientId=" + url.QueryEscape(client)
	}
	resp, body := e.get(t, q, nil)
	if resp.StatusCode != 200 {
		return resp.StatusCode, body, nil
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" || resp.Header.Get("Cache-Control") != "no-store" {
		t.Errorf("session-info headers: %q %q", ct, resp.Header.Get("Cache-Control"))
	}
	var m map[string]any
	if err := json.Unmarshal([]byte(body), &m); err != nil {
		t.Fatalf("session-info: %v: %s", err, body)
	}
	return resp.StatusCode, body, m
}

// dialClient opens the session's WebSocket as the page does, with a
// clientId.
func (e *env) dialClient(t *testing.T, token, client string) *websocket.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	u := "wss" + e.srv.URL[len("https"):] + "/websockify?authToken=" + url.QueryEscape(token) + "&sessionId=" + sessID + "&clientId=" + client
	c, _, err := websocket.Dial(ctx, u, &websocket.DialOptions{HTTPClient: e.srv.Client()})
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	t.Cleanup(func() { c.CloseNow() })
	return c
}

// TestSessionInfo: what session-info tells the owner and a restricted user,
// and the peers each sees.
func TestSessionInfo(t *testing.T) {
	e := newEnv(t, "[permissions]\n%owner% allow builtin\nbob allow display mouse clipboard-copy file-download\ncarol allow display\n", 0)
	sess, _ := e.sessions.Session(sessID)
	sess.StorageRoot = "/srv/storage/alice"
	e.sessions.set(sess)
	ownerTok := e.broker.token(t, sessID, owner, owner)
	bobTok := e.broker.token(t, sessID, owner, "bob")
	carolTok := e.broker.token(t, sessID, owner, "carol")

	e.dialClient(t, ownerTok, "owner-page")
	e.dialClient(t, bobTok, "bob-page")
	poll.Until(t, 10*time.Second, "two bridged connections", func() bool { return e.gw.Connections(sessID) == 2 })

	perm := func(m map[string]any) map[string]any { p, _ := m["permissions"].(map[string]any); return p }
	peers := func(m map[string]any) []string {
		var out []string
		for _, p := range m["peers"].([]any) {
			out = append(out, p.(string))
		}
		return out
	}
	all := []string{"clipboardCopy", "clipboardPaste", "fileUpload", "fileDownload", "keyboard", "mouse"}

	_, body, m := e.info(t, ownerTok, sessID, "owner-page")
	if m == nil {
		t.Fatalf("owner: %s", body)
	}
	if m["viewOnly"] != false || m["user"] != owner || m["owner"] != owner || m["storage"] != true {
		t.Errorf("owner: %s", body)
	}
	for _, k := range all {
		if perm(m)[k] != true {
			t.Errorf("owner: permissions.%s %v, want true (%s)", k, perm(m)[k], body)
		}
	}
	if got := peers(m); !slices.Equal(got, []string{"bob"}) {
		t.Errorf("owner's peers %q, want [bob] (its own connection left out)", got)
	}
	exp, err := time.Parse(time.RFC3339, m["expiresAt"].(string))
	if err != nil || !exp.After(time.Now()) {
		t.Errorf("owner: expiresAt %v (%v), want a future RFC 3339 time", m["expiresAt"], err)
	}

	_, body, m = e.info(t, bobTok, sessID, "bob-page")
	if m == nil {
		t.Fatalf("bob: %s", body)
	}
	want := map[string]bool{"clipboardCopy": true, "fileDownload": true, "mouse": true}
	for _, k := range all {
		if perm(m)[k] != want[k] {
			t.Errorf("bob: permissions.%s %v, want %v (%s)", k, perm(m)[k], want[k], body)
		}
	}
	if m["viewOnly"] != false || m["user"] != "bob" || m["owner"] != owner {
		t.Errorf("bob: %s", body)
	}
	if got := peers(m); !slices.Equal(got, []string{owner}) {
		t.Errorf("bob's peers %q, want [alice]", got)
	}

	// carol (display only) is view-only; without a clientId she sees every
	// connection, and a clientId that is not valid counts as none.
	for _, client := range []string{"", "bad id!", strings.Repeat("x", 65)} {
		_, body, m = e.info(t, carolTok, sessID, client)
		if m == nil {
			t.Fatalf("carol: %s", body)
		}
		if m["viewOnly"] != true || perm(m)["keyboard"] != false || perm(m)["clipboardCopy"] != false {
			t.Errorf("carol: %s", body)
		}
		if got := peers(m); !slices.Equal(got, []string{owner, "bob"}) {
			t.Errorf("carol's peers (clientId %q) %q, want [alice bob]", client, got)
		}
	}

	// A session without a storage root says so.
	sess.StorageRoot = ""
	e.sessions.set(sess)
	if _, body, m = e.info(t, ownerTok, sessID, ""); m == nil || m["storage"] != false {
		t.Errorf("no storage root: %s", body)
	}
}

// TestSessionInfo_Ended: a valid token whose session is gone gets 404, which
// the page shows as "the session has ended"; an expired token 401 naming
// the expiry, which the page shows as an expired link.
func TestSessionInfo_Ended(t *testing.T) {
	e := newEnv(t, "", 0)
	tok := e.broker.token(t, sessID, owner, owner)
	if status, body, _ := e.info(t, tok, sessID, ""); status != 200 {
		t.Fatalf("before: %d %s", status, body)
	}
	e.sessions.remove(sessID)
	if status, body, _ := e.info(t, tok, sessID, ""); status != http.StatusNotFound || !strings.Contains(body, "session not found") {
		t.Errorf("ended session: %d %q, want 404 session not found", status, body)
	}
	past, err := e.broker.past.IssueConnectionToken(context.Background(), sessID, owner, owner)
	if err != nil {
		t.Fatal(err)
	}
	e.sessions.set(gateway.Session{ID: sessID, Owner: owner, Socket: e.rfb.path, UID: os.Getuid(), PID: os.Getpid()})
	if status, body, _ := e.info(t, past, sessID, ""); status != http.StatusUnauthorized || !strings.Contains(body, "expired") {
		t.Errorf("expired token: %d %q, want 401 naming the expiry", status, body)
	}
}

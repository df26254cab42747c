package main

import (
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"regexp"
	"strings"
	"testing"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/internal/portal"
)

// TestBroker_PortalLink: portal-link prints a single-use link to the
// portal that the running broker serves on its client connector, in front
// of the API (which still answers there); the user sees their queued
// session; the link works once; the command's bad input is refused naming
// the option.
func TestBroker_PortalLink(t *testing.T) {
	b := MustRunMain(t, t.TempDir(), nil)
	c := b.MustClient(t)
	out, err := c.CreateSessions(t.Context(), []api.CreateSessionRequest{{Name: "queued-desk", Owner: "alice", Type: api.TypeVirtual, EnqueueRequest: true}})
	if err != nil || len(out.SuccessfulList) != 1 {
		t.Fatalf("CreateSessions: %v %+v", err, out)
	}
	base := "https://" + b.ClientAddr()
	link, code := b.admin(t, "portal-link", "--user", "alice", "--groups", "users, devs", "--base-url", base)
	m := regexp.MustCompile(`^` + regexp.QuoteMeta(base) + `/portal/link\?token=([A-Za-z0-9_-]{43})\n$`).FindStringSubmatch(link)
	if code != 0 || m == nil {
		t.Fatalf("portal-link: exit %d %q", code, link)
	}
	jar, _ := cookiejar.New(nil)
	hc := *b.hc
	hc.Jar = jar
	hc.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	get := func(path string) (*http.Response, string) {
		t.Helper()
		resp, err := hc.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp, string(body)
	}
	postLink := func() *http.Response {
		t.Helper()
		req, _ := http.NewRequest("POST", base+"/portal/link", strings.NewReader(url.Values{"token": {m[1]}}.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.Header.Set("Origin", base)
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp
	}
	if resp, body := get("/portal/link?token=" + m[1]); resp.StatusCode != 200 || resp.Header.Get("Content-Security-Policy") != portal.CSP || !strings.Contains(body, "Continue") {
		t.Fatalf("GET the link: %s %v\n%.300s", resp.Status, resp.Header, body)
	}
	if resp := postLink(); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("use the link: %s, want 303", resp.Status)
	}
	if resp, body := get("/portal/"); resp.StatusCode != 200 || !strings.Contains(body, "alice") || !strings.Contains(body, "queued-desk") ||
		!strings.Contains(body, "Waiting for a free server") {
		t.Fatalf("My sessions: %s\n%.1500s", resp.Status, body)
	}
	if resp, body := get("/portal/api/sessions"); resp.StatusCode != 200 || !strings.Contains(body, `"queued":true`) {
		t.Fatalf("the script's sessions: %s %s", resp.Status, body)
	}
	if resp := postLink(); resp.StatusCode != http.StatusGone {
		t.Fatalf("the link again: %s, want 410", resp.Status)
	}
	// The API is unchanged on the same listener.
	if ds, err := c.DescribeSessions(t.Context(), api.DescribeSessionsRequest{}); err != nil || len(ds.Sessions) != 1 {
		t.Fatalf("DescribeSessions beside the portal: %v %+v", err, ds)
	}

	for _, tt := range []struct {
		name string
		args []string
		want string
	}{
		{"no user", []string{"portal-link"}, "--user is required"},
		{"a bad user", []string{"portal-link", "--user", "../root"}, "--user"},
		{"too long", []string{"portal-link", "--user", "alice", "--expires-in", "48h"}, "--expires-in"},
		{"a bad base URL", []string{"portal-link", "--user", "alice", "--base-url", "http://broker/x"}, "--base-url"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got, code := b.admin(t, tt.args...)
			if code != 2 || !strings.Contains(got, tt.want) {
				t.Fatalf("%v: exit %d %q, want 2 naming %s", tt.args, code, got, tt.want)
			}
		})
	}
}

// TestBroker_PortalDisabled: with portal-enabled = false /portal/ is the
// API's (no portal page).
func TestBroker_PortalDisabled(t *testing.T) {
	b := MustRunMain(t, t.TempDir(), func(c *Config) { c.PortalEnabled = false })
	resp, err := b.hc.Get("https://" + b.ClientAddr() + "/portal/signin")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode == 200 || resp.Header.Get("Content-Security-Policy") == portal.CSP {
		t.Fatalf("/portal/signin with the portal off: %s %v", resp.Status, resp.Header)
	}
}

func TestLoadConfig_Portal(t *testing.T) {
	tests := []struct {
		name, text, want string
	}{
		{"an http issuer", "portal-oidc-issuer = http://idp.example.com\nportal-oidc-client-id = x\n",
			`broker.properties:1: portal-oidc-issuer: "http://idp.example.com" is not an https URL`},
		{"an issuer with a query", "portal-oidc-issuer = https://idp.example.com/?a=b\nportal-oidc-client-id = x\n",
			`broker.properties:1: portal-oidc-issuer:`},
		{"an issuer without a client", "\nportal-oidc-issuer = https://idp.example.com\n",
			"broker.properties:2: portal-oidc-client-id: required when portal-oidc-issuer is set"},
		{"secret and secret file", "portal-oidc-client-secret = a\nportal-oidc-client-secret-file = /etc/berth/s\n",
			"broker.properties:2: portal-oidc-client-secret-file: portal-oidc-client-secret is set too; keep one"},
		{"scopes without openid", "portal-oidc-scopes = profile email\n",
			`broker.properties:1: portal-oidc-scopes: "profile email" is not a list of scopes, separated by spaces or commas, that holds openid`},
		{"a pattern without a group", "portal-user-claim-pattern = ^[a-z]+$\n",
			`broker.properties:1: portal-user-claim-pattern: "^[a-z]+$" is not a regular expression (RE2) with exactly one group`},
		{"a pattern that does not compile", "portal-user-claim-pattern = ([a-z]+\n",
			"broker.properties:1: portal-user-claim-pattern:"},
		{"an empty user claim", "portal-user-claim =\n", "broker.properties:1: portal-user-claim:"},
		{"a short session", "portal-session-minutes = 1\n", `broker.properties:1: portal-session-minutes: "1" is not a whole number of minutes (at least 5)`},
		{"an external URL with a path", "portal-external-url = https://broker.example.com/portal\n", "broker.properties:1: portal-external-url:"},
		{"a plain-http external URL", "portal-external-url = http://broker.example.com\n", "broker.properties:1: portal-external-url:"},
		{"portal-enabled not a boolean", "portal-enabled = yes\n", `broker.properties:1: portal-enabled: "yes" is not a boolean`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := loadConfigText(t, tt.text)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("load %q: %v, want %q", tt.text, err, tt.want)
			}
		})
	}
	c, _, err := loadConfigText(t, "portal-oidc-issuer = http://127.0.0.1:4444/\nportal-oidc-client-id = berth\nportal-oidc-scopes = openid,profile groups\n")
	if err != nil {
		t.Fatalf("a loopback http issuer: %v", err)
	}
	if got := portalScopes(c.PortalOIDCScopes); strings.Join(got, " ") != "openid profile groups" {
		t.Errorf("scopes %q", got)
	}
}

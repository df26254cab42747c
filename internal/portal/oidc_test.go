package portal

import (
	"crypto/tls"
	"crypto/x509"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/idptest"
)

// oidcBrowser is a browser that trusts the IdP's CA and the portal's
// certificate.
func oidcBrowser(t *testing.T, o *idptest.OIDC, e *userEnv) *http.Client {
	t.Helper()
	pem, err := os.ReadFile(o.CAFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	pool.AddCert(e.srv.Certificate())
	jar, _ := cookiejar.New(nil)
	return &http.Client{Jar: jar, Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
}

// TestPortal_OIDCSignIn signs users in through a real OpenID Connect
// provider (Ory Hydra, PKCE enforced): the user claim and its pattern, the
// groups claim and the admin group, names that cannot own sessions, a
// callback that does not belong to the browser, and sign-out with the IdP's
// end_session_endpoint.
func TestPortal_OIDCSignIn(t *testing.T) {
	o := idptest.StartOIDCWith(t, idptest.OIDCOptions{Users: map[string][]string{
		"ann":   {idptest.UsersGroup},
		"admin": {idptest.AdminGroup, idptest.UsersGroup},
		"-dash": {idptest.UsersGroup},
	}})
	oidcCfg := func(claim, pattern string) func(*Config) {
		return func(c *Config) {
			c.AdminGroup = idptest.AdminGroup
			c.OIDC = &OIDCConfig{Issuer: o.Issuer, ClientID: o.ClientID, ClientSecret: o.ClientSecret, HTTPClient: o.HTTP,
				UserClaim: claim}
			if pattern != "" {
				c.OIDC.UserPattern = regexp.MustCompile(pattern)
			}
		}
	}
	plain := newUserEnv(t, oidcCfg("", ""))
	mapped := newUserEnv(t, oidcCfg("email", `^([^@]+)@berth\.test$`))
	strict := newUserEnv(t, oidcCfg("email", `^([^@]+)@example\.com$`))
	o.SetRedirectURLs(t, plain.srv.URL+"/portal/callback", mapped.srv.URL+"/portal/callback", strict.srv.URL+"/portal/callback")

	tests := []struct {
		name   string
		e      *userEnv
		user   string
		status int
		want   []string
		admin  bool
	}{
		{"preferred_username", plain, "ann", 200, []string{"My sessions", "ann"}, false},
		{"the admin group", plain, "admin", 200, []string{"My sessions", "admin (admin)"}, true},
		{"email mapped by the pattern", mapped, "ann", 200, []string{"My sessions", "ann"}, false},
		{"email the pattern refuses", strict, "ann", 403, []string{"does not match", "portal-user-claim-pattern"}, false},
		{"a name that cannot own sessions", plain, "-dash", 403, []string{"cannot own desktops here", "portal-user-claim"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			hc := oidcBrowser(t, o, tt.e)
			resp, err := o.SignIn(t.Context(), hc, tt.e.srv.URL+"/portal/login", tt.user)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			body := string(b)
			if resp.StatusCode != tt.status {
				t.Fatalf("sign in %s: %s (%s), want %d\n%.600s", tt.user, resp.Status, resp.Request.URL, tt.status, body)
			}
			for _, w := range tt.want {
				if !strings.Contains(body, w) {
					t.Errorf("the page lacks %q:\n%.800s", w, body)
				}
			}
			if tt.status != 200 {
				for _, c := range hc.Jar.Cookies(mustURL(t, tt.e.srv.URL+"/portal/")) {
					if c.Name == sessionCookie {
						t.Errorf("a refused sign-in set the session cookie")
					}
				}
				return
			}
			probe, _ := http.NewRequest("GET", tt.e.srv.URL+"/portal/", nil)
			for _, c := range hc.Jar.Cookies(probe.URL) {
				probe.AddCookie(c)
			}
			s, err := tt.e.portal.session(probe)
			if err != nil || s == nil || s.Admin != tt.admin || s.IDToken == "" {
				t.Fatalf("portal session %+v %v, want admin=%v with an ID token", s, err, tt.admin)
			}
			if tt.admin && !strings.Contains(strings.Join(s.Groups, ","), idptest.AdminGroup) {
				t.Errorf("groups %v", s.Groups)
			}
			// The callback again (a replayed code and state): refused.
			if resp, err := hc.Get(tt.e.srv.URL + "/portal/callback?" + url.Values{"state": {"replayed"}, "code": {"x"}}.Encode()); err != nil || resp.StatusCode != 400 {
				t.Errorf("replayed callback: %v %v, want 400", resp.Status, err)
			}
			// Sign-out offers the IdP's sign-out too.
			csrf := regexp.MustCompile(`name="csrf" value="([^"]+)"`).FindStringSubmatch(body)
			if csrf == nil {
				t.Fatalf("no CSRF token in the page")
			}
			req, _ := http.NewRequest("POST", tt.e.srv.URL+"/portal/logout", strings.NewReader(url.Values{"csrf": {csrf[1]}}.Encode()))
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			req.Header.Set("Origin", tt.e.srv.URL)
			out, err := hc.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			ob, _ := io.ReadAll(out.Body)
			out.Body.Close()
			if out.StatusCode != 200 || !strings.Contains(string(ob), "Sign out there too") || !strings.Contains(string(ob), strings.TrimSuffix(o.Issuer, "/")) {
				t.Errorf("sign-out: %s\n%.600s", out.Status, ob)
			}
		})
	}
	if got := o.Logins(); len(got) != len(tests) {
		t.Errorf("the IdP signed in %v", got)
	}

	// A callback whose state is not this browser's: refused before any
	// code exchange.
	hc := oidcBrowser(t, o, plain)
	resp, err := hc.Get(plain.srv.URL + "/portal/callback?state=abc&code=def")
	if err != nil || resp.StatusCode != 400 {
		t.Fatalf("foreign callback: %v %v, want 400", resp, err)
	}
	// The IdP's error comes back in plain words.
	resp, err = hc.Get(plain.srv.URL + "/portal/callback?error=access_denied&error_description=The+user+said+no")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 401 || !strings.Contains(string(b), "The user said no") {
		t.Fatalf("IdP error: %s\n%.300s", resp.Status, b)
	}
}

// TestPortal_OIDCUnreachable: an IdP that does not answer gives a page
// saying so, and the broker side keeps serving.
func TestPortal_OIDCUnreachable(t *testing.T) {
	e := newUserEnv(t, func(c *Config) {
		c.OIDC = &OIDCConfig{Issuer: "https://127.0.0.1:1/", ClientID: "x"}
	})
	resp, body := e.browser().do(t, "GET", "/portal/login", nil, nil)
	if resp.StatusCode != http.StatusBadGateway || !strings.Contains(body, "identity provider cannot be reached") {
		t.Fatalf("login with the IdP down: %s\n%.300s", resp.Status, body)
	}
	if resp, _ := e.browser().do(t, "GET", "/portal/signin", nil, nil); resp.StatusCode != 200 {
		t.Fatalf("sign-in page: %s", resp.Status)
	}
}

package idptest

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"io"
	"net"
	"net/http"
	"net/url"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
)

// The groups of DefaultUsers.
const (
	// AdminGroup is the group of the default admin user.
	AdminGroup = "berth-admins"
	// UsersGroup is the group of every default user.
	UsersGroup = "users"
)

// DefaultUsers are the users StartOIDC's login page signs in when
// OIDCOptions.Users is nil: user name → groups. ann and bob are plain users,
// admin is in AdminGroup.
var DefaultUsers = map[string][]string{
	"ann":   {UsersGroup},
	"bob":   {UsersGroup},
	"admin": {AdminGroup, UsersGroup},
}

// OIDCScopes are the scopes the OIDC client may ask for.
var OIDCScopes = []string{"openid", "profile", "email", "groups", "offline_access", "offline"}

// OIDCOptions change what StartOIDCWith runs.
type OIDCOptions struct {
	Options
	// Users are the users the login page signs in: OS user name → the
	// groups of its ID token (DefaultUsers if nil).
	Users map[string][]string
	// TokenEndpointAuthMethod is the client's authentication at the token
	// endpoint: client_secret_basic (the default) or client_secret_post.
	TokenEndpointAuthMethod string
}

// OIDC is a Hydra that logs users in for the authorization code flow: its
// login and consent URLs are a small handler of this package (LoginURL), a
// page with a user name field and a Sign in button that accepts Hydra's
// login challenge for the user typed (when it is one of Users) and then its
// consent challenge, with the ID token claims preferred_username (the user
// name), email (user@berth.test), name and groups (the user's). PKCE is
// enforced for every client. One confidential client is registered
// (ClientID, ClientSecret), for the grant types authorization_code and
// refresh_token, response type code and the scopes OIDCScopes.
type OIDC struct {
	*Server
	// ClientID and ClientSecret are the registered client's credentials.
	ClientID, ClientSecret string
	// LoginURL is the login page (HTTPS, with the issuer's certificate).
	LoginURL string
	// ConsentURL and LogoutURL are the handler's other pages.
	ConsentURL, LogoutURL string
	// Users are the users the login page signs in.
	Users map[string][]string

	mu     sync.Mutex
	logins []string // user names signed in, in order; guarded by mu
}

// StartOIDC starts an OIDC Hydra (see OIDC) with DefaultUsers and a client
// whose redirect URIs are redirectURLs (SetRedirectURLs changes them later,
// once the relying party knows its address).
func StartOIDC(tb testing.TB, redirectURLs ...string) *OIDC {
	tb.Helper()
	return StartOIDCWith(tb, OIDCOptions{}, redirectURLs...)
}

// StartOIDCWith is StartOIDC with options.
func StartOIDCWith(tb testing.TB, opts OIDCOptions, redirectURLs ...string) *OIDC {
	tb.Helper()
	o := &OIDC{Users: opts.Users}
	if o.Users == nil {
		o.Users = DefaultUsers
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	base := "https://" + ln.Addr().String()
	o.LoginURL, o.ConsentURL, o.LogoutURL = base+"/login", base+"/consent", base+"/logout"
	o.Server = start(tb, opts.Options, func(s *Server, conf map[string]any) {
		urls := conf["urls"].(map[string]any)
		urls["login"], urls["consent"], urls["logout"] = o.LoginURL, o.ConsentURL, o.LogoutURL
		urls["post_logout_redirect"] = base + "/signed-out"
		conf["oauth2"] = map[string]any{"pkce": map[string]any{"enforced": true}}
		// Warnings and errors only: a sign-in logs a dozen long request
		// lines, which would drown the end of the log a failed test shows.
		conf["log"] = map[string]any{"level": "warn", "format": "json"}
	})
	cert, err := tls.LoadX509KeyPair(filepath.Join(o.Dir, "tls.pem"), filepath.Join(o.Dir, "tls.key"))
	if err != nil {
		ln.Close()
		tb.Fatal(err)
	}
	srv := &http.Server{Handler: o.handler(), ReadHeaderTimeout: callTimeout}
	go srv.Serve(tls.NewListener(ln, &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}))
	tb.Cleanup(func() { srv.Close() })
	method := opts.TokenEndpointAuthMethod
	if method == "" {
		method = "client_secret_basic"
	}
	c := o.RegisterOIDCClient(tb, method, redirectURLs...)
	o.ClientID, o.ClientSecret = c.ID, c.Secret
	return o
}

// RegisterOIDCClient registers a confidential client for the authorization
// code flow (grant types authorization_code and refresh_token, response
// type code, scopes OIDCScopes) with the token endpoint authentication
// method (client_secret_basic or client_secret_post) and redirect URIs.
func (s *Server) RegisterOIDCClient(tb testing.TB, method string, redirectURLs ...string) Client {
	tb.Helper()
	if redirectURLs == nil {
		redirectURLs = []string{}
	}
	body, err := json.Marshal(map[string]any{
		"client_name":                "berth-portal-test",
		"grant_types":                []string{"authorization_code", "refresh_token"},
		"response_types":             []string{"code"},
		"scope":                      strings.Join(OIDCScopes, " "),
		"redirect_uris":              redirectURLs,
		"token_endpoint_auth_method": method,
	})
	if err != nil {
		tb.Fatal(err)
	}
	var out struct {
		ID     string `json:"client_id"`
		Secret string `json:"client_secret"`
	}
	if err := s.admin(http.MethodPost, "/admin/clients", "", body, http.StatusCreated, &out); err != nil {
		tb.Fatalf("idptest: register an OIDC client: %v", err)
	}
	if out.ID == "" || out.Secret == "" {
		tb.Fatalf("idptest: register an OIDC client: the answer holds no client_id or client_secret")
	}
	return Client{ID: out.ID, Secret: out.Secret}
}

// SetRedirectURLs replaces the redirect URIs of the client (its secret
// stays).
func (o *OIDC) SetRedirectURLs(tb testing.TB, redirectURLs ...string) {
	tb.Helper()
	if redirectURLs == nil {
		redirectURLs = []string{}
	}
	body, err := json.Marshal([]map[string]any{{"op": "replace", "path": "/redirect_uris", "value": redirectURLs}})
	if err != nil {
		tb.Fatal(err)
	}
	var out struct {
		RedirectURIs []string `json:"redirect_uris"`
	}
	if err := o.admin(http.MethodPatch, "/admin/clients/"+url.PathEscape(o.ClientID), "", body, http.StatusOK, &out); err != nil {
		tb.Fatalf("idptest: set the redirect URIs: %v", err)
	}
	if !slices.Equal(out.RedirectURIs, redirectURLs) {
		tb.Fatalf("idptest: set the redirect URIs %v, Hydra has %v", redirectURLs, out.RedirectURIs)
	}
}

// Logins returns the user names the login page signed in, in order.
func (o *OIDC) Logins() []string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return slices.Clone(o.logins)
}

// SignIn signs user in through a relying party with hc, as a browser would:
// it GETs start (the relying party's sign-in URL, or an authorization URL),
// follows the redirects, and where they reach the login page posts the
// user's name to it, then follows the rest. It returns the first answer
// that is not a redirect (its body unread), or the first redirect to a URL
// outside of the IdP and the relying party's host if stop says so. hc needs
// a cookie jar and must trust the IdP's CA (CAFile) and the relying
// party's; its CheckRedirect is not used.
func (o *OIDC) SignIn(ctx context.Context, hc *http.Client, start, user string) (*http.Response, error) {
	c := *hc
	c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	next, method, form := start, http.MethodGet, url.Values(nil)
	for hop := 0; hop < 20; hop++ {
		var body io.Reader
		if form != nil {
			body = strings.NewReader(form.Encode())
		}
		req, err := http.NewRequestWithContext(ctx, method, next, body)
		if err != nil {
			return nil, err
		}
		if form != nil {
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		}
		resp, err := c.Do(req)
		if err != nil {
			return nil, err
		}
		loc := resp.Header.Get("Location")
		if resp.StatusCode < 300 || resp.StatusCode > 399 || loc == "" {
			return resp, nil
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		u, err := req.URL.Parse(loc)
		if err != nil {
			return nil, fmt.Errorf("redirect from %s to %q: %w", req.URL.Redacted(), loc, err)
		}
		method, form, next = http.MethodGet, nil, u.String()
		if strings.HasPrefix(next, o.LoginURL+"?") {
			// The login page: post the form its Sign in button posts.
			method, next = http.MethodPost, o.LoginURL
			form = url.Values{"login_challenge": {u.Query().Get("login_challenge")}, "user": {user}}
		}
	}
	return nil, errors.New("idptest: more than 20 redirects signing in")
}

// handler serves the login, consent, logout and signed-out pages.
func (o *OIDC) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /login", o.loginPage)
	mux.HandleFunc("POST /login", o.login)
	mux.HandleFunc("GET /consent", o.consent)
	mux.HandleFunc("GET /logout", o.logout)
	mux.HandleFunc("GET /signed-out", func(w http.ResponseWriter, r *http.Request) {
		page(w, http.StatusOK, "Signed out", "You are signed out of the test identity provider.")
	})
	return mux
}

// loginTmpl is the login page: a labelled user name field and a Sign in
// button (no script).
var loginTmpl = template.Must(template.New("login").Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>Sign in: berth test IdP</title></head>
<body><main>
<h1>Sign in to the test identity provider</h1>
{{if .Error}}<p role="alert" id="error">{{.Error}}</p>{{end}}
<form method="post" action="/login">
<input type="hidden" name="login_challenge" value="{{.Challenge}}">
<p><label for="user">User name</label>
<input id="user" name="user" autocomplete="username" autofocus required value="{{.User}}"></p>
<p><button id="signin" type="submit">Sign in</button></p>
</form>
<p>Users: {{range $i, $u := .Users}}{{if $i}}, {{end}}{{$u}}{{end}}.</p>
</main></body></html>
`))

// loginPage shows the login form for Hydra's login challenge, or accepts
// the challenge at once when Hydra says the user is already known (skip).
func (o *OIDC) loginPage(w http.ResponseWriter, r *http.Request) {
	challenge := r.URL.Query().Get("login_challenge")
	if challenge == "" {
		page(w, http.StatusBadRequest, "No login challenge", "Start signing in at the application: this page needs Hydra's login_challenge.")
		return
	}
	var req struct {
		Skip    bool   `json:"skip"`
		Subject string `json:"subject"`
	}
	if err := o.admin(http.MethodGet, "/admin/oauth2/auth/requests/login", "login_challenge="+url.QueryEscape(challenge), nil, http.StatusOK, &req); err != nil {
		page(w, http.StatusBadRequest, "Unknown login challenge", err.Error())
		return
	}
	if req.Skip {
		o.acceptLogin(w, r, challenge, req.Subject)
		return
	}
	o.showLogin(w, http.StatusOK, challenge, "", "")
}

// showLogin renders the login form.
func (o *OIDC) showLogin(w http.ResponseWriter, status int, challenge, user, msg string) {
	users := make([]string, 0, len(o.Users))
	for u := range o.Users {
		users = append(users, u)
	}
	sort.Strings(users)
	var b bytes.Buffer
	loginTmpl.Execute(&b, map[string]any{"Challenge": challenge, "User": user, "Error": msg, "Users": users})
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Content-Security-Policy", "default-src 'none'; form-action 'self' https:; base-uri 'none'")
	w.WriteHeader(status)
	w.Write(b.Bytes())
}

// login is the Sign in button: it accepts the login challenge for a known
// user and redirects to Hydra.
func (o *OIDC) login(w http.ResponseWriter, r *http.Request) {
	challenge, user := r.PostFormValue("login_challenge"), strings.TrimSpace(r.PostFormValue("user"))
	if challenge == "" {
		page(w, http.StatusBadRequest, "No login challenge", "Start signing in at the application.")
		return
	}
	if _, ok := o.Users[user]; !ok {
		o.showLogin(w, http.StatusBadRequest, challenge, user, fmt.Sprintf("Unknown user %q: type one of the users listed below.", user))
		return
	}
	o.acceptLogin(w, r, challenge, user)
}

// acceptLogin accepts the login challenge for user and sends the browser
// on to Hydra.
func (o *OIDC) acceptLogin(w http.ResponseWriter, r *http.Request, challenge, user string) {
	body, _ := json.Marshal(map[string]any{"subject": user, "remember": false})
	var out struct {
		RedirectTo string `json:"redirect_to"`
	}
	if err := o.admin(http.MethodPut, "/admin/oauth2/auth/requests/login/accept", "login_challenge="+url.QueryEscape(challenge), body, http.StatusOK, &out); err != nil {
		page(w, http.StatusBadGateway, "Hydra refused the login", err.Error())
		return
	}
	o.mu.Lock()
	o.logins = append(o.logins, user)
	o.mu.Unlock()
	http.Redirect(w, r, out.RedirectTo, http.StatusSeeOther)
}

// consent accepts Hydra's consent challenge at once, granting the scopes
// and audiences asked for, with the user's claims in the ID token.
func (o *OIDC) consent(w http.ResponseWriter, r *http.Request) {
	challenge := r.URL.Query().Get("consent_challenge")
	q := "consent_challenge=" + url.QueryEscape(challenge)
	var req struct {
		Subject  string   `json:"subject"`
		Scope    []string `json:"requested_scope"`
		Audience []string `json:"requested_access_token_audience"`
	}
	if err := o.admin(http.MethodGet, "/admin/oauth2/auth/requests/consent", q, nil, http.StatusOK, &req); err != nil {
		page(w, http.StatusBadRequest, "Unknown consent challenge", err.Error())
		return
	}
	groups := o.Users[req.Subject]
	if groups == nil {
		groups = []string{}
	}
	claims := map[string]any{
		"preferred_username": req.Subject,
		"name":               req.Subject,
		"email":              req.Subject + "@berth.test",
		"email_verified":     true,
		"groups":             groups,
	}
	if req.Scope == nil {
		req.Scope = []string{}
	}
	if req.Audience == nil {
		req.Audience = []string{}
	}
	body, _ := json.Marshal(map[string]any{
		"grant_scope":                 req.Scope,
		"grant_access_token_audience": req.Audience,
		"remember":                    false,
		"session":                     map[string]any{"id_token": claims},
	})
	var out struct {
		RedirectTo string `json:"redirect_to"`
	}
	if err := o.admin(http.MethodPut, "/admin/oauth2/auth/requests/consent/accept", q, body, http.StatusOK, &out); err != nil {
		page(w, http.StatusBadGateway, "Hydra refused the consent", err.Error())
		return
	}
	http.Redirect(w, r, out.RedirectTo, http.StatusSeeOther)
}

// logout accepts Hydra's logout challenge (RP-initiated logout).
func (o *OIDC) logout(w http.ResponseWriter, r *http.Request) {
	q := "logout_challenge=" + url.QueryEscape(r.URL.Query().Get("logout_challenge"))
	var out struct {
		RedirectTo string `json:"redirect_to"`
	}
	if err := o.admin(http.MethodPut, "/admin/oauth2/auth/requests/logout/accept", q, nil, http.StatusOK, &out); err != nil {
		page(w, http.StatusBadRequest, "Unknown logout challenge", err.Error())
		return
	}
	http.Redirect(w, r, out.RedirectTo, http.StatusSeeOther)
}

// page writes a small HTML page.
func page(w http.ResponseWriter, status int, title, msg string) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Content-Security-Policy", "default-src 'none'")
	w.WriteHeader(status)
	fmt.Fprintf(w, "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>%s</title></head><body><main><h1>%s</h1><p>%s</p></main></body></html>\n",
		template.HTMLEscapeString(title), template.HTMLEscapeString(title), template.HTMLEscapeString(msg))
}

// admin calls Hydra's admin API: method on path with the query and a JSON
// body, and decodes an answer of status want into out.
func (s *Server) admin(method, path, query string, body []byte, want int, out any) error {
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	u := s.AdminURL + path
	if query != "" {
		u += "?" + query
	}
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		return err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	return s.do(req, want, out)
}

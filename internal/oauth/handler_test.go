package oauth_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/oauth"
)

func TestAuthority_TokenHandler(t *testing.T) {
	e := MustEnv(t)
	api, secret := e.MustClient(t, oauth.KindAPI)
	agent, agentSecret := e.MustClient(t, oauth.KindAgent)
	form := "application/x-www-form-urlencoded"
	basic := func(id, secret string) func(*http.Request) {
		return func(r *http.Request) { r.SetBasicAuth(id, secret) }
	}
	creds := url.Values{"client_id": {api.ID}, "client_secret": {secret}}.Encode()

	const (
		unsupportedGrant = `{"error":"unsupported_grant_type"}`
		invalidClient    = `{"error":"invalid_client"}`
	)
	tests := []struct {
		name        string
		method      string
		target      string
		contentType string
		body        string
		auth        func(*http.Request)
		status      int
		errBody     string // exact JSON for errors; empty for 200
	}{
		// The AWS documented request: grant_type in the query, Basic, no body.
		{"basic, query grant", "POST", "/oauth2/token?grant_type=client_credentials", form, "", basic(api.ID, secret), 200, ""},
		{"basic, form grant", "POST", "/oauth2/token", form, "grant_type=client_credentials", basic(api.ID, secret), 200, ""},
		{"basic, both grants", "POST", "/oauth2/token?grant_type=client_credentials", form, "grant_type=client_credentials", basic(api.ID, secret), 200, ""},
		{"form credentials", "POST", "/oauth2/token", form, "grant_type=client_credentials&" + creds, nil, 200, ""},
		{"form credentials, query grant", "POST", "/oauth2/token?grant_type=client_credentials", form, creds, nil, 200, ""},
		{"basic with matching form client_id", "POST", "/oauth2/token?grant_type=client_credentials", form, "client_id=" + api.ID, basic(api.ID, secret), 200, ""},

		{"wrong grant", "POST", "/oauth2/token?grant_type=password", form, "", basic(api.ID, secret), 400, unsupportedGrant},
		{"authorization code grant in body", "POST", "/oauth2/token", form, "grant_type=authorization_code", basic(api.ID, secret), 400, unsupportedGrant},
		{"missing grant", "POST", "/oauth2/token", form, "", basic(api.ID, secret), 400, `{"error":"invalid_request","error_description":"missing grant_type"}`},
		{"conflicting grants", "POST", "/oauth2/token?grant_type=client_credentials", form, "grant_type=password", basic(api.ID, secret), 400, `{"error":"invalid_request","error_description":"conflicting grant_type parameters"}`},
		{"two auth methods", "POST", "/oauth2/token?grant_type=client_credentials", form, creds, basic(api.ID, secret), 400, `{"error":"invalid_request","error_description":"more than one client authentication method"}`},
		{"basic and other form client_id", "POST", "/oauth2/token?grant_type=client_credentials", form, "client_id=other", basic(api.ID, secret), 400, `{"error":"invalid_request","error_description":"client_id does not match the authorization header"}`},
		{"body too large", "POST", "/oauth2/token", form, "grant_type=client_credentials&x=" + strings.Repeat("a", 70<<10), basic(api.ID, secret), 400, `{"error":"invalid_request","error_description":"request body too large"}`},
		{"bearer header", "POST", "/oauth2/token?grant_type=client_credentials", form, "", func(r *http.Request) { r.Header.Set("Authorization", "Bearer x") }, 400, `{"error":"invalid_request","error_description":"unsupported authorization header"}`},

		{"wrong secret", "POST", "/oauth2/token?grant_type=client_credentials", form, "", basic(api.ID, agentSecret), 401, invalidClient},
		{"unknown client", "POST", "/oauth2/token?grant_type=client_credentials", form, "", basic("nobody", secret), 401, invalidClient},
		{"no credentials", "POST", "/oauth2/token?grant_type=client_credentials", form, "", nil, 401, invalidClient},
		{"credentials in query", "POST", "/oauth2/token?grant_type=client_credentials&" + creds, form, "", nil, 401, invalidClient},
		{"agent client", "POST", "/oauth2/token?grant_type=client_credentials", form, "", basic(agent.ID, agentSecret), 401, invalidClient},

		{"GET", "GET", "/oauth2/token?grant_type=client_credentials", "", "", basic(api.ID, secret), 405, `{"error":"invalid_request","error_description":"method not allowed"}`},
	}
	h := e.auth.TokenHandler()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := httptest.NewRequest(tt.method, tt.target, strings.NewReader(tt.body))
			if tt.contentType != "" {
				r.Header.Set("Content-Type", tt.contentType)
			}
			if tt.auth != nil {
				tt.auth(r)
			}
			w := httptest.NewRecorder()
			h.ServeHTTP(w, r)
			if w.Code != tt.status {
				t.Fatalf("status = %d, want %d; body %s", w.Code, tt.status, w.Body)
			}
			if got := w.Header().Get("Content-Type"); got != "application/json" {
				t.Errorf("Content-Type = %q", got)
			}
			if got := w.Header().Get("Cache-Control"); got != "no-store" {
				t.Errorf("Cache-Control = %q, want no-store", got)
			}
			if tt.status == 401 && w.Header().Get("WWW-Authenticate") != `Basic realm="berth"` {
				t.Errorf("WWW-Authenticate = %q", w.Header().Get("WWW-Authenticate"))
			}
			if tt.status == 405 && w.Header().Get("Allow") != "POST" {
				t.Errorf("Allow = %q", w.Header().Get("Allow"))
			}
			if tt.errBody != "" {
				if got := strings.TrimSpace(w.Body.String()); got != tt.errBody {
					t.Errorf("body = %s, want %s", got, tt.errBody)
				}
				return
			}
			var resp map[string]any
			if err := json.Unmarshal(w.Body.Bytes(), &resp); err != nil {
				t.Fatal(err)
			}
			if len(resp) != 3 || resp["token_type"] != "Bearer" || resp["expires_in"] != float64(3600) {
				t.Errorf("response = %v", resp)
			}
			tok, _ := resp["access_token"].(string)
			p, err := e.auth.VerifyAccessToken(context.Background(), tok)
			if err != nil || p.ClientID != api.ID || p.Kind != oauth.KindAPI {
				t.Errorf("issued token: %+v, %v", p, err)
			}
		})
	}

	// Nothing secret reached the log.
	log := e.log.String()
	for _, s := range []string{secret, agentSecret} {
		if strings.Contains(log, s) {
			t.Errorf("log contains a client secret:\n%s", log)
		}
	}
	if strings.Contains(log, "eyJ") {
		t.Errorf("log contains a token:\n%s", log)
	}
}

func TestAuthority_JWKSHandler(t *testing.T) {
	e := MustEnv(t)
	h := e.auth.JWKSHandler()
	w := httptest.NewRecorder()
	h.ServeHTTP(w, httptest.NewRequest("GET", "/.well-known/jwks.json", nil))
	if w.Code != 200 || w.Header().Get("Content-Type") != "application/json" {
		t.Fatalf("GET: %d %q", w.Code, w.Header().Get("Content-Type"))
	}
	want, err := e.auth.JWKS(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if w.Body.String() != string(want) {
		t.Errorf("body = %s, want %s", w.Body, want)
	}
	if strings.Contains(w.Body.String(), `"d"`) {
		t.Error("JWKS contains a private key")
	}
	w = httptest.NewRecorder()
	h.ServeHTTP(w, httptest.NewRequest("POST", "/.well-known/jwks.json", nil))
	if w.Code != 405 {
		t.Errorf("POST: %d, want 405", w.Code)
	}
}

func TestAuthority_RegisterAgentHandler(t *testing.T) {
	e := MustEnv(t)
	ctx := context.Background()
	s, err := e.auth.GenerateSoftwareStatement(ctx, "1.0.0", oauth.StatementLimits{})
	if err != nil {
		t.Fatal(err)
	}
	h := e.auth.RegisterAgentHandler()
	tests := []struct {
		name    string
		method  string
		body    string
		status  int
		errBody string
	}{
		{"ok", "POST", `{"software_statement":"` + s.Statement + `","client_name":"host-1","redirect_uris":[]}`, 201, ""},
		{"unknown statement", "POST", `{"software_statement":"eyJpZCI6IngifQ==","client_name":"h"}`, 400, `{"error":"invalid_software_statement"}`},
		{"no statement", "POST", `{"client_name":"h"}`, 400, `{"error":"invalid_software_statement"}`},
		{"not json", "POST", `software_statement=x`, 400, `{"error":"invalid_client_metadata","error_description":"body is not a json object"}`},
		{"two objects", "POST", `{} {}`, 400, `{"error":"invalid_client_metadata","error_description":"trailing data after json object"}`},
		{"bad name", "POST", `{"software_statement":"` + s.Statement + `","client_name":"a\u0000b"}`, 400, `{"error":"invalid_client_metadata","error_description":"invalid client_name"}`},
		{"too large", "POST", `{"software_statement":"` + strings.Repeat("A", 70<<10) + `"}`, 400, `{"error":"invalid_client_metadata","error_description":"body is not a json object"}`},
		{"GET", "GET", "", 405, `{"error":"invalid_request","error_description":"method not allowed"}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := httptest.NewRequest(tt.method, "/agent/register", strings.NewReader(tt.body))
			r.Header.Set("Content-Type", "application/json")
			w := httptest.NewRecorder()
			h.ServeHTTP(w, r)
			if w.Code != tt.status {
				t.Fatalf("status = %d, want %d; body %s", w.Code, tt.status, w.Body)
			}
			if tt.errBody != "" {
				if got := strings.TrimSpace(w.Body.String()); got != tt.errBody {
					t.Errorf("body = %s, want %s", got, tt.errBody)
				}
				return
			}
			var resp struct {
				ClientID              string `json:"client_id"`
				ClientSecret          string `json:"client_secret"`
				ClientIDIssuedAt      int64  `json:"client_id_issued_at"`
				ClientSecretExpiresAt *int64 `json:"client_secret_expires_at"`
			}
			if err := json.Unmarshal(w.Body.Bytes(), &resp); err != nil {
				t.Fatal(err)
			}
			if resp.ClientIDIssuedAt != e.clock.Now().Unix() || resp.ClientSecretExpiresAt == nil || *resp.ClientSecretExpiresAt != 0 {
				t.Errorf("response = %s", w.Body)
			}
			c, err := e.auth.Authenticate(ctx, oauth.KindAgent, resp.ClientID, resp.ClientSecret)
			if err != nil || c.Name != "host-1" {
				t.Errorf("registered agent: %+v, %v", c, err)
			}
		})
	}
	if strings.Contains(e.log.String(), s.Statement) {
		t.Error("log contains the software statement")
	}
}

func TestBearerToken(t *testing.T) {
	long := "Bearer " + strings.Repeat("a", 8<<10) // over 8 KiB in all
	tests := []struct {
		name    string
		headers []string // nil: no Authorization header
		token   string
		err     error  // ErrNoAuthorization, or nil
		reason  string // TokenError reason
	}{
		{"none", nil, "", oauth.ErrNoAuthorization, ""},
		{"bearer", []string{"Bearer abc.def-ghi_jkl"}, "abc.def-ghi_jkl", nil, ""},
		{"lower-case scheme", []string{"bearer abc"}, "abc", nil, ""},
		{"upper-case scheme", []string{"BEARER abc"}, "abc", nil, ""},
		{"padding", []string{"Bearer abc=="}, "abc==", nil, ""},
		{"b64 chars", []string{"Bearer a+b/c~d"}, "a+b/c~d", nil, ""},
		{"extra spaces", []string{"Bearer   abc  "}, "abc", nil, ""},
		{"empty", []string{""}, "", nil, "malformed authorization header"},
		{"scheme only", []string{"Bearer"}, "", nil, "malformed authorization header"},
		{"scheme and space", []string{"Bearer "}, "", nil, "malformed authorization header"},
		{"tab", []string{"Bearer\tabc"}, "", nil, "malformed authorization header"},
		{"two tokens", []string{"Bearer abc def"}, "", nil, "malformed authorization header"},
		{"only padding", []string{"Bearer =="}, "", nil, "malformed authorization header"},
		{"padding inside", []string{"Bearer a=b"}, "", nil, "malformed authorization header"},
		{"bad char", []string{"Bearer a,b"}, "", nil, "malformed authorization header"},
		{"non-ascii", []string{"Bearer äbc"}, "", nil, "malformed authorization header"},
		{"basic", []string{"Basic dXNlcjpwYXNz"}, "", nil, "unsupported authorization scheme"},
		{"bearerx", []string{"Bearerx abc"}, "", nil, "unsupported authorization scheme"},
		{"twice", []string{"Bearer a", "Bearer b"}, "", nil, "malformed authorization header"},
		{"too long", []string{long}, "", nil, "authorization header too large"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := httptest.NewRequest("GET", "/", nil)
			for _, h := range tt.headers {
				r.Header.Add("Authorization", h)
			}
			tok, err := oauth.BearerToken(r)
			switch {
			case tt.err != nil:
				if !errors.Is(err, tt.err) {
					t.Fatalf("err = %v, want %v", err, tt.err)
				}
			case tt.reason != "":
				if got := reason(t, err); got != tt.reason {
					t.Fatalf("reason = %q, want %q", got, tt.reason)
				}
			default:
				if err != nil || tok != tt.token {
					t.Fatalf("BearerToken = %q, %v, want %q", tok, err, tt.token)
				}
			}
		})
	}
}

func FuzzBearerToken(f *testing.F) {
	for _, s := range []string{"Bearer abc", "bearer a.b.c", "Basic x", "", "Bearer", "Bearer a b", "Bearer ==", "Bearer\ta"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, h string) {
		r := httptest.NewRequest("GET", "/", nil)
		r.Header["Authorization"] = []string{h}
		tok, err := oauth.BearerToken(r)
		if err != nil {
			var te *oauth.TokenError
			if !errors.As(err, &te) {
				t.Fatalf("error %v is not a *TokenError", err)
			}
			if tok != "" {
				t.Fatal("token returned with an error")
			}
			return
		}
		if tok == "" || len(tok) > 8<<10 || strings.ContainsAny(tok, " \t\r\n,;\"") {
			t.Fatalf("bad token %q from %q", tok, h)
		}
		if !strings.Contains(h, tok) {
			t.Fatalf("token %q not in header %q", tok, h)
		}
	})
}

// register posts a registration from remote and returns the answer.
func register(h http.Handler, remote, statement, name string) *httptest.ResponseRecorder {
	body, _ := json.Marshal(map[string]string{"software_statement": statement, "client_name": name})
	r := httptest.NewRequest("POST", "/agent/register", bytes.NewReader(body))
	r.RemoteAddr = remote
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w
}

// TestAuthority_RegisterAgentHandler_StatementLimits: an expired or used-up
// statement is refused with invalid_software_statement and a description, and
// neither the answer nor the log holds the statement.
func TestAuthority_RegisterAgentHandler_StatementLimits(t *testing.T) {
	e := MustEnv(t)
	ctx := context.Background()
	once, err := e.auth.GenerateSoftwareStatement(ctx, "1.0.0", oauth.StatementLimits{MaxUses: 1})
	if err != nil {
		t.Fatal(err)
	}
	hour, err := e.auth.GenerateSoftwareStatement(ctx, "1.0.0", oauth.StatementLimits{ExpiresAt: e.clock.Now().Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	h := e.auth.RegisterAgentHandler()
	for _, st := range []string{once.Statement, hour.Statement} {
		if w := register(h, "192.0.2.1:1000", st, "h"); w.Code != 201 {
			t.Fatalf("first use: %d %s", w.Code, w.Body)
		}
	}
	e.clock.Add(time.Hour)
	for _, tt := range []struct{ name, statement, body string }{
		{"used up", once.Statement, `{"error":"invalid_software_statement","error_description":"software_statement has registered its maximum number of agents"}`},
		{"expired", hour.Statement, `{"error":"invalid_software_statement","error_description":"software_statement has expired"}`},
	} {
		w := register(h, "192.0.2.1:1000", tt.statement, "h")
		if got := strings.TrimSpace(w.Body.String()); w.Code != 400 || got != tt.body {
			t.Errorf("%s: %d %s, want 400 %s", tt.name, w.Code, got, tt.body)
		}
	}
	clients, _ := e.store.ListClients(ctx, oauth.KindAgent)
	if len(clients) != 2 {
		t.Errorf("%d agent clients, want 2", len(clients))
	}
	log := e.log.String()
	for _, st := range []*oauth.SoftwareStatement{once, hour} {
		if strings.Contains(log, st.Statement) || strings.Contains(log, st.ID) {
			t.Errorf("the log holds a statement or its ID:\n%s", log)
		}
	}
	for _, want := range []string{"reason=\"statement used up\"", "reason=\"statement expired\"", "remote=192.0.2.1:1000"} {
		if !strings.Contains(log, want) {
			t.Errorf("the log lacks %s:\n%s", want, log)
		}
	}
}

// TestAuthority_RegisterAgentHandler_RateLimit reproduces finding 7 of the
// security review (300 registrations with one statement in 29 s all
// succeeded): registrations are limited per remote address and per broker,
// refused with 429 and Retry-After, refused attempts with unknown statements
// count too, and the log never holds a statement.
func TestAuthority_RegisterAgentHandler_RateLimit(t *testing.T) {
	e := MustEnv(t)
	ctx := context.Background()
	e.auth.Registrations = oauth.RegistrationLimits{PerMinute: 6, PerAddressPerMinute: 3}
	s, err := e.auth.GenerateSoftwareStatement(ctx, "1.0.0", oauth.StatementLimits{})
	if err != nil {
		t.Fatal(err)
	}
	h := e.auth.RegisterAgentHandler()
	flood := func(remote string, n int) (created, limited int, last *httptest.ResponseRecorder) {
		for range n {
			w := register(h, remote, s.Statement, "flood")
			switch w.Code {
			case 201:
				created++
			case 429:
				limited++
				last = w
			default:
				t.Fatalf("%s: %d %s", remote, w.Code, w.Body)
			}
		}
		return created, limited, last
	}
	created, limited, w := flood("198.51.100.7:4000", 300)
	if created != 3 || limited != 297 {
		t.Fatalf("300 registrations from one address: %d created, %d limited; want 3 and 297", created, limited)
	}
	if got := w.Header().Get("Retry-After"); got != "20" {
		t.Errorf("Retry-After %q, want 20 (3 a minute)", got)
	}
	if got := strings.TrimSpace(w.Body.String()); got != `{"error":"temporarily_unavailable","error_description":"too many agent registrations; retry in 20 s"}` {
		t.Errorf("429 body %s", got)
	}
	// An IPv6 host counts with its /64, and unknown statements count too.
	if w := register(h, "[2001:db8::1]:1", "bm90IGEgc3RhdGVtZW50", "x"); w.Code != 400 {
		t.Fatalf("unknown statement: %d", w.Code)
	}
	if created, _, _ := flood("[2001:db8::2]:2", 5); created != 2 {
		t.Errorf("same /64: %d created, want 2", created)
	}
	// The broker-wide limit (6 a minute): 3 + 1 + 2 used; another address is refused.
	created, _, w = flood("203.0.113.9:5", 1)
	if created != 0 || w.Header().Get("Retry-After") != "10" {
		t.Errorf("broker-wide limit: %d created, Retry-After %q; want 0 and 10", created, w.Header().Get("Retry-After"))
	}
	// Time refills both.
	e.clock.Add(20 * time.Second)
	if created, _, _ := flood("198.51.100.7:4000", 2); created != 1 {
		t.Errorf("20 s later: %d created, want 1", created)
	}
	clients, _ := e.store.ListClients(ctx, oauth.KindAgent)
	if len(clients) != 6 {
		t.Errorf("%d agent clients, want 6", len(clients))
	}
	if log := e.log.String(); strings.Contains(log, s.Statement) || strings.Contains(log, s.ID) || !strings.Contains(log, "rate limit") {
		t.Errorf("log holds the statement or lacks the refusals:\n%s", log)
	}
}

// FuzzRegisterAgentHandler: whatever the body and remote address, the
// registration endpoint answers 201, 400 or 429 (never a 5xx or a panic), and
// no answer holds the statement.
func FuzzRegisterAgentHandler(f *testing.F) {
	e := MustEnv(f)
	s, err := e.auth.GenerateSoftwareStatement(context.Background(), "1.0.0", oauth.StatementLimits{MaxUses: 3})
	if err != nil {
		f.Fatal(err)
	}
	e.auth.Registrations = oauth.RegistrationLimits{PerMinute: 1000, PerAddressPerMinute: 100}
	h := e.auth.RegisterAgentHandler()
	for _, seed := range []struct{ body, remote string }{
		{`{"software_statement":"STATEMENT","client_name":"h"}`, "192.0.2.1:1"},
		{`{"software_statement":"STATEMENT\n","client_name":"\u0000"}`, "[2001:db8::1]:2"},
		{`{"software_statement":123}`, "bogus"},
		{`{"software_statement":"eyJpZCI6IngifQ=="} trailing`, ""},
		{`[]`, "[::ffff:192.0.2.9]:3"},
	} {
		f.Add(seed.body, seed.remote)
	}
	f.Fuzz(func(t *testing.T, body, remote string) {
		body = strings.ReplaceAll(body, "STATEMENT", s.Statement)
		r := httptest.NewRequest("POST", "/agent/register", strings.NewReader(body))
		r.RemoteAddr = remote
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		switch w.Code {
		case 201, 400, 429:
		default:
			t.Fatalf("status %d for %q from %q: %s", w.Code, body, remote, w.Body)
		}
		if strings.Contains(w.Body.String(), s.Statement) {
			t.Fatalf("the answer holds the statement: %s", w.Body)
		}
	})
}

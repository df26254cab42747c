package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/internal/oauth"
	"github.com/berth-dev/berth/internal/poll"
	"github.com/berth-dev/berth/internal/postgres/pgtest"
)

const (
	testIdPClient   = "idp-client"
	testIdPSecret   = "idp-s3cret"
	testIdPAudience = "https://berth.test/api"
)

var (
	testIdPKeyOnce sync.Once
	testIdPKey     *rsa.PrivateKey
)

// testIdP is an external authorization server on loopback: its key set at
// /.well-known/jwks.json and a client credentials token endpoint at
// /oauth2/token that signs RS256 tokens, both over TLS with a certificate
// of its own CA (caFile).
type testIdP struct {
	srv    *httptest.Server
	caFile string
	issuer string
	jwks   atomic.Int32 // key set fetches
}

func newTestIdP(t testing.TB) *testIdP {
	t.Helper()
	testIdPKeyOnce.Do(func() {
		var err error
		if testIdPKey, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
			panic(err)
		}
	})
	p := &testIdP{}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /.well-known/jwks.json", func(w http.ResponseWriter, _ *http.Request) {
		p.jwks.Add(1)
		pub := testIdPKey.PublicKey
		json.NewEncoder(w).Encode(map[string]any{"keys": []any{map[string]any{
			"kty": "RSA", "kid": "idp-key-1", "alg": "RS256", "use": "sig",
			"n": base64.RawURLEncoding.EncodeToString(pub.N.Bytes()),
			"e": base64.RawURLEncoding.EncodeToString(big.NewInt(int64(pub.E)).Bytes()),
		}}})
	})
	mux.HandleFunc("POST /oauth2/token", func(w http.ResponseWriter, r *http.Request) {
		id, secret, ok := r.BasicAuth()
		if !ok || id != testIdPClient || secret != testIdPSecret || r.FormValue("grant_type") != "client_credentials" {
			http.Error(w, `{"error":"invalid_client"}`, http.StatusUnauthorized)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]any{"access_token": p.token(t, nil), "token_type": "bearer", "expires_in": 3600})
	})
	p.srv = httptest.NewTLSServer(mux)
	t.Cleanup(p.srv.Close)
	p.issuer = p.srv.URL
	p.caFile = filepath.Join(t.TempDir(), "idp-ca.pem")
	if err := os.WriteFile(p.caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: p.srv.Certificate().Raw}), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// url is the key set URL to register.
func (p *testIdP) url() string { return p.srv.URL + "/.well-known/jwks.json" }

// token is an RS256 access token like Hydra's, with its claims edited by
// edit; a nil key signs with the IdP's key.
func (p *testIdP) token(t testing.TB, edit func(h, c map[string]any)) string {
	t.Helper()
	now := time.Now()
	h := map[string]any{"kid": "idp-key-1", "typ": "JWT"}
	c := map[string]any{"iss": p.issuer, "aud": []string{testIdPAudience}, "sub": testIdPClient, "client_id": testIdPClient,
		"exp": now.Add(time.Hour).Unix(), "nbf": now.Unix(), "iat": now.Unix(), "jti": fmt.Sprint(now.UnixNano()), "scp": []string{}}
	method, key := jwt.SigningMethod(jwt.SigningMethodRS256), any(testIdPKey)
	if edit != nil {
		edit(h, c)
	}
	if alg, ok := h["alg"].(string); ok {
		method = jwt.GetSigningMethod(alg)
		switch alg {
		case "none":
			key = jwt.UnsafeAllowNoneSignatureType
		case "HS256":
			der, _ := x509.MarshalPKIXPublicKey(&testIdPKey.PublicKey)
			key = pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
		}
	}
	tok := jwt.NewWithClaims(method, jwt.MapClaims(c))
	for k, v := range h {
		tok.Header[k] = v
	}
	s, err := tok.SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// idpClient is an API client of b that gets its tokens from p's token
// endpoint (AuthURL), as `berth --auth-server-url` does.
func (b *testBroker) idpClient(t testing.TB, p *testIdP) *api.Client {
	t.Helper()
	pool := x509.NewCertPool()
	for _, f := range []string{filepath.Join(b.dir, "ca.pem"), p.caFile} {
		data, err := os.ReadFile(f)
		if err != nil || !pool.AppendCertsFromPEM(data) {
			t.Fatalf("CA %s: %v", f, err)
		}
	}
	hc := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	return &api.Client{BrokerURL: "https://" + b.ClientAddr(), AuthURL: p.srv.URL + "/oauth2/token",
		ClientID: testIdPClient, ClientSecret: testIdPSecret, HTTPClient: hc}
}

// adminOut runs an admin command with the broker's store and caFile as
// auth-server-ca-bundle-file, and returns its exit code, stdout and stderr.
func (b *testBroker) adminOut(t testing.TB, caFile string, args ...string) (int, string, string) {
	t.Helper()
	conf := filepath.Join(t.TempDir(), "admin.properties")
	props := "session-manager-working-path = " + b.dir + "\n"
	if b.Config.PersistenceDB == "postgresql" {
		props += "persistence-db = postgresql\npersistence-dsn = " + b.Config.PersistenceDSN + "\n"
	}
	if caFile != "" {
		props += "auth-server-ca-bundle-file = " + caFile + "\n"
	}
	if err := os.WriteFile(conf, []byte(props), 0o600); err != nil {
		t.Fatal(err)
	}
	var out, errOut bytes.Buffer
	code := run(context.Background(), append([]string{args[0], "--config", conf}, args[1:]...), &out, &errOut)
	return code, out.String(), errOut.String()
}

// call sends DescribeServers with token and returns the status and body.
func (b *testBroker) call(t testing.TB, token string) (int, http.Header, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, "https://"+b.ClientAddr()+"/describeServers", strings.NewReader("{}"))
	req.Header.Set("Content-Type", "application/json")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := b.hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, string(body)
}

// logTee is a broker logger at info level into a buffer and the test log.
type logTee struct {
	tb testing.TB
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logTee) Write(p []byte) (int, error) {
	l.mu.Lock()
	l.b.Write(p)
	l.mu.Unlock()
	l.tb.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func (l *logTee) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestBroker_AuthServerAdmin checks register-auth-server, list-auth-servers
// and unregister-auth-server: their output in the reference's format, and
// the refusals of bad options.
func TestBroker_AuthServerAdmin(t *testing.T) {
	t.Parallel()
	b := MustRunMain(t, t.TempDir(), nil)
	idp := newTestIdP(t)

	if code, out, _ := b.adminOut(t, "", "list-auth-servers"); code != 0 || out != "Urls: [ ]\n" {
		t.Errorf("list-auth-servers with none: %d %q", code, out)
	}
	code, out, errOut := b.adminOut(t, idp.caFile, "register-auth-server", "--url", idp.url(), "--jws-algorithm", "RS256",
		"--issuer", idp.issuer, "--audience", testIdPAudience)
	if code != 0 || out != "Jwk url registered.\n" || errOut != "" {
		t.Errorf("register-auth-server: %d %q %q", code, out, errOut)
	}
	// A loopback http URL is accepted; it cannot be fetched, which the
	// command says, and no --audience draws a warning.
	loop := "http://127.0.0.1:1/.well-known/jwks.json"
	code, out, errOut = b.adminOut(t, "", "register-auth-server", "--url", loop)
	if code != 0 || out != "Jwk url registered.\n" || !strings.Contains(errOut, "no --audience") || !strings.Contains(errOut, "cannot be fetched now") {
		t.Errorf("register-auth-server of a loopback http URL: %d %q %q", code, out, errOut)
	}
	want := fmt.Sprintf("Urls: [ %q, %q ]\n", idp.url(), loop)
	if code, out, _ := b.adminOut(t, "", "list-auth-servers"); code != 0 || out != want {
		t.Errorf("list-auth-servers: %d %q, want %q", code, out, want)
	}
	code, out, _ = b.adminOut(t, "", "list-auth-servers", "--details")
	if code != 0 || !strings.HasPrefix(out, want+"Auth servers\n[") || !strings.Contains(out, `"jws-algorithm": "RS256"`) ||
		!strings.Contains(out, `"audience": "`+testIdPAudience+`"`) || !strings.Contains(out, `"issuer": "`+idp.issuer+`"`) {
		t.Errorf("list-auth-servers --details: %d %q", code, out)
	}
	if code, out, _ := b.adminOut(t, "", "unregister-auth-server", "--url", loop); code != 0 || out != "Jwk url"+loop+" unregistered\n" {
		t.Errorf("unregister-auth-server: %d %q", code, out)
	}

	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"register-auth-server", "--url", "http://idp.example.com/.well-known/jwks.json"}, 2,
			"must be fetched over https (http is accepted only for a loopback host"},
		{[]string{"register-auth-server", "--url", "idp.example.com/jwks"}, 2, "--url: "},
		{[]string{"register-auth-server", "--url", "https://u:p@idp.example.com/jwks"}, 2, "user name or password"},
		{[]string{"register-auth-server"}, 2, "--url is required"},
		{[]string{"register-auth-server", "--url", idp.url(), "--jws-algorithm", "HS256"}, 2, "--jws-algorithm: \"HS256\" is not one of RS256"},
		{[]string{"register-auth-server", "--url", idp.url(), "--jws-algorithm", "none"}, 2, "none and the HMAC algorithms are refused"},
		{[]string{"register-auth-server", "--url", idp.url(), "--issuer", "a\tb"}, 2, "--issuer: "},
		{[]string{"unregister-auth-server", "--url", loop}, 1, "is not registered"},
		{[]string{"unregister-auth-server"}, 2, "--url is required"},
	} {
		code, out, errOut := b.adminOut(t, "", tc.args...)
		if code != tc.code || out != "" || !strings.Contains(errOut, tc.want) {
			t.Errorf("%v: exit %d (want %d), stdout %q, stderr %q (want %q)", tc.args, code, tc.code, out, errOut, tc.want)
		}
	}
	want = fmt.Sprintf("Urls: [ %q ]\n", idp.url())
	if code, out, _ := b.adminOut(t, "", "list-auth-servers"); code != 0 || out != want {
		t.Errorf("list-auth-servers after the refusals: %d %q, want %q", code, out, want)
	}
}

// TestBroker_ExternalAuthServer runs a broker with
// enable-authorization-server = false, as deployments with an identity
// provider do: no token endpoint, its own access tokens refused, a
// registered server's tokens accepted within 5 s of register-auth-server
// and refused within 5 s of unregister-auth-server, hostile tokens answered
// 401 with the usual body and a log line saying why; it still issues
// connection tokens and agent credentials.
func TestBroker_ExternalAuthServer(t *testing.T) {
	t.Parallel()
	idp := newTestIdP(t)
	logs := &logTee{tb: t}
	b := MustRunMetricsBroker(t, func(m *Main) {
		m.Config.EnableAuthorizationServer = false
		m.Config.AuthServerCABundleFile = idp.caFile
		m.Logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	})
	ctx := context.Background()
	c := b.idpClient(t, idp)

	// No token endpoint.
	resp, err := b.hc.Post("https://"+b.ClientAddr()+"/oauth2/token?grant_type=client_credentials", "application/x-www-form-urlencoded", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("POST /oauth2/token answered %d, want 404", resp.StatusCode)
	}
	// Nothing registered: the IdP's token is refused, and so is one the
	// broker signed itself (from before, or from another broker).
	var ae *api.Error
	if _, err := c.DescribeServers(ctx, api.DescribeServersRequest{}); !errors.As(err, &ae) || ae.StatusCode != 401 || ae.Message != "invalid token: issuer not accepted" {
		t.Errorf("DescribeServers with nothing registered: %v", err)
	}
	apiClient, _, err := b.auth.RegisterClient(ctx, oauth.KindAPI, "old")
	if err != nil {
		t.Fatal(err)
	}
	cl, err := b.store.GetClient(ctx, apiClient)
	if err != nil {
		t.Fatal(err)
	}
	own, _, err := b.auth.IssueAccessToken(ctx, cl)
	if err != nil {
		t.Fatal(err)
	}

	if code, out, errOut := b.adminOut(t, idp.caFile, "register-auth-server", "--url", idp.url(), "--issuer", idp.issuer, "--audience", testIdPAudience); code != 0 {
		t.Fatalf("register-auth-server: %d %s %s", code, out, errOut)
	}
	registered := time.Now()
	poll.Until(t, 5*time.Second, "the registered server's token accepted", func() bool {
		_, err := c.DescribeServers(ctx, api.DescribeServersRequest{})
		return err == nil
	})
	t.Logf("accepted %s after register-auth-server", time.Since(registered).Round(time.Millisecond))
	if status, _, body := b.call(t, own); status != 401 || !strings.Contains(body, "issuer not accepted") {
		t.Errorf("the broker's own access token: %d %s", status, body)
	}

	// Hostile tokens: 401 with the body of any refused token, never 5xx.
	for _, tc := range []struct {
		name, token, reason, why string
	}{
		{"alg none", idp.token(t, func(h, _ map[string]any) { h["alg"] = "none" }), "unsupported algorithm", `alg \"none\" is not accepted`},
		{"HS256 with the public key", idp.token(t, func(h, _ map[string]any) { h["alg"] = "HS256" }), "unsupported algorithm", `alg \"HS256\" is not accepted`},
		{"key alg RS256, token PS256", idp.token(t, func(h, _ map[string]any) { h["alg"] = "PS256" }), "algorithm does not match the key", "is for RS256"},
		{"jku elsewhere", idp.token(t, func(h, _ map[string]any) { h["kid"], h["jku"] = "other", "https://127.0.0.1:1/jwks" }), "unknown signing key", `no usable key \"other\"`},
		{"expired", idp.token(t, func(_, c map[string]any) { c["exp"] = time.Now().Add(-2 * time.Minute).Unix() }), "token expired", "more than 1m0s ago"},
		{"wrong audience", idp.token(t, func(_, c map[string]any) { c["aud"] = []string{} }), "wrong audience", "does not hold"},
		{"wrong issuer", idp.token(t, func(_, c map[string]any) { c["iss"] = "https://evil.test" }), "wrong issuer", "https://evil.test"},
	} {
		status, h, body := b.call(t, tc.token)
		var er api.ErrorResponse
		if err := json.Unmarshal([]byte(body), &er); err != nil || status != 401 || er.Code != "UNAUTHORIZED" ||
			er.Error != "invalid token: "+tc.reason || h.Get("WWW-Authenticate") != `Bearer error="invalid_token"` {
			t.Errorf("%s: %d %v %s", tc.name, status, h, body)
		}
		if !strings.Contains(logs.String(), tc.why) {
			t.Errorf("%s: the log lacks %q", tc.name, tc.why)
		}
		if sig := tc.token[strings.LastIndex(tc.token, ".")+1:]; sig != "" && strings.Contains(logs.String(), sig) {
			t.Errorf("%s: the log holds the token", tc.name)
		}
	}

	// Connection tokens and agent credentials are still the broker's.
	b.MustStartSimAgent(t, t.TempDir(), nil, hostReport("ext-host", 0, nil))
	poll.Until(t, 10*time.Second, "the agent's server", func() bool { return len(servers(t, c)) == 1 })
	id := create(t, c, api.CreateSessionRequest{Name: "s", Owner: "alice", Type: api.TypeVirtual}).SuccessfulList[0].Id
	waitState(t, c, id, api.StateReady)
	cd, err := c.GetSessionConnectionData(ctx, id, "alice")
	if err != nil {
		t.Fatal(err)
	}
	if claims, err := b.auth.VerifyConnectionToken(ctx, cd.ConnectionToken); err != nil || claims.SessionID != id {
		t.Errorf("connection token: %+v, %v", claims, err)
	}

	// The metrics: the key set and the refusals.
	s := b.MustScrape(t)
	if v := s.must(t, "berth_broker_auth_server_keys", "url", idp.url()); v != 1 {
		t.Errorf("auth_server_keys = %v, want 1", v)
	}
	if v := s.must(t, "berth_broker_auth_server_last_fetch_timestamp_seconds", "url", idp.url()); v < float64(registered.Unix()-1) {
		t.Errorf("auth_server_last_fetch_timestamp_seconds = %v, before the registration", v)
	}
	for reason, want := range map[string]float64{oauth.RefusedAlgorithm: 3, oauth.RefusedUnknownKey: 1, oauth.RefusedExpired: 1, oauth.RefusedAudience: 1, oauth.RefusedIssuer: 1} {
		if v := s.must(t, "berth_broker_tokens_refused_total", "kind", oauth.TokenExternal, "reason", reason); v != want {
			t.Errorf("tokens_refused_total{kind=external,reason=%s} = %v, want %v", reason, v, want)
		}
	}
	if v := s.must(t, "berth_broker_tokens_refused_total", "kind", oauth.TokenAccess, "reason", oauth.RefusedNotAccepted); v < 2 {
		t.Errorf("tokens_refused_total{kind=access,reason=not_accepted} = %v, want 2 or more", v)
	}

	// Unregistered: refused within 5 s.
	if code, out, errOut := b.adminOut(t, "", "unregister-auth-server", "--url", idp.url()); code != 0 {
		t.Fatalf("unregister-auth-server: %d %s %s", code, out, errOut)
	}
	unregistered := time.Now()
	poll.Until(t, 5*time.Second, "the unregistered server's token refused", func() bool {
		status, _, _ := b.call(t, idp.token(t, nil))
		return status == 401
	})
	t.Logf("refused %s after unregister-auth-server", time.Since(unregistered).Round(time.Millisecond))
	for _, want := range []string{"auth server registered", "auth server unregistered", "external token refused"} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("the log lacks %q", want)
		}
	}
}

// TestBroker_ExternalAuthServerBesideOwn: with the default
// enable-authorization-server = true, a registered server's tokens work
// beside the broker's own.
func TestBroker_ExternalAuthServerBesideOwn(t *testing.T) {
	t.Parallel()
	idp := newTestIdP(t)
	b := MustRunMain(t, t.TempDir(), func(c *Config) { c.AuthServerCABundleFile = idp.caFile })
	ctx := context.Background()
	own := b.MustClient(t)
	if code, out, errOut := b.adminOut(t, idp.caFile, "register-auth-server", "--url", idp.url(), "--audience", testIdPAudience); code != 0 {
		t.Fatalf("register-auth-server: %d %s %s", code, out, errOut)
	}
	ext := b.idpClient(t, idp)
	poll.Until(t, 5*time.Second, "the registered server's token accepted", func() bool {
		_, err := ext.DescribeServers(ctx, api.DescribeServersRequest{})
		return err == nil
	})
	if _, err := own.DescribeServers(ctx, api.DescribeServersRequest{}); err != nil {
		t.Errorf("the broker's own token beside a registered server: %v", err)
	}
}

// TestBroker_AuthServerCABundle: a bundle file without a certificate stops
// the broker with the key's name.
func TestBroker_AuthServerCABundle(t *testing.T) {
	t.Parallel()
	bad := filepath.Join(t.TempDir(), "bad.pem")
	if err := os.WriteFile(bad, []byte("not a certificate"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{bad, filepath.Join(t.TempDir(), "missing.pem")} {
		m := NewMain()
		m.Config.WorkingPath = t.TempDir()
		m.Config.ClientBindHost, m.Config.AgentBindHost = "127.0.0.1", "127.0.0.1"
		m.Config.ClientPort, m.Config.AgentPort = 0, 0
		m.Config.AuthServerCABundleFile = f
		m.Logger = slog.New(slog.DiscardHandler)
		err := m.Run(context.Background())
		if err == nil {
			m.Close()
		}
		if err == nil || !strings.Contains(err.Error(), "auth-server-ca-bundle-file") {
			t.Errorf("%s: Run = %v, want an error naming auth-server-ca-bundle-file", f, err)
		}
	}
}

// TestCluster_AuthServers: two brokers on one PostgreSQL share the
// registered servers; a register-auth-server or unregister-auth-server run
// against either is in effect on both within 5 s, without a restart.
func TestCluster_AuthServers(t *testing.T) {
	t.Parallel()
	dsn := pgtest.DSN(t)
	idp := newTestIdP(t)
	brokers := []*testBroker{}
	for _, id := range []string{"a1", "a2"} {
		brokers = append(brokers, MustRunMainWith(t, filepath.Join(t.TempDir(), id), func(m *Main) {
			m.Config.PersistenceDB, m.Config.PersistenceDSN, m.Config.BrokerID = "postgresql", dsn, id
			m.Config.EnableAuthorizationServer = false
			m.Config.AuthServerCABundleFile = idp.caFile
		}))
	}
	token := idp.token(t, nil)
	for i, b := range brokers {
		if status, _, body := b.call(t, token); status != 401 {
			t.Fatalf("broker %d before registration: %d %s", i+1, status, body)
		}
	}
	if code, out, errOut := brokers[0].adminOut(t, idp.caFile, "register-auth-server", "--url", idp.url(), "--audience", testIdPAudience); code != 0 {
		t.Fatalf("register-auth-server: %d %s %s", code, out, errOut)
	}
	start := time.Now()
	for i, b := range brokers {
		poll.Until(t, 5*time.Second-time.Since(start), fmt.Sprintf("broker %d to accept the token", i+1), func() bool {
			status, _, _ := b.call(t, token)
			return status == 200
		})
	}
	t.Logf("both brokers accept the token %s after register-auth-server", time.Since(start).Round(time.Millisecond))
	if code, out, errOut := brokers[1].adminOut(t, "", "unregister-auth-server", "--url", idp.url()); code != 0 {
		t.Fatalf("unregister-auth-server: %d %s %s", code, out, errOut)
	}
	start = time.Now()
	for i, b := range brokers {
		poll.Until(t, 5*time.Second-time.Since(start), fmt.Sprintf("broker %d to refuse the token", i+1), func() bool {
			status, _, _ := b.call(t, token)
			return status == 401
		})
	}
	t.Logf("both brokers refuse the token %s after unregister-auth-server", time.Since(start).Round(time.Millisecond))
}

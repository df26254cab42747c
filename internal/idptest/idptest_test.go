package idptest_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/internal/idptest"
)

// TestServer runs Hydra as the e2e tests do: a client, tokens with and
// without an audience, the claims the broker checks, a restart with new
// keys, and the JWKS request count.
func TestServer(t *testing.T) {
	s := idptest.Start(t, idptest.Options{TokenTTL: 10 * time.Minute})
	if !strings.HasPrefix(s.Issuer, "https://127.0.0.1:") {
		t.Fatalf("issuer %s is not HTTPS on 127.0.0.1", s.Issuer)
	}
	const aud = "https://berth.test"
	c := s.RegisterClient(t, aud)

	tok := s.Token(t, c, aud)
	claims := idptest.Claims(tok)
	if claims == nil {
		t.Fatalf("the access token is not a JWT: %.20s...", tok)
	}
	if claims["iss"] != s.Issuer {
		t.Errorf("iss %v, want %s", claims["iss"], s.Issuer)
	}
	if a, _ := claims["aud"].([]any); len(a) != 1 || a[0] != aud {
		t.Errorf("aud %v, want [%s]", claims["aud"], aud)
	}
	if claims["sub"] != c.ID {
		t.Errorf("sub %v, want the client ID %s", claims["sub"], c.ID)
	}
	if exp, _ := claims["exp"].(float64); time.Until(time.Unix(int64(exp), 0)) > 10*time.Minute {
		t.Errorf("exp %v is more than TokenTTL away", claims["exp"])
	}
	kids := s.KeyIDs(t)
	kid := idptest.KeyID(tok)
	if kid == "" || !slices.Contains(kids, kid) {
		t.Fatalf("the token's kid %q is not in the JWKS %v", kid, kids)
	}

	// No audience: "aud" is empty (the wrong-audience case of the e2e
	// tests).
	noAud := idptest.Claims(s.Token(t, c))
	if a, _ := noAud["aud"].([]any); len(a) != 0 {
		t.Errorf("a token asked without audience has aud %v, want none", noAud["aud"])
	}
	// An audience the client was not registered for is refused.
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if _, err := s.FetchToken(ctx, c, "https://other.test"); err == nil {
		t.Error("Hydra gave a token for an audience the client may not ask for")
	}
	// Wrong secret.
	if _, err := s.FetchToken(ctx, idptest.Client{ID: c.ID, Secret: "wrong"}, aud); err == nil {
		t.Error("Hydra gave a token for a wrong client secret")
	}

	// A client of another User-Agent (as an API server's) is counted; the
	// readiness check and KeyIDs are not.
	if n := s.JWKSRequests(t); n != 0 {
		t.Errorf("JWKSRequests = %d after the readiness check and KeyIDs only, want 0", n)
	}
	pem, err := os.ReadFile(s.CAFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		t.Fatalf("%s holds no certificate", s.CAFile)
	}
	other := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	resp, err := other.Get(s.JWKSURL)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	before := s.JWKSRequests(t)
	if before != 1 {
		t.Errorf("JWKSRequests = %d after one GET of another client, want 1", before)
	}

	s.Restart(t)
	newKids := s.KeyIDs(t)
	for _, k := range newKids {
		if slices.Contains(kids, k) {
			t.Errorf("key %s survived the restart: dsn memory should make new keys", k)
		}
	}
	c2 := s.RegisterClient(t, aud)
	if k := idptest.KeyID(s.Token(t, c2, aud)); !slices.Contains(newKids, k) {
		t.Errorf("a token after the restart has kid %q, not one of %v", k, newKids)
	}
	if got := s.JWKSRequests(t); got != before {
		t.Errorf("JWKSRequests = %d after a restart, want %d (the readiness check and KeyIDs do not count)", got, before)
	}

	s.Stop(t)
	if s.Running() {
		t.Fatal("Running after Stop")
	}
	if _, err := s.HTTP.Get(s.JWKSURL); err == nil {
		t.Error("the JWKS answers after Stop")
	}
	for i, d := range s.StartTimes {
		t.Logf("start %d: ready in %s", i+1, d.Round(time.Millisecond))
	}
}

// TestServer_PlainHTTPRefused: the public endpoint serves HTTPS only.
func TestServer_PlainHTTPRefused(t *testing.T) {
	s := idptest.Start(t, idptest.Options{})
	resp, err := http.Get("http" + strings.TrimPrefix(s.JWKSURL, "https"))
	if err == nil {
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			t.Fatalf("GET %s over plain HTTP answered 200", s.JWKSURL)
		}
	}
}

// TestCacheKey: the key names the tools module's content.
func TestCacheKey(t *testing.T) {
	k, err := idptest.CacheKey()
	if err != nil {
		t.Fatal(err)
	}
	if len(k) != 12 {
		t.Fatalf("CacheKey() = %q, want 12 hex digits", k)
	}
	if _, err := os.Stat(filepath.Join("..", "..", "tools", "hydra", "go.sum")); err != nil {
		t.Fatalf("tools/hydra/go.sum: %v", err)
	}
}

// TestAPIClientToken: berth's API client (and so the berth CLI) gets its
// token from Hydra through --auth-server-url with the audience in the URL's
// query string, with or without grant_type there (the reference
// dcvsmcli.conf's form). Hydra reads the form body only (RFC 6749): the
// client must send the URL's parameters there too.
func TestAPIClientToken(t *testing.T) {
	s := idptest.Start(t, idptest.Options{})
	const aud = "https://berth.test"
	c := s.RegisterClient(t, aud)
	for _, u := range []string{
		s.TokenURL + "?audience=" + url.QueryEscape(aud),
		s.TokenURL + "?grant_type=client_credentials&audience=" + url.QueryEscape(aud),
	} {
		cl := &api.Client{BrokerURL: "https://broker.invalid", AuthURL: u, ClientID: c.ID, ClientSecret: c.Secret, HTTPClient: s.HTTP}
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		tok, err := cl.Token(ctx)
		cancel()
		if err != nil {
			t.Fatalf("api.Client.Token with AuthURL %s: %v", u, err)
		}
		if a, _ := idptest.Claims(tok)["aud"].([]any); len(a) != 1 || a[0] != aud {
			t.Errorf("AuthURL %s: the token's aud is %v, want [%s]", u, idptest.Claims(tok)["aud"], aud)
		}
	}
}

package oauth_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/oauth"
	"github.com/golang-jwt/jwt/v5"
)

// jwksServer serves e's JWKS over TLS and counts the fetches.
func jwksServer(t *testing.T, e *env) (*httptest.Server, *atomic.Int32) {
	t.Helper()
	var fetches atomic.Int32
	h := e.auth.JWKSHandler()
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fetches.Add(1)
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	return srv, &fetches
}

func TestRemoteKeySet_VerifyConnectionToken(t *testing.T) {
	e := MustEnv(t)
	ctx := context.Background()
	srv, fetches := jwksServer(t, e)
	ks := &oauth.RemoteKeySet{URL: srv.URL, Client: srv.Client(), Issuer: "https://broker.test", Now: e.clock.Now}

	tok, err := e.auth.IssueConnectionToken(ctx, "session-1", "alice", "bob")
	if err != nil {
		t.Fatal(err)
	}
	c, err := ks.VerifyConnectionToken(ctx, tok)
	if err != nil {
		t.Fatalf("VerifyConnectionToken: %v", err)
	}
	if c.SessionID != "session-1" || c.Owner != "alice" || c.User != "bob" || !c.ExpiresAt.Equal(e.clock.Now().Add(time.Hour)) {
		t.Errorf("claims = %+v", c)
	}
	if _, err := ks.VerifyConnectionToken(ctx, tok); err != nil {
		t.Fatal(err)
	}
	if n := fetches.Load(); n != 1 {
		t.Errorf("%d fetches, want 1 (cached)", n)
	}

	access, _ := e.MustAccessToken(t)
	expired := e.resign(t, tok, func(_, c map[string]any) { c["exp"] = e.clock.Now().Add(-time.Second).Unix() })
	otherIssuer := e.resign(t, tok, func(_, c map[string]any) { c["iss"] = "https://other.test" })
	none := sign(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, map[string]any{"kid": e.store.keyIDs()[0]}, map[string]any{"dcvSessionId": "s"})
	for name, tt := range map[string]struct{ token, reason string }{
		"access token": {access, "wrong token type"},
		"expired":      {expired, "token expired"},
		"other issuer": {otherIssuer, "wrong issuer"},
		"alg none":     {none, "unsupported algorithm"},
	} {
		_, err := ks.VerifyConnectionToken(ctx, tt.token)
		if got := reason(t, err); got != tt.reason {
			t.Errorf("%s: reason = %q, want %q", name, got, tt.reason)
		}
	}

	// After a rotation the new kid is fetched.
	if err := e.auth.RotateKey(ctx); err != nil {
		t.Fatal(err)
	}
	e.clock.Add(2 * time.Second)
	tok2, err := e.auth.IssueConnectionToken(ctx, "session-2", "alice", "bob")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ks.VerifyConnectionToken(ctx, tok2); err != nil {
		t.Fatalf("token signed with the new key: %v", err)
	}
	if _, err := ks.VerifyConnectionToken(ctx, tok); err != nil {
		t.Errorf("token signed with the retired key: %v", err)
	}
	if n := fetches.Load(); n != 2 {
		t.Errorf("%d fetches, want 2", n)
	}

	// Unknown kids fetch at most once per second, even concurrently.
	e.clock.Add(2 * time.Second)
	bad := sign(t, jwt.SigningMethodES256, e.store.privateKey(t, e.store.keyIDs()[1]), map[string]any{"kid": "unknown"}, map[string]any{"dcvSessionId": "s"})
	var wg sync.WaitGroup
	for range 20 {
		wg.Go(func() {
			_, err := ks.VerifyConnectionToken(ctx, bad)
			var te *oauth.TokenError
			if !errors.As(err, &te) || te.Reason != "unknown signing key" {
				t.Errorf("err = %v, want unknown signing key", err)
			}
		})
	}
	wg.Wait()
	if n := fetches.Load(); n != 3 {
		t.Errorf("%d fetches, want 3", n)
	}

	// The cache is refreshed every 5 minutes.
	e.clock.Add(5 * time.Minute)
	if _, err := ks.VerifyConnectionToken(ctx, tok2); err != nil {
		t.Fatal(err)
	}
	if n := fetches.Load(); n != 4 {
		t.Errorf("%d fetches, want 4", n)
	}

	// When the broker is unreachable, cached keys keep working.
	srv.Close()
	e.clock.Add(10 * time.Minute)
	tok3, err := e.auth.IssueConnectionToken(ctx, "session-3", "alice", "bob")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ks.VerifyConnectionToken(ctx, tok3); err != nil {
		t.Errorf("cached key with the broker down: %v", err)
	}
}

func TestRemoteKeySet_FetchErrors(t *testing.T) {
	e := MustEnv(t)
	ctx := context.Background()
	tok, err := e.auth.IssueConnectionToken(ctx, "s", "o", "u")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		handler http.HandlerFunc
	}{
		{"404", func(w http.ResponseWriter, r *http.Request) { http.NotFound(w, r) }},
		{"not json", func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("<html>")) }},
		{"no usable key", func(w http.ResponseWriter, r *http.Request) {
			w.Write([]byte(`{"keys":[{"kty":"RSA","kid":"a","n":"x","e":"AQAB"},{"kty":"EC","crv":"P-256","kid":"b","x":"AA","y":"AA"}]}`))
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := httptest.NewTLSServer(tt.handler)
			defer srv.Close()
			ks := &oauth.RemoteKeySet{URL: srv.URL, Client: srv.Client()}
			_, err := ks.VerifyConnectionToken(ctx, tok)
			var te *oauth.TokenError
			if err == nil || errors.As(err, &te) {
				t.Fatalf("err = %v, want a fetch error", err)
			}
		})
	}

	// An untrusted certificate is a fetch error too.
	srv := httptest.NewTLSServer(e.auth.JWKSHandler())
	defer srv.Close()
	ks := &oauth.RemoteKeySet{URL: srv.URL}
	if _, err := ks.VerifyConnectionToken(ctx, tok); err == nil {
		t.Error("verified with keys from an untrusted server")
	}
}

// TestRemoteKeySet_Issuer: with no Issuer set (as the agent's web gateway is
// wired) only tokens of berth-broker's issuer verify; a token that another
// issuer signed with a key the broker publishes is refused.
func TestRemoteKeySet_Issuer(t *testing.T) {
	e := MustEnv(t)
	ctx := context.Background()
	srv, _ := jwksServer(t, e)
	ks := &oauth.RemoteKeySet{URL: srv.URL, Client: srv.Client(), Now: e.clock.Now}
	broker := e.newAuthority(oauth.BrokerIssuer)
	good, err := broker.IssueConnectionToken(ctx, "s", "alice", "alice")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ks.VerifyConnectionToken(ctx, good); err != nil {
		t.Fatalf("token of %s: %v", oauth.BrokerIssuer, err)
	}
	other, err := e.auth.IssueConnectionToken(ctx, "s", "alice", "alice") // iss https://broker.test, same keys
	if err != nil {
		t.Fatal(err)
	}
	noIss := e.resign(t, good, func(_, c map[string]any) { delete(c, "iss") })
	for name, tt := range map[string]struct{ token, reason string }{
		"another issuer": {other, "wrong issuer"},
		"no issuer":      {noIss, "missing required claim"},
	} {
		if got := reason(t, tokenErr(ks.VerifyConnectionToken(ctx, tt.token))); got != tt.reason {
			t.Errorf("%s: reason %q, want %q", name, got, tt.reason)
		}
	}
}

func tokenErr(_ *oauth.ConnectionClaims, err error) error { return err }

// TestRemoteKeySet_MaxStaleness: while the broker cannot be reached the cached
// keys verify tokens for MaxStaleness after the last good fetch and then no
// longer (with ErrStaleKeys, promptly, not a TokenError); when the broker
// answers again tokens verify again. Without the limit a host cut off from the
// broker would honour a key the broker withdrew (rotated after a leak) for
// ever.
func TestRemoteKeySet_MaxStaleness(t *testing.T) {
	e := MustEnv(t)
	ctx := context.Background()
	var down atomic.Bool
	h := e.auth.JWKSHandler()
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if down.Load() {
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	ks := &oauth.RemoteKeySet{URL: srv.URL, Client: srv.Client(), Issuer: "https://broker.test", Now: e.clock.Now, MaxStaleness: 30 * time.Minute}
	tok, err := e.auth.IssueConnectionToken(ctx, "s", "alice", "alice")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ks.VerifyConnectionToken(ctx, tok); err != nil {
		t.Fatal(err)
	}
	verify := func() error {
		t.Helper()
		tok, err := e.auth.IssueConnectionToken(ctx, "s", "alice", "alice")
		if err != nil {
			t.Fatal(err)
		}
		_, err = ks.VerifyConnectionToken(ctx, tok)
		return err
	}

	down.Store(true)
	e.clock.Add(29 * time.Minute)
	if err := verify(); err != nil {
		t.Fatalf("29 minutes after the last fetch, broker down: %v", err)
	}
	e.clock.Add(2 * time.Minute)
	err = verify()
	var te *oauth.TokenError
	if !errors.Is(err, oauth.ErrStaleKeys) || errors.As(err, &te) {
		t.Fatalf("31 minutes after the last fetch, broker down: err = %v, want ErrStaleKeys", err)
	}
	if !strings.Contains(err.Error(), "503") || !strings.Contains(err.Error(), "31m") {
		t.Errorf("the error does not say why: %v", err)
	}
	// Still refused within the refetch back-off.
	if err := verify(); !errors.Is(err, oauth.ErrStaleKeys) {
		t.Errorf("second try: err = %v, want ErrStaleKeys", err)
	}

	down.Store(false)
	e.clock.Add(2 * time.Second)
	if err := verify(); err != nil {
		t.Fatalf("broker back: %v", err)
	}

	// A broker that is gone (connection refused) ends the same way, at once.
	srv.Close()
	e.clock.Add(31 * time.Minute)
	start := time.Now()
	if err := verify(); !errors.Is(err, oauth.ErrStaleKeys) {
		t.Fatalf("broker gone: err = %v, want ErrStaleKeys", err)
	}
	t.Logf("refusal with the broker gone took %s", time.Since(start).Round(time.Millisecond))

	// The default is an hour.
	ks2 := &oauth.RemoteKeySet{URL: srv.URL}
	if ks2.MaxStaleness != 0 || oauth.DefaultMaxStaleness != time.Hour {
		t.Errorf("DefaultMaxStaleness = %v", oauth.DefaultMaxStaleness)
	}
}

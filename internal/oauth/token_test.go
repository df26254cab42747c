package oauth_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"maps"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/oauth"
	"github.com/golang-jwt/jwt/v5"
)

func TestAuthority_AccessToken_RoundTrip(t *testing.T) {
	e := MustEnv(t)
	ctx := context.Background()
	c, _ := e.MustClient(t, oauth.KindAPI)
	tok, ttl, err := e.auth.IssueAccessToken(ctx, c)
	if err != nil {
		t.Fatal(err)
	}
	if ttl != time.Hour {
		t.Errorf("ttl = %v, want 1h", ttl)
	}
	p, err := e.auth.VerifyAccessToken(ctx, tok)
	if err != nil {
		t.Fatalf("VerifyAccessToken: %v", err)
	}
	want := oauth.Principal{ClientID: c.ID, Kind: oauth.KindAPI, ExpiresAt: e.clock.Now().Add(time.Hour)}
	if p.ClientID != want.ClientID || p.Kind != want.Kind || !p.ExpiresAt.Equal(want.ExpiresAt) {
		t.Errorf("principal = %+v, want %+v", *p, want)
	}

	h, claims := parts(t, tok)
	if h["alg"] != "ES256" || h["typ"] != "at+jwt" || h["kid"] != e.store.keyIDs()[0] {
		t.Errorf("header = %v", h)
	}
	wantClaims := []string{"aud", "client_kind", "exp", "iat", "iss", "jti", "sub"}
	if got := slices.Sorted(maps.Keys(claims)); !slices.Equal(got, wantClaims) {
		t.Errorf("claims = %v, want %v", got, wantClaims)
	}
	if claims["aud"] != "berth-api" || claims["iss"] != "https://broker.test" || claims["sub"] != c.ID || claims["client_kind"] != "api" {
		t.Errorf("claims = %v", claims)
	}
}

func TestAuthority_ConnectionToken_RoundTrip(t *testing.T) {
	e := MustEnv(t)
	ctx := context.Background()
	tok, err := e.auth.IssueConnectionToken(ctx, "session-1", "alice", "bob")
	if err != nil {
		t.Fatal(err)
	}
	got, err := e.auth.VerifyConnectionToken(ctx, tok)
	if err != nil {
		t.Fatalf("VerifyConnectionToken: %v", err)
	}
	now := e.clock.Now()
	if got.SessionID != "session-1" || got.Owner != "alice" || got.User != "bob" || got.ID == "" ||
		!got.IssuedAt.Equal(now) || !got.ExpiresAt.Equal(now.Add(time.Hour)) {
		t.Errorf("claims = %+v", got)
	}

	// The claim names are a contract.
	_, claims := parts(t, tok)
	want := []string{"aud", "dcvSessionId", "dcvSessionOwner", "dcvSessionUser", "exp", "iat", "iss", "jti"}
	if names := slices.Sorted(maps.Keys(claims)); !slices.Equal(names, want) {
		t.Errorf("claim names = %v, want %v", names, want)
	}
	if claims["aud"] != "dcv-session" || claims["dcvSessionId"] != "session-1" ||
		claims["dcvSessionOwner"] != "alice" || claims["dcvSessionUser"] != "bob" ||
		claims["exp"] != float64(now.Add(time.Hour).Unix()) || claims["iat"] != float64(now.Unix()) {
		t.Errorf("claims = %v", claims)
	}

	for _, args := range [][3]string{{"", "a", "b"}, {"s", "", "b"}, {"s", "a", ""}} {
		if _, err := e.auth.IssueConnectionToken(ctx, args[0], args[1], args[2]); err == nil {
			t.Errorf("IssueConnectionToken%q succeeded, want error", args)
		}
	}
}

// reason returns the TokenError reason of err, or fails.
func reason(t *testing.T, err error) string {
	t.Helper()
	var te *oauth.TokenError
	if !errors.As(err, &te) {
		t.Fatalf("error %v (%T) is not a *TokenError", err, err)
	}
	return te.Reason
}

func TestAuthority_VerifyAccessToken_Refused(t *testing.T) {
	e := MustEnv(t)
	ctx := context.Background()
	good, client := e.MustAccessToken(t)
	kid := e.store.keyIDs()[0]
	goodHeader, goodClaims := parts(t, good)
	conn, err := e.auth.IssueConnectionToken(ctx, "s", "o", "u")
	if err != nil {
		t.Fatal(err)
	}
	foreign, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	pubDER, err := x509.MarshalPKIXPublicKey(&e.store.privateKey(t, kid).PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	pubPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER})
	jwks, err := e.auth.JWKS(ctx)
	if err != nil {
		t.Fatal(err)
	}
	claims := func(edit func(map[string]any)) map[string]any {
		c := maps.Clone(goodClaims)
		if edit != nil {
			edit(c)
		}
		return c
	}
	header := func(edit func(map[string]any)) map[string]any {
		h := maps.Clone(goodHeader)
		if edit != nil {
			edit(h)
		}
		return h
	}
	segs := strings.Split(good, ".")

	tests := []struct {
		name   string
		token  string
		reason string
	}{
		{"empty", "", "malformed token"},
		{"garbage", "not.a.jwt", "malformed token"},
		{"two segments", segs[0] + "." + segs[1], "malformed token"},
		{"too long", good + strings.Repeat("A", 9000), "malformed token"},
		{"tampered claims", segs[0] + "." + strings.TrimRight(segs[1], "=") + "x." + segs[2], "malformed token"},
		{"signature of another token", segs[0] + "." + segs[1] + "." + strings.Split(conn, ".")[2], "signature is invalid"},
		{"foreign key, same kid", sign(t, jwt.SigningMethodES256, foreign, header(nil), claims(nil)), "signature is invalid"},
		{"alg none", sign(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, header(func(h map[string]any) { h["alg"] = "none" }), claims(nil)), "unsupported algorithm"},
		{"alg none, ES256 signature", func() string {
			s := sign(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, header(func(h map[string]any) { h["alg"] = "none" }), claims(nil))
			return s + segs[2]
		}(), "unsupported algorithm"},
		{"HS256 with the public key PEM", sign(t, jwt.SigningMethodHS256, pubPEM, header(func(h map[string]any) { h["alg"] = "HS256" }), claims(nil)), "unsupported algorithm"},
		{"HS256 with the JWKS", sign(t, jwt.SigningMethodHS256, jwks, header(func(h map[string]any) { h["alg"] = "HS256" }), claims(nil)), "unsupported algorithm"},
		{"ES384", sign(t, jwt.SigningMethodHS256, []byte("k"), header(func(h map[string]any) { h["alg"] = "ES384" }), claims(nil)), "unsupported algorithm"},
		{"unknown alg", sign(t, jwt.SigningMethodHS256, []byte("k"), header(func(h map[string]any) { h["alg"] = "XS999" }), claims(nil)), "unsupported algorithm"},
		{"no alg", sign(t, jwt.SigningMethodHS256, []byte("k"), header(func(h map[string]any) { delete(h, "alg") }), claims(nil)), "unsupported algorithm"},
		{"unknown kid", sign(t, jwt.SigningMethodES256, foreign, header(func(h map[string]any) { h["kid"] = "nope" }), claims(nil)), "unknown signing key"},
		{"no kid", e.resign(t, good, func(h, _ map[string]any) { delete(h, "kid") }), "unknown signing key"},
		{"kid not a string", e.resign(t, good, func(h, _ map[string]any) { h["kid"] = 7 }), "unknown signing key"},
		{"connection token", conn, "wrong token type"},
		{"connection typ", e.resign(t, good, func(h, _ map[string]any) { h["typ"] = "JWT" }), "wrong token type"},
		{"no typ", e.resign(t, good, func(h, _ map[string]any) { delete(h, "typ") }), "wrong token type"},
		{"crit header", e.resign(t, good, func(h, _ map[string]any) { h["crit"] = []string{"exp"} }), "malformed token"},
		{"connection audience", e.resign(t, good, func(_, c map[string]any) { c["aud"] = "dcv-session" }), "wrong audience"},
		{"no audience", e.resign(t, good, func(_, c map[string]any) { delete(c, "aud") }), "missing required claim"},
		{"audience list", e.resign(t, good, func(_, c map[string]any) { c["aud"] = []string{"berth-api"} }), "malformed token"},
		{"other issuer", e.resign(t, good, func(_, c map[string]any) { c["iss"] = "https://evil.test" }), "wrong issuer"},
		{"expired", e.resign(t, good, func(_, c map[string]any) { c["exp"] = e.clock.Now().Add(-time.Second).Unix() }), "token expired"},
		{"expires now", e.resign(t, good, func(_, c map[string]any) { c["exp"] = e.clock.Now().Unix() }), "token expired"},
		{"no exp", e.resign(t, good, func(_, c map[string]any) { delete(c, "exp") }), "missing required claim"},
		{"no sub", e.resign(t, good, func(_, c map[string]any) { delete(c, "sub") }), "missing required claim"},
		{"no jti", e.resign(t, good, func(_, c map[string]any) { delete(c, "jti") }), "missing required claim"},
		{"unknown client", e.resign(t, good, func(_, c map[string]any) { c["sub"] = "someone-else" }), "client is no longer active"},
		{"other client kind", e.resign(t, good, func(_, c map[string]any) { c["client_kind"] = "agent" }), "client is no longer active"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := e.auth.VerifyAccessToken(ctx, tt.token)
			if err == nil {
				t.Fatalf("VerifyAccessToken succeeded: %+v", p)
			}
			if got := reason(t, err); got != tt.reason {
				t.Errorf("reason = %q, want %q (err %v)", got, tt.reason, err)
			}
			if strings.Contains(err.Error(), tt.token) && tt.token != "" {
				t.Error("error contains the token")
			}
		})
	}
	if _, err := e.auth.VerifyAccessToken(ctx, good); err != nil {
		t.Errorf("good token refused: %v (client %s)", err, client.ID)
	}
}

func TestAuthority_VerifyConnectionToken_Refused(t *testing.T) {
	e := MustEnv(t)
	ctx := context.Background()
	good, err := e.auth.IssueConnectionToken(ctx, "s", "o", "u")
	if err != nil {
		t.Fatal(err)
	}
	access, _ := e.MustAccessToken(t)
	tests := []struct {
		name   string
		token  string
		reason string
	}{
		{"access token", access, "wrong token type"},
		{"access typ", e.resign(t, good, func(h, _ map[string]any) { h["typ"] = "at+jwt" }), "wrong token type"},
		{"api audience", e.resign(t, good, func(_, c map[string]any) { c["aud"] = "berth-api" }), "wrong audience"},
		{"access token re-typed", e.resign(t, access, func(h, _ map[string]any) { h["typ"] = "JWT" }), "wrong audience"},
		{"no session", e.resign(t, good, func(_, c map[string]any) { delete(c, "dcvSessionId") }), "missing required claim"},
		{"no user", e.resign(t, good, func(_, c map[string]any) { c["dcvSessionUser"] = "" }), "missing required claim"},
		{"expired", e.resign(t, good, func(_, c map[string]any) { c["exp"] = e.clock.Now().Add(-time.Minute).Unix() }), "token expired"},
		{"alg none", sign(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, map[string]any{"kid": e.store.keyIDs()[0]}, map[string]any{"dcvSessionId": "s"}), "unsupported algorithm"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := e.auth.VerifyConnectionToken(ctx, tt.token)
			if err == nil {
				t.Fatal("VerifyConnectionToken succeeded")
			}
			if got := reason(t, err); got != tt.reason {
				t.Errorf("reason = %q, want %q (err %v)", got, tt.reason, err)
			}
		})
	}
}

func TestAuthority_Expiry(t *testing.T) {
	e := MustEnv(t)
	ctx := context.Background()
	e.auth.AccessTokenTTL = 10 * time.Minute
	tok, _ := e.MustAccessToken(t)
	e.clock.Add(10*time.Minute - time.Second)
	if _, err := e.auth.VerifyAccessToken(ctx, tok); err != nil {
		t.Fatalf("token refused before expiry: %v", err)
	}
	e.clock.Add(time.Second)
	_, err := e.auth.VerifyAccessToken(ctx, tok)
	if got := reason(t, err); got != "token expired" {
		t.Errorf("reason = %q, want token expired", got)
	}
}

func TestAuthority_VerifyAccessToken_DeactivatedClient(t *testing.T) {
	e := MustEnv(t)
	ctx := context.Background()
	tok, c := e.MustAccessToken(t)
	if _, err := e.auth.VerifyAccessToken(ctx, tok); err != nil {
		t.Fatal(err)
	}
	if err := e.store.SetClientActive(ctx, c.ID, false); err != nil {
		t.Fatal(err)
	}
	e.clock.Add(5 * time.Second) // past the status cache
	_, err := e.auth.VerifyAccessToken(ctx, tok)
	if got := reason(t, err); got != "client is no longer active" {
		t.Errorf("reason = %q", got)
	}
	// A broker that never saw the client refuses it at once.
	if _, err := e.newAuthority("https://broker.test").VerifyAccessToken(ctx, tok); err == nil {
		t.Error("other broker accepted the token of a deactivated client")
	}
	if err := e.store.SetClientActive(ctx, c.ID, true); err != nil {
		t.Fatal(err)
	}
	e.clock.Add(5 * time.Second)
	if _, err := e.auth.VerifyAccessToken(ctx, tok); err != nil {
		t.Errorf("reactivated client refused: %v", err)
	}
}

func TestAuthority_RotateKey(t *testing.T) {
	e := MustEnv(t)
	ctx := context.Background()
	e.auth.ConnectionTokenTTL = 2 * time.Hour // the grace period follows the longer TTL
	oldAccess, _ := e.MustAccessToken(t)
	oldConn, err := e.auth.IssueConnectionToken(ctx, "s", "o", "u")
	if err != nil {
		t.Fatal(err)
	}
	oldKid := e.store.keyIDs()[0]

	if err := e.auth.RotateKey(ctx); err != nil {
		t.Fatal(err)
	}
	ids := e.store.keyIDs()
	if len(ids) != 2 || ids[0] != oldKid {
		t.Fatalf("keys after rotation = %v", ids)
	}
	newKid := ids[1]
	newAccess, _ := e.MustAccessToken(t)
	if h, _ := parts(t, newAccess); h["kid"] != newKid {
		t.Errorf("new token kid = %v, want %s", h["kid"], newKid)
	}
	if _, err := e.auth.VerifyAccessToken(ctx, oldAccess); err != nil {
		t.Errorf("token signed before rotation refused: %v", err)
	}
	if _, err := e.auth.VerifyAccessToken(ctx, newAccess); err != nil {
		t.Errorf("token signed after rotation refused: %v", err)
	}
	if got := jwksKids(t, e.auth); !slices.Equal(got, []string{newKid, oldKid}) {
		t.Errorf("JWKS kids = %v, want [%s %s]", got, newKid, oldKid)
	}

	// Near the end of the grace period, a connection token signed before the
	// rotation is still good.
	e.clock.Add(2*time.Hour - time.Second)
	if _, err := e.auth.VerifyConnectionToken(ctx, oldConn); err != nil {
		t.Errorf("old connection token refused within its lifetime: %v", err)
	}

	// After the grace period the old key verifies nothing, even a token it
	// signs with a fresh expiry, and the next rotation deletes it.
	e.clock.Add(2 * time.Minute)
	forged := e.resign(t, oldAccess, func(_, c map[string]any) { c["exp"] = e.clock.Now().Add(time.Hour).Unix() })
	_, err = e.auth.VerifyAccessToken(ctx, forged)
	if got := reason(t, err); got != "unknown signing key" {
		t.Errorf("reason = %q, want unknown signing key", got)
	}
	if got := jwksKids(t, e.auth); !slices.Equal(got, []string{newKid}) {
		t.Errorf("JWKS kids after grace = %v, want [%s]", got, newKid)
	}
	if err := e.auth.RotateKey(ctx); err != nil {
		t.Fatal(err)
	}
	if ids := e.store.keyIDs(); len(ids) != 2 || slices.Contains(ids, oldKid) {
		t.Errorf("keys after second rotation = %v, want the old key deleted", ids)
	}
}

func jwksKids(t *testing.T, a *oauth.Authority) []string {
	t.Helper()
	b, err := a.JWKS(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var set struct {
		Keys []map[string]string `json:"keys"`
	}
	if err := json.Unmarshal(b, &set); err != nil {
		t.Fatal(err)
	}
	var kids []string
	for _, k := range set.Keys {
		if k["kty"] != "EC" || k["crv"] != "P-256" || k["alg"] != "ES256" || k["use"] != "sig" || len(k["x"]) != 43 || len(k["y"]) != 43 {
			t.Errorf("bad JWK %v", k)
		}
		kids = append(kids, k["kid"])
	}
	return kids
}

// TestAuthority_Cluster checks that brokers sharing a store see each other's
// rotations.
func TestAuthority_Cluster(t *testing.T) {
	e := MustEnv(t)
	ctx := context.Background()
	b := e.newAuthority("https://broker.test")
	tok, _ := e.MustAccessToken(t)
	if _, err := b.VerifyAccessToken(ctx, tok); err != nil {
		t.Fatalf("broker b refused broker a's token: %v", err)
	}
	if err := e.auth.RotateKey(ctx); err != nil {
		t.Fatal(err)
	}
	newKid := e.store.keyIDs()[1]

	// b does not know the new key yet but looks it up when a token names it.
	tok2, _ := e.MustAccessToken(t)
	if _, err := b.VerifyAccessToken(ctx, tok2); err != nil {
		t.Fatalf("broker b refused a token signed with the new key: %v", err)
	}

	// b signs with the new key once its cache refreshes.
	c, _ := e.MustClient(t, oauth.KindAPI)
	e.clock.Add(11 * time.Second)
	tok3, _, err := b.IssueAccessToken(ctx, c)
	if err != nil {
		t.Fatal(err)
	}
	if h, _ := parts(t, tok3); h["kid"] != newKid {
		t.Errorf("broker b signs with %v, want %s", h["kid"], newKid)
	}

	// Unknown kids reload the keys at most once per second.
	loads := e.store.keyLoads
	key := e.store.privateKey(t, newKid)
	for range 5 {
		bad := sign(t, jwt.SigningMethodES256, key, map[string]any{"kid": "unknown", "typ": "at+jwt"}, map[string]any{"sub": c.ID})
		_, err := b.VerifyAccessToken(ctx, bad)
		if got := reason(t, err); got != "unknown signing key" {
			t.Errorf("reason = %q, want unknown signing key", got)
		}
	}
	if got := e.store.keyLoads - loads; got > 1 {
		t.Errorf("%d key loads for unknown kids within one second, want at most 1", got)
	}
}

func TestAuthority_EnsureKey(t *testing.T) {
	ctx := context.Background()
	e := MustEnv(t)
	if err := e.auth.EnsureKey(ctx); err != nil {
		t.Fatal(err)
	}
	if got := len(e.store.keyIDs()); got != 1 {
		t.Errorf("%d keys after a second EnsureKey, want 1", got)
	}

	// Signing without EnsureKey creates the key on demand.
	s := newMemStore()
	a := oauth.New(s, "x")
	tok, err := a.IssueConnectionToken(ctx, "s", "o", "u")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.VerifyConnectionToken(ctx, tok); err != nil {
		t.Fatal(err)
	}
	if got := len(s.keyIDs()); got != 1 {
		t.Errorf("%d keys, want 1", got)
	}
}

func TestAuthority_StoreFailure(t *testing.T) {
	e := MustEnv(t)
	ctx := context.Background()
	tok, _ := e.MustAccessToken(t)
	e.store.mu.Lock()
	e.store.failKeys = errors.New("database is locked")
	e.store.mu.Unlock()
	e.clock.Add(time.Minute) // cache is stale

	// Cached keys keep working while the store fails.
	if _, err := e.auth.VerifyAccessToken(ctx, tok); err != nil {
		t.Errorf("verify with a failing store and cached keys: %v", err)
	}
	// Without cached keys the store error is returned, not a TokenError.
	_, err := e.newAuthority("https://broker.test").VerifyAccessToken(ctx, tok)
	var te *oauth.TokenError
	if err == nil || errors.As(err, &te) {
		t.Errorf("err = %v, want a store error", err)
	}
}

func TestAuthority_Concurrent(t *testing.T) {
	e := MustEnv(t)
	ctx := context.Background()
	tok, c := e.MustAccessToken(t)
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			for j := range 50 {
				if _, err := e.auth.VerifyAccessToken(ctx, tok); err != nil {
					t.Errorf("verify: %v", err)
					return
				}
				if _, _, err := e.auth.IssueAccessToken(ctx, c); err != nil {
					t.Errorf("issue: %v", err)
					return
				}
				if i == 0 && j%10 == 0 {
					if err := e.auth.RotateKey(ctx); err != nil {
						t.Errorf("rotate: %v", err)
					}
				}
			}
		})
	}
	wg.Wait()
}

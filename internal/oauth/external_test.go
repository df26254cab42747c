package oauth_test

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/berth-dev/berth/internal/jwks"
	"github.com/berth-dev/berth/internal/oauth"
	"github.com/berth-dev/berth/internal/poll"
)

const (
	idpIssuer   = "https://idp.test"
	apiAudience = "https://api.berth.test"
)

var (
	idpKeysOnce sync.Once
	idpRSA      *rsa.PrivateKey // 2048 bits
	idpRSA2     *rsa.PrivateKey // another, for forged signatures and rotation
	idpEC       map[string]*ecdsa.PrivateKey
)

// idpKeys makes the test IdP's keys once per test binary: RSA keys are slow
// to make.
func idpKeys() {
	idpKeysOnce.Do(func() {
		var err error
		if idpRSA, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
			panic(err)
		}
		if idpRSA2, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
			panic(err)
		}
		idpEC = map[string]*ecdsa.PrivateKey{}
		for name, c := range map[string]elliptic.Curve{"P-256": elliptic.P256(), "P-384": elliptic.P384(), "P-521": elliptic.P521()} {
			if idpEC[name], err = ecdsa.GenerateKey(c, rand.Reader); err != nil {
				panic(err)
			}
		}
	})
}

// idp is an external authorization server for tests: a JWKS over TLS on
// loopback and the private keys to sign tokens with.
type idp struct {
	srv   *httptest.Server
	caPEM []byte
	hits  atomic.Int32

	mu      sync.Mutex
	keys    []map[string]any
	handler http.HandlerFunc // overrides the JWKS when set
	signers map[string]crypto.Signer
}

func b64(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

func rsaJWK(kid string, pub *rsa.PublicKey, alg string) map[string]any {
	m := map[string]any{"kty": "RSA", "kid": kid, "use": "sig", "n": b64(pub.N.Bytes()), "e": b64(big.NewInt(int64(pub.E)).Bytes())}
	if alg != "" {
		m["alg"] = alg
	}
	return m
}

func ecJWK(kid string, pub *ecdsa.PublicKey) map[string]any {
	b, err := pub.Bytes()
	if err != nil {
		panic(err)
	}
	n := (len(b) - 1) / 2
	return map[string]any{"kty": "EC", "kid": kid, "crv": pub.Curve.Params().Name, "x": b64(b[1 : 1+n]), "y": b64(b[1+n:])}
}

// newIDP serves a key set of: rsa (no alg), rsa-rs256 (alg RS256, the same
// key), ec-256, ec-384, ec-521, and rsa-small, a 1024-bit key the broker
// must refuse.
func newIDP(t testing.TB) *idp {
	t.Helper()
	idpKeys()
	small := &rsa.PublicKey{N: new(big.Int).SetBit(new(big.Int).Lsh(big.NewInt(1), 1023), 0, 1), E: 65537}
	p := &idp{
		keys: []map[string]any{
			rsaJWK("rsa", &idpRSA.PublicKey, ""),
			rsaJWK("rsa-rs256", &idpRSA.PublicKey, "RS256"),
			ecJWK("ec-256", &idpEC["P-256"].PublicKey),
			ecJWK("ec-384", &idpEC["P-384"].PublicKey),
			ecJWK("ec-521", &idpEC["P-521"].PublicKey),
			rsaJWK("rsa-small", small, ""),
		},
		signers: map[string]crypto.Signer{
			"rsa": idpRSA, "rsa-rs256": idpRSA,
			"ec-256": idpEC["P-256"], "ec-384": idpEC["P-384"], "ec-521": idpEC["P-521"],
		},
	}
	p.srv = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p.hits.Add(1)
		p.mu.Lock()
		h := p.handler
		body, _ := json.Marshal(map[string]any{"keys": p.keys})
		p.mu.Unlock()
		if h != nil {
			h(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Write(body)
	}))
	t.Cleanup(p.srv.Close)
	p.caPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: p.srv.Certificate().Raw})
	return p
}

// url is the key set's URL.
func (p *idp) url() string { return p.srv.URL + "/.well-known/jwks.json" }

// addKey publishes another key.
func (p *idp) addKey(kid string, k *rsa.PrivateKey) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.keys = append(p.keys, rsaJWK(kid, &k.PublicKey, ""))
	p.signers[kid] = k
}

func (p *idp) setHandler(h http.HandlerFunc) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.handler = h
}

// claims are a token's default claims at now.
func (p *idp) claims(now time.Time) map[string]any {
	return map[string]any{
		"iss": idpIssuer, "aud": []string{apiAudience}, "sub": "client-1", "client_id": "client-1",
		"exp": now.Add(time.Hour).Unix(), "nbf": now.Unix(), "iat": now.Unix(), "jti": "j1", "scp": []string{},
	}
}

// token signs claims, edited by edit, with the key kid under alg.
func (p *idp) token(tb testing.TB, alg, kid string, now time.Time, edit func(header, claims map[string]any)) string {
	tb.Helper()
	p.mu.Lock()
	key := p.signers[kid]
	p.mu.Unlock()
	h := map[string]any{"kid": kid, "typ": "JWT"}
	c := p.claims(now)
	if edit != nil {
		edit(h, c)
	}
	return sign(tb, jwt.GetSigningMethod(alg), key, h, c)
}

// extEnv is an External over a memStore, with the test IdP registered.
type extEnv struct {
	*env
	idp *idp
	ext *oauth.External
	rec *recorder
}

func mustExtEnv(t testing.TB, reg *oauth.AuthServer) *extEnv {
	t.Helper()
	e := &extEnv{env: MustEnv(t), idp: newIDP(t), rec: &recorder{}}
	client, err := jwks.NewClient(e.idp.caPEM, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	e.ext = &oauth.External{
		Store:    e.store,
		Client:   client,
		Now:      e.clock.Now,
		Logger:   slog.New(slog.NewTextHandler(e.log, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Observer: e.rec,
	}
	if reg != nil {
		if reg.URL == "" {
			reg.URL = e.idp.url()
		}
		e.register(t, reg)
	}
	return e
}

func (e *extEnv) register(t testing.TB, a *oauth.AuthServer) {
	t.Helper()
	if err := oauth.CheckAuthServer(a); err != nil {
		t.Fatal(err)
	}
	if err := e.store.PutAuthServer(context.Background(), a); err != nil {
		t.Fatal(err)
	}
	if err := e.ext.Load(context.Background()); err != nil {
		t.Fatal(err)
	}
}

func TestExternal_Accepts(t *testing.T) {
	e := mustExtEnv(t, &oauth.AuthServer{Issuer: idpIssuer, Audience: apiAudience})
	ctx := context.Background()
	now := e.clock.Now()
	tests := []struct {
		name, alg, kid string
		edit           func(h, c map[string]any)
	}{
		{"RS256", "RS256", "rsa", nil},
		{"RS384", "RS384", "rsa", nil},
		{"RS512", "RS512", "rsa", nil},
		{"PS256", "PS256", "rsa", nil},
		{"PS384", "PS384", "rsa", nil},
		{"PS512", "PS512", "rsa", nil},
		{"RS256 key with alg RS256", "RS256", "rsa-rs256", nil},
		{"ES256", "ES256", "ec-256", nil},
		{"ES384", "ES384", "ec-384", nil},
		{"ES512", "ES512", "ec-521", nil},
		{"aud as a string", "RS256", "rsa", func(_, c map[string]any) { c["aud"] = apiAudience }},
		{"aud among others", "RS256", "rsa", func(_, c map[string]any) { c["aud"] = []string{"https://other.test", apiAudience} }},
		{"expired 59 s ago (skew)", "RS256", "rsa", func(_, c map[string]any) { c["exp"] = now.Add(-59 * time.Second).Unix() }},
		{"nbf 59 s ahead (skew)", "RS256", "rsa", func(_, c map[string]any) { c["nbf"] = now.Add(59 * time.Second).Unix() }},
		{"typ at+jwt", "RS256", "rsa", func(h, _ map[string]any) { h["typ"] = "at+jwt" }},
		{"fractional exp", "RS256", "rsa", func(_, c map[string]any) { c["exp"] = float64(now.Unix()) + 3600.5 }},
		{"Cognito access token", "RS256", "rsa", func(_, c map[string]any) { c["token_use"] = "access" }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := e.ext.Verify(ctx, e.idp.token(t, tt.alg, tt.kid, now, tt.edit))
			if err != nil {
				t.Fatalf("Verify: %v\n%s", err, e.log.String())
			}
			if p.ClientID != "client-1" || p.Kind != oauth.KindExternal || p.ExpiresAt.IsZero() {
				t.Errorf("Principal = %+v", p)
			}
		})
	}
	if n := e.idp.hits.Load(); n != 1 {
		t.Errorf("%d key set fetches, want 1 (the cache serves every token)", n)
	}
	if ev := e.rec.take(); len(ev) != 0 {
		t.Errorf("observer told %v", ev)
	}
}

// TestExternal_ClientID: the principal is client_id, else azp (Azure AD
// v2), else appid (v1), else sub.
func TestExternal_ClientID(t *testing.T) {
	e := mustExtEnv(t, &oauth.AuthServer{})
	now := e.clock.Now()
	for _, tt := range []struct {
		drop []string
		add  map[string]any
		want string
	}{
		{nil, nil, "client-1"},
		{[]string{"client_id"}, map[string]any{"azp": "azp-1", "appid": "app-1"}, "azp-1"},
		{[]string{"client_id"}, map[string]any{"appid": "app-1"}, "app-1"},
		{[]string{"client_id"}, nil, "client-1"}, // sub
	} {
		tok := e.idp.token(t, "RS256", "rsa", now, func(_, c map[string]any) {
			for _, k := range tt.drop {
				delete(c, k)
			}
			for k, v := range tt.add {
				c[k] = v
			}
		})
		p, err := e.ext.Verify(context.Background(), tok)
		if err != nil || p.ClientID != tt.want {
			t.Errorf("drop %v add %v: %+v, %v; want %s", tt.drop, tt.add, p, err, tt.want)
		}
	}
}

// TestExternal_Refused plays hostile tokens: each is refused with a
// *TokenError (a 401), counted with its reason, and logged with why, never
// with the token.
func TestExternal_Refused(t *testing.T) {
	e := mustExtEnv(t, &oauth.AuthServer{Issuer: idpIssuer, Audience: apiAudience})
	pinned := mustExtEnv(t, &oauth.AuthServer{Algorithm: "RS256"})
	now := e.clock.Now()
	idpKeys()

	// A server the token points at through jku and x5u: the broker must
	// never fetch it.
	var lured atomic.Int32
	lure := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		lured.Add(1)
		json.NewEncoder(w).Encode(map[string]any{"keys": []any{rsaJWK("evil", &idpRSA2.PublicKey, "")}})
	}))
	t.Cleanup(lure.Close)

	pubDER, err := x509.MarshalPKIXPublicKey(&idpRSA.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	pubPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER})
	std := func(edit func(h, c map[string]any)) string { return e.idp.token(t, "RS256", "rsa", now, edit) }
	segs := strings.Split(std(nil), ".")

	tests := []struct {
		name   string
		env    *extEnv
		token  string
		reason string // TokenError.Reason
		metric string
		why    string // in the log line
	}{
		{"alg none", e, sign(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, map[string]any{"kid": "rsa"}, e.idp.claims(now)),
			"unsupported algorithm", oauth.RefusedAlgorithm, `alg \"none\" is not accepted`},
		{"HS256 with the public key as secret", e, sign(t, jwt.SigningMethodHS256, pubPEM, map[string]any{"kid": "rsa"}, e.idp.claims(now)),
			"unsupported algorithm", oauth.RefusedAlgorithm, `alg \"HS256\" is not accepted`},
		{"HS256 with the modulus as secret", e, sign(t, jwt.SigningMethodHS256, idpRSA.N.Bytes(), map[string]any{"kid": "rsa-rs256"}, e.idp.claims(now)),
			"unsupported algorithm", oauth.RefusedAlgorithm, "HS256"},
		{"HS512", e, sign(t, jwt.SigningMethodHS512, []byte("secret"), map[string]any{"kid": "rsa"}, e.idp.claims(now)),
			"unsupported algorithm", oauth.RefusedAlgorithm, "HS512"},
		{"key alg RS256, token RS512", e, e.idp.token(t, "RS512", "rsa-rs256", now, nil),
			"algorithm does not match the key", oauth.RefusedAlgorithm, "key rsa-rs256 is for RS256"},
		{"key alg RS256, token PS256", e, e.idp.token(t, "PS256", "rsa-rs256", now, nil),
			"algorithm does not match the key", oauth.RefusedAlgorithm, "key rsa-rs256 is for RS256"},
		{"ES256 naming an RSA key", e, sign(t, jwt.SigningMethodES256, idpEC["P-256"], map[string]any{"kid": "rsa"}, e.idp.claims(now)),
			"algorithm does not match the key", oauth.RefusedAlgorithm, "cannot verify ES256"},
		{"ES384 naming a P-256 key", e, sign(t, jwt.SigningMethodES384, idpEC["P-384"], map[string]any{"kid": "ec-256"}, e.idp.claims(now)),
			"algorithm does not match the key", oauth.RefusedAlgorithm, "cannot verify ES384"},
		{"not the pinned algorithm", pinned, pinned.idp.token(t, "PS256", "rsa", now, nil),
			"unsupported algorithm", oauth.RefusedAlgorithm, "--jws-algorithm RS256"},
		{"RSA key under 2048 bits", e, sign(t, jwt.SigningMethodRS256, idpRSA, map[string]any{"kid": "rsa-small"}, e.idp.claims(now)),
			"unknown signing key", oauth.RefusedUnknownKey, "RSA key of 1024 bits"},
		{"unknown kid", e, sign(t, jwt.SigningMethodRS256, idpRSA2, map[string]any{"kid": "nope"}, e.idp.claims(now)),
			"unknown signing key", oauth.RefusedUnknownKey, `no usable key \"nope\"`},
		{"no kid", e, sign(t, jwt.SigningMethodRS256, idpRSA, map[string]any{}, e.idp.claims(now)),
			"unknown signing key", oauth.RefusedUnknownKey, "names no key"},
		{"forged signature", e, sign(t, jwt.SigningMethodRS256, idpRSA2, map[string]any{"kid": "rsa"}, e.idp.claims(now)),
			"signature is invalid", oauth.RefusedSignature, "does not verify"},
		{"jku and x5u to the attacker's keys", e, sign(t, jwt.SigningMethodRS256, idpRSA2,
			map[string]any{"kid": "evil", "jku": lure.URL + "/jwks", "x5u": lure.URL + "/cert"}, e.idp.claims(now)),
			"unknown signing key", oauth.RefusedUnknownKey, `no usable key \"evil\"`},
		{"jku with a registered kid", e, sign(t, jwt.SigningMethodRS256, idpRSA2,
			map[string]any{"kid": "rsa", "jku": lure.URL + "/jwks"}, e.idp.claims(now)),
			"signature is invalid", oauth.RefusedSignature, "does not verify"},
		{"embedded jwk", e, sign(t, jwt.SigningMethodRS256, idpRSA2,
			map[string]any{"kid": "evil2", "jwk": rsaJWK("evil2", &idpRSA2.PublicKey, "")}, e.idp.claims(now)),
			"unknown signing key", oauth.RefusedUnknownKey, "evil2"},
		{"crit header", e, std(func(h, _ map[string]any) { h["crit"] = []string{"exp"} }),
			"malformed token", oauth.RefusedMalformed, "crit"},
		{"expired 61 s ago", e, std(func(_, c map[string]any) { c["exp"] = now.Add(-61 * time.Second).Unix() }),
			"token expired", oauth.RefusedExpired, "more than 1m0s ago"},
		{"nbf 61 s ahead", e, std(func(_, c map[string]any) { c["nbf"] = now.Add(61 * time.Second).Unix() }),
			"token not valid yet", oauth.RefusedNotYetValid, "more than 1m0s ahead"},
		{"no exp", e, std(func(_, c map[string]any) { delete(c, "exp") }),
			"missing required claim", oauth.RefusedWrongToken, "no exp"},
		{"wrong audience", e, std(func(_, c map[string]any) { c["aud"] = "https://other.test" }),
			"wrong audience", oauth.RefusedAudience, "https://other.test"},
		{"audience prefix", e, std(func(_, c map[string]any) { c["aud"] = []string{apiAudience + "/sub"} }),
			"wrong audience", oauth.RefusedAudience, "does not hold"},
		{"empty audience array", e, std(func(_, c map[string]any) { c["aud"] = []string{} }),
			"wrong audience", oauth.RefusedAudience, "does not hold"},
		{"no audience", e, std(func(_, c map[string]any) { delete(c, "aud") }),
			"wrong audience", oauth.RefusedAudience, "does not hold"},
		{"wrong issuer", e, std(func(_, c map[string]any) { c["iss"] = "https://evil.test" }),
			"wrong issuer", oauth.RefusedIssuer, "https://evil.test"},
		{"Cognito ID token", e, std(func(_, c map[string]any) { c["token_use"] = "id" }),
			"wrong token type", oauth.RefusedWrongToken, "only access tokens"},
		{"no client", e, std(func(_, c map[string]any) { delete(c, "sub"); delete(c, "client_id") }),
			"missing required claim", oauth.RefusedWrongToken, "no client_id"},
		{"aud of the wrong type", e, std(func(_, c map[string]any) { c["aud"] = 7 }),
			"malformed token", oauth.RefusedMalformed, ""},
		{"JWE (five parts)", e, strings.Join(append(segs, "a", "b"), "."),
			"malformed token", oauth.RefusedMalformed, "5 dot-separated parts"},
		{"header not JSON", e, b64([]byte("{alg")) + "." + segs[1] + "." + segs[2],
			"malformed token", oauth.RefusedMalformed, "not a JSON object"},
		{"alg not a string", e, b64([]byte(`{"alg":1,"kid":"rsa"}`)) + "." + segs[1] + "." + segs[2],
			"malformed token", oauth.RefusedMalformed, "not a JSON object"},
		{"payload not JSON", pinned, segs[0] + "." + b64([]byte("x")) + "." + segs[2],
			"malformed token", oauth.RefusedMalformed, ""},
		{"too long", e, strings.Repeat("a", 9000), "malformed token", oauth.RefusedMalformed, "9000 bytes"},
		{"the broker's own token", e, e.env.mustAccessToken(t), "wrong issuer", oauth.RefusedIssuer, "https://broker.test"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			start := len(tt.env.log.String())
			tt.env.rec.take()
			_, err := tt.env.ext.Verify(context.Background(), tt.token)
			if got := reason(t, err); got != tt.reason {
				t.Errorf("reason = %q, want %q", got, tt.reason)
			}
			if ev := tt.env.rec.take(); !slices.Equal(ev, []string{"refused external " + tt.metric}) {
				t.Errorf("observer told %v, want refused external %s", ev, tt.metric)
			}
			line := tt.env.log.String()[start:]
			if !strings.Contains(line, "external token refused") || !strings.Contains(line, tt.why) {
				t.Errorf("log %q lacks %q", line, tt.why)
			}
			if len(tt.token) > 20 && strings.Contains(line, tt.token[len(tt.token)-20:]) {
				t.Errorf("the log holds the token: %s", line)
			}
		})
	}
	if n := lured.Load(); n != 0 {
		t.Errorf("the URL in jku/x5u was fetched %d times", n)
	}
}

// mustAccessToken is an access token of the broker (ES256, its own issuer).
func (e *env) mustAccessToken(tb testing.TB) string {
	tb.Helper()
	tok, _ := e.MustAccessToken(tb)
	return tok
}

// TestExternal_UnknownKidRefetch: a token naming a key the cache lacks
// fetches the set again (a rotation at the IdP), at most once per 10 s.
func TestExternal_UnknownKidRefetch(t *testing.T) {
	e := mustExtEnv(t, &oauth.AuthServer{})
	ctx := context.Background()
	if _, err := e.ext.Verify(ctx, e.idp.token(t, "RS256", "rsa", e.clock.Now(), nil)); err != nil {
		t.Fatal(err)
	}
	base := e.idp.hits.Load()

	idpKeys()
	e.idp.addKey("rotated", idpRSA2)
	e.clock.Add(10 * time.Second)
	if _, err := e.ext.Verify(ctx, e.idp.token(t, "RS256", "rotated", e.clock.Now(), nil)); err != nil {
		t.Fatalf("a token of the new key: %v", err)
	}
	if n := e.idp.hits.Load() - base; n != 1 {
		t.Errorf("%d fetches for the new key, want 1", n)
	}
	// Tokens with random kids cost at most one fetch per 10 s.
	for i := range 40 {
		e.clock.Add(300 * time.Millisecond) // 12 s
		tok := sign(t, jwt.SigningMethodRS256, idpRSA2, map[string]any{"kid": fmt.Sprint("random-", i)}, e.idp.claims(e.clock.Now()))
		if _, err := e.ext.Verify(ctx, tok); reason(t, err) != "unknown signing key" {
			t.Fatalf("random kid: %v", err)
		}
	}
	if n := e.idp.hits.Load() - base; n != 2 {
		t.Errorf("%d fetches after 40 random kids in 12 s, want 2", n)
	}
}

// TestExternal_Unreachable: when the IdP goes away the cached keys keep
// verifying; an unknown key is a quick 401, never a 5xx or a hang.
func TestExternal_Unreachable(t *testing.T) {
	e := mustExtEnv(t, &oauth.AuthServer{})
	ctx := context.Background()
	good := e.idp.token(t, "ES256", "ec-256", e.clock.Now(), nil)
	if _, err := e.ext.Verify(ctx, good); err != nil {
		t.Fatal(err)
	}
	e.idp.srv.Close()
	e.clock.Add(time.Hour)
	good = e.idp.token(t, "ES256", "ec-256", e.clock.Now(), nil)
	if _, err := e.ext.Verify(ctx, good); err != nil {
		t.Errorf("cached key with the IdP down: %v", err)
	}
	start := time.Now()
	tok := sign(t, jwt.SigningMethodRS256, idpRSA2, map[string]any{"kid": "new"}, e.idp.claims(e.clock.Now()))
	_, err := e.ext.Verify(ctx, tok)
	if reason(t, err) != "unknown signing key" {
		t.Errorf("unknown kid with the IdP down: %v", err)
	}
	t.Logf("refused in %s", time.Since(start).Round(time.Millisecond))
	if ev := e.rec.take(); !slices.Equal(ev, []string{"refused external " + oauth.RefusedUnknownKey}) {
		t.Errorf("observer told %v", ev)
	}
	if !strings.Contains(e.log.String(), "the last fetch failed") {
		t.Errorf("the log does not say the fetch failed:\n%s", e.log.String())
	}
	if st := e.ext.Status(); len(st) != 1 || st[0].Keys != 5 || st[0].FetchedAt.IsZero() {
		t.Errorf("Status = %+v, want 5 cached keys", st)
	}
}

// TestExternal_HostileKeySets: a key set server that answers too much,
// garbage, weak keys or nothing at all: its tokens are refused (401) with a
// log line that says why.
func TestExternal_HostileKeySets(t *testing.T) {
	idpKeys()
	huge := `{"keys":[],"pad":"` + strings.Repeat("x", jwks.MaxDocumentBytes) + `"}`
	tests := []struct {
		name    string
		handler http.HandlerFunc
		why     string
	}{
		{"over 1 MiB", func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte(huge)) }, "over the limit of 1048576 bytes"},
		{"malformed JSON", func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte(`{"keys":[{"kty":"RSA",`)) }, "not a JSON object"},
		{"RSA 1024 only", func(w http.ResponseWriter, _ *http.Request) {
			json.NewEncoder(w).Encode(map[string]any{"keys": []any{rsaJWK("rsa", &rsa.PublicKey{N: new(big.Int).SetBit(new(big.Int).Lsh(big.NewInt(1), 1023), 0, 1), E: 65537}, "")}})
		}, "RSA key of 1024 bits"},
		{"symmetric key", func(w http.ResponseWriter, _ *http.Request) {
			w.Write([]byte(`{"keys":[{"kty":"oct","kid":"rsa","k":"c2VjcmV0","alg":"HS256"}]}`))
		}, "alg \\\"HS256\\\" is not accepted"},
		{"never answers", func(_ http.ResponseWriter, r *http.Request) { <-r.Context().Done() }, "no answer within 500ms"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := mustExtEnv(t, nil)
			e.idp.setHandler(tt.handler)
			client, err := jwks.NewClient(e.idp.caPEM, 500*time.Millisecond)
			if err != nil {
				t.Fatal(err)
			}
			e.ext.Client = client
			e.register(t, &oauth.AuthServer{URL: e.idp.url()})
			start := time.Now()
			_, err = e.ext.Verify(context.Background(), e.idp.token(t, "RS256", "rsa", e.clock.Now(), nil))
			if reason(t, err) != "unknown signing key" {
				t.Errorf("Verify = %v", err)
			}
			t.Logf("refused in %s", time.Since(start).Round(time.Millisecond))
			if ev := e.rec.take(); !slices.Equal(ev, []string{"refused external " + oauth.RefusedKeysUnavailable}) {
				t.Errorf("observer told %v", ev)
			}
			if log := e.log.String(); !strings.Contains(log, "external token refused") || !strings.Contains(log, tt.why) {
				t.Errorf("log lacks %q:\n%s", tt.why, log)
			}
		})
	}
}

// TestExternal_ContextEnds: a request that ends while the key set is being
// fetched is answered at once.
func TestExternal_ContextEnds(t *testing.T) {
	e := mustExtEnv(t, nil)
	// It answers once the broker's fetch gives up (2 s).
	e.idp.setHandler(func(_ http.ResponseWriter, r *http.Request) { <-r.Context().Done() })
	e.register(t, &oauth.AuthServer{URL: e.idp.url()})
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	_, err := e.ext.Verify(ctx, e.idp.token(t, "RS256", "rsa", e.clock.Now(), nil))
	if reason(t, err) != "unknown signing key" {
		t.Errorf("Verify = %v", err)
	}
}

// TestExternal_Load: registering and unregistering take effect at the next
// Load, and Run loads regularly.
func TestExternal_Load(t *testing.T) {
	e := mustExtEnv(t, nil)
	ctx := context.Background()
	tok := e.idp.token(t, "RS256", "rsa", e.clock.Now(), nil)
	if e.ext.Registered() {
		t.Fatal("Registered with none")
	}
	e.ext.ReloadInterval = 20 * time.Millisecond
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); e.ext.Run(runCtx) }()
	t.Cleanup(func() { stop(); <-done })

	if err := e.store.PutAuthServer(ctx, &oauth.AuthServer{URL: e.idp.url(), Audience: "https://other.test"}); err != nil {
		t.Fatal(err)
	}
	poll.Until(t, 5*time.Second, "Run to load the registered server", e.ext.Registered)
	if _, err := e.ext.Verify(ctx, tok); reason(t, err) != "wrong audience" {
		t.Errorf("Verify with another audience registered = %v", err)
	}
	// Registering again with other options keeps the cache and changes the
	// checks.
	if err := e.store.PutAuthServer(ctx, &oauth.AuthServer{URL: e.idp.url(), Audience: apiAudience}); err != nil {
		t.Fatal(err)
	}
	poll.Until(t, 5*time.Second, "the new audience", func() bool {
		_, err := e.ext.Verify(ctx, tok)
		return err == nil
	})
	if err := e.store.DeleteAuthServer(ctx, e.idp.url()); err != nil {
		t.Fatal(err)
	}
	poll.Until(t, 5*time.Second, "Run to drop the unregistered server", func() bool { return !e.ext.Registered() })
	if _, err := e.ext.Verify(ctx, tok); reason(t, err) != "issuer not accepted" {
		t.Errorf("Verify after unregistering = %v", err)
	}
	for _, want := range []string{"auth server registered", "auth server options changed", "auth server unregistered"} {
		if !strings.Contains(e.log.String(), want) {
			t.Errorf("log lacks %q", want)
		}
	}

	// A store that fails keeps the servers read before, logged once.
	if err := e.store.PutAuthServer(ctx, &oauth.AuthServer{URL: e.idp.url()}); err != nil {
		t.Fatal(err)
	}
	poll.Until(t, 5*time.Second, "the server registered again", e.ext.Registered)
	e.store.mu.Lock()
	e.store.failAuth = errors.New("database down")
	e.store.mu.Unlock()
	poll.Until(t, 5*time.Second, "the failure logged", func() bool {
		return strings.Contains(e.log.String(), "reading the registered auth servers failed")
	})
	if !e.ext.Registered() {
		t.Error("a failing store dropped the servers")
	}
}

func TestCheckAuthServer(t *testing.T) {
	tests := []struct {
		s     oauth.AuthServer
		field string // "" when accepted
	}{
		{oauth.AuthServer{URL: "https://idp.test/jwks"}, ""},
		{oauth.AuthServer{URL: "https://idp.test/jwks", Algorithm: "PS512", Issuer: "https://idp.test", Audience: "api://berth"}, ""},
		{oauth.AuthServer{URL: "http://127.0.0.1:4444/jwks"}, ""},
		{oauth.AuthServer{URL: "http://idp.test/jwks"}, "url"},
		{oauth.AuthServer{URL: "https://idp.test/jwks", Algorithm: "HS256"}, "jws-algorithm"},
		{oauth.AuthServer{URL: "https://idp.test/jwks", Algorithm: "none"}, "jws-algorithm"},
		{oauth.AuthServer{URL: "https://idp.test/jwks", Algorithm: "rs256"}, "jws-algorithm"},
		{oauth.AuthServer{URL: "https://idp.test/jwks", Issuer: "a\nb"}, "issuer"},
		{oauth.AuthServer{URL: "https://idp.test/jwks", Audience: strings.Repeat("a", 1025)}, "audience"},
	}
	for _, tt := range tests {
		err := oauth.CheckAuthServer(&tt.s)
		var ae *oauth.AuthServerError
		switch {
		case tt.field == "" && err != nil:
			t.Errorf("%+v: %v", tt.s, err)
		case tt.field != "" && (!errors.As(err, &ae) || ae.Field != tt.field):
			t.Errorf("%+v: %v, want an error of field %s", tt.s, err, tt.field)
		}
	}
}

// TestAPIVerifier routes the broker's tokens to the Authority and the others
// to External, and refuses the broker's own with
// enable-authorization-server = false.
func TestAPIVerifier(t *testing.T) {
	e := mustExtEnv(t, nil)
	ctx := context.Background()
	own := e.mustAccessToken(t)
	ext := e.idp.token(t, "RS256", "rsa", e.clock.Now(), nil)
	check := func(v *oauth.APIVerifier, token, want string) {
		t.Helper()
		p, err := v.VerifyAccessToken(ctx, token)
		if want == "" {
			if err != nil {
				t.Errorf("refused: %v", err)
			}
			return
		}
		if p != nil || reason(t, err) != want {
			t.Errorf("got %+v, %v; want %q", p, err, want)
		}
	}
	both := &oauth.APIVerifier{Authority: e.auth, BrokerTokens: true, External: e.ext}
	externalOnly := &oauth.APIVerifier{Authority: e.auth, External: e.ext}

	// No server registered.
	check(both, own, "")
	check(both, ext, "malformed token") // the broker's own checks, as before (its aud is a string)
	check(externalOnly, own, "issuer not accepted")
	check(externalOnly, ext, "issuer not accepted")

	e.register(t, &oauth.AuthServer{URL: e.idp.url()})
	check(both, own, "")
	check(both, ext, "")
	check(externalOnly, own, "issuer not accepted")
	check(externalOnly, ext, "")
	// A token forged with the broker's issuer and the IdP's key is the
	// broker's business: refused.
	forged := e.idp.token(t, "RS256", "rsa", e.clock.Now(), func(_, c map[string]any) { c["iss"] = "https://broker.test" })
	check(both, forged, "malformed token")
	check(externalOnly, forged, "issuer not accepted")
	if !strings.Contains(e.log.String(), "enable-authorization-server = false refuses those") {
		t.Errorf("the log does not say why the broker's token was refused:\n%s", e.log.String())
	}
}

// BenchmarkVerify compares the verification of an external RS256 token on a
// warm key set cache with the broker's own ES256 access token, both through
// the API's verifier with an external server registered.
func BenchmarkVerify(b *testing.B) {
	e := mustExtEnv(b, &oauth.AuthServer{Issuer: idpIssuer, Audience: apiAudience})
	e.ext.Logger = slog.New(slog.DiscardHandler)
	e.auth.Logger = slog.New(slog.DiscardHandler)
	v := &oauth.APIVerifier{Authority: e.auth, BrokerTokens: true, External: e.ext}
	ctx := context.Background()
	for _, bc := range []struct{ name, token string }{
		{"ExternalRS256", e.idp.token(b, "RS256", "rsa", e.clock.Now(), nil)},
		{"ExternalES256", e.idp.token(b, "ES256", "ec-256", e.clock.Now(), nil)},
		{"BrokerES256", e.mustAccessToken(b)},
	} {
		if _, err := v.VerifyAccessToken(ctx, bc.token); err != nil {
			b.Fatalf("%s: %v", bc.name, err)
		}
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := v.VerifyAccessToken(ctx, bc.token); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

package oauth

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"
	"unicode"

	"github.com/golang-jwt/jwt/v5"
	"golang.org/x/time/rate"

	"github.com/berth-dev/berth/internal/jwks"
)

const (
	// KindExternal is the Principal.Kind of a token from a registered
	// external authorization server.
	KindExternal = "external"

	// DefaultReloadInterval is how often External.Run reads the registered
	// servers again: a register-auth-server or unregister-auth-server on
	// any broker of a cluster is in effect on every broker within it.
	DefaultReloadInterval = 2 * time.Second
	// DefaultRefreshInterval is how old a key set may grow before
	// External.Run fetches it again without a token asking.
	DefaultRefreshInterval = 5 * time.Minute
	// refreshRetry is the shortest time between two background fetches of
	// a key set that fails.
	refreshRetry = 30 * time.Second
	// ExternalLeeway is the clock skew allowed on the "exp" and "nbf" of
	// external tokens.
	ExternalLeeway = 60 * time.Second

	// maxClaimLen bounds the issuer and audience of a registration.
	maxClaimLen = 1024
)

// More reasons given in TokenError, for external tokens.
const (
	reasonNotYetValid  = "token not valid yet"
	reasonKeyAlgorithm = "algorithm does not match the key"
	reasonNotAccepted  = "issuer not accepted"
)

// AuthServerError is a registration that CheckAuthServer refuses. Field is
// the AuthServer field's option name: url, jws-algorithm, issuer or audience.
type AuthServerError struct {
	Field string
	Err   error
}

// Error implements error.
func (e *AuthServerError) Error() string { return e.Field + ": " + e.Err.Error() }

// Unwrap returns Err.
func (e *AuthServerError) Unwrap() error { return e.Err }

// CheckAuthServer returns nil if s may be registered, or an
// *AuthServerError: its URL must pass jwks.CheckURL (https, or http on a
// loopback host), its Algorithm be empty or one of jwks.Algorithms (never
// "none" or an HMAC algorithm), its Issuer and Audience at most 1024
// printable characters.
func CheckAuthServer(s *AuthServer) error {
	if err := jwks.CheckURL(s.URL); err != nil {
		return &AuthServerError{"url", err}
	}
	if s.Algorithm != "" && !jwks.Allowed(s.Algorithm) {
		return &AuthServerError{"jws-algorithm", fmt.Errorf("%q is not one of %s (none and the HMAC algorithms are refused for external servers)",
			clipClaim(s.Algorithm), strings.Join(jwks.Algorithms, ", "))}
	}
	for _, f := range []struct{ name, v string }{{"issuer", s.Issuer}, {"audience", s.Audience}} {
		if len(f.v) > maxClaimLen || strings.IndexFunc(f.v, func(r rune) bool { return !unicode.IsPrint(r) }) >= 0 {
			return &AuthServerError{f.name, fmt.Errorf("must be at most %d printable characters", maxClaimLen)}
		}
	}
	return nil
}

// AuthServerStatus is what a broker knows of a registered server's key set,
// for metrics.
type AuthServerStatus struct {
	URL string
	// FetchedAt is when its key set was last fetched; zero: never.
	FetchedAt time.Time
	// Keys is the number of usable keys cached.
	Keys int
}

// External verifies access tokens from the external authorization servers
// registered in the Store (register-auth-server). Load reads the servers,
// Run reads them again every ReloadInterval and keeps their key sets fresh,
// Verify checks a token. The exported fields are tunables to set before
// first use. It is safe for concurrent use.
//
// A token is accepted when it is a JWS signed with one of jwks.Algorithms (the
// server's pinned one, if any, and the key's own "alg", if any) by a key of a
// registered key set named by its "kid"; its "exp" is set and, like "nbf",
// holds within ExternalLeeway; its "iss" and "aud" are the server's when it
// names them; and its "token_use", if any, is "access" (Amazon Cognito's ID
// tokens say "id"). Header members that point at keys (jku, x5u, jwk, x5c) are
// ignored: only registered URLs are fetched.
type External struct {
	// Store holds the registered servers.
	Store Store
	// Client fetches key sets; nil means jwks.NewClient(nil, 0).
	Client *http.Client
	// ReloadInterval is how often Run reads the registered servers; zero
	// means DefaultReloadInterval.
	ReloadInterval time.Duration
	// RefreshInterval is how old a key set grows before Run fetches it
	// again; zero means DefaultRefreshInterval.
	RefreshInterval time.Duration
	// MinRefetch is the shortest time between two fetches of one key set;
	// zero means jwks.DefaultMinRefetch (10 s).
	MinRefetch time.Duration
	// Now returns the current time; nil means time.Now.
	Now func() time.Time
	// Logger receives the refusals (why, never the token) and the changes
	// of the registered servers; nil means slog.Default().
	Logger *slog.Logger
	// Observer, when set, is told of refused tokens, as kind TokenExternal.
	Observer Observer

	mu       sync.RWMutex
	servers  []*extServer // registered, oldest first; guarded by mu
	loadErr  bool         // the last Load failed
	logOnce  sync.Once
	logLimit *rate.Limiter // bounds the refusal lines
}

// extServer is a registered server and the cache of its key set.
type extServer struct {
	AuthServer
	src *jwks.Source
}

func (e *External) now() time.Time {
	if e.Now != nil {
		return e.Now()
	}
	return time.Now()
}

func (e *External) logger() *slog.Logger {
	l := e.Logger
	if l == nil {
		l = slog.Default()
	}
	return l.With("component", "oauth")
}

// Load reads the registered servers from the Store. A server that stays
// registered keeps its cached key set; a new one's set is fetched at once,
// in the background.
func (e *External) Load(ctx context.Context) error {
	list, err := e.Store.AuthServers(ctx)
	if err != nil {
		return fmt.Errorf("load auth servers: %w", err)
	}
	log := e.logger()
	e.mu.Lock()
	old := make(map[string]*extServer, len(e.servers))
	for _, s := range e.servers {
		old[s.URL] = s
	}
	servers := make([]*extServer, 0, len(list))
	var added []*extServer
	for _, a := range list {
		s := &extServer{AuthServer: *a}
		if o := old[a.URL]; o != nil {
			s.src = o.src
			if o.Algorithm != a.Algorithm || o.Issuer != a.Issuer || o.Audience != a.Audience {
				log.InfoContext(ctx, "auth server options changed", "auth_server", a.URL,
					"jws_algorithm", a.Algorithm, "issuer", a.Issuer, "audience", a.Audience)
			}
			delete(old, a.URL)
		} else {
			s.src = jwks.NewSource(a.URL, jwks.Options{Client: e.Client, MinRefetch: e.MinRefetch, Now: e.Now, Logger: e.Logger})
			added = append(added, s)
		}
		servers = append(servers, s)
	}
	e.servers = servers
	e.mu.Unlock()
	for _, s := range added {
		log.InfoContext(ctx, "auth server registered", "auth_server", s.URL,
			"jws_algorithm", s.Algorithm, "issuer", s.Issuer, "audience", s.Audience)
		s.src.Fetch()
	}
	for u := range old {
		log.InfoContext(ctx, "auth server unregistered", "auth_server", u)
	}
	return nil
}

// Run reads the registered servers every ReloadInterval, and fetches the key
// sets older than RefreshInterval, until ctx ends. A Store that fails is
// logged once until it answers again; the servers loaded before stay.
func (e *External) Run(ctx context.Context) {
	every := e.ReloadInterval
	if every <= 0 {
		every = DefaultReloadInterval
	}
	refresh := e.RefreshInterval
	if refresh <= 0 {
		refresh = DefaultRefreshInterval
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		err := e.Load(ctx)
		e.mu.Lock()
		was := e.loadErr
		e.loadErr = err != nil
		servers := e.servers
		e.mu.Unlock()
		switch {
		case err != nil && !was && ctx.Err() == nil:
			e.logger().WarnContext(ctx, "reading the registered auth servers failed; using the ones read before", "err", err)
		case err == nil && was:
			e.logger().InfoContext(ctx, "reading the registered auth servers works again")
		}
		for _, s := range servers {
			s.src.Refresh(refresh, refreshRetry)
		}
	}
}

// Registered reports whether any server is registered (as last loaded).
func (e *External) Registered() bool {
	e.mu.RLock()
	defer e.mu.RUnlock()
	return len(e.servers) > 0
}

// Status returns the state of each registered server's key set.
func (e *External) Status() []AuthServerStatus {
	e.mu.RLock()
	servers := e.servers
	e.mu.RUnlock()
	out := make([]AuthServerStatus, 0, len(servers))
	for _, s := range servers {
		st := s.src.Status()
		out = append(out, AuthServerStatus{URL: s.URL, FetchedAt: st.FetchedAt, Keys: st.Keys})
	}
	return out
}

// extRefusal is why an external token was refused: reason is shown to the
// client, metric counted, detail only logged.
type extRefusal struct {
	reason, metric, detail string
	server                 string // the key set URL, when known
}

func refuse(reason, metric, format string, args ...any) *extRefusal {
	return &extRefusal{reason: reason, metric: metric, detail: fmt.Sprintf(format, args...)}
}

// jwsHeader is what Verify reads of a token's header.
type jwsHeader struct {
	Alg  string          `json:"alg"`
	Kid  string          `json:"kid"`
	Crit json.RawMessage `json:"crit"`
}

// externalClaims are the claims read from an external token.
type externalClaims struct {
	jwt.RegisteredClaims
	ClientID string `json:"client_id"` // Cognito, RFC 9068
	AZP      string `json:"azp"`       // Azure AD v2, OIDC
	AppID    string `json:"appid"`     // Azure AD v1
	TokenUse string `json:"token_use"` // Cognito: "access" or "id"
}

// Verify checks a token from a registered server and returns its client: the
// first of "client_id", "azp", "appid" and "sub" that is set, with Kind
// KindExternal. A refused token gets a *TokenError, logged with the reason
// and counted; it never waits longer than a key set fetch (5 s) or ctx.
func (e *External) Verify(ctx context.Context, token string) (*Principal, error) {
	p, r := e.verify(ctx, token)
	if r == nil {
		return p, nil
	}
	if e.Observer != nil {
		e.Observer.TokenRefused(TokenExternal, r.metric)
	}
	e.logRefusal(ctx, token, r)
	return nil, tokenError(r.reason)
}

func (e *External) verify(ctx context.Context, token string) (*Principal, *extRefusal) {
	if token == "" || len(token) > maxTokenLen {
		return nil, refuse(reasonMalformed, RefusedMalformed, "token of %d bytes", len(token))
	}
	hdr, payload, err := splitToken(token)
	if err != nil {
		return nil, refuse(reasonMalformed, RefusedMalformed, "%v", err)
	}
	switch {
	case !jwks.Allowed(hdr.Alg):
		return nil, refuse(reasonAlgorithm, RefusedAlgorithm, "alg %q is not accepted from an external server (only %s)",
			clipClaim(hdr.Alg), strings.Join(jwks.Algorithms, ", "))
	case hdr.Crit != nil:
		return nil, refuse(reasonMalformed, RefusedMalformed, "the header has crit members, which are not supported")
	case hdr.Kid == "":
		return nil, refuse(reasonUnknownKey, RefusedUnknownKey, "the header names no key (kid)")
	}
	cands, iss, registered := e.candidates(payload)
	if !registered {
		return nil, refuse(reasonNotAccepted, RefusedNotAccepted, "no auth server is registered")
	}
	if len(cands) == 0 {
		return nil, refuse(reasonIssuer, RefusedIssuer, "no registered auth server has issuer %q", clipClaim(iss))
	}
	keyed, r := e.keysFor(ctx, cands, hdr.Kid)
	if r != nil {
		return nil, r
	}
	var first *extRefusal
	for _, k := range keyed {
		p, r := e.check(token, hdr, k.srv, k.key)
		if r == nil {
			return p, nil
		}
		r.server = k.srv.URL
		if first == nil {
			first = r
		}
	}
	return nil, first
}

// splitToken decodes the header of a JWS in compact form and returns it with
// the payload segment.
func splitToken(token string) (jwsHeader, string, error) {
	var h jwsHeader
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return h, "", fmt.Errorf("%d dot-separated parts, want 3 (a JWS)", len(parts))
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[0])
	if err != nil {
		return h, "", errors.New("the header is not base64url")
	}
	if err := json.Unmarshal(b, &h); err != nil {
		return h, "", errors.New("the header is not a JSON object with string alg and kid")
	}
	return h, parts[1], nil
}

// candidates returns the registered servers that may have issued a token
// with this payload segment: those with no issuer set, and those whose
// issuer is the token's (not verified yet: the key's server checks it
// again), with the token's issuer, and whether any server is registered.
func (e *External) candidates(payload string) ([]*extServer, string, bool) {
	e.mu.RLock()
	servers := e.servers
	e.mu.RUnlock()
	iss, read := "", false
	var out []*extServer
	for _, s := range servers {
		if s.Issuer != "" {
			if !read {
				iss, read = unverifiedIssuer(payload), true
			}
			if s.Issuer != iss {
				continue
			}
		}
		out = append(out, s)
	}
	return out, iss, len(servers) > 0
}

// unverifiedIssuer returns the "iss" of a payload segment, or "".
func unverifiedIssuer(payload string) string {
	b, err := base64.RawURLEncoding.DecodeString(payload)
	if err != nil {
		return ""
	}
	var c struct {
		Iss string `json:"iss"`
	}
	if json.Unmarshal(b, &c) != nil {
		return ""
	}
	return c.Iss
}

// keyedServer is a server whose key set holds the token's kid.
type keyedServer struct {
	srv *extServer
	key *jwks.Key
}

// keysFor returns the candidates whose key sets hold kid. When none of the
// cached sets does, it fetches them again (each at most once per
// MinRefetch) and waits for those fetches or ctx.
func (e *External) keysFor(ctx context.Context, cands []*extServer, kid string) ([]keyedServer, *extRefusal) {
	var out []keyedServer
	for _, s := range cands {
		if k := s.src.Cached(kid); k != nil {
			out = append(out, keyedServer{s, k})
		}
	}
	if len(out) > 0 {
		return out, nil
	}
	var waits []<-chan struct{}
	for _, s := range cands {
		if ch := s.src.Fetch(); ch != nil {
			waits = append(waits, ch)
		}
	}
	for _, ch := range waits {
		select {
		case <-ch:
		case <-ctx.Done():
		}
	}
	var errs []string
	unavailable := true
	for _, s := range cands {
		if ctx.Err() != nil {
			// The caller is gone: look at what the cache holds now.
			if k := s.src.Cached(kid); k != nil {
				out = append(out, keyedServer{s, k})
			}
			continue
		}
		k, err := s.src.Key(ctx, kid)
		if err != nil {
			errs = append(errs, err.Error())
			unavailable = unavailable && errors.Is(err, jwks.ErrUnavailable)
			continue
		}
		out = append(out, keyedServer{s, k})
	}
	if len(out) > 0 {
		return out, nil
	}
	metric := RefusedUnknownKey
	if unavailable {
		metric = RefusedKeysUnavailable
	}
	if ctx.Err() != nil {
		errs = append(errs, "the request ended while the key sets were fetched")
	}
	r := refuse(reasonUnknownKey, metric, "no registered key set holds kid %q: %s", clipClaim(kid), strings.Join(errs, "; "))
	if len(cands) == 1 {
		r.server = cands[0].URL
	}
	return nil, r
}

// check verifies the token with key k of server s.
func (e *External) check(token string, hdr jwsHeader, s *extServer, k *jwks.Key) (*Principal, *extRefusal) {
	if s.Algorithm != "" && hdr.Alg != s.Algorithm {
		return nil, refuse(reasonAlgorithm, RefusedAlgorithm, "the token is signed with %s; the server is registered with --jws-algorithm %s", hdr.Alg, s.Algorithm)
	}
	if err := k.Check(hdr.Alg); err != nil {
		return nil, refuse(reasonKeyAlgorithm, RefusedAlgorithm, "%v", err)
	}
	opts := []jwt.ParserOption{
		jwt.WithValidMethods([]string{hdr.Alg}),
		jwt.WithLeeway(ExternalLeeway),
		jwt.WithExpirationRequired(),
		jwt.WithTimeFunc(e.now),
	}
	if s.Issuer != "" {
		opts = append(opts, jwt.WithIssuer(s.Issuer))
	}
	if s.Audience != "" {
		opts = append(opts, jwt.WithAudience(s.Audience))
	}
	var c externalClaims
	_, err := jwt.NewParser(opts...).ParseWithClaims(token, &c, func(*jwt.Token) (any, error) { return k.Public, nil })
	if err != nil {
		return nil, externalRefusal(err, &c, s)
	}
	if c.TokenUse != "" && c.TokenUse != "access" {
		return nil, refuse(reasonType, RefusedWrongToken, "token_use %q: only access tokens open the API", clipClaim(c.TokenUse))
	}
	id := firstSet(c.ClientID, c.AZP, c.AppID, c.Subject)
	if id == "" {
		return nil, refuse(reasonMissingClaim, RefusedWrongToken, "no client_id, azp, appid or sub claim")
	}
	var exp time.Time
	if c.ExpiresAt != nil {
		exp = c.ExpiresAt.Time
	}
	return &Principal{ClientID: clipClaim(id), Kind: KindExternal, ExpiresAt: exp}, nil
}

// externalRefusal says why the JWT library refused a token. Several checks
// may fail at once; the most telling is named.
func externalRefusal(err error, c *externalClaims, s *extServer) *extRefusal {
	switch {
	case errors.Is(err, jwt.ErrTokenMalformed):
		return refuse(reasonMalformed, RefusedMalformed, "%v", err)
	case errors.Is(err, jwt.ErrTokenSignatureInvalid):
		return refuse(reasonSignature, RefusedSignature, "the signature does not verify with the key: %v", err)
	case errors.Is(err, jwt.ErrTokenUnverifiable):
		return refuse(reasonAlgorithm, RefusedAlgorithm, "%v", err)
	case errors.Is(err, jwt.ErrTokenExpired):
		return refuse(reasonExpired, RefusedExpired, "exp %s is more than %s ago", numeric(c.ExpiresAt), ExternalLeeway)
	case errors.Is(err, jwt.ErrTokenNotValidYet):
		return refuse(reasonNotYetValid, RefusedNotYetValid, "nbf %s is more than %s ahead", numeric(c.NotBefore), ExternalLeeway)
	case c.ExpiresAt == nil:
		return refuse(reasonMissingClaim, RefusedWrongToken, "no exp claim")
	case errors.Is(err, jwt.ErrTokenInvalidIssuer) || s.Issuer != "" && c.Issuer != s.Issuer:
		return refuse(reasonIssuer, RefusedIssuer, "iss %q is not %q", clipClaim(c.Issuer), s.Issuer)
	case errors.Is(err, jwt.ErrTokenInvalidAudience) || s.Audience != "" && !slices.Contains(c.Audience, s.Audience):
		return refuse(reasonAudience, RefusedAudience, "aud %q does not hold %q", clipClaim(strings.Join(c.Audience, " ")), s.Audience)
	}
	return refuse(reasonInvalid, RefusedWrongToken, "%v", err)
}

func numeric(d *jwt.NumericDate) string {
	if d == nil {
		return "(none)"
	}
	return d.UTC().Format(time.RFC3339)
}

func firstSet(s ...string) string {
	for _, v := range s {
		if v != "" {
			return v
		}
	}
	return ""
}

// clipClaim shortens a value from a token for messages and logs.
func clipClaim(s string) string {
	const n = 128
	if len(s) > n {
		s = s[:n] + "..."
	}
	return strings.ToValidUTF8(s, "?")
}

// logRefusal logs why a token was refused, at most 20 lines a second with
// bursts of 50: the token itself never, its kid, alg and unverified iss
// clipped.
func (e *External) logRefusal(ctx context.Context, token string, r *extRefusal) {
	e.logOnce.Do(func() { e.logLimit = rate.NewLimiter(20, 50) })
	if !e.logLimit.Allow() {
		return
	}
	attrs := []any{"reason", r.reason, "why", r.detail}
	if r.server != "" {
		attrs = append(attrs, "auth_server", r.server)
	}
	if hdr, payload, err := splitToken(token); err == nil {
		attrs = append(attrs, "kid", clipClaim(hdr.Kid), "alg", clipClaim(hdr.Alg), "iss", clipClaim(unverifiedIssuer(payload)))
	}
	e.logger().InfoContext(ctx, "external token refused", attrs...)
}

// APIVerifier verifies the client API's bearer tokens (httpapi.Verifier):
// the broker's own access tokens, told apart by their "iss", through
// Authority while BrokerTokens is set, and every other token through
// External when a server is registered.
type APIVerifier struct {
	// Authority verifies the broker's own access tokens.
	Authority *Authority
	// BrokerTokens is enable-authorization-server: the broker's own access
	// tokens are accepted. When false, they are refused, and only tokens of
	// registered servers are.
	BrokerTokens bool
	// External verifies the tokens of registered servers; nil: none.
	External *External

	logOnce  sync.Once
	logLimit *rate.Limiter
}

// VerifyAccessToken checks a bearer token. It returns a *TokenError if the
// token is not acceptable, and another error if the store failed.
func (v *APIVerifier) VerifyAccessToken(ctx context.Context, token string) (*Principal, error) {
	external := v.External != nil && v.External.Registered()
	if !external && v.BrokerTokens {
		return v.Authority.VerifyAccessToken(ctx, token)
	}
	_, rest, _ := strings.Cut(token, ".")
	payload, _, _ := strings.Cut(rest, ".")
	own := len(token) <= maxTokenLen && unverifiedIssuer(payload) == v.Authority.issuer()
	switch {
	case own && v.BrokerTokens:
		return v.Authority.VerifyAccessToken(ctx, token)
	case own:
		return nil, v.notAccepted(ctx, "the token is the broker's own, and enable-authorization-server = false refuses those")
	case external:
		return v.External.Verify(ctx, token)
	}
	return nil, v.notAccepted(ctx, "no auth server is registered (register-auth-server) and enable-authorization-server = false")
}

// notAccepted refuses a token whose issuer is not accepted, logging why (at
// most 20 lines a second, as External does).
func (v *APIVerifier) notAccepted(ctx context.Context, why string) error {
	v.Authority.refused(TokenAccess, RefusedNotAccepted)
	v.logOnce.Do(func() { v.logLimit = rate.NewLimiter(20, 50) })
	if v.logLimit.Allow() {
		v.Authority.logger().InfoContext(ctx, "access token refused", "reason", reasonNotAccepted, "why", why)
	}
	return tokenError(reasonNotAccepted)
}

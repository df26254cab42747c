// Package oauth is berth's OAuth2 authorization server: the part of the broker
// that registers API and agent clients, hands out access tokens at
// /oauth2/token (client credentials grant), lets agents register themselves
// with a software statement (RFC 7591 style), and issues and verifies the
// connection tokens that DCV clients present to DCV servers and gateways.
//
// Tokens are ES256 JWTs. The signing keys live in the Store, so every broker of
// a cluster signs and verifies with the same keys; each Authority caches them
// and reloads them regularly, which picks up a rotation done by another broker
// or by an admin command. A RemoteKeySet verifies connection tokens on another
// host from the keys the broker publishes as a JWKS.
//
// Access tokens and connection tokens carry different "typ" headers and
// audiences ("berth-api" and "dcv-session"), so one never verifies as the other.
//
// Secrets (client secrets, tokens, software statements, private keys) are never
// logged, nor are software statement IDs (statements from older versions
// follow from theirs): logs name a statement by its Fingerprint. Stores keep
// statements and client secrets only as hashes.
package oauth

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"
)

const (
	defaultTokenTTL = time.Hour
	// defaultIssuer is used when Authority.Issuer is empty.
	defaultIssuer = "berth"
)

// ErrInvalidClient means client authentication failed: the client is unknown,
// inactive, of the wrong kind, or the secret is wrong. Which one is not told.
var ErrInvalidClient = errors.New("invalid client")

// ErrInvalidStatement means a software statement does not register agents:
// it is unknown, or one of the errors below, which wrap it.
var ErrInvalidStatement = errors.New("invalid software statement")

// Why a known software statement registers no more agents.
var (
	ErrStatementInactive = fmt.Errorf("%w: deactivated", ErrInvalidStatement)
	ErrStatementExpired  = fmt.Errorf("%w: expired", ErrInvalidStatement)
	ErrStatementUsedUp   = fmt.Errorf("%w: maximum number of uses reached", ErrInvalidStatement)
)

// TokenError says why a token or an Authorization header was refused. Reason is
// safe to show to the caller: it never contains the token.
type TokenError struct {
	Reason string
}

// Error implements error.
func (e *TokenError) Error() string { return "invalid token: " + e.Reason }

// Reasons given in TokenError.
const (
	reasonMalformed       = "malformed token"
	reasonExpired         = "token expired"
	reasonUnknownKey      = "unknown signing key"
	reasonSignature       = "signature is invalid"
	reasonAlgorithm       = "unsupported algorithm"
	reasonType            = "wrong token type"
	reasonAudience        = "wrong audience"
	reasonIssuer          = "wrong issuer"
	reasonMissingClaim    = "missing required claim"
	reasonInactiveClient  = "client is no longer active"
	reasonInvalid         = "invalid token"
	reasonMalformedHeader = "malformed authorization header"
	reasonScheme          = "unsupported authorization scheme"
	reasonHeaderTooLarge  = "authorization header too large"
)

func tokenError(reason string) *TokenError { return &TokenError{Reason: reason} }

// Principal is the client an access token was issued to.
type Principal struct {
	ClientID  string
	Kind      string // KindAPI or KindAgent
	ExpiresAt time.Time
}

// ConnectionClaims are the claims of a verified connection token.
type ConnectionClaims struct {
	SessionID string // dcvSessionId
	Owner     string // dcvSessionOwner
	User      string // dcvSessionUser: the user the token lets connect
	ID        string // jti
	IssuedAt  time.Time
	ExpiresAt time.Time
}

// Authority issues and verifies tokens and registers clients. Create it with
// New; the exported fields are tunables that may be set before first use and
// must not change afterwards. It is safe for concurrent use.
type Authority struct {
	// Store keeps clients, signing keys and software statements.
	Store Store
	// Issuer is the "iss" of every token; all brokers of a cluster must agree
	// on it. Empty means "berth".
	Issuer string
	// AccessTokenTTL is the lifetime of access tokens; zero means 1h.
	AccessTokenTTL time.Duration
	// ConnectionTokenTTL is the lifetime of connection tokens; zero means 1h.
	ConnectionTokenTTL time.Duration
	// Now returns the current time; nil means time.Now.
	Now func() time.Time
	// Logger receives operational messages, never secrets or tokens; nil
	// means slog.Default().
	Logger *slog.Logger
	// Observer, when set, is told of tokens issued and refused (metrics).
	Observer Observer
	// Registrations bound how fast agents register (RegisterAgentHandler);
	// the zero value sets no limit.
	Registrations RegistrationLimits
	// UnlinkedAgentClientTTL is how long an agent client may stay without
	// ever linking as a server before Prune deletes it; zero: never.
	UnlinkedAgentClientTTL time.Duration

	limOnce sync.Once
	limiter *registrationLimiter

	keyMu      sync.Mutex
	keys       []*signingKey // newest first; guarded by keyMu
	keysLoaded time.Time     // when keys were last loaded; zero: never
	lastMiss   time.Time     // last reload caused by an unknown kid

	clientMu sync.Mutex
	clients  map[string]clientEntry // client ID → cached status

	verified verifiedCache // access tokens whose signature was verified
}

// New returns an Authority over store that issues tokens as issuer, with the
// default tunables.
func New(store Store, issuer string) *Authority {
	return &Authority{
		Store:              store,
		Issuer:             issuer,
		AccessTokenTTL:     defaultTokenTTL,
		ConnectionTokenTTL: defaultTokenTTL,
	}
}

func (a *Authority) now() time.Time {
	if a.Now != nil {
		return a.Now()
	}
	return time.Now()
}

func (a *Authority) logger() *slog.Logger {
	l := a.Logger
	if l == nil {
		l = slog.Default()
	}
	return l.With("component", "oauth")
}

func (a *Authority) issuer() string {
	if a.Issuer == "" {
		return defaultIssuer
	}
	return a.Issuer
}

func (a *Authority) accessTTL() time.Duration {
	if a.AccessTokenTTL <= 0 {
		return defaultTokenTTL
	}
	return a.AccessTokenTTL
}

func (a *Authority) connectionTTL() time.Duration {
	if a.ConnectionTokenTTL <= 0 {
		return defaultTokenTTL
	}
	return a.ConnectionTokenTTL
}

// clientCacheTTL is how long VerifyAccessToken trusts a looked-up client status.
const clientCacheTTL = 5 * time.Second

// maxCachedClients bounds the client status cache.
const maxCachedClients = 10000

type clientEntry struct {
	active bool // false also for an unknown client
	kind   string
	at     time.Time
}

// clientStatus returns whether client id exists and is active, and its kind,
// from a cache of at most clientCacheTTL.
func (a *Authority) clientStatus(ctx context.Context, id string) (clientEntry, error) {
	now := a.now()
	a.clientMu.Lock()
	e, ok := a.clients[id]
	a.clientMu.Unlock()
	if ok && !now.Before(e.at) && now.Sub(e.at) < clientCacheTTL {
		return e, nil
	}
	c, err := a.Store.GetClient(ctx, id)
	switch {
	case errors.Is(err, ErrNotFound):
		e = clientEntry{at: now}
	case err != nil:
		return clientEntry{}, fmt.Errorf("look up client: %w", err)
	default:
		e = clientEntry{active: c.Active, kind: c.Kind, at: now}
	}
	a.clientMu.Lock()
	defer a.clientMu.Unlock()
	if a.clients == nil {
		a.clients = make(map[string]clientEntry)
	}
	if len(a.clients) >= maxCachedClients {
		for k, v := range a.clients {
			if now.Sub(v.at) >= clientCacheTTL || now.Before(v.at) {
				delete(a.clients, k)
			}
		}
		if len(a.clients) >= maxCachedClients {
			clear(a.clients)
		}
	}
	a.clients[id] = e
	return e, nil
}

// newID returns a random (version 4) UUID.
func newID() string {
	var b [16]byte
	rand.Read(b[:]) // never fails; see crypto/rand.Read
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

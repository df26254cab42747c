package oauth

import (
	"context"
	"crypto/ecdsa"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

const (
	// Audiences.
	audAccess     = "berth-api"
	audConnection = "dcv-session"

	// "typ" headers. Access tokens use the RFC 9068 media type.
	typAccess     = "at+jwt"
	typConnection = "JWT"

	// maxTokenLen bounds the tokens Verify* accept; ours are well under 1 KiB.
	maxTokenLen = 8 << 10
)

// accessClaims are the claims of an access token. Fields are plain values, not
// the JWT library's types, so the wire form does not depend on its globals.
type accessClaims struct {
	Issuer     string `json:"iss"`
	Subject    string `json:"sub"` // client ID
	Audience   string `json:"aud"`
	ExpiresAt  int64  `json:"exp"`
	IssuedAt   int64  `json:"iat"`
	ID         string `json:"jti"`
	ClientKind string `json:"client_kind"`
}

// connectionClaims are the claims of a connection token. The field names are a
// contract with DCV tooling; do not change them.
type connectionClaims struct {
	SessionID string `json:"dcvSessionId"`
	Owner     string `json:"dcvSessionOwner"`
	User      string `json:"dcvSessionUser"`
	ExpiresAt int64  `json:"exp"`
	IssuedAt  int64  `json:"iat"`
	ID        string `json:"jti"`
	Audience  string `json:"aud"`
	Issuer    string `json:"iss"`
}

// IssueAccessToken returns an access token for c, signed with the newest key,
// and its lifetime.
func (a *Authority) IssueAccessToken(ctx context.Context, c *Client) (token string, ttl time.Duration, err error) {
	if c == nil || c.ID == "" || c.Kind == "" {
		return "", 0, errors.New("issue access token: client without id or kind")
	}
	now := a.now()
	ttl = a.accessTTL()
	claims := &accessClaims{
		Issuer:     a.issuer(),
		Subject:    c.ID,
		Audience:   audAccess,
		ExpiresAt:  now.Add(ttl).Unix(),
		IssuedAt:   now.Unix(),
		ID:         newID(),
		ClientKind: c.Kind,
	}
	token, err = a.sign(ctx, typAccess, claims)
	if err != nil {
		return "", 0, fmt.Errorf("issue access token: %w", err)
	}
	a.issued(TokenAccess)
	return token, ttl, nil
}

// VerifyAccessToken checks an access token and returns whom it was issued to.
// It returns a *TokenError if the token is not acceptable, including when its
// client was deactivated (noticed within about 5 seconds), and another error
// if the store failed.
func (a *Authority) VerifyAccessToken(ctx context.Context, token string) (p *Principal, err error) {
	defer func() {
		if err != nil {
			a.refused(TokenAccess, refusalReason(err))
		}
	}()
	v, err := a.verifyAccessSignature(ctx, token)
	if err != nil {
		return nil, err
	}
	e, err := a.clientStatus(ctx, v.subject)
	if err != nil {
		return nil, fmt.Errorf("verify access token: %w", err)
	}
	if !e.active || e.kind != v.kind {
		return nil, tokenError(reasonInactiveClient)
	}
	return &Principal{ClientID: v.subject, Kind: v.kind, ExpiresAt: time.Unix(v.expires, 0)}, nil
}

// verifyAccessSignature checks an access token's signature and claims, or
// finds it among the tokens it checked before (verifycache.go) and checks
// again what may have changed since: that it has not expired and that its
// key still verifies.
func (a *Authority) verifyAccessSignature(ctx context.Context, token string) (*verifiedToken, error) {
	if token == "" || len(token) > maxTokenLen {
		return nil, tokenError(reasonMalformed)
	}
	k := tokenKey(token)
	if v := a.verified.get(&k, a.now()); v != nil {
		pub, err := a.verificationKey(ctx, v.kid)
		var le *lookupError
		switch {
		case errors.As(err, &le):
			return nil, le.err
		case err != nil:
			a.verified.drop(&k)
			return nil, err
		case pub.Equal(v.pub):
			return v, nil
		}
		a.verified.drop(&k) // another key of that kid: verify again
	}
	var c accessClaims
	v := &verifiedToken{}
	err := parseToken(token, &c, typAccess, audAccess, a.issuer(), a.now, func(kid string) (*ecdsa.PublicKey, error) {
		pub, err := a.verificationKey(ctx, kid)
		v.kid, v.pub = kid, pub
		return pub, err
	})
	if err != nil {
		return nil, err
	}
	v.subject, v.kind, v.expires = c.Subject, c.ClientKind, c.ExpiresAt
	a.verified.put(&k, v, a.now())
	return v, nil
}

// IssueConnectionToken returns a token that lets user connect to session
// sessionID owned by owner.
func (a *Authority) IssueConnectionToken(ctx context.Context, sessionID, owner, user string) (string, error) {
	if sessionID == "" || owner == "" || user == "" {
		return "", errors.New("issue connection token: session id, owner and user are required")
	}
	now := a.now()
	claims := &connectionClaims{
		SessionID: sessionID,
		Owner:     owner,
		User:      user,
		ExpiresAt: now.Add(a.connectionTTL()).Unix(),
		IssuedAt:  now.Unix(),
		ID:        newID(),
		Audience:  audConnection,
		Issuer:    a.issuer(),
	}
	token, err := a.sign(ctx, typConnection, claims)
	if err != nil {
		return "", fmt.Errorf("issue connection token: %w", err)
	}
	a.issued(TokenConnection)
	return token, nil
}

// VerifyConnectionToken checks a connection token. It returns a *TokenError if
// the token is not acceptable and another error if the store failed. The
// caller checks that SessionID is the session being connected to.
func (a *Authority) VerifyConnectionToken(ctx context.Context, token string) (*ConnectionClaims, error) {
	var c connectionClaims
	err := parseToken(token, &c, typConnection, audConnection, a.issuer(), a.now, func(kid string) (*ecdsa.PublicKey, error) {
		return a.verificationKey(ctx, kid)
	})
	if err != nil {
		a.refused(TokenConnection, refusalReason(err))
		return nil, err
	}
	return c.result(), nil
}

func (c *connectionClaims) result() *ConnectionClaims {
	return &ConnectionClaims{
		SessionID: c.SessionID,
		Owner:     c.Owner,
		User:      c.User,
		ID:        c.ID,
		IssuedAt:  time.Unix(c.IssuedAt, 0),
		ExpiresAt: time.Unix(c.ExpiresAt, 0),
	}
}

func (a *Authority) sign(ctx context.Context, typ string, claims jwt.Claims) (string, error) {
	k, err := a.signer(ctx)
	if err != nil {
		return "", err
	}
	t := jwt.NewWithClaims(jwt.SigningMethodES256, claims)
	t.Header["typ"] = typ
	t.Header["kid"] = k.id
	return t.SignedString(k.priv)
}

// parseToken verifies token as an ES256 JWT of type typ for audience aud (and
// issuer iss unless empty) with the key that key returns for its kid, and
// decodes its claims into claims. It returns a *TokenError for a bad token and
// the underlying error if key failed with a *lookupError.
func parseToken(token string, claims jwt.Claims, typ, aud, iss string, now func() time.Time, key func(kid string) (*ecdsa.PublicKey, error)) error {
	if token == "" || len(token) > maxTokenLen {
		return tokenError(reasonMalformed)
	}
	opts := []jwt.ParserOption{
		jwt.WithValidMethods([]string{algES256}),
		jwt.WithAudience(aud),
		jwt.WithExpirationRequired(),
		jwt.WithTimeFunc(now),
		jwt.WithStrictDecoding(),
	}
	if iss != "" {
		opts = append(opts, jwt.WithIssuer(iss))
	}
	tok, err := jwt.NewParser(opts...).ParseWithClaims(token, claims, func(t *jwt.Token) (any, error) {
		// The parser has checked alg against WithValidMethods; check again
		// so that a change there cannot open the door to "none" or HS256.
		if t.Method != jwt.SigningMethodES256 {
			return nil, tokenError(reasonAlgorithm)
		}
		if _, ok := t.Header["crit"]; ok {
			return nil, tokenError(reasonMalformed)
		}
		if got, _ := t.Header["typ"].(string); !strings.EqualFold(got, typ) {
			return nil, tokenError(reasonType)
		}
		kid, _ := t.Header["kid"].(string)
		if kid == "" {
			return nil, tokenError(reasonUnknownKey)
		}
		return key(kid)
	})
	if err != nil {
		return classify(err, tok)
	}
	return nil
}

// classify turns a JWT library error into a *TokenError with a safe reason, or
// returns the store error behind a *lookupError.
func classify(err error, tok *jwt.Token) error {
	var le *lookupError
	if errors.As(err, &le) {
		return le.err
	}
	if errors.Is(err, jwt.ErrTokenInvalidClaims) {
		// Signature good, claims not: several may be wrong at once. Name the
		// most telling one first.
		switch {
		case errors.Is(err, jwt.ErrTokenInvalidAudience):
			return tokenError(reasonAudience)
		case errors.Is(err, jwt.ErrTokenInvalidIssuer):
			return tokenError(reasonIssuer)
		case errors.Is(err, jwt.ErrTokenExpired):
			return tokenError(reasonExpired)
		}
	}
	var te *TokenError
	if errors.As(err, &te) {
		return te
	}
	switch {
	case errors.Is(err, jwt.ErrTokenMalformed):
		return tokenError(reasonMalformed)
	case errors.Is(err, jwt.ErrTokenUnverifiable):
		// alg absent or unknown to the library.
		return tokenError(reasonAlgorithm)
	case errors.Is(err, jwt.ErrTokenSignatureInvalid):
		if tok != nil && tok.Method != nil && tok.Method.Alg() != algES256 {
			return tokenError(reasonAlgorithm)
		}
		return tokenError(reasonSignature)
	case errors.Is(err, jwt.ErrTokenRequiredClaimMissing):
		return tokenError(reasonMissingClaim)
	}
	return tokenError(reasonInvalid)
}

// jwt.Claims and jwt.ClaimsValidator implementations.

func numericDate(sec int64) *jwt.NumericDate {
	if sec == 0 {
		return nil
	}
	return jwt.NewNumericDate(time.Unix(sec, 0))
}

func audience(aud string) jwt.ClaimStrings {
	if aud == "" {
		return nil
	}
	return jwt.ClaimStrings{aud}
}

func (c *accessClaims) GetExpirationTime() (*jwt.NumericDate, error) {
	return numericDate(c.ExpiresAt), nil
}
func (c *accessClaims) GetIssuedAt() (*jwt.NumericDate, error)  { return numericDate(c.IssuedAt), nil }
func (c *accessClaims) GetNotBefore() (*jwt.NumericDate, error) { return nil, nil }
func (c *accessClaims) GetIssuer() (string, error)              { return c.Issuer, nil }
func (c *accessClaims) GetSubject() (string, error)             { return c.Subject, nil }
func (c *accessClaims) GetAudience() (jwt.ClaimStrings, error)  { return audience(c.Audience), nil }

// Validate is called by the JWT parser after the standard checks.
func (c *accessClaims) Validate() error {
	if c.Subject == "" || c.ID == "" || c.ClientKind == "" || c.IssuedAt == 0 {
		return tokenError(reasonMissingClaim)
	}
	return nil
}

func (c *connectionClaims) GetExpirationTime() (*jwt.NumericDate, error) {
	return numericDate(c.ExpiresAt), nil
}
func (c *connectionClaims) GetIssuedAt() (*jwt.NumericDate, error) {
	return numericDate(c.IssuedAt), nil
}
func (c *connectionClaims) GetNotBefore() (*jwt.NumericDate, error) { return nil, nil }
func (c *connectionClaims) GetIssuer() (string, error)              { return c.Issuer, nil }
func (c *connectionClaims) GetSubject() (string, error)             { return "", nil }
func (c *connectionClaims) GetAudience() (jwt.ClaimStrings, error)  { return audience(c.Audience), nil }

// Validate is called by the JWT parser after the standard checks.
func (c *connectionClaims) Validate() error {
	if c.SessionID == "" || c.Owner == "" || c.User == "" || c.ID == "" || c.IssuedAt == 0 {
		return tokenError(reasonMissingClaim)
	}
	return nil
}

package oauth

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"slices"
	"time"
)

const (
	algES256 = "ES256"

	// keyRefreshInterval is the longest an Authority uses its cached key set
	// before reloading it from the store.
	keyRefreshInterval = 10 * time.Second
	// keyMissInterval is the shortest time between two reloads caused by a
	// token that names an unknown key.
	keyMissInterval = time.Second
	// keyGraceSlack is added to the token lifetime when deciding how long a
	// retired key keeps verifying. It covers another broker that still signs
	// with the old key until its cache refreshes (keyRefreshInterval), plus
	// clock skew between brokers.
	keyGraceSlack = time.Minute
)

// signingKey is a parsed SigningKey.
type signingKey struct {
	id        string
	priv      *ecdsa.PrivateKey
	createdAt time.Time
	retiredAt time.Time
}

// keyGrace is how long a retired key keeps verifying: long enough for every
// token it signed to expire.
func (a *Authority) keyGrace() time.Duration {
	return max(a.accessTTL(), a.connectionTTL()) + keyGraceSlack
}

// verifies reports whether k may still verify tokens at now.
func (a *Authority) verifies(k *signingKey, now time.Time) bool {
	return k.retiredAt.IsZero() || now.Before(k.retiredAt.Add(a.keyGrace()))
}

// EnsureKey creates a signing key if the store holds no active one, and
// deletes the retired keys whose grace period is over. Brokers call it at
// start-up.
func (a *Authority) EnsureKey(ctx context.Context) error {
	ks, err := a.Store.SigningKeys(ctx)
	if err != nil {
		return fmt.Errorf("ensure signing key: %w", err)
	}
	active := false
	for _, k := range ks {
		if k.RetiredAt.IsZero() && k.Algorithm == algES256 {
			if _, err := parseKey(k.PrivatePEM); err == nil {
				active = true
				break
			}
		}
	}
	if !active {
		if _, err := a.addKey(ctx); err != nil {
			return fmt.Errorf("ensure signing key: %w", err)
		}
	}
	if err := a.pruneKeys(ctx); err != nil {
		return fmt.Errorf("ensure signing key: %w", err)
	}
	return nil
}

// RotateKey makes a new signing key the one that signs (the admin command
// renew-auth-server-api-key). Older keys keep verifying for the longest token
// lifetime after they were retired, so tokens already handed out stay valid
// until they expire; keys retired longer ago than that are deleted.
func (a *Authority) RotateKey(ctx context.Context) error {
	id, err := a.addKey(ctx)
	if err != nil {
		return fmt.Errorf("rotate signing key: %w", err)
	}
	if err := a.pruneKeys(ctx); err != nil {
		return fmt.Errorf("rotate signing key: %w", err)
	}
	a.logger().InfoContext(ctx, "signing key rotated", "kid", id)
	return nil
}

// addKey generates and stores a new signing key, which retires the older ones,
// and drops the cached key set.
func (a *Authority) addKey(ctx context.Context) (string, error) {
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return "", fmt.Errorf("generate key: %w", err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return "", fmt.Errorf("marshal key: %w", err)
	}
	k := &SigningKey{
		ID:         newID(),
		Algorithm:  algES256,
		PrivatePEM: pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}),
		CreatedAt:  a.now(),
	}
	if err := a.Store.AddSigningKey(ctx, k); err != nil {
		return "", fmt.Errorf("store key: %w", err)
	}
	a.keyMu.Lock()
	a.keysLoaded = time.Time{}
	a.keyMu.Unlock()
	return k.ID, nil
}

func (a *Authority) pruneKeys(ctx context.Context) error {
	if err := a.Store.DeleteSigningKeysRetiredBefore(ctx, a.now().Add(-a.keyGrace())); err != nil {
		return fmt.Errorf("delete retired keys: %w", err)
	}
	return nil
}

// keySet returns the cached keys, newest first, after reloading them from the
// store if they are older than keyRefreshInterval, or if kid is not empty and
// not among them (such reloads happen at most once per keyMissInterval). If a
// reload fails the cached keys are used, and the reload is retried after
// keyMissInterval. The caller must not modify the result.
//
// The store is read with a.keyMu held, so concurrent callers wait for one
// reload instead of each issuing their own.
func (a *Authority) keySet(ctx context.Context, kid string) ([]*signingKey, error) {
	a.keyMu.Lock()
	defer a.keyMu.Unlock()
	now := a.now()
	reload := a.keysLoaded.IsZero() || now.Before(a.keysLoaded) || now.Sub(a.keysLoaded) >= keyRefreshInterval
	if !reload && kid != "" && findKey(a.keys, kid) == nil &&
		(a.lastMiss.IsZero() || now.Before(a.lastMiss) || now.Sub(a.lastMiss) >= keyMissInterval) {
		reload = true
		a.lastMiss = now
	}
	if reload {
		if err := a.loadKeysLocked(ctx, now); err != nil {
			if a.keysLoaded.IsZero() {
				return nil, err
			}
			a.logger().WarnContext(ctx, "reload signing keys; using cached keys", "err", err)
			a.keysLoaded = now.Add(keyMissInterval - keyRefreshInterval)
		}
	}
	return a.keys, nil
}

// loadKeysLocked replaces the cached keys with the store's. a.keyMu must be held.
func (a *Authority) loadKeysLocked(ctx context.Context, now time.Time) error {
	ks, err := a.Store.SigningKeys(ctx)
	if err != nil {
		return fmt.Errorf("load signing keys: %w", err)
	}
	keys := make([]*signingKey, 0, len(ks))
	for _, k := range ks {
		if k.Algorithm != algES256 {
			a.logger().WarnContext(ctx, "skipping signing key with unsupported algorithm", "kid", k.ID, "alg", k.Algorithm)
			continue
		}
		priv, err := parseKey(k.PrivatePEM)
		if err != nil {
			a.logger().ErrorContext(ctx, "skipping unreadable signing key", "kid", k.ID, "err", err)
			continue
		}
		keys = append(keys, &signingKey{id: k.ID, priv: priv, createdAt: k.CreatedAt, retiredAt: k.RetiredAt})
	}
	// The store returns newest first; do not depend on it.
	slices.SortStableFunc(keys, func(x, y *signingKey) int { return y.createdAt.Compare(x.createdAt) })
	a.keys = keys
	a.keysLoaded = now
	return nil
}

// signer returns the key that signs: the newest active key. If the store holds
// none, it creates one first.
func (a *Authority) signer(ctx context.Context) (*signingKey, error) {
	for attempt := 0; ; attempt++ {
		keys, err := a.keySet(ctx, "")
		if err != nil {
			return nil, err
		}
		for _, k := range keys {
			if k.retiredAt.IsZero() {
				return k, nil
			}
		}
		if attempt > 0 {
			return nil, errors.New("no active signing key")
		}
		if err := a.EnsureKey(ctx); err != nil {
			return nil, err
		}
	}
}

// verificationKey returns the public key named kid, or a *TokenError if there
// is none that may verify now, or a *lookupError if the store failed.
func (a *Authority) verificationKey(ctx context.Context, kid string) (*ecdsa.PublicKey, error) {
	keys, err := a.keySet(ctx, kid)
	if err != nil {
		return nil, &lookupError{err: err}
	}
	k := findKey(keys, kid)
	if k == nil || !a.verifies(k, a.now()) {
		return nil, tokenError(reasonUnknownKey)
	}
	return &k.priv.PublicKey, nil
}

func findKey(keys []*signingKey, kid string) *signingKey {
	for _, k := range keys {
		if k.id == kid {
			return k
		}
	}
	return nil
}

// JWKS returns the public keys that currently verify tokens as a JSON Web Key
// Set: {"keys":[{"kty":"EC","crv":"P-256","x","y","kid","alg":"ES256","use":"sig"}]}.
// Retired keys whose grace period is over are left out even if the store
// still holds them.
func (a *Authority) JWKS(ctx context.Context) ([]byte, error) {
	keys, err := a.keySet(ctx, "")
	if err != nil {
		return nil, fmt.Errorf("jwks: %w", err)
	}
	now := a.now()
	set := jwkSet{Keys: []jwk{}}
	for _, k := range keys {
		if !a.verifies(k, now) {
			continue
		}
		j, err := newJWK(k.id, &k.priv.PublicKey)
		if err != nil {
			return nil, fmt.Errorf("jwks: %w", err)
		}
		set.Keys = append(set.Keys, j)
	}
	return json.Marshal(set)
}

type jwkSet struct {
	Keys []jwk `json:"keys"`
}

// jwk is an EC public key as a JSON Web Key (RFC 7517, RFC 7518 section 6.2).
type jwk struct {
	Kty string `json:"kty"`
	Crv string `json:"crv"`
	X   string `json:"x"`
	Y   string `json:"y"`
	Kid string `json:"kid"`
	Alg string `json:"alg,omitempty"`
	Use string `json:"use,omitempty"`
}

func newJWK(kid string, pub *ecdsa.PublicKey) (jwk, error) {
	b, err := pub.Bytes() // 0x04 || X || Y, each 32 bytes for P-256
	if err != nil || len(b) != 65 {
		return jwk{}, fmt.Errorf("encode key %s: not a P-256 key", kid)
	}
	return jwk{
		Kty: "EC",
		Crv: "P-256",
		X:   base64.RawURLEncoding.EncodeToString(b[1:33]),
		Y:   base64.RawURLEncoding.EncodeToString(b[33:65]),
		Kid: kid,
		Alg: algES256,
		Use: "sig",
	}, nil
}

// publicKey returns the key j describes, or an error if it is not an ES256
// signing key on P-256.
func (j jwk) publicKey() (*ecdsa.PublicKey, error) {
	if j.Kty != "EC" || j.Crv != "P-256" || (j.Alg != "" && j.Alg != algES256) || (j.Use != "" && j.Use != "sig") {
		return nil, fmt.Errorf("key %q is not an ES256 signing key", j.Kid)
	}
	x, errX := base64.RawURLEncoding.DecodeString(j.X)
	y, errY := base64.RawURLEncoding.DecodeString(j.Y)
	if errX != nil || errY != nil || len(x) != 32 || len(y) != 32 {
		return nil, fmt.Errorf("key %q has malformed coordinates", j.Kid)
	}
	pub, err := ecdsa.ParseUncompressedPublicKey(elliptic.P256(), append(append([]byte{4}, x...), y...))
	if err != nil {
		return nil, fmt.Errorf("key %q: %w", j.Kid, err)
	}
	return pub, nil
}

func parseKey(privatePEM []byte) (*ecdsa.PrivateKey, error) {
	b, _ := pem.Decode(privatePEM)
	if b == nil {
		return nil, errors.New("no pem block")
	}
	k, err := x509.ParsePKCS8PrivateKey(b.Bytes)
	if err != nil {
		return nil, fmt.Errorf("parse key: %w", err)
	}
	ek, ok := k.(*ecdsa.PrivateKey)
	if !ok || ek.Curve != elliptic.P256() {
		return nil, errors.New("not a P-256 ecdsa key")
	}
	return ek, nil
}

// lookupError wraps a failure to load keys (not the token's fault) so that it
// passes through the JWT library's keyfunc wrapping.
type lookupError struct{ err error }

func (e *lookupError) Error() string { return e.err.Error() }
func (e *lookupError) Unwrap() error { return e.err }

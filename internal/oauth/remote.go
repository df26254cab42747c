package oauth

import (
	"context"
	"crypto/ecdsa"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"
)

const (
	// remoteRefreshInterval is how long a RemoteKeySet trusts a fetched key set.
	remoteRefreshInterval = 5 * time.Minute
	// remoteMinFetchInterval is the shortest time between two fetches, so that
	// tokens naming random kids cannot make it hammer the broker.
	remoteMinFetchInterval = time.Second
	// maxJWKSLen bounds the JWKS document.
	maxJWKSLen = 1 << 20
	// DefaultMaxStaleness is RemoteKeySet.MaxStaleness when it is zero.
	DefaultMaxStaleness = time.Hour
)

// BrokerIssuer is the "iss" of the tokens berth-broker issues, and the issuer a
// RemoteKeySet requires unless told another.
const BrokerIssuer = "berth-broker"

// ErrStaleKeys means a RemoteKeySet could not refetch the broker's keys for
// longer than its MaxStaleness: it verifies no token until the broker answers
// again.
var ErrStaleKeys = errors.New("broker keys too old to trust")

// defaultRemoteClient is used when RemoteKeySet.Client is nil.
var defaultRemoteClient = &http.Client{Timeout: 10 * time.Second}

// RemoteKeySet verifies connection tokens away from the broker (for example
// in a gateway on an agent host) with the keys the broker publishes through
// JWKSHandler. It fetches the key set on first use, again when a token names a
// key it does not know (at most once per second) and every 5 minutes; if a
// refetch fails it keeps using the keys it has, for at most MaxStaleness after
// the last fetch that worked: a key the broker has since withdrawn (a rotation
// after a leak) must not verify tokens for ever on a host cut off from it. Only
// tokens whose "iss" is the broker's verify. Set the exported fields before
// first use. It is safe for concurrent use.
type RemoteKeySet struct {
	// URL is the broker's JWKS endpoint.
	URL string
	// Client fetches URL; nil means a client with a 10 s timeout and the
	// system roots. Set one that trusts the broker's CA (see pki.LoadPool).
	Client *http.Client
	// Issuer is the "iss" tokens must carry (the broker's Authority.Issuer);
	// empty means BrokerIssuer.
	Issuer string
	// MaxStaleness is how long after the last successful fetch the cached
	// keys still verify tokens while refetching fails; after that every
	// token is refused with an error wrapping ErrStaleKeys (not a
	// *TokenError: the token may be good) until a fetch works again. Zero
	// means DefaultMaxStaleness (1 h); it should exceed the 5 minute refresh.
	MaxStaleness time.Duration
	// Now returns the current time; nil means time.Now.
	Now func() time.Time

	once  sync.Once
	fetch chan struct{} // a one-slot semaphore held while fetching

	mu        sync.Mutex
	keys      map[string]*ecdsa.PublicKey // guarded by mu
	fetchedAt time.Time                   // last successful fetch
	triedAt   time.Time                   // last fetch attempt
	fetchErr  error                       // error of the last attempt
}

func (s *RemoteKeySet) now() time.Time {
	if s.Now != nil {
		return s.Now()
	}
	return time.Now()
}

func (s *RemoteKeySet) issuer() string {
	if s.Issuer == "" {
		return BrokerIssuer
	}
	return s.Issuer
}

func (s *RemoteKeySet) maxStaleness() time.Duration {
	if s.MaxStaleness <= 0 {
		return DefaultMaxStaleness
	}
	return s.MaxStaleness
}

// VerifyConnectionToken checks a connection token. It returns a *TokenError if
// the token is not acceptable and another error if the key set could not be
// fetched. The caller checks that SessionID is the session being connected to.
func (s *RemoteKeySet) VerifyConnectionToken(ctx context.Context, token string) (*ConnectionClaims, error) {
	var c connectionClaims
	err := parseToken(token, &c, typConnection, audConnection, s.issuer(), s.now, func(kid string) (*ecdsa.PublicKey, error) {
		return s.key(ctx, kid)
	})
	if err != nil {
		return nil, err
	}
	return c.result(), nil
}

// key returns the public key named kid, fetching the key set if needed. It
// returns a *TokenError if no such key exists and a *lookupError if the key
// set could not be fetched.
func (s *RemoteKeySet) key(ctx context.Context, kid string) (*ecdsa.PublicKey, error) {
	if k, fresh := s.cached(kid); k != nil && fresh {
		return k, nil
	}
	s.once.Do(func() { s.fetch = make(chan struct{}, 1) })
	select {
	case s.fetch <- struct{}{}:
		defer func() { <-s.fetch }()
	case <-ctx.Done():
		return nil, &lookupError{err: fmt.Errorf("fetch jwks: %w", ctx.Err())}
	}
	// Another caller may have fetched while this one waited.
	k, fresh := s.cached(kid)
	if k != nil && fresh {
		return k, nil
	}
	now := s.now()
	s.mu.Lock()
	recent := !s.triedAt.IsZero() && !now.Before(s.triedAt) && now.Sub(s.triedAt) < remoteMinFetchInterval
	lastErr := s.fetchErr
	fetchedAt := s.fetchedAt
	s.mu.Unlock()
	if recent {
		switch {
		case k != nil && lastErr == nil:
			return k, nil
		case k != nil:
			return s.stale(k, fetchedAt, now, lastErr)
		case lastErr != nil:
			return nil, &lookupError{err: lastErr}
		}
		return nil, tokenError(reasonUnknownKey)
	}

	keys, err := s.get(ctx)
	s.mu.Lock()
	s.triedAt = now
	s.fetchErr = err
	if err == nil {
		s.keys = keys
		s.fetchedAt = now
	}
	s.mu.Unlock()
	if err != nil {
		if k != nil {
			return s.stale(k, fetchedAt, now, err)
		}
		return nil, &lookupError{err: err}
	}
	if k := keys[kid]; k != nil {
		return k, nil
	}
	return nil, tokenError(reasonUnknownKey)
}

// stale returns k, a cached key that a refetch at now failed (with err) to
// confirm, while the keys fetched at fetchedAt are within MaxStaleness, and a
// *lookupError wrapping ErrStaleKeys after that.
func (s *RemoteKeySet) stale(k *ecdsa.PublicKey, fetchedAt, now time.Time, err error) (*ecdsa.PublicKey, error) {
	age := max(now.Sub(fetchedAt), 0) // a clock set back does not age the keys
	if !fetchedAt.IsZero() && age <= s.maxStaleness() {
		return k, nil // stale but still the broker's key
	}
	return nil, &lookupError{err: fmt.Errorf("%w: last fetched from %s %s ago (longest trusted %s); fetching again failed: %w",
		ErrStaleKeys, s.URL, age.Truncate(time.Second), s.maxStaleness(), err)}
}

// cached returns the cached key named kid (nil if none) and whether the cache
// is fresh.
func (s *RemoteKeySet) cached(kid string) (*ecdsa.PublicKey, bool) {
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	fresh := !s.fetchedAt.IsZero() && !now.Before(s.fetchedAt) && now.Sub(s.fetchedAt) < remoteRefreshInterval
	return s.keys[kid], fresh
}

// get fetches and parses the key set. Keys that are not ES256 P-256 keys are
// skipped; a set without any usable key is an error.
func (s *RemoteKeySet) get(ctx context.Context) (map[string]*ecdsa.PublicKey, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.URL, nil)
	if err != nil {
		return nil, fmt.Errorf("fetch jwks: %w", err)
	}
	req.Header.Set("Accept", "application/json")
	client := s.Client
	if client == nil {
		client = defaultRemoteClient
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("fetch jwks: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("fetch jwks: %s answered %s", s.URL, resp.Status)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxJWKSLen+1))
	if err != nil {
		return nil, fmt.Errorf("fetch jwks: %w", err)
	}
	if len(body) > maxJWKSLen {
		return nil, fmt.Errorf("fetch jwks: document larger than %d bytes", maxJWKSLen)
	}
	var set jwkSet
	if err := json.Unmarshal(body, &set); err != nil {
		return nil, fmt.Errorf("fetch jwks: %w", err)
	}
	keys := make(map[string]*ecdsa.PublicKey, len(set.Keys))
	for _, j := range set.Keys {
		if j.Kid == "" {
			continue
		}
		if pub, err := j.publicKey(); err == nil {
			keys[j.Kid] = pub
		}
	}
	if len(keys) == 0 {
		return nil, errors.New("fetch jwks: no usable key in the set")
	}
	return keys, nil
}

package oauth

import (
	"crypto/ecdsa"
	"crypto/sha256"
	"sync"
	"time"
)

// Verifying an access token's ES256 signature costs tens of microseconds, and
// a client sends the same token with every request for its lifetime. The
// Authority keeps the tokens whose signature and claims it verified, keyed by
// the SHA-256 of the whole token, so that a token differing in any byte (a
// tampered one) is never found and is verified in full. An entry holds only
// what the signature proved; everything that may change while the token
// lives is checked on every request as before: the key that signed it must
// still verify (a rotation's grace period, a key gone from the store), the
// token must not have expired (an entry is never used at or past the
// token's exp), and the client must still be active and of the token's kind
// (clientStatus: a deactivation is noticed within clientCacheTTL). Refused
// tokens are not kept.

const (
	// maxVerifiedTokens bounds the verified-token cache.
	maxVerifiedTokens = 16384
	// verifiedShards is how many independently locked parts it has.
	verifiedShards = 16
)

// verifiedToken is what verifying an access token established.
type verifiedToken struct {
	subject, kind string
	expires       int64 // the token's exp, Unix seconds
	kid           string
	pub           *ecdsa.PublicKey // the key that verified it
}

// verifiedCache is a bounded map of verified access tokens, in shards; a full
// shard first drops its expired entries, then an arbitrary one.
type verifiedCache struct {
	shards [verifiedShards]verifiedShard
}

type verifiedShard struct {
	mu sync.Mutex
	m  map[[sha256.Size]byte]*verifiedToken
}

// tokenKey is the cache key of token.
func tokenKey(token string) [sha256.Size]byte { return sha256.Sum256([]byte(token)) }

func (c *verifiedCache) shard(k *[sha256.Size]byte) *verifiedShard {
	return &c.shards[k[0]%verifiedShards]
}

// get returns the entry for k if there is one that has not expired at now;
// an expired one is dropped.
func (c *verifiedCache) get(k *[sha256.Size]byte, now time.Time) *verifiedToken {
	s := c.shard(k)
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.m[*k]
	if e == nil {
		return nil
	}
	if !now.Before(time.Unix(e.expires, 0)) {
		delete(s.m, *k)
		return nil
	}
	return e
}

// put adds an entry, making room if the shard is full.
func (c *verifiedCache) put(k *[sha256.Size]byte, e *verifiedToken, now time.Time) {
	s := c.shard(k)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.m == nil {
		s.m = make(map[[sha256.Size]byte]*verifiedToken)
	}
	if _, ok := s.m[*k]; !ok && len(s.m) >= maxVerifiedTokens/verifiedShards {
		for key, x := range s.m {
			if !now.Before(time.Unix(x.expires, 0)) {
				delete(s.m, key)
			}
		}
		for key := range s.m {
			if len(s.m) < maxVerifiedTokens/verifiedShards {
				break
			}
			delete(s.m, key) // map order is unspecified: an arbitrary entry
		}
	}
	s.m[*k] = e
}

// drop removes the entry for k.
func (c *verifiedCache) drop(k *[sha256.Size]byte) {
	s := c.shard(k)
	s.mu.Lock()
	delete(s.m, *k)
	s.mu.Unlock()
}

// len is how many entries the cache holds.
func (c *verifiedCache) len() int {
	n := 0
	for i := range c.shards {
		s := &c.shards[i]
		s.mu.Lock()
		n += len(s.m)
		s.mu.Unlock()
	}
	return n
}

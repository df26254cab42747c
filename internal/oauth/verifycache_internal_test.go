package oauth

import (
	"crypto/sha256"
	"encoding/binary"
	"testing"
	"time"
)

// TestVerifiedCache_Bounded fills the cache far past its bound: it never
// holds more than maxVerifiedTokens, a full shard drops its expired entries
// first, and an entry is never returned at or past its token's exp.
func TestVerifiedCache_Bounded(t *testing.T) {
	var c verifiedCache
	now := time.Unix(1_000_000, 0)
	key := func(i int) *[sha256.Size]byte {
		var b [8]byte
		binary.LittleEndian.PutUint64(b[:], uint64(i))
		k := sha256.Sum256(b[:])
		return &k
	}
	for i := range 3 * maxVerifiedTokens {
		c.put(key(i), &verifiedToken{expires: now.Unix() + 1}, now)
		if n := c.len(); n > maxVerifiedTokens {
			t.Fatalf("after %d puts the cache holds %d, bound %d", i+1, n, maxVerifiedTokens)
		}
	}
	if n := c.len(); n < maxVerifiedTokens*9/10 {
		t.Errorf("cache holds %d of %d", n, maxVerifiedTokens)
	}

	// One second later every entry has expired: the next puts drop them all
	// instead of arbitrary live ones.
	later := now.Add(time.Second)
	if c.get(key(3*maxVerifiedTokens-1), later) != nil {
		t.Error("entry returned at its exp")
	}
	for i := range 2 * verifiedShards * 8 {
		c.put(key(-1-i), &verifiedToken{expires: later.Unix() + 60}, later)
	}
	if n := c.len(); n != 2*verifiedShards*8 {
		t.Errorf("after the expired entries were swept the cache holds %d, want %d", n, 2*verifiedShards*8)
	}
	for i := range 2 * verifiedShards * 8 {
		if c.get(key(-1-i), later.Add(59*time.Second)) == nil {
			t.Fatalf("live entry %d lost", i)
		}
	}
}

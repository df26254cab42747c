// Package portaltest is the contract suite every portal.Store passes: the
// SQLite and PostgreSQL stores run it from their tests.
package portaltest

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/broker"
	"github.com/berth-dev/berth/internal/portal"
)

// Run checks st's portal sessions and single-use tokens: replaced, read and
// deleted sessions, a token taken once by one of eight concurrent takers,
// expired ones refused and purged. st must be empty.
func Run(t *testing.T, st portal.Store) {
	ctx := context.Background()
	now := time.Now().UTC().Truncate(time.Millisecond)
	key, other := []byte("0123456789abcdef0123456789abcdef"), []byte("fedcba9876543210fedcba9876543210")

	if _, _, err := st.PortalSession(ctx, key); !errors.Is(err, broker.ErrNotFound) {
		t.Fatalf("PortalSession of nothing: %v, want ErrNotFound", err)
	}
	if err := st.PutPortalSession(ctx, key, []byte(`{"user":"ann"}`), now.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if err := st.PutPortalSession(ctx, key, []byte(`{"user":"ann","v":2}`), now.Add(2*time.Hour)); err != nil {
		t.Fatalf("replace: %v", err)
	}
	data, exp, err := st.PortalSession(ctx, key)
	if err != nil || string(data) != `{"user":"ann","v":2}` || !exp.Equal(now.Add(2*time.Hour)) {
		t.Fatalf("PortalSession = %s %v %v", data, exp, err)
	}
	if err := st.PutPortalSession(ctx, other, []byte(`{}`), now.Add(-time.Second)); err != nil {
		t.Fatal(err)
	}

	if err := st.PutPortalToken(ctx, key, []byte("link"), now.Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	if err := st.PutPortalToken(ctx, key, []byte("again"), now.Add(time.Minute)); err == nil {
		t.Fatalf("a token stored twice under one key")
	}
	if err := st.PutPortalToken(ctx, other, []byte("old"), now.Add(-time.Second)); err != nil {
		t.Fatal(err)
	}
	// Taken once, by one of many at the same time.
	var wg sync.WaitGroup
	var taken atomic.Int32
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if d, err := st.TakePortalToken(ctx, key, now); err == nil && string(d) == "link" {
				taken.Add(1)
			} else if !errors.Is(err, broker.ErrNotFound) {
				t.Errorf("TakePortalToken: %v", err)
			}
		}()
	}
	wg.Wait()
	if taken.Load() != 1 {
		t.Fatalf("the token was taken %d times, want 1", taken.Load())
	}
	if _, err := st.TakePortalToken(ctx, other, now); !errors.Is(err, broker.ErrNotFound) {
		t.Fatalf("an expired token: %v, want ErrNotFound", err)
	}

	if err := st.PutPortalToken(ctx, []byte("expired-token-key-0123456789abcd"), []byte("x"), now.Add(-time.Minute)); err != nil {
		t.Fatal(err)
	}
	n, err := st.PurgePortal(ctx, now)
	if err != nil || n != 2 {
		t.Fatalf("PurgePortal = %d, %v; want the expired session and token", n, err)
	}
	if _, _, err := st.PortalSession(ctx, other); !errors.Is(err, broker.ErrNotFound) {
		t.Fatalf("the expired session after the purge: %v", err)
	}
	if err := st.DeletePortalSession(ctx, key); err != nil {
		t.Fatal(err)
	}
	if _, _, err := st.PortalSession(ctx, key); !errors.Is(err, broker.ErrNotFound) {
		t.Fatalf("after DeletePortalSession: %v", err)
	}
	if err := st.DeletePortalSession(ctx, key); err != nil {
		t.Fatalf("deleting nothing: %v", err)
	}
}

package storetest

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/berth-dev/berth/internal/broker"
)

// testUpdateSessions checks a batch with every outcome: sessions written,
// one that fn refuses (untouched) and an unknown ID (fn not called), and
// that the other sessions and the counts and lists follow the written ones.
func testUpdateSessions(t *testing.T, s broker.Store) {
	MustUpsertServers(t, s, NewServer("s-a", 0, 0, nil))
	MustInsertSessions(t, s,
		NewSession("a", "alice", broker.TypeVirtual, "s-a", broker.StateCreating),
		NewSession("b", "bob", broker.TypeVirtual, "s-a", broker.StateCreating),
		NewSession("c", "carol", broker.TypeVirtual, "s-a", broker.StateCreating),
		NewSession("d", "dave", broker.TypeVirtual, "s-a", broker.StateCreating))
	refusedWant := MustGetSession(t, s, "c")
	untouched := MustGetSession(t, s, "d")
	errRefuse := errors.New("refused")
	want := map[string]broker.Session{}
	var called []string
	res, err := s.UpdateSessions(t.Context(), []string{"b", "missing", "c", "a"}, func(x *broker.Session) error {
		called = append(called, x.ID)
		switch x.ID {
		case "c":
			x.State = broker.StateDeleted // must not be written
			return errRefuse
		case "a":
			x.State, x.Substate, x.NumOfConnections = broker.StateReady, "", 3
			x.UpdatedAt = at(time.Hour)
		case "b":
			x.State, x.Substate, x.StateReason = broker.StateDeleted, "", "ended on the server"
			x.UpdatedAt = at(2 * time.Hour)
		}
		want[x.ID] = *x
		return nil
	})
	if err != nil {
		t.Fatalf("UpdateSessions: %v", err)
	}
	if len(res) != 4 || res[0] != nil || !errors.Is(res[1], broker.ErrNotFound) || !errors.Is(res[2], errRefuse) || res[3] != nil {
		t.Fatalf("UpdateSessions results = %v, want [nil ErrNotFound refused nil]", res)
	}
	if d := cmp.Diff([]string{"b", "c", "a"}, called); d != "" {
		t.Errorf("fn called for (-want +got):\n%s", d)
	}
	for _, id := range []string{"a", "b"} {
		w := want[id]
		if d := cmp.Diff(&w, MustGetSession(t, s, id), diffOpts...); d != "" {
			t.Errorf("session %s after UpdateSessions (-want +got):\n%s", id, d)
		}
	}
	if d := cmp.Diff(refusedWant, MustGetSession(t, s, "c"), diffOpts...); d != "" {
		t.Errorf("refused session changed (-want +got):\n%s", d)
	}
	if d := cmp.Diff(untouched, MustGetSession(t, s, "d"), diffOpts...); d != "" {
		t.Errorf("session outside the batch changed (-want +got):\n%s", d)
	}
	live := MustListSessions(t, s, broker.SessionFilter{ServerID: "s-a", States: []string{broker.StateCreating, broker.StateReady}})
	if got := ids(live); !cmp.Equal(got, []string{"a", "c", "d"}) {
		t.Errorf("live sessions of s-a = %v, want [a c d]", got)
	}
	ready := MustListSessions(t, s, broker.SessionFilter{States: []string{broker.StateReady}})
	if got := ids(ready); !cmp.Equal(got, []string{"a"}) {
		t.Errorf("READY sessions = %v, want [a]", got)
	}
	counts, err := s.CountSessions(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if c := counts["s-a"]; c.Virtual != 3 {
		t.Errorf("CountSessions[s-a].Virtual = %d, want 3 (b was deleted in the batch)", c.Virtual)
	}
	byState, err := s.CountByState(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if byState[broker.StateReady] != 1 || byState[broker.StateDeleted] != 1 || byState[broker.StateCreating] != 2 {
		t.Errorf("CountByState = %v, want READY 1, DELETED 1, CREATING 2", byState)
	}
}

// testUpdateSessionsEdges checks an empty batch, a repeated ID and a
// cancelled context: the last two write nothing.
func testUpdateSessionsEdges(t *testing.T, s broker.Store) {
	MustInsertSessions(t, s, NewSession("a", "alice", broker.TypeVirtual, "", broker.StateCreating))
	before := MustGetSession(t, s, "a")
	res, err := s.UpdateSessions(t.Context(), nil, func(*broker.Session) error {
		t.Error("fn called for an empty batch")
		return nil
	})
	if err != nil || len(res) != 0 {
		t.Errorf("UpdateSessions(none) = %v, %v; want empty, nil", res, err)
	}
	set := func(x *broker.Session) error { x.State = broker.StateDeleted; return nil }
	if _, err := s.UpdateSessions(t.Context(), []string{"a", "a"}, set); err == nil {
		t.Error("UpdateSessions with a repeated ID succeeded")
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := s.UpdateSessions(ctx, []string{"a"}, set); err == nil {
		t.Error("UpdateSessions with a cancelled context succeeded")
	}
	if d := cmp.Diff(before, MustGetSession(t, s, "a"), diffOpts...); d != "" {
		t.Errorf("failed UpdateSessions changed the row (-want +got):\n%s", d)
	}
}

// testUpdateSessionsConcurrent runs overlapping batches in opposite orders
// alongside single updates: none deadlocks or loses an increment.
func testUpdateSessionsConcurrent(t *testing.T, s broker.Store) {
	const n = 20
	var all []string
	for i := range n {
		ss := NewSession(fmt.Sprintf("s%02d", i), "alice", broker.TypeVirtual, "", broker.StateReady)
		ss.NumOfConnections = 0
		MustInsertSessions(t, s, ss)
		all = append(all, ss.ID)
	}
	rev := make([]string, n)
	for i, id := range all {
		rev[n-1-i] = id
	}
	inc := func(x *broker.Session) error { x.NumOfConnections++; return nil }
	const workers, each = 6, 5
	var wg sync.WaitGroup
	errs := make(chan error, 2*workers*each)
	for w := range workers {
		order := all
		if w%2 == 1 {
			order = rev
		}
		wg.Go(func() {
			for range each {
				res, err := s.UpdateSessions(t.Context(), order, inc)
				if err == nil {
					err = errors.Join(res...)
				}
				errs <- err
				errs <- s.UpdateSession(t.Context(), order[0], inc)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("concurrent updates: %v", err)
		}
	}
	for _, id := range all {
		want := int64(workers * each)
		if id == all[0] || id == rev[0] {
			want += workers * each / 2
		}
		if got := MustGetSession(t, s, id).NumOfConnections; got != want {
			t.Errorf("session %s: NumOfConnections = %d, want %d", id, got, want)
		}
	}
}

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

// newPlaced returns a new CREATING session for placement on server.
func newPlaced(id, owner, typ, server string) *broker.Session {
	ss := NewSession(id, owner, typ, server, broker.StateCreating)
	ss.Enqueued, ss.EnqueuedAt = false, time.Time{}
	return ss
}

// checkNotStored fails t unless every id is unknown to s.
func checkNotStored(t *testing.T, s broker.Store, ids ...string) {
	t.Helper()
	for _, id := range ids {
		if _, err := s.GetSession(t.Context(), id); !errors.Is(err, broker.ErrNotFound) {
			t.Errorf("GetSession(%s) of a rejected placement: got %v, want ErrNotFound", id, err)
		}
	}
}

func testCommitVirtualLimit(t *testing.T, s broker.Store) {
	MustUpsertServers(t, s, NewServer("s-a", 2, 0, nil), NewServer("s-b", 0, 0, nil))
	ps := Place(
		newPlaced("1", "alice", broker.TypeVirtual, "s-a"),
		newPlaced("2", "bob", broker.TypeVirtual, "s-a"),
		newPlaced("3", "carol", broker.TypeVirtual, "s-a"), // the third does not fit
		newPlaced("4", "carol", broker.TypeConsole, "s-a"), // the limit is for virtual sessions
		newPlaced("5", "carol", broker.TypeVirtual, "s-b"), // 0: unlimited
	)
	checkErrs(t, MustCommit(t, s, ps...), []error{nil, nil, broker.ErrServerFull, nil, nil})
	for i, p := range ps {
		if i == 2 {
			if p.Session.Seq != 0 {
				t.Errorf("rejected placement got Seq %d", p.Session.Seq)
			}
			continue
		}
		if p.Session.Seq <= 0 {
			t.Errorf("placement %d: Seq %d, want > 0", i, p.Session.Seq)
		}
		if d := cmp.Diff(p.Session, MustGetSession(t, s, p.Session.ID), diffOpts...); d != "" {
			t.Errorf("stored placement %d (-want +got):\n%s", i, d)
		}
	}
	if ps[1].Session.Seq <= ps[0].Session.Seq || ps[4].Session.Seq <= ps[3].Session.Seq {
		t.Error("Seqs of a batch do not increase in batch order")
	}
	checkNotStored(t, s, "3")

	// Earlier commits count too.
	errs := MustCommit(t, s, Place(newPlaced("6", "dave", broker.TypeVirtual, "s-a"))...)
	checkErrs(t, errs, []error{broker.ErrServerFull})
	checkNotStored(t, s, "6")
	if d := cmp.Diff([]string{"1", "2", "4"}, activeOn(t, s, "s-a")); d != "" {
		t.Errorf("sessions on s-a (-want +got):\n%s", d)
	}

	// The limit comes from the latest report.
	MustUpsertServers(t, s, NewServer("s-a", 3, 0, nil))
	checkErrs(t, MustCommit(t, s, Place(
		newPlaced("7", "dave", broker.TypeVirtual, "s-a"),
		newPlaced("8", "dave", broker.TypeVirtual, "s-a"))...), []error{nil, broker.ErrServerFull})
}

func testCommitOwnerLimit(t *testing.T, s broker.Store) {
	MustUpsertServers(t, s, NewServer("s-a", 0, 2, nil), NewServer("s-b", 0, 2, nil))
	MustInsertSessions(t, s, newPlaced("0", "alice", broker.TypeConsole, "s-a"))
	errs := MustCommit(t, s, Place(
		newPlaced("1", "alice", broker.TypeVirtual, "s-a"),
		newPlaced("2", "alice", broker.TypeVirtual, "s-a"), // alice has a console and a virtual session on s-a
		newPlaced("3", "bob", broker.TypeVirtual, "s-a"),
		newPlaced("4", "bob", broker.TypeVirtual, "s-a"),
		newPlaced("5", "bob", broker.TypeVirtual, "s-a"),
		newPlaced("6", "alice", broker.TypeVirtual, "s-b"), // per server
		newPlaced("7", "alice", broker.TypeVirtual, "s-b"),
	)...)
	checkErrs(t, errs, []error{nil, broker.ErrServerFull, nil, nil, broker.ErrServerFull, nil, nil})
	checkNotStored(t, s, "2", "5")
	if d := cmp.Diff([]string{"0", "1", "3", "4"}, activeOn(t, s, "s-a")); d != "" {
		t.Errorf("sessions on s-a (-want +got):\n%s", d)
	}
}

func testCommitSingleConsole(t *testing.T, s broker.Store) {
	MustUpsertServers(t, s, NewServer("s-a", 0, 0, nil), NewServer("s-b", 0, 0, nil))
	errs := MustCommit(t, s, Place(
		newPlaced("1", "alice", broker.TypeConsole, "s-a"),
		newPlaced("2", "bob", broker.TypeConsole, "s-a"),
		newPlaced("3", "alice", broker.TypeConsole, "s-a"),
		newPlaced("4", "bob", broker.TypeVirtual, "s-a"),
		newPlaced("5", "bob", broker.TypeConsole, "s-b"),
	)...)
	checkErrs(t, errs, []error{nil, broker.ErrServerFull, broker.ErrServerFull, nil, nil})
	checkNotStored(t, s, "2", "3")
	errs = MustCommit(t, s, Place(newPlaced("6", "carol", broker.TypeConsole, "s-b"))...)
	checkErrs(t, errs, []error{broker.ErrServerFull})
}

func testCommitDeletedDoNotCount(t *testing.T, s broker.Store) {
	MustUpsertServers(t, s, NewServer("s-a", 1, 1, nil))
	MustInsertSessions(t, s,
		NewSession("old-virtual", "alice", broker.TypeVirtual, "s-a", broker.StateDeleted),
		NewSession("old-console", "alice", broker.TypeConsole, "s-a", broker.StateDeleted))
	errs := MustCommit(t, s, Place(
		newPlaced("1", "alice", broker.TypeVirtual, "s-a"),
		newPlaced("2", "bob", broker.TypeConsole, "s-a"),
	)...)
	checkErrs(t, errs, []error{nil, nil})

	// Once deleted, a session frees its place.
	errs = MustCommit(t, s, Place(newPlaced("3", "carol", broker.TypeVirtual, "s-a"))...)
	checkErrs(t, errs, []error{broker.ErrServerFull})
	if err := s.UpdateSession(t.Context(), "1", func(ss *broker.Session) error {
		ss.State = broker.StateDeleted
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	errs = MustCommit(t, s, Place(newPlaced("3", "carol", broker.TypeVirtual, "s-a"))...)
	checkErrs(t, errs, []error{nil})

	// States other than DELETED count.
	for _, st := range []string{broker.StateDeleting, broker.StateUnknown, broker.StateReady} {
		if err := s.UpdateSession(t.Context(), "2", func(ss *broker.Session) error {
			ss.State = st
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		id := "console-" + st
		errs = MustCommit(t, s, Place(newPlaced(id, "dave", broker.TypeConsole, "s-a"))...)
		checkErrs(t, errs, []error{broker.ErrServerFull})
	}
}

func testCommitUnknownServer(t *testing.T, s broker.Store) {
	MustUpsertServers(t, s, NewServer("s-a", 0, 0, nil))
	errs := MustCommit(t, s, Place(newPlaced("1", "alice", broker.TypeVirtual, "s-missing"))...)
	checkErrs(t, errs, []error{broker.ErrNotFound})
	checkNotStored(t, s, "1")
}

func testCommitMixedBatch(t *testing.T, s broker.Store) {
	MustUpsertServers(t, s, NewServer("s-a", 1, 0, nil), NewServer("s-b", 0, 0, nil))
	MustInsertSessions(t, s, newPlaced("full", "zed", broker.TypeVirtual, "s-a"))
	queued := NewSession("queued", "alice", broker.TypeVirtual, "", broker.StateCreating)
	MustInsertSessions(t, s, queued)

	moved := *queued
	moved.ServerID = "s-b"
	moved.Enqueued = false
	ps := []broker.Placement{
		{Session: newPlaced("1", "alice", broker.TypeVirtual, "s-b"), Insert: true},
		{Session: newPlaced("2", "alice", broker.TypeVirtual, "s-missing"), Insert: true},
		{Session: newPlaced("3", "bob", broker.TypeVirtual, "s-a"), Insert: true},
		{Session: &moved},
		{Session: newPlaced("4", "bob", broker.TypeConsole, "s-a"), Insert: true},
		{Session: newPlaced("5", "carol", broker.TypeConsole, "s-b"), Insert: true},
		{Session: newPlaced("6", "carol", broker.TypeConsole, "s-b"), Insert: true},
	}
	checkErrs(t, MustCommit(t, s, ps...), []error{nil, broker.ErrNotFound, broker.ErrServerFull, nil, nil, nil, broker.ErrServerFull})
	checkNotStored(t, s, "2", "3", "6")
	if d := cmp.Diff([]string{"full", "queued", "1", "4", "5"}, ids(MustListSessions(t, s, broker.SessionFilter{}))); d != "" {
		t.Errorf("sessions after a mixed batch (-want +got):\n%s", d)
	}
	if got := MustGetSession(t, s, "queued"); got.ServerID != "s-b" {
		t.Errorf("moved session on %q, want s-b", got.ServerID)
	}
}

func testCommitMove(t *testing.T, s broker.Store) {
	MustUpsertServers(t, s, NewServer("s-a", 1, 0, nil), NewServer("s-b", 1, 0, nil))
	q := NewSession("q", "alice", broker.TypeVirtual, "", broker.StateCreating)
	MustInsertSessions(t, s, q, NewSession("later", "bob", broker.TypeVirtual, "", broker.StateCreating))
	seq := q.Seq

	moved := MustGetSession(t, s, "q")
	moved.ServerID = "s-a"
	moved.Substate = broker.SubstatePendingPreparation
	moved.Enqueued = false
	moved.EnqueuedAt = time.Time{}
	moved.Attempts = 1
	moved.Excluded = []string{"s-old"}
	moved.UpdatedAt = at(time.Hour)
	moved.Spec.InitFile = "/changed"
	checkErrs(t, MustCommit(t, s, broker.Placement{Session: moved}), []error{nil})
	got := MustGetSession(t, s, "q")
	if got.Seq != seq {
		t.Errorf("moved session Seq %d, want %d", got.Seq, seq)
	}
	if d := cmp.Diff(moved, got, diffOpts...); d != "" {
		t.Errorf("moved session (-want +got):\n%s", d)
	}
	if d := cmp.Diff([]string{"later"}, ids(MustListSessions(t, s, broker.SessionFilter{Unplaced: true}))); d != "" {
		t.Errorf("queue after the move (-want +got):\n%s", d)
	}

	// Once placed, a session is not placed again (a retry first takes it off
	// its server with UpdateSession).
	moved.ServerID = "s-b"
	checkErrs(t, MustCommit(t, s, broker.Placement{Session: moved}), []error{broker.ErrConflict})
	if got := MustGetSession(t, s, "q"); got.ServerID != "s-a" {
		t.Errorf("re-placed session moved to %q", got.ServerID)
	}
}

func testCommitMoveErrors(t *testing.T, s broker.Store) {
	MustUpsertServers(t, s, NewServer("s-a", 1, 0, nil))
	MustInsertSessions(t, s, newPlaced("busy", "bob", broker.TypeVirtual, "s-a"))
	q := NewSession("q", "alice", broker.TypeVirtual, "", broker.StateCreating)
	MustInsertSessions(t, s, q)
	want := MustGetSession(t, s, "q")

	full := *want
	full.ServerID, full.Enqueued = "s-a", false
	missingServer := *want
	missingServer.ServerID, missingServer.Enqueued = "s-missing", false
	missingSession := newPlaced("nobody", "alice", broker.TypeVirtual, "s-a")
	checkErrs(t, MustCommit(t, s,
		broker.Placement{Session: &full},
		broker.Placement{Session: &missingServer},
		broker.Placement{Session: missingSession},
	), []error{broker.ErrServerFull, broker.ErrNotFound, broker.ErrNotFound})
	if d := cmp.Diff(want, MustGetSession(t, s, "q"), diffOpts...); d != "" {
		t.Errorf("rejected move changed the session (-want +got):\n%s", d)
	}
	checkNotStored(t, s, "nobody")
}

// testCommitMoveStale: a queued session deleted (or placed) after the caller
// read it is never overwritten by a late placement.
func testCommitMoveStale(t *testing.T, s broker.Store) {
	MustUpsertServers(t, s, NewServer("s-a", 0, 0, nil), NewServer("s-b", 0, 0, nil))
	MustInsertSessions(t, s,
		NewSession("gone", "alice", broker.TypeVirtual, "", broker.StateCreating),
		NewSession("taken", "bob", broker.TypeVirtual, "", broker.StateCreating))
	gone, taken := MustGetSession(t, s, "gone"), MustGetSession(t, s, "taken")
	if err := s.UpdateSession(context.Background(), "gone", func(x *broker.Session) error {
		x.State = broker.StateDeleted
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := s.UpdateSession(context.Background(), "taken", func(x *broker.Session) error {
		x.ServerID = "s-b"
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	wantGone, wantTaken := MustGetSession(t, s, "gone"), MustGetSession(t, s, "taken")
	gone.ServerID, taken.ServerID = "s-a", "s-a"
	checkErrs(t, MustCommit(t, s, broker.Placement{Session: gone}, broker.Placement{Session: taken}),
		[]error{broker.ErrConflict, broker.ErrConflict})
	if d := cmp.Diff(wantGone, MustGetSession(t, s, "gone"), diffOpts...); d != "" {
		t.Errorf("late placement changed a deleted session (-want +got):\n%s", d)
	}
	if d := cmp.Diff(wantTaken, MustGetSession(t, s, "taken"), diffOpts...); d != "" {
		t.Errorf("late placement moved a placed session (-want +got):\n%s", d)
	}
}

func testCommitDuplicateID(t *testing.T, s broker.Store) {
	MustUpsertServers(t, s, NewServer("s-a", 0, 0, nil))
	MustInsertSessions(t, s, newPlaced("a", "alice", broker.TypeVirtual, "s-a"))
	errs := MustCommit(t, s, Place(
		newPlaced("a", "mallory", broker.TypeVirtual, "s-a"),
		newPlaced("b", "bob", broker.TypeVirtual, "s-a"),
	)...)
	checkErrs(t, errs, []error{broker.ErrConflict, nil})
	if got := MustGetSession(t, s, "a"); got.Owner != "alice" {
		t.Errorf("duplicate placement overwrote the session: owner %q", got.Owner)
	}
}

func testCommitEmpty(t *testing.T, s broker.Store) {
	errs, err := s.CommitPlacements(t.Context(), nil)
	if err != nil || len(errs) != 0 {
		t.Errorf("CommitPlacements(nil) = %v, %v", errs, err)
	}
}

func testCommitConcurrent(t *testing.T, s broker.Store) {
	const limit, workers, each = 10, 8, 5
	MustUpsertServers(t, s, NewServer("s-a", limit, 0, nil))
	var (
		wg     sync.WaitGroup
		mu     sync.Mutex
		placed int
		failed []error
	)
	for w := range workers {
		wg.Go(func() {
			for i := range each {
				ss := newPlaced(fmt.Sprintf("w%d-%d", w, i), fmt.Sprintf("user%d", w), broker.TypeVirtual, "s-a")
				errs, err := s.CommitPlacements(t.Context(), Place(ss))
				mu.Lock()
				switch {
				case err != nil:
					failed = append(failed, err)
				case errs[0] == nil:
					placed++
				case !errors.Is(errs[0], broker.ErrServerFull):
					failed = append(failed, errs[0])
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	for _, err := range failed {
		t.Errorf("concurrent CommitPlacements: %v", err)
	}
	if placed != limit {
		t.Errorf("%d placements succeeded, want %d", placed, limit)
	}
	if got := activeOn(t, s, "s-a"); len(got) != limit {
		t.Errorf("%d sessions on a server with max %d virtual sessions", len(got), limit)
	}
}

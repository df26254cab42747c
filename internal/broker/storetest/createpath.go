package storetest

import (
	"fmt"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/berth-dev/berth/internal/broker"
)

// testListSessionsCreateBatch is the read of the broker's create pipeline: a
// batch of 1,000 placed session IDs (the pipeline's largest), some unknown,
// deleted or back in the queue meanwhile, read with one ListSessions that
// keeps the CREATING ones, in Seq order, with their server and substate.
func testListSessionsCreateBatch(t *testing.T, s broker.Store) {
	MustUpsertServers(t, s, NewServer("s-a", 0, 0, nil))
	var ps []broker.Placement
	var want, batch []string
	for i := range 1000 {
		id := fmt.Sprintf("c%04d", i)
		batch = append(batch, id)
		if i%10 == 9 {
			continue // unknown: never stored
		}
		x := NewSession(id, "alice", broker.TypeVirtual, "", broker.StateCreating)
		x.ServerID, x.Substate = "s-a", broker.SubstatePendingPreparation
		ps = append(ps, broker.Placement{Session: x, Insert: true})
	}
	checkErrs(t, MustCommit(t, s, ps...), make([]error, len(ps)))
	for i, p := range ps {
		switch i % 9 {
		case 3: // deleted meanwhile
			MustUpdateState(t, s, p.Session.ID, broker.StateDeleted)
		default:
			want = append(want, p.Session.ID)
		}
	}
	got := MustListSessions(t, s, broker.SessionFilter{IDs: batch, States: []string{broker.StateCreating}})
	if d := cmp.Diff(want, ids(got)); d != "" {
		t.Fatalf("the batch's CREATING sessions (-want +got):\n%s", d)
	}
	for _, x := range got {
		if x.ServerID != "s-a" || x.Substate != broker.SubstatePendingPreparation {
			t.Fatalf("%s: server %q substate %q, want s-a PENDING_PREPARATION as committed", x.ID, x.ServerID, x.Substate)
		}
	}
}

// MustUpdateState sets a session's state with UpdateSession.
func MustUpdateState(tb testing.TB, s broker.Store, id, state string) {
	tb.Helper()
	if err := s.UpdateSession(tb.Context(), id, func(x *broker.Session) error {
		x.State, x.Substate = state, ""
		return nil
	}); err != nil {
		tb.Fatalf("UpdateSession(%s): %v", id, err)
	}
}

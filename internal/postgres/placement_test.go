package postgres_test

import (
	"errors"
	"testing"

	"github.com/berth-dev/berth/internal/broker"
	"github.com/berth-dev/berth/internal/broker/storetest"
	"github.com/berth-dev/berth/internal/placement"
)

// TestCommitPlacements_Refusals checks that the commit re-checks capacity
// with placement.Fits on the counts it reads in the transaction, the
// batch's own placements included: each refused item wraps
// broker.ErrServerFull and the *placement.Refusal with the server's limits
// and counts, and keeps the message the store always gave.
func TestCommitPlacements_Refusals(t *testing.T) {
	s := MustOpenFresh(t)
	storetest.MustUpsertServers(t, s,
		storetest.NewServer("s-v", 1, 0, nil), storetest.NewServer("s-u", 0, 2, nil),
		storetest.NewServer("s-c", 0, 0, nil), storetest.NewServer("s-b", 1, 0, nil))
	ready := func(id, owner, typ, server string) *broker.Session {
		return storetest.NewSession(id, owner, typ, server, broker.StateReady)
	}
	storetest.MustInsertSessions(t, s,
		ready("v0", "alice", broker.TypeVirtual, "s-v"),
		ready("u0", "bob", broker.TypeVirtual, "s-u"), ready("u1", "bob", broker.TypeConsole, "s-u"),
		ready("u2", "alice", broker.TypeVirtual, "s-u"),
		ready("c0", "alice", broker.TypeConsole, "s-c"), ready("c1", "bob", broker.TypeVirtual, "s-c"),
		ready("gone", "bob", broker.TypeConsole, "s-b"))
	err := s.UpdateSession(t.Context(), "gone", func(ss *broker.Session) error {
		ss.State = broker.StateDeleted // deleted sessions do not count
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	placed := func(id, owner, typ, server string) *broker.Session {
		return storetest.NewSession(id, owner, typ, server, broker.StateCreating)
	}
	errs := storetest.MustCommit(t, s, storetest.Place(
		placed("v1", "bob", broker.TypeVirtual, "s-v"),
		placed("u3", "bob", broker.TypeVirtual, "s-u"),
		placed("c2", "bob", broker.TypeConsole, "s-c"),
		placed("b1", "carol", broker.TypeVirtual, "s-b"),
		placed("b2", "carol", broker.TypeVirtual, "s-b"),
		placed("b3", "carol", broker.TypeConsole, "s-b"),
	)...)
	virtual, console := placement.Ask{Owner: "bob"}, placement.Ask{Owner: "bob", Console: true}
	carol := placement.Ask{Owner: "carol"}
	want := []struct {
		refusal *placement.Refusal // nil: committed
		msg     string
	}{
		{&placement.Refusal{Reason: placement.ReasonFull, Limits: placement.Limits{MaxVirtual: 1},
			Counts: placement.Counts{Virtual: 1}, Ask: virtual},
			`server "s-v" has 1 of 1 virtual sessions: server full`},
		{&placement.Refusal{Reason: placement.ReasonPerUser, Limits: placement.Limits{MaxPerUser: 2},
			Counts: placement.Counts{Virtual: 2, Console: 1, Owned: 2}, Ask: virtual},
			`server "s-u" has 2 of 2 sessions of "bob": server full`},
		{&placement.Refusal{Reason: placement.ReasonConsole,
			Counts: placement.Counts{Virtual: 1, Console: 1, Owned: 1}, Ask: console},
			`server "s-c" has a console session: server full`},
		{},
		{&placement.Refusal{Reason: placement.ReasonFull, Limits: placement.Limits{MaxVirtual: 1},
			Counts: placement.Counts{Virtual: 1, Owned: 1}, Ask: carol},
			`server "s-b" has 1 of 1 virtual sessions: server full`},
		{},
	}
	for i, w := range want {
		err := errs[i]
		if w.refusal == nil {
			if err != nil {
				t.Errorf("placement %d: %v, want committed", i, err)
			}
			continue
		}
		var r *placement.Refusal
		switch {
		case !errors.Is(err, broker.ErrServerFull):
			t.Errorf("placement %d: %v, want broker.ErrServerFull", i, err)
		case !errors.As(err, &r):
			t.Errorf("placement %d: %v, want a *placement.Refusal", i, err)
		case *r != *w.refusal:
			t.Errorf("placement %d: refusal %+v, want %+v", i, *r, *w.refusal)
		}
		if err != nil && err.Error() != w.msg {
			t.Errorf("placement %d: message %q, want %q", i, err.Error(), w.msg)
		}
	}
}

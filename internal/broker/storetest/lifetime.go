package storetest

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/berth-dev/berth/internal/broker"
)

// lifeSession returns a READY session with the lifetime policies' fields
// set: its last input, when it is due and its bookkeeping.
func lifeSession(id string, due time.Time) *broker.Session {
	x := NewSession(id, "alice", broker.TypeVirtual, "s-a", broker.StateReady)
	x.Substate, x.Enqueued, x.EnqueuedAt = "", false, time.Time{}
	x.LastInputTime = at(5 * time.Second)
	x.DueAt = due
	x.Life = broker.SessionLife{
		Extension:         90 * time.Minute,
		LifetimeWarnedFor: at(8 * time.Hour),
		LifetimeWarned:    []time.Duration{2 * time.Minute, 15 * time.Minute},
		IdleWarnedFor:     at(time.Hour),
		IdleWarned:        []time.Duration{15 * time.Minute},
		IdleActedFor:      at(30 * time.Minute),
		RetryAt:           at(6 * time.Second),
	}
	return x
}

// testLifetimeFields checks that LastInputTime, DueAt and Life go through
// every write (insert, UpdateSession, UpdateSessions) and every read.
func testLifetimeFields(t *testing.T, s broker.Store) {
	ctx := t.Context()
	MustUpsertServers(t, s, NewServer("s-a", 0, 0, nil))
	a, b := lifeSession("a", at(time.Hour)), lifeSession("b", time.Time{})
	b.Life = broker.SessionLife{}
	MustInsertSessions(t, s, a, b)
	check := func(step string, want ...*broker.Session) {
		t.Helper()
		for _, w := range want {
			got := MustGetSession(t, s, w.ID)
			if d := cmp.Diff(w, got, diffOpts...); d != "" {
				t.Errorf("%s: GetSession(%s) (-want +got):\n%s", step, w.ID, d)
			}
			checkUTC(t, step+" "+w.ID, got.LastInputTime, got.DueAt, got.Life.LifetimeWarnedFor, got.Life.IdleWarnedFor,
				got.Life.IdleActedFor, got.Life.RetryAt)
		}
		list := MustListSessions(t, s, broker.SessionFilter{IDs: ids(want)})
		if d := cmp.Diff(want, list, diffOpts...); d != "" {
			t.Errorf("%s: ListSessions (-want +got):\n%s", step, d)
		}
	}
	check("insert", a, b)

	if err := s.UpdateSession(ctx, "a", func(x *broker.Session) error {
		x.LastInputTime = at(10 * time.Second)
		x.DueAt = at(2 * time.Hour)
		x.Life.Extension += time.Hour
		x.Life.LifetimeWarned = nil
		*a = *x
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	check("UpdateSession", a, b)

	res, err := s.UpdateSessions(ctx, []string{"a", "b"}, func(x *broker.Session) error {
		x.LastInputTime = x.LastInputTime.Add(time.Minute)
		if x.ID == "a" {
			x.DueAt, x.Life = time.Time{}, broker.SessionLife{}
			*a = *x
		} else {
			x.DueAt = at(3 * time.Hour)
			x.Life.IdleActedFor = at(4 * time.Hour)
			*b = *x
		}
		return nil
	})
	if err != nil || res[0] != nil || res[1] != nil {
		t.Fatalf("UpdateSessions = %v, %v", res, err)
	}
	check("UpdateSessions", a, b)
}

// testListSessionsDueBefore checks the lifetime policies' read: the
// sessions whose DueAt is set and not after DueBefore, with the other
// filters, in Seq order.
func testListSessionsDueBefore(t *testing.T, s broker.Store) {
	MustUpsertServers(t, s, NewServer("s-a", 0, 0, nil))
	never := lifeSession("never", time.Time{})
	early := lifeSession("early", at(time.Minute))
	exact := lifeSession("exact", at(time.Hour))
	late := lifeSession("late", at(time.Hour+time.Millisecond))
	deleting := lifeSession("deleting", at(time.Second))
	deleting.State = broker.StateDeleting
	first := lifeSession("first", at(30*time.Minute))
	MustInsertSessions(t, s, first, never, early, exact, late, deleting)

	cases := []struct {
		name string
		f    broker.SessionFilter
		want []string
	}{
		{"due", broker.SessionFilter{DueBefore: at(time.Hour)}, []string{"first", "early", "exact", "deleting"}},
		{"due and READY", broker.SessionFilter{DueBefore: at(time.Hour), States: []string{broker.StateReady}},
			[]string{"first", "early", "exact"}},
		{"limit", broker.SessionFilter{DueBefore: at(time.Hour), States: []string{broker.StateReady}, Limit: 2},
			[]string{"first", "early"}},
		{"after seq", broker.SessionFilter{DueBefore: at(time.Hour), AfterSeq: first.Seq}, []string{"early", "exact", "deleting"}},
		{"before any", broker.SessionFilter{DueBefore: at(time.Millisecond)}, nil},
		{"IDs", broker.SessionFilter{DueBefore: at(time.Hour), IDs: []string{"never", "late", "exact"}}, []string{"exact"}},
		{"owner", broker.SessionFilter{DueBefore: at(2 * time.Hour), Owner: "alice", States: []string{broker.StateReady}},
			[]string{"first", "early", "exact", "late"}},
	}
	for _, c := range cases {
		got := ids(MustListSessions(t, s, c.f))
		if d := cmp.Diff(c.want, got, diffOpts...); d != "" {
			t.Errorf("%s: ListSessions (-want +got):\n%s", c.name, d)
		}
	}

	// A session that stops being due leaves the result at once.
	if err := s.UpdateSession(t.Context(), "early", func(x *broker.Session) error {
		x.DueAt = at(5 * time.Hour)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	got := ids(MustListSessions(t, s, broker.SessionFilter{DueBefore: at(time.Hour), States: []string{broker.StateReady}}))
	if d := cmp.Diff([]string{"first", "exact"}, got); d != "" {
		t.Errorf("after moving early's DueAt (-want +got):\n%s", d)
	}
}

// testUpdateSessionsDue checks broker.DueWriter, for the stores that have
// it: the Life and DueAt of a session still as it was read are written,
// those of a session that changed meanwhile (or is no longer READY) are
// not, and the other fields stay.
func testUpdateSessionsDue(t *testing.T, s broker.Store) {
	dw, ok := s.(broker.DueWriter)
	if !ok {
		t.Skip("the store has no UpdateSessionsDue")
	}
	ctx := t.Context()
	MustUpsertServers(t, s, NewServer("s-a", 0, 0, nil))
	MustInsertSessions(t, s, lifeSession("same", at(time.Hour)), lifeSession("input", at(time.Hour)),
		lifeSession("life", at(time.Hour)), lifeSession("deleting", at(time.Hour)), lifeSession("fresh", time.Time{}))
	read := map[string]*broker.Session{}
	for _, id := range []string{"same", "input", "life", "deleting", "fresh"} {
		read[id] = MustGetSession(t, s, id)
	}
	read["fresh"].Life = broker.SessionLife{}
	if err := s.UpdateSession(ctx, "fresh", func(x *broker.Session) error { x.Life = broker.SessionLife{}; return nil }); err != nil {
		t.Fatal(err)
	}
	// Changes after the read.
	for id, fn := range map[string]func(*broker.Session){
		"input":    func(x *broker.Session) { x.LastInputTime = at(time.Minute) },
		"life":     func(x *broker.Session) { x.Life.Extension = time.Hour },
		"deleting": func(x *broker.Session) { x.State = broker.StateDeleting },
	} {
		if err := s.UpdateSession(ctx, id, func(x *broker.Session) error { fn(x); return nil }); err != nil {
			t.Fatal(err)
		}
	}
	newLife := broker.SessionLife{Extension: 2 * time.Hour, LifetimeWarnedFor: at(9 * time.Hour),
		LifetimeWarned: []time.Duration{15 * time.Minute}}
	var ws []broker.DueWrite
	for _, id := range []string{"same", "input", "life", "deleting", "fresh"} {
		ws = append(ws, broker.DueWrite{Read: read[id], Life: newLife, DueAt: at(2 * time.Hour)})
	}
	done, err := dw.UpdateSessionsDue(ctx, ws)
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff([]bool{true, false, false, false, true}, done); d != "" {
		t.Errorf("written (-want +got):\n%s", d)
	}
	for _, id := range []string{"same", "fresh"} {
		want := *read[id]
		want.Life, want.DueAt = newLife, at(2*time.Hour)
		if d := cmp.Diff(&want, MustGetSession(t, s, id), diffOpts...); d != "" {
			t.Errorf("%s after UpdateSessionsDue (-want +got):\n%s", id, d)
		}
		got := ids(MustListSessions(t, s, broker.SessionFilter{DueBefore: at(2 * time.Hour), IDs: []string{id}}))
		if len(got) != 1 {
			t.Errorf("%s is not listed as due at its new DueAt", id)
		}
	}
	if got := MustGetSession(t, s, "life"); got.Life.Extension != time.Hour || !got.DueAt.Equal(at(time.Hour)) {
		t.Errorf("a session whose Life changed was written: %+v", got.Life)
	}
	if out, err := dw.UpdateSessionsDue(ctx, nil); err != nil || len(out) != 0 {
		t.Errorf("UpdateSessionsDue(nil) = %v, %v", out, err)
	}
}

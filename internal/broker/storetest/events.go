package storetest

import (
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/berth-dev/berth/internal/broker"
)

// RunEvents runs the broker.EventStore contract tests as subtests of t;
// open returns an empty store that implements broker.EventStore (as Run's
// open does).
func RunEvents(t *testing.T, open func(t *testing.T) broker.Store) {
	tests := []struct {
		name string
		fn   func(t *testing.T, s broker.Store, es broker.EventStore)
	}{
		{"AppendList", testEventsAppendList},
		{"Filters", testEventsFilters},
		{"BigBatch", testEventsBigBatch},
		{"WithSessionWrites", testEventsWithSessionWrites},
		{"WithPlacements", testEventsWithPlacements},
		{"Purge", testEventsPurge},
		{"CommitOrder", testEventsCommitOrder},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := open(t)
			es, ok := s.(broker.EventStore)
			if !ok {
				t.Fatalf("%T does not implement broker.EventStore", s)
			}
			tt.fn(t, s, es)
		})
	}
}

// mustListEvents lists the events f selects.
func mustListEvents(tb testing.TB, es broker.EventStore, f broker.EventFilter) []*broker.Event {
	tb.Helper()
	evs, err := es.ListEvents(tb.Context(), f)
	if err != nil {
		tb.Fatal(err)
	}
	return evs
}

// eventKeys describes events as "type session" strings, for comparison.
func eventKeys(evs []*broker.Event) []string {
	out := make([]string, len(evs))
	for i, e := range evs {
		out[i] = e.Type + " " + e.SessionID + e.ServerID
	}
	return out
}

// checkIncreasing fails t unless the IDs of evs increase.
func checkIncreasing(t *testing.T, evs []*broker.Event) {
	t.Helper()
	for i := 1; i < len(evs); i++ {
		if evs[i].ID <= evs[i-1].ID {
			t.Fatalf("event IDs do not increase: %d after %d", evs[i].ID, evs[i-1].ID)
		}
	}
}

func testEventsAppendList(t *testing.T, _ broker.Store, es broker.EventStore) {
	ctx := t.Context()
	evs := []*broker.Event{
		{Time: at(time.Second), Type: broker.EventServerOpened, ServerID: "s-1"},
		{Time: at(2 * time.Second), Type: broker.EventSessionState, SessionID: "a", ServerID: "s-1", Owner: "alice",
			Data: map[string]any{"state": "READY", "reason": "ok \x00 \xff"}},
		{Type: broker.EventPlacementFailed, Owner: "bob", Data: map[string]any{"reason": "no server", "n": 3.0}},
	}
	if err := es.AppendEvents(ctx, evs); err != nil {
		t.Fatal(err)
	}
	checkIncreasing(t, evs)
	if evs[0].ID <= 0 {
		t.Fatalf("first ID %d, want > 0", evs[0].ID)
	}
	if evs[2].Time.IsZero() {
		t.Error("a zero Time was not set")
	}
	got := mustListEvents(t, es, broker.EventFilter{})
	for _, e := range got {
		checkUTC(t, "event time", e.Time)
	}
	want := []*broker.Event{evs[0], evs[1], evs[2]}
	// Invalid UTF-8 may come back replaced; compare the rest.
	got[1].Data["reason"], want[1].Data["reason"] = "", ""
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("ListEvents (-want +got):\n%s", d)
	}
	if err := es.AppendEvents(ctx, nil); err != nil {
		t.Errorf("AppendEvents(nil): %v", err)
	}
}

func testEventsFilters(t *testing.T, _ broker.Store, es broker.EventStore) {
	var evs []*broker.Event
	for i, typ := range []string{broker.EventSessionState, broker.EventServerOpened, broker.EventSessionPermissions,
		broker.EventSessionState, broker.EventPlacementQueued, "sessionx.other"} {
		owner := "alice"
		if i%2 == 1 {
			owner = "bob"
		}
		evs = append(evs, &broker.Event{Time: at(time.Duration(i) * time.Second), Type: typ, SessionID: fmt.Sprint(i), Owner: owner})
	}
	if err := es.AppendEvents(t.Context(), evs); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		f    broker.EventFilter
		want []int
	}{
		{"all", broker.EventFilter{}, []int{0, 1, 2, 3, 4, 5}},
		{"after", broker.EventFilter{AfterID: evs[2].ID}, []int{3, 4, 5}},
		{"limit", broker.EventFilter{AfterID: evs[0].ID, Limit: 2}, []int{1, 2}},
		{"type", broker.EventFilter{Types: []string{broker.EventSessionState}}, []int{0, 3}},
		{"prefix", broker.EventFilter{Types: []string{"session.*"}}, []int{0, 2, 3}},
		{"types", broker.EventFilter{Types: []string{"server.*", broker.EventPlacementQueued}}, []int{1, 4}},
		{"owner", broker.EventFilter{Owner: "bob"}, []int{1, 3, 5}},
		{"owner and type", broker.EventFilter{Owner: "alice", Types: []string{"session.*"}}, []int{0, 2}},
		{"none", broker.EventFilter{Types: []string{"nothing"}}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := mustListEvents(t, es, tt.f)
			var gotIdx []int
			for _, e := range got {
				for i, w := range evs {
					if w.ID == e.ID {
						gotIdx = append(gotIdx, i)
					}
				}
				if !broker.MatchEvent(&tt.f, e) {
					t.Errorf("event %d listed, but MatchEvent says it does not match", e.ID)
				}
			}
			if d := cmp.Diff(tt.want, gotIdx); d != "" {
				t.Errorf("events (-want +got):\n%s", d)
			}
		})
	}
}

// stateEvent is a session.state event of x.
func stateEvent(x *broker.Session) *broker.Event {
	return &broker.Event{Time: at(time.Minute), Type: broker.EventSessionState, SessionID: x.ID, ServerID: x.ServerID, Owner: x.Owner,
		Data: map[string]any{"state": x.State}}
}

func testEventsWithSessionWrites(t *testing.T, s broker.Store, es broker.EventStore) {
	ctx := t.Context()
	MustUpsertServers(t, s, NewServer("s-1", 0, 0, nil))
	a := NewSession("a", "alice", broker.TypeVirtual, "s-1", broker.StateCreating)
	b := NewSession("b", "bob", broker.TypeVirtual, "s-1", broker.StateCreating)
	a.Events, b.Events = []*broker.Event{stateEvent(a)}, []*broker.Event{stateEvent(b)}
	MustInsertSessions(t, s, a, b)
	// One session, then two in one transaction, each with its event.
	if err := s.UpdateSession(ctx, "a", func(x *broker.Session) error {
		x.State = broker.StateReady
		x.Events = []*broker.Event{stateEvent(x)}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	res, err := s.UpdateSessions(ctx, []string{"b", "a", "nope"}, func(x *broker.Session) error {
		x.State = broker.StateDeleting
		x.Events = []*broker.Event{stateEvent(x)}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	checkErrs(t, res, []error{nil, nil, broker.ErrNotFound})
	// An aborted write keeps its events out.
	abort := errors.New("abort")
	if err := s.UpdateSession(ctx, "a", func(x *broker.Session) error {
		x.Events = []*broker.Event{stateEvent(x)}
		return abort
	}); !errors.Is(err, abort) {
		t.Fatalf("aborted UpdateSession: %v", err)
	}
	res, err = s.UpdateSessions(ctx, []string{"a", "b"}, func(x *broker.Session) error {
		if x.ID == "a" {
			x.Events = []*broker.Event{stateEvent(x)}
			return abort
		}
		x.State = broker.StateDeleted
		x.Events = []*broker.Event{stateEvent(x)}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	checkErrs(t, res, []error{abort, nil})
	// A conflicting insert writes neither the sessions nor their events.
	c := NewSession("c", "carol", broker.TypeVirtual, "s-1", broker.StateCreating)
	dup := NewSession("a", "alice", broker.TypeVirtual, "s-1", broker.StateCreating)
	c.Events, dup.Events = []*broker.Event{stateEvent(c)}, []*broker.Event{stateEvent(dup)}
	if err := s.InsertSessions(ctx, []*broker.Session{c, dup}); !errors.Is(err, broker.ErrConflict) {
		t.Fatalf("InsertSessions of an existing ID: %v", err)
	}

	got := mustListEvents(t, es, broker.EventFilter{})
	checkIncreasing(t, got)
	var states []string
	for _, e := range got {
		states = append(states, e.SessionID+" "+fmt.Sprint(e.Data["state"]))
	}
	want := []string{"a CREATING", "b CREATING", "a READY", "b DELETING", "a DELETING", "b DELETED"}
	if d := cmp.Diff(want, states); d != "" {
		t.Errorf("events of the session writes (-want +got):\n%s", d)
	}
}

func testEventsWithPlacements(t *testing.T, s broker.Store, es broker.EventStore) {
	MustUpsertServers(t, s, NewServer("s-1", 1, 0, nil))
	ps := Place(
		newPlaced("1", "alice", broker.TypeVirtual, "s-1"),
		newPlaced("2", "bob", broker.TypeVirtual, "s-1"), // does not fit: no event
	)
	for _, p := range ps {
		p.Session.Events = []*broker.Event{stateEvent(p.Session)}
	}
	checkErrs(t, MustCommit(t, s, ps...), []error{nil, broker.ErrServerFull})
	got := mustListEvents(t, es, broker.EventFilter{})
	if d := cmp.Diff([]string{"session.state 1s-1"}, eventKeys(got)); d != "" {
		t.Errorf("events of the placements (-want +got):\n%s", d)
	}
}

func testEventsPurge(t *testing.T, _ broker.Store, es broker.EventStore) {
	ctx := t.Context()
	evs := []*broker.Event{
		{Time: at(time.Hour), Type: broker.EventServerOpened, ServerID: "old"},
		{Time: at(2 * time.Hour), Type: broker.EventServerOpened, ServerID: "new"},
	}
	if err := es.AppendEvents(ctx, evs); err != nil {
		t.Fatal(err)
	}
	n, err := es.PurgeEvents(ctx, at(90*time.Minute))
	if err != nil || n != 1 {
		t.Fatalf("PurgeEvents: %d, %v; want 1", n, err)
	}
	if d := cmp.Diff([]string{"server.opened new"}, eventKeys(mustListEvents(t, es, broker.EventFilter{}))); d != "" {
		t.Errorf("after the purge (-want +got):\n%s", d)
	}
	// Purging the newest event does not let its ID be used again: a reader
	// that resumes after it would miss the next event.
	if n, err := es.PurgeEvents(ctx, at(3*time.Hour)); err != nil || n != 1 {
		t.Fatalf("PurgeEvents: %d, %v; want 1", n, err)
	}
	next := []*broker.Event{{Time: at(4 * time.Hour), Type: broker.EventServerClosed, ServerID: "new"}}
	if err := es.AppendEvents(ctx, next); err != nil {
		t.Fatal(err)
	}
	if next[0].ID <= evs[1].ID {
		t.Errorf("ID %d after a purge, want > %d", next[0].ID, evs[1].ID)
	}
	if got := mustListEvents(t, es, broker.EventFilter{AfterID: evs[1].ID}); len(got) != 1 {
		t.Errorf("resuming after the purged ID: %d events, want 1", len(got))
	}
}

// testEventsCommitOrder appends events from concurrent writers while a
// reader reads after the last ID it saw, as the stream does: the reader
// must see every event once. It would miss some if IDs were not in commit
// order.
func testEventsCommitOrder(t *testing.T, s broker.Store, es broker.EventStore) {
	ctx := t.Context()
	MustUpsertServers(t, s, NewServer("s-1", 0, 0, nil))
	const writers, each = 8, 25
	var sess []*broker.Session
	for w := range writers {
		sess = append(sess, NewSession(fmt.Sprint("w", w), "alice", broker.TypeVirtual, "s-1", broker.StateReady))
	}
	MustInsertSessions(t, s, sess...)
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				var err error
				if i%2 == 0 {
					err = es.AppendEvents(ctx, []*broker.Event{{Type: broker.EventServerIdle, ServerID: fmt.Sprint(w, "-", i)}})
				} else {
					err = s.UpdateSession(ctx, sess[w].ID, func(x *broker.Session) error {
						x.NumOfConnections++
						x.Events = []*broker.Event{{Type: broker.EventSessionState, SessionID: x.ID, Data: map[string]any{"n": float64(x.NumOfConnections)}}}
						return nil
					})
				}
				if err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	seen := map[int64]bool{}
	perSession := map[string]float64{}
	var last int64
	read := func() {
		evs := mustListEvents(t, es, broker.EventFilter{AfterID: last})
		for _, e := range evs {
			if e.ID <= last || seen[e.ID] {
				t.Fatalf("event %d read twice or out of order (after %d)", e.ID, last)
			}
			seen[e.ID], last = true, e.ID
			if e.Type == broker.EventSessionState {
				n := e.Data["n"].(float64)
				if n <= perSession[e.SessionID] {
					t.Errorf("session %s: event of change %v after %v", e.SessionID, n, perSession[e.SessionID])
				}
				perSession[e.SessionID] = n
			}
		}
	}
	for running := true; running; {
		select {
		case <-done:
			running = false
		default:
		}
		read()
	}
	read()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if all := mustListEvents(t, es, broker.EventFilter{Limit: 10 * writers * each}); len(all) != writers*each || len(seen) != writers*each {
		t.Errorf("the reader saw %d events of %d stored, want %d", len(seen), len(all), writers*each)
	}
}

// testEventsBigBatch appends batches larger than the stores' statements
// take at once: every event gets the ID it is listed with, in order.
func testEventsBigBatch(t *testing.T, _ broker.Store, es broker.EventStore) {
	var all []*broker.Event
	for _, n := range []int{70, 1, 32, 33} {
		var evs []*broker.Event
		for i := range n {
			evs = append(evs, &broker.Event{Time: at(time.Second), Type: broker.EventServerIdle, ServerID: fmt.Sprint(len(all) + i)})
		}
		if err := es.AppendEvents(t.Context(), evs); err != nil {
			t.Fatal(err)
		}
		all = append(all, evs...)
	}
	got := mustListEvents(t, es, broker.EventFilter{Limit: 1000})
	if len(got) != len(all) {
		t.Fatalf("%d events listed, want %d", len(got), len(all))
	}
	for i, e := range got {
		if e.ID != all[i].ID || e.ServerID != all[i].ServerID {
			t.Fatalf("event %d: listed %d %s, appended as %d %s", i, e.ID, e.ServerID, all[i].ID, all[i].ServerID)
		}
	}
	checkIncreasing(t, got)
}

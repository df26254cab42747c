package broker

import (
	"context"
	"maps"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// TestCountCache_OrderFree: the hooks of committed changes run in any order
// (a retry's hook may run after the placement that followed it), so the
// kept counts must not depend on the order the changes are reported in.
func TestCountCache_OrderFree(t *testing.T) {
	queued := &Session{ID: "a", Owner: "ann", Type: TypeVirtual, State: StateCreating}
	onS1 := &Session{ID: "a", Owner: "ann", Type: TypeVirtual, State: StateCreating, ServerID: "s1"}
	onS2 := &Session{ID: "a", Owner: "ann", Type: TypeVirtual, State: StateCreating, ServerID: "s2"}
	ready := &Session{ID: "a", Owner: "ann", Type: TypeVirtual, State: StateReady, ServerID: "s2"}
	deleted := &Session{ID: "a", Owner: "ann", Type: TypeVirtual, State: StateDeleted, ServerID: "s2"}
	type change struct{ old, new *Session }
	tests := []struct {
		name    string
		changes []change
	}{
		{"retry then placed", []change{{nil, onS1}, {onS1, queued}, {queued, onS2}}},
		{"queued, placed, ready, deleted", []change{{nil, queued}, {queued, onS2}, {onS2, ready}, {ready, deleted}}},
		{"deleted while queued", []change{{nil, queued}, {queued, deleted}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			want := newLoadedCounts()
			for _, ch := range tt.changes {
				want.change(ch.old, ch.new)
			}
			wantStates, wantQueued := want.states()
			for _, order := range permutations(len(tt.changes)) {
				got := newLoadedCounts()
				for _, i := range order {
					got.change(tt.changes[i].old, tt.changes[i].new)
				}
				gotStates, gotQueued := got.states()
				if d := cmp.Diff(want.snapshot(), got.snapshot()) + cmp.Diff(wantStates, gotStates) + cmp.Diff(wantQueued, gotQueued); d != "" {
					t.Errorf("reported in order %v, the counts differ from the natural order (-natural +got):\n%s", order, d)
				}
			}
		})
	}
}

// TestCountCache_NeverNegative: a count below zero for a while (a delta
// before its partner) is handed out as zero.
func TestCountCache_NeverNegative(t *testing.T) {
	c := newLoadedCounts()
	c.change(&Session{Owner: "ann", Type: TypeVirtual, State: StateCreating}, &Session{Owner: "ann", Type: TypeVirtual, State: StateReady, ServerID: "s1"})
	c.change(&Session{Owner: "bob", Type: TypeVirtual, State: StateReady, ServerID: "s1"}, nil)
	states, queued := c.states()
	if queued != 0 || states[StateCreating] != 0 {
		t.Errorf("queued %d, CREATING %d; want 0, 0", queued, states[StateCreating])
	}
	if s1 := c.snapshot()["s1"]; s1.Virtual != 0 || s1.ByOwner["bob"] != 0 || s1.ByOwner["ann"] != 1 {
		t.Errorf("s1 counts %+v; want no negative ones", s1)
	}
}

// TestCountCache_LookupMatchesSnapshot: the counts a placement snapshot
// looks up are the snapshot map's, whether that map is built or not, and a
// later change does not show in counts already handed out.
func TestCountCache_LookupMatchesSnapshot(t *testing.T) {
	c := newLoadedCounts()
	c.change(nil, &Session{Owner: "ann", Type: TypeVirtual, State: StateReady, ServerID: "s1"})
	c.change(nil, &Session{Owner: "bob", Type: TypeConsole, State: StateReady, ServerID: "s1"})
	c.change(nil, &Session{Owner: "ann", Type: TypeVirtual, State: StateReady, ServerID: "s2"})
	// s3 below zero for a while (a delta before its partner), s4 below
	// zero and nothing else.
	c.change(nil, &Session{Owner: "ann", Type: TypeVirtual, State: StateReady, ServerID: "s3"})
	c.change(&Session{Owner: "bob", Type: TypeVirtual, State: StateReady, ServerID: "s3"}, nil)
	c.change(&Session{Owner: "bob", Type: TypeVirtual, State: StateReady, ServerID: "s4"}, nil)
	var srvs []*Server
	for _, id := range []string{"s1", "s2", "s3", "s4", "unknown"} {
		srvs = append(srvs, &Server{ID: id})
	}
	check := func(when string, got []Counts) {
		t.Helper()
		snap := c.snapshot()
		for i, srv := range srvs {
			if d := cmp.Diff(snap[srv.ID], got[i]); d != "" {
				t.Errorf("%s: %s (-snapshot +lookup):\n%s", when, srv.ID, d)
			}
		}
	}
	first := c.lookup(srvs) // no map built yet
	c.change(nil, &Session{Owner: "ann", Type: TypeVirtual, State: StateReady, ServerID: "s1"})
	if first[0].Virtual != 1 || first[0].ByOwner["ann"] != 1 {
		t.Errorf("counts handed out changed with a later session: %+v", first[0])
	}
	check("before the map", c.lookup(srvs))
	check("with the map", c.lookup(srvs))
	c.change(nil, &Session{Owner: "cy", Type: TypeVirtual, State: StateReady, ServerID: "s2"})
	check("after a change", c.lookup(srvs))
}

func newLoadedCounts() *countCache {
	c := &countCache{loaded: true, servers: map[string]*serverTally{}, byState: map[string]int{}}
	c.initLocked()
	return c
}

// permutations returns every order of 0..n-1.
func permutations(n int) [][]int {
	if n == 0 {
		return [][]int{{}}
	}
	var out [][]int
	for _, p := range permutations(n - 1) {
		for i := 0; i <= len(p); i++ {
			q := append(append(append([]int{}, p[:i]...), n-1), p[i:]...)
			out = append(out, q)
		}
	}
	return out
}

// countsOnly answers the reads of countInStore from fixed figures: the
// bookkeeping of countCache under test here is the store-independent part
// (the real stores are under TestCounts_FollowStore).
type countsOnly struct {
	Store
	servers map[string]Counts
}

func (s *countsOnly) CountSessions(context.Context) (map[string]Counts, error) {
	return maps.Clone(s.servers), nil
}
func (s *countsOnly) CountByState(context.Context) (map[string]int, error) {
	return map[string]int{}, nil
}
func (s *countsOnly) ListSessions(context.Context, SessionFilter) ([]*Session, error) {
	return nil, nil
}

// TestCountCache_HookAfterRead: a write commits, a read of the store sees
// it, and the write's hook comes after the read is installed, so the
// session is counted twice. Because the write was in flight during the
// read, the counts say they are uncertain (placement then counts in the
// store before refusing) and the read after it, with no write in flight,
// puts them right.
func TestCountCache_HookAfterRead(t *testing.T) {
	ctx := t.Context()
	st := &countsOnly{servers: map[string]Counts{}}
	var c countCache
	x := &Session{ID: "a", Owner: "ann", Type: TypeVirtual, State: StateCreating, ServerID: "s1"}
	end := c.begin()
	st.servers["s1"] = Counts{Virtual: 1, ByOwner: map[string]int{"ann": 1}} // committed
	if err := c.read(ctx, st); err != nil {
		t.Fatal(err)
	}
	c.change(nil, x) // the hook, after the read
	end()
	if got := c.snapshot()["s1"].Virtual; got != 2 {
		t.Fatalf("s1 counts %d after the late hook; the test wants the double count (2)", got)
	}
	if !c.uncertain() {
		t.Error("counts that a read overlapping a write may have counted twice are not uncertain")
	}
	c.mu.Lock()
	again := c.again
	c.mu.Unlock()
	if !again {
		t.Error("no second read asked for after a read that overlapped a write")
	}
	if err := c.read(ctx, st); err != nil {
		t.Fatal(err)
	}
	if got := c.snapshot()["s1"].Virtual; got != 1 || c.uncertain() {
		t.Errorf("after a read with no write in flight: s1 counts %d, uncertain %v; want 1, false", got, c.uncertain())
	}
}

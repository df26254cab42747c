package storetest

import (
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/berth-dev/berth/internal/broker"
)

func testInsertSessions(t *testing.T, s broker.Store) {
	MustUpsertServers(t, s, NewServer("s-a", 0, 0, nil))
	a := NewSession("a", "alice", broker.TypeVirtual, "s-a", broker.StateCreating)
	b := NewSession("b", "bob", broker.TypeConsole, "", broker.StateCreating)
	// A session with every optional field empty.
	c := &broker.Session{ID: "c", Owner: "carol", Type: broker.TypeVirtual, State: broker.StateCreating}
	MustInsertSessions(t, s, a, b, c)
	if a.Seq <= 0 || b.Seq <= a.Seq || c.Seq <= b.Seq {
		t.Fatalf("Seqs %d, %d, %d: want increasing and > 0", a.Seq, b.Seq, c.Seq)
	}
	for _, want := range []*broker.Session{a, b, c} {
		got := MustGetSession(t, s, want.ID)
		if d := cmp.Diff(want, got, diffOpts...); d != "" {
			t.Errorf("GetSession(%s) (-want +got):\n%s", want.ID, d)
		}
		checkUTC(t, "GetSession "+want.ID, got.CreationTime, got.LastDisconnectionTime, got.UpdatedAt, got.EnqueuedAt)
	}
	got := MustGetSession(t, s, "c")
	if !got.CreationTime.IsZero() || !got.LastDisconnectionTime.IsZero() || !got.UpdatedAt.IsZero() || !got.EnqueuedAt.IsZero() {
		t.Errorf("zero times came back as %v, %v, %v, %v", got.CreationTime, got.LastDisconnectionTime, got.UpdatedAt, got.EnqueuedAt)
	}

	d := NewSession("d", "dave", broker.TypeVirtual, "", broker.StateCreating)
	MustInsertSessions(t, s, d)
	if d.Seq <= c.Seq {
		t.Errorf("later insert got Seq %d, want > %d", d.Seq, c.Seq)
	}
	if err := s.InsertSessions(t.Context(), nil); err != nil {
		t.Errorf("InsertSessions(nil): %v", err)
	}
}

func testInsertSessionsConflict(t *testing.T, s broker.Store) {
	ctx := t.Context()
	MustInsertSessions(t, s, NewSession("a", "alice", broker.TypeVirtual, "", broker.StateCreating))
	dup := NewSession("a", "mallory", broker.TypeVirtual, "", broker.StateReady)
	fresh := NewSession("b", "bob", broker.TypeVirtual, "", broker.StateCreating)
	err := s.InsertSessions(ctx, []*broker.Session{fresh, dup})
	if !errors.Is(err, broker.ErrConflict) {
		t.Fatalf("InsertSessions with an existing ID: got %v, want ErrConflict", err)
	}
	if got := MustGetSession(t, s, "a"); got.Owner != "alice" {
		t.Errorf("existing session overwritten: owner %q", got.Owner)
	}
	if _, err := s.GetSession(ctx, "b"); !errors.Is(err, broker.ErrNotFound) {
		t.Errorf("a failed InsertSessions inserted part of the batch: GetSession(b) = %v", err)
	}
	err = s.InsertSessions(ctx, []*broker.Session{
		NewSession("c", "carol", broker.TypeVirtual, "", broker.StateCreating),
		NewSession("c", "carol", broker.TypeVirtual, "", broker.StateCreating),
	})
	if !errors.Is(err, broker.ErrConflict) {
		t.Fatalf("InsertSessions with a repeated ID: got %v, want ErrConflict", err)
	}
}

func testGetSessionNotFound(t *testing.T, s broker.Store) {
	MustInsertSessions(t, s, NewSession("a", "alice", broker.TypeVirtual, "", broker.StateCreating))
	if _, err := s.GetSession(t.Context(), "missing"); !errors.Is(err, broker.ErrNotFound) {
		t.Fatalf("GetSession(unknown): got %v, want ErrNotFound", err)
	}
}

// listFixture stores servers and sessions that testListSessions filters.
func listFixture(t *testing.T, s broker.Store) {
	MustUpsertServers(t, s,
		NewServer("s-a", 0, 0, map[string]string{"zone": "a", "gpu": "yes"}),
		NewServer("s-b", 0, 0, map[string]string{"zone": "b", "gpu": "yes"}),
		NewServer("s-c", 0, 0, nil))
	MustInsertSessions(t, s,
		NewSession("1", "alice", broker.TypeVirtual, "s-a", broker.StateReady),
		NewSession("2", "bob", broker.TypeVirtual, "s-b", broker.StateCreating),
		NewSession("3", "alice", broker.TypeConsole, "s-c", broker.StateReady),
		NewSession("4", "alice", broker.TypeVirtual, "", broker.StateCreating),
		NewSession("5", "bob", broker.TypeVirtual, "s-a", broker.StateDeleted),
		NewSession("6", "carol", broker.TypeVirtual, "s-b", broker.StateReady),
		NewSession("7", "bob", broker.TypeVirtual, "", broker.StateCreating),
		NewSession("8", "alice", broker.TypeVirtual, "s-a", broker.StateDeleting))
}

func testListSessions(t *testing.T, s broker.Store) {
	if got := MustListSessions(t, s, broker.SessionFilter{}); len(got) != 0 {
		t.Fatalf("ListSessions on an empty store = %v", ids(got))
	}
	listFixture(t, s)
	tests := []struct {
		name string
		f    broker.SessionFilter
		want []string
	}{
		{"all", broker.SessionFilter{}, []string{"1", "2", "3", "4", "5", "6", "7", "8"}},
		{"IDs", broker.SessionFilter{IDs: []string{"6", "missing", "2", "4"}}, []string{"2", "4", "6"}},
		{"IDs none match", broker.SessionFilter{IDs: []string{"missing"}}, nil},
		{"Owner", broker.SessionFilter{Owner: "alice"}, []string{"1", "3", "4", "8"}},
		{"Owner unknown", broker.SessionFilter{Owner: "nobody"}, nil},
		{"ServerID", broker.SessionFilter{ServerID: "s-a"}, []string{"1", "5", "8"}},
		{"States one", broker.SessionFilter{States: []string{broker.StateReady}}, []string{"1", "3", "6"}},
		{"States two", broker.SessionFilter{States: []string{broker.StateDeleted, broker.StateCreating}}, []string{"2", "4", "5", "7"}},
		{"Unplaced", broker.SessionFilter{Unplaced: true}, []string{"4", "7"}},
		{"Tags one", broker.SessionFilter{Tags: map[string]string{"zone": "a"}}, []string{"1", "5", "8"}},
		{"Tags shared", broker.SessionFilter{Tags: map[string]string{"gpu": "yes"}}, []string{"1", "2", "5", "6", "8"}},
		{"Tags all must match", broker.SessionFilter{Tags: map[string]string{"gpu": "yes", "zone": "b"}}, []string{"2", "6"}},
		{"Tags value differs", broker.SessionFilter{Tags: map[string]string{"zone": "c"}}, nil},
		{"Tags key missing", broker.SessionFilter{Tags: map[string]string{"zone": "a", "ssd": "yes"}}, nil},
		{"AfterSeq", broker.SessionFilter{AfterSeq: -1}, []string{"1", "2", "3", "4", "5", "6", "7", "8"}},
		{"Limit", broker.SessionFilter{Limit: 3}, []string{"1", "2", "3"}},
		{"Limit above count", broker.SessionFilter{Limit: 100}, []string{"1", "2", "3", "4", "5", "6", "7", "8"}},
		{"Owner and States", broker.SessionFilter{Owner: "alice", States: []string{broker.StateReady, broker.StateDeleting}}, []string{"1", "3", "8"}},
		{"Owner and ServerID", broker.SessionFilter{Owner: "bob", ServerID: "s-b"}, []string{"2"}},
		{"Owner and Unplaced", broker.SessionFilter{Owner: "bob", Unplaced: true}, []string{"7"}},
		{"Owner and Tags", broker.SessionFilter{Owner: "bob", Tags: map[string]string{"gpu": "yes"}}, []string{"2", "5"}},
		{"Unplaced and Tags", broker.SessionFilter{Unplaced: true, Tags: map[string]string{"zone": "a"}}, nil},
		{"IDs and Owner and Limit", broker.SessionFilter{IDs: []string{"1", "2", "3", "4"}, Owner: "alice", Limit: 2}, []string{"1", "3"}},
		{"Tags and States and Limit", broker.SessionFilter{Tags: map[string]string{"gpu": "yes"}, States: []string{broker.StateReady, broker.StateCreating}, Limit: 2}, []string{"1", "2"}},
	}
	for _, tt := range tests {
		got := MustListSessions(t, s, tt.f)
		if d := cmp.Diff(tt.want, ids(got), diffOpts...); d != "" {
			t.Errorf("%s: ListSessions(%+v) (-want +got):\n%s", tt.name, tt.f, d)
		}
	}

	// Entries are whole sessions, as GetSession returns them.
	one := MustListSessions(t, s, broker.SessionFilter{IDs: []string{"6"}})
	if d := cmp.Diff(MustGetSession(t, s, "6"), one[0], diffOpts...); d != "" {
		t.Errorf("ListSessions entry differs from GetSession (-want +got):\n%s", d)
	}

	// AfterSeq relative to a real Seq.
	all := MustListSessions(t, s, broker.SessionFilter{})
	got := MustListSessions(t, s, broker.SessionFilter{AfterSeq: all[5].Seq})
	if d := cmp.Diff([]string{"7", "8"}, ids(got)); d != "" {
		t.Errorf("ListSessions after the 6th Seq (-want +got):\n%s", d)
	}
	got = MustListSessions(t, s, broker.SessionFilter{Owner: "alice", AfterSeq: all[2].Seq, Limit: 1})
	if d := cmp.Diff([]string{"4"}, ids(got)); d != "" {
		t.Errorf("ListSessions of alice after the 3rd Seq, limit 1 (-want +got):\n%s", d)
	}
	// The placement queue, page by page.
	got = MustListSessions(t, s, broker.SessionFilter{Unplaced: true, Limit: 1})
	if d := cmp.Diff([]string{"4"}, ids(got)); d != "" {
		t.Errorf("first unplaced session (-want +got):\n%s", d)
	}
	got = MustListSessions(t, s, broker.SessionFilter{Unplaced: true, AfterSeq: got[0].Seq, Limit: 1})
	if d := cmp.Diff([]string{"7"}, ids(got)); d != "" {
		t.Errorf("second unplaced session (-want +got):\n%s", d)
	}
	got = MustListSessions(t, s, broker.SessionFilter{Unplaced: true, AfterSeq: got[0].Seq})
	if len(got) != 0 {
		t.Errorf("unplaced sessions after the last = %v", ids(got))
	}
}

func testListSessionsPagination(t *testing.T, s broker.Store) {
	MustUpsertServers(t, s, NewServer("s-a", 0, 0, nil))
	var want, wantAlice []string
	var batch []*broker.Session
	for i, id := range sessionIDs("p", 25) {
		owner := "bob"
		if i%3 == 0 {
			owner = "alice"
			wantAlice = append(wantAlice, id)
		}
		batch = append(batch, NewSession(id, owner, broker.TypeVirtual, "s-a", broker.StateReady))
		want = append(want, id)
	}
	MustInsertSessions(t, s, batch[:10]...)
	MustInsertSessions(t, s, batch[10:]...)

	for _, tc := range []struct {
		owner string
		want  []string
	}{{"", want}, {"alice", wantAlice}} {
		for _, limit := range []int{1, 4, 7, 25} {
			var got []string
			var after int64
			for range 100 {
				page := MustListSessions(t, s, broker.SessionFilter{Owner: tc.owner, AfterSeq: after, Limit: limit})
				if len(page) > limit {
					t.Fatalf("page of %d, limit %d", len(page), limit)
				}
				if len(page) == 0 {
					break
				}
				for i, ss := range page {
					if ss.Seq <= after {
						t.Fatalf("page entry Seq %d <= AfterSeq %d", ss.Seq, after)
					}
					if i > 0 && ss.Seq <= page[i-1].Seq {
						t.Fatalf("page not ordered by Seq")
					}
				}
				got = append(got, ids(page)...)
				after = page[len(page)-1].Seq
			}
			if d := cmp.Diff(tc.want, got); d != "" {
				t.Errorf("owner %q, pages of %d (-want +got):\n%s", tc.owner, limit, d)
			}
		}
	}
}

func testListSessionsTagsFollowServer(t *testing.T, s broker.Store) {
	a := NewServer("s-a", 0, 0, map[string]string{"zone": "a"})
	b := NewServer("s-b", 0, 0, map[string]string{"zone": "b"})
	MustUpsertServers(t, s, a, b)
	MustInsertSessions(t, s,
		NewSession("1", "alice", broker.TypeVirtual, "s-a", broker.StateReady),
		NewSession("2", "alice", broker.TypeVirtual, "s-b", broker.StateReady))
	zoneA := broker.SessionFilter{Tags: map[string]string{"zone": "a"}}
	check := func(step string, want ...string) {
		t.Helper()
		if d := cmp.Diff(want, ids(MustListSessions(t, s, zoneA)), diffOpts...); d != "" {
			t.Errorf("%s: sessions in zone a (-want +got):\n%s", step, d)
		}
	}
	check("initially", "1")

	MustUpsertServers(t, s, a) // same tags again
	check("after an unchanged report", "1")

	b.Info.Tags = map[string]string{"zone": "a", "rack": "7"}
	MustUpsertServers(t, s, b)
	check("after s-b moved to zone a", "1", "2")

	a.Info.Tags = nil
	MustUpsertServers(t, s, a)
	check("after s-a lost its tags", "2")
	if got := MustGetServer(t, s, "s-a"); len(got.Info.Tags) != 0 {
		t.Errorf("s-a tags = %v, want none", got.Info.Tags)
	}

	b.Info.Tags = map[string]string{"zone": "b", "rack": "7"}
	MustUpsertServers(t, s, b)
	check("after s-b moved back")
	got := MustListSessions(t, s, broker.SessionFilter{Tags: map[string]string{"rack": "7"}})
	if d := cmp.Diff([]string{"2"}, ids(got)); d != "" {
		t.Errorf("sessions on rack 7 (-want +got):\n%s", d)
	}
}

func testUpdateSession(t *testing.T, s broker.Store) {
	MustUpsertServers(t, s, NewServer("s-a", 0, 0, nil))
	orig := NewSession("a", "alice", broker.TypeVirtual, "s-a", broker.StateCreating)
	MustInsertSessions(t, s, orig, NewSession("b", "bob", broker.TypeVirtual, "s-a", broker.StateCreating))
	other := MustGetSession(t, s, "b")

	var want broker.Session
	err := s.UpdateSession(t.Context(), "a", func(ss *broker.Session) error {
		if d := cmp.Diff(orig, ss, diffOpts...); d != "" {
			t.Errorf("fn got (-want +got):\n%s", d)
		}
		ss.State = broker.StateReady
		ss.Substate = ""
		ss.StateReason = ""
		ss.NumOfConnections = 5
		ss.LastDisconnectionTime = time.Time{}
		ss.UpdatedAt = at(time.Hour)
		ss.Excluded = append(ss.Excluded, "s-z")
		ss.Spec.AutorunFileArguments = nil
		ss.Enqueued = false
		ss.EnqueuedAt = time.Time{}
		ss.Attempts = 0
		want = *ss
		return nil
	})
	if err != nil {
		t.Fatalf("UpdateSession: %v", err)
	}
	if d := cmp.Diff(&want, MustGetSession(t, s, "a"), diffOpts...); d != "" {
		t.Errorf("after UpdateSession (-want +got):\n%s", d)
	}
	if d := cmp.Diff(other, MustGetSession(t, s, "b"), diffOpts...); d != "" {
		t.Errorf("UpdateSession(a) changed b (-want +got):\n%s", d)
	}
}

func testUpdateSessionAbort(t *testing.T, s broker.Store) {
	MustInsertSessions(t, s, NewSession("a", "alice", broker.TypeVirtual, "", broker.StateCreating))
	want := MustGetSession(t, s, "a")
	errAbort := errors.New("abort")
	err := s.UpdateSession(t.Context(), "a", func(ss *broker.Session) error {
		ss.State = broker.StateDeleted
		ss.Owner = "mallory"
		return errAbort
	})
	if !errors.Is(err, errAbort) {
		t.Fatalf("UpdateSession with a failing fn: got %v, want fn's error", err)
	}
	if d := cmp.Diff(want, MustGetSession(t, s, "a"), diffOpts...); d != "" {
		t.Errorf("aborted UpdateSession changed the row (-want +got):\n%s", d)
	}
}

func testUpdateSessionNotFound(t *testing.T, s broker.Store) {
	called := false
	err := s.UpdateSession(t.Context(), "missing", func(*broker.Session) error { called = true; return nil })
	if !errors.Is(err, broker.ErrNotFound) {
		t.Fatalf("UpdateSession(unknown): got %v, want ErrNotFound", err)
	}
	if called {
		t.Error("UpdateSession(unknown) called fn")
	}
}

func testUpdateSessionConcurrent(t *testing.T, s broker.Store) {
	ss := NewSession("a", "alice", broker.TypeVirtual, "", broker.StateReady)
	ss.NumOfConnections = 0
	MustInsertSessions(t, s, ss)
	const workers, each = 8, 10
	var wg sync.WaitGroup
	errs := make(chan error, workers*each)
	for range workers {
		wg.Go(func() {
			for range each {
				errs <- s.UpdateSession(t.Context(), "a", func(ss *broker.Session) error {
					ss.NumOfConnections++
					return nil
				})
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("concurrent UpdateSession: %v", err)
		}
	}
	if got := MustGetSession(t, s, "a").NumOfConnections; got != workers*each {
		t.Errorf("after %d concurrent increments NumOfConnections = %d", workers*each, got)
	}
}

func testDeleteSession(t *testing.T, s broker.Store) {
	ctx := t.Context()
	MustInsertSessions(t, s,
		NewSession("a", "alice", broker.TypeVirtual, "", broker.StateReady),
		NewSession("b", "bob", broker.TypeVirtual, "", broker.StateReady))
	if err := s.DeleteSession(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetSession(ctx, "a"); !errors.Is(err, broker.ErrNotFound) {
		t.Errorf("GetSession after DeleteSession: got %v, want ErrNotFound", err)
	}
	MustGetSession(t, s, "b")
	if err := s.DeleteSession(ctx, "a"); !errors.Is(err, broker.ErrNotFound) {
		t.Errorf("DeleteSession twice: got %v, want ErrNotFound", err)
	}
}

func testPurgeDeleted(t *testing.T, s broker.Store) {
	ctx := t.Context()
	mk := func(id, state string, updated time.Time) *broker.Session {
		ss := NewSession(id, "alice", broker.TypeVirtual, "", state)
		ss.UpdatedAt = updated
		return ss
	}
	MustInsertSessions(t, s,
		mk("old-deleted", broker.StateDeleted, at(0)),
		mk("new-deleted", broker.StateDeleted, at(time.Hour)),
		mk("edge-deleted", broker.StateDeleted, at(30*time.Minute)),
		mk("old-ready", broker.StateReady, at(0)),
		mk("old-deleting", broker.StateDeleting, at(0)))
	n, err := s.PurgeDeleted(ctx, at(30*time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	if n != 1 {
		t.Errorf("PurgeDeleted removed %d, want 1", n)
	}
	want := []string{"new-deleted", "edge-deleted", "old-ready", "old-deleting"}
	if d := cmp.Diff(want, ids(MustListSessions(t, s, broker.SessionFilter{}))); d != "" {
		t.Errorf("after PurgeDeleted (-want +got):\n%s", d)
	}
	if n, err := s.PurgeDeleted(ctx, at(30*time.Minute)); err != nil || n != 0 {
		t.Errorf("second PurgeDeleted = %d, %v; want 0", n, err)
	}
	if n, err := s.PurgeDeleted(ctx, at(2*time.Hour)); err != nil || n != 2 {
		t.Errorf("PurgeDeleted(later) = %d, %v; want 2", n, err)
	}
}

func testCountSessions(t *testing.T, s broker.Store) {
	ctx := t.Context()
	got, err := s.CountSessions(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 0 {
		t.Errorf("CountSessions on an empty store = %v", got)
	}
	MustUpsertServers(t, s, NewServer("s-a", 0, 0, nil), NewServer("s-b", 0, 0, nil), NewServer("s-c", 0, 0, nil))
	MustInsertSessions(t, s,
		NewSession("1", "alice", broker.TypeVirtual, "s-a", broker.StateReady),
		NewSession("2", "alice", broker.TypeVirtual, "s-a", broker.StateCreating),
		NewSession("3", "bob", broker.TypeConsole, "s-a", broker.StateReady),
		NewSession("4", "bob", broker.TypeVirtual, "s-a", broker.StateDeleted),
		NewSession("5", "carol", broker.TypeVirtual, "s-b", broker.StateDeleting),
		NewSession("6", "carol", broker.TypeVirtual, "", broker.StateCreating),
		NewSession("7", "dave", broker.TypeVirtual, "s-c", broker.StateDeleted))
	got, err = s.CountSessions(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]broker.Counts{
		"s-a": {Virtual: 2, Console: 1, ByOwner: map[string]int{"alice": 2, "bob": 1}},
		"s-b": {Virtual: 1, ByOwner: map[string]int{"carol": 1}},
	}
	// A server without active sessions may be absent or have zero counts.
	if c, ok := got["s-c"]; ok {
		if c.Virtual != 0 || c.Console != 0 || len(c.ByOwner) != 0 {
			t.Errorf("s-c has only a DELETED session but counts %+v", c)
		}
		delete(got, "s-c")
	}
	if d := cmp.Diff(want, got, diffOpts...); d != "" {
		t.Errorf("CountSessions (-want +got):\n%s", d)
	}
}

func testCountByState(t *testing.T, s broker.Store) {
	ctx := t.Context()
	got, err := s.CountByState(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 0 {
		t.Errorf("CountByState on an empty store = %v", got)
	}
	MustUpsertServers(t, s, NewServer("s-a", 0, 0, nil))
	MustInsertSessions(t, s,
		NewSession("1", "alice", broker.TypeVirtual, "s-a", broker.StateReady),
		NewSession("2", "alice", broker.TypeVirtual, "s-a", broker.StateReady),
		NewSession("3", "bob", broker.TypeConsole, "s-a", broker.StateDeleted),
		NewSession("4", "bob", broker.TypeVirtual, "", broker.StateCreating))
	got, err = s.CountByState(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]int{broker.StateReady: 2, broker.StateDeleted: 1, broker.StateCreating: 1}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("CountByState (-want +got):\n%s", d)
	}
}

func testSetting(t *testing.T, s broker.Store) {
	ctx := t.Context()
	for _, step := range []struct{ name, def, want string }{
		{"cluster-id", "first", "first"},
		{"cluster-id", "second", "first"},
		{"other", "", ""},
		{"other", "x", ""},
		{"cluster-id", "", "first"},
	} {
		got, err := s.Setting(ctx, step.name, step.def)
		if err != nil {
			t.Fatalf("Setting(%q, %q): %v", step.name, step.def, err)
		}
		if got != step.want {
			t.Errorf("Setting(%q, %q) = %q, want %q", step.name, step.def, got, step.want)
		}
	}
}

func testSettingConcurrent(t *testing.T, s broker.Store) {
	const workers = 8
	got := make([]string, workers)
	errs := make([]error, workers)
	var wg sync.WaitGroup
	for i := range workers {
		wg.Go(func() {
			got[i], errs[i] = s.Setting(t.Context(), "secret", string(rune('a'+i)))
		})
	}
	wg.Wait()
	for i := range workers {
		if errs[i] != nil {
			t.Fatalf("Setting: %v", errs[i])
		}
		if got[i] != got[0] {
			t.Fatalf("concurrent Setting calls saw %q and %q", got[0], got[i])
		}
	}
	if v, err := s.Setting(t.Context(), "secret", "late"); err != nil || v != got[0] {
		t.Errorf("Setting after the race = %q, %v; want %q", v, err, got[0])
	}
}

func testPing(t *testing.T, s broker.Store) {
	if err := s.Ping(t.Context()); err != nil {
		t.Fatalf("Ping: %v", err)
	}
}

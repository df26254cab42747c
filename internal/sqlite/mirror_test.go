package sqlite_test

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/berth-dev/berth/internal/broker"
	"github.com/berth-dev/berth/internal/broker/storetest"
	"github.com/berth-dev/berth/internal/sqlite"
)

// TestOpen_Lock checks that one database file has one store with a session
// mirror at a time, and that a NoSessionCache store beside it reads sessions
// and writes everything else but refuses the writes the mirror would miss.
func TestOpen_Lock(t *testing.T) {
	ctx := t.Context()
	path := tempPath(t)
	a := MustOpen(t, path)
	storetest.MustUpsertServers(t, a, storetest.NewServer("s-a", 0, 0, nil))
	storetest.MustInsertSessions(t, a, storetest.NewSession("x", "alice", broker.TypeVirtual, "s-a", broker.StateReady))

	s, err := sqlite.Open(ctx, path)
	var le *sqlite.LockError
	if !errors.As(err, &le) {
		if s != nil {
			s.Close()
		}
		t.Fatalf("second Open of %s: got %v, want a *LockError", path, err)
	}
	want := "another broker is using " + path + ": stop it or point persistence-dsn elsewhere"
	if le.Path != path || le.Error() != want {
		t.Errorf("LockError = %q (path %q), want %q", le, le.Path, want)
	}

	b := MustOpenWith(t, path, sqlite.Options{NoSessionCache: true})
	if got := storetest.MustListSessions(t, b, broker.SessionFilter{}); len(got) != 1 {
		t.Errorf("NoSessionCache store lists %d sessions, want 1", len(got))
	}
	if _, err := b.Setting(ctx, "cluster-id", "abc"); err != nil {
		t.Errorf("Setting through a NoSessionCache store beside the broker: %v", err)
	}
	if err := b.SetServerOpen(ctx, "s-a", false); err != nil {
		t.Errorf("SetServerOpen through a NoSessionCache store beside the broker: %v", err)
	}
	fresh := storetest.NewSession("y", "bob", broker.TypeVirtual, "s-a", broker.StateCreating)
	refused := map[string]error{
		"InsertSessions": b.InsertSessions(ctx, []*broker.Session{fresh}),
		"CommitPlacements": func() error {
			_, err := b.CommitPlacements(ctx, storetest.Place(fresh))
			return err
		}(),
		"UpdateSession": b.UpdateSession(ctx, "x", func(*broker.Session) error { return nil }),
		"DeleteSession": b.DeleteSession(ctx, "x"),
		"PurgeDeleted": func() error {
			_, err := b.PurgeDeleted(ctx, time.Now())
			return err
		}(),
		"UpsertServer": b.UpsertServer(ctx, storetest.NewServer("s-b", 0, 0, nil)),
		"DeleteServer": b.DeleteServer(ctx, "s-a"),
	}
	for name, err := range refused {
		if !errors.As(err, &le) {
			t.Errorf("%s through a NoSessionCache store beside the broker: got %v, want a *LockError", name, err)
		}
	}
	if got := storetest.MustListSessions(t, a, broker.SessionFilter{}); len(got) != 1 || got[0].ID != "x" {
		t.Errorf("after refused writes the broker lists %v", got)
	}

	// Once the broker closes, the file is free again.
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	storetest.MustInsertSessions(t, b, fresh)
	c := MustOpen(t, path)
	if got := storetest.MustListSessions(t, c, broker.SessionFilter{}); len(got) != 2 {
		t.Errorf("reopened store lists %d sessions, want 2", len(got))
	}
}

// TestStore_MirrorMatchesSQL applies random operations through a store with
// a session mirror and compares its answers, for random filters, with those of
// a NoSessionCache store (SQL) on the same file, and with those of a mirror
// loaded afresh at the end. Readers run alongside, for the race detector.
func TestStore_MirrorMatchesSQL(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	ops := 3000
	if testing.Short() {
		ops = 500
	}
	ctx := t.Context()
	path := tempPath(t)
	a := MustOpen(t, path)
	b := MustOpenWith(t, path, sqlite.Options{NoSessionCache: true})
	w := newWorkload(rand.New(rand.NewPCG(seed, 1)))

	stop := make(chan struct{})
	var readers sync.WaitGroup
	for i := range 2 {
		readers.Go(func() { readLoop(t, a, rand.New(rand.NewPCG(seed, uint64(i+2))), w.ids(), stop) })
	}
	for i := range ops {
		w.step(t, a)
		if i%25 == 24 {
			compareStores(t, a, b, w, 10)
			if err := a.CheckMirror(); err != nil {
				t.Fatalf("after %d operations: %v", i+1, err)
			}
		}
		if t.Failed() {
			break
		}
	}
	close(stop)
	readers.Wait()
	compareStores(t, a, b, w, 200)

	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	reloaded := MustOpen(t, path)
	if err := reloaded.CheckMirror(); err != nil {
		t.Fatal(err)
	}
	compareStores(t, reloaded, b, w, 200)
	all, err := b.ListSessions(ctx, broker.SessionFilter{})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d sessions at the end", len(all))
}

// exact compares sessions field by field: no equating nil and empty.
var exact = cmpopts.IgnoreUnexported(broker.Session{})

// compareStores checks n random filters and the counts against want (SQL).
func compareStores(t *testing.T, got, want *sqlite.Store, w *workload, n int) {
	t.Helper()
	ctx := t.Context()
	for range n {
		f := w.filter()
		g, err := got.ListSessions(ctx, f)
		if err != nil {
			t.Fatal(err)
		}
		x, err := want.ListSessions(ctx, f)
		if err != nil {
			t.Fatal(err)
		}
		if d := cmp.Diff(x, g, exact); d != "" {
			t.Fatalf("ListSessions(%+v) (-sql +mirror):\n%s", f, d)
		}
		id := w.id()
		gs, gerr := got.GetSession(ctx, id)
		xs, xerr := want.GetSession(ctx, id)
		if d := cmp.Diff(xs, gs, exact); d != "" || fmt.Sprint(gerr) != fmt.Sprint(xerr) {
			t.Fatalf("GetSession(%q) = %v (-sql +mirror):\n%s", id, gerr, d)
		}
	}
	gc, err := got.CountSessions(ctx)
	if err != nil {
		t.Fatal(err)
	}
	xc, err := want.CountSessions(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(xc, gc); d != "" {
		t.Fatalf("CountSessions (-sql +mirror):\n%s", d)
	}
	for _, srv := range wlServers {
		owner, skip := w.pick(wlOwners), w.id()
		m, q, ml, ql, found, err := got.Capacity(ctx, srv, owner, skip)
		if err != nil {
			t.Fatal(err)
		}
		if found && (m != q || ml != ql) {
			t.Fatalf("capacity of %q for %q without %q: mirror %+v %+v, capacitySQL %+v %+v", srv, owner, skip, ml, m, ql, q)
		}
	}
	gb, err := got.CountByState(ctx)
	if err != nil {
		t.Fatal(err)
	}
	xb, err := want.CountByState(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(xb, gb); d != "" {
		t.Fatalf("CountByState (-sql +mirror):\n%s", d)
	}
}

// readLoop lists sessions with random filters until stop closes, and checks
// that each answer is ordered and matches its filter.
func readLoop(t *testing.T, s *sqlite.Store, rng *rand.Rand, ids []string, stop <-chan struct{}) {
	w := newWorkload(rng)
	w.known, w.maxSeq = ids, 10000
	for {
		select {
		case <-stop:
			return
		default:
		}
		f := w.filter()
		list, err := s.ListSessions(context.Background(), f)
		if err != nil {
			t.Error(err)
			return
		}
		if f.Limit > 0 && len(list) > f.Limit {
			t.Errorf("ListSessions(%+v) returned %d", f, len(list))
		}
		for i, ss := range list {
			if i > 0 && list[i-1].Seq >= ss.Seq || ss.Seq <= f.AfterSeq ||
				f.Owner != "" && ss.Owner != f.Owner || f.ServerID != "" && ss.ServerID != f.ServerID ||
				f.Unplaced && ss.ServerID != "" || len(f.States) > 0 && !slices.Contains(f.States, ss.State) {
				t.Errorf("ListSessions(%+v) returned %+v at %d", f, ss, i)
				return
			}
			ss.Excluded = append(ss.Excluded, "scribble") // callers own what they get
			ss.Spec.AutorunFileArguments = append(ss.Spec.AutorunFileArguments, "scribble")
		}
		if _, err := s.CountSessions(context.Background()); err != nil {
			t.Error(err)
			return
		}
	}
}

var (
	wlServers = []string{"s0", "s1", "s2", "s3", "s4", "s5", "", "ghost"}
	wlOwners  = []string{"alice", "bob", "carol", "dave", "ëve", "bad\xffowner"}
	wlStates  = []string{broker.StateCreating, broker.StateReady, broker.StateDeleting, broker.StateDeleted, broker.StateUnknown, "ODD"}
	wlTypes   = []string{broker.TypeVirtual, broker.TypeConsole, "OTHER"}
	wlStrings = []string{"", "plain", "é ü", "bad\xffbytes", "nul\x00byte", "<&>\u2028", "\ufffd"}
	wlTags    = [][2]string{{"zone", "a"}, {"zone", "b"}, {"gpu", "yes"}, {"rack", "1"}, {"rack", ""}}
)

// workload makes random operations and filters over a small world, so that
// they collide often.
type workload struct {
	rng    *rand.Rand
	mu     sync.Mutex
	known  []string // session IDs ever used
	n      int
	maxSeq int64
}

func newWorkload(rng *rand.Rand) *workload { return &workload{rng: rng} }

func (w *workload) ids() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.known)
}

func (w *workload) pick(vs []string) string { return vs[w.rng.IntN(len(vs))] }

// id returns a known session ID, sometimes an unknown one.
func (w *workload) id() string {
	if len(w.known) == 0 || w.rng.IntN(10) == 0 {
		return "missing"
	}
	return w.known[w.rng.IntN(len(w.known))]
}

func (w *workload) newID() string {
	w.n++
	id := fmt.Sprintf("sess-%d", w.n)
	w.mu.Lock()
	w.known = append(w.known, id)
	w.mu.Unlock()
	return id
}

func (w *workload) time() time.Time {
	if w.rng.IntN(4) == 0 {
		return time.Time{}
	}
	return storetest.T0.Add(time.Duration(w.rng.Int64N(int64(time.Hour)))) // not truncated: the store keeps ms
}

func (w *workload) strings(max int) []string {
	var out []string
	switch w.rng.IntN(3) {
	case 0:
	case 1:
		out = []string{} // empty, not nil: stored as nothing
	default:
		for range 1 + w.rng.IntN(max) {
			out = append(out, w.pick(wlStrings))
		}
	}
	return out
}

func (w *workload) spec() broker.SessionSpec {
	if w.rng.IntN(3) == 0 {
		return broker.SessionSpec{}
	}
	return broker.SessionSpec{
		DcvGlEnabled:          w.rng.IntN(2) == 0,
		InitFile:              w.pick(wlStrings),
		AutorunFile:           w.pick(wlStrings),
		AutorunFileArguments:  w.strings(3),
		PermissionsFile:       w.pick(wlStrings),
		Requirements:          w.pick(wlStrings),
		EnqueueRequest:        w.rng.IntN(2) == 0,
		DisableRetryOnFailure: w.rng.IntN(2) == 0,
	}
}

func (w *workload) session(id string) *broker.Session {
	return &broker.Session{
		ID: id, Name: w.pick(wlStrings), Owner: w.pick(wlOwners), Type: w.pick(wlTypes), ServerID: w.pick(wlServers),
		State: w.pick(wlStates), Substate: w.pick([]string{"", broker.SubstatePlacing, "x"}), StateReason: w.pick(wlStrings),
		MaxConcurrentClients: w.rng.Int64N(5), StorageRoot: w.pick(wlStrings), CreationTime: w.time(),
		LastDisconnectionTime: w.time(), NumOfConnections: w.rng.Int64N(5), UpdatedAt: w.time(), Spec: w.spec(),
		Attempts: w.rng.IntN(4), Excluded: w.strings(3), Enqueued: w.rng.IntN(2) == 0, EnqueuedAt: w.time(),
	}
}

func (w *workload) tags() map[string]string {
	var m map[string]string
	for range w.rng.IntN(3) {
		if m == nil {
			m = map[string]string{}
		}
		kv := wlTags[w.rng.IntN(len(wlTags))]
		m[kv[0]] = kv[1]
	}
	return m
}

// filter returns a random filter over the workload's world.
func (w *workload) filter() broker.SessionFilter {
	var f broker.SessionFilter
	if w.rng.IntN(6) == 0 {
		for range 1 + w.rng.IntN(5) {
			f.IDs = append(f.IDs, w.id())
		}
	}
	if w.rng.IntN(3) == 0 {
		f.Owner = w.pick(append(wlOwners, "nobody"))
	}
	if w.rng.IntN(4) == 0 {
		f.ServerID = w.pick(wlServers[:len(wlServers)-1]) // not "": that is no filter
	}
	f.Unplaced = w.rng.IntN(5) == 0
	if w.rng.IntN(3) == 0 {
		for range 1 + w.rng.IntN(2) {
			f.States = append(f.States, w.pick(wlStates))
		}
	}
	if w.rng.IntN(4) == 0 {
		f.Tags = w.tags()
	}
	if w.rng.IntN(2) == 0 {
		f.AfterSeq = w.rng.Int64N(w.maxSeq+2) - 1
	}
	if w.rng.IntN(2) == 0 {
		f.Limit = w.rng.IntN(12) - 1
	}
	return f
}

func (w *workload) seen(ss ...*broker.Session) {
	for _, s := range ss {
		w.maxSeq = max(w.maxSeq, s.Seq)
	}
}

// step applies one random operation to s.
func (w *workload) step(t *testing.T, s *sqlite.Store) {
	t.Helper()
	ctx := t.Context()
	expected := func(op string, err error, allowed ...error) {
		t.Helper()
		if err == nil {
			return
		}
		for _, a := range allowed {
			if errors.Is(err, a) {
				return
			}
		}
		t.Fatalf("%s: %v", op, err)
	}
	switch op := w.rng.IntN(100); {
	case op < 8:
		id := w.pick(wlServers[:6])
		srv := storetest.NewServer(id, w.rng.IntN(4), w.rng.IntN(3), w.tags())
		expected("UpsertServer", s.UpsertServer(ctx, srv))
	case op < 10:
		expected("DeleteServer", s.DeleteServer(ctx, w.pick(wlServers)))
	case op < 30:
		var batch []*broker.Session
		for range 1 + w.rng.IntN(5) {
			id := w.newID()
			if w.rng.IntN(15) == 0 {
				id = w.id() // may exist: the whole batch fails
			}
			batch = append(batch, w.session(id))
		}
		err := s.InsertSessions(ctx, batch)
		expected("InsertSessions", err, broker.ErrConflict)
		if err == nil {
			w.seen(batch...)
		}
	case op < 50:
		var ps []broker.Placement
		for range 1 + w.rng.IntN(4) {
			if w.rng.IntN(2) == 0 {
				ps = append(ps, broker.Placement{Session: w.session(w.newID()), Insert: true})
			} else {
				ps = append(ps, broker.Placement{Session: w.session(w.id())})
			}
		}
		_, err := s.CommitPlacements(ctx, ps)
		expected("CommitPlacements", err)
		for _, p := range ps {
			w.seen(p.Session)
		}
	case op < 80:
		errAbort := errors.New("abort")
		n := w.session("")
		change := func(ss *broker.Session) error {
			for range 1 + w.rng.IntN(4) {
				switch w.rng.IntN(10) {
				case 0:
					ss.Owner = n.Owner
				case 1:
					ss.ServerID = n.ServerID
				case 2:
					ss.State, ss.UpdatedAt = n.State, n.UpdatedAt
				case 3:
					ss.Excluded = append(ss.Excluded, n.Excluded...)
				case 4:
					ss.Spec = n.Spec
				case 5:
					ss.Spec.AutorunFileArguments = append(ss.Spec.AutorunFileArguments, n.Name)
				case 6:
					ss.Name, ss.StateReason, ss.Substate = n.Name, n.StateReason, n.Substate
				case 7:
					ss.Type, ss.Attempts, ss.Enqueued = n.Type, n.Attempts, n.Enqueued
				case 8:
					ss.CreationTime, ss.LastDisconnectionTime, ss.EnqueuedAt = n.CreationTime, n.LastDisconnectionTime, n.EnqueuedAt
				default:
					ss.ID, ss.Seq = "renamed", 1 // ignored: fn cannot change them
				}
			}
			if w.rng.IntN(10) == 0 {
				return errAbort
			}
			return nil
		}
		if op < 65 {
			expected("UpdateSession", s.UpdateSession(ctx, w.id(), change), errAbort, broker.ErrNotFound)
			break
		}
		// A batch, as agents' reports are written: some items change only
		// the columns a session's life changes (updateLiveSQL).
		ids := map[string]bool{}
		for range 1 + w.rng.IntN(5) {
			ids[w.id()] = true
		}
		_, err := s.UpdateSessions(ctx, slices.Collect(maps.Keys(ids)), func(ss *broker.Session) error {
			if w.rng.IntN(2) == 0 {
				ss.State, ss.Substate, ss.StateReason, ss.UpdatedAt = n.State, n.Substate, n.StateReason, n.UpdatedAt
				ss.NumOfConnections, ss.LastDisconnectionTime = n.NumOfConnections, n.LastDisconnectionTime
				return nil
			}
			return change(ss)
		})
		expected("UpdateSessions", err)
	case op < 95:
		expected("DeleteSession", s.DeleteSession(ctx, w.id()), broker.ErrNotFound)
	default:
		_, err := s.PurgeDeleted(ctx, storetest.T0.Add(time.Duration(w.rng.Int64N(int64(time.Hour)))))
		expected("PurgeDeleted", err)
	}
}

// TestStore_LoadMirror checks that a mirror loaded at Open answers as the one
// built by writes did, for a store large enough to compact its indexes.
func TestStore_LoadMirror(t *testing.T) {
	ctx := t.Context()
	path := filepath.Join(t.TempDir(), "berth.db")
	a := MustOpen(t, path)
	storetest.MustUpsertServers(t, a, storetest.NewServer("s-a", 0, 0, map[string]string{"zone": "a"}))
	var batch []*broker.Session
	for i := range 2000 {
		server := "s-a"
		if i%3 == 0 {
			server = ""
		}
		batch = append(batch, storetest.NewSession(fmt.Sprintf("s%04d", i), fmt.Sprintf("o%d", i%7), broker.TypeVirtual, server, broker.StateReady))
	}
	storetest.MustInsertSessions(t, a, batch...)
	for i := 0; i < 2000; i += 2 {
		if err := a.DeleteSession(ctx, fmt.Sprintf("s%04d", i)); err != nil {
			t.Fatal(err)
		}
	}
	for i := 1; i < 2000; i += 6 { // place some of the queue
		if err := a.UpdateSession(ctx, fmt.Sprintf("s%04d", i), func(ss *broker.Session) error {
			ss.ServerID = "s-a"
			return nil
		}); err != nil && !errors.Is(err, broker.ErrNotFound) {
			t.Fatal(err)
		}
	}
	if err := a.CheckMirror(); err != nil {
		t.Fatal(err)
	}
	filters := []broker.SessionFilter{{}, {Owner: "o3"}, {Unplaced: true}, {ServerID: "s-a", AfterSeq: 700, Limit: 50},
		{Tags: map[string]string{"zone": "a"}, Owner: "o1"}}
	before := make([][]*broker.Session, len(filters))
	for i, f := range filters {
		before[i] = storetest.MustListSessions(t, a, f)
	}
	a.Close()
	b := MustOpen(t, path)
	if err := b.CheckMirror(); err != nil {
		t.Fatal(err)
	}
	for i, f := range filters {
		if d := cmp.Diff(before[i], storetest.MustListSessions(t, b, f), exact); d != "" {
			t.Errorf("ListSessions(%+v) after reopening (-before +after):\n%s", f, d)
		}
	}
}

// TestStore_Close checks that a closed store does not answer from its mirror.
func TestStore_Close(t *testing.T) {
	s := MustOpen(t, tempPath(t))
	storetest.MustInsertSessions(t, s, storetest.NewSession("a", "alice", broker.TypeVirtual, "", broker.StateReady))
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetSession(t.Context(), "a"); err == nil {
		t.Error("GetSession on a closed store succeeded")
	}
	if _, err := s.ListSessions(t.Context(), broker.SessionFilter{}); err == nil {
		t.Error("ListSessions on a closed store succeeded")
	}
	if err := s.DeleteSession(t.Context(), "a"); err == nil {
		t.Error("DeleteSession on a closed store succeeded")
	}
}

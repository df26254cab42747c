package sqlite_test

import (
	"context"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/berth-dev/berth/internal/broker"
	"github.com/berth-dev/berth/internal/broker/storetest"
	"github.com/berth-dev/berth/internal/sqlite"
)

func TestStore_BrokerContract_LoadInBackground(t *testing.T) {
	storetest.Run(t, func(t *testing.T) broker.Store {
		return MustOpenWith(t, tempPath(t), sqlite.Options{LoadInBackground: true})
	})
}

// seedLoadStore writes servers and sessions into a store at path and closes
// it, for a later open to load.
func seedLoadStore(t *testing.T, path string) {
	t.Helper()
	s, err := sqlite.Open(t.Context(), path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	storetest.MustUpsertServers(t, s, storetest.NewServer("s1", 4, 4, nil), storetest.NewServer("s2", 4, 4, nil))
	storetest.MustInsertSessions(t, s,
		storetest.NewSession("a", "alice", broker.TypeVirtual, "s1", broker.StateReady),
		storetest.NewSession("b", "bob", broker.TypeVirtual, "s2", broker.StateReady),
		storetest.NewSession("c", "carol", broker.TypeVirtual, "", broker.StateCreating),
	)
}

// TestStore_LoadInBackground opens a store whose load is held back: reads
// answer from SQL meanwhile, a write waits for the load and lands in both the
// database and the mirror, and the mirror serves pages once loaded.
func TestStore_LoadInBackground(t *testing.T) {
	path := tempPath(t)
	seedLoadStore(t, path)
	release := make(chan struct{})
	sqlite.HoldLoad(t, release)
	s := MustOpenWith(t, path, sqlite.Options{LoadInBackground: true})
	ctx := t.Context()
	select {
	case <-s.Loaded():
		t.Fatal("Loaded is closed while the load is held")
	default:
	}

	ids := func(ss []*broker.Session) []string {
		var out []string
		for _, x := range ss {
			out = append(out, x.ID)
		}
		return out
	}
	if got := ids(storetest.MustListSessions(t, s, broker.SessionFilter{})); !cmp.Equal(got, []string{"a", "b", "c"}) {
		t.Errorf("while loading, ListSessions = %v", got)
	}
	if got := ids(storetest.MustListSessions(t, s, broker.SessionFilter{ServerID: "s2"})); !cmp.Equal(got, []string{"b"}) {
		t.Errorf("while loading, ListSessions(s2) = %v", got)
	}
	if ss, err := s.GetSession(ctx, "a"); err != nil || ss.Owner != "alice" {
		t.Errorf("while loading, GetSession(a) = %+v, %v", ss, err)
	}
	counts, err := s.CountSessions(ctx)
	if err != nil || counts["s1"].Virtual != 1 || counts["s2"].Virtual != 1 {
		t.Errorf("while loading, CountSessions = %+v, %v", counts, err)
	}
	if _, memos, err := s.ListSessionsMemo(ctx, broker.SessionFilter{}, nil, nil); err != nil || len(memos) != 0 {
		t.Errorf("while loading, ListSessionsMemo gave %d memos, %v; want none (read from SQL)", len(memos), err)
	}

	wrote := make(chan error, 1)
	go func() {
		wrote <- s.UpdateSession(ctx, "b", func(ss *broker.Session) error {
			ss.State = broker.StateDeleting
			return nil
		})
	}()
	close(release)
	if err := <-wrote; err != nil {
		t.Fatalf("UpdateSession during the load: %v", err)
	}
	<-s.Loaded()
	if err := s.LoadError(); err != nil {
		t.Fatalf("LoadError = %v", err)
	}
	if err := s.CheckMirror(); err != nil {
		t.Fatalf("after the load: %v", err)
	}
	got, memos, err := s.ListSessionsMemo(ctx, broker.SessionFilter{}, nil, nil)
	if err != nil || len(memos) != 3 {
		t.Fatalf("after the load, ListSessionsMemo gave %d memos, %v; want 3 (from the mirror)", len(memos), err)
	}
	if got[1].ID != "b" || got[1].State != broker.StateDeleting {
		t.Errorf("after the load, b = %+v; want the write made during the load", got[1])
	}
	// The mirror agrees with the database.
	raw := MustOpenWith(t, path, sqlite.Options{NoSessionCache: true})
	want := storetest.MustListSessions(t, raw, broker.SessionFilter{})
	if diff := cmp.Diff(want, storetest.MustListSessions(t, s, broker.SessionFilter{}), cmpopts.EquateEmpty()); diff != "" {
		t.Errorf("mirror against the database (-sql +mirror):\n%s", diff)
	}
}

// TestStore_LoadInBackground_Close closes a store whose load is held back:
// Close ends the load and returns.
func TestStore_LoadInBackground_Close(t *testing.T) {
	path := tempPath(t)
	seedLoadStore(t, path)
	release := make(chan struct{})
	sqlite.HoldLoad(t, release) // released only for the second store
	s, err := sqlite.OpenWith(t.Context(), path, sqlite.Options{LoadInBackground: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	select {
	case <-s.Loaded():
	default:
		t.Error("Loaded is open after Close")
	}
	if err := s.LoadError(); err == nil || !strings.Contains(err.Error(), "load sessions") {
		t.Errorf("LoadError after a load cut short = %v, want the load's error", err)
	}
	if _, err := s.ListSessions(context.Background(), broker.SessionFilter{}); err == nil {
		t.Error("ListSessions after Close succeeded")
	}
	// The file is free again: a new store opens and loads it.
	close(release)
	s2 := MustOpenWith(t, path, sqlite.Options{LoadInBackground: true})
	<-s2.Loaded()
	if err := s2.CheckMirror(); err != nil {
		t.Fatal(err)
	}
}

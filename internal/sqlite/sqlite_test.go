package sqlite_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/berth-dev/berth/internal/broker"
	"github.com/berth-dev/berth/internal/broker/storetest"
	"github.com/berth-dev/berth/internal/oauth"
	"github.com/berth-dev/berth/internal/oauth/oauthtest"
	"github.com/berth-dev/berth/internal/sqlite"
)

// MustOpen opens a store (with its session mirror) on path and closes it when
// tb ends.
func MustOpen(tb testing.TB, path string) *sqlite.Store {
	tb.Helper()
	return MustOpenWith(tb, path, sqlite.Options{})
}

// MustOpenWith opens a store on path with opts and closes it when tb ends.
func MustOpenWith(tb testing.TB, path string, opts sqlite.Options) *sqlite.Store {
	tb.Helper()
	s, err := sqlite.OpenWith(tb.Context(), path, opts)
	if err != nil {
		tb.Fatalf("OpenWith(%+v): %v", opts, err)
	}
	tb.Cleanup(func() {
		if err := s.Close(); err != nil {
			tb.Errorf("Close: %v", err)
		}
	})
	return s
}

func tempPath(tb testing.TB) string { return filepath.Join(tb.TempDir(), "berth.db") }

func TestStore_BrokerContract(t *testing.T) {
	storetest.Run(t, func(t *testing.T) broker.Store { return MustOpen(t, tempPath(t)) })
}

func TestStore_BrokerContract_NoSessionCache(t *testing.T) {
	storetest.Run(t, func(t *testing.T) broker.Store {
		return MustOpenWith(t, tempPath(t), sqlite.Options{NoSessionCache: true})
	})
}

func TestStore_OAuthContract(t *testing.T) {
	oauthtest.RunStore(t, func(t *testing.T) oauth.Store { return MustOpen(t, tempPath(t)) })
}

func TestOpen_FileMode(t *testing.T) {
	path := tempPath(t)
	s := MustOpen(t, path)
	if _, err := s.Setting(t.Context(), "x", "y"); err != nil { // make sure the WAL exists
		t.Fatal(err)
	}
	for _, p := range []string{path, path + "-wal", path + "-shm"} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if mode := fi.Mode().Perm(); mode != 0o600 {
			t.Errorf("%s has mode %v, want 0600", filepath.Base(p), mode)
		}
	}
}

// The page caches are bounded as documented: the writer's and each
// reader's.
func TestOpen_CacheBounds(t *testing.T) {
	s := MustOpen(t, tempPath(t))
	w, r, err := s.CacheSizes(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name      string
		got, want int
	}{
		{"writer", w, -sqlite.WriterCacheKiB},
		{"reader", r, -sqlite.ReaderCacheKiB},
	} {
		if tt.got != tt.want {
			t.Errorf("%s: cache_size %d, want %d", tt.name, tt.got, tt.want)
		}
	}
}

func TestOpen_Migrations(t *testing.T) {
	path := tempPath(t)
	s, err := sqlite.Open(t.Context(), path)
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	s = MustOpen(t, path) // a second Open applies nothing again

	db, err := sql.Open("sqlite", "file:"+path+"?_pragma=busy_timeout(5000)&mode=ro")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var n, version int
	if err := db.QueryRow(`SELECT count(*), max(version) FROM schema_migrations`).Scan(&n, &version); err != nil {
		t.Fatal(err)
	}
	if n != 10 || version != 10 { // 0004 templates and shares, 0005 the portal (issue 16), 0006 lifetimes, 0007 template limits (issue 17), 0008 events, 0009 audit, 0010 webhooks (issue 18)
		t.Errorf("schema_migrations has %d rows up to version %d, want 10 up to 10", n, version)
	}
	var mode string
	if err := db.QueryRow(`PRAGMA journal_mode`).Scan(&mode); err != nil {
		t.Fatal(err)
	}
	if mode != "wal" {
		t.Errorf("journal_mode = %q, want wal", mode)
	}
	if err := s.Ping(t.Context()); err != nil {
		t.Fatal(err)
	}
}

func TestOpen_NewerSchema(t *testing.T) {
	path := tempPath(t)
	s, err := sqlite.Open(t.Context(), path)
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(`INSERT INTO schema_migrations (version, name, applied_at) VALUES (9999, '9999_future.sql', 0)`); err != nil {
		t.Fatal(err)
	}
	db.Close()
	if s, err := sqlite.Open(t.Context(), path); err == nil {
		s.Close()
		t.Fatal("Open of a database from a newer version succeeded")
	}
}

// TestStore_Reopen checks that everything survives Close and Open.
func TestStore_Reopen(t *testing.T) {
	ctx := t.Context()
	path := tempPath(t)
	s, err := sqlite.Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}

	open := storetest.NewServer("s-open", 4, 2, map[string]string{"zone": "a"})
	closed := storetest.NewServer("s-closed", 0, 0, nil)
	storetest.MustUpsertServers(t, s, open, closed)
	if err := s.SetServerOpen(ctx, "s-closed", false); err != nil {
		t.Fatal(err)
	}
	sessions := []*broker.Session{
		storetest.NewSession("a", "alice", broker.TypeVirtual, "s-open", broker.StateReady),
		storetest.NewSession("b", "bob", broker.TypeConsole, "s-open", broker.StateCreating),
		storetest.NewSession("c", "carol", broker.TypeVirtual, "", broker.StateCreating),
	}
	storetest.MustInsertSessions(t, s, sessions...)
	if _, err := s.Setting(ctx, "cluster-id", "abc"); err != nil {
		t.Fatal(err)
	}
	client := oauthtest.NewClient("api-1", oauth.KindAPI, storetest.T0)
	oauthtest.MustCreateClients(t, s, client)
	for i, id := range []string{"k1", "k2"} {
		if err := s.AddSigningKey(ctx, oauthtest.NewKey(id, storetest.T0.Add(time.Duration(i)*time.Hour))); err != nil {
			t.Fatal(err)
		}
	}
	st := oauthtest.NewStatement("st-1", "c3RhdGVtZW50", storetest.T0)
	if err := s.CreateSoftwareStatement(ctx, st); err != nil {
		t.Fatal(err)
	}

	type snapshot struct {
		Servers    []*broker.Server
		Sessions   []*broker.Session
		Clients    []*oauth.Client
		Keys       []*oauth.SigningKey
		Statements []*oauth.SoftwareStatement
		Counts     map[string]broker.Counts
	}
	take := func(s *sqlite.Store) snapshot {
		t.Helper()
		var snap snapshot
		var err error
		if snap.Servers, err = s.ListServers(ctx, broker.ServerFilter{}); err != nil {
			t.Fatal(err)
		}
		snap.Sessions = storetest.MustListSessions(t, s, broker.SessionFilter{})
		if snap.Clients, err = s.ListClients(ctx, oauth.KindAPI); err != nil {
			t.Fatal(err)
		}
		snap.Keys = oauthtest.MustSigningKeys(t, s)
		snap.Statements = oauthtest.MustStatements(t, s)
		if snap.Counts, err = s.CountSessions(ctx); err != nil {
			t.Fatal(err)
		}
		return snap
	}
	before := take(s)
	if len(before.Servers) != 2 || len(before.Sessions) != 3 || len(before.Clients) != 1 || len(before.Keys) != 2 || len(before.Statements) != 1 {
		t.Fatalf("unexpected snapshot before reopening: %+v", before)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s = MustOpen(t, path)
	after := take(s)
	opts := []cmp.Option{cmpopts.EquateEmpty(), cmpopts.IgnoreUnexported(broker.Server{}, broker.Session{})}
	if d := cmp.Diff(before, after, opts...); d != "" {
		t.Errorf("state after reopening (-before +after):\n%s", d)
	}
	if storetest.MustGetServer(t, s, "s-closed").Open {
		t.Error("closed server open after reopening")
	}
	if v, err := s.Setting(ctx, "cluster-id", "other"); err != nil || v != "abc" {
		t.Errorf("Setting after reopening = %q, %v; want abc", v, err)
	}
	got := storetest.MustListSessions(t, s, broker.SessionFilter{Tags: map[string]string{"zone": "a"}})
	if len(got) != 2 {
		t.Errorf("%d sessions by tag after reopening, want 2", len(got))
	}
	// Seq keeps growing after a reopen.
	d := storetest.NewSession("d", "dave", broker.TypeVirtual, "", broker.StateCreating)
	storetest.MustInsertSessions(t, s, d)
	if d.Seq <= before.Sessions[2].Seq {
		t.Errorf("Seq after reopening %d, want > %d", d.Seq, before.Sessions[2].Seq)
	}
}

// TestStore_WriteDuringRead checks that an open read does not block writes.
func TestStore_WriteDuringRead(t *testing.T) {
	ctx := t.Context()
	s := MustOpen(t, tempPath(t))
	var batch []*broker.Session
	for i := range 200 {
		batch = append(batch, storetest.NewSession(fmt.Sprint(i), "alice", broker.TypeVirtual, "", broker.StateReady))
	}
	storetest.MustInsertSessions(t, s, batch...)

	db, err := sql.Open("sqlite", "file:"+s.Path()+"?_pragma=busy_timeout(5000)")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	rows, err := db.QueryContext(ctx, `SELECT id FROM sessions`) // holds a read transaction open
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	if !rows.Next() {
		t.Fatal("no rows")
	}

	wctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if err := s.InsertSessions(wctx, []*broker.Session{storetest.NewSession("late", "bob", broker.TypeVirtual, "", broker.StateReady)}); err != nil {
		t.Fatalf("write during a long read: %v", err)
	}
	if _, err := s.GetSession(ctx, "late"); err != nil {
		t.Fatal(err)
	}
}

// TestStore_TwoHandles writes concurrently through two stores on one file, as
// the broker (sessions) and its admin commands (clients, settings) do.
func TestStore_TwoHandles(t *testing.T) {
	path := tempPath(t)
	a, b := MustOpen(t, path), MustOpenWith(t, path, sqlite.Options{NoSessionCache: true})
	storetest.MustUpsertServers(t, a, storetest.NewServer("s-a", 0, 0, nil))
	var wg sync.WaitGroup
	errs := make(chan error, 150)
	for w := range 4 {
		wg.Go(func() {
			for i := range 25 {
				ss := storetest.NewSession(fmt.Sprintf("w%d-%d", w, i), "alice", broker.TypeVirtual, "s-a", broker.StateCreating)
				cerrs, err := a.CommitPlacements(t.Context(), storetest.Place(ss))
				if err == nil {
					err = cerrs[0]
				}
				if err == nil {
					err = a.UpdateSession(t.Context(), ss.ID, func(ss *broker.Session) error {
						ss.State = broker.StateReady
						return nil
					})
				}
				errs <- err
			}
		})
	}
	for w := range 2 {
		wg.Go(func() {
			for i := range 25 {
				c := oauthtest.NewClient(fmt.Sprintf("admin%d-%d", w, i), oauth.KindAPI, storetest.T0)
				err := b.CreateClient(t.Context(), c)
				if err == nil {
					_, err = b.Setting(t.Context(), c.ID, "v")
				}
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("concurrent write through two handles: %v", err)
		}
	}
	for _, s := range []*sqlite.Store{a, b} {
		counts, err := s.CountByState(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		if counts[broker.StateReady] != 100 {
			t.Errorf("CountByState = %v, want 100 READY", counts)
		}
		clients, err := s.ListClients(t.Context(), oauth.KindAPI)
		if err != nil {
			t.Fatal(err)
		}
		if len(clients) != 50 {
			t.Errorf("%d clients, want 50", len(clients))
		}
	}
}

func TestStore_ErrorsWrapContext(t *testing.T) {
	s := MustOpen(t, tempPath(t))
	_, err := s.GetSession(t.Context(), "nope")
	if !errors.Is(err, broker.ErrNotFound) || err.Error() != `get session "nope": not found` {
		t.Errorf("GetSession error = %q", err)
	}
}

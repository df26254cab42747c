package broker_test

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"math/rand/v2"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/berth-dev/berth/internal/broker"
	"github.com/berth-dev/berth/internal/poll"
	"github.com/berth-dev/berth/internal/postgres"
	"github.com/berth-dev/berth/internal/postgres/pgtest"
	"github.com/berth-dev/berth/internal/sqlite"
)

// recountStore is a store that counts the reads of the session counts.
type recountStore struct {
	broker.Store
	reads atomic.Int64
}

func (s *recountStore) CountByState(ctx context.Context) (map[string]int, error) {
	s.reads.Add(1)
	return s.Store.CountByState(ctx)
}

// flakyAgents accepts every create except those of owner "fail", which it
// refuses, so that the broker retries them on another server.
type flakyAgents struct{}

func (flakyAgents) Dispatch(ctx context.Context, serverID string, cmd broker.Command) (*broker.Result, error) {
	if cmd.Kind == broker.CommandCreate && cmd.Create.Owner == "fail" {
		return nil, &broker.CommandError{Reason: "no such user"}
	}
	return &broker.Result{}, nil
}

// TestCounts_FollowStore runs a random sequence of creates (placed, queued,
// refused, failing and retried), agent reports (READY, ended, missing),
// deletes (with and without Force) and purges against a broker on a real
// store, and checks after each step that the counts the broker keeps equal
// a recount in the store, and that it kept them without reading the store
// again.
func TestCounts_FollowStore(t *testing.T) {
	stores := []struct {
		name string
		open func(t *testing.T) broker.Store
	}{
		{"sqlite", func(t *testing.T) broker.Store {
			st, err := sqlite.Open(t.Context(), filepath.Join(t.TempDir(), "berth.db"))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { st.Close() })
			return st
		}},
		{"postgres", func(t *testing.T) broker.Store {
			st, err := postgres.Open(t.Context(), pgtest.DSN(t), nil)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { st.Close() })
			return st
		}},
	}
	for _, tt := range stores {
		t.Run(tt.name, func(t *testing.T) {
			for seed := range uint64(3) {
				t.Run(fmt.Sprint("seed=", seed), func(t *testing.T) {
					countsFollowStore(t, tt.open(t), seed)
				})
			}
		})
	}
}

func countsFollowStore(t *testing.T, base broker.Store, seed uint64) {
	ctx := t.Context()
	st := &recountStore{Store: base}
	svc, err := broker.New(ctx, st, flakyAgents{}, nil, broker.Config{
		BrokerID: "b1", Retries: 1, DeletedRetention: time.Millisecond, QueueMaxSize: 5,
	}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	servers := []struct {
		id          string
		os          string
		max, perUsr int
	}{{"s0", "linux", 0, 0}, {"s1", "linux", 3, 0}, {"s2", "linux", 0, 1}, {"s3", "windows", 0, 0}}
	for _, srv := range servers {
		info := broker.ServerInfo{Hostname: srv.id, Healthy: true, MaxVirtualSessions: srv.max, MaxConcurrentSessionsPerUser: srv.perUsr,
			Host: broker.Host{OSFamily: srv.os}}
		if err := svc.AgentConnected(ctx, "", srv.id, info, nil); err != nil {
			t.Fatal(err)
		}
	}
	rctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() { _ = svc.Run(rctx) })
	t.Cleanup(func() { cancel(); wg.Wait() })

	// agree waits until the kept counts equal a recount in the store (the
	// creates and retries run in the background).
	agree := func(step string) {
		t.Helper()
		var diff string
		ok := func() bool {
			servers, byState, queued, loaded := svc.KeptCounts()
			if !loaded {
				diff = "not loaded"
				return false
			}
			wantServers, err := base.CountSessions(ctx)
			if err != nil {
				t.Fatal(err)
			}
			maps.DeleteFunc(wantServers, func(_ string, c broker.Counts) bool { return c.Virtual == 0 && c.Console == 0 })
			wantStates, err := base.CountByState(ctx)
			if err != nil {
				t.Fatal(err)
			}
			q, err := base.ListSessions(ctx, broker.SessionFilter{Unplaced: true, States: []string{broker.StateCreating}})
			if err != nil {
				t.Fatal(err)
			}
			diff = cmp.Diff(wantServers, servers) + cmp.Diff(wantStates, byState) + cmp.Diff(len(q), queued)
			return diff == ""
		}
		defer func() {
			if diff != "" {
				t.Logf("kept counts differ from the store (-store +kept):\n%s", diff)
			}
		}()
		poll.Until(t, 10*time.Second, "kept counts equal to the store after "+step, ok)
	}
	agree("start")
	reads := st.reads.Load()

	rng := rand.New(rand.NewPCG(seed, 14))
	owners := []string{"ann", "bob", "cid", "fail"}
	for step := range 60 {
		var what string
		switch op := rng.IntN(10); {
		case op < 4: // create
			n := 1 + rng.IntN(4)
			reqs := make([]broker.CreateRequest, n)
			for i := range reqs {
				reqs[i] = broker.CreateRequest{Name: "d", Owner: owners[rng.IntN(len(owners))], Type: broker.TypeVirtual,
					EnqueueRequest: rng.IntN(3) == 0, Requirements: []string{"", "", "server:Hostname = 's1'", "server:Hostname = 's2'"}[rng.IntN(4)]}
				if rng.IntN(6) == 0 {
					reqs[i].Type, reqs[i].Requirements = broker.TypeConsole, ""
				}
			}
			if _, err := svc.CreateSessions(ctx, reqs); err != nil {
				t.Fatal(err)
			}
			what = fmt.Sprintf("create %d", n)
		case op < 7: // an agent's full report: its sessions READY, one ended, one missing
			srv := servers[rng.IntN(len(servers))].id
			ss, err := base.ListSessions(ctx, broker.SessionFilter{ServerID: srv, States: []string{broker.StateCreating, broker.StateReady}})
			if err != nil {
				t.Fatal(err)
			}
			var reports []broker.SessionReport
			for i, x := range ss {
				r := broker.SessionReport{ID: x.ID, Name: x.Name, Owner: x.Owner, Type: x.Type, State: broker.StateReady}
				switch {
				case i == 0 && rng.IntN(3) == 0:
					continue // gone from the host
				case i == 1 && rng.IntN(3) == 0:
					r.State = broker.StateDeleted
				}
				reports = append(reports, r)
			}
			if err := svc.AgentUpdate(ctx, srv, nil, reports); err != nil {
				t.Fatal(err)
			}
			what = "report of " + srv
		case op < 9: // delete
			ss, err := base.ListSessions(ctx, broker.SessionFilter{States: []string{broker.StateCreating, broker.StateReady}})
			if err != nil {
				t.Fatal(err)
			}
			if len(ss) == 0 {
				continue
			}
			x := ss[rng.IntN(len(ss))]
			svc.DeleteSessions(ctx, []broker.DeleteRequest{{SessionID: x.ID, Owner: x.Owner, Force: rng.IntN(2) == 0}})
			what = "delete " + x.ID
		default:
			svc.ExpireNow(ctx)
			what = "purge"
		}
		agree(fmt.Sprintf("step %d (%s)", step, what))
	}
	if n := st.reads.Load() - reads; n != 0 {
		t.Errorf("the broker read the counts from the store %d times after the first read", n)
	}
}

// slowCountStore holds its first CountSessions until release is closed, as
// a count over many sessions on PostgreSQL takes a while.
type slowCountStore struct {
	broker.Store
	release chan struct{}
	calls   atomic.Int64
}

func (s *slowCountStore) CountSessions(ctx context.Context) (map[string]broker.Counts, error) {
	if s.calls.Add(1) == 1 {
		select {
		case <-s.release:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	return s.Store.CountSessions(ctx)
}

// TestCounts_LoadInBackground: New reads no counts; Run reads them in the
// background; a request before that read is done waits for it briefly and
// then counts in the store itself; once the read is done the counts are
// kept.
func TestCounts_LoadInBackground(t *testing.T) {
	if testing.Short() {
		t.Skip("waits out the 2 s a request waits for the first count")
	}
	ctx := t.Context()
	base, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "berth.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { base.Close() })
	now := time.Now().UTC().Truncate(time.Millisecond)
	if err := base.UpsertServer(ctx, &broker.Server{ID: "s0", Open: true, LastSeen: now, CreatedAt: now, Info: broker.ServerInfo{Healthy: true}}); err != nil {
		t.Fatal(err)
	}
	if err := base.InsertSessions(ctx, []*broker.Session{{ID: "x1", Name: "d", Owner: "ann", Type: broker.TypeVirtual, ServerID: "s0",
		State: broker.StateReady, CreationTime: now, UpdatedAt: now}}); err != nil {
		t.Fatal(err)
	}
	st := &slowCountStore{Store: base, release: make(chan struct{})}
	svc, err := broker.New(ctx, st, flakyAgents{}, nil, broker.Config{BrokerID: "b1"}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	if n := st.calls.Load(); n != 0 {
		t.Fatalf("New counted sessions %d times; the count belongs in the background", n)
	}
	rctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() { _ = svc.Run(rctx) })
	t.Cleanup(func() { cancel(); wg.Wait() })
	poll.Until(t, 10*time.Second, "Run starts counting", func() bool { return st.calls.Load() == 1 })

	// The background count is held: the request counts in the store.
	views, _, err := svc.DescribeServers(ctx, nil, 0, "")
	if err != nil || len(views) != 1 || views[0].VirtualSessions != 1 {
		t.Fatalf("DescribeServers before the counts were read: %+v, %v", views, err)
	}
	if _, _, _, loaded := svc.KeptCounts(); loaded {
		t.Fatal("counts loaded while their read is held")
	}
	close(st.release)
	poll.Until(t, 10*time.Second, "counts read in the background", func() bool {
		_, _, _, loaded := svc.KeptCounts()
		return loaded
	})
	calls := st.calls.Load()
	stats, err := svc.Stats(ctx)
	if err != nil || stats.Virtual != 1 || stats.ByState[broker.StateReady] != 1 {
		t.Fatalf("Stats: %+v, %v", stats, err)
	}
	if _, _, err := svc.DescribeServers(ctx, nil, 0, ""); err != nil {
		t.Fatal(err)
	}
	if n := st.calls.Load(); n != calls {
		t.Errorf("requests counted in the store %d times once the counts were kept", n-calls)
	}
}

// TestCounts_NoRefusalOnDoubleCount: a create that commits while the first
// read of the counts runs is counted twice until the next read (the read
// saw it and the change is replayed onto it). A broker alone on its store
// must not refuse a session for want of room on such counts: it counts in
// the store first.
func TestCounts_NoRefusalOnDoubleCount(t *testing.T) {
	if testing.Short() {
		t.Skip("waits out the 2 s a request waits for the first count")
	}
	st := &slowCountStore{Store: openEventsSQLite(t), release: make(chan struct{})}
	svc := startQuotaBroker(t, st, broker.Config{BrokerID: "b1"}, "s1", 2)
	poll.Until(t, 10*time.Second, "Run starts counting", func() bool { return st.calls.Load() == 1 })
	if res := create(t, svc, broker.CreateRequest{Owner: "ann"}); res.FailureReason != "" {
		t.Fatalf("first create: %s", res.FailureReason)
	}
	close(st.release) // the read now sees the session, and replays its change
	poll.Until(t, 10*time.Second, "counts read", func() bool {
		_, _, _, loaded := svc.KeptCounts()
		return loaded
	})
	if kept, _, _, _ := svc.KeptCounts(); kept["s1"].Virtual != 2 {
		t.Fatalf("kept counts %+v: the test wants the session counted twice", kept)
	}
	if res := create(t, svc, broker.CreateRequest{Owner: "bob"}); res.FailureReason != "" {
		t.Errorf("a create with room for it refused on counts that counted a session twice: %s", res.FailureReason)
	}
}

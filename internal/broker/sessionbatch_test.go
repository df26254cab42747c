package broker_test

import (
	"context"
	"log/slog"
	"maps"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/berth-dev/berth/internal/broker"
	"github.com/berth-dev/berth/internal/poll"
	"github.com/berth-dev/berth/internal/sqlite"
)

// batchStore is a store that records the IDs of each UpdateSessions
// transaction; while hold is set, the first one waits until hold closes,
// as when the store's writer is busy.
type batchStore struct {
	broker.Store
	mu      sync.Mutex
	txs     [][]string
	hold    chan struct{}
	entered chan struct{}
}

func (s *batchStore) UpdateSessions(ctx context.Context, ids []string, fn func(*broker.Session) error) ([]error, error) {
	s.mu.Lock()
	s.txs = append(s.txs, slices.Clone(ids))
	hold := s.hold
	s.hold = nil
	s.mu.Unlock()
	if hold != nil {
		close(s.entered)
		<-hold
	}
	return s.Store.UpdateSessions(ctx, ids, fn)
}

// transactions returns the IDs of every UpdateSessions call so far.
func (s *batchStore) transactions() [][]string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.txs)
}

// TestSessionChanges_GroupCommit: the session changes of several agents
// that arrive while a transaction runs are written together in one
// UpdateSessions transaction, except a change to a session that another
// change in it names (the next one); each agent's changes have their own
// outcome (written, adopted, an orphan left alone), and the kept counts
// equal a recount in the store.
func TestSessionChanges_GroupCommit(t *testing.T) {
	ctx := t.Context()
	base, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "berth.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { base.Close() })
	st := &batchStore{Store: base}
	svc, err := broker.New(ctx, st, flakyAgents{}, nil, broker.Config{BrokerID: "b1"}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	rctx, cancel := context.WithCancel(ctx)
	var run sync.WaitGroup
	run.Go(func() { _ = svc.Run(rctx) })
	t.Cleanup(func() { cancel(); run.Wait() })
	poll.Until(t, 10*time.Second, "kept counts loaded", func() bool { _, _, _, loaded := svc.KeptCounts(); return loaded })
	report := func(id string, state string, conns int64) broker.SessionReport {
		return broker.SessionReport{ID: id, Name: "d", Owner: "ann", Type: broker.TypeVirtual, State: state, NumOfConnections: conns}
	}
	for _, srv := range []string{"s0", "s1", "s2", "s3"} {
		if err := svc.AgentConnected(ctx, "", srv, broker.ServerInfo{Hostname: srv, Healthy: true}, nil); err != nil {
			t.Fatal(err)
		}
		// Adopted: the store does not know them yet.
		if err := svc.AgentSessionChanges(ctx, srv, []broker.SessionReport{
			report(srv+"-a", broker.StateReady, 0), report(srv+"-b", broker.StateReady, 0)}); err != nil {
			t.Fatal(err)
		}
	}
	before := len(st.transactions())

	// s0's changes hold the store; s1's, s2's and s3's come meanwhile.
	st.mu.Lock()
	st.hold, st.entered = make(chan struct{}), make(chan struct{})
	hold, entered := st.hold, st.entered
	st.mu.Unlock()
	calls := []struct {
		server  string
		changes []broker.SessionReport
	}{
		{"s0", []broker.SessionReport{report("s0-a", broker.StateReady, 1)}},
		// s1-a ended; s2-b is s2's: an orphan that s1 must not change.
		{"s1", []broker.SessionReport{report("s1-a", broker.StateDeleted, 0), report("s2-b", broker.StateReady, 5)}},
		{"s2", []broker.SessionReport{report("s2-a", broker.StateReady, 2)}},
		// s3-new is unknown: adopted on s3. s2-a is s2's, and named by
		// s2's changes: it waits for the next transaction.
		{"s3", []broker.SessionReport{report("s3-new", broker.StateReady, 0), report("s2-a", broker.StateReady, 9)}},
	}
	errs := make([]error, len(calls))
	var wg sync.WaitGroup
	for i, c := range calls {
		wg.Go(func() { errs[i] = svc.AgentSessionChanges(ctx, c.server, c.changes) })
		if i == 0 {
			select {
			case <-entered:
			case <-time.After(10 * time.Second):
				t.Fatal("the first changes did not reach the store")
			}
		}
	}
	poll.Until(t, 10*time.Second, "three writes waiting", func() bool { return svc.PendingSessionWrites() == 3 })
	close(hold)
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("AgentSessionChanges of %s: %v", calls[i].server, err)
		}
	}

	txs := st.transactions()[before:]
	if len(txs) != 3 {
		t.Fatalf("UpdateSessions transactions = %v, want 3 (s0's, then two)", txs)
	}
	slices.Sort(txs[1])
	slices.Sort(txs[2])
	got := [][]string{txs[1], txs[2]}
	// Which of s2 and s3 came first decides which waited.
	wantA := [][]string{{"s1-a", "s2-a", "s2-b"}, {"s2-a", "s3-new"}}
	wantB := [][]string{{"s1-a", "s2-a", "s2-b", "s3-new"}, {"s2-a"}}
	if !slices.EqualFunc(got, wantA, slices.Equal[[]string]) && !slices.EqualFunc(got, wantB, slices.Equal[[]string]) {
		t.Errorf("transactions after the first = %v, want %v or %v", got, wantA, wantB)
	}

	want := map[string]struct {
		server, state string
		conns         int64
	}{
		"s0-a":   {"s0", broker.StateReady, 1},
		"s1-a":   {"s1", broker.StateDeleted, 0},
		"s2-a":   {"s2", broker.StateReady, 2},
		"s2-b":   {"s2", broker.StateReady, 0},
		"s3-new": {"s3", broker.StateReady, 0},
	}
	for id, w := range want {
		x, err := base.GetSession(ctx, id)
		if err != nil {
			t.Fatalf("session %s: %v", id, err)
		}
		if x.ServerID != w.server || x.State != w.state || x.NumOfConnections != w.conns {
			t.Errorf("session %s: server %s, state %s, connections %d; want %s, %s, %d",
				id, x.ServerID, x.State, x.NumOfConnections, w.server, w.state, w.conns)
		}
	}

	servers, byState, _, _ := svc.KeptCounts()
	wantServers, err := base.CountSessions(ctx)
	if err != nil {
		t.Fatal(err)
	}
	maps.DeleteFunc(wantServers, func(_ string, c broker.Counts) bool { return c.Virtual == 0 && c.Console == 0 })
	wantStates, err := base.CountByState(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(wantServers, servers) + cmp.Diff(wantStates, byState); d != "" {
		t.Errorf("kept counts differ from the store (-store +kept):\n%s", d)
	}
}

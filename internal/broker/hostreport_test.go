package broker_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/broker"
	"github.com/berth-dev/berth/internal/poll"
	"github.com/berth-dev/berth/internal/sqlite"
)

// countingStore counts the server rows written.
type countingStore struct {
	broker.Store
	upserts atomic.Int64
	batches atomic.Int64 // UpdateServers calls
	failing atomic.Bool
}

func (c *countingStore) UpsertServer(ctx context.Context, s *broker.Server) error {
	c.upserts.Add(1)
	return c.Store.UpsertServer(ctx, s)
}

// UpdateServers counts one call and its servers, or fails while failing is
// set.
func (c *countingStore) UpdateServers(ctx context.Context, srvs []*broker.Server) error {
	if c.failing.Load() {
		return errors.New("store down")
	}
	c.batches.Add(1)
	c.upserts.Add(int64(len(srvs)))
	return c.Store.UpdateServers(ctx, srvs)
}

type noDispatch struct{}

func (noDispatch) Dispatch(context.Context, string, broker.Command) (*broker.Result, error) {
	return nil, broker.ErrAgentUnreachable
}

type noTokens struct{}

func (noTokens) IssueConnectionToken(context.Context, string, string, string) (string, error) {
	return "", nil
}

// TestAgentUpdate_VolatileFigures: a report that only moves load and memory
// in use reaches the cache (and so the API and placement) at once but writes
// no row until FlushHostReports; a report that changes anything else is
// written at once.
func TestAgentUpdate_VolatileFigures(t *testing.T) {
	ctx := context.Background()
	st, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "b.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	cs := &countingStore{Store: st}
	svc, err := broker.New(ctx, cs, noDispatch{}, noTokens{}, broker.Config{BrokerID: "b1"}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	info := broker.ServerInfo{Hostname: "h", Healthy: true, MaxVirtualSessions: 4,
		Host: broker.Host{OSFamily: "linux", MemTotal: 8 << 30, MemUsed: 1 << 30, Load1: 0.5}}
	if err := svc.AgentConnected(ctx, "", "srv", info, []broker.SessionReport{}); err != nil {
		t.Fatal(err)
	}
	stored := func() *broker.Server {
		t.Helper()
		s, err := st.GetServer(ctx, "srv")
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	base := cs.upserts.Load()

	for i := range 10 {
		moved := info
		moved.Host.Load1, moved.Host.Load5, moved.Host.Load15 = float64(i), 1, 2
		moved.Host.MemUsed, moved.Host.SwapUsed = int64(i)<<30, 5
		if err := svc.AgentUpdate(ctx, "srv", &moved, nil); err != nil {
			t.Fatal(err)
		}
	}
	if n := cs.upserts.Load() - base; n != 0 {
		t.Errorf("%d server rows written for load and memory figures, want 0", n)
	}
	if got := svc.ServerByID("srv").Info.Host; got.Load1 != 9 || got.MemUsed != 9<<30 {
		t.Errorf("cached figures load %v mem %d, want the last report's", got.Load1, got.MemUsed)
	}
	if got := stored().Info.Host.Load1; got != 0.5 {
		t.Errorf("stored load %v before the flush, want 0.5", got)
	}
	svc.FlushHostReports(ctx)
	if got := stored().Info.Host; got.Load1 != 9 || got.MemUsed != 9<<30 {
		t.Errorf("stored figures after the flush: load %v mem %d", got.Load1, got.MemUsed)
	}
	base = cs.upserts.Load()
	svc.FlushHostReports(ctx)
	if n := cs.upserts.Load() - base; n != 0 {
		t.Errorf("a flush with nothing new wrote %d rows", n)
	}

	for _, tt := range []struct {
		name   string
		change func(*broker.ServerInfo)
	}{
		{"health", func(i *broker.ServerInfo) { i.Healthy = false }},
		{"capacity", func(i *broker.ServerInfo) { i.MaxVirtualSessions = 8 }},
		{"tags", func(i *broker.ServerInfo) { i.Tags = map[string]string{"pool": "gpu"} }},
		{"address", func(i *broker.ServerInfo) { i.IP = "10.0.0.9" }},
		{"gpus", func(i *broker.ServerInfo) { i.Host.GPUs = []broker.GPU{{Vendor: "NVIDIA", Model: "T4"}} }},
	} {
		cur := svc.ServerByID("srv").Info
		tt.change(&cur)
		before := cs.upserts.Load()
		if err := svc.AgentUpdate(ctx, "srv", &cur, nil); err != nil {
			t.Fatal(err)
		}
		if n := cs.upserts.Load() - before; n != 1 {
			t.Errorf("%s changed: %d rows written, want 1 at once", tt.name, n)
		}
	}
	if s := stored(); s.Info.Healthy || s.Info.MaxVirtualSessions != 8 || s.Info.IP != "10.0.0.9" || len(s.Info.Host.GPUs) != 1 {
		t.Errorf("stored info %+v", s.Info)
	}
}

// TestFlushHostReports_OneTransaction: a flush writes every server whose
// figures moved in one UpdateServers call; a failed flush keeps them marked
// for the next one.
func TestFlushHostReports_OneTransaction(t *testing.T) {
	ctx := context.Background()
	st, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "b.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	cs := &countingStore{Store: st}
	svc, err := broker.New(ctx, cs, noDispatch{}, noTokens{}, broker.Config{BrokerID: "b1"}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	info := broker.ServerInfo{Hostname: "h", Healthy: true, Host: broker.Host{OSFamily: "linux", Load1: 0.5}}
	const n = 20
	for i := range n {
		if err := svc.AgentConnected(ctx, "", fmt.Sprintf("srv-%d", i), info, []broker.SessionReport{}); err != nil {
			t.Fatal(err)
		}
	}
	report := func(load float64) {
		for i := range n {
			moved := info
			moved.Host.Load1 = load
			if err := svc.AgentUpdate(ctx, fmt.Sprintf("srv-%d", i), &moved, nil); err != nil {
				t.Fatal(err)
			}
		}
	}
	loads := func() (out []float64) {
		for i := range n {
			s, err := st.GetServer(ctx, fmt.Sprintf("srv-%d", i))
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, s.Info.Host.Load1)
		}
		return out
	}
	report(3)
	cs.failing.Store(true)
	svc.FlushHostReports(ctx)
	if got := loads(); got[0] != 0.5 || got[n-1] != 0.5 {
		t.Fatalf("stored loads %v after a failed flush, want 0.5", got)
	}
	cs.failing.Store(false)
	svc.FlushHostReports(ctx)
	if b := cs.batches.Load(); b != 1 {
		t.Errorf("%d UpdateServers calls, want 1", b)
	}
	for i, l := range loads() {
		if l != 3 {
			t.Errorf("srv-%d: stored load %v after the retried flush, want 3", i, l)
		}
	}
}

// TestFlushHostReports_Maintenance: host figures reach the store from the
// maintenance loop once HostFlushInterval has passed, with no further report.
func TestFlushHostReports_Maintenance(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	st, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "b.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	svc, err := broker.New(ctx, st, noDispatch{}, noTokens{}, broker.Config{BrokerID: "b1", MaintenanceInterval: 10 * time.Millisecond},
		slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	var now atomic.Int64
	now.Store(time.Now().UnixNano())
	svc.Now = func() time.Time { return time.Unix(0, now.Load()) }
	info := broker.ServerInfo{Hostname: "h", Healthy: true, Host: broker.Host{OSFamily: "linux", Load1: 0.5}}
	if err := svc.AgentConnected(ctx, "", "srv", info, []broker.SessionReport{}); err != nil {
		t.Fatal(err)
	}
	moved := info
	moved.Host.Load1 = 7
	if err := svc.AgentUpdate(ctx, "srv", &moved, nil); err != nil { // starts the flush clock
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = svc.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	now.Add(int64(broker.HostFlushInterval + time.Second))
	poll.Until(t, 10*time.Second, "load figure flushed by the maintenance loop", func() bool {
		s, err := st.GetServer(ctx, "srv")
		return err == nil && s.Info.Host.Load1 == 7
	})
}

// seenCountingStore counts the calls that record server contact.
type seenCountingStore struct {
	broker.Store
	single, batches atomic.Int64
	failing         atomic.Bool
}

func (c *seenCountingStore) SetServerSeen(ctx context.Context, id, brokerID string, t time.Time) error {
	c.single.Add(1)
	return c.Store.SetServerSeen(ctx, id, brokerID, t)
}

func (c *seenCountingStore) SetServersSeen(ctx context.Context, brokerID string, seen map[string]time.Time) error {
	c.batches.Add(1)
	if c.failing.Load() {
		return errors.New("store down")
	}
	return c.Store.SetServersSeen(ctx, brokerID, seen)
}

// TestFlushSeen_OneTransaction: the contact times of many servers reach the
// store in one call (one transaction), not one per server, and a failed
// flush keeps them for the next.
func TestFlushSeen_OneTransaction(t *testing.T) {
	ctx := context.Background()
	st, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "b.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	cs := &seenCountingStore{Store: st}
	now := time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)
	svc, err := broker.New(ctx, cs, noDispatch{}, noTokens{}, broker.Config{BrokerID: "b1"}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	svc.Now = func() time.Time { return now }
	info := broker.ServerInfo{Hostname: "h", Healthy: true, Host: broker.Host{OSFamily: "linux"}}
	const n = 50
	for i := range n {
		if err := svc.AgentConnected(ctx, "", fmt.Sprintf("srv-%d", i), info, []broker.SessionReport{}); err != nil {
			t.Fatal(err)
		}
	}
	now = now.Add(time.Minute)
	for i := range n {
		if err := svc.AgentUpdate(ctx, fmt.Sprintf("srv-%d", i), nil, nil); err != nil { // heartbeats
			t.Fatal(err)
		}
	}
	cs.failing.Store(true)
	svc.Stopping(ctx)
	cs.failing.Store(false)
	svc.Stopping(ctx) // the failed flush's times are flushed again
	if got := cs.single.Load(); got != 0 {
		t.Errorf("%d SetServerSeen calls, want 0 (one batch per flush)", got)
	}
	if got := cs.batches.Load(); got != 2 {
		t.Errorf("%d SetServersSeen calls, want 2 (a failed one, then one for every server)", got)
	}
	for i := range n {
		s, err := st.GetServer(ctx, fmt.Sprintf("srv-%d", i))
		if err != nil {
			t.Fatal(err)
		}
		if !s.LastSeen.Equal(now) {
			t.Fatalf("srv-%d LastSeen %v, want %v", i, s.LastSeen, now)
		}
	}
}

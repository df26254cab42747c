package broker_test

import (
	"context"
	"io"
	"log/slog"
	"path/filepath"
	"sync/atomic"
	"testing"

	"github.com/berth-dev/berth/internal/broker"
	"github.com/berth-dev/berth/internal/sqlite"
)

// countingStore counts the server rows written.
type countingStore struct {
	broker.Store
	upserts atomic.Int64
}

func (c *countingStore) UpsertServer(ctx context.Context, s *broker.Server) error {
	c.upserts.Add(1)
	return c.Store.UpsertServer(ctx, s)
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

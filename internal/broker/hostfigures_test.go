package broker_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"path/filepath"
	"testing"

	"github.com/berth-dev/berth/internal/broker"
	"github.com/berth-dev/berth/internal/sqlite"
)

// TestAgentFigures: figures sent alone reach the cache, and so
// DescribeServers, at once, on top of the last full report; they write no
// row until FlushHostReports; the same figures again change nothing; an
// unknown server is ErrNotFound; and for a record that another broker
// holds, the whole report is written at once.
func TestAgentFigures(t *testing.T) {
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
	info := broker.ServerInfo{Hostname: "h", Healthy: true, MaxVirtualSessions: 4, Tags: map[string]string{"pool": "a"},
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
		f := broker.HostFigures{Load1: float64(i), Load5: 1, Load15: 2, MemUsed: int64(i) << 30, SwapUsed: 5}
		if err := svc.AgentFigures(ctx, "srv", f); err != nil {
			t.Fatal(err)
		}
	}
	if n := cs.upserts.Load() - base; n != 0 {
		t.Errorf("%d server rows written for figures, want 0", n)
	}
	views, _, err := svc.DescribeServers(ctx, []string{"srv"}, 0, "")
	if err != nil || len(views) != 1 {
		t.Fatalf("DescribeServers = %d views, %v", len(views), err)
	}
	v := views[0]
	if h := v.Info.Host; h.Load1 != 9 || h.Load5 != 1 || h.Load15 != 2 || h.MemUsed != 9<<30 || h.SwapUsed != 5 {
		t.Errorf("described figures %+v, want the last ones sent", h)
	}
	if v.Info.Hostname != "h" || v.Info.MaxVirtualSessions != 4 || v.Info.Tags["pool"] != "a" || v.Info.Host.MemTotal != 8<<30 {
		t.Errorf("described report %+v, want the full report's other fields", v.Info)
	}
	if v.Availability != broker.Available {
		t.Errorf("availability %q, want AVAILABLE", v.Availability)
	}
	if got := stored().Info.Host.Load1; got != 0.5 {
		t.Errorf("stored load %v before the flush, want 0.5", got)
	}
	svc.FlushHostReports(ctx)
	if got := stored().Info.Host; got.Load1 != 9 || got.MemUsed != 9<<30 || got.SwapUsed != 5 {
		t.Errorf("stored figures after the flush: %+v", got)
	}

	cur := svc.ServerByID("srv")
	if err := svc.AgentFigures(ctx, "srv", broker.HostFigures{Load1: 9, Load5: 1, Load15: 2, MemUsed: 9 << 30, SwapUsed: 5}); err != nil {
		t.Fatal(err)
	}
	if svc.ServerByID("srv") != cur {
		t.Error("the same figures again replaced the cached server")
	}

	if err := svc.AgentFigures(ctx, "nope", broker.HostFigures{}); !errors.Is(err, broker.ErrNotFound) {
		t.Errorf("figures of an unknown server: err = %v, want ErrNotFound", err)
	}

	other := *svc.ServerByID("srv")
	other.BrokerID = "b2"
	svc.PutCachedServer(&other)
	base = cs.upserts.Load()
	if err := svc.AgentFigures(ctx, "srv", broker.HostFigures{Load1: 11}); err != nil {
		t.Fatal(err)
	}
	if n := cs.upserts.Load() - base; n != 1 {
		t.Errorf("figures for a record another broker held: %d rows written, want 1", n)
	}
	if s := stored(); s.BrokerID != "b1" || s.Info.Host.Load1 != 11 || s.Info.Hostname != "h" {
		t.Errorf("stored after figures for a record another broker held: broker %q, info %+v", s.BrokerID, s.Info)
	}
}

package broker_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/broker"
	"github.com/berth-dev/berth/internal/sqlite"
)

// TestAgentConnected_RelinkWritesNoRow: after a restart, an agent that
// relinks with the report it last sent writes no server row (its contact
// time reaches the store with the next flush), and so does one whose report
// moved load or memory in use only; a relink that changes anything else,
// that follows a link this broker saw close, that comes through a broker of
// another ID, or that names another agent client writes as before (the last
// one is refused with ErrConflict).
func TestAgentConnected_RelinkWritesNoRow(t *testing.T) {
	base := broker.ServerInfo{Hostname: "h", Healthy: true, MaxVirtualSessions: 4,
		Host: broker.Host{OSFamily: "linux", MemTotal: 8 << 30, MemUsed: 1 << 30, Load1: 0.5}}
	figures := base
	figures.Host.Load1, figures.Host.MemUsed = 1.5, 2<<30
	capacity := base
	capacity.MaxVirtualSessions = 8
	tests := []struct {
		name      string
		brokerID  string // of the restarted broker
		client    string
		info      broker.ServerInfo
		closeLink bool // the restarted broker sees a link close first
		writes    int64
		conflict  bool
	}{
		{"same report", "b1", "c1", base, false, 0, false},
		{"volatile figures moved", "b1", "c1", figures, false, 0, false},
		{"capacity changed", "b1", "c1", capacity, false, 1, false},
		{"link closed here first", "b1", "c1", base, true, 1, false},
		{"another broker ID", "b2", "c1", base, false, 1, false},
		{"another agent client", "b1", "c2", base, false, 1, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			st, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "b.db"))
			if err != nil {
				t.Fatal(err)
			}
			defer st.Close()
			log := slog.New(slog.NewTextHandler(io.Discard, nil))
			firstCtx, stopFirst := context.WithCancel(ctx)
			first, err := broker.New(firstCtx, st, noDispatch{}, noTokens{}, broker.Config{BrokerID: "b1"}, log)
			if err != nil {
				t.Fatal(err)
			}
			if err := first.AgentConnected(ctx, "c1", "srv", base, []broker.SessionReport{}); err != nil {
				t.Fatal(err)
			}
			before, err := st.GetServer(ctx, "srv")
			if err != nil {
				t.Fatal(err)
			}
			stopFirst()

			// The restart: a new Service on the same store.
			cs := &countingStore{Store: st}
			svcCtx, stop := context.WithCancel(ctx)
			defer stop()
			svc, err := broker.New(svcCtx, cs, noDispatch{}, noTokens{}, broker.Config{BrokerID: tt.brokerID}, log)
			if err != nil {
				t.Fatal(err)
			}
			if tt.closeLink {
				if err := svc.AgentConnected(ctx, tt.client, "srv", base, []broker.SessionReport{}); err != nil {
					t.Fatal(err)
				}
				svc.AgentDisconnected(ctx, "srv")
				cs.upserts.Store(0)
			}
			err = svc.AgentConnected(ctx, tt.client, "srv", tt.info, []broker.SessionReport{})
			if got := errors.Is(err, broker.ErrConflict); got != tt.conflict {
				t.Fatalf("AgentConnected: %v, want conflict %v", err, tt.conflict)
			}
			if got := cs.upserts.Load(); got != tt.writes {
				t.Errorf("server rows written: %d, want %d", got, tt.writes)
			}
			if tt.conflict {
				return
			}
			if !svc.ServerReachable("srv") {
				t.Error("server not linked after the relink")
			}
			if v := svc.ViewServer(ctx, svc.ServerByID("srv")); v.Availability != broker.Available {
				t.Errorf("availability %s (%s), want AVAILABLE", v.Availability, v.UnavailabilityReason)
			}
			if got := svc.ServerByID("srv").Info; got.Host.Load1 != tt.info.Host.Load1 || got.MaxVirtualSessions != tt.info.MaxVirtualSessions {
				t.Errorf("cached report %+v, want %+v", got, tt.info)
			}
			// The contact time and the figures reach the store with the flushes.
			svc.Stopping(ctx)
			svc.FlushHostReports(ctx)
			after, err := st.GetServer(ctx, "srv")
			if err != nil {
				t.Fatal(err)
			}
			if want := svc.ServerByID("srv").LastSeen.Truncate(time.Millisecond); after.LastSeen.Before(want) || after.LastSeen.Before(before.LastSeen) {
				t.Errorf("stored LastSeen %v, want the relink's %v", after.LastSeen, want)
			}
			if after.BrokerID != tt.brokerID {
				t.Errorf("stored broker %q, want %q", after.BrokerID, tt.brokerID)
			}
			if after.Info.Host.Load1 != tt.info.Host.Load1 || after.Info.MaxVirtualSessions != tt.info.MaxVirtualSessions {
				t.Errorf("stored report %+v, want %+v", after.Info, tt.info)
			}
		})
	}
}

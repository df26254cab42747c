package broker_test

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/broker"
	"github.com/berth-dev/berth/internal/poll"
	"github.com/berth-dev/berth/internal/postgres"
	"github.com/berth-dev/berth/internal/postgres/pgtest"
)

// lease is a broker.Leaser shared by the brokers of a test: the broker
// it names is the leader.
type lease struct{ holder atomic.Value }

type leaseOf struct {
	l  *lease
	id string
}

func (l leaseOf) IsLeader(context.Context) bool { return l.l.holder.Load() == l.id }

// TestPolicies_LeaderDies runs two brokers on one PostgreSQL database: the
// leader records a session's timer in the store and dies before it is due;
// the other broker, which never saw the session's reports, takes the lease
// and deletes the session when the timer is due.
func TestPolicies_LeaderDies(t *testing.T) {
	ctx := t.Context()
	dsn := pgtest.DSN(t)
	clk := &fakeClock{now: lt0}
	lim := broker.SessionLimits{DisconnectedTimeoutMinutes: 10}
	l := &lease{}
	l.holder.Store("b1")
	start := func(id string) (*broker.Service, *policyAgents, context.CancelFunc, *sync.WaitGroup) {
		st, err := postgres.Open(ctx, dsn, nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		agents := &policyAgents{}
		svc, err := broker.New(ctx, st, agents, nil, broker.Config{BrokerID: id, Limits: lim,
			PolicyInterval: 5 * time.Millisecond, SyncInterval: time.Hour}, slog.New(slog.DiscardHandler))
		if err != nil {
			t.Fatal(err)
		}
		svc.Now = clk.Now
		svc.Leaser = leaseOf{l, id}
		rctx, cancel := context.WithCancel(ctx)
		var wg sync.WaitGroup
		wg.Go(func() { _ = svc.Run(rctx) })
		t.Cleanup(func() { cancel(); wg.Wait() })
		return svc, agents, cancel, &wg
	}
	b1, agents1, kill1, wg1 := start("b1")
	b2, agents2, _, _ := start("b2")

	info := broker.ServerInfo{Hostname: "s1", Healthy: true, Host: broker.Host{OSFamily: "linux"}}
	reports := []broker.SessionReport{{ID: "p1", Name: "p", Owner: "alice", Type: broker.TypeVirtual, State: broker.StateReady,
		CreationTime: lt0}}
	if err := b1.AgentConnected(ctx, "", "s1", info, reports); err != nil {
		t.Fatal(err)
	}
	if got := getP1(t, b2).DueAt; !got.Equal(lat(10 * time.Minute)) {
		t.Fatalf("DueAt as the other broker reads it = %v, want +10m: the timer is in the store", got)
	}
	clk.set(lat(5 * time.Minute))

	// The leader dies; the agent links to the other broker, which takes
	// the lease.
	kill1()
	wg1.Wait()
	l.holder.Store("b2")
	if err := b2.AgentConnected(ctx, "", "s1", info, reports); err != nil {
		t.Fatal(err)
	}
	clk.set(lat(10 * time.Minute))
	poll.Until(t, 20*time.Second, "the surviving broker deletes the session", func() bool {
		return getP1(t, b2).State == broker.StateDeleted
	})
	want := "deleted by session-disconnected-timeout-minutes: no client connected for 10m"
	if got := getP1(t, b2).StateReason; got != want {
		t.Errorf("StateReason = %q, want %q", got, want)
	}
	checkCmds(t, "the dead broker", agents1.take())
	checkCmds(t, "the surviving broker", agents2.take(), "delete")
}

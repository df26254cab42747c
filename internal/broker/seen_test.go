package broker_test

import (
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/broker"
)

// TestSeen_WrittenEveryHalfTimeout: an agent's contacts reach the store at
// most every half heartbeat timeout (15 s of 30 s), not with every update,
// and the first contact of a relink is written at once. Real SQLite; the
// clock is the Service's.
func TestSeen_WrittenEveryHalfTimeout(t *testing.T) {
	ctx := t.Context()
	st := openEventsSQLite(t)
	svc, err := broker.New(ctx, st, acceptAgents{}, nil, broker.Config{BrokerID: "b1", HeartbeatTimeout: 30 * time.Second}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Now().UTC().Truncate(time.Second)
	now := t0
	svc.Now = func() time.Time { return now }
	stored := func() time.Time { return storedLastSeen(t, st, "srv") }
	if err := svc.AgentConnected(ctx, "", "srv", serverInfo("srv", 4), nil); err != nil {
		t.Fatal(err)
	}
	svc.FlushSeen(ctx)
	for _, step := range []struct {
		at      time.Duration // after t0
		relink  bool          // the link closes and the agent links again first
		want    time.Duration // stored LastSeen after the flush, after t0
		comment string
	}{
		{at: 10 * time.Second, want: 0, comment: "10 s after the last write: not written"},
		{at: 14 * time.Second, want: 0, comment: "14 s: not yet"},
		{at: 20 * time.Second, want: 20 * time.Second, comment: "past 15 s: written"},
		{at: 30 * time.Second, want: 20 * time.Second, comment: "10 s after that write: not written"},
		{at: 31 * time.Second, relink: true, want: 31 * time.Second, comment: "a relink: written at once"},
		{at: 40 * time.Second, want: 31 * time.Second, comment: "9 s after the relink's write: not written"},
		{at: 47 * time.Second, want: 47 * time.Second, comment: "16 s after it: written"},
	} {
		now = t0.Add(step.at)
		if step.relink {
			svc.AgentDisconnected(ctx, "srv")
			if err := svc.AgentConnected(ctx, "", "srv", serverInfo("srv", 4), nil); err != nil {
				t.Fatal(err)
			}
		}
		if err := svc.AgentUpdate(ctx, "srv", nil, nil); err != nil {
			t.Fatal(err)
		}
		svc.FlushSeen(ctx)
		if got, want := stored(), t0.Add(step.want); !got.Equal(want) {
			t.Fatalf("at +%s (%s): stored LastSeen +%s, want +%s", step.at, step.comment, got.Sub(t0), step.want)
		}
	}
}

// With a fleet past MaxUpdateRate, the heartbeat timeout grows, and with it
// how often a contact is written and when a server is lost.
func TestLinkTiming_GrowsWithFleet(t *testing.T) {
	ctx := t.Context()
	st := openEventsSQLite(t)
	svc, err := broker.New(ctx, st, acceptAgents{}, nil, broker.Config{BrokerID: "b1",
		HeartbeatTimeout: 30 * time.Second, MaxUpdateRate: 0.2}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	check := func(interval, timeout time.Duration) {
		t.Helper()
		if i, to := svc.LinkTiming(); i != interval || to != timeout {
			t.Errorf("LinkTiming = %s, %s; want %s, %s", i, to, interval, timeout)
		}
	}
	check(10*time.Second, 30*time.Second) // no servers
	for i := range 2 {
		id := fmt.Sprintf("srv-%d", i)
		if err := svc.AgentConnected(ctx, "", id, serverInfo(id, 4), nil); err != nil {
			t.Fatal(err)
		}
	}
	check(10*time.Second, 30*time.Second) // 2 servers at 0.2/s: one update each 10 s
	for i := 2; i < 4; i++ {
		id := fmt.Sprintf("srv-%d", i)
		if err := svc.AgentConnected(ctx, "", id, serverInfo(id, 4), nil); err != nil {
			t.Fatal(err)
		}
	}
	check(20*time.Second, 60*time.Second) // 4 servers: one each 20 s

	// Contacts are written every half of the grown timeout: 30 s.
	t0 := time.Now().UTC().Truncate(time.Second)
	now := t0
	svc.Now = func() time.Time { return now }
	stored := func() time.Time { return storedLastSeen(t, st, "srv-0") }
	if err := svc.AgentUpdate(ctx, "srv-0", nil, nil); err != nil {
		t.Fatal(err)
	}
	svc.FlushSeen(ctx)
	first := stored()
	now = first.Add(20 * time.Second) // past the base's 15 s, inside 30 s
	if err := svc.AgentUpdate(ctx, "srv-0", nil, nil); err != nil {
		t.Fatal(err)
	}
	svc.FlushSeen(ctx)
	if got := stored(); !got.Equal(first) {
		t.Errorf("contact 20 s later written (%s); want it held until 30 s", got.Sub(first))
	}
	now = first.Add(31 * time.Second)
	if err := svc.AgentUpdate(ctx, "srv-0", nil, nil); err != nil {
		t.Fatal(err)
	}
	svc.FlushSeen(ctx)
	if got := stored(); !got.Equal(now) {
		t.Errorf("contact 31 s later: stored %s after the first, want 31s", got.Sub(first))
	}
}

// storedLastSeen is the server's contact time as the store has it.
func storedLastSeen(t *testing.T, st broker.Store, id string) time.Time {
	t.Helper()
	list, err := st.ListServers(t.Context(), broker.ServerFilter{IDs: []string{id}})
	if err != nil || len(list) != 1 {
		t.Fatalf("list %s: %v %d", id, err, len(list))
	}
	return list[0].LastSeen.UTC()
}

package broker_test

import (
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
	stored := func() time.Time {
		t.Helper()
		list, err := st.ListServers(ctx, broker.ServerFilter{IDs: []string{"srv"}})
		if err != nil || len(list) != 1 {
			t.Fatalf("list: %v %d", err, len(list))
		}
		return list[0].LastSeen.UTC()
	}
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

package broker_test

import (
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/broker"
)

// TestQueue_WakeWithNobodyWaiting: an agent's moving figures wake the
// create queue (a requirement may name them), a thousand times a second at
// 10,000 agents. With nobody waiting, as the kept counts say, the wake runs
// no pass (no read of the queue); once a session waits, every wake runs one
// again. Real SQLite.
func TestQueue_WakeWithNobodyWaiting(t *testing.T) {
	st := openEventsSQLite(t)
	svc := startQuotaBroker(t, st, broker.Config{BrokerID: "b"}, "srv", 1)
	ctx := t.Context()
	load := 0.0
	moveFigures := func(n int) {
		t.Helper()
		for range n {
			load += 0.01
			if err := svc.AgentFigures(ctx, "srv", broker.HostFigures{Load1: load}); err != nil {
				t.Fatal(err)
			}
			time.Sleep(5 * time.Millisecond) // let the queue loop take each wake
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for svc.QueueSkips() == 0 { // the counts load in the background first
		if time.Now().After(deadline) {
			t.Fatal("no queue wake was skipped with nobody waiting")
		}
		moveFigures(10)
	}

	// One session fills the server; the next waits in the queue.
	if res := create(t, svc, broker.CreateRequest{Owner: "alice"}); res.FailureReason != "" {
		t.Fatalf("first create: %s", res.FailureReason)
	}
	if res := create(t, svc, broker.CreateRequest{Owner: "bob", EnqueueRequest: true}); res.FailureReason != "" || res.Session.ServerID != "" {
		t.Fatalf("queued create: %+v", res)
	}
	skips := svc.QueueSkips()
	moveFigures(20)
	if got := svc.QueueSkips(); got != skips {
		t.Fatalf("%d queue wakes skipped while a session waited", got-skips)
	}
}

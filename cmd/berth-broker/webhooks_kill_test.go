package main

import (
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/poll"
	"github.com/berth-dev/berth/internal/postgres/pgtest"
)

// TestCluster_WebhookLeaderSIGKILLed: two brokers on one PostgreSQL, the
// leader in a process of its own. Its delivery of the first event hangs at
// the receiver when the process is SIGKILLed, so nothing of a clean stop
// runs. Once the lease expires the other broker takes it and delivers
// every event, the interrupted one again with the same idempotency key,
// each acknowledged exactly once, in order.
func TestCluster_WebhookLeaderSIGKILLed(t *testing.T) {
	if testing.Short() {
		t.Skip("runs and kills a broker process")
	}
	t.Parallel()
	dsn := pgtest.DSN(t)
	a := startChildBroker(t, childConfig{Dir: t.TempDir(), Heartbeat: 30 * time.Second, DSN: dsn, BrokerID: "kill-a"})
	pg := pgtest.Admin(t, dsn)
	holder := func() string {
		var h string
		_ = pg.QueryRow(t.Context(), `SELECT holder FROM leases WHERE name = 'maintenance' AND expires_at > now()`).Scan(&h)
		return h
	}
	poll.Until(t, 30*time.Second, "the broker process leads", func() bool { return holder() == "kill-a" })
	b := mustRunClusterBroker(t, dsn, "kill-b")

	rcv := startHangFirstReceiver(t, "kill-secret-0123456789")
	h := rcv.deliverServerEvents(t, b.Main, b.svc)
	if b.node.IsLeader(t.Context()) {
		t.Fatal("the in-process broker delivered: the test needs the killed process to")
	}
	a.kill(t) // mid-delivery
	killed := time.Now()
	rcv.checkRedelivered(t, b.Main, h)
	t.Logf("every event delivered %s after the SIGKILL", time.Since(killed).Round(100*time.Millisecond))
	if holder() != "kill-b" {
		t.Errorf("the lease is held by %q, want kill-b", holder())
	}
}

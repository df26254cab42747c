package main

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/broker"
	"github.com/berth-dev/berth/internal/poll"
	"github.com/berth-dev/berth/internal/postgres/pgtest"
	"github.com/berth-dev/berth/internal/webhook"
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

	var mu sync.Mutex
	var seen []string // idempotency keys, in arrival order
	acked := map[string]int{}
	hung := make(chan struct{})
	var once sync.Once
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if err := webhook.Verify("kill-secret-0123456789", r.Header.Get(webhook.HeaderSignature), body, time.Now(), 5*time.Minute); err != nil {
			t.Errorf("signature: %v", err)
		}
		key := r.Header.Get(webhook.HeaderIdempotency)
		mu.Lock()
		first := len(seen) == 0
		seen = append(seen, key)
		mu.Unlock()
		if first { // the leader's first delivery: never answered
			once.Do(func() { close(hung) })
			<-r.Context().Done()
			return
		}
		mu.Lock()
		acked[key]++
		mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(srv.Close)
	h, err := webhookRegistry(b.Main).Create(t.Context(), webhook.Spec{URL: srv.URL, Types: []string{"server.*"}, Secret: "kill-secret-0123456789"})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		b.svc.Emit(t.Context(), broker.Event{Type: broker.EventServerOpened, ServerID: fmt.Sprintf("srv-%d", i)})
	}
	select {
	case <-hung:
	case <-time.After(time.Minute):
		t.Fatal("the leader never delivered")
	}
	if b.node.IsLeader(t.Context()) {
		t.Fatal("the in-process broker delivered: the test needs the killed process to")
	}
	a.kill(t) // mid-delivery
	killed := time.Now()
	evs, err := b.store.(broker.EventStore).ListEvents(t.Context(), broker.EventFilter{AfterID: h.Cursor, Types: []string{"server.*"}})
	if err != nil {
		t.Fatal(err)
	}
	if len(evs) != 3 {
		t.Fatalf("%d server events, want 3", len(evs))
	}
	poll.Until(t, time.Minute, "the other broker delivers", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(acked) == 3
	})
	t.Logf("every event delivered %s after the SIGKILL", time.Since(killed).Round(100*time.Millisecond))
	mu.Lock()
	defer mu.Unlock()
	if seen[0] != webhook.IdempotencyKey(h.ID, evs[0].ID) || seen[1] != seen[0] {
		t.Errorf("requests %v: want the first event (%s) twice, interrupted then redelivered", seen, webhook.IdempotencyKey(h.ID, evs[0].ID))
	}
	for i, ev := range evs {
		key := webhook.IdempotencyKey(h.ID, ev.ID)
		if acked[key] != 1 || seen[i+1] != key {
			t.Errorf("event %d: acknowledged %d times, request %d was %s; want once, in order", ev.ID, acked[key], i+1, seen[i+1])
		}
	}
	if holder() != "kill-b" {
		t.Errorf("the lease is held by %q, want kill-b", holder())
	}
}

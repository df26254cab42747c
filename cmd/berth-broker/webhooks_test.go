package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/internal/broker"
	"github.com/berth-dev/berth/internal/driver/sim"
	"github.com/berth-dev/berth/internal/poll"
	"github.com/berth-dev/berth/internal/postgres/pgtest"
	"github.com/berth-dev/berth/internal/webhook"
)

// hookReceiver is a webhook endpoint on loopback that checks every
// signature and records each request; failFirst requests answer 503.
type hookReceiver struct {
	t         testing.TB
	secret    string
	failFirst int
	mu        sync.Mutex
	requests  []hookRequest
	srv       *httptest.Server
}

type hookRequest struct {
	key    string
	ev     webhook.EventJSON
	status int
}

func newHookReceiver(t testing.TB, secret string, failFirst int) *hookReceiver {
	r := &hookReceiver{t: t, secret: secret, failFirst: failFirst}
	r.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, err := io.ReadAll(req.Body)
		if err != nil {
			return
		}
		if err := webhook.Verify(r.secret, req.Header.Get(webhook.HeaderSignature), body, time.Now(), 5*time.Minute); err != nil {
			t.Errorf("delivery %s: %v", req.Header.Get(webhook.HeaderIdempotency), err)
		}
		var ev webhook.EventJSON
		if err := json.Unmarshal(body, &ev); err != nil {
			t.Errorf("delivery body %q: %v", body, err)
		}
		r.mu.Lock()
		status := http.StatusOK
		if len(r.requests) < r.failFirst {
			status = http.StatusServiceUnavailable
		}
		r.requests = append(r.requests, hookRequest{key: req.Header.Get(webhook.HeaderIdempotency), ev: ev, status: status})
		r.mu.Unlock()
		w.WriteHeader(status)
	}))
	t.Cleanup(r.srv.Close)
	return r
}

// acknowledged returns the requests answered 2xx, in arrival order.
func (r *hookReceiver) acknowledged() []hookRequest {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []hookRequest
	for _, q := range r.requests {
		if q.status < 300 {
			out = append(out, q)
		}
	}
	return out
}

// TestWebhooks_SessionLife: a real broker and a simulated agent; a
// webhook registered through the API on a loopback receiver that checks
// every signature and fails its first 5 requests gets a session's life
// (CREATING, READY, DELETING, DELETED) exactly once per idempotency key,
// in event order, with the 5 failures in its delivery log.
func TestWebhooks_SessionLife(t *testing.T) {
	t.Parallel()
	b := MustRunMainWith(t, t.TempDir(), func(m *Main) { m.webhookBackoff = 20 * time.Millisecond })
	c := b.MustClient(t)
	// berth's own routes, not in Amazon's document (httpapi's tests check
	// them against berth's).
	bc := &api.Client{BrokerURL: c.BrokerURL, ClientID: c.ClientID, ClientSecret: c.ClientSecret, HTTPClient: b.hc}
	ctx := t.Context()
	recv := newHookReceiver(t, "session-life-secret-0123", 5)
	h, err := bc.CreateWebhook(ctx, api.CreateWebhookRequest{Url: recv.srv.URL + "/berth", EventTypes: []string{"session.state"},
		Secret: "session-life-secret-0123"})
	if err != nil {
		t.Fatal(err)
	}
	drv := sim.New()
	b.MustStartSimAgent(t, t.TempDir(), drv, hostReport("host-w", 0, nil))
	poll.Until(t, 10*time.Second, "server listed", func() bool { return servers(t, c)["host-w"].Id != "" })
	resp := create(t, c, api.CreateSessionRequest{Name: "w", Owner: "wendy", Type: "VIRTUAL"})
	if len(resp.SuccessfulList) != 1 {
		t.Fatalf("create: %+v", resp.UnsuccessfulList)
	}
	id := resp.SuccessfulList[0].Id
	waitState(t, c, id, api.StateReady)
	if _, err := c.DeleteSessions(ctx, []api.DeleteSessionRequest{{SessionId: id, Owner: "wendy"}}); err != nil {
		t.Fatal(err)
	}
	waitState(t, c, id, api.StateDeleted)

	evs := b.store.(broker.EventStore)
	var want []*broker.Event
	poll.Until(t, 30*time.Second, "the session's events delivered", func() bool {
		want, err = evs.ListEvents(ctx, broker.EventFilter{Types: []string{broker.EventSessionState}})
		if err != nil {
			t.Fatal(err)
		}
		got := recv.acknowledged()
		return len(want) > 0 && want[len(want)-1].Data["state"] == api.StateDeleted && len(got) >= len(want)
	})
	got := recv.acknowledged()
	if len(got) != len(want) {
		t.Fatalf("receiver acknowledged %d deliveries, want the %d events", len(got), len(want))
	}
	states := []string{}
	for i, g := range got {
		if g.ev.ID != want[i].ID || g.ev.SessionID != want[i].SessionID || g.key != webhook.IdempotencyKey(h.Webhook.Id, want[i].ID) {
			t.Errorf("delivery %d: event %d of %s (key %s), want event %d of %s", i, g.ev.ID, g.ev.SessionID, g.key, want[i].ID, want[i].SessionID)
		}
		if g.ev.SessionID == id {
			states = append(states, g.ev.Data["state"].(string))
		}
	}
	if s := strings.Join(states, ","); !strings.HasPrefix(s, api.StateCreating) || !strings.Contains(s, api.StateReady) ||
		!strings.HasSuffix(s, api.StateDeleted) {
		t.Errorf("session states delivered: %s", s)
	}
	recv.mu.Lock()
	for i := range 6 {
		if recv.requests[i].ev.ID != want[0].ID {
			t.Errorf("request %d was event %d, want the first event %d until it succeeded", i, recv.requests[i].ev.ID, want[0].ID)
		}
	}
	recv.mu.Unlock()
	// The receiver answered before the broker recorded the delivery: wait
	// for the log to hold every attempt.
	var deliveries []api.WebhookDelivery
	poll.Until(t, 20*time.Second, "the delivery log", func() bool {
		log, err := bc.DescribeWebhookDeliveries(ctx, h.Webhook.Id, 1000)
		if err != nil {
			t.Fatal(err)
		}
		deliveries = log.Deliveries
		return len(deliveries) >= len(want)+5
	})
	failed := 0
	for _, d := range deliveries {
		if !d.Delivered {
			failed++
		}
	}
	if failed != 5 || len(deliveries) != len(want)+5 {
		t.Errorf("delivery log: %d entries, %d failed; want %d, 5 failed", len(deliveries), failed, len(want)+5)
	}
}

// TestWebhooks_AdminCommands: create-webhook, describe-webhooks,
// describe-webhook-deliveries and delete-webhook on the broker's store.
func TestWebhooks_AdminCommands(t *testing.T) {
	t.Parallel()
	b := MustRunMain(t, t.TempDir(), nil)
	cfg := b.writeConfig(t)
	admin := func(args ...string) (string, int) {
		var out, errOut bytes.Buffer
		code := run(context.Background(), append(args[:1:1], append([]string{"--config", cfg}, args[1:]...)...), &out, &errOut)
		return out.String() + errOut.String(), code
	}
	out, code := admin("create-webhook", "--url", "https://hooks.example.com/b", "--event-types", "session.*, server.opened")
	if code != 0 || !strings.Contains(out, "webhook-id: whk-") || !strings.Contains(out, "secret: whsec_") {
		t.Fatalf("create-webhook exited %d: %s", code, out)
	}
	id := strings.TrimSpace(strings.SplitN(strings.SplitN(out, "webhook-id: ", 2)[1], "\n", 2)[0])
	if out, code := admin("create-webhook", "--url", "http://hooks.example.com/b"); code == 0 || !strings.Contains(out, "Url: must be https") {
		t.Errorf("create-webhook of plain http exited %d: %s", code, out)
	}
	out, code = admin("describe-webhooks")
	if code != 0 || !strings.Contains(out, id) || !strings.Contains(out, `"session.*"`) || strings.Contains(out, "whsec_") {
		t.Errorf("describe-webhooks exited %d: %s", code, out)
	}
	if out, code := admin("describe-webhook-deliveries", "--webhook-id", id); code != 0 || !strings.Contains(out, "Deliveries") {
		t.Errorf("describe-webhook-deliveries exited %d: %s", code, out)
	}
	if out, code := admin("delete-webhook", "--webhook-id", id); code != 0 || !strings.Contains(out, "deleted") {
		t.Errorf("delete-webhook exited %d: %s", code, out)
	}
	if out, code := admin("delete-webhook", "--webhook-id", id); code == 0 || !strings.Contains(out, "does not exist") {
		t.Errorf("second delete-webhook exited %d: %s", code, out)
	}
}

// TestCluster_WebhookLeaderKilled: two brokers on one PostgreSQL; the
// leader's delivery of the first event hangs at the receiver when the
// leader is stopped; the other broker takes the lease and delivers every
// event, the interrupted one again with the same idempotency key, each
// acknowledged exactly once, in order.
func TestCluster_WebhookLeaderKilled(t *testing.T) {
	t.Parallel()
	dsn := pgtest.DSN(t)
	a := mustRunClusterBroker(t, dsn, "wh-a")
	poll.Until(t, 30*time.Second, "wh-a leads", func() bool { return a.node.IsLeader(t.Context()) })
	b := mustRunClusterBroker(t, dsn, "wh-b")

	rcv := startHangFirstReceiver(t, "cluster-secret-0123456")
	h := rcv.deliverServerEvents(t, a.Main, a.svc)
	if err := a.Close(); err != nil { // the leader goes, mid-delivery
		t.Fatal(err)
	}
	rcv.checkRedelivered(t, b.Main, h)
	if !b.node.IsLeader(t.Context()) {
		t.Error("the other broker does not lead")
	}
}

// hangFirstReceiver is a webhook receiver on loopback that checks every
// delivery's signature, never answers the first one (it hangs until its
// request ends) and acknowledges the others, recording their idempotency
// keys in arrival order.
type hangFirstReceiver struct {
	url, secret string
	hung        chan struct{} // closed when the first delivery arrived

	mu    sync.Mutex
	seen  []string       // idempotency keys, in arrival order
	acked map[string]int // acknowledgements per key
}

func startHangFirstReceiver(t *testing.T, secret string) *hangFirstReceiver {
	r := &hangFirstReceiver{secret: secret, hung: make(chan struct{}), acked: map[string]int{}}
	var once sync.Once
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, _ := io.ReadAll(req.Body)
		if err := webhook.Verify(secret, req.Header.Get(webhook.HeaderSignature), body, time.Now(), 5*time.Minute); err != nil {
			t.Errorf("signature: %v", err)
		}
		key := req.Header.Get(webhook.HeaderIdempotency)
		r.mu.Lock()
		first := len(r.seen) == 0
		r.seen = append(r.seen, key)
		r.mu.Unlock()
		if first { // the leader's first delivery: never answered
			once.Do(func() { close(r.hung) })
			<-req.Context().Done()
			return
		}
		r.mu.Lock()
		r.acked[key]++
		r.mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(srv.Close)
	r.url = srv.URL
	return r
}

// deliverServerEvents registers a webhook of the server events on m's
// store, emits three through svc and waits until the leader's delivery of
// the first hangs at the receiver.
func (r *hangFirstReceiver) deliverServerEvents(t *testing.T, m *Main, svc *broker.Service) *webhook.Webhook {
	t.Helper()
	h, err := webhookRegistry(m).Create(t.Context(), webhook.Spec{URL: r.url, Types: []string{"server.*"}, Secret: r.secret})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		svc.Emit(t.Context(), broker.Event{Type: broker.EventServerOpened, ServerID: fmt.Sprintf("srv-%d", i)})
	}
	select {
	case <-r.hung:
	case <-time.After(time.Minute):
		t.Fatal("the leader never delivered")
	}
	return h
}

// checkRedelivered waits until the three server events of h (read from
// m's store) are acknowledged, and checks that the first was delivered
// twice under its idempotency key (interrupted, then again) and each
// acknowledged exactly once, in order.
func (r *hangFirstReceiver) checkRedelivered(t *testing.T, m *Main, h *webhook.Webhook) {
	t.Helper()
	evs, err := m.store.(broker.EventStore).ListEvents(t.Context(), broker.EventFilter{AfterID: h.Cursor, Types: []string{"server.*"}})
	if err != nil {
		t.Fatal(err)
	}
	if len(evs) != 3 {
		t.Fatalf("%d server events, want 3", len(evs))
	}
	poll.Until(t, time.Minute, "the other broker delivers", func() bool {
		r.mu.Lock()
		defer r.mu.Unlock()
		return len(r.acked) == 3
	})
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.seen[0] != webhook.IdempotencyKey(h.ID, evs[0].ID) || r.seen[1] != r.seen[0] {
		t.Errorf("requests %v: want the first event (%s) twice, interrupted then redelivered", r.seen, webhook.IdempotencyKey(h.ID, evs[0].ID))
	}
	for i, ev := range evs {
		key := webhook.IdempotencyKey(h.ID, ev.ID)
		if r.acked[key] != 1 || r.seen[i+1] != key {
			t.Errorf("event %d: acknowledged %d times, request %d was %s; want once, in order", ev.ID, r.acked[key], i+1, r.seen[i+1])
		}
	}
}

package storetest

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/berth-dev/berth/internal/broker"
	"github.com/berth-dev/berth/internal/webhook"
)

// RunWebhooks runs the webhook.Store contract tests as subtests of t; open
// returns an empty store, as for Run.
func RunWebhooks(t *testing.T, open func(t *testing.T) webhook.Store) {
	tests := []struct {
		name string
		fn   func(t *testing.T, s webhook.Store)
	}{
		{"InsertGetList", testWebhookInsertGetList},
		{"SaveDeliveries_State", testWebhookUpdateState},
		{"Delete", testWebhookDelete},
		{"Deliveries", testWebhookDeliveries},
		{"LastEventID", testWebhookLastEventID},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { tt.fn(t, open(t)) })
	}
}

func sampleWebhook(id string, created time.Time) *webhook.Webhook {
	return &webhook.Webhook{ID: id, URL: "https://hooks.example.com/" + id, Types: []string{"session.*", "server.opened"},
		Secret: "whsec_" + id, CreatedAt: created, State: webhook.StateEnabled, Cursor: 7}
}

func testWebhookInsertGetList(t *testing.T, s webhook.Store) {
	ctx := t.Context()
	t0 := time.Date(2026, 12, 6, 10, 0, 0, 0, time.UTC)
	a, b := sampleWebhook("whk-a", t0.Add(time.Second)), sampleWebhook("whk-b", t0)
	b.Types = nil
	for _, w := range []*webhook.Webhook{a, b} {
		if err := s.InsertWebhook(ctx, w); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.InsertWebhook(ctx, sampleWebhook("whk-a", t0)); !errors.Is(err, broker.ErrConflict) {
		t.Errorf("InsertWebhook of a taken ID = %v, want ErrConflict", err)
	}
	got, err := s.GetWebhook(ctx, "whk-a")
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(a, got); d != "" {
		t.Errorf("GetWebhook (-want +got):\n%s", d)
	}
	if _, err := s.GetWebhook(ctx, "whk-none"); !errors.Is(err, broker.ErrNotFound) {
		t.Errorf("GetWebhook of an unknown ID = %v, want ErrNotFound", err)
	}
	list, err := s.ListWebhooks(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff([]*webhook.Webhook{b, a}, list); d != "" {
		t.Errorf("ListWebhooks, by creation (-want +got):\n%s", d)
	}
}

func testWebhookUpdateState(t *testing.T, s webhook.Store) {
	ctx := t.Context()
	t0 := time.Date(2026, 12, 6, 10, 0, 0, 0, time.UTC)
	w := sampleWebhook("whk-u", t0)
	if err := s.InsertWebhook(ctx, w); err != nil {
		t.Fatal(err)
	}
	w.Cursor, w.Attempts, w.FailingSince, w.NextAttempt, w.LastError = 12, 3, t0.Add(time.Minute), t0.Add(2*time.Minute), "HTTP status 500"
	w.State, w.DisabledReason = webhook.StateDisabled, "failed for 24h"
	if err := s.SaveDeliveries(ctx, w, nil, 10); err != nil {
		t.Fatal(err)
	}
	got, err := s.GetWebhook(ctx, w.ID)
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(w, got); d != "" {
		t.Errorf("after SaveDeliveries (-want +got):\n%s", d)
	}
	// The cursor never moves back (a stale leader's write).
	stale := *w
	stale.Cursor = 5
	if err := s.SaveDeliveries(ctx, &stale, nil, 10); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.GetWebhook(ctx, w.ID); got.Cursor != 12 {
		t.Errorf("cursor after a stale update = %d, want 12", got.Cursor)
	}
	if err := s.SaveDeliveries(ctx, sampleWebhook("whk-none", t0), nil, 10); !errors.Is(err, broker.ErrNotFound) {
		t.Errorf("SaveDeliveries of an unknown ID = %v, want ErrNotFound", err)
	}
}

func testWebhookDelete(t *testing.T, s webhook.Store) {
	ctx := t.Context()
	w := sampleWebhook("whk-d", time.Date(2026, 12, 6, 10, 0, 0, 0, time.UTC))
	if err := s.InsertWebhook(ctx, w); err != nil {
		t.Fatal(err)
	}
	if err := s.SaveDeliveries(ctx, w, []*webhook.Delivery{{WebhookID: w.ID, EventID: 1, EventType: "x", Attempt: 1, Time: w.CreatedAt}}, 10); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteWebhook(ctx, w.ID); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteWebhook(ctx, w.ID); !errors.Is(err, broker.ErrNotFound) {
		t.Errorf("second DeleteWebhook = %v, want ErrNotFound", err)
	}
	if l, err := s.ListDeliveries(ctx, w.ID, 10); err != nil || len(l) != 0 {
		t.Errorf("deliveries of a deleted webhook: %v, %v", l, err)
	}
	if err := s.SaveDeliveries(ctx, w, []*webhook.Delivery{{WebhookID: w.ID, EventID: 2, EventType: "x", Attempt: 1, Time: w.CreatedAt}}, 10); !errors.Is(err, broker.ErrNotFound) {
		t.Errorf("SaveDeliveries of a deleted webhook = %v, want ErrNotFound", err)
	}
}

func testWebhookDeliveries(t *testing.T, s webhook.Store) {
	ctx := t.Context()
	t0 := time.Date(2026, 12, 6, 10, 0, 0, 0, time.UTC)
	w1, w2 := sampleWebhook("whk-1", t0), sampleWebhook("whk-2", t0)
	for _, w := range []*webhook.Webhook{w1, w2} {
		if err := s.InsertWebhook(ctx, w); err != nil {
			t.Fatal(err)
		}
	}
	var want []*webhook.Delivery
	for turn := range 4 { // 2 attempts per turn, 8 in all
		var ds []*webhook.Delivery
		for j := range 2 {
			i := 2*turn + j
			ds = append(ds, &webhook.Delivery{WebhookID: "whk-1", EventID: int64(i + 1), EventType: broker.EventSessionState, Attempt: 1 + i%2,
				Time: t0.Add(time.Duration(i) * time.Second), Status: 500 - 300*(i%2), Error: fmt.Sprint("err", i%2),
				Duration: time.Duration(i) * time.Millisecond})
		}
		if err := s.SaveDeliveries(ctx, w1, ds, 5); err != nil {
			t.Fatal(err)
		}
		if err := s.SaveDeliveries(ctx, w2, []*webhook.Delivery{{WebhookID: "whk-2", EventID: int64(turn), EventType: "x", Time: t0}}, 5); err != nil {
			t.Fatal(err)
		}
		want = append([]*webhook.Delivery{ds[1], ds[0]}, want...)
	}
	got, err := s.ListDeliveries(ctx, "whk-1", 100)
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(want[:5], got); d != "" {
		t.Errorf("ListDeliveries keeps the newest 5, newest first (-want +got):\n%s", d)
	}
	if got, _ := s.ListDeliveries(ctx, "whk-1", 2); len(got) != 2 || got[0].EventID != 8 {
		t.Errorf("ListDeliveries limit 2: %v", got)
	}
}

func testWebhookLastEventID(t *testing.T, s webhook.Store) {
	es, ok := s.(broker.EventStore)
	if !ok {
		t.Skip("the store keeps no events")
	}
	l, ok := s.(webhook.LastEventIDer)
	if !ok {
		t.Fatal("the store keeps events but tells no LastEventID: new webhooks would page through every event")
	}
	if id, err := l.LastEventID(t.Context()); err != nil || id != 0 {
		t.Fatalf("LastEventID of no events = %d, %v; want 0", id, err)
	}
	evs := []*broker.Event{{Type: broker.EventServerOpened, ServerID: "a"}, {Type: broker.EventServerClosed, ServerID: "a"}}
	if err := es.AppendEvents(t.Context(), evs); err != nil {
		t.Fatal(err)
	}
	if id, err := l.LastEventID(t.Context()); err != nil || id != evs[1].ID {
		t.Errorf("LastEventID = %d, %v; want %d", id, err, evs[1].ID)
	}
}

package httpapi

import (
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/internal/sqlite"
	"github.com/berth-dev/berth/internal/webhook"
)

// webhookBroker serves the API with a webhook registry on a real SQLite store.
func webhookBroker(t *testing.T) (*sqlite.Store, *httptest.Server) {
	svc, st, _ := pageBroker(t, 0)
	ts := httptest.NewTLSServer((&Server{Service: svc, Logger: slog.New(slog.DiscardHandler),
		Webhooks: &webhook.Registry{Store: st}}).Handler())
	t.Cleanup(ts.Close)
	return st, ts
}

// TestWebhooksAPI drives the webhook routes with the api client over real
// HTTPS (answers checked against api/openapi.yaml): create with a
// generated secret shown once, list, read, the delivery log, delete.
func TestWebhooksAPI(t *testing.T) {
	st, ts := webhookBroker(t)
	ctx := t.Context()
	c := &api.Client{BrokerURL: ts.URL, HTTPClient: specChecked(t, ts)}
	created, err := c.CreateWebhook(ctx, api.CreateWebhookRequest{Url: "https://hooks.example.com/berth", EventTypes: []string{"session.*"}})
	if err != nil {
		t.Fatal(err)
	}
	h := created.Webhook
	if !strings.HasPrefix(h.Secret, "whsec_") || h.State != webhook.StateEnabled || h.Url != "https://hooks.example.com/berth" ||
		len(h.EventTypes) != 1 || h.EventTypes[0] != "session.*" {
		t.Errorf("created: %+v", h)
	}
	stored, err := st.GetWebhook(ctx, h.Id)
	if err != nil || stored.Secret != h.Secret {
		t.Fatalf("stored secret differs from the one shown: %v", err)
	}
	list, err := c.DescribeWebhooks(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(list.Webhooks) != 1 || list.Webhooks[0].Id != h.Id || list.Webhooks[0].Secret != "" {
		t.Errorf("DescribeWebhooks: %+v (no secret expected)", list.Webhooks)
	}
	got, err := c.GetWebhook(ctx, h.Id)
	if err != nil || got.Webhook.Secret != "" || got.Webhook.Id != h.Id {
		t.Errorf("GetWebhook: %+v, %v", got, err)
	}
	at := time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)
	stored.Cursor, stored.Attempts = 9, 0
	if err := st.SaveDeliveries(ctx, stored, []*webhook.Delivery{
		{WebhookID: h.Id, EventID: 9, EventType: "session.state", Attempt: 1, Time: at, Status: 503, Duration: 3 * time.Millisecond},
		{WebhookID: h.Id, EventID: 9, EventType: "session.state", Attempt: 2, Time: at.Add(time.Second), Status: 204, Duration: 3 * time.Millisecond},
	}, 100); err != nil {
		t.Fatal(err)
	}
	ds, err := c.DescribeWebhookDeliveries(ctx, h.Id, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(ds.Deliveries) != 2 || !ds.Deliveries[0].Delivered || ds.Deliveries[0].Attempt != 2 || ds.Deliveries[1].StatusCode != 503 ||
		ds.Deliveries[1].Delivered || ds.Deliveries[0].DurationMs != 3 {
		t.Errorf("deliveries, newest first: %+v", ds.Deliveries)
	}
	if ds, err := c.DescribeWebhookDeliveries(ctx, h.Id, 1); err != nil || len(ds.Deliveries) != 1 {
		t.Errorf("deliveries limit 1: %+v, %v", ds, err)
	}
	if _, err := c.DeleteWebhook(ctx, h.Id); err != nil {
		t.Fatal(err)
	}
	if _, err := c.GetWebhook(ctx, h.Id); err == nil {
		t.Error("GetWebhook after delete succeeded")
	}
}

func TestWebhooksAPI_Refusals(t *testing.T) {
	_, ts := webhookBroker(t)
	client := specChecked(t, ts)
	tests := []struct {
		name, method, path, body string
		status                   int
		want                     string
	}{
		{"no body", "POST", "/berth/v1/webhooks", "", 400, "body: is required"},
		{"no url", "POST", "/berth/v1/webhooks", `{"EventTypes":["session.state"]}`, 400, "Url: required"},
		{"plain http", "POST", "/berth/v1/webhooks", `{"Url":"http://hooks.example.com/"}`, 400, "Url: must be https"},
		{"bad type", "POST", "/berth/v1/webhooks", `{"Url":"https://a.example/","EventTypes":["x y"]}`, 400, "EventTypes[0]"},
		{"short secret", "POST", "/berth/v1/webhooks", `{"Url":"https://a.example/","Secret":"abc"}`, 400, "Secret: "},
		{"wrong JSON type", "POST", "/berth/v1/webhooks", `{"Url":"https://a.example/","EventTypes":"session.state"}`, 400, "EventTypes: expected an array"},
		{"unknown", "GET", "/berth/v1/webhooks/whk-nope", "", 404, `webhook \"whk-nope\" does not exist`},
		{"delete unknown", "DELETE", "/berth/v1/webhooks/whk-nope", "", 404, "does not exist"},
		{"deliveries unknown", "GET", "/berth/v1/webhooks/whk-nope/deliveries", "", 404, "does not exist"},
		{"bad limit", "GET", "/berth/v1/webhooks/whk-nope/deliveries?limit=0", "", 400, "limit: must be"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, err := http.NewRequestWithContext(t.Context(), tt.method, ts.URL+tt.path, strings.NewReader(tt.body))
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("Content-Type", "application/json")
			resp, err := client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tt.status || !strings.Contains(string(body), tt.want) {
				t.Errorf("%d %s, want %d with %q", resp.StatusCode, body, tt.status, tt.want)
			}
		})
	}
	// Without a registry the routes answer 404.
	svc, _, _ := pageBroker(t, 0)
	bare := httptest.NewTLSServer((&Server{Service: svc, Logger: slog.New(slog.DiscardHandler)}).Handler())
	t.Cleanup(bare.Close)
	resp, err := bare.Client().Get(bare.URL + "/berth/v1/webhooks")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("no registry: %d, want 404", resp.StatusCode)
	}
}

package main

import (
	"strings"
	"testing"
)

// TestRun_WebhookRequests checks the requests of the webhook commands for
// their options, and that create-webhook prints the secret.
func TestRun_WebhookRequests(t *testing.T) {
	fb := newFakeBroker(t)
	hook := `{"Id":"whk-1","Url":"https://h.example/b","EventTypes":["session.*"],"CreatedAt":"2026-12-06T12:00:00Z","State":"ENABLED","LastEventId":0,"FailedAttempts":0`
	fb.answer("/berth/v1/webhooks", 200, `{"RequestId":"r","Webhooks":[`+hook+`}]}`)
	fb.answer("/berth/v1/webhooks/whk-1", 200, `{"RequestId":"r","Webhook":`+hook+`}}`)
	fb.answer("/berth/v1/webhooks/whk-1/deliveries", 200, `{"RequestId":"r","Deliveries":[{"EventId":7,"EventType":"session.state","Attempt":1,`+
		`"Time":"2026-12-06T12:00:01Z","StatusCode":503,"DurationMs":4,"Delivered":false}]}`)
	tests := []struct {
		name                      string
		args                      []string
		method, path, query, body string
	}{
		{"create-webhook", []string{"create-webhook", "--url", "https://h.example/b", "--event-types", "session.*,server.opened", "--secret", "0123456789abcdef"},
			"POST", "/berth/v1/webhooks", "", `{"Url":"https://h.example/b","EventTypes":["session.*","server.opened"],"Secret":"0123456789abcdef"}`},
		{"create-webhook minimal", []string{"create-webhook", "--url", "https://h.example/b"}, "POST", "/berth/v1/webhooks", "", `{"Url":"https://h.example/b"}`},
		{"describe-webhooks", []string{"describe-webhooks"}, "GET", "/berth/v1/webhooks", "", ""},
		{"describe-webhooks one", []string{"describe-webhooks", "--webhook-id", "whk-1"}, "GET", "/berth/v1/webhooks/whk-1", "", ""},
		{"delete-webhook", []string{"delete-webhook", "--webhook-id", "whk-1"}, "DELETE", "/berth/v1/webhooks/whk-1", "", ""},
		{"describe-webhook-deliveries", []string{"describe-webhook-deliveries", "--webhook-id", "whk-1", "--limit", "20"},
			"GET", "/berth/v1/webhooks/whk-1/deliveries", "limit=20", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := len(fb.calls())
			_, stderr, code := runCLI(t, fb.env(t), tt.args...)
			if code != 0 {
				t.Fatalf("exit %d: %s", code, stderr)
			}
			calls := fb.calls()[before:]
			if len(calls) != 1 {
				t.Fatalf("%d API calls, want 1: %+v", len(calls), calls)
			}
			if c := calls[0]; c.Method != tt.method || c.Path != tt.path || c.Query != tt.query || c.Body != tt.body {
				t.Errorf("request = %s %s?%s %s\nwant      %s %s?%s %s", c.Method, c.Path, c.Query, c.Body, tt.method, tt.path, tt.query, tt.body)
			}
		})
	}
	out, stderr, code := runCLI(t, fb.env(t), "describe-webhook-deliveries", "--webhook-id", "whk-1", "--output", "table")
	if code != 0 || !strings.Contains(out, "503") || !strings.Contains(out, "session.state") {
		t.Errorf("deliveries table: exit %d: %s%s", code, out, stderr)
	}
	if _, stderr, code := runCLI(t, fb.env(t), "create-webhook"); code == 0 || !strings.Contains(stderr, "url") {
		t.Errorf("create-webhook without --url: exit %d: %s", code, stderr)
	}
}

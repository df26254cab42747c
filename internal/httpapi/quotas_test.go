package httpapi

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/internal/broker"
	"github.com/berth-dev/berth/internal/sqlite"
)

// TestQueueAPI lists the create queue over the API with the api client
// (answers checked against api/openapi.yaml): positions in the fair order
// and why each session waits.
func TestQueueAPI(t *testing.T) {
	ctx := context.Background()
	st, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "b.db"))
	if err != nil {
		t.Fatal(err)
	}
	svc, err := broker.New(ctx, st, acceptAll{}, noTokens{}, broker.Config{BrokerID: "test", HeartbeatTimeout: time.Hour,
		Limits: broker.SessionLimits{MaxSessions: 1}}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	info := testInfo(0)
	info.MaxVirtualSessions = 2
	if err := svc.AgentConnected(ctx, "", "srv-0", info, nil); err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewTLSServer((&Server{Service: svc, Logger: slog.New(slog.DiscardHandler)}).Handler())
	t.Cleanup(func() { ts.Close(); st.Close() })
	c := &api.Client{BrokerURL: ts.URL, HTTPClient: specChecked(t, ts)}

	var reqs []api.CreateSessionRequest
	for _, owner := range []string{"alice", "alice", "alice", "bob", "carol", "dave"} {
		reqs = append(reqs, api.CreateSessionRequest{Name: "d", Owner: owner, Type: "VIRTUAL", EnqueueRequest: true})
	}
	for _, r := range reqs { // one at a time: creation order is queue order
		if _, err := c.CreateSessions(t.Context(), []api.CreateSessionRequest{r}); err != nil {
			t.Fatal(err)
		}
	}
	q, err := c.DescribeQueue(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	// alice and bob were placed (2 of 2 on the server); alice's other two
	// wait for her quota, carol and dave for room, in round-robin order
	// counting what each runs: alice already runs one, so carol and dave
	// go first.
	want := []struct{ owner, reason string }{
		{"carol", broker.ReasonNoCapacity},
		{"dave", broker.ReasonNoCapacity},
		{"alice", "quota: user alice has 1 of 1 sessions (session-max-sessions-per-user)"},
		{"alice", "quota: user alice has 1 of 1 sessions (session-max-sessions-per-user)"},
	}
	if len(q.Queue) != len(want) {
		t.Fatalf("queue %+v, want %d entries", q.Queue, len(want))
	}
	for i, w := range want {
		e := q.Queue[i]
		if e.Position != i+1 || e.Owner != w.owner || e.Reason != w.reason || e.EnqueuedAt == nil || e.SessionId == "" {
			t.Errorf("entry %d = %+v, want %s waiting for %q", i, e, w.owner, w.reason)
		}
	}
}

// TestTemplatesAPI_Limits carries a template's limits and GPUs through the API.
func TestTemplatesAPI_Limits(t *testing.T) {
	_, _, ts := pageBroker(t, 1)
	c := &api.Client{BrokerURL: ts.URL, HTTPClient: specChecked(t, ts)}
	in := api.Template{Name: "GPU", Type: "VIRTUAL", GPUs: 2,
		Limits: &api.TemplateLimits{IdleTimeoutMinutes: 0.5, MaxLifetimeHours: 8, MaxSessions: 10, MaxGPUs: -1}}
	created, err := c.CreateTemplate(t.Context(), in)
	if err != nil {
		t.Fatal(err)
	}
	got, err := c.GetTemplate(t.Context(), created.Template.Id)
	if err != nil {
		t.Fatal(err)
	}
	if got.Template.GPUs != 2 || got.Template.Limits == nil || *got.Template.Limits != *in.Limits {
		t.Errorf("GetTemplate = %+v (limits %+v)", got.Template, got.Template.Limits)
	}
	in.Name, in.Limits.MaxSessions = "GPU 2", -3
	_, err = c.CreateTemplate(t.Context(), in)
	var ae *api.Error
	if !errors.As(err, &ae) || ae.StatusCode != http.StatusBadRequest || !strings.Contains(ae.Message, "Limits.MaxSessions: must be 0 (unset), positive, or -1 (off)") {
		t.Errorf("bad limits = %v, want 400 naming Limits.MaxSessions", err)
	}
}

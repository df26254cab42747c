package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"io"
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

// lifetimeBroker serves the API of a broker whose sessions live 1h and may
// be extended by 2h, with one READY session of alice's, created at created
// and with one client connected; it returns the session's ID.
func lifetimeBroker(t *testing.T, created time.Time) (*broker.Service, *httptest.Server, string) {
	t.Helper()
	ctx := context.Background()
	st, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "b.db"))
	if err != nil {
		t.Fatal(err)
	}
	svc, err := broker.New(ctx, st, acceptAll{}, noTokens{}, broker.Config{BrokerID: "test", HeartbeatTimeout: time.Hour,
		Limits: broker.SessionLimits{MaxLifetimeHours: 1, MaxExtensionHours: 2, IdleTimeoutMinutes: 30}},
		slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	if err := svc.AgentConnected(ctx, "", "srv-0", testInfo(0), []broker.SessionReport{{ID: "s-1", Name: "d", Owner: "alice",
		Type: broker.TypeVirtual, State: broker.StateReady, CreationTime: created, NumOfConnections: 1, LastInputTime: created}}); err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewTLSServer((&Server{Service: svc, Logger: slog.New(slog.DiscardHandler)}).Handler())
	t.Cleanup(func() { ts.Close(); st.Close() })
	return svc, ts, "s-1"
}

// TestExtendSessionAPI extends a session over the API with the api client
// (answers checked against api/openapi.yaml) and reads its deadlines.
func TestExtendSessionAPI(t *testing.T) {
	created := time.Now().UTC().Truncate(time.Millisecond).Add(-10 * time.Minute)
	_, ts, id := lifetimeBroker(t, created)
	ctx := t.Context()
	c := &api.Client{BrokerURL: ts.URL, HTTPClient: specChecked(t, ts)}

	lt, err := c.SessionLifetime(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	// The idle deadline is 30m after the last input or after the session
	// became READY, whichever is later.
	if lt.ExpiresAt == nil || !lt.ExpiresAt.Equal(created.Add(time.Hour)) || lt.ExtensionLeftSeconds != 7200 ||
		lt.IdleDisconnectAt == nil || lt.IdleDisconnectAt.Before(created.Add(30*time.Minute)) || lt.DisconnectedDeleteAt != nil ||
		lt.LastInputTime == nil || lt.NumOfConnections != 1 {
		t.Errorf("SessionLifetime = %+v", lt)
	}
	out, err := c.ExtendSession(ctx, id, 30*time.Minute, "alice")
	if err != nil || out.SessionId != id || !out.ExpiresAt.Equal(created.Add(90*time.Minute)) {
		t.Fatalf("ExtendSession(30m) = %+v, %v; want the deadline at creation+1h30m", out, err)
	}
	out, err = c.ExtendSession(ctx, id, 0, "") // the default: 1h
	if err != nil || !out.ExpiresAt.Equal(created.Add(150*time.Minute)) {
		t.Fatalf("ExtendSession(default) = %+v, %v", out, err)
	}
	lt, err = c.SessionLifetime(ctx, id)
	if err != nil || lt.ExtensionSeconds != 5400 || lt.ExtensionLeftSeconds != 1800 {
		t.Errorf("SessionLifetime after 1h30m of extension = %+v, %v", lt, err)
	}
	_, err = c.ExtendSession(ctx, id, time.Hour, "bob")
	var ae *api.Error
	if !errors.As(err, &ae) || ae.StatusCode != http.StatusForbidden {
		t.Errorf("ExtendSession by another owner = %v, want 403", err)
	}
}

// TestExtendSessionAPI_Errors checks each refusal: status and the field
// or policy named.
func TestExtendSessionAPI_Errors(t *testing.T) {
	_, ts, id := lifetimeBroker(t, time.Now().UTC())
	client := specChecked(t, ts)
	path := "/berth/v1/sessions/" + id + "/extend"
	tests := []struct {
		name, method, path, body string
		status                   int
		want                     string
	}{
		{"negative duration", "POST", path, `{"By":"-1h"}`, 400, "By: must be positive"},
		{"zero seconds", "POST", path, `{"By":0}`, 400, "By: must be positive"},
		{"not a duration", "POST", path, `{"By":"soon"}`, 400, `By: "soon" is not a duration`},
		{"wrong type", "POST", path, `{"By":true}`, 400, "By: must be a string or a number"},
		{"too long", "POST", path, `{"By":"1000000h"}`, 400, "By: is too long"},
		{"over the cap", "POST", path, `{"By":"3h"}`, 400, "By: at most 2h"},
		{"bad JSON", "POST", path, `{"By":`, 400, "body: invalid JSON"},
		{"unknown session", "POST", "/berth/v1/sessions/nope/extend", `{"By":"1h"}`, 404, "does not exist"},
		{"lifetime of unknown session", "GET", "/berth/v1/sessions/nope/lifetime", "", 404, "does not exist"},
		{"lifetime of another owner", "GET", "/berth/v1/sessions/" + id + "/lifetime?owner=bob", "", 403, "owner"},
		{"seconds as a string", "POST", path, `{"By":"7200"}`, 200, ""},
		{"nothing left", "POST", path, `{"By":"1h"}`, 400, "session-max-extension-hours: no extension left"},
	}
	for _, tc := range tests {
		req, err := http.NewRequestWithContext(t.Context(), tc.method, ts.URL+tc.path, strings.NewReader(tc.body))
		if err != nil {
			t.Fatal(err)
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if tc.status == 200 {
			if resp.StatusCode != 200 {
				t.Errorf("%s: %d %s, want 200", tc.name, resp.StatusCode, body)
			}
			continue
		}
		var e api.ErrorResponse
		if err := json.Unmarshal(body, &e); err != nil {
			t.Fatalf("%s: the answer is not a JSON error: %s", tc.name, body)
		}
		if resp.StatusCode != tc.status || !strings.Contains(e.Error, tc.want) {
			t.Errorf("%s: %s %s = %d %s, want %d with %q", tc.name, tc.method, tc.path, resp.StatusCode, body, tc.status, tc.want)
		}
	}
}

// TestDescribeSessions_Activity: the connections and the last disconnection
// an agent reports reach DescribeSessions (NumOfConnections,
// LastDisconnectionTime, as in Amazon's document), and berth's lifetime
// answer shows the disconnected deadline then.
func TestDescribeSessions_Activity(t *testing.T) {
	created := time.Now().UTC().Truncate(time.Millisecond).Add(-time.Hour)
	svc, ts, id := lifetimeBroker(t, created)
	left := created.Add(30 * time.Minute)
	if err := svc.AgentUpdate(t.Context(), "srv-0", nil, []broker.SessionReport{{ID: id, Name: "d", Owner: "alice",
		Type: broker.TypeVirtual, State: broker.StateReady, CreationTime: created, NumOfConnections: 0,
		LastDisconnectionTime: left, LastInputTime: created}}); err != nil {
		t.Fatal(err)
	}
	body := string(describe(t, ts, `{"SessionIds":["`+id+`"]}`))
	want := `"LastDisconnectionTime":"` + left.Format(time.RFC3339Nano) + `"`
	if !strings.Contains(body, `"NumOfConnections":0`) || !strings.Contains(body, want) {
		t.Errorf("DescribeSessions = %s\nwant NumOfConnections 0 and %s", body, want)
	}
	if err := svc.AgentUpdate(t.Context(), "srv-0", nil, []broker.SessionReport{{ID: id, Name: "d", Owner: "alice",
		Type: broker.TypeVirtual, State: broker.StateReady, CreationTime: created, NumOfConnections: 2,
		LastDisconnectionTime: left, LastInputTime: created}}); err != nil {
		t.Fatal(err)
	}
	if body := string(describe(t, ts, `{"SessionIds":["`+id+`"]}`)); !strings.Contains(body, `"NumOfConnections":2`) {
		t.Errorf("DescribeSessions after two clients connected = %s", body)
	}
}

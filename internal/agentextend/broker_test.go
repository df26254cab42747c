package agentextend_test

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

	"github.com/berth-dev/berth/internal/agentextend"
	"github.com/berth-dev/berth/internal/broker"
	"github.com/berth-dev/berth/internal/sqlite"
)

type noDispatch struct{}

func (noDispatch) Dispatch(context.Context, string, broker.Command) (*broker.Result, error) {
	return nil, broker.ErrAgentUnreachable
}

type noTokens struct{}

func (noTokens) IssueConnectionToken(context.Context, string, string, string) (string, error) {
	return "", errors.New("no tokens in this test")
}

// TestHandler_RealBroker: the handler on the real broker core (SQLite):
// session s1, reported by agent-a's server, has a 1 h lifetime and up to
// 2 h of extension. Its owner extends it by the default hour, then by 2 h,
// which is cut to the hour left; then nothing remains. Another agent, and a
// user who is not the owner, are refused.
func TestHandler_RealBroker(t *testing.T) {
	ctx := context.Background()
	st, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "berth.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	svc, err := broker.New(ctx, st, noDispatch{}, noTokens{}, broker.Config{
		BrokerID: "b1",
		Limits:   broker.SessionLimits{MaxLifetimeHours: 1, MaxExtensionHours: 2},
	}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	created := time.Now().UTC().Truncate(time.Millisecond)
	if err := svc.AgentConnected(ctx, "agent-a", "srv-a", broker.ServerInfo{Hostname: "desk-a", IP: "10.0.0.7", Healthy: true},
		[]broker.SessionReport{{ID: "s1", Owner: "alice", Type: "VIRTUAL", State: "READY", CreationTime: created}}); err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle("POST /agent/sessions/{id}/extend", &agentextend.Handler{Auth: auth{}, Sessions: svc, Extender: svc})
	srv := httptest.NewServer(mux)
	defer srv.Close()
	post := func(agent, secret, session, body string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodPost, srv.URL+"/agent/sessions/"+session+"/extend", strings.NewReader(body))
		req.SetBasicAuth(agent, secret)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	deadline := func(body string) time.Time {
		var r agentextend.Response
		if err := json.Unmarshal([]byte(body), &r); err != nil {
			t.Fatalf("answer %q: %v", body, err)
		}
		return r.Deadline
	}

	status, body := post("agent-a", "a", "s1", `{"user":"alice"}`)
	if status != 200 || !deadline(body).Equal(created.Add(2*time.Hour)) {
		t.Fatalf("default extension: %d %s, want the deadline %v", status, body, created.Add(2*time.Hour))
	}
	status, body = post("agent-a", "a", "s1", `{"user":"alice","by_seconds":7200}`)
	if status != 200 || !deadline(body).Equal(created.Add(3*time.Hour)) {
		t.Fatalf("extension cut to the cap: %d %s, want the deadline %v", status, body, created.Add(3*time.Hour))
	}
	for _, tc := range []struct {
		agent, secret, body string
		status              int
		want                string
	}{
		{"agent-a", "a", `{"user":"alice"}`, 400, "session-max-extension-hours"},
		{"agent-a", "a", `{"user":"mallory"}`, 403, ""},
		{"agent-b", "b", `{"user":"alice"}`, 404, "not a session of this agent"},
	} {
		if status, body := post(tc.agent, tc.secret, "s1", tc.body); status != tc.status || !strings.Contains(body, tc.want) {
			t.Errorf("%s %s: %d %q, want %d %q", tc.agent, tc.body, status, body, tc.status, tc.want)
		}
	}
}

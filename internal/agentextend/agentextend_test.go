package agentextend_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/agentextend"
	"github.com/berth-dev/berth/internal/broker"
)

// auth knows two agent clients: agent-a (secret "a") and agent-b ("b").
type auth struct{}

func (auth) AuthenticateAgent(_ context.Context, id, secret string) (string, error) {
	if (id == "agent-a" && secret == "a") || (id == "agent-b" && secret == "b") {
		return id, nil
	}
	return "", errors.New("bad credentials")
}

// sessions: s1 on agent-a's server, queued unplaced, the rest unknown.
type sessions struct{}

func (sessions) SessionForConnection(_ context.Context, id string) (*broker.SessionView, error) {
	switch id {
	case "s1":
		return &broker.SessionView{Server: &broker.Server{ID: "srv-a", AgentClientID: "agent-a"}}, nil
	case "queued":
		return &broker.SessionView{}, nil
	case "broken":
		return nil, errors.New("disk on fire at /var/lib/berth")
	}
	return nil, broker.Errorf(broker.CodeNotFound, "session %q does not exist", id)
}

// extender records the request and answers as told.
type extender struct {
	got broker.ExtendRequest
	err error
}

var deadline = time.Date(2026, 12, 8, 18, 0, 0, 0, time.UTC)

func (e *extender) ExtendSession(_ context.Context, r broker.ExtendRequest) (time.Time, error) {
	e.got = r
	if e.err != nil {
		return time.Time{}, e.err
	}
	return deadline, nil
}

func TestHandler(t *testing.T) {
	for _, tc := range []struct {
		name       string
		id, secret string // credentials; "" for none
		session    string
		body       string
		extErr     error
		status     int
		want       string // in the body
		wantReq    *broker.ExtendRequest
	}{
		{name: "good, default by", id: "agent-a", secret: "a", session: "s1", body: `{"user":"alice"}`, status: 200,
			want: `"deadline":"2026-12-08T18:00:00Z"`, wantReq: &broker.ExtendRequest{SessionID: "s1", Actor: "page:alice", Owner: "alice"}},
		{name: "good, by seconds", id: "agent-a", secret: "a", session: "s1", body: `{"user":"alice","by_seconds":7200}`, status: 200,
			want: `"deadline"`, wantReq: &broker.ExtendRequest{SessionID: "s1", By: 2 * time.Hour, Actor: "page:alice", Owner: "alice"}},
		{name: "no credentials", session: "s1", body: `{"user":"alice"}`, status: 401, want: "credentials are required"},
		{name: "bad credentials", id: "agent-a", secret: "x", session: "s1", body: `{"user":"alice"}`, status: 401, want: "invalid agent client credentials"},
		{name: "another agent's session", id: "agent-b", secret: "b", session: "s1", body: `{"user":"alice"}`, status: 404, want: "not a session of this agent"},
		{name: "unplaced session", id: "agent-a", secret: "a", session: "queued", body: `{"user":"alice"}`, status: 404, want: "not a session of this agent"},
		{name: "unknown session", id: "agent-a", secret: "a", session: "nope", body: `{"user":"alice"}`, status: 404, want: "not a session of this agent"},
		{name: "bad JSON", id: "agent-a", secret: "a", session: "s1", body: `{"user":`, status: 400, want: "body:"},
		{name: "no user", id: "agent-a", secret: "a", session: "s1", body: `{}`, status: 400, want: "user: is required"},
		{name: "negative by", id: "agent-a", secret: "a", session: "s1", body: `{"user":"alice","by_seconds":-5}`, status: 400, want: "by_seconds: must be 0"},
		{name: "by as text", id: "agent-a", secret: "a", session: "s1", body: `{"user":"alice","by_seconds":"1h"}`, status: 400, want: "by_seconds"},
		{name: "not the owner", id: "agent-a", secret: "a", session: "s1", body: `{"user":"mallory"}`,
			extErr: broker.Errorf(broker.CodeForbidden, "user mallory does not own session s1"), status: 403, want: "does not own"},
		{name: "cap reached", id: "agent-a", secret: "a", session: "s1", body: `{"user":"alice"}`,
			extErr: broker.Errorf(broker.CodeInvalidInput, "session-max-extension-hours: no extension remains (0s of 2h)"), status: 400, want: "session-max-extension-hours"},
		{name: "not implemented yet", id: "agent-a", secret: "a", session: "s1", body: `{"user":"alice"}`,
			extErr: broker.Errorf(broker.CodeUnavailable, "session lifetimes are not implemented yet"), status: 503, want: "not implemented yet"},
		{name: "store failure", id: "agent-a", secret: "a", session: "broken", body: `{"user":"alice"}`, status: 500, want: "internal error"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ext := &extender{err: tc.extErr}
			mux := http.NewServeMux()
			mux.Handle("POST /agent/sessions/{id}/extend", &agentextend.Handler{Auth: auth{}, Sessions: sessions{}, Extender: ext})
			srv := httptest.NewServer(mux)
			defer srv.Close()
			req, _ := http.NewRequest(http.MethodPost, srv.URL+"/agent/sessions/"+tc.session+"/extend", strings.NewReader(tc.body))
			if tc.id != "" {
				req.SetBasicAuth(tc.id, tc.secret)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != tc.status || !strings.Contains(string(b), tc.want) {
				t.Fatalf("got %d %q, want %d containing %q", resp.StatusCode, b, tc.status, tc.want)
			}
			if strings.Contains(string(b), "disk on fire") {
				t.Errorf("internal error text leaked: %q", b)
			}
			if tc.wantReq != nil {
				if ext.got != *tc.wantReq {
					t.Errorf("extend request %+v, want %+v", ext.got, *tc.wantReq)
				}
				var out agentextend.Response
				if err := json.Unmarshal(b, &out); err != nil || !out.Deadline.Equal(deadline) {
					t.Errorf("answer %q: %v", b, err)
				}
			} else if tc.extErr == nil && ext.got != (broker.ExtendRequest{}) {
				t.Errorf("refused request reached the extender: %+v", ext.got)
			}
		})
	}
}

package cgresolver

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/berth-dev/berth/internal/broker"
)

// sessionTable is the broker's view of a few sessions, as
// broker.Service.SessionForConnection gives it; the session "broken" fails
// as a store failure does.
type sessionTable map[string]*broker.SessionView

func (t sessionTable) SessionForConnection(_ context.Context, id string) (*broker.SessionView, error) {
	if id == "broken" {
		return nil, errors.New("database is locked")
	}
	if v, ok := t[id]; ok {
		return v, nil
	}
	return nil, broker.Errorf(broker.CodeNotFound, "session %q does not exist", id)
}

func view(id, state string, info broker.ServerInfo) *broker.SessionView {
	return &broker.SessionView{
		Session: &broker.Session{ID: id, Owner: "alice", State: state},
		Server:  &broker.Server{ID: "srv-" + id, Info: info},
	}
}

// resolve posts q to h and returns the status and the decoded body.
func resolve(t *testing.T, h http.Handler, method string, q url.Values) (int, map[string]any) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(method, "/resolveSession?"+q.Encode(), nil))
	if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
		t.Errorf("content type %q", ct)
	}
	if cc := rec.Header().Get("Cache-Control"); cc != "no-store" {
		t.Errorf("cache control %q", cc)
	}
	var out map[string]any
	if err := json.Unmarshal(rec.Body.Bytes(), &out); err != nil {
		t.Fatalf("decode %q: %v", rec.Body.String(), err)
	}
	return rec.Code, out
}

func TestHandler(t *testing.T) {
	both := broker.ServerInfo{IP: "10.0.0.5", WebURLPath: "/dcv", Endpoints: []broker.Endpoint{
		{IPAddress: "10.0.0.6", Port: 8443, Protocol: "HTTP"},
		{Port: 8444, WebURLPath: "/quic", Protocol: "QUIC"},
	}}
	sessions := sessionTable{
		"both":      view("both", broker.StateReady, both),
		"port-only": view("port-only", broker.StateReady, broker.ServerInfo{Hostname: "desk-1", Port: 8443, WebURLPath: "/p"}),
		"creating":  view("creating", broker.StateCreating, both),
		"no-server": {Session: &broker.Session{ID: "no-server", State: broker.StateReady}},
		"mapped":    view("mapped", broker.StateReady, broker.ServerInfo{IP: "10.0.0.7", Port: 8443}),
	}
	dir := t.TempDir()
	if err := WriteDNSMappings(dir, []DNSMapping{{ServerIDType: "Id", ServerID: "srv-mapped", DNSNames: DNSNames{InternalDNSName: "mapped.internal"}}}); err != nil {
		t.Fatal(err)
	}
	h := Handler(sessions, NewDNSMappings(dir, slog.New(slog.DiscardHandler)), slog.New(slog.DiscardHandler))

	for _, tc := range []struct {
		name      string
		q         url.Values
		code      int
		want      map[string]any // the whole answer
		errPrefix string         // or the start of its error
	}{
		{"HTTP endpoint, its own address, the server's path", url.Values{"sessionId": {"both"}, "transport": {"HTTP"}, "clientIpAddress": {"203.0.113.9"}}, 200,
			map[string]any{"SessionId": "both", "TransportProtocol": "HTTP", "DcvServerEndpoint": "10.0.0.6", "Port": 8443.0, "WebUrlPath": "/dcv"}, ""},
		{"QUIC endpoint, the server's address, its own path", url.Values{"sessionId": {"both"}, "transport": {"quic"}, "clientIpAddress": {"[2001:db8::1]:5000"}}, 200,
			map[string]any{"SessionId": "both", "TransportProtocol": "QUIC", "DcvServerEndpoint": "10.0.0.5", "Port": 8444.0, "WebUrlPath": "/quic"}, ""},
		{"no endpoints: HTTP on the port, by host name", url.Values{"sessionId": {"port-only"}, "transport": {"HTTP"}}, 200,
			map[string]any{"SessionId": "port-only", "TransportProtocol": "HTTP", "DcvServerEndpoint": "desk-1", "Port": 8443.0, "WebUrlPath": "/p"}, ""},
		{"mapped server: its internal DNS name", url.Values{"sessionId": {"mapped"}, "transport": {"HTTP"}}, 200,
			map[string]any{"SessionId": "mapped", "TransportProtocol": "HTTP", "DcvServerEndpoint": "mapped.internal", "Port": 8443.0, "WebUrlPath": ""}, ""},
		{"no QUIC on a port-only server", url.Values{"sessionId": {"port-only"}, "transport": {"QUIC"}}, 404, nil, "the server of session"},
		{"not READY", url.Values{"sessionId": {"creating"}, "transport": {"HTTP"}}, 404, nil, `session "creating" is CREATING`},
		{"not placed", url.Values{"sessionId": {"no-server"}, "transport": {"HTTP"}}, 404, nil, `session "no-server" is READY, not READY`},
		{"unknown", url.Values{"sessionId": {"nope"}, "transport": {"HTTP"}}, 404, nil, `session "nope" does not exist`},
		{"store failure", url.Values{"sessionId": {"broken"}, "transport": {"HTTP"}}, 503, nil, "could not read the session"},
		{"no sessionId", url.Values{"transport": {"HTTP"}}, 400, nil, "sessionId:"},
		{"long sessionId", url.Values{"sessionId": {strings.Repeat("x", 257)}, "transport": {"HTTP"}}, 400, nil, "sessionId:"},
		{"no transport", url.Values{"sessionId": {"both"}}, 400, nil, "transport:"},
		{"bad transport", url.Values{"sessionId": {"both"}, "transport": {"UDP"}}, 400, nil, "transport:"},
		{"bad clientIpAddress", url.Values{"sessionId": {"both"}, "transport": {"HTTP"}, "clientIpAddress": {"host.example"}}, 400, nil, "clientIpAddress:"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, out := resolve(t, h, http.MethodPost, tc.q)
			if code != tc.code {
				t.Fatalf("status %d %v, want %d", code, out, tc.code)
			}
			if tc.want != nil {
				got, _ := json.Marshal(out)
				want, _ := json.Marshal(tc.want)
				if string(got) != string(want) {
					t.Fatalf("answer %s, want %s", got, want)
				}
				return
			}
			if msg, _ := out["error"].(string); !strings.HasPrefix(msg, tc.errPrefix) || len(out) != 1 {
				t.Fatalf("answer %v, want only an error starting %q", out, tc.errPrefix)
			}
		})
	}
}

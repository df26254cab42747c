package httpapi

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/berth-dev/berth/api"
)

// describeServersBody posts a DescribeServers request and returns the body.
func describeServersBody(t *testing.T, ts *httptest.Server, req string) []byte {
	t.Helper()
	return postPage(t, ts, "/describeServers", req)
}

// TestDescribeServers_PageMatchesEncodingJSON checks the DescribeServers page
// built from the servers' cached encodings byte for byte against
// encoding/json of the api types, on every page of a paged scan and of a
// scan by ID, when the encodings are fresh, cached, and after the servers
// changed (a new host report, a closed server, an unreachable one, a
// session moving the counts) and one relinked.
func TestDescribeServers_PageMatchesEncodingJSON(t *testing.T) {
	ctx := context.Background()
	svc, _, ts := pageBroker(t, 5)
	check := func(t *testing.T) {
		t.Helper()
		for _, tt := range []struct {
			name  string
			ids   []string
			max   int
			pages int
		}{
			{name: "paged", max: 2, pages: 3},
			{name: "all", pages: 1},
			{name: "by ID", ids: []string{"srv-3", "srv-1", "nope"}, pages: 1},
		} {
			token := ""
			pages := 0
			for {
				body := map[string]any{}
				if tt.max > 0 {
					body["MaxResults"] = tt.max
				}
				if tt.ids != nil {
					body["ServerIds"] = tt.ids
				}
				if token != "" {
					body["NextToken"] = token
				}
				req, _ := json.Marshal(body)
				got := describeServersBody(t, ts, string(req))
				var resp api.DescribeServersResponse
				if err := json.Unmarshal(got, &resp); err != nil {
					t.Fatalf("%s: invalid page %s: %v", tt.name, got, err)
				}
				list, next, err := svc.DescribeServers(ctx, tt.ids, tt.max, token)
				if err != nil {
					t.Fatal(err)
				}
				want := api.DescribeServersResponse{RequestId: resp.RequestId, Servers: make([]api.Server, len(list)), NextToken: next}
				for i, v := range list {
					want.Servers[i] = serverFromView(v)
				}
				wantJSON, err := json.Marshal(want)
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(got, wantJSON) {
					t.Fatalf("%s: page %d differs:\n got %s\nwant %s", tt.name, pages, got, wantJSON)
				}
				pages++
				if token = resp.NextToken; token == "" {
					break
				}
			}
			if pages != tt.pages {
				t.Fatalf("%s: %d pages, want %d", tt.name, pages, tt.pages)
			}
		}
	}
	t.Run("fresh", check)
	t.Run("cached", check)

	changeServers(t, svc, "renamed <&>")
	t.Run("changed", check)
	got := string(describeServersBody(t, ts, `{}`))
	for _, want := range []string{`"Hostname":"renamed \u003c\u0026\u003e"`, `"Value":"moved"`, `"UnavailabilityReason":"SERVER_CLOSED"`,
		`"UnavailabilityReason":"UNREACHABLE_AGENT"`, `"VirtualSessionCount":1`} {
		if !strings.Contains(got, want) {
			t.Errorf("page after the changes lacks %s:\n%s", want, got)
		}
	}
	if err := svc.AgentConnected(ctx, "", "srv-3", testInfo(3), nil); err != nil {
		t.Fatal(err)
	}
	t.Run("relinked", check)
	if got := string(describeServersBody(t, ts, `{"ServerIds":["srv-3"]}`)); strings.Contains(got, "UNREACHABLE_AGENT") {
		t.Errorf("relinked server still unreachable:\n%s", got)
	}
}

// BenchmarkDescribeServersPage serves a page of 1,000 servers (of 2,000
// linked ones) through the handler, with each server's cached encoding
// ("cached", what the broker does), against converting and encoding every
// server with encoding/json on every page ("encoding/json", what it did
// before the cache).
func BenchmarkDescribeServersPage(b *testing.B) {
	svc, _, _ := pageBroker(b, 2000)
	h := (&Server{Service: svc}).Handler()
	req := func() *http.Request {
		return httptest.NewRequest(http.MethodPost, "/describeServers", strings.NewReader(`{"MaxResults":1000}`))
	}
	b.Run("cached", func(b *testing.B) {
		for b.Loop() {
			w := httptest.NewRecorder()
			h.ServeHTTP(w, req())
			if w.Code != http.StatusOK {
				b.Fatalf("status %d: %s", w.Code, w.Body)
			}
		}
	})
	b.Run("encoding/json", func(b *testing.B) {
		ctx := context.Background()
		for b.Loop() {
			list, next, err := svc.DescribeServers(ctx, nil, 1000, "")
			if err != nil {
				b.Fatal(err)
			}
			resp := api.DescribeServersResponse{RequestId: requestID(), Servers: make([]api.Server, len(list)), NextToken: next}
			for i, v := range list {
				resp.Servers[i] = serverFromView(v)
			}
			w := httptest.NewRecorder()
			writeJSON(w, http.StatusOK, resp)
		}
	})
}

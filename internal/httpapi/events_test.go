package httpapi

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/internal/broker"
	"github.com/berth-dev/berth/internal/oauth"
	"github.com/berth-dev/berth/internal/sqlite"
)

var eventTokens = tokenVerifier{"tok": {ClientID: "c-1", Kind: oauth.KindAPI}}

// eventsBroker is a running broker on a temp SQLite file with server srv-0,
// its API on loopback behind bearer tokens ("tok"), and a client.
func eventsBroker(t *testing.T) (*broker.Service, *sqlite.Store, *httptest.Server, *api.Client) {
	t.Helper()
	ctx := context.Background()
	st, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "b.db"))
	if err != nil {
		t.Fatal(err)
	}
	svc, err := broker.New(ctx, st, acceptAll{}, noTokens{}, broker.Config{BrokerID: "test"}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	if err := svc.AgentConnected(ctx, "", "srv-0", testInfo(0), nil); err != nil {
		t.Fatal(err)
	}
	rctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() { _ = svc.Run(rctx) })
	ts := httptest.NewTLSServer((&Server{Service: svc, Verifier: eventTokens, Logger: slog.New(slog.DiscardHandler)}).Handler())
	t.Cleanup(func() { ts.Close(); cancel(); wg.Wait(); st.Close() })
	c := &api.Client{BrokerURL: ts.URL, HTTPClient: ts.Client()}
	return svc, st, ts, c
}

// bearer is an http.RoundTripper that adds the test token.
type bearer struct{ rt http.RoundTripper }

func (b bearer) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer tok")
	return b.rt.RoundTrip(r)
}

// authed returns c with the test token on every request.
func authed(c *api.Client) *api.Client {
	hc := *c.HTTPClient
	hc.Transport = bearer{hc.Transport}
	return &api.Client{BrokerURL: c.BrokerURL, HTTPClient: &hc}
}

// watch reads the stream in the background; the events arrive on the
// returned channel, which is closed when the stream ends.
func watch(t *testing.T, c *api.Client, in api.WatchRequest) <-chan api.Event {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	ch := make(chan api.Event, 4096)
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer close(ch)
		_ = c.WatchEvents(ctx, in, func(e api.Event) error {
			select {
			case ch <- e:
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		})
	}()
	t.Cleanup(func() { cancel(); <-done })
	return ch
}

// until reads events from ch until stop says the last one ends the wait.
func until(t *testing.T, ch <-chan api.Event, stop func(api.Event) bool) []api.Event {
	t.Helper()
	var got []api.Event
	for e := range ch {
		got = append(got, e)
		if stop(e) {
			return got
		}
	}
	t.Fatalf("the stream ended after %d events", len(got))
	return nil
}

// TestStreamEvents_SessionLife: a session's life (create, READY from its
// agent, delete) produces its session.state events in order through the
// stream, exactly as the store keeps them, with increasing IDs.
func TestStreamEvents_SessionLife(t *testing.T) {
	svc, st, _, c := eventsBroker(t)
	ctx := t.Context()
	ch := watch(t, authed(c), api.WatchRequest{Types: []string{"session.*"}})

	res, err := svc.CreateSessions(ctx, []broker.CreateRequest{{Name: "d", Owner: "alice", Type: broker.TypeVirtual}})
	if err != nil || res[0].Session == nil {
		t.Fatalf("create: %v %+v", err, res)
	}
	id := res[0].Session.ID
	if err := svc.AgentUpdate(ctx, "srv-0", nil, []broker.SessionReport{{ID: id, Name: "d", Owner: "alice", Type: broker.TypeVirtual, State: broker.StateReady}}); err != nil {
		t.Fatal(err)
	}
	if out := svc.DeleteSessions(ctx, []broker.DeleteRequest{{SessionID: id, Owner: "alice"}}); out[0].FailureReason != "" {
		t.Fatalf("delete: %s", out[0].FailureReason)
	}
	got := until(t, ch, func(e api.Event) bool { return e.SessionId == id && e.Data["state"] == broker.StateDeleted })

	stored, err := st.ListEvents(ctx, broker.EventFilter{Types: []string{"session.*"}})
	if err != nil {
		t.Fatal(err)
	}
	var want []api.Event
	for _, e := range stored {
		want = append(want, eventToAPI(e))
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("the stream differs from the store (-store +stream):\n%s", d)
	}
	var states []string
	for i, e := range got {
		if i > 0 && e.Id <= got[i-1].Id {
			t.Errorf("event %d after %d", e.Id, got[i-1].Id)
		}
		if e.SessionId != id || e.Type != broker.EventSessionState {
			t.Errorf("unexpected event %+v", e)
			continue
		}
		if s := e.Data["state"].(string); len(states) == 0 || states[len(states)-1] != s {
			states = append(states, s)
		}
		if e.Owner != "alice" {
			t.Errorf("event %d: owner %q", e.Id, e.Owner)
		}
	}
	if d := cmp.Diff([]string{"CREATING", "READY", "DELETING", "DELETED"}, states); d != "" {
		t.Errorf("the session's states (-want +got):\n%s", d)
	}
}

// emitN emits n server.idle events for servers tag-0..tag-(n-1), owned by
// tag, and returns their IDs from the store.
func emitN(t *testing.T, svc *broker.Service, st *sqlite.Store, tag string, n int) []int64 {
	t.Helper()
	var evs []broker.Event
	for i := range n {
		evs = append(evs, broker.Event{Type: broker.EventServerIdle, ServerID: fmt.Sprint(tag, "-", i), Owner: tag})
	}
	svc.Emit(t.Context(), evs...)
	got, err := st.ListEvents(t.Context(), broker.EventFilter{Owner: tag, Limit: 100000})
	if err != nil {
		t.Fatal(err)
	}
	var ids []int64
	for _, e := range got {
		ids = append(ids, e.ID)
	}
	if len(ids) < n {
		t.Fatalf("%d events of %s stored, want %d", len(ids), tag, n)
	}
	return ids[len(ids)-n:]
}

func eventIDs(evs []api.Event) []int64 {
	var out []int64
	for _, e := range evs {
		out = append(out, e.Id)
	}
	return out
}

// TestStreamEvents_Resume: a stream resumed after Last-Event-ID (or after)
// starts exactly after it: the older events are not repeated, none is
// missed, and the events committed after it arrive live, once.
func TestStreamEvents_Resume(t *testing.T) {
	svc, st, _, c := eventsBroker(t)
	ac := authed(c)
	first := emitN(t, svc, st, "a", 10)
	for _, after := range []int64{0, first[3], first[8]} {
		t.Run(fmt.Sprint("after ", after), func(t *testing.T) {
			ch := watch(t, ac, api.WatchRequest{After: after, Owner: "a"})
			var want []int64
			for _, id := range first {
				if id > after {
					want = append(want, id)
				}
			}
			got := eventIDs(until(t, ch, func(e api.Event) bool { return e.Id == want[len(want)-1] }))
			if d := cmp.Diff(want, got); d != "" {
				t.Errorf("resumed events (-want +got):\n%s", d)
			}
		})
	}
	// A stream that has caught up gets the events committed later, once;
	// the after parameter works as the header does.
	ch := watch(t, ac, api.WatchRequest{After: first[9], Owner: "a"})
	live := emitN(t, svc, st, "a", 10)
	got := eventIDs(until(t, ch, func(e api.Event) bool { return e.Id == live[len(live)-1] }))
	if d := cmp.Diff(live, got); d != "" {
		t.Errorf("live events (-want +got):\n%s", d)
	}
	resp := get(t, ac, "/berth/v1/events?owner=a&after="+fmt.Sprint(live[8]), nil)
	var viaParam []int64
	_ = api.ReadEvents(resp.Body, func(e api.Event) error {
		viaParam = append(viaParam, e.Id)
		if e.Id == live[9] {
			return io.EOF
		}
		return nil
	})
	resp.Body.Close()
	if d := cmp.Diff(live[9:], viaParam); d != "" {
		t.Errorf("after= (-want +got):\n%s", d)
	}
}

// get sends GET path with the client's transport.
func get(t *testing.T, c *api.Client, path string, hdr http.Header) *http.Response {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, c.BrokerURL+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	resp, err := c.HTTPClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

// TestStreamEvents_Filters: type (exact and prefix, repeatable) and owner.
func TestStreamEvents_Filters(t *testing.T) {
	svc, _, _, c := eventsBroker(t)
	ac := authed(c)
	svc.Emit(t.Context(),
		broker.Event{Type: broker.EventServerOpened, ServerID: "x"},
		broker.Event{Type: broker.EventPlacementFailed, Owner: "bob"},
		broker.Event{Type: broker.EventPlacementQueued, Owner: "alice"},
		broker.Event{Type: broker.EventServerIdle, ServerID: "y"},
		broker.Event{Type: broker.EventWebhookDisabled},
	)
	tests := []struct {
		in   api.WatchRequest
		want []string
	}{
		{api.WatchRequest{Types: []string{"placement.*"}}, []string{"placement.failed", "placement.queued"}},
		{api.WatchRequest{Types: []string{"server.idle", "webhook.disabled"}}, []string{"server.idle", "webhook.disabled"}},
		{api.WatchRequest{Owner: "alice"}, []string{"placement.queued"}},
		{api.WatchRequest{Owner: "bob", Types: []string{"placement.*"}}, []string{"placement.failed"}},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprint(tt.in), func(t *testing.T) {
			ch := watch(t, ac, tt.in)
			var got []string
			n := 0
			for _, e := range until(t, ch, func(api.Event) bool { n++; return n == len(tt.want) }) {
				got = append(got, e.Type)
			}
			if d := cmp.Diff(tt.want, got); d != "" {
				t.Errorf("(-want +got):\n%s", d)
			}
		})
	}
}

// TestStreamEvents_BadInput: bad filters and resume points answer 400
// naming the field; no token answers 401.
func TestStreamEvents_BadInput(t *testing.T) {
	_, _, _, c := eventsBroker(t)
	ac := authed(c)
	tests := []struct {
		path   string
		hdr    http.Header
		status int
		field  string
	}{
		{"/berth/v1/events", http.Header{"Last-Event-Id": {"x"}}, 400, "Last-Event-ID"},
		{"/berth/v1/events", http.Header{"Last-Event-Id": {"-1"}}, 400, "Last-Event-ID"},
		{"/berth/v1/events?after=1.5", nil, 400, "after"},
		{"/berth/v1/events?type=session%20state", nil, 400, "type"},
		{"/berth/v1/events?type=", nil, 400, "type"},
		{"/berth/v1/events?type=" + strings.Repeat("a", 65), nil, 400, "type"},
		{"/berth/v1/events?owner=a&owner=b", nil, 400, "owner"},
		{"/berth/v1/events?typ=x", nil, 400, "typ"},
	}
	for _, tt := range tests {
		t.Run(tt.path+fmt.Sprint(tt.hdr), func(t *testing.T) {
			resp := get(t, ac, tt.path, tt.hdr)
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != tt.status || !strings.Contains(string(body), tt.field) {
				t.Errorf("%d %s, want %d naming %s", resp.StatusCode, body, tt.status, tt.field)
			}
		})
	}
	resp := get(t, c, "/berth/v1/events", nil)
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("without a token: %d, want 401", resp.StatusCode)
	}
	err := c.WatchEvents(t.Context(), api.WatchRequest{}, func(api.Event) error { return nil })
	var ae *api.Error
	if !errors.As(err, &ae) || ae.StatusCode != http.StatusUnauthorized {
		t.Errorf("WatchEvents without a token: %v", err)
	}

}

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/berth-dev/berth/api"
)

// TestWatch_Resumes: berth watch prints one JSON event a line and, when
// the stream ends, reconnects with Last-Event-ID set to the last event it
// printed, with the same filters: nothing is printed twice or skipped.
func TestWatch_Resumes(t *testing.T) {
	var mu sync.Mutex
	var seen []string // Last-Event-ID and query of each connection
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen = append(seen, r.Header.Get("Last-Event-ID")+" "+r.URL.RawQuery)
		n := len(seen)
		mu.Unlock()
		w.Header().Set("Content-Type", "text/event-stream")
		ids := []int{1, 2}
		if n > 1 {
			ids = []int{3}
		}
		fmt.Fprint(w, ": hello\n\n")
		for _, id := range ids {
			fmt.Fprintf(w, "id: %d\nevent: session.state\ndata: {\"Id\":%d,\"Time\":\"2026-01-01T00:00:00Z\",\"Type\":\"session.state\",\"Owner\":\"alice\"}\n\n", id, id)
		}
	}))
	defer ts.Close()
	var out, errb bytes.Buffer
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sleeps := 0
	c := &cli{stdout: &out, stderr: &errb, sleep: func(ctx context.Context, d time.Duration) error {
		if sleeps++; sleeps == 2 {
			cancel()
			return ctx.Err()
		}
		return nil
	}}
	cl := &api.Client{BrokerURL: ts.URL}
	if err := c.watch(ctx, cl, api.WatchRequest{Types: []string{"session.*"}, Owner: "alice"}); err != nil {
		t.Fatal(err)
	}
	var ids []int64
	for line := range strings.Lines(out.String()) {
		var e api.Event
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			t.Fatalf("line %q: %v", line, err)
		}
		ids = append(ids, e.Id)
	}
	if d := cmp.Diff([]int64{1, 2, 3}, ids); d != "" {
		t.Errorf("printed events (-want +got):\n%s", d)
	}
	if d := cmp.Diff([]string{" owner=alice&type=session.%2A", "2 owner=alice&type=session.%2A"}, seen); d != "" {
		t.Errorf("connections (-want +got):\n%s", d)
	}
}

// TestWatch_Refused: a 4xx answer ends watch with the broker's error, with
// no retry.
func TestWatch_Refused(t *testing.T) {
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusBadRequest)
		fmt.Fprint(w, `{"error":"type: \"x y\" is not an event type","code":"INVALID_INPUT"}`)
	}))
	defer ts.Close()
	var out, errb bytes.Buffer
	c := &cli{stdout: &out, stderr: &errb, sleep: func(context.Context, time.Duration) error {
		t.Fatal("watch retried a refusal")
		return nil
	}}
	err := c.watch(t.Context(), &api.Client{BrokerURL: ts.URL}, api.WatchRequest{Types: []string{"x y"}})
	var ae *api.Error
	if !errors.As(err, &ae) || ae.StatusCode != 400 || !strings.Contains(ae.Message, "type") {
		t.Errorf("err = %v, want the broker's 400", err)
	}
}

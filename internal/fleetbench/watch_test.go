package fleetbench

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/internal/httpapi"
)

// TestWatchServers_AsksOnlyForPending: once the watch knows every server,
// it asks DescribeServers only for those it has not seen AVAILABLE (before,
// every pass paged through the whole fleet: about 10 MB a pass at 10,000
// servers, on the cores the broker needed); when the last comes, a pass over
// every server confirms, and the scan it writes is stamped no earlier than
// the last server's link.
func TestWatchServers_AsksOnlyForPending(t *testing.T) {
	ctx := context.Background()
	svc, _ := testService(t)
	for i := range 5 {
		connectServer(t, svc, i)
	}
	svc.AgentDisconnected(ctx, "srv-3")
	svc.AgentDisconnected(ctx, "srv-4")

	var mu sync.Mutex
	var asked [][]string // each DescribeServers call's ServerIds (nil: every server)
	h := (&httpapi.Server{Service: svc, Logger: slog.New(slog.DiscardHandler)}).Handler()
	ts := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/describeServers" {
			body, _ := io.ReadAll(r.Body)
			var req api.DescribeServersRequest
			_ = json.Unmarshal(body, &req)
			mu.Lock()
			asked = append(asked, req.ServerIds)
			mu.Unlock()
			r.Body = io.NopCloser(bytes.NewReader(body))
		}
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(ts.Close)
	calls := func() [][]string {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(asked)
	}

	c := &api.Client{BrokerURL: ts.URL, HTTPClient: ts.Client()}
	scans := make(chan probeScan, 100)
	wctx, stop := context.WithCancel(ctx)
	defer stop()
	go watchServers(wctx, c, 1, 5, func(s probeScan) { scans <- s })

	// The first pass pages through all; then the watch asks for the two.
	for s := range scans {
		if s.Err != "" || s.Available != 3 {
			t.Fatalf("pass before srv-3 and srv-4 link: %+v", s)
		}
		if n := len(calls()); n >= 3 {
			break
		}
	}
	got := calls()
	if got[0] != nil {
		t.Errorf("first call asked for %v, want every server", got[0])
	}
	for _, ids := range got[1:] {
		if !slices.Equal(ids, []string{"srv-3", "srv-4"}) {
			t.Errorf("a later call asked for %v, want [srv-3 srv-4]", ids)
		}
	}

	connectServer(t, svc, 3)
	connectServer(t, svc, 4)
	linked := time.Now()
	var last probeScan
	for s := range scans {
		if s.Err != "" {
			t.Fatalf("pass: %+v", s)
		}
		if s.Available >= 5 {
			last = s
			break
		}
	}
	all := calls()
	if all[len(all)-1] != nil {
		t.Errorf("the confirming call asked for %v, want every server", all[len(all)-1])
	}
	if at := time.Unix(0, last.At); at.Before(linked) {
		t.Errorf("all AVAILABLE stamped %v, before the last server linked (%v)", at, linked)
	}
}

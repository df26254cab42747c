package httpapi

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/audit"
	"github.com/berth-dev/berth/internal/broker"
	"github.com/berth-dev/berth/internal/sqlite"
)

// BenchmarkAuditOverhead measures what recording costs an API call: the
// same state-changing call (OpenServers: a store write; CreateSessions of
// one session) through the whole handler (authentication, decoding, the
// broker core, a real SQLite store), alternately through a handler with the
// audit log off and one with it on, on one broker and store, so that both
// see the same load (this machine is shared and noisy). It reports the mean
// time of a call of each (ns/call-off, ns/call-on) and their ratio
// (off/on, 1 = free), from one caller (the latency a call pays) and from 16
// at once. The appender's own work runs in the background and slows both
// alike; BenchmarkAuditAppend gives its cost per record. The benchmark
// waits for every record to be written before it stops.
func BenchmarkAuditOverhead(b *testing.B) {
	for _, op := range []string{"OpenServers", "CreateSessions"} {
		for _, callers := range []int{1, 16} {
			b.Run(fmt.Sprintf("%s/callers=%d", op, callers), func(b *testing.B) { benchAudit(b, op, callers) })
		}
	}
}

func benchAudit(b *testing.B, op string, callers int) {
	ctx := context.Background()
	st, err := sqlite.Open(ctx, filepath.Join(b.TempDir(), "b.db"))
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	svc, err := broker.New(ctx, st, acceptAll{}, noTokens{}, broker.Config{BrokerID: "bench", HeartbeatTimeout: time.Hour}, slog.New(slog.DiscardHandler))
	if err != nil {
		b.Fatal(err)
	}
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { _ = svc.Run(rctx); close(done) }()
	defer func() { cancel(); <-done }()
	for i := range 4 {
		if err := svc.AgentConnected(ctx, "", fmt.Sprintf("srv-%d", i), testInfo(i), nil); err != nil {
			b.Fatal(err)
		}
	}
	app := audit.NewAppender(st, "bench", slog.New(slog.DiscardHandler))
	handlers := [2]http.Handler{
		(&Server{Service: svc, Logger: slog.New(slog.DiscardHandler), Verifier: auditTokens}).Handler(),
		(&Server{Service: svc, Logger: slog.New(slog.DiscardHandler), Verifier: auditTokens, Audit: app}).Handler(),
	}
	path, body := "/openServers", `[{"ServerId":"srv-1"}]`
	if op == "CreateSessions" {
		path, body = "/createSessions", `[{"Name":"n","Owner":"alice","Type":"Console"}]`
	}
	var (
		mu    sync.Mutex
		spent [2]time.Duration
		calls [2]int
	)
	worker := func(n int, first int) {
		var my [2]time.Duration
		var cnt [2]int
		for i := range n {
			which := (first + i) % 2
			req := httptest.NewRequest(http.MethodPost, path, strings.NewReader(body))
			req.Header.Set("Authorization", "Bearer admin")
			req.RemoteAddr = "192.0.2.7:4000"
			w := httptest.NewRecorder()
			start := time.Now()
			handlers[which].ServeHTTP(w, req)
			my[which] += time.Since(start)
			cnt[which]++
			if w.Code != http.StatusOK {
				b.Errorf("%s: %d %s", path, w.Code, w.Body)
				return
			}
		}
		mu.Lock()
		for k := range 2 {
			spent[k] += my[k]
			calls[k] += cnt[k]
		}
		mu.Unlock()
	}
	b.ReportAllocs()
	b.ResetTimer()
	var wg sync.WaitGroup
	for c := range callers {
		n := b.N / callers
		if c < b.N%callers {
			n++
		}
		wg.Add(1)
		go func() { defer wg.Done(); worker(n, c%2) }()
	}
	wg.Wait()
	if err := app.Close(ctx); err != nil {
		b.Fatal(err)
	}
	b.StopTimer()
	if calls[0] == 0 || calls[1] == 0 {
		return
	}
	off, on := float64(spent[0])/float64(calls[0]), float64(spent[1])/float64(calls[1])
	b.ReportMetric(off, "ns/call-off")
	b.ReportMetric(on, "ns/call-on")
	b.ReportMetric(off/on, "off/on")
	if head, err := st.AuditHead(ctx); err != nil || head.Seq != int64(calls[1]) {
		b.Fatalf("%d records for %d audited calls: %v", head.Seq, calls[1], err)
	}
}

// BenchmarkAuditAppend is the appender's cost per record on SQLite, off the
// calls' path: batches of 40 records (what 10 ms of a busy API gathers)
// sealed and inserted in one transaction, the IDs read out of a
// CreateSessions request and answer first.
func BenchmarkAuditAppend(b *testing.B) {
	ctx := context.Background()
	st, err := sqlite.Open(ctx, filepath.Join(b.TempDir(), "b.db"))
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	reqBody := []byte(`[{"Name":"n","Owner":"alice","Type":"Virtual"}]`)
	respBody := []byte(`{"RequestId":"0b6c1a4e-3e8f-4c52-9a8e-6f0d2d1c9b11","SuccessfulList":[{"Id":"5f1c2d3e-4b5a-4c6d-8e7f-9a0b1c2d3e4f","Name":"n","Owner":"alice","Type":"VIRTUAL","State":"CREATING","Server":{"Id":"srv-1","Ip":"10.0.0.1","Hostname":"h"}}],"UnsuccessfulList":[]}`)
	const batch = 40
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i += batch {
		recs := make([]*audit.Record, 0, batch)
		for range min(batch, b.N-i) {
			r := &audit.Record{Time: time.Now(), ActorKind: audit.ActorClient, Actor: "c-1", Action: OpCreateSessions, Source: "192.0.2.7", Broker: "bench"}
			completeRecord(r, OpCreateSessions, http.StatusOK, reqBody, respBody)
			recs = append(recs, r)
		}
		if err := st.AppendAudit(ctx, recs); err != nil {
			b.Fatal(err)
		}
	}
}

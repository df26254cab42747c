package httpapi

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/audit"
	"github.com/berth-dev/berth/internal/broker"
	"github.com/berth-dev/berth/internal/sqlite"
)

// BenchmarkAuditOverhead measures what recording costs an API call: the
// same state-changing calls (OpenServers, a store write each; CreateSessions
// of one session) through the whole handler (authentication, decoding, the
// broker core, a real SQLite store) with the audit log off and on, from 8
// callers at once. With it on, each call's record is appended in batches by
// the appender, competing for SQLite's writer with the calls' own writes;
// the benchmark waits for every record to be written before it stops.
func BenchmarkAuditOverhead(b *testing.B) {
	for _, op := range []string{"OpenServers", "CreateSessions"} {
		for _, on := range []bool{false, true} {
			b.Run(fmt.Sprintf("%s/audit=%v", op, on), func(b *testing.B) {
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
				srv := &Server{Service: svc, Logger: slog.New(slog.DiscardHandler), Verifier: auditTokens}
				var app *audit.Appender
				if on {
					app = audit.NewAppender(st, "bench", slog.New(slog.DiscardHandler))
					srv.Audit = app
				}
				h := srv.Handler()
				path, body := "/openServers", `[{"ServerId":"srv-1"}]`
				if op == "CreateSessions" {
					path, body = "/createSessions", `[{"Name":"n","Owner":"alice","Type":"Console"}]`
				}
				b.ReportAllocs()
				b.SetParallelism(8)
				b.ResetTimer()
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						req := httptest.NewRequest(http.MethodPost, path, strings.NewReader(body))
						req.Header.Set("Authorization", "Bearer admin")
						req.RemoteAddr = "192.0.2.7:4000"
						w := httptest.NewRecorder()
						h.ServeHTTP(w, req)
						if w.Code != http.StatusOK {
							b.Errorf("%s: %d %s", path, w.Code, w.Body)
							return
						}
					}
				})
				if app != nil {
					if err := app.Close(ctx); err != nil {
						b.Fatal(err)
					}
				}
				b.StopTimer()
				if on {
					head, err := st.AuditHead(ctx)
					if err != nil || head.Seq != int64(b.N) {
						b.Fatalf("%d records for %d calls: %v", head.Seq, b.N, err)
					}
				}
			})
		}
	}
}

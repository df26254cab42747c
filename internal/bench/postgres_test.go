package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/internal/broker"
	"github.com/berth-dev/berth/internal/httpapi"
	"github.com/berth-dev/berth/internal/postgres"
	"github.com/berth-dev/berth/internal/postgres/pgtest"
)

// The PostgreSQL benchmarks need BERTH_TEST_PG_DSN (see internal/postgres/pgtest)
// and skip without it. Each gets a schema of its own and sets it up once (they
// use b.Loop, so -benchtime 3x runs the setup once and the loop 3 times).

// serverInfo is what the agent of server i reports, as newFleet registers it:
// 10 racks, a GPU on every third server, 32, 64 or 128 GB of RAM, no session
// limits.
func serverInfo(i int) broker.ServerInfo {
	racks := []string{"r0", "r1", "r2", "r3", "r4", "r5", "r6", "r7", "r8", "r9"}
	return broker.ServerInfo{
		Hostname: fmt.Sprintf("host-%05d", i), IP: fmt.Sprintf("10.%d.%d.%d", i>>16&255, i>>8&255, i&255), Port: 8443, WebURLPath: "/",
		Endpoints: []broker.Endpoint{{IPAddress: "10.0.0.1", Port: 8443, WebURLPath: "/", Protocol: "HTTP"}},
		Version:   "2024.0", AgentVersion: "bench", Driver: "sim", Healthy: true,
		Host: broker.Host{OSFamily: "linux", OSName: "Debian GNU/Linux", OSVersion: "12", KernelVersion: "6.1.0",
			MemTotal: 64 << 30, MemUsed: 8 << 30, CPUVendor: "GenuineIntel", CPUModel: "Xeon", CPUArch: "x86_64", CPUs: 16, CoresPerCPU: 8,
			GPUs: []broker.GPU{{Vendor: "NVIDIA", Model: "L4"}}},
		Tags: map[string]string{"rack": racks[i%10], "gpu": strconv.FormatBool(i%3 == 0), "ram_gb": strconv.Itoa(32 << (i % 3))},
	}
}

// pgServers registers servers srv-00000 ... through the store from 8
// goroutines, open and seen now, as AgentConnected stores them.
func pgServers(tb testing.TB, st *postgres.Store, n int) {
	tb.Helper()
	const workers = 8
	now := time.Now()
	errs := make([]error, workers)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := w; i < n; i += workers {
				srv := &broker.Server{ID: fmt.Sprintf("srv-%05d", i), Open: true, LastSeen: now, BrokerID: "bench-0", CreatedAt: now, Info: serverInfo(i)}
				if err := st.UpsertServer(context.Background(), srv); err != nil {
					errs[w] = err
					return
				}
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		tb.Fatal(err)
	}
}

// pgOpen opens a store (its own connection pool) on dsn, closed at cleanup.
func pgOpen(tb testing.TB, dsn string) *postgres.Store {
	tb.Helper()
	st, err := postgres.Open(context.Background(), dsn, nil)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { st.Close() })
	return st
}

// countingAcceptAll is acceptAll that also counts the commands it accepted.
type countingAcceptAll struct{ n *atomic.Int64 }

func (d countingAcceptAll) Dispatch(ctx context.Context, serverID string, cmd broker.Command) (*broker.Result, error) {
	d.n.Add(1)
	return acceptAll{}.Dispatch(ctx, serverID, cmd)
}

// pgBroker starts a broker named id on st with disp (acceptAll if nil); its
// Run stops at cleanup (before st closes, as cleanups run last first).
func pgBroker(tb testing.TB, st *postgres.Store, id string, disp broker.Dispatcher) *broker.Service {
	tb.Helper()
	ctx := context.Background()
	if disp == nil {
		disp = acceptAll{}
	}
	svc, err := broker.New(ctx, st, disp, noTokens{}, broker.Config{BrokerID: id, HeartbeatTimeout: time.Hour},
		slog.New(slog.DiscardHandler))
	if err != nil {
		tb.Fatal(err)
	}
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { _ = svc.Run(rctx); close(done) }()
	tb.Cleanup(func() { cancel(); <-done })
	return svc
}

// BenchmarkPlacementPostgres measures placement across a cluster of brokers
// sharing one PostgreSQL schema: 10,000 servers without session limits, and
// brokers=N brokers, each on its own connection pool, with the acceptAll
// dispatcher (counting) and Run started, so that each broker refreshes its
// server cache every second and its create workers send every placed session
// to its server (committing CREATING/PENDING_PREPARATION, one transaction per
// session) in the background. In each iteration every broker sends 3
// CreateSessions batches of 1,000 (5,000 owners, the 10 requirement
// expressions of BenchmarkPlacement), all brokers at once, and every session
// must be placed; the iteration then waits until all of them were sent, so the
// next one does not start on a backlog. It reports:
//
//   - placements/s: sessions placed across the cluster / wall time of the
//     CreateSessions calls. Target: >= 3,000 placements/s across the cluster.
//   - dispatched/s: the same sessions / wall time until all were sent to their
//     servers (the background creates included).
//   - batch-ms: the median latency of one CreateSessions batch.
//
// The sessions table grows by 3,000*N sessions an iteration, and the rates
// fall as it grows (a broker re-reads all session counts every 2 s): compare
// runs with the same -benchtime (3x).
func BenchmarkPlacementPostgres(b *testing.B) {
	const servers, batches, batch = 10000, 3, 1000
	for _, brokers := range []int{1, 3} {
		b.Run(fmt.Sprintf("brokers=%d", brokers), func(b *testing.B) {
			dsn := pgtest.DSN(b)
			stores := make([]*postgres.Store, brokers)
			for k := range stores {
				stores[k] = pgOpen(b, dsn)
			}
			pgServers(b, stores[0], servers)
			var dispatched atomic.Int64 // create commands sent, by all brokers
			svcs := make([]*broker.Service, brokers)
			for k := range svcs {
				svcs[k] = pgBroker(b, stores[k], fmt.Sprintf("bench-%d", k), countingAcceptAll{&dispatched})
			}
			ctx := context.Background()
			var (
				placed, seq     int
				wall, drainWall time.Duration
				batchTimes      []float64
			)
			for b.Loop() {
				reqs := make([][][]broker.CreateRequest, brokers)
				for k := range reqs {
					reqs[k] = make([][]broker.CreateRequest, batches)
					for j := range reqs[k] {
						rs := make([]broker.CreateRequest, batch)
						for i := range rs {
							rs[i] = broker.CreateRequest{Name: "bench", Owner: fmt.Sprintf("user%d", seq%5000), Type: "VIRTUAL", Requirements: requirementExprs[i%10]}
							seq++
						}
						reqs[k][j] = rs
					}
				}
				counts := make([]int, brokers)
				errs := make([]error, brokers)
				times := make([][]float64, brokers)
				var wg sync.WaitGroup
				t0 := time.Now()
				for k, svc := range svcs {
					wg.Go(func() {
						for _, rs := range reqs[k] {
							t := time.Now()
							res, err := svc.CreateSessions(ctx, rs)
							times[k] = append(times[k], float64(time.Since(t))/1e6)
							if err != nil {
								errs[k] = fmt.Errorf("broker %d: %w", k, err)
								return
							}
							for _, r := range res {
								if r.Session == nil {
									errs[k] = fmt.Errorf("broker %d: placement failed: %s", k, r.FailureReason)
									return
								}
							}
							counts[k] += len(res)
						}
					})
				}
				wg.Wait()
				wall += time.Since(t0)
				if err := errors.Join(errs...); err != nil {
					b.Fatal(err)
				}
				for k := range svcs {
					placed += counts[k]
					batchTimes = append(batchTimes, times[k]...)
				}
				// Wait for the create workers to send every placed session to
				// its server, so that no iteration runs on the last one's
				// backlog.
				for deadline := time.Now().Add(2 * time.Minute); dispatched.Load() < int64(placed); time.Sleep(time.Millisecond) {
					if time.Now().After(deadline) {
						b.Fatalf("%d of %d placed sessions sent to their servers after 2 minutes", dispatched.Load(), placed)
					}
				}
				drainWall += time.Since(t0)
			}
			b.ReportMetric(float64(placed)/wall.Seconds(), "placements/s")
			b.ReportMetric(float64(placed)/drainWall.Seconds(), "dispatched/s")
			b.ReportMetric(median(batchTimes), "batch-ms")
		})
	}
}

// describeRequest is one DescribeSessions request body of the mix.
func describeRequest(owner, token string) string {
	req := `{"Filters":[{"Key":"owner","Value":"` + owner + `"}],"MaxResults":100`
	if token != "" {
		req += `,"NextToken":"` + token + `"`
	}
	return req + `}`
}

// postErr posts body to the API and returns the response body, or an error for
// anything but 200 (post's variant for goroutines other than the benchmark's).
func postErr(c *http.Client, url, body string) ([]byte, error) {
	resp, err := c.Post(url+"/describeSessions", "application/json", strings.NewReader(body))
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("status %d: %s", resp.StatusCode, out[:min(200, len(out))])
	}
	return out, nil
}

// BenchmarkDescribeSessionsPostgres measures DescribeSessions latency of one
// broker on PostgreSQL holding 100,000 READY sessions of 1,000 owners on
// 10,000 servers, served over HTTPS on loopback by the real API handler (as
// BenchmarkDescribeSessions serves it). Owners owner0000-owner0099 have about
// 182 sessions, the others about 91. Each iteration sends 2,400 requests from
// 4 concurrent clients: 80% an owner's first page (owner filter, MaxResults
// 100), 20% the second page of one of the 100 larger owners (with NextToken).
// It reports the p50 and p99 latency over all requests of all iterations
// (client side, TLS and the response body included) and req/s. Target: p99
// reported (no fixed bound); compare with BenchmarkListSessionsOwnerPage in
// internal/postgres for the store's share.
func BenchmarkDescribeSessionsPostgres(b *testing.B) {
	const (
		servers, sessions, owners, heavy = 10000, 100000, 1000, 100
		clients, perIteration            = 4, 2400
	)
	ctx := context.Background()
	dsn := pgtest.DSN(b)
	st := pgOpen(b, dsn)
	pgServers(b, st, servers)
	now := time.Now().UTC().Truncate(time.Millisecond)
	ownerOf := func(i int) string {
		k := i % (owners + heavy) // 0..1099: 0..99 twice as often
		if k >= owners {
			k -= owners
		}
		return fmt.Sprintf("owner%04d", k)
	}
	const inserters = 4
	errs := make([]error, inserters)
	var wg sync.WaitGroup
	for w := range inserters {
		wg.Go(func() {
			for start := w * 1000; start < sessions; start += inserters * 1000 {
				ss := make([]*broker.Session, 0, 1000)
				for i := start; i < start+1000 && i < sessions; i++ {
					ss = append(ss, &broker.Session{ID: fmt.Sprintf("sess-%07d", i), Name: "desktop", Owner: ownerOf(i),
						Type: "VIRTUAL", ServerID: fmt.Sprintf("srv-%05d", i%servers), State: broker.StateReady, CreationTime: now, UpdatedAt: now,
						MaxConcurrentClients: 2, NumOfConnections: int64(i % 3), StorageRoot: "/home/x"})
				}
				if err := st.InsertSessions(ctx, ss); err != nil {
					errs[w] = err
					return
				}
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		b.Fatal(err)
	}
	if _, err := st.Pool().Exec(ctx, `ANALYZE`); err != nil {
		b.Fatal(err)
	}
	svc := pgBroker(b, st, "bench-0", nil)
	apiSrv := httptest.NewTLSServer((&httpapi.Server{Service: svc, Logger: slog.New(slog.DiscardHandler)}).Handler())
	defer apiSrv.Close()
	client := apiSrv.Client()
	client.Transport.(*http.Transport).MaxIdleConnsPerHost = 2 * clients

	// The second pages of the larger owners (also checks the first pages).
	var second []string
	pageBytes := 0
	for k := range heavy {
		owner := fmt.Sprintf("owner%04d", k)
		body := post(b, client, apiSrv.URL, describeRequest(owner, ""))
		var resp api.DescribeSessionsResponse
		if err := json.Unmarshal(body, &resp); err != nil || len(resp.Sessions) != 100 || resp.NextToken == "" {
			b.Fatalf("first page of %s: %d sessions, NextToken %q, %v", owner, len(resp.Sessions), resp.NextToken, err)
		}
		pageBytes = len(body)
		second = append(second, describeRequest(owner, resp.NextToken))
	}
	// The request mix, in a fixed order.
	reqs := make([]string, perIteration)
	for i := range reqs {
		if i%5 == 4 {
			reqs[i] = second[(i*31)%heavy]
		} else {
			reqs[i] = describeRequest(fmt.Sprintf("owner%04d", (i*7919)%owners), "")
		}
	}

	var (
		lat  []float64 // ms
		wall time.Duration
		n    int
	)
	for b.Loop() {
		lats := make([][]float64, clients)
		errs := make([]error, clients)
		var wg sync.WaitGroup
		t0 := time.Now()
		for c := range clients {
			wg.Go(func() {
				for i := c; i < len(reqs); i += clients {
					t := time.Now()
					if _, err := postErr(client, apiSrv.URL, reqs[i]); err != nil {
						errs[c] = err
						return
					}
					lats[c] = append(lats[c], float64(time.Since(t))/1e6)
				}
			})
		}
		wg.Wait()
		wall += time.Since(t0)
		if err := errors.Join(errs...); err != nil {
			b.Fatal(err)
		}
		for _, l := range lats {
			lat = append(lat, l...)
		}
		n += len(reqs)
	}
	slices.Sort(lat)
	b.ReportMetric(lat[len(lat)/2], "p50-ms")
	b.ReportMetric(lat[len(lat)*99/100], "p99-ms")
	b.ReportMetric(float64(n)/wall.Seconds(), "req/s")
	b.ReportMetric(float64(pageBytes), "page-bytes")
}

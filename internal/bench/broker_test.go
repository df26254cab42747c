package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/internal/broker"
	"github.com/berth-dev/berth/internal/httpapi"
	"github.com/berth-dev/berth/internal/sqlite"
)

// acceptAll is the dispatcher of these benchmarks: it accepts every command at
// once, so the numbers measure the broker and its store, not agents.
type acceptAll struct{}

func (acceptAll) Dispatch(ctx context.Context, serverID string, cmd broker.Command) (*broker.Result, error) {
	return &broker.Result{}, nil
}

type noTokens struct{}

func (noTokens) IssueConnectionToken(ctx context.Context, sessionID, owner, user string) (string, error) {
	return "", nil
}

// fleet is a broker on a temp SQLite file with servers registered the way the
// agent hub registers them.
type fleet struct {
	store *sqlite.Store
	svc   *broker.Service
	stop  context.CancelFunc
}

func newFleet(tb testing.TB, servers int) *fleet {
	tb.Helper()
	ctx := context.Background()
	st, err := sqlite.Open(ctx, filepath.Join(tb.TempDir(), "bench.db"))
	if err != nil {
		tb.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	svc, err := broker.New(ctx, st, acceptAll{}, noTokens{}, broker.Config{BrokerID: "bench", HeartbeatTimeout: time.Hour}, log)
	if err != nil {
		tb.Fatal(err)
	}
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { _ = svc.Run(rctx); close(done) }()
	f := &fleet{store: st, svc: svc, stop: func() { cancel(); <-done }}
	tb.Cleanup(func() { f.stop(); st.Close() })
	racks := []string{"r0", "r1", "r2", "r3", "r4", "r5", "r6", "r7", "r8", "r9"}
	for i := range servers {
		info := broker.ServerInfo{
			Hostname: fmt.Sprintf("host-%05d", i), IP: fmt.Sprintf("10.%d.%d.%d", i>>16&255, i>>8&255, i&255), Port: 8443, WebURLPath: "/",
			Endpoints: []broker.Endpoint{{IPAddress: "10.0.0.1", Port: 8443, WebURLPath: "/", Protocol: "HTTP"}},
			Version:   "2024.0", AgentVersion: "bench", Driver: "sim", Healthy: true,
			Host: broker.Host{OSFamily: "linux", OSName: "Debian GNU/Linux", OSVersion: "12", KernelVersion: "6.1.0",
				MemTotal: 64 << 30, MemUsed: 8 << 30, CPUVendor: "GenuineIntel", CPUModel: "Xeon", CPUArch: "x86_64", CPUs: 16, CoresPerCPU: 8,
				GPUs: []broker.GPU{{Vendor: "NVIDIA", Model: "L4"}}},
			Tags: map[string]string{"rack": racks[i%10], "gpu": strconv.FormatBool(i%3 == 0), "ram_gb": strconv.Itoa(32 << (i % 3))},
		}
		if err := svc.AgentConnected(ctx, "", fmt.Sprintf("srv-%05d", i), info, nil); err != nil {
			tb.Fatal(err)
		}
	}
	return f
}

// requirementExprs are the 10 distinct expressions of the placement benchmark.
var requirementExprs = []string{
	"tag:rack = 'r0'", "tag:rack = 'r1' or tag:rack = 'r2'", "tag:gpu = 'true'", "tag:ram_gb >= 64",
	"server:Host.CpuInfo.NumberOfCpus >= 8 and tag:rack != 'r3'", "tag:ram_gb = 64 and tag:gpu = 'false'",
	"server:Host.Os.Family = 'linux'", "not (tag:rack = 'r4')", "server:Hostname := 'host-0'", "tag:rack = 'r9' and server:Host.Memory.TotalBytes > 1024E6",
}

// BenchmarkPlacement places batches of 1,000 CreateSessions over 10,000 servers
// with 10 distinct requirement expressions, committed to SQLite.
// Target: >= 5,000 placements/s.
func BenchmarkPlacement(b *testing.B) {
	f := newFleet(b, 10000)
	ctx := context.Background()
	batch := make([]broker.CreateRequest, 1000)
	placed := 0
	b.ResetTimer()
	for n := 0; n < b.N; n++ {
		for i := range batch {
			batch[i] = broker.CreateRequest{Name: "bench", Owner: fmt.Sprintf("user%d", (n*1000+i)%5000), Type: "VIRTUAL", Requirements: requirementExprs[i%10]}
		}
		res, err := f.svc.CreateSessions(ctx, batch)
		if err != nil {
			b.Fatal(err)
		}
		for _, r := range res {
			if r.Session == nil {
				b.Fatalf("placement failed: %s", r.FailureReason)
			}
		}
		placed += len(res)
	}
	b.StopTimer()
	b.ReportMetric(float64(placed)/b.Elapsed().Seconds(), "placements/s")
}

// loadSessions inserts n sessions spread over the fleet's servers and 100 owners.
func (f *fleet) loadSessions(tb testing.TB, n int) {
	tb.Helper()
	ctx := context.Background()
	now := time.Now().UTC().Truncate(time.Millisecond)
	for start := 0; start < n; start += 1000 {
		var ss []*broker.Session
		for i := start; i < start+1000 && i < n; i++ {
			ss = append(ss, &broker.Session{ID: fmt.Sprintf("sess-%07d", i), Name: "desktop", Owner: fmt.Sprintf("owner%03d", i%100),
				Type: "VIRTUAL", ServerID: fmt.Sprintf("srv-%05d", i%10000), State: broker.StateReady, CreationTime: now, UpdatedAt: now,
				MaxConcurrentClients: 2, NumOfConnections: int64(i % 3), StorageRoot: "/home/x"})
		}
		if err := f.store.InsertSessions(ctx, ss); err != nil {
			tb.Fatal(err)
		}
	}
}

// BenchmarkDescribeSessions pages through one owner's sessions (pages of 100,
// 100,000 sessions in the store) over HTTPS on loopback, and serves the same
// bytes from a bare net/http TLS handler in the same run. Target ratio >= 0.5.
func BenchmarkDescribeSessions(b *testing.B) {
	f := newFleet(b, 10000)
	f.loadSessions(b, 100000)
	apiSrv := httptest.NewTLSServer((&httpapi.Server{Service: f.svc, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}).Handler())
	defer apiSrv.Close()
	client := apiSrv.Client()
	client.Transport.(*http.Transport).MaxIdleConnsPerHost = 8

	// Collect the page bodies (and tokens) once.
	var bodies [][]byte
	var reqs []string
	tokenOf := ""
	for {
		req := `{"Filters":[{"Key":"owner","Value":"owner042"}],"MaxResults":100` + tokenOf + `}`
		body := post(b, client, apiSrv.URL, req)
		var resp api.DescribeSessionsResponse
		if err := json.Unmarshal(body, &resp); err != nil || len(resp.Sessions) == 0 {
			b.Fatalf("describe: %v %s", err, body[:min(200, len(body))])
		}
		bodies, reqs = append(bodies, body), append(reqs, req)
		if resp.NextToken == "" {
			break
		}
		tokenOf = `,"NextToken":"` + resp.NextToken + `"`
	}
	bare := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		i, _ := strconv.Atoi(r.URL.Query().Get("page"))
		_ = body
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(bodies[i%len(bodies)])
	}))
	defer bare.Close()
	bareClient := bare.Client()

	const rounds = 5
	var apiRates, bareRates []float64
	per := max(b.N, 200)
	b.ResetTimer()
	for range rounds {
		t0 := time.Now()
		for i := range per {
			post(b, client, apiSrv.URL, reqs[i%len(reqs)])
		}
		apiRates = append(apiRates, float64(per)/time.Since(t0).Seconds())
		t0 = time.Now()
		for i := range per {
			post(b, bareClient, bare.URL+"/?page="+strconv.Itoa(i%len(reqs)), reqs[i%len(reqs)])
		}
		bareRates = append(bareRates, float64(per)/time.Since(t0).Seconds())
	}
	b.StopTimer()
	a, r := median(apiRates), median(bareRates)
	b.ReportMetric(a, "api-req/s")
	b.ReportMetric(r, "bare-req/s")
	b.ReportMetric(a/r, "ratio")
	b.ReportMetric(float64(len(bodies[0])), "page-bytes")
}

func post(tb testing.TB, c *http.Client, url, body string) []byte {
	resp, err := c.Post(url+pathIfRoot(url), "application/json", strings.NewReader(body))
	if err != nil {
		tb.Fatal(err)
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != 200 {
		tb.Fatalf("status %d: %v %s", resp.StatusCode, err, out[:min(200, len(out))])
	}
	return out
}

func pathIfRoot(url string) string {
	if strings.Contains(url[8:], "/") {
		return ""
	}
	return "/describeSessions"
}

func median(v []float64) float64 {
	sort.Float64s(v)
	return v[len(v)/2]
}

// BenchmarkResidentMemory measures the resident set of a broker holding 10,000
// servers and 100,000 sessions after it has served them: every session
// through the service, and every page of 100 through the API's handler (as
// clients read them, so that each session's encoding is kept in its memo).
// Target: <= 300 MB.
func BenchmarkResidentMemory(b *testing.B) {
	f := newFleet(b, 10000)
	f.loadSessions(b, 100000)
	ctx := context.Background()
	h := (&httpapi.Server{Service: f.svc, Logger: slog.New(slog.DiscardHandler)}).Handler()
	for range b.N {
		for tok := ""; ; {
			req := `{"MaxResults":100`
			if tok != "" {
				req += `,"NextToken":"` + tok + `"`
			}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/describeSessions", strings.NewReader(req+`}`)))
			var resp struct{ NextToken string }
			if err := json.Unmarshal(rec.Body.Bytes(), &resp); err != nil || rec.Code != http.StatusOK {
				b.Fatalf("describe: %d %v", rec.Code, err)
			}
			if tok = resp.NextToken; tok == "" {
				break
			}
		}
		tok := ""
		for {
			list, next, err := f.svc.DescribeSessions(ctx, broker.DescribeQuery{MaxResults: 1000, NextToken: tok})
			if err != nil {
				b.Fatal(err)
			}
			for _, v := range list {
				if v.Server != nil {
					_ = f.svc.ViewServer(ctx, v.Server)
				}
			}
			if next == "" {
				break
			}
			tok = next
		}
		if _, _, err := f.svc.DescribeServers(ctx, nil, 1000, ""); err != nil {
			b.Fatal(err)
		}
	}
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	b.ReportMetric(float64(rssBytes())/(1<<20), "rss-MB")
	b.ReportMetric(float64(ms.HeapInuse)/(1<<20), "heap-MB")
}

// rssBytes reads this process's resident set size from /proc.
func rssBytes() int64 {
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb << 10
		}
	}
	return 0
}

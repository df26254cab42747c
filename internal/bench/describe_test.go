package bench

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/internal/broker"
	"github.com/berth-dev/berth/internal/httpapi"
	"github.com/berth-dev/berth/internal/oauth"
	"github.com/berth-dev/berth/internal/postgres/pgtest"
)

// Page-rate comparison of DescribeSessions against a bare TLS handler.
//
// Both servers are httptest TLS servers (HTTP/1.1) in this process, each with
// a client of its own built the same way: keep-alive, describeConcurrency
// goroutines, each sending its next request as soon as the last answer was
// read, into a buffer it reuses. The bare handler reads the request body and
// answers the bytes the broker answered for the same request, with their
// Content-Length as the broker sends it, so the two differ only in what the
// broker does to produce them: decode the request, read the page from the
// store, build the views and encode the JSON.
const (
	describeConcurrency = 4
	roundTime           = time.Second // one round of one server
	describeOwners      = 10          // owners whose pages make the request mix
)

// BenchmarkDescribeSessionsVsBare serves pages of 100 sessions (owner filter,
// NextToken) from a broker holding 100,000 READY sessions on 10,000 servers,
// over HTTPS with the real API handler, and the same bytes from a bare
// net/http TLS handler, in alternating rounds of one second in one run. Each
// iteration is one round of each (the first server alternates). It reports
// the median req/s of each and the ratio of the medians, and the median CPU
// time per request of each and their ratio (steadier on a shared machine).
// Target ratio >= 0.8.
// Run with -benchtime=5x (or more) for a median worth quoting.
func BenchmarkDescribeSessionsVsBare(b *testing.B) {
	b.Run("store=sqlite", func(b *testing.B) {
		f := newFleet(b, 10000)
		f.loadSessions(b, 100000)
		describeVsBare(b, f.svc, nil)
	})
	// As the broker serves the API: every request carries a bearer token
	// (the same one, as a client's requests do) that the handler verifies
	// with the broker's token authority on the same store.
	b.Run("store=sqlite,auth=bearer", func(b *testing.B) {
		f := newFleet(b, 10000)
		f.loadSessions(b, 100000)
		describeVsBare(b, f.svc, oauth.New(f.store, "bench"))
	})
	b.Run("store=postgres", func(b *testing.B) {
		st := pgOpen(b, pgtest.DSN(b))
		pgServers(b, st, 10000)
		now := time.Now().UTC().Truncate(time.Millisecond)
		ctx := context.Background()
		for start := 0; start < 100000; start += 5000 {
			ss := make([]*broker.Session, 0, 5000)
			for i := start; i < start+5000; i++ {
				ss = append(ss, benchSession(i, now))
			}
			if err := st.InsertSessions(ctx, ss); err != nil {
				b.Fatal(err)
			}
		}
		if _, err := st.Pool().Exec(ctx, `ANALYZE`); err != nil {
			b.Fatal(err)
		}
		describeVsBare(b, pgBroker(b, st, "bench-0", nil), nil)
	})
}

// benchSession is session i of loadSessions: 100 owners, 10,000 servers.
func benchSession(i int, now time.Time) *broker.Session {
	return &broker.Session{ID: fmt.Sprintf("sess-%07d", i), Name: "desktop", Owner: fmt.Sprintf("owner%03d", i%100),
		Type: "VIRTUAL", ServerID: fmt.Sprintf("srv-%05d", i%10000), State: broker.StateReady, CreationTime: now, UpdatedAt: now,
		MaxConcurrentClients: 2, NumOfConnections: int64(i % 3), StorageRoot: "/home/x"}
}

// describeVsBare runs the comparison against svc. With auth, the API
// checks bearer tokens with it, and both clients send one with every request.
func describeVsBare(b *testing.B, svc *broker.Service, auth *oauth.Authority) {
	h := &httpapi.Server{Service: svc, Logger: slog.New(slog.DiscardHandler)}
	token := ""
	if auth != nil {
		h.Verifier = auth
		token = benchToken(b, auth)
	}
	apiSrv := httptest.NewTLSServer(h.Handler())
	defer apiSrv.Close()
	apiClient := benchClient(apiSrv, token)

	// Every page of the first describeOwners owners, read once: the request
	// mix, and the bytes the bare handler answers.
	var reqs []string
	var bodies [][]byte
	for k := range describeOwners {
		token := ""
		for {
			req := describeRequest(fmt.Sprintf("owner%03d", k), token)
			body, err := postErr(apiClient, apiSrv.URL, req)
			if err != nil {
				b.Fatal(err)
			}
			var resp api.DescribeSessionsResponse
			if err := json.Unmarshal(body, &resp); err != nil || len(resp.Sessions) == 0 {
				b.Fatalf("describe: %v %s", err, body[:min(200, len(body))])
			}
			reqs, bodies = append(reqs, req), append(bodies, body)
			if token = resp.NextToken; token == "" {
				break
			}
		}
	}
	index := make(map[string]int, len(reqs))
	for i, r := range reqs {
		index[r] = i
	}
	bare := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		i, ok := index[string(body)]
		if err != nil || !ok {
			http.Error(w, "unknown request", http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Content-Length", strconv.Itoa(len(bodies[i])))
		_, _ = w.Write(bodies[i])
	}))
	defer bare.Close()
	bareClient := benchClient(bare, token)

	var apiRates, bareRates, apiCPU, bareCPU []float64
	round := 0
	for b.Loop() {
		servers := []func(){
			func() {
				rate, cpu := describeRound(b, apiClient, apiSrv.URL, reqs)
				apiRates, apiCPU = append(apiRates, rate), append(apiCPU, cpu)
			},
			func() {
				rate, cpu := describeRound(b, bareClient, bare.URL, reqs)
				bareRates, bareCPU = append(bareRates, rate), append(bareCPU, cpu)
			},
		}
		if round%2 == 1 {
			servers[0], servers[1] = servers[1], servers[0]
		}
		servers[0]()
		servers[1]()
		round++
	}
	a, r := median(apiRates), median(bareRates)
	ac, rc := median(apiCPU), median(bareCPU)
	b.Logf("%d pages of %d bytes (first page), %d clients, %d rounds of %v:\n"+
		"  broker %.0f req/s (rounds %.0f), %.0f µs CPU/req (rounds %.0f)\n"+
		"  bare   %.0f req/s (rounds %.0f), %.0f µs CPU/req (rounds %.0f)\n"+
		"  ratio %.3f (req/s), %.3f (CPU per request, bare/broker)",
		len(reqs), len(bodies[0]), describeConcurrency, len(apiRates), roundTime,
		a, apiRates, ac, apiCPU, r, bareRates, rc, bareCPU, a/r, rc/ac)
	b.ReportMetric(a, "api-req/s")
	b.ReportMetric(r, "bare-req/s")
	b.ReportMetric(a/r, "ratio")
	b.ReportMetric(ac, "api-cpu-µs/req")
	b.ReportMetric(rc, "bare-cpu-µs/req")
	b.ReportMetric(rc/ac, "cpu-ratio")
	b.ReportMetric(float64(len(bodies[0])), "page-bytes")
}

// benchClient is a keep-alive HTTP/1.1 client for an httptest TLS server, with
// one idle connection per concurrent client, that sends token (if any) as a
// bearer token with every request.
func benchClient(s *httptest.Server, token string) *http.Client {
	base := s.Client().Transport.(*http.Transport)
	var rt http.RoundTripper = &http.Transport{
		TLSClientConfig:     base.TLSClientConfig.Clone(),
		MaxIdleConnsPerHost: describeConcurrency,
		TLSNextProto:        map[string]func(string, *tls.Conn) http.RoundTripper{},
	}
	if token != "" {
		rt = bearer{rt: rt, value: "Bearer " + token}
	}
	return &http.Client{Transport: rt}
}

// bearer adds an Authorization header to each request.
type bearer struct {
	rt    http.RoundTripper
	value string
}

func (t bearer) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", t.value)
	return t.rt.RoundTrip(r)
}

// benchToken registers an API client with a and returns an access token for it.
func benchToken(b *testing.B, a *oauth.Authority) string {
	ctx := context.Background()
	if err := a.EnsureKey(ctx); err != nil {
		b.Fatal(err)
	}
	id, secret, err := a.RegisterClient(ctx, oauth.KindAPI, "bench")
	if err != nil {
		b.Fatal(err)
	}
	c, err := a.Authenticate(ctx, oauth.KindAPI, id, secret)
	if err != nil {
		b.Fatal(err)
	}
	tok, _, err := a.IssueAccessToken(ctx, c)
	if err != nil {
		b.Fatal(err)
	}
	return tok
}

// describeRound sends the requests round-robin from describeConcurrency
// goroutines for roundTime and returns the rate of answered requests, and the
// CPU time this process spent per request (client and server together; the
// machine's other load does not count in it, so it is steadier than the rate
// on a shared machine).
func describeRound(b *testing.B, c *http.Client, url string, reqs []string) (rate, cpuMicros float64) {
	var done atomic.Int64
	var next atomic.Int64
	errs := make([]error, describeConcurrency)
	deadline := time.Now().Add(roundTime)
	cpu0 := processCPU()
	t0 := time.Now()
	var wg sync.WaitGroup
	for g := range describeConcurrency {
		wg.Go(func() {
			var buf bytes.Buffer
			for time.Now().Before(deadline) {
				req := reqs[int(next.Add(1))%len(reqs)]
				if err := postInto(c, url, req, &buf); err != nil {
					errs[g] = err
					return
				}
				done.Add(1)
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		b.Fatal(err)
	}
	n := float64(done.Load())
	return n / time.Since(t0).Seconds(), float64(processCPU()-cpu0) / 1e3 / n
}

// processCPU is the user and system CPU time this process has used.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// postInto posts body to url's /describeSessions and reads the answer into
// buf (reused: the client allocates nothing per page, so that it costs the
// two servers as little, and as much, as it can).
func postInto(c *http.Client, url, body string, buf *bytes.Buffer) error {
	resp, err := c.Post(url+"/describeSessions", "application/json", strings.NewReader(body))
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	buf.Reset()
	if _, err := buf.ReadFrom(resp.Body); err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("status %d: %s", resp.StatusCode, buf.Bytes()[:min(200, buf.Len())])
	}
	return nil
}

// discardWriter is an http.ResponseWriter that counts and drops the body.
type discardWriter struct {
	h http.Header
	n int
}

func (w *discardWriter) Header() http.Header         { return w.h }
func (w *discardWriter) WriteHeader(int)             {}
func (w *discardWriter) Write(p []byte) (int, error) { w.n += len(p); return len(p), nil }

// BenchmarkDescribeSessionsHandler calls the API handler directly (no network,
// no TLS) for the page mix of BenchmarkDescribeSessionsVsBare on SQLite: the
// broker's own cost of a page of 100 sessions, per op, in wall time and in
// CPU time of the process (the GC's included; steadier on a busy machine).
func BenchmarkDescribeSessionsHandler(b *testing.B) {
	serve, reqs := describeHandler(b)
	bytes := 0
	b.ReportAllocs()
	i := 0
	cpu0 := processCPU()
	for b.Loop() {
		bytes += serve(reqs[i%len(reqs)])
		i++
	}
	b.ReportMetric(float64(processCPU()-cpu0)/1e3/float64(i), "cpu-µs/op")
	b.ReportMetric(float64(bytes)/float64(i), "bytes/op")
}

// BenchmarkDescribeSessionsHandlerCold is BenchmarkDescribeSessionsHandler
// with the CPU's caches emptied before each page (a walk over 64 MB, outside
// the timer): the page's cost when what it reads is in memory only, as it
// is between the TLS writes of a broker that serves many clients (in
// BenchmarkDescribeSessionsVsBare a page costs about twice its warm time).
func BenchmarkDescribeSessionsHandlerCold(b *testing.B) {
	serve, reqs := describeHandler(b)
	evict := make([]byte, 64<<20)
	sum := byte(0)
	i := 0
	for b.Loop() {
		b.StopTimer()
		for k := 0; k < len(evict); k += 64 {
			evict[k]++
			sum += evict[k]
		}
		b.StartTimer()
		serve(reqs[i%len(reqs)])
		i++
	}
	runtime.KeepAlive(sum)
}

// describeHandler builds the broker of BenchmarkDescribeSessionsVsBare and
// returns a function that serves one DescribeSessions request body through
// the API handler (the body's bytes counted and dropped), and the request
// mix: every page of the first describeOwners owners.
func describeHandler(b *testing.B) (serve func(body string) int, reqs []string) {
	f := newFleet(b, 10000)
	f.loadSessions(b, 100000)
	h := (&httpapi.Server{Service: f.svc, Logger: slog.New(slog.DiscardHandler)}).Handler()
	serve = func(body string) int {
		w := &discardWriter{h: http.Header{}}
		h.ServeHTTP(w, httptest.NewRequest(http.MethodPost, "/describeSessions", strings.NewReader(body)))
		return w.n
	}
	for k := range describeOwners {
		token := ""
		for {
			req := describeRequest(fmt.Sprintf("owner%03d", k), token)
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/describeSessions", strings.NewReader(req)))
			var resp api.DescribeSessionsResponse
			if err := json.Unmarshal(rec.Body.Bytes(), &resp); err != nil || rec.Code != http.StatusOK {
				b.Fatalf("describe: %d %v", rec.Code, err)
			}
			reqs = append(reqs, req)
			if token = resp.NextToken; token == "" {
				break
			}
		}
	}
	return serve, reqs
}

package bench

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/internal/agent"
	"github.com/berth-dev/berth/internal/agenthub"
	"github.com/berth-dev/berth/internal/agentproto"
	"github.com/berth-dev/berth/internal/broker"
	"github.com/berth-dev/berth/internal/driver/sim"
	"github.com/berth-dev/berth/internal/httpapi"
	"github.com/berth-dev/berth/internal/postgres"
	"github.com/berth-dev/berth/internal/postgres/pgtest"
	"github.com/berth-dev/berth/internal/sqlite"
)

// The create pipeline benchmark: sessions from the HTTP API to READY.
const (
	pipelineAgents   = 10
	pipelineSessions = 10000
	pipelineBatch    = 1000 // sessions per CreateSessions request (httpapi.MaxBatchItems)
)

// BenchmarkCreatePipeline creates 10,000 sessions through the real HTTP API
// (10 concurrent CreateSessions requests of 1,000 over HTTPS on loopback)
// into a broker whose agent hub serves 10 real agents (internal/agent with
// the sim driver, no create delay) over WebSockets on loopback, and waits
// until the store holds all of them READY. Each iteration starts a fresh
// broker, store and agents (not timed). It reports the medians over the
// iterations of:
//
//   - accept-s: the wall time of the CreateSessions requests;
//   - sent-s: the wall time from the first request until the agents' drivers
//     have created every session (the create commands delivered);
//   - ready-s: the wall time from the first request to all READY;
//   - ready/s: sessions / ready-s. Target: >= 5,000 sessions/s (the
//     placement rate).
//
// Run with -benchtime=3x (or more) for medians worth quoting.
func BenchmarkCreatePipeline(b *testing.B) {
	b.Run("store=sqlite", func(b *testing.B) {
		pipeline(b, func(tb testing.TB) broker.Store {
			st, err := sqlite.Open(context.Background(), filepath.Join(tb.TempDir(), "pipeline.db"))
			if err != nil {
				tb.Fatal(err)
			}
			return st
		})
	})
	b.Run("store=postgres", func(b *testing.B) {
		pipeline(b, func(tb testing.TB) broker.Store {
			st, err := postgres.Open(context.Background(), pgtest.DSN(tb), nil)
			if err != nil {
				tb.Fatal(err)
			}
			return st
		})
	})
}

func pipeline(b *testing.B, open func(testing.TB) broker.Store) {
	var accepts, sents, readies, rates []float64
	for range b.N {
		b.StopTimer()
		accept, sent, ready := pipelineRun(b, open)
		b.StartTimer()
		accepts = append(accepts, accept.Seconds())
		sents = append(sents, sent.Seconds())
		readies = append(readies, ready.Seconds())
		rates = append(rates, float64(pipelineSessions)/ready.Seconds())
	}
	b.ReportMetric(median(accepts), "accept-s")
	b.ReportMetric(median(sents), "sent-s")
	b.ReportMetric(median(readies), "ready-s")
	b.ReportMetric(median(rates), "ready/s")
}

// hubDisp lets the broker and the hub, which need each other, be built one
// after the other (as cmd/berth-broker does).
type hubDisp struct{ hub *agenthub.Hub }

func (d *hubDisp) Dispatch(ctx context.Context, serverID string, cmd broker.Command) (*broker.Result, error) {
	return d.hub.Dispatch(ctx, serverID, cmd)
}

// countingDriver is the sim driver counting the sessions it created.
type countingDriver struct {
	*sim.Driver
	n *atomic.Int64
}

func (d countingDriver) Create(ctx context.Context, req agent.CreateRequest) error {
	err := d.Driver.Create(ctx, req)
	if err == nil {
		d.n.Add(1)
	}
	return err
}

// pipelineRun runs one iteration on a fresh store and returns the time until
// every CreateSessions request was answered, until the agents had created
// every session, and until all sessions were READY in the store.
func pipelineRun(b *testing.B, open func(testing.TB) broker.Store) (accept, sent, ready time.Duration) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	st := open(b)
	defer st.Close()
	log := slog.New(slog.DiscardHandler)
	disp := &hubDisp{}
	svc, err := broker.New(ctx, st, disp, noTokens{}, broker.Config{BrokerID: "bench"}, log)
	if err != nil {
		b.Fatal(err)
	}
	hub := agenthub.New(svc, nil, agenthub.Options{Logger: log})
	disp.hub = hub
	var runWG sync.WaitGroup
	runWG.Go(func() { _ = svc.Run(ctx) })
	defer runWG.Wait()
	defer cancel()

	mux := http.NewServeMux()
	mux.Handle("/agent/connect", hub.Handler())
	mux.Handle("/", (&httpapi.Server{Service: svc, Logger: log}).Handler())
	srv := httptest.NewUnstartedServer(mux)
	srv.StartTLS()
	defer srv.Close()
	defer hub.Close()
	pool := x509.NewCertPool()
	pool.AddCert(srv.Certificate())

	var created atomic.Int64
	var agents sync.WaitGroup
	defer agents.Wait()
	defer cancel()
	for i := range pipelineAgents {
		id := fmt.Sprintf("sim-%02d", i)
		a := &agent.Agent{
			BrokerURLs: []string{"wss://" + srv.Listener.Addr().String()},
			TLSConfig:  &tls.Config{RootCAs: pool},
			ServerID:   id,
			Driver:     countingDriver{sim.New(), &created},
			Version:    "bench",
			Logger:     log,
			Report: func(ctx context.Context) (agentproto.HostReport, error) {
				return agentproto.HostReport{
					Hostname: "host-" + id, IP: "10.1.2.3", WebURLPath: "/",
					Endpoints: []agentproto.Endpoint{{IP: "10.1.2.3", Port: 8443, Protocol: agentproto.ProtocolHTTP}},
					OS:        agentproto.OS{Family: "linux", Name: "Debian"},
					CPU:       agentproto.CPU{Count: 16},
				}, nil
			},
		}
		agents.Go(func() { _ = a.Run(ctx) })
	}
	deadline := time.Now().Add(30 * time.Second)
	for hub.Count() < pipelineAgents {
		if time.Now().After(deadline) {
			b.Fatalf("%d of %d agents linked", hub.Count(), pipelineAgents)
		}
		time.Sleep(10 * time.Millisecond) //sleep-ok: polling for the agents' links before the timed part
	}

	client := srv.Client()
	client.Transport.(*http.Transport).MaxIdleConnsPerHost = pipelineSessions / pipelineBatch
	bodies := make([]string, pipelineSessions/pipelineBatch)
	for r := range bodies {
		items := make([]api.CreateSessionRequest, pipelineBatch)
		for i := range items {
			items[i] = api.CreateSessionRequest{Name: "desktop", Owner: fmt.Sprintf("user%d", (r*pipelineBatch+i)%500), Type: "VIRTUAL"}
		}
		data, err := json.Marshal(items)
		if err != nil {
			b.Fatal(err)
		}
		bodies[r] = string(data)
	}

	t0 := time.Now()
	errs := make(chan error, len(bodies))
	var reqs sync.WaitGroup
	for _, body := range bodies {
		reqs.Go(func() { errs <- createBatch(client, srv.URL, body) })
	}
	reqs.Wait()
	accept = time.Since(t0)
	close(errs)
	for err := range errs {
		if err != nil {
			b.Fatal(err)
		}
	}
	deadline = time.Now().Add(5 * time.Minute)
	for {
		if sent == 0 && created.Load() >= pipelineSessions {
			sent = time.Since(t0)
		}
		n, err := st.CountByState(ctx)
		if err != nil {
			b.Fatal(err)
		}
		if os.Getenv("BERTH_BENCH_TRACE") != "" {
			b.Logf("%6.2fs created %d states %v", time.Since(t0).Seconds(), created.Load(), n)
		}
		if n[broker.StateReady] == pipelineSessions {
			break
		}
		if n[broker.StateDeleted] > 0 || time.Now().After(deadline) {
			b.Fatalf("sessions by state: %v", n)
		}
		time.Sleep(20 * time.Millisecond) //sleep-ok: polling the store for READY sessions is what the benchmark times
	}
	ready = time.Since(t0)
	if sent == 0 {
		sent = ready
	}
	return accept, sent, ready
}

// createBatch sends one CreateSessions request and checks that every item
// was accepted.
func createBatch(c *http.Client, url, body string) error {
	resp, err := c.Post(url+"/createSessions", "application/json", strings.NewReader(body))
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	var out api.CreateSessionsResponse
	if resp.StatusCode != http.StatusOK || json.Unmarshal(data, &out) != nil {
		return fmt.Errorf("createSessions: status %d: %.200s", resp.StatusCode, data)
	}
	if len(out.UnsuccessfulList) > 0 {
		return fmt.Errorf("createSessions: %d refused: %s", len(out.UnsuccessfulList), out.UnsuccessfulList[0].FailureReason)
	}
	return nil
}

package main

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/internal/poll"
)

// hostileReceivers starts the four hostile webhook receivers on loopback:
// one that never answers, one that streams a body forever, one that
// redirects to another address, one that answers 3xx to an http URL. It
// returns their URLs, the count of requests they got, and stop, which
// releases the hanging requests and closes the servers.
func hostileReceivers(tb testing.TB) (urls []string, requests *atomic.Int64, stop func()) {
	release := make(chan struct{})
	requests = new(atomic.Int64)
	elsewhere := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tb.Errorf("a webhook delivery followed a redirect")
	}))
	handlers := []http.HandlerFunc{
		func(w http.ResponseWriter, r *http.Request) { // never answers
			select {
			case <-release:
			case <-r.Context().Done():
			}
		},
		func(w http.ResponseWriter, r *http.Request) { // streams forever
			// 1 KB every 2 ms, flushed: a body that never ends, which
			// the worker must cut at MaxResponseBytes. Paced, because a
			// receiver writing as fast as loopback takes spends the
			// benchmark machine's own cores (8–13 % of one here), which a
			// receiver on another host would not take from the broker.
			w.WriteHeader(http.StatusOK)
			chunk := make([]byte, 1024)
			rc := http.NewResponseController(w)
			t := time.NewTicker(2 * time.Millisecond)
			defer t.Stop()
			for {
				if _, err := w.Write(chunk); err != nil {
					return
				}
				if rc.Flush() != nil {
					return
				}
				select {
				case <-release:
					return
				case <-r.Context().Done():
					return
				case <-t.C:
				}
			}
		},
		func(w http.ResponseWriter, r *http.Request) { // redirects to another address
			http.Redirect(w, r, elsewhere.URL+"/hook", http.StatusTemporaryRedirect)
		},
		func(w http.ResponseWriter, r *http.Request) { // 3xx to http
			http.Redirect(w, r, "http://hooks.example.com/plain", http.StatusMovedPermanently)
		},
	}
	var srvs []*httptest.Server
	for _, h := range handlers {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			requests.Add(1)
			h(w, r)
		}))
		srvs = append(srvs, srv)
		urls = append(urls, srv.URL+"/hook")
	}
	return urls, requests, func() {
		close(release)
		for _, s := range srvs {
			s.CloseClientConnections()
			s.Close()
		}
		elsewhere.Close()
	}
}

// BenchmarkCreateSessions_HostileWebhooks measures CreateSessions over the
// real API of a real broker (SQLite, a simulated agent) in one run, in
// alternating phases: with no webhook, and with 50 hostile webhooks
// registered (never answers, streams forever, redirects elsewhere, 3xx to
// http) receiving every event while the calls run. It reports the p50 and
// p99 of each condition and the p99 ratio (hostile/none; the target is at
// most 1.10).
//
//	go test -run '^$' -bench CreateSessions_HostileWebhooks -benchtime 1x ./cmd/berth-broker/
func BenchmarkCreateSessions_HostileWebhooks(b *testing.B) {
	const calls, cycles, hooks = 500, 4, 50
	br := MustRunMainWith(b, b.TempDir(), func(m *Main) {
		m.Config.QueueMaxTime = time.Minute
	})
	vc := br.MustClient(b)
	c := &api.Client{BrokerURL: vc.BrokerURL, ClientID: vc.ClientID, ClientSecret: vc.ClientSecret, HTTPClient: br.hc}
	br.MustStartSimAgent(b, b.TempDir(), nil, hostReport("host-bench", 0, nil))
	ctx := context.Background()
	poll.Until(b, 10*time.Second, "server listed", func() bool {
		s, err := c.DescribeServers(ctx, api.DescribeServersRequest{})
		return err == nil && len(s.Servers) == 1
	})
	round := func(n int) []time.Duration {
		ds := make([]time.Duration, 0, n)
		for i := range n {
			t0 := time.Now()
			resp, err := c.CreateSessions(ctx, []api.CreateSessionRequest{{Name: "b", Owner: fmt.Sprintf("u%d", i%20), Type: "VIRTUAL"}})
			ds = append(ds, time.Since(t0))
			if err != nil || len(resp.SuccessfulList) != 1 {
				b.Fatalf("CreateSessions: %v %+v", err, resp)
			}
			// Keep the fleet the same size; not timed.
			if _, err := c.DeleteSessions(ctx, []api.DeleteSessionRequest{{SessionId: resp.SuccessfulList[0].Id, Owner: resp.SuccessfulList[0].Owner}}); err != nil {
				b.Fatal(err)
			}
		}
		return ds
	}
	p := func(ds []time.Duration, q float64) time.Duration {
		s := slices.Clone(ds)
		slices.Sort(s)
		return s[min(len(s)-1, int(q*float64(len(s))))]
	}
	for b.Loop() {
		round(50) // warm up
		// Alternate the two conditions, so that both see the same
		// machine: none, then 50 hostile webhooks (registered, receiving
		// every event of the calls), then none again once they are
		// deleted and their receivers gone, and so on.
		var none, hostile []time.Duration
		failing, attempts, received := 0, 0, int64(0)
		for range cycles {
			none = append(none, round(calls)...)
			urls, requests, stop := hostileReceivers(b)
			for i := range hooks {
				if _, err := c.CreateWebhook(ctx, api.CreateWebhookRequest{Url: urls[i%len(urls)]}); err != nil {
					b.Fatal(err)
				}
			}
			// Time the calls once the deliveries are in full swing.
			round(20)
			poll.Until(b, time.Minute, "deliveries to the hostile receivers", func() bool { return requests.Load() >= 20 })
			before := requests.Load()
			hostile = append(hostile, round(calls)...)
			received += requests.Load() - before
			hs, err := c.DescribeWebhooks(ctx)
			if err != nil {
				b.Fatal(err)
			}
			for _, h := range hs.Webhooks {
				if h.FailedAttempts > 0 {
					failing++
				}
				log, err := c.DescribeWebhookDeliveries(ctx, h.Id, 1000)
				if err != nil {
					b.Fatal(err)
				}
				attempts += len(log.Deliveries)
				if _, err := c.DeleteWebhook(ctx, h.Id); err != nil {
					b.Fatal(err)
				}
			}
			stop()
		}
		b.ReportMetric(float64(len(none)), "calls_each")
		b.ReportMetric(float64(p(none, 0.50).Microseconds())/1000, "p50_none_ms")
		b.ReportMetric(float64(p(hostile, 0.50).Microseconds())/1000, "p50_hostile_ms")
		b.ReportMetric(float64(p(none, 0.99).Microseconds())/1000, "p99_none_ms")
		b.ReportMetric(float64(p(hostile, 0.99).Microseconds())/1000, "p99_hostile_ms")
		b.ReportMetric(float64(p(hostile, 0.99))/float64(p(none, 0.99)), "p99_ratio")
		b.ReportMetric(float64(failing)/cycles, "hooks_failing")
		b.ReportMetric(float64(received)/cycles, "hostile_requests_per_phase")
		b.ReportMetric(float64(attempts)/cycles, "logged_attempts_per_phase")
	}
}

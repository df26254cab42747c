package portal

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/broker"
	"github.com/berth-dev/berth/internal/postgres"
	"github.com/berth-dev/berth/internal/postgres/pgtest"
	"github.com/berth-dev/berth/internal/sqlite"
)

// The benchmark's fleet: 100,000 sessions of 10,000 owners (10 each) on
// 1,000 servers.
const (
	benchSessions = 100_000
	benchServers  = 1_000
	benchOwners   = 10_000
	// benchRenders is how many renders of a page one iteration times.
	benchRenders = 200
)

// benchStore is what the benchmark needs of a store: the broker's, the
// portal's, and bulk session inserts.
type benchStore interface {
	broker.Store
	Store
	InsertSessions(ctx context.Context, ss []*broker.Session) error
}

// BenchmarkPortal measures the server time of a page: the portal handler's
// time from request to the last byte written (into a recorder: no network),
// signed in, with 100,000 sessions of 10,000 owners on 1,000 servers in a
// real store. Pages: my-sessions (GET /portal/, a user's 10 sessions, one
// shared with them, the templates published to them), admin-sessions (GET
// /portal/admin/sessions, the first page of every session), and
// admin-sessions-filtered (state DELETING and a server: a search through
// the fleet's sessions up to the page's search budget). Each iteration
// renders the page 200 times; it reports the p50 and p90 of one render
// (target p50 < 20 ms). store=postgres needs BERTH_TEST_PG_DSN or a local
// server (pgtest) and is skipped otherwise.
func BenchmarkPortal(b *testing.B) {
	b.Run("store=sqlite", func(b *testing.B) {
		st, err := sqlite.Open(context.Background(), filepath.Join(b.TempDir(), "berth.db"))
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { st.Close() })
		benchPages(b, st)
	})
	b.Run("store=postgres", func(b *testing.B) {
		st, err := postgres.Open(context.Background(), pgtest.DSN(b), nil)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { st.Close() })
		benchPages(b, st)
	})
}

// benchPages loads the fleet into st and measures each page.
func benchPages(b *testing.B, st benchStore) {
	ctx := context.Background()
	log := slog.New(slog.DiscardHandler)
	svc, err := broker.New(ctx, st, adminAccept{}, adminNoTokens{}, broker.Config{BrokerID: "bench", HeartbeatTimeout: time.Hour}, log)
	if err != nil {
		b.Fatal(err)
	}
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { _ = svc.Run(rctx); close(done) }()
	b.Cleanup(func() { cancel(); <-done })
	begin := time.Now()
	for i := range benchServers {
		info := broker.ServerInfo{Hostname: fmt.Sprintf("host-%04d", i), IP: fmt.Sprintf("10.0.%d.%d", i>>8, i&255), Port: 8443, WebURLPath: "/",
			Endpoints: []broker.Endpoint{{IPAddress: "10.0.0.1", Port: 8443, WebURLPath: "/", Protocol: "HTTP"}},
			Version:   "2024.0", AgentVersion: "bench", Driver: "sim", Healthy: true,
			Host: broker.Host{OSFamily: "linux", OSName: "Debian GNU/Linux", OSVersion: "12", MemTotal: 64 << 30, MemUsed: 8 << 30,
				CPUVendor: "GenuineIntel", CPUModel: "Xeon", CPUArch: "x86_64", CPUs: 16, GPUs: []broker.GPU{{Vendor: "NVIDIA", Model: "L4"}}}}
		if err := svc.AgentConnected(ctx, "", fmt.Sprintf("srv-%04d", i), info, nil); err != nil {
			b.Fatal(err)
		}
	}
	states := []string{broker.StateReady, broker.StateReady, broker.StateReady, broker.StateCreating, broker.StateDeleting}
	now := time.Now().UTC().Truncate(time.Millisecond)
	for start := 0; start < benchSessions; start += 5000 {
		ss := make([]*broker.Session, 0, 5000)
		for i := start; i < start+5000; i++ {
			ss = append(ss, &broker.Session{ID: fmt.Sprintf("sess-%07d", i), Name: "desktop", Owner: fmt.Sprintf("user%05d", i%benchOwners),
				Type: broker.TypeVirtual, ServerID: fmt.Sprintf("srv-%04d", i%benchServers), State: states[i%len(states)],
				CreationTime: now, UpdatedAt: now, MaxConcurrentClients: 2, StorageRoot: "/home/x"})
		}
		if err := st.InsertSessions(ctx, ss); err != nil {
			b.Fatal(err)
		}
	}
	for i := range 20 {
		if _, err := svc.CreateTemplate(ctx, broker.Template{Name: fmt.Sprintf("template %02d", i), Type: broker.TypeVirtual,
			Description: "a desktop", Groups: []string{"users"}}); err != nil {
			b.Fatal(err)
		}
	}
	// user00042's first session is shared with user00007.
	if err := svc.ShareSession(ctx, "sess-0000042", "user00042", "user00007", broker.ShareView); err != nil {
		b.Logf("share a session (the page is measured without it): %v", err)
	}
	b.Logf("loaded %d sessions on %d servers in %s", benchSessions, benchServers, time.Since(begin).Round(time.Millisecond))

	p, err := New(Config{Service: svc, Store: st, AdminGroup: adminTestGroup, Logger: log})
	if err != nil {
		b.Fatal(err)
	}
	for _, c := range []struct {
		name, user, path string
		admin            bool
		wantRows         string // a string each render must hold
	}{
		{"page=my-sessions", "user00007", "/portal/", false, `data-id="sess-0000007"`},
		{"page=admin-sessions", "admin", "/portal/admin/sessions", true, `data-session="sess-0000049"`},
		{"page=admin-sessions-filtered", "admin", "/portal/admin/sessions?state=DELETING&server=srv-0004", true, `data-session="sess-0000004"`},
	} {
		b.Run(c.name, func(b *testing.B) {
			cookie := benchSignIn(b, p, st, c.user, c.admin)
			render := func() (time.Duration, *httptest.ResponseRecorder) {
				req := httptest.NewRequest(http.MethodGet, "https://broker.test"+c.path, nil)
				req.AddCookie(cookie)
				w := httptest.NewRecorder()
				t0 := time.Now()
				p.ServeHTTP(w, req)
				return time.Since(t0), w
			}
			if _, w := render(); w.Code != http.StatusOK || !strings.Contains(w.Body.String(), c.wantRows) {
				b.Fatalf("%s: %d, or no %s in:\n%.2000s", c.path, w.Code, c.wantRows, w.Body.String())
			}
			var times []time.Duration
			size := 0
			for b.Loop() {
				for range benchRenders {
					d, w := render()
					times = append(times, d)
					size = w.Body.Len()
				}
			}
			slices.Sort(times)
			p50, p90 := times[len(times)/2], times[len(times)*9/10]
			b.ReportMetric(float64(p50.Microseconds())/1000, "p50-ms")
			b.ReportMetric(float64(p90.Microseconds())/1000, "p90-ms")
			b.ReportMetric(float64(size), "page-bytes")
			b.Logf("%s: %d renders, p50 %s, p90 %s, %d bytes", c.path, len(times), p50, p90, size)
		})
	}
}

// benchSignIn signs user in with a portal link through the handler and
// returns the portal session's cookie.
func benchSignIn(b *testing.B, p *Portal, st Store, user string, admin bool) *http.Cookie {
	b.Helper()
	var groups []string
	if admin {
		groups = []string{adminTestGroup}
	} else {
		groups = []string{"users"}
	}
	tok, err := CreateLink(context.Background(), st, user, groups, false, time.Minute, time.Now())
	if err != nil {
		b.Fatal(err)
	}
	req := httptest.NewRequest(http.MethodPost, "https://broker.test/portal/link", strings.NewReader(url.Values{"token": {tok}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	w := httptest.NewRecorder()
	p.ServeHTTP(w, req)
	for _, c := range w.Result().Cookies() {
		if c.Name == sessionCookie && c.Value != "" {
			return c
		}
	}
	b.Fatalf("sign in by link: %d, no session cookie", w.Code)
	return nil
}

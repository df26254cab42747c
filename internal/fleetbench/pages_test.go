package fleetbench

import (
	"context"
	"crypto/x509"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/broker"
	"github.com/berth-dev/berth/internal/httpapi"
	"github.com/berth-dev/berth/internal/sqlite"
)

type acceptAll struct{}

func (acceptAll) Dispatch(ctx context.Context, serverID string, cmd broker.Command) (*broker.Result, error) {
	return &broker.Result{}, nil
}

type noTokens struct{}

func (noTokens) IssueConnectionToken(ctx context.Context, sessionID, owner, user string) (string, error) {
	return "", nil
}

// pagesBroker serves the real API handler over HTTPS on loopback for a
// broker on a temp SQLite file holding n READY sessions on 3 servers.
func pagesBroker(t *testing.T, n int) *httptest.Server {
	t.Helper()
	return pagesBrokerWith(t, n, func(h http.Handler) http.Handler { return h })
}

// pagesBrokerWith is pagesBroker with the API handler wrapped by wrap.
func pagesBrokerWith(t *testing.T, n int, wrap func(http.Handler) http.Handler) *httptest.Server {
	t.Helper()
	ctx := context.Background()
	svc, st := testService(t)
	for i := range 3 {
		connectServer(t, svc, i)
	}
	now := time.Now().UTC()
	var ss []*broker.Session
	for i := range n {
		ss = append(ss, &broker.Session{ID: fmt.Sprintf("sess-%04d", i), Name: "d", Owner: "alice", Type: "VIRTUAL",
			State: broker.StateReady, ServerID: fmt.Sprintf("srv-%d", i%3), CreationTime: now, UpdatedAt: now})
	}
	if err := st.InsertSessions(ctx, ss); err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewTLSServer(wrap((&httpapi.Server{Service: svc, Logger: slog.New(slog.DiscardHandler)}).Handler()))
	t.Cleanup(ts.Close)
	return ts
}

// testService runs a broker core on a new SQLite store until the test ends.
func testService(t *testing.T) (*broker.Service, *sqlite.Store) {
	t.Helper()
	ctx := context.Background()
	st, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "b.db"))
	if err != nil {
		t.Fatal(err)
	}
	svc, err := broker.New(ctx, st, acceptAll{}, noTokens{}, broker.Config{BrokerID: "test", HeartbeatTimeout: time.Hour}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { _ = svc.Run(rctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done; st.Close() })
	return svc, st
}

// connectServer links server srv-i to svc, as its agent's hello does.
func connectServer(t *testing.T, svc *broker.Service, i int) {
	t.Helper()
	info := broker.ServerInfo{Hostname: fmt.Sprintf("host-%d", i), IP: "10.0.0.1", Port: 8443, Healthy: true, Host: broker.Host{OSFamily: "linux"}}
	if err := svc.AgentConnected(context.Background(), "", fmt.Sprintf("srv-%d", i), info, nil); err != nil {
		t.Fatal(err)
	}
}

// tsPool is a pool that trusts an httptest TLS server.
func tsPool(ts *httptest.Server) *x509.CertPool {
	pool := x509.NewCertPool()
	pool.AddCert(ts.Certificate())
	return pool
}

// TestComparePages_Berth pages a real API handler: the pages read once
// follow NextToken up to Rows (not past it), and every round is measured.
func TestComparePages_Berth(t *testing.T) {
	ts := pagesBroker(t, 250)
	for _, tt := range []struct {
		rows, pages, listed int
	}{
		{rows: 250, pages: 3, listed: 250},
		{rows: 150, pages: 2, listed: 200}, // whole pages
	} {
		rep, err := ComparePages(context.Background(), PagesOptions{BrokerURL: ts.URL, CA: tsPool(ts), Rows: tt.rows,
			Duration: 300 * time.Millisecond, Rounds: 3, Concurrency: 2})
		if err != nil {
			t.Fatal(err)
		}
		b := rep.Berth
		if b.Name != "berth" || b.Rows != tt.listed || b.Pages != tt.pages || b.PageBytes < 100*100 || len(b.Rounds) != 3 || b.Rate <= 0 {
			t.Errorf("rows %d: berth side = %+v", tt.rows, b)
		}
		if rep.JupyterHub.Name != "" || rep.Ratio() != 0 {
			t.Errorf("rows %d: JupyterHub side %+v without JupyterHub", tt.rows, rep.JupyterHub)
		}
	}
}

// TestComparePages_Token sends the client-credentials token on every page.
// The token endpoint and the check sit in front of the real API handler in
// the same server (an extra proxy hop made the test depend on the proxy).
func TestComparePages_Token(t *testing.T) {
	var pages, authorized atomic.Int64
	ts := pagesBrokerWith(t, 120, func(api http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/oauth2/token" {
				if id, secret, ok := r.BasicAuth(); !ok || id != "cid" || secret != "csecret" {
					http.Error(w, "bad client", http.StatusUnauthorized)
					return
				}
				_, _ = io.WriteString(w, `{"access_token":"tok","token_type":"Bearer","expires_in":3600}`)
				return
			}
			pages.Add(1)
			if r.Header.Get("Authorization") == "Bearer tok" {
				authorized.Add(1)
			}
			api.ServeHTTP(w, r)
		})
	})
	_, err := ComparePages(context.Background(), PagesOptions{BrokerURL: ts.URL, ClientID: "cid", ClientSecret: "csecret", CA: tsPool(ts), Rows: 100,
		Duration: 200 * time.Millisecond, Rounds: 1, Concurrency: 1})
	if err != nil {
		t.Fatal(err)
	}
	if pages.Load() < 2 || authorized.Load() != pages.Load() {
		t.Errorf("%d of %d pages sent the token", authorized.Load(), pages.Load())
	}
}

func TestComparePages_TooFewSessions(t *testing.T) {
	ts := pagesBroker(t, 50)
	_, err := ComparePages(context.Background(), PagesOptions{BrokerURL: ts.URL, CA: tsPool(ts), Rows: 120, Duration: 100 * time.Millisecond})
	if err == nil || !strings.Contains(err.Error(), "lists 50 sessions, fewer than the 120") {
		t.Fatalf("err = %v, want one naming the 50 sessions", err)
	}
}

// TestComparePages_JupyterHub sets JupyterHub up with users through its
// REST API and its database, and compares its pages with berth's. It needs
// Debian's jupyterhub (apt-get install jupyterhub) and skips without it.
func TestComparePages_JupyterHub(t *testing.T) {
	if testing.Short() {
		t.Skip("starts JupyterHub twice (about 20 s)")
	}
	if _, err := exec.LookPath("jupyterhub"); err != nil {
		t.Skip("jupyterhub is not installed (" + JupyterHubInstall + ")")
	}
	ts := pagesBroker(t, 250)
	var progress strings.Builder
	rep, err := ComparePages(context.Background(), PagesOptions{BrokerURL: ts.URL, CA: tsPool(ts), Rows: 250, Duration: 2 * time.Second, Rounds: 2,
		Concurrency: 2, JupyterHub: true, WorkDir: t.TempDir(), Progress: &progress, hubAPIUsers: 120})
	if err != nil {
		t.Fatal(err)
	}
	t.Log(progress.String())
	h := rep.JupyterHub
	if h.Err != "" {
		t.Fatal(h.Err)
	}
	if !strings.HasPrefix(h.Name, "JupyterHub 3.") || h.Rows != 250 || h.Pages != 3 || h.PageBytes < 100*100 || h.Rate <= 0 || len(h.Rounds) != 2 {
		t.Errorf("JupyterHub side = %+v", h)
	}
	for _, want := range []string{"120 users created through POST /hub/api/users", "130 more users inserted"} {
		if !strings.Contains(progress.String(), want) {
			t.Errorf("progress lacks %q", want)
		}
	}
	if rep.Ratio() <= 0 {
		t.Errorf("ratio %v", rep.Ratio())
	}
}

func TestPagesReport_Markdown(t *testing.T) {
	both := &PagesReport{PageSize: 100, Concurrency: 4, Duration: 30 * time.Second,
		Berth:      PagesSide{Name: "berth", Rows: 100000, Pages: 50, PageBytes: 101234, FirstRead: 3 * time.Millisecond, Rate: 3000, Rounds: []float64{2900, 3000, 3100}},
		JupyterHub: PagesSide{Name: "JupyterHub 3.0.0", Rows: 100000, Pages: 50, PageBytes: 22000, FirstRead: 1500 * time.Millisecond, Rate: 150, Rounds: []float64{150, 140, 160}}}
	noHub := &PagesReport{PageSize: 100, Concurrency: 4, Duration: time.Second,
		Berth:      PagesSide{Name: "berth", Rows: 100, Pages: 1, PageBytes: 1000, FirstRead: 2 * time.Millisecond, Rate: 10, Rounds: []float64{10}},
		JupyterHub: PagesSide{Name: "JupyterHub", Err: "jupyterhub is not installed | x"}}
	for _, tt := range []struct {
		name    string
		rep     *PagesReport
		rows    []string
		ratio   float64
		summary string
	}{
		{"both", both, []string{
			"| berth | 100000 | 50 | 101234 | 3.0 ms | 3000 | 2900, 3000, 3100 | 20.0× |",
			"| JupyterHub 3.0.0 | 100000 | 50 | 22000 | 1.50 s | 150 | 150, 140, 160 |  |",
		}, 20, "pages of 100, 4 clients: berth 3000 req/s (rounds 2900, 3000, 3100; 101234-byte pages, 100000 rows, first read of a page 3.0 ms); " +
			"JupyterHub 3.0.0 150 req/s (rounds 150, 140, 160; 22000-byte pages, 100000 rows, first read of a page 1.50 s); berth/JupyterHub 20.0×"},
		{"no hub", noHub, []string{
			"| berth | 100 | 1 | 1000 | 2.0 ms | 10 | 10 |  |",
			`| JupyterHub | | | | | | not measured: jupyterhub is not installed \| x | |`,
		}, 0, "pages of 100, 4 clients: berth 10 req/s (rounds 10; 1000-byte pages, 100 rows, first read of a page 2.0 ms); JupyterHub not measured (jupyterhub is not installed | x)"},
	} {
		if got := tt.rep.MarkdownRows(); strings.Join(got, "\n") != strings.Join(tt.rows, "\n") {
			t.Errorf("%s: rows\n%s\nwant\n%s", tt.name, strings.Join(got, "\n"), strings.Join(tt.rows, "\n"))
		}
		if got := tt.rep.Ratio(); got != tt.ratio {
			t.Errorf("%s: ratio %v, want %v", tt.name, got, tt.ratio)
		}
		if got := tt.rep.Summary(); got != tt.summary {
			t.Errorf("%s: summary\n%s\nwant\n%s", tt.name, got, tt.summary)
		}
		var b strings.Builder
		if err := tt.rep.WriteMarkdown(&b); err != nil || !strings.Contains(b.String(), "| server | rows |") || !strings.Contains(b.String(), tt.rows[0]) {
			t.Errorf("%s: markdown %q, %v", tt.name, b.String(), err)
		}
	}
}

func TestSpread(t *testing.T) {
	for _, tt := range []struct {
		total, n int
		want     []int
	}{
		{1000, 5, []int{0, 249, 499, 749, 999}},
		{3, 50, []int{0, 1, 2}},
		{1, 1, []int{0}},
		{10, 1, []int{0}},
		{2, 2, []int{0, 1}},
	} {
		if got := spread(tt.total, tt.n); !slices.Equal(got, tt.want) {
			t.Errorf("spread(%d, %d) = %v, want %v", tt.total, tt.n, got, tt.want)
		}
	}
}

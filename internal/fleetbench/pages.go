package fleetbench

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/berth-dev/berth/api"
)

// PagesOptions configure ComparePages. Zero values take the defaults named.
type PagesOptions struct {
	// BrokerURL is the berth broker's client API, https://host:port.
	BrokerURL string
	// ClientID and ClientSecret are an API client's credentials (the
	// client-credentials grant at BrokerURL/oauth2/token); both empty sends
	// no token (enable-authorization = false).
	ClientID, ClientSecret string
	// CA verifies the broker's certificate; nil uses the system's roots.
	CA *x509.CertPool
	// Rows is how many rows each side lists: the broker's sessions that
	// are paged through (it must hold at least that many; more are not
	// paged), and JupyterHub's users (100,000).
	Rows int
	// PageSize is the rows of one page (100).
	PageSize int
	// Duration is how long each side is measured, in Rounds rounds that
	// alternate between the sides (30 s, 3).
	Duration time.Duration
	Rounds   int
	// Concurrency is the number of keep-alive clients that send requests
	// back to back, on each side (4).
	Concurrency int
	// Pages is how many distinct pages the clients request, round-robin:
	// the same pages on both sides, spread evenly over the rows (50). Each
	// is read once before the rounds: JupyterHub builds its in-memory
	// object of a user the first time it lists it, which takes seconds a
	// page at 100,000 users, so the rounds measure a warm hub.
	Pages int
	// JupyterHub runs the JupyterHub side; JupyterHubCommand is its
	// executable ("jupyterhub" on PATH).
	JupyterHub        bool
	JupyterHubCommand string
	// WorkDir holds JupyterHub's configuration, database and log; ""
	// makes a temporary directory, removed at the end.
	WorkDir string
	// Progress receives a line now and then; nil discards.
	Progress io.Writer

	// hubAPIUsers is how many of JupyterHub's users are created through
	// its REST API (1,000); the others are inserted into its database.
	hubAPIUsers int
}

func (o PagesOptions) withDefaults() PagesOptions {
	if o.Rows <= 0 {
		o.Rows = 100000
	}
	if o.PageSize <= 0 {
		o.PageSize = 100
	}
	if o.Duration <= 0 {
		o.Duration = 30 * time.Second
	}
	if o.Rounds <= 0 {
		o.Rounds = 3
	}
	if o.Concurrency <= 0 {
		o.Concurrency = 4
	}
	if o.Pages <= 0 {
		o.Pages = 50
	}
	if o.JupyterHubCommand == "" {
		o.JupyterHubCommand = "jupyterhub"
	}
	if o.Progress == nil {
		o.Progress = io.Discard
	}
	if o.hubAPIUsers <= 0 {
		o.hubAPIUsers = 10 * hubAPIBatch
	}
	return o
}

// pagesRows is how many sessions the pages scenario pages through, and
// how many users JupyterHub gets.
const pagesRows = 100000

// pagesRow runs the pages scenario: with the fleet linked, it creates
// sessions until pagesRows are live and READY, then compares the broker's
// DescribeSessions pages with JupyterHub's pages of as many users
// (ComparePages).
func pagesRow(ctx context.Context, b *bench) Row {
	row := Row{Sessions: pagesRows}
	if err := b.ensureLinked(ctx); err != nil {
		return b.fail(&row, err)
	}
	if need := pagesRows - len(b.live); need > 0 {
		start := time.Now()
		created, failed, reasons, err := b.createSessions(ctx, need, "pages")
		if failed > 0 {
			row.Notes = append(row.Notes, fmt.Sprintf("%d refused: %s", failed, topReasons(reasons)))
		}
		if err != nil {
			return b.fail(&row, err)
		}
		if _, err := b.waitReady(ctx, created, start, "pages"); err != nil {
			return b.fail(&row, err)
		}
		b.progress("pages: %d sessions created and READY in %s", len(created), fmtDur(time.Since(start)))
	}
	pool := x509.NewCertPool()
	if ca, err := os.ReadFile(filepath.Join(b.b.dir, "ca.pem")); err != nil || !pool.AppendCertsFromPEM(ca) {
		return b.fail(&row, fmt.Errorf("the broker's CA (ca.pem): %v", err))
	}
	rep, err := ComparePages(ctx, PagesOptions{BrokerURL: b.b.clientURL(), ClientID: b.client.ClientID, ClientSecret: b.client.ClientSecret,
		CA: pool, Rows: pagesRows, JupyterHub: true, WorkDir: b.dir, Progress: b.o.Progress})
	if err != nil {
		return b.fail(&row, err)
	}
	row.Notes = append(row.Notes, rep.Summary())
	return row
}

// PagesSide is what one side of the comparison measured.
type PagesSide struct {
	// Name is "berth" or "JupyterHub" with its version.
	Name string
	// Rows are the rows it lists in all, and Pages how many distinct pages
	// the clients request, round-robin.
	Rows, Pages int
	// PageBytes is the median size of those pages' bodies.
	PageBytes int
	// FirstRead is the median time of the first read of those pages.
	FirstRead time.Duration
	// Rate is the median of the rounds' requests per second, Rounds each
	// round's.
	Rate   float64
	Rounds []float64
	// Err is why the side was not measured ("" if it was).
	Err string
}

// PagesReport is the outcome of ComparePages.
type PagesReport struct {
	PageSize, Concurrency int
	Duration              time.Duration
	Berth, JupyterHub     PagesSide
}

// Ratio is berth's rate over JupyterHub's, 0 when either is unknown.
func (r *PagesReport) Ratio() float64 {
	if r.Berth.Rate == 0 || r.JupyterHub.Rate == 0 {
		return 0
	}
	return r.Berth.Rate / r.JupyterHub.Rate
}

// PagesColumns are the headers of MarkdownRows' table.
var PagesColumns = []string{"server", "rows", "pages requested", "page bytes (median)", "first read of a page (median)", "req/s (median of rounds)", "rounds req/s", "ratio"}

// MarkdownRows returns the report as markdown table rows, one a side
// (under PagesColumns); the berth row holds the ratio to JupyterHub.
func (r *PagesReport) MarkdownRows() []string {
	row := func(s PagesSide, ratio string) string {
		if s.Err != "" {
			return "| " + s.Name + " | | | | | | not measured: " + escapeCell(s.Err) + " | |"
		}
		return fmt.Sprintf("| %s | %d | %d | %d | %s | %.0f | %s | %s |", s.Name, s.Rows, s.Pages, s.PageBytes, fmtLatency(s.FirstRead),
			s.Rate, fmtRates(s.Rounds), ratio)
	}
	ratio := ""
	if x := r.Ratio(); x > 0 {
		ratio = fmt.Sprintf("%.1f×", x)
	}
	out := []string{row(r.Berth, ratio)}
	if r.JupyterHub.Name != "" {
		out = append(out, row(r.JupyterHub, ""))
	}
	return out
}

// WriteMarkdown writes the settings line and the table.
func (r *PagesReport) WriteMarkdown(w io.Writer) error {
	var b strings.Builder
	fmt.Fprintf(&b, "- pages of %d over HTTPS on loopback, %d keep-alive clients a side sending back to back, %s a side in alternating rounds; each page read once before\n\n",
		r.PageSize, r.Concurrency, r.Duration)
	b.WriteString("| " + strings.Join(PagesColumns, " | ") + " |\n")
	b.WriteString("|" + strings.Repeat("---|", len(PagesColumns)) + "\n")
	for _, row := range r.MarkdownRows() {
		b.WriteString(row + "\n")
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// Summary is the report in one line, for a scenario row's notes.
func (r *PagesReport) Summary() string {
	side := func(s PagesSide) string {
		if s.Err != "" {
			return s.Name + " not measured (" + s.Err + ")"
		}
		return fmt.Sprintf("%s %.0f req/s (rounds %s; %d-byte pages, %d rows, first read of a page %s)", s.Name, s.Rate, fmtRates(s.Rounds),
			s.PageBytes, s.Rows, fmtLatency(s.FirstRead))
	}
	out := "pages of " + strconv.Itoa(r.PageSize) + ", " + strconv.Itoa(r.Concurrency) + " clients: " + side(r.Berth)
	if r.JupyterHub.Name != "" {
		out += "; " + side(r.JupyterHub)
	}
	if x := r.Ratio(); x > 0 {
		out += fmt.Sprintf("; berth/JupyterHub %.1f×", x)
	}
	return out
}

// fmtRates formats rates as "2900, 3000, 3100".
func fmtRates(v []float64) string {
	out := make([]string, len(v))
	for i, x := range v {
		out[i] = strconv.FormatFloat(x, 'f', 0, 64)
	}
	return strings.Join(out, ", ")
}

// fmtLatency formats a page's latency: tenths of a millisecond under 10 ms,
// else as fmtDur.
func fmtLatency(d time.Duration) string {
	if d > 0 && d < 10*time.Millisecond {
		return strconv.FormatFloat(float64(d)/1e6, 'f', 1, 64) + " ms"
	}
	return fmtDur(d)
}

// pageRequest makes the request for one page.
type pageRequest func(ctx context.Context) (*http.Request, error)

// ComparePages measures how fast a berth broker serves DescribeSessions
// pages, and, with JupyterHub set, how fast JupyterHub serves pages of its
// users (GET /hub/api/users?offset=&limit=) with as many users as the
// broker pages sessions, side by side: the same client, TLS on both sides
// (JupyterHub gets a self-signed certificate), the same concurrency, in
// alternating rounds. JupyterHub is started here, in WorkDir. A side that
// cannot be measured has its Err set; ComparePages fails only when the
// broker side cannot.
func ComparePages(ctx context.Context, o PagesOptions) (*PagesReport, error) {
	o = o.withDefaults()
	progress := func(format string, args ...any) {
		fmt.Fprintf(o.Progress, "%s berth-bench: %s\n", time.Now().Format("15:04:05"), fmt.Sprintf(format, args...))
	}
	rep := &PagesReport{PageSize: o.PageSize, Concurrency: o.Concurrency, Duration: o.Duration}
	berthClient := pagesClient(o.CA, o.Concurrency)
	defer berthClient.CloseIdleConnections()
	auth := &api.Client{BrokerURL: o.BrokerURL, ClientID: o.ClientID, ClientSecret: o.ClientSecret, HTTPClient: berthClient}
	t0 := time.Now()
	berthReqs, side, err := berthPages(ctx, berthClient, auth, o)
	if err != nil {
		return nil, err
	}
	rep.Berth = side
	progress("pages: berth lists %d sessions in pages of %d (read once in %s); the clients request %d of them", side.Rows, o.PageSize, time.Since(t0).Round(time.Millisecond), side.Pages)

	var hubReqs []pageRequest
	var hubClient *http.Client
	if o.JupyterHub {
		rep.JupyterHub.Name = "JupyterHub"
		dir := o.WorkDir
		if dir == "" {
			if dir, err = os.MkdirTemp("", "berth-bench-jupyterhub-"); err != nil {
				return nil, err
			}
			defer os.RemoveAll(dir)
		} else {
			dir = filepath.Join(dir, "jupyterhub")
		}
		hub, side, reqs, err := startHub(ctx, o, dir, progress)
		if hub != nil {
			defer hub.stop()
		}
		if err != nil {
			rep.JupyterHub.Err = err.Error()
			progress("pages: JupyterHub not measured: %v", err)
		} else {
			rep.JupyterHub, hubReqs = side, reqs
			hubClient = pagesClient(hub.pool, o.Concurrency)
			defer hubClient.CloseIdleConnections()
		}
	}

	round := o.Duration / time.Duration(o.Rounds)
	for i := range o.Rounds {
		sides := []func() error{
			func() error {
				rate, err := load(ctx, berthClient, berthReqs, round, o.Concurrency)
				rep.Berth.Rounds = append(rep.Berth.Rounds, rate)
				return err
			},
		}
		if hubReqs != nil {
			sides = append(sides, func() error {
				rate, err := load(ctx, hubClient, hubReqs, round, o.Concurrency)
				rep.JupyterHub.Rounds = append(rep.JupyterHub.Rounds, rate)
				return err
			})
			if i%2 == 1 {
				sides[0], sides[1] = sides[1], sides[0]
			}
		}
		for _, f := range sides {
			if err := f(); err != nil {
				return rep, err
			}
		}
		progress("pages: round %d of %d: berth %.0f req/s%s", i+1, o.Rounds, rep.Berth.Rounds[i], hubRound(rep, i))
	}
	rep.Berth.Rate = median(rep.Berth.Rounds)
	if len(rep.JupyterHub.Rounds) > 0 {
		rep.JupyterHub.Rate = median(rep.JupyterHub.Rounds)
	}
	return rep, nil
}

// hubRound formats JupyterHub's rate in round i, if measured.
func hubRound(rep *PagesReport, i int) string {
	if i < len(rep.JupyterHub.Rounds) {
		return fmt.Sprintf(", JupyterHub %.0f req/s", rep.JupyterHub.Rounds[i])
	}
	return ""
}

// pagesClient is the client of one side: keep-alive HTTP/1.1 over TLS
// verified with pool, an idle connection for every concurrent client.
func pagesClient(pool *x509.CertPool, concurrency int) *http.Client {
	return &http.Client{Timeout: 2 * time.Minute, Transport: &http.Transport{
		TLSClientConfig:     &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12},
		MaxIdleConnsPerHost: concurrency,
		TLSNextProto:        map[string]func(string, *tls.Conn) http.RoundTripper{},
	}}
}

// berthPages reads the broker's pages once, without a filter, following
// NextToken until o.Rows sessions, and returns a request for each page.
func berthPages(ctx context.Context, c *http.Client, auth *api.Client, o PagesOptions) ([]pageRequest, PagesSide, error) {
	side := PagesSide{Name: "berth"}
	var reqs []pageRequest
	var sizes []int
	var times []time.Duration
	token := ""
	for side.Rows < o.Rows {
		body, err := json.Marshal(api.DescribeSessionsRequest{MaxResults: &o.PageSize, NextToken: token})
		if err != nil {
			return nil, side, err
		}
		mk := func(ctx context.Context) (*http.Request, error) {
			req, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimRight(o.BrokerURL, "/")+"/describeSessions", bytes.NewReader(body))
			if err != nil {
				return nil, err
			}
			req.Header.Set("Content-Type", "application/json")
			tok, err := auth.Token(ctx)
			if err != nil {
				return nil, err
			}
			if tok != "" {
				req.Header.Set("Authorization", "Bearer "+tok)
			}
			return req, nil
		}
		t := time.Now()
		page, err := fetch(c, ctx, mk)
		if err != nil {
			return nil, side, fmt.Errorf("DescribeSessions: %w", err)
		}
		times = append(times, time.Since(t))
		var resp api.DescribeSessionsResponse
		if err := json.Unmarshal(page, &resp); err != nil {
			return nil, side, fmt.Errorf("DescribeSessions: %w", err)
		}
		if len(resp.Sessions) == 0 {
			break
		}
		reqs, sizes = append(reqs, mk), append(sizes, len(page))
		side.Rows += len(resp.Sessions)
		if token = resp.NextToken; token == "" {
			break
		}
	}
	if side.Rows < o.Rows {
		return nil, side, fmt.Errorf("the broker lists %d sessions, fewer than the %d to page through", side.Rows, o.Rows)
	}
	idx := spread(len(reqs), o.Pages)
	var picked []pageRequest
	var pickedSizes []int
	var firsts []time.Duration
	for _, i := range idx {
		picked, pickedSizes, firsts = append(picked, reqs[i]), append(pickedSizes, sizes[i]), append(firsts, times[i])
	}
	slices.Sort(firsts)
	side.Pages, side.PageBytes, side.FirstRead = len(picked), medianInt(pickedSizes), firsts[len(firsts)/2]
	return picked, side, nil
}

// spread returns n indexes spread evenly over 0..total-1 (all of them if
// n >= total).
func spread(total, n int) []int {
	if n >= total {
		n = total
	}
	out := make([]int, n)
	for k := range out {
		if n > 1 {
			out[k] = k * (total - 1) / (n - 1)
		}
	}
	return out
}

// startHub sets JupyterHub up with o.Rows users and reads its pages once.
func startHub(ctx context.Context, o PagesOptions, dir string, progress func(string, ...any)) (*jupyterHub, PagesSide, []pageRequest, error) {
	side := PagesSide{Name: "JupyterHub"}
	bin, err := exec.LookPath(o.JupyterHubCommand)
	if err != nil {
		return nil, side, nil, errNoJupyterHub
	}
	if out, err := exec.CommandContext(ctx, bin, "--version").Output(); err == nil {
		side.Name = "JupyterHub " + strings.TrimSpace(string(out))
	}
	hub, err := newJupyterHub(bin, dir)
	if err != nil {
		return nil, side, nil, err
	}
	t0 := time.Now()
	if err := hub.setUp(ctx, o.Rows, o.hubAPIUsers, progress); err != nil {
		return hub, side, nil, err
	}
	progress("pages: %s holds %d users (set up in %s)", side.Name, o.Rows, time.Since(t0).Round(time.Millisecond))
	c := hub.client()
	defer c.CloseIdleConnections()
	// The pages at the places berth's are, each read once: to check it,
	// to size it, and to warm the hub.
	var reqs []pageRequest
	var sizes []int
	var firsts []time.Duration
	pages := (o.Rows + o.PageSize - 1) / o.PageSize
	for n, i := range spread(pages, o.Pages) {
		u := hub.url() + "/hub/api/users?offset=" + strconv.Itoa(i*o.PageSize) + "&limit=" + strconv.Itoa(o.PageSize)
		mk := func(ctx context.Context) (*http.Request, error) {
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
			if err != nil {
				return nil, err
			}
			req.Header.Set("Authorization", "token "+hub.token)
			return req, nil
		}
		t := time.Now()
		page, err := fetch(c, ctx, mk)
		if err != nil {
			return hub, side, nil, fmt.Errorf("GET /hub/api/users: %w", err)
		}
		firsts = append(firsts, time.Since(t))
		var users []json.RawMessage
		if err := json.Unmarshal(page, &users); err != nil {
			return hub, side, nil, fmt.Errorf("GET /hub/api/users: %w", err)
		}
		if want := min(o.PageSize, o.Rows-i*o.PageSize); len(users) != want {
			return hub, side, nil, fmt.Errorf("GET /hub/api/users page %d: %d users, want %d", i, len(users), want)
		}
		reqs, sizes = append(reqs, mk), append(sizes, len(page))
		if n%10 == 9 {
			progress("pages: JupyterHub: %d of %d pages read once (warming its user objects)", n+1, o.Pages)
		}
	}
	slices.Sort(firsts)
	side.Rows, side.Pages, side.PageBytes, side.FirstRead = o.Rows, len(reqs), medianInt(sizes), firsts[len(firsts)/2]
	return hub, side, reqs, nil
}

// fetch sends one request and returns the body of its 200 answer.
func fetch(c *http.Client, ctx context.Context, mk pageRequest) ([]byte, error) {
	var buf bytes.Buffer
	if err := fetchInto(c, ctx, mk, &buf); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// fetchInto sends one request and reads its answer into buf (reset first).
func fetchInto(c *http.Client, ctx context.Context, mk pageRequest, buf *bytes.Buffer) error {
	req, err := mk(ctx)
	if err != nil {
		return err
	}
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	buf.Reset()
	if _, err := buf.ReadFrom(resp.Body); err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %.300s", resp.Status, buf.Bytes())
	}
	return nil
}

// load sends reqs round-robin from concurrency goroutines, each sending its
// next request once it has read the last answer, for d, and returns the
// answered requests per second.
func load(parent context.Context, c *http.Client, reqs []pageRequest, d time.Duration, concurrency int) (float64, error) {
	ctx, cancel := context.WithCancel(parent)
	defer cancel()
	var done, next atomic.Int64
	errs := make([]error, concurrency)
	t0 := time.Now()
	deadline := t0.Add(d)
	var wg sync.WaitGroup
	for g := range concurrency {
		wg.Go(func() {
			var buf bytes.Buffer
			for time.Now().Before(deadline) && ctx.Err() == nil {
				if err := fetchInto(c, ctx, reqs[int(next.Add(1)-1)%len(reqs)], &buf); err != nil {
					errs[g] = err
					cancel()
					return
				}
				done.Add(1)
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return 0, err
	}
	if err := parent.Err(); err != nil {
		return 0, err // cut short: no rate
	}
	return float64(done.Load()) / time.Since(t0).Seconds(), nil
}

// median is the middle of v (the upper one of an even count), 0 if empty.
func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	return s[len(s)/2]
}

// medianInt is median for ints.
func medianInt(v []int) int {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	return s[len(s)/2]
}

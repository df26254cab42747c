package postgres_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/berth-dev/berth/internal/broker"
	"github.com/berth-dev/berth/internal/broker/storetest"
	"github.com/berth-dev/berth/internal/oauth"
	"github.com/berth-dev/berth/internal/oauth/oauthtest"
	"github.com/berth-dev/berth/internal/postgres"
	"github.com/berth-dev/berth/internal/postgres/pgtest"
)

// MustOpen opens a store on dsn and closes it when tb ends.

// migrations is the number of files in migrations/.
const migrations = 13 // 0006 templates and shares, 0007 the portal (issue 16), 0008 lifetimes, 0009 template limits (issue 17), 0010 events, 0011 audit, 0012 webhooks (issue 18), 0013 the process holding a broker-id

func MustOpen(tb testing.TB, dsn string) *postgres.Store {
	tb.Helper()
	s, err := postgres.Open(tb.Context(), dsn, nil)
	if err != nil {
		tb.Fatalf("Open: %v", err)
	}
	tb.Cleanup(func() { s.Close() })
	return s
}

// MustOpenFresh opens a store on a fresh schema.
func MustOpenFresh(tb testing.TB) *postgres.Store {
	tb.Helper()
	return MustOpen(tb, pgtest.DSN(tb))
}

func TestStore_BrokerContract(t *testing.T) {
	storetest.Run(t, func(t *testing.T) broker.Store { return MustOpenFresh(t) })
}

func TestStore_OAuthContract(t *testing.T) {
	oauthtest.RunStore(t, func(t *testing.T) oauth.Store { return MustOpenFresh(t) })
}

func TestOpen_Migrations(t *testing.T) {
	dsn := pgtest.DSN(t)
	s, err := postgres.Open(t.Context(), dsn, nil)
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	s = MustOpen(t, dsn) // a second Open applies nothing again
	var n, version int
	if err := s.Pool().QueryRow(t.Context(), `SELECT count(*), max(version) FROM schema_migrations`).Scan(&n, &version); err != nil {
		t.Fatal(err)
	}
	if n != migrations || version != migrations {
		t.Errorf("schema_migrations has %d rows up to version %d, want %d up to %d", n, version, migrations, migrations)
	}
	// The tables of migration 0002 exist.
	for _, table := range []string{"brokers", "leases", "commands"} {
		if _, err := s.Pool().Exec(t.Context(), `SELECT 1 FROM `+table+` LIMIT 1`); err != nil {
			t.Errorf("table %s: %v", table, err)
		}
	}
}

func TestOpen_NewerSchema(t *testing.T) {
	dsn := pgtest.DSN(t)
	s := MustOpen(t, dsn)
	if _, err := s.Pool().Exec(t.Context(), `INSERT INTO schema_migrations (version, name) VALUES (9999, '9999_future.sql')`); err != nil {
		t.Fatal(err)
	}
	if s, err := postgres.Open(t.Context(), dsn, nil); err == nil {
		s.Close()
		t.Fatal("Open of a schema from a newer version succeeded")
	}
}

func TestOpen_NoSchema(t *testing.T) {
	dsn := pgtest.WithSearchPath(t, pgtest.DSN(t), "berth_t_missing")
	if s, err := postgres.Open(t.Context(), dsn, nil); err == nil {
		s.Close()
		t.Fatal("Open with no existing schema in the search_path succeeded")
	}
}

// TestOpen_Concurrent opens four stores on a fresh schema at once, as brokers
// starting together do: each must succeed, and the migrations run once.
func TestOpen_Concurrent(t *testing.T) {
	dsn := pgtest.DSN(t)
	const n = 4
	stores := make([]*postgres.Store, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { stores[i], errs[i] = postgres.Open(t.Context(), dsn, nil) })
	}
	wg.Wait()
	for i := range n {
		if errs[i] != nil {
			t.Errorf("Open %d: %v", i, errs[i])
			continue
		}
		defer stores[i].Close()
	}
	if t.Failed() {
		return
	}
	var rows int
	if err := stores[0].Pool().QueryRow(t.Context(), `SELECT count(*) FROM schema_migrations`).Scan(&rows); err != nil {
		t.Fatal(err)
	}
	if rows != migrations {
		t.Errorf("schema_migrations has %d rows, want %d", rows, migrations)
	}
	storetest.MustUpsertServers(t, stores[3], storetest.NewServer("s-a", 0, 0, nil))
	storetest.MustGetServer(t, stores[1], "s-a")
}

// TestCommitPlacements_TwoBrokers commits placements through two stores (two
// pools, as two brokers have) on the same servers with tight limits: the
// limits hold across them, and no queued session is placed twice.
func TestCommitPlacements_TwoBrokers(t *testing.T) {
	dsn := pgtest.DSN(t)
	brokers := []*postgres.Store{MustOpen(t, dsn), MustOpen(t, dsn)}
	const servers, limit, perUser = 5, 3, 2
	for i := range servers {
		storetest.MustUpsertServers(t, brokers[0], storetest.NewServer(fmt.Sprintf("s-%d", i), limit, perUser, nil))
	}
	// Queued sessions that both brokers try to place.
	var queued []*broker.Session
	for i := range 20 {
		queued = append(queued, storetest.NewSession(fmt.Sprintf("q-%02d", i), fmt.Sprintf("user-%d", i%4),
			broker.TypeVirtual, "", broker.StateCreating))
	}
	storetest.MustInsertSessions(t, brokers[0], queued...)

	const workers, rounds = 4, 10
	var (
		wg     sync.WaitGroup
		mu     sync.Mutex
		failed []error
		moved  = map[string]int{}
	)
	for w := range 2 * workers {
		st := brokers[w%2]
		wg.Go(func() {
			for r := range rounds {
				var ps []broker.Placement
				// New sessions, in server order that differs between workers.
				for i := range servers {
					srv := fmt.Sprintf("s-%d", (i+w)%servers)
					ss := storetest.NewSession(fmt.Sprintf("w%d-r%d-%d", w, r, i), fmt.Sprintf("user-%d", (w+i)%4),
						broker.TypeVirtual, srv, broker.StateCreating)
					ps = append(ps, broker.Placement{Session: ss, Insert: true})
				}
				// A queued session, moved to a server.
				q := *queued[(w*rounds+r)%len(queued)]
				q.ServerID = fmt.Sprintf("s-%d", (w+r)%servers)
				ps = append(ps, broker.Placement{Session: &q})
				errs, err := st.CommitPlacements(t.Context(), ps)
				mu.Lock()
				if err != nil {
					failed = append(failed, err)
				}
				for i, e := range errs {
					switch {
					case e == nil && !ps[i].Insert:
						moved[ps[i].Session.ID]++
					case e == nil, errors.Is(e, broker.ErrServerFull), errors.Is(e, broker.ErrConflict) && !ps[i].Insert:
					default:
						failed = append(failed, e)
					}
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	for _, err := range failed {
		t.Errorf("CommitPlacements: %v", err)
	}
	for id, n := range moved {
		if n > 1 {
			t.Errorf("queued session %s placed %d times", id, n)
		}
	}
	counts, err := brokers[1].CountSessions(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	for i := range servers {
		id := fmt.Sprintf("s-%d", i)
		c := counts[id]
		if c.Virtual != limit {
			t.Errorf("%s has %d virtual sessions, want the limit %d", id, c.Virtual, limit)
		}
		for owner, n := range c.ByOwner {
			if n > perUser {
				t.Errorf("%s has %d sessions of %s, limit %d", id, n, owner, perUser)
			}
		}
	}
}

// TestUpsertServer_ConcurrentRegistration registers one new server through
// two stores from several goroutines at once: the losers of the insert race
// run again and update the row the winner inserted.
func TestUpsertServer_ConcurrentRegistration(t *testing.T) {
	dsn := pgtest.DSN(t)
	stores := []*postgres.Store{MustOpen(t, dsn), MustOpen(t, dsn)}
	const workers = 8
	errs := make([]error, workers)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			srv := storetest.NewServer("s-new", 4, 0, map[string]string{"zone": fmt.Sprint(w)})
			errs[w] = stores[w%2].UpsertServer(t.Context(), srv)
		})
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Errorf("UpsertServer: %v", err)
		}
	}
	servers, err := stores[0].ListServers(t.Context(), broker.ServerFilter{})
	if err != nil {
		t.Fatal(err)
	}
	if len(servers) != 1 {
		t.Fatalf("%d servers, want 1", len(servers))
	}
	var tags int
	if err := stores[0].Pool().QueryRow(t.Context(), `SELECT count(*) FROM server_tags`).Scan(&tags); err != nil {
		t.Fatal(err)
	}
	if tags != 1 {
		t.Errorf("%d tag rows, want 1", tags)
	}
}

// TestStore_TwoBrokersSeeEachOther: writes through one store are read through
// another at once (there is no cache).
func TestStore_TwoBrokersSeeEachOther(t *testing.T) {
	dsn := pgtest.DSN(t)
	a, b := MustOpen(t, dsn), MustOpen(t, dsn)
	storetest.MustUpsertServers(t, a, storetest.NewServer("s-a", 0, 0, map[string]string{"zone": "a"}))
	storetest.MustInsertSessions(t, a, storetest.NewSession("x", "alice", broker.TypeVirtual, "s-a", broker.StateReady))
	if got := storetest.MustListSessions(t, b, broker.SessionFilter{Tags: map[string]string{"zone": "a"}}); len(got) != 1 {
		t.Fatalf("b sees %d sessions in zone a, want 1", len(got))
	}
	if err := b.UpdateSession(t.Context(), "x", func(ss *broker.Session) error {
		ss.State = broker.StateDeleted
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if got := storetest.MustGetSession(t, a, "x"); got.State != broker.StateDeleted {
		t.Errorf("a sees state %s, want DELETED", got.State)
	}
	va, err := a.Setting(t.Context(), "cluster-secret", "from-a")
	if err != nil {
		t.Fatal(err)
	}
	vb, err := b.Setting(t.Context(), "cluster-secret", "from-b")
	if err != nil || vb != va {
		t.Errorf("b's Setting = %q, %v; want a's %q", vb, err, va)
	}
}

// TestStore_TextPostgreSQLCannotHold: free text with NUL bytes or invalid
// UTF-8 (a driver's message in a state reason, a tag) is stored with U+FFFD
// in their place instead of failing the write.
func TestStore_TextPostgreSQLCannotHold(t *testing.T) {
	s := MustOpenFresh(t)
	bad := "nul\x00 and \xff invalid"
	srv := storetest.NewServer("s-a", 0, 0, map[string]string{"note": bad})
	storetest.MustUpsertServers(t, s, srv)
	ss := storetest.NewSession("x", "alice", broker.TypeVirtual, "s-a", broker.StateReady)
	ss.StateReason = bad
	storetest.MustInsertSessions(t, s, ss)
	const want = "nul\uFFFD and \uFFFD invalid"
	if got := storetest.MustGetSession(t, s, "x").StateReason; got != want {
		t.Errorf("StateReason = %q, want %q", got, want)
	}
	if err := s.UpdateSession(t.Context(), "x", func(ss *broker.Session) error {
		ss.StateReason = "again " + bad
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if got := storetest.MustGetSession(t, s, "x").StateReason; got != "again "+want {
		t.Errorf("StateReason = %q, want %q", got, "again "+want)
	}
	if got := storetest.MustListSessions(t, s, broker.SessionFilter{Tags: map[string]string{"note": bad}}); len(got) != 1 {
		t.Errorf("%d sessions by the tag, want 1", len(got))
	}
}

// TestStore_ListSessionsUsesIndex checks the plans of the frequent pages, as
// ListSessions runs them (prepared, with a generic or a custom plan): a page
// of one of 100 owners and a page of the placement queue are index range
// scans in Seq order, with no sort and no table scan. (With a few owners of
// many sessions each, walking the primary key and skipping others' sessions
// costs about the same, and the planner may rightly prefer it.)
func TestStore_ListSessionsUsesIndex(t *testing.T) {
	ctx := t.Context()
	s := MustOpenFresh(t)
	for start := 0; start < 20_000; start += 1000 {
		var batch []*broker.Session
		for i := start; i < start+1000; i++ {
			server := fmt.Sprintf("s-%02d", i%50)
			if i%10 == 0 {
				server = ""
			}
			batch = append(batch, storetest.NewSession(fmt.Sprintf("sess-%05d", i), fmt.Sprintf("user-%02d", i%100),
				broker.TypeVirtual, server, broker.StateReady))
		}
		storetest.MustInsertSessions(t, s, batch...)
	}
	conn, err := s.Pool().Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Release()
	if _, err := conn.Exec(ctx, `ANALYZE sessions`); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, `PREPARE owner_page(bigint, text, bigint) AS SELECT * FROM sessions
		WHERE seq > $1 AND owner = $2 ORDER BY seq LIMIT $3;
		PREPARE queue_page(bigint, bigint) AS SELECT * FROM sessions
		WHERE seq > $1 AND server_id = '' ORDER BY seq LIMIT $2`); err != nil {
		t.Fatal(err)
	}
	defer conn.Exec(context.Background(), `DEALLOCATE ALL; RESET plan_cache_mode`)
	for _, mode := range []string{"force_generic_plan", "force_custom_plan"} {
		if _, err := conn.Exec(ctx, `SET plan_cache_mode = `+mode); err != nil {
			t.Fatal(err)
		}
		for _, tc := range []struct{ name, execute, index string }{
			{"owner page", `owner_page(100, 'user-07', 101)`, "sessions_owner_seq"},
			{"queue page", `queue_page(100, 101)`, "sessions_queue"},
		} {
			rows, _ := conn.Query(ctx, `EXPLAIN (COSTS OFF) EXECUTE `+tc.execute)
			lines, err := pgx.CollectRows(rows, pgx.RowTo[string])
			if err != nil {
				t.Fatal(err)
			}
			plan := strings.Join(lines, "\n")
			if !strings.Contains(plan, "Index Scan using "+tc.index) || strings.Contains(plan, "Sort") || strings.Contains(plan, "Seq Scan") {
				t.Errorf("%s, %s: plan does not range-scan %s:\n%s", tc.name, mode, tc.index, plan)
			}
		}
	}
}

// TestStore_PingDown: Ping fails within about PingTimeout when the database
// stops answering (here, a proxy that stops forwarding), and Ping through
// a stopped proxy fails at once.
func TestStore_PingDown(t *testing.T) {
	if testing.Short() {
		t.Skip("waits for the store to notice a dead connection (make test runs it)")
	}
	dsn := pgtest.DSN(t)
	p := newProxy(t, dsn)
	s := MustOpen(t, p.dsn)
	if err := s.Ping(t.Context()); err != nil {
		t.Fatalf("Ping through the proxy: %v", err)
	}
	p.blackhole()
	start := time.Now()
	err := s.Ping(context.Background())
	if err == nil {
		t.Fatal("Ping succeeded while the database does not answer")
	}
	if d := time.Since(start); d > postgres.PingTimeout+time.Second {
		t.Errorf("Ping took %v to fail, want about %v", d, postgres.PingTimeout)
	}
	start = time.Now()
	s.Close()
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("Close took %v", d)
	}
}

// proxy forwards TCP connections to the PostgreSQL server of a DSN.
type proxy struct {
	dsn string
	// hole, once closed, stops all forwarding; connections stay open.
	hole chan struct{}
}

func newProxy(t *testing.T, dsn string) *proxy {
	t.Helper()
	conn := pgtest.Admin(t, dsn)
	target := net.JoinHostPort(conn.Config().Host, fmt.Sprint(conn.Config().Port))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{hole: make(chan struct{})}
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	p.dsn = replaceHostPort(t, dsn, "127.0.0.1", port)
	var (
		wg    sync.WaitGroup
		cmu   sync.Mutex
		conns []net.Conn
	)
	t.Cleanup(func() {
		ln.Close()
		cmu.Lock()
		for _, c := range conns {
			c.Close()
		}
		cmu.Unlock()
		wg.Wait()
	})
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			u, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			cmu.Lock()
			conns = append(conns, c, u)
			cmu.Unlock()
			wg.Go(func() { p.pipe(u, c) })
			wg.Go(func() { p.pipe(c, u) })
		}
	})
	return p
}

// pipe copies src to dst until either fails or the hole opens.
func (p *proxy) pipe(dst, src net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		select {
		case <-p.hole:
			io.Copy(io.Discard, src) // swallow everything, answer nothing
			return
		default:
		}
		if n > 0 {
			if _, err := dst.Write(buf[:n]); err != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

func (p *proxy) blackhole() { close(p.hole) }

// replaceHostPort returns the URL dsn with another host and port.
func replaceHostPort(t *testing.T, dsn, host, port string) string {
	t.Helper()
	u, err := url.Parse(dsn)
	if err == nil && u.Scheme != "postgres" && u.Scheme != "postgresql" {
		err = fmt.Errorf("scheme %q", u.Scheme)
	}
	if err != nil {
		t.Skipf("proxy test needs a URL DSN: %v", err)
	}
	u.Host = net.JoinHostPort(host, port)
	return u.String()
}

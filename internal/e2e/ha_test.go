package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/internal/poll"
	"github.com/berth-dev/berth/internal/postgres/pgtest"
)

// TestE2E_ClusterThreeBrokers runs three brokers on one PostgreSQL with sim
// agents spread across them and one vnc agent linked to b2, and drives every
// API through the three brokers in turn: a session created through b1 on the
// vnc agent (linked to b2) is described, screenshotted, opened in the
// gateway, has its permissions changed and is deleted through b3.
func TestE2E_ClusterThreeBrokers(t *testing.T) {
	skipShort(t, "three broker processes and a vnc agent")
	c := MustStartCluster(t, pgtest.DSN(t), 3)
	b1, b2, b3 := c.Brokers[0], c.Brokers[1], c.Brokers[2]
	vnc := c.MustStartAgent(t, "vnc", []int{1, 0, 2}, "")
	var sims []*ClusterAgent
	for i := range 6 {
		sims = append(sims, c.MustStartAgent(t, "sim", []int{i % 3, (i + 1) % 3, (i + 2) % 3}, "max_virtual_sessions = 20"))
	}
	links := c.Links(t)
	if links[vnc.ServerID] != "b2" {
		t.Fatalf("the vnc agent is linked to %q, want b2", links[vnc.ServerID])
	}
	perBroker := map[string]int{}
	for _, a := range sims {
		perBroker[links[a.ServerID]]++
	}
	if perBroker["b1"] != 2 || perBroker["b2"] != 2 || perBroker["b3"] != 2 {
		t.Fatalf("sim agents per broker: %v, want 2 each", perBroker)
	}
	all := []string{vnc.ServerID}
	for _, a := range sims {
		all = append(all, a.ServerID)
	}
	c.MustWaitAvailable(t, 10*time.Second, all...)

	ctx := apiCtx(t)
	t.Run("token from one broker works on the others", func(t *testing.T) {
		tok, err := b1.Client.Token(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, b := range []*ClusterBroker{b2, b3} {
			req, _ := http.NewRequestWithContext(ctx, http.MethodPost, b.URL+"/describeServers", strings.NewReader("{}"))
			req.Header.Set("Authorization", "Bearer "+tok)
			req.Header.Set("Content-Type", "application/json")
			resp, err := b.HTTP.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			var out api.DescribeServersResponse
			err = json.NewDecoder(resp.Body).Decode(&out)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK || err != nil || len(out.Servers) != len(all) {
				t.Fatalf("%s with b1's token: status %d, %d servers, %v", b.ID, resp.StatusCode, len(out.Servers), err)
			}
		}
	})

	t.Run("vnc session across brokers", func(t *testing.T) {
		out, err := b1.Client.CreateSessions(ctx, []api.CreateSessionRequest{{
			Name: "ha", Owner: user1, Type: api.TypeVirtual, Requirements: onServer(vnc.ServerID),
		}})
		if err != nil || len(out.SuccessfulList) != 1 {
			t.Fatalf("CreateSessions through b1: %v %+v", err, out)
		}
		id := out.SuccessfulList[0].Id
		ready := MustWaitSession(t, b2, id, api.StateReady, readyTimeout)
		if ready.Server.Id != vnc.ServerID {
			t.Fatalf("placed on %s, want the vnc server %s", ready.Server.Id, vnc.ServerID)
		}
		MustWaitSession(t, b3, id, api.StateReady, 5*time.Second)

		shots, err := b3.Client.GetSessionScreenshots(ctx, []api.GetSessionScreenshotRequest{{SessionId: id}})
		if err != nil || len(shots.SuccessfulList) != 1 || len(shots.SuccessfulList[0].SessionScreenshot.Images) == 0 {
			t.Fatalf("GetSessionScreenshots through b3 (agent on b2): %v %+v", err, shots)
		}
		conn, err := b1.Client.GetSessionConnectionData(ctx, id, user1)
		if err != nil || conn.ConnectionToken == "" {
			t.Fatalf("GetSessionConnectionData through b1: %v", err)
		}
		// b1's gateway-ca.pem: another broker's copy of the shared gateway
		// CA verifies the certificate b2 issued.
		gw := &Env{WebPort: vnc.WebPort, GatewayHTTP: b1.GatewayHTTP}
		ws := gw.MustConnect(t, id, conn.ConnectionToken, user1)
		ws.CloseNow()

		up, err := b3.Client.UpdateSessionPermissions(ctx, []api.UpdateSessionPermissionsRequest{{SessionId: id, Owner: user1, PermissionsFile: permissions("%owner% allow builtin", user2+" allow display")}})
		if err != nil || len(up.SuccessfulList) != 1 {
			t.Fatalf("UpdateSessionPermissions through b3: %v %+v", err, up)
		}
		conn2, err := b2.Client.GetSessionConnectionData(ctx, id, user2)
		if err != nil {
			t.Fatalf("GetSessionConnectionData for %s through b2: %v", user2, err)
		}
		ws = gw.MustConnect(t, id, conn2.ConnectionToken, user2)
		ws.CloseNow()

		del, err := b3.Client.DeleteSessions(ctx, []api.DeleteSessionRequest{{SessionId: id, Owner: user1}})
		if err != nil || len(del.SuccessfulList) != 1 {
			t.Fatalf("DeleteSessions through b3: %v %+v", err, del)
		}
		MustWaitSession(t, b1, id, api.StateDeleted, deletedTimeout)
		MustWaitSession(t, b2, id, api.StateDeleted, 5*time.Second)
	})

	t.Run("sim sessions through every broker", func(t *testing.T) {
		owners := []string{"alice", "bob", "carol"}
		var ids []string
		for round := range 3 {
			for i, b := range c.Brokers {
				var reqs []api.CreateSessionRequest
				for j := range 5 {
					reqs = append(reqs, api.CreateSessionRequest{
						Name: fmt.Sprintf("r%d-%s-%d", round, b.ID, j), Owner: owners[(i+j)%3], Type: api.TypeVirtual,
						Requirements: onServer(sims[(round*3+i+j)%len(sims)].ServerID),
					})
				}
				out, err := b.Client.CreateSessions(ctx, reqs)
				if err != nil || len(out.SuccessfulList) != len(reqs) {
					t.Fatalf("CreateSessions through %s: %v %+v", b.ID, err, out)
				}
				for _, s := range out.SuccessfulList {
					ids = append(ids, s.Id)
				}
			}
		}
		// Each session is READY as seen by a broker other than the one that
		// created it.
		for i, id := range ids {
			MustWaitSession(t, c.Brokers[(i/5+1)%3], id, api.StateReady, readyTimeout)
		}
		// Owner filter and paging agree on every broker.
		for _, b := range c.Brokers {
			seen := map[string]bool{}
			next := ""
			for {
				out, err := b.Client.DescribeSessions(ctx, api.DescribeSessionsRequest{
					Filters: []api.KeyValuePair{{Key: "owner", Value: "alice"}}, MaxResults: ptr(4), NextToken: next})
				if err != nil {
					t.Fatalf("DescribeSessions through %s: %v", b.ID, err)
				}
				for _, s := range out.Sessions {
					if s.Owner != "alice" || seen[s.Id] {
						t.Fatalf("%s listed %s (owner %s) twice or for the wrong owner", b.ID, s.Id, s.Owner)
					}
					seen[s.Id] = true
				}
				if next = out.NextToken; next == "" {
					break
				}
			}
			if len(seen) != 15 {
				t.Fatalf("%s lists %d of alice's sessions, want 15", b.ID, len(seen))
			}
		}
		// Delete each through a third broker.
		for i, id := range ids {
			b := c.Brokers[(i/5+2)%3]
			s, err := describe(ctx, b, id)
			if err != nil || s == nil {
				t.Fatalf("describe %s through %s: %v", id, b.ID, err)
			}
			out, err := b.Client.DeleteSessions(ctx, []api.DeleteSessionRequest{{SessionId: id, Owner: s.Owner}})
			if err != nil || len(out.SuccessfulList) != 1 {
				t.Fatalf("DeleteSessions through %s: %v %+v", b.ID, err, out)
			}
		}
		for i, id := range ids {
			MustWaitSession(t, c.Brokers[i%3], id, api.StateDeleted, deletedTimeout)
		}
	})

	t.Run("close and open servers through different brokers", func(t *testing.T) {
		target := sims[0].ServerID
		out, err := b3.Client.CloseServers(ctx, []api.CloseServerRequest{{ServerId: target}})
		if err != nil || len(out.SuccessfulList) != 1 {
			t.Fatalf("CloseServers through b3: %v %+v", err, out)
		}
		// Every broker sees it closed within one sync, and none places on it.
		for _, b := range c.Brokers {
			poll.Until(t, 5*time.Second, b.ID+" sees the server closed", func() bool {
				s, err := b.Client.DescribeServers(ctx, api.DescribeServersRequest{ServerIds: []string{target}})
				return err == nil && len(s.Servers) == 1 && s.Servers[0].Availability == api.AvailabilityUnavailable
			})
			cr, err := b.Client.CreateSessions(ctx, []api.CreateSessionRequest{{Name: "closed", Owner: "dave", Type: api.TypeVirtual, Requirements: onServer(target)}})
			if err != nil {
				t.Fatal(err)
			}
			if len(cr.SuccessfulList) == 1 {
				s := MustWaitSessionAny(t, b, cr.SuccessfulList[0].Id, 10*time.Second)
				if s.State != api.StateDeleted {
					t.Fatalf("%s placed a session on a closed server: %+v", b.ID, s)
				}
			}
		}
		op, err := b1.Client.OpenServers(ctx, []api.OpenServerRequest{{ServerId: target}})
		if err != nil || len(op.SuccessfulList) != 1 {
			t.Fatalf("OpenServers through b1: %v %+v", err, op)
		}
		c.MustWaitAvailable(t, 5*time.Second, target)
	})
}

// MustWaitSessionAny waits until broker b shows the session in a final state
// (READY or DELETED) and returns it.
func MustWaitSessionAny(tb testing.TB, b *ClusterBroker, id string, timeout time.Duration) api.Session {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), apiTimeout)
		s, err := describe(ctx, b, id)
		cancel()
		if err == nil && s != nil && (s.State == api.StateReady || s.State == api.StateDeleted) {
			return *s
		}
		if time.Now().After(deadline) {
			tb.Fatalf("broker %s: session %s not READY or DELETED within %s (%+v, %v)", b.ID, id, timeout, s, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func ptr[T any](v T) *T { return &v }

// acked is what the load generator of the fault test knows of one session.
type acked struct {
	owner   string
	deleted bool // a DeleteSessions call acknowledged it
	// maybe: a DeleteSessions call for it got no answer (its broker was
	// killed): it may have taken effect.
	maybe bool
}

// loadResult is what the load generator saw.
type loadResult struct {
	mu       sync.Mutex
	sessions map[string]*acked
	calls    map[string]int // broker ID → calls answered
	failures []string       // 5xx or transport errors from brokers that were running
}

func (r *loadResult) fail(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.failures) < 20 {
		r.failures = append(r.failures, fmt.Sprintf(format, args...))
	}
}

// runLoad creates and deletes sim sessions through the live brokers with
// workers goroutines until ctx ends. A call to a broker that has been
// killed moves the worker to the next broker; any other transport error or
// 5xx is a failure.
func runLoad(ctx context.Context, c *Cluster, workers int, killed func(*ClusterBroker) bool) *loadResult {
	r := &loadResult{sessions: map[string]*acked{}, calls: map[string]int{}}
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			owner := fmt.Sprintf("load%d", w)
			var mine []string
			for i := 0; ctx.Err() == nil; i++ {
				b := c.Brokers[(w+i)%len(c.Brokers)]
				if killed(b) {
					continue
				}
				cctx, cancel := context.WithTimeout(context.Background(), apiTimeout)
				var err error
				if i%3 == 2 && len(mine) > 0 {
					id := mine[0]
					var out *api.DeleteSessionsResponse
					out, err = b.Client.DeleteSessions(cctx, []api.DeleteSessionRequest{{SessionId: id, Owner: owner}})
					r.mu.Lock()
					switch {
					case err == nil && len(out.SuccessfulList) == 1:
						r.sessions[id].deleted = true
						mine = mine[1:]
					case err != nil:
						r.sessions[id].maybe = true
					}
					r.mu.Unlock()
				} else {
					var out *api.CreateSessionsResponse
					out, err = b.Client.CreateSessions(cctx, []api.CreateSessionRequest{
						{Name: "load", Owner: owner, Type: api.TypeVirtual},
						{Name: "load", Owner: owner, Type: api.TypeVirtual},
					})
					if err == nil {
						r.mu.Lock()
						for _, s := range out.SuccessfulList {
							r.sessions[s.Id] = &acked{owner: owner}
							mine = append(mine, s.Id)
						}
						r.mu.Unlock()
					}
				}
				cancel()
				if err != nil {
					if !killed(b) && ctx.Err() == nil {
						r.fail("%s: %v", b.ID, err)
					}
					continue
				}
				r.mu.Lock()
				r.calls[b.ID]++
				r.mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return r
}

// allSessions pages through DescribeSessions of broker b and counts each ID.
func allSessions(tb testing.TB, b *ClusterBroker) map[string][]api.Session {
	tb.Helper()
	out := map[string][]api.Session{}
	next := ""
	for {
		ctx, cancel := context.WithTimeout(context.Background(), apiTimeout)
		page, err := b.Client.DescribeSessions(ctx, api.DescribeSessionsRequest{MaxResults: ptr(500), NextToken: next})
		cancel()
		if err != nil {
			tb.Fatalf("DescribeSessions through %s: %v", b.ID, err)
		}
		for _, s := range page.Sessions {
			out[s.Id] = append(out[s.Id], s)
		}
		if next = page.NextToken; next == "" {
			return out
		}
	}
}

// TestE2E_ClusterKillBroker kills the broker holding the maintenance lease
// with SIGKILL while clients create and delete sessions through all three
// brokers, and checks that nothing acknowledged is lost or doubled, that
// nothing stays CREATING or DELETING, that the dead broker's agents move to
// the others within 10 s, and that the survivors answer throughout.
func TestE2E_ClusterKillBroker(t *testing.T) {
	skipShort(t, "kills a broker under load for about 20 s")
	dsn := pgtest.DSN(t)
	c := MustStartCluster(t, dsn, 3)
	var sims []*ClusterAgent
	for i := range 6 {
		sims = append(sims, c.MustStartAgent(t, "sim", []int{i % 3, (i + 1) % 3, (i + 2) % 3}, ""))
	}
	holder := leaseHolder(t, dsn)
	var victim *ClusterBroker
	for _, b := range c.Brokers {
		if b.ID == holder {
			victim = b
		}
	}
	if victim == nil {
		t.Fatalf("no broker holds the maintenance lease (holder %q)", holder)
	}
	var victimAgents []string
	for id, b := range c.Links(t) {
		if b == victim.ID {
			victimAgents = append(victimAgents, id)
		}
	}
	if len(victimAgents) != 2 {
		t.Fatalf("the victim %s holds %d agent links, want 2", victim.ID, len(victimAgents))
	}

	var dead atomic.Bool
	killed := func(b *ClusterBroker) bool { return b == victim && dead.Load() }
	ctx, cancel := context.WithTimeout(context.Background(), 12*time.Second)
	defer cancel()
	resc := make(chan *loadResult, 1)
	go func() { resc <- runLoad(ctx, c, 6, killed) }()

	time.Sleep(4 * time.Second)
	dead.Store(true)
	victim.Proc.Kill(t)
	killedAt := time.Now()
	t.Logf("killed %s (lease holder, linked to %v)", victim.ID, victimAgents)

	// Its agents reconnect to the others within 10 s.
	var moved time.Duration
	for {
		links := c.Links(t)
		n := 0
		for _, id := range victimAgents {
			if links[id] != victim.ID && links[id] != "" {
				n++
			}
		}
		if n == len(victimAgents) {
			moved = time.Since(killedAt)
			break
		}
		if time.Since(killedAt) > 10*time.Second {
			t.Fatalf("the agents of the killed broker did not reconnect elsewhere within 10 s: %v", links)
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("the killed broker's agents reconnected elsewhere %s after the kill", moved.Round(time.Millisecond))
	// Another broker takes the lease.
	poll.Until(t, 10*time.Second, "another broker to take the lease", func() bool {
		h := leaseHolder(t, dsn)
		return h != "" && h != victim.ID
	})
	t.Logf("%s holds the lease %s after the kill", leaseHolder(t, dsn), time.Since(killedAt).Round(time.Millisecond))

	res := <-resc
	if len(res.failures) > 0 {
		t.Errorf("the surviving brokers failed calls:\n%s", strings.Join(res.failures, "\n"))
	}
	t.Logf("calls answered per broker: %v; sessions acknowledged: %d", res.calls, len(res.sessions))
	for _, b := range c.Live() {
		if res.calls[b.ID] == 0 {
			t.Errorf("%s answered no call", b.ID)
		}
	}

	// After the retry windows, every acknowledged session exists once, in
	// the state its calls ask for, and nothing is CREATING or DELETING.
	survivor := c.Live()[0]
	deadline := time.Now().Add(60 * time.Second)
	for {
		all := allSessions(t, survivor)
		var problems, ids []string
		for id, a := range res.sessions {
			got := all[id]
			n := len(problems)
			switch {
			case len(got) != 1:
				problems = append(problems, fmt.Sprintf("%s listed %d times", id, len(got)))
			case a.deleted && got[0].State != api.StateDeleted:
				problems = append(problems, fmt.Sprintf("%s (deleted) is %s %q", id, got[0].State, got[0].StateReason))
			case a.maybe && !a.deleted && got[0].State == api.StateDeleted:
				// A delete whose answer was lost with its broker took effect.
			case !a.deleted && got[0].State != api.StateReady:
				problems = append(problems, fmt.Sprintf("%s is %s %s %q, want READY", id, got[0].State, got[0].Substate, got[0].StateReason))
			}
			if len(problems) > n {
				ids = append(ids, id)
			}
		}
		for id, got := range all {
			if s := got[0].State; s == api.StateCreating || s == api.StateDeleting {
				if _, ok := res.sessions[id]; !ok {
					problems = append(problems, fmt.Sprintf("%s (unacknowledged) is %s", id, s))
				}
			}
		}
		if len(problems) == 0 {
			t.Logf("%d acknowledged sessions all in their final state %s after the kill", len(res.sessions), time.Since(killedAt).Round(time.Second))
			break
		}
		if time.Now().After(deadline) {
			if len(problems) > 20 {
				problems = append(problems[:20], fmt.Sprintf("… and %d more", len(problems)-20))
			}
			for _, b := range c.Live() {
				ctx, cancel := context.WithTimeout(context.Background(), apiTimeout)
				out, err := b.Client.DescribeServers(ctx, api.DescribeServersRequest{})
				cancel()
				if err == nil {
					for _, s := range out.Servers {
						t.Logf("%s sees server %s %s %s", b.ID, s.Id, s.Availability, s.UnavailabilityReason)
					}
				}
			}
			t.Logf("links in the database: %v", c.Links(t))
			for _, p := range append(c.brokerLogs(), c.agentLogs()...) {
				b, _ := os.ReadFile(p)
				n := 0
				for _, line := range strings.Split(string(b), "\n") {
					for _, id := range ids[:min(len(ids), 5)] {
						if strings.Contains(line, id) && n < 40 {
							t.Logf("%s: %s", filepath.Base(p), line)
							n++
						}
					}
				}
			}
			t.Fatalf("%d problems 60 s after the load:\n%s", len(problems), strings.Join(problems, "\n"))
		}
		time.Sleep(time.Second)
	}
	_ = sims
}

// leaseHolder reads who holds the maintenance lease now ("" if nobody).
func leaseHolder(tb testing.TB, dsn string) string {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		tb.Fatal(err)
	}
	defer conn.Close(ctx)
	var h string
	err = conn.QueryRow(ctx, `SELECT holder FROM leases WHERE name = 'maintenance' AND expires_at > now()`).Scan(&h)
	if err != nil && !errors.Is(err, pgx.ErrNoRows) {
		tb.Fatal(err)
	}
	return h
}

// TestE2E_ClusterPostgresRestart stops the brokers' PostgreSQL under them:
// they report unhealthy, recover by themselves when it is back, and keep
// everything they acknowledged.
func TestE2E_ClusterPostgresRestart(t *testing.T) {
	skipShort(t, "starts and stops a private PostgreSQL")
	pg := pgtest.StartServer(t)
	c := MustStartCluster(t, pg.DSN, 2)
	a1 := c.MustStartAgent(t, "sim", []int{0, 1}, "")
	a2 := c.MustStartAgent(t, "sim", []int{1, 0}, "")
	ctx := apiCtx(t)
	var before []string
	for _, b := range c.Brokers {
		out, err := b.Client.CreateSessions(ctx, []api.CreateSessionRequest{
			{Name: "kept", Owner: "alice", Type: api.TypeVirtual, Requirements: onServer(a1.ServerID)},
			{Name: "kept", Owner: "bob", Type: api.TypeVirtual, Requirements: onServer(a2.ServerID)},
		})
		if err != nil || len(out.SuccessfulList) != 2 {
			t.Fatalf("CreateSessions through %s: %v %+v", b.ID, err, out)
		}
		for _, s := range out.SuccessfulList {
			before = append(before, s.Id)
		}
	}
	for _, id := range before {
		MustWaitSession(t, c.Brokers[1], id, api.StateReady, readyTimeout)
	}

	pg.Stop(t)
	stopped := time.Now()
	for _, b := range c.Brokers {
		poll.Until(t, 10*time.Second, b.ID+" /health to report the store down", func() bool {
			return health(b) == http.StatusServiceUnavailable
		})
		// The API answers with 503, not a hang.
		cctx, cancel := context.WithTimeout(context.Background(), apiTimeout)
		_, err := b.Client.DescribeSessions(cctx, api.DescribeSessionsRequest{})
		cancel()
		var ae *api.Error
		if !errors.As(err, &ae) || ae.StatusCode != http.StatusServiceUnavailable {
			t.Errorf("%s DescribeSessions with the store down: %v, want a 503", b.ID, err)
		}
	}
	t.Logf("both brokers reported unhealthy within %s", time.Since(stopped).Round(time.Millisecond))
	time.Sleep(3 * time.Second)

	pg.Start(t)
	started := time.Now()
	for _, b := range c.Brokers {
		poll.Until(t, 20*time.Second, b.ID+" /health to recover", func() bool { return health(b) == http.StatusOK })
	}
	t.Logf("both brokers healthy again %s after PostgreSQL came back", time.Since(started).Round(time.Millisecond))
	for i, b := range c.Brokers {
		for _, id := range before {
			s := MustWaitSession(t, b, id, api.StateReady, 15*time.Second)
			_ = s
		}
		out, err := b.Client.CreateSessions(ctx, []api.CreateSessionRequest{{Name: "after", Owner: "carol", Type: api.TypeVirtual, Requirements: onServer([]string{a1.ServerID, a2.ServerID}[i])}})
		if err != nil || len(out.SuccessfulList) != 1 {
			t.Fatalf("CreateSessions through %s after the restart: %v %+v", b.ID, err, out)
		}
		MustWaitSession(t, c.Brokers[1-i], out.SuccessfulList[0].Id, api.StateReady, readyTimeout)
	}
	c.MustWaitAvailable(t, 20*time.Second, a1.ServerID, a2.ServerID)
}

// health returns the status of broker b's /health (0 when it does not answer).
func health(b *ClusterBroker) int {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, b.URL+"/health", nil)
	resp, err := b.HTTP.Do(req)
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

// tcpBalancer is a minimal TCP load balancer for the tests: each connection
// goes to the first backend that accepts it.
type tcpBalancer struct {
	ln       net.Listener
	backends []string
}

func startBalancer(tb testing.TB, backends ...string) *tcpBalancer {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	lb := &tcpBalancer{ln: ln, backends: backends}
	tb.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go lb.forward(c)
		}
	}()
	return lb
}

func (lb *tcpBalancer) forward(c net.Conn) {
	defer c.Close()
	for _, addr := range lb.backends {
		b, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			continue
		}
		defer b.Close()
		done := make(chan struct{}, 2)
		go func() { io.Copy(b, c); done <- struct{}{} }()
		go func() { io.Copy(c, b); done <- struct{}{} }()
		<-done
		return
	}
}

// TestE2E_ClusterAgentBehindLoadBalancer: an agent that knows one address, a
// load balancer in front of two brokers, moves to the other broker when its
// broker is killed, and keeps its sessions.
func TestE2E_ClusterAgentBehindLoadBalancer(t *testing.T) {
	c := MustStartCluster(t, pgtest.DSN(t), 2)
	lb := startBalancer(t, c.Brokers[0].AgentAddr, c.Brokers[1].AgentAddr)
	// The agent's only broker address is the balancer's.
	a := c.MustStartAgentAt(t, "sim", []string{lb.ln.Addr().String()}, "")
	if got := c.Links(t)[a.ServerID]; got != "b1" {
		t.Fatalf("the agent is linked to %q through the balancer, want b1", got)
	}
	b1, b2 := c.Brokers[0], c.Brokers[1]
	ctx := apiCtx(t)
	out, err := b2.Client.CreateSessions(ctx, []api.CreateSessionRequest{{Name: "kept", Owner: "alice", Type: api.TypeVirtual}})
	if err != nil || len(out.SuccessfulList) != 1 {
		t.Fatalf("CreateSessions: %v %+v", err, out)
	}
	id := out.SuccessfulList[0].Id
	MustWaitSession(t, b2, id, api.StateReady, readyTimeout)

	b1.Proc.Kill(t)
	killed := time.Now()
	poll.Until(t, 10*time.Second, "the agent to reconnect through the balancer", func() bool {
		return c.Links(t)[a.ServerID] == "b2"
	})
	t.Logf("the agent was linked to b2 %s after b1 was killed", time.Since(killed).Round(time.Millisecond))
	MustWaitSession(t, b2, id, api.StateReady, 10*time.Second)
	out, err = b2.Client.CreateSessions(ctx, []api.CreateSessionRequest{{Name: "after", Owner: "bob", Type: api.TypeVirtual}})
	if err != nil || len(out.SuccessfulList) != 1 {
		t.Fatalf("CreateSessions after the failover: %v %+v", err, out)
	}
	MustWaitSession(t, b2, out.SuccessfulList[0].Id, api.StateReady, readyTimeout)
}

// skipShort skips the high-availability tests under go test -short: they
// take tens of seconds each; make test runs them.
func skipShort(t *testing.T, why string) {
	t.Helper()
	if testing.Short() {
		t.Skipf("-short: %s (make test runs it)", why)
	}
}

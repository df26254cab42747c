package main

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/internal/agentproto"
	"github.com/berth-dev/berth/internal/poll"
	"github.com/berth-dev/berth/internal/postgres/pgtest"
)

// mustRunClusterBroker starts an in-process broker on the PostgreSQL schema dsn.
func mustRunClusterBroker(tb testing.TB, dsn, id string) *testBroker {
	tb.Helper()
	return MustRunMain(tb, filepath.Join(tb.TempDir(), id), func(c *Config) {
		c.PersistenceDB, c.PersistenceDSN, c.BrokerID = "postgresql", dsn, id
	})
}

// TestCluster_ConcurrentPlacement has two brokers on one PostgreSQL place
// 2,000 sessions at once on 20 servers that take 50 sessions each (and 10
// per owner): no server ever holds more than its limits, however the two
// brokers' placements interleave.
func TestCluster_ConcurrentPlacement(t *testing.T) {
	if testing.Short() {
		t.Skip("places 2,000 sessions")
	}
	dsn := pgtest.DSN(t)
	brokers := []*testBroker{mustRunClusterBroker(t, dsn, "b1"), mustRunClusterBroker(t, dsn, "b2")}
	const (
		servers    = 20
		maxVirtual = 50
		maxPerUser = 10
		owners     = 20
		requests   = 2000
	)
	var agents []*simAgent
	for i := range servers {
		b := brokers[i%2]
		agents = append(agents, b.MustStartSimAgent(t, filepath.Join(t.TempDir(), fmt.Sprint("agent", i)), nil, agentproto.HostReport{
			Hostname: fmt.Sprint("host", i), MaxVirtualSessions: maxVirtual, MaxConcurrentSessionsPerUser: maxPerUser,
		}))
	}
	clients := []*api.Client{brokers[0].MustClient(t), brokers[1].MustClient(t)}
	// Both brokers know all 20 servers (half of them linked to the other).
	for i, c := range clients {
		poll.Until(t, 10*time.Second, fmt.Sprintf("broker %d to list %d servers", i+1, servers), func() bool {
			out, err := c.DescribeServers(context.Background(), api.DescribeServersRequest{})
			return err == nil && len(out.Servers) == servers
		})
	}

	var mu sync.Mutex
	placed := map[string]bool{}
	var wg sync.WaitGroup
	start := make(chan struct{})
	const workers, batch = 8, 25 // per broker: 8 × 5 batches × 25 = 1,000
	for bi, c := range clients {
		for w := range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				for k := range requests / len(clients) / workers / batch {
					var reqs []api.CreateSessionRequest
					for j := range batch {
						reqs = append(reqs, api.CreateSessionRequest{
							Name: "tight", Owner: fmt.Sprintf("user%d", (bi*7+w*5+k*3+j)%owners), Type: api.TypeVirtual,
						})
					}
					ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
					out, err := c.CreateSessions(ctx, reqs)
					cancel()
					if err != nil {
						t.Errorf("CreateSessions through b%d: %v", bi+1, err)
						return
					}
					mu.Lock()
					for _, s := range out.SuccessfulList {
						if placed[s.Id] {
							t.Errorf("session %s acknowledged twice", s.Id)
						}
						placed[s.Id] = true
					}
					mu.Unlock()
				}
			}()
		}
	}
	close(start)
	wg.Wait()
	t.Logf("%d of %d requests placed (capacity %d)", len(placed), requests, servers*maxVirtual)
	if len(placed) > servers*maxVirtual {
		t.Fatalf("%d sessions placed on %d servers of %d sessions each", len(placed), servers, maxVirtual)
	}
	if len(placed) < servers*maxVirtual*9/10 {
		t.Errorf("only %d sessions placed; the brokers should fill most of the %d places", len(placed), servers*maxVirtual)
	}

	// Count what each server holds, as the store and as the agents see it.
	perServer := map[string]int{}
	perOwner := map[[2]string]int{}
	next := ""
	for {
		out, err := clients[1].DescribeSessions(context.Background(), api.DescribeSessionsRequest{MaxResults: ptrInt(1000), NextToken: next})
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range out.Sessions {
			if s.State == api.StateDeleted {
				continue
			}
			if !placed[s.Id] {
				t.Errorf("session %s (%s) is live but was never acknowledged", s.Id, s.State)
			}
			perServer[s.Server.Id]++
			perOwner[[2]string{s.Server.Id, s.Owner}]++
		}
		if next = out.NextToken; next == "" {
			break
		}
	}
	for id, n := range perServer {
		if n > maxVirtual {
			t.Errorf("server %s holds %d sessions, limit %d", id, n, maxVirtual)
		}
	}
	for k, n := range perOwner {
		if n > maxPerUser {
			t.Errorf("server %s holds %d sessions of %s, limit %d per owner", k[0], n, k[1], maxPerUser)
		}
	}
	poll.Until(t, 30*time.Second, "the agents to run every placed session", func() bool {
		total := 0
		for _, a := range agents {
			ss, _ := a.Driver.Sessions(context.Background())
			if len(ss) > maxVirtual {
				t.Fatalf("an agent runs %d sessions, limit %d", len(ss), maxVirtual)
			}
			total += len(ss)
		}
		return total == len(placed)
	})
}

func ptrInt(v int) *int { return &v }

// TestCluster_DuplicateBrokerID: a second broker started with the broker-id
// of a live one on the same database refuses to start, naming the ID, where
// the other runs and the age of its heartbeat (before, both ran, and
// commands to the agents of one failed as unreachable).
func TestCluster_DuplicateBrokerID(t *testing.T) {
	dsn := pgtest.DSN(t)
	mustRunClusterBroker(t, dsn, "b1")
	m := NewMain()
	m.Config.WorkingPath = t.TempDir()
	m.Config.ClientBindHost, m.Config.AgentBindHost = "127.0.0.1", "127.0.0.1"
	m.Config.ClientPort, m.Config.AgentPort = 0, 0
	m.Config.PersistenceDB, m.Config.PersistenceDSN, m.Config.BrokerID = "postgresql", dsn, "b1"
	m.Logger = slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
	err := m.Run(context.Background())
	if err == nil {
		m.Close()
		t.Fatal("a second broker with broker-id b1 started")
	}
	for _, want := range []string{`broker-id "b1" is in use by a live broker at host `, "client port 0, agent port 0, pid ", "last heartbeat was "} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("refusal %q does not say %q", err, want)
		}
	}
}

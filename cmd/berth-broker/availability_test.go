package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/internal/agent"
	"github.com/berth-dev/berth/internal/agentproto"
	"github.com/berth-dev/berth/internal/driver/sim"
	"github.com/berth-dev/berth/internal/pki"
	"github.com/berth-dev/berth/internal/poll"
	"github.com/berth-dev/berth/internal/postgres/pgtest"
)

// childEnv names the environment variable that makes
// TestAvailabilityChildBroker run a broker: the JSON of a childConfig.
const childEnv = "BERTH_AVAILABILITY_CHILD"

// childConfig is what a child broker process is told.
type childConfig struct {
	Dir        string
	ClientPort int
	AgentPort  int
	Heartbeat  time.Duration
	// DSN and BrokerID, when DSN is set, put the broker on PostgreSQL,
	// in a cluster.
	DSN      string
	BrokerID string
}

// TestAvailabilityChildBroker is not a test: with BERTH_AVAILABILITY_CHILD
// set, it runs a broker for startChildBroker in a process of its own, prints
// its addresses, and serves until its stdin closes or it is killed.
func TestAvailabilityChildBroker(t *testing.T) {
	v := os.Getenv(childEnv)
	if v == "" {
		t.Skip("runs only as a child broker of TestBroker_RestartAvailability")
	}
	var cfg childConfig
	if err := json.Unmarshal([]byte(v), &cfg); err != nil {
		t.Fatal(err)
	}
	m := NewMain()
	m.Config.WorkingPath = cfg.Dir
	m.Config.ClientBindHost, m.Config.AgentBindHost = "127.0.0.1", "127.0.0.1"
	m.Config.ClientPort, m.Config.AgentPort = cfg.ClientPort, cfg.AgentPort
	m.Config.AgentHeartbeatTimeout = cfg.Heartbeat
	if cfg.DSN != "" {
		m.Config.PersistenceDB, m.Config.PersistenceDSN, m.Config.BrokerID = "postgresql", cfg.DSN, cfg.BrokerID
	}
	m.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	if err := m.Run(context.Background()); err != nil {
		t.Fatalf("run broker: %v", err)
	}
	fmt.Printf("BROKER-READY %s %s\n", m.ClientAddr(), m.AgentAddr())
	io.Copy(io.Discard, os.Stdin)
	m.Close()
}

// childBroker is a broker running in a child process (the test binary
// running TestAvailabilityChildBroker), so that it can be SIGKILLed.
type childBroker struct {
	*testBroker // addresses the child: its Main only names the listeners
	cmd         *exec.Cmd
	stdin       io.Closer
}

// addrOnly is a net.Listener that only names an address, for the
// testBroker helpers to reach a broker in another process.
type addrOnly struct{ a net.Addr }

func (addrOnly) Accept() (net.Conn, error) { return nil, net.ErrClosed }
func (addrOnly) Close() error              { return nil }
func (l addrOnly) Addr() net.Addr          { return l.a }

// startChildBroker starts a broker process on dir and the given ports (0:
// any) and waits until it listens.
func startChildBroker(t *testing.T, cfg childConfig) *childBroker {
	t.Helper()
	v, _ := json.Marshal(cfg)
	cmd := exec.Command(os.Args[0], "-test.run=^TestAvailabilityChildBroker$", "-test.count=1")
	cmd.Env = append(os.Environ(), childEnv+"="+string(v))
	cmd.Stderr = testWriter{t}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	cb := &childBroker{cmd: cmd, stdin: stdin}
	t.Cleanup(cb.stop)
	ready := make(chan []string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if f := strings.Fields(sc.Text()); len(f) == 3 && f[0] == "BROKER-READY" {
				ready <- f[1:]
			}
		}
		close(ready)
	}()
	var addrs []string
	select {
	case addrs = <-ready:
	case <-time.After(60 * time.Second):
	}
	if len(addrs) != 2 {
		t.Fatal("the child broker did not start")
	}
	m := &Main{Config: DefaultConfig()}
	m.Config.WorkingPath = cfg.Dir
	for i, ln := range []*net.Listener{&m.clientLn, &m.agentLn} {
		a, err := net.ResolveTCPAddr("tcp", addrs[i])
		if err != nil {
			t.Fatal(err)
		}
		*ln = addrOnly{a}
	}
	hc, err := api.NewHTTPClient(filepath.Join(cfg.Dir, "ca.pem"), false)
	if err != nil {
		t.Fatal(err)
	}
	cb.testBroker = &testBroker{Main: m, dir: cfg.Dir, hc: hc}
	return cb
}

// kill SIGKILLs the broker: nothing it does on a clean stop happens.
func (b *childBroker) kill(t *testing.T) {
	t.Helper()
	if err := b.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	b.cmd.Wait()
}

// stop ends the broker cleanly if it still runs.
func (b *childBroker) stop() {
	b.stdin.Close()
	b.cmd.Wait()
}

// port returns the port of a TCP address.
func port(t *testing.T, addr net.Addr) int {
	t.Helper()
	return addr.(*net.TCPAddr).Port
}

// serverState returns the availability and reason of the server of each
// host name.
func serverState(t *testing.T, c *api.Client) map[string]string {
	t.Helper()
	out := map[string]string{}
	for host, s := range servers(t, c) {
		out[host] = s.Availability + "/" + s.UnavailabilityReason
	}
	return out
}

const (
	stateAvailable = api.AvailabilityAvailable + "/"
	stateAwaited   = api.AvailabilityUnavailable + "/" + api.ReasonUnknown
)

// TestBroker_RestartAvailability: a broker process is SIGKILLed with two
// agents linked and started again on the same ports and state; only one
// agent comes back. Until the other relinks, DescribeServers shows it
// UNAVAILABLE with reason UNKNOWN (it used to show it AVAILABLE from its
// stored last-seen time), and CreateSessions places only on the linked
// server; once it relinks it is AVAILABLE again.
func TestBroker_RestartAvailability(t *testing.T) {
	if testing.Short() {
		t.Skip("runs and kills broker processes")
	}
	t.Parallel()
	// The heartbeat timeout is also how long a restarted broker awaits an
	// agent's link (UNKNOWN) before it calls it UNREACHABLE_AGENT: long
	// enough for this test's window on a loaded machine.
	cfg := childConfig{Dir: t.TempDir(), Heartbeat: 30 * time.Second}
	b := startChildBroker(t, cfg)
	c := b.MustClient(t)
	stateA, stateB := t.TempDir(), t.TempDir()
	b.MustStartSimAgent(t, stateA, nil, hostReport("host-a", 0, nil))
	agB := b.MustStartSimAgent(t, stateB, nil, hostReport("host-b", 0, nil))
	poll.Until(t, 20*time.Second, "both servers AVAILABLE", func() bool {
		s := serverState(t, c)
		return s["host-a"] == stateAvailable && s["host-b"] == stateAvailable
	})
	ids := map[string]string{}
	for host, s := range servers(t, c) {
		ids[host] = s.Id
	}

	b.kill(t)
	agB.Stop() // its link died with the broker; it stays away
	cfg.ClientPort, cfg.AgentPort = port(t, b.clientLn.Addr()), port(t, b.agentLn.Addr())
	b = startChildBroker(t, cfg)
	c.BrokerURL = "https://" + b.ClientAddr() // the same address

	var last map[string]string
	poll.Until(t, 20*time.Second, "host-a to relink while host-b stays awaited", func() bool {
		last = serverState(t, c)
		if last["host-b"] != stateAwaited {
			t.Fatalf("host-b, whose agent is away, is %s after the restart, want %s", last["host-b"], stateAwaited)
		}
		return last["host-a"] == stateAvailable
	})
	t.Logf("after the restart, with host-a relinked: %v", last)

	// Placement in the window: only on the linked server.
	var reqs []api.CreateSessionRequest
	for i := range 6 {
		reqs = append(reqs, api.CreateSessionRequest{Name: fmt.Sprint("s", i), Owner: fmt.Sprint("user", i), Type: api.TypeVirtual})
	}
	resp := create(t, c, reqs...)
	if len(resp.SuccessfulList) != len(reqs) {
		t.Fatalf("CreateSessions in the window: %+v", resp.UnsuccessfulList)
	}
	for _, s := range resp.SuccessfulList {
		got := waitState(t, c, s.Id, api.StateReady)
		if got.Server == nil || got.Server.Id != ids["host-a"] {
			t.Errorf("session %s placed on %+v, want the linked server %s", s.Id, got.Server, ids["host-a"])
		}
	}
	if s := serverState(t, c)["host-b"]; s != stateAwaited {
		t.Fatalf("host-b is %s before its agent relinks, want %s", s, stateAwaited)
	}

	b.MustStartSimAgent(t, stateB, nil, hostReport("host-b", 0, nil))
	poll.Until(t, 20*time.Second, "host-b AVAILABLE once it relinks", func() bool {
		last = serverState(t, c)
		return last["host-b"] == stateAvailable && last["host-a"] == stateAvailable
	})
}

// startSimAgentOn starts a sim agent whose state lives in stateDir, trusting
// the CA in caDir and registering with its statement, linking to the first
// of urls that takes it.
func startSimAgentOn(t *testing.T, caDir string, urls []string, stateDir string, report agentproto.HostReport) *simAgent {
	t.Helper()
	pool, err := pki.LoadPool(filepath.Join(caDir, "ca.pem"))
	if err != nil {
		t.Fatal(err)
	}
	stmt, err := os.ReadFile(filepath.Join(caDir, SoftwareStatementFile))
	if err != nil {
		t.Fatal(err)
	}
	id, err := agent.LoadOrCreateServerID(stateDir)
	if err != nil {
		t.Fatal(err)
	}
	drv := sim.New()
	a := &agent.Agent{
		BrokerURLs:        urls,
		TLSConfig:         tlsConfig(pool),
		ServerID:          id,
		StateDir:          stateDir,
		SoftwareStatement: strings.TrimSpace(string(stmt)),
		Driver:            drv,
		Report:            func(context.Context) (agentproto.HostReport, error) { return report, nil },
		UpdateInterval:    time.Second,
		Logger:            slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn})),
	}
	ctx, cancel := context.WithCancel(context.Background())
	sa := &simAgent{Agent: a, Driver: drv, cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(sa.done)
		_ = a.Run(ctx)
	}()
	t.Cleanup(sa.Stop)
	return sa
}

// TestCluster_PlannedStopNeverUnreachable: two brokers on one PostgreSQL;
// four agents linked to broker 1, two of which also know broker 2. Broker 1
// stops cleanly (Main.Close, which tells the Service it is stopping). The
// two that know broker 2 move at once; the other two stay away until they
// are restarted knowing broker 2 (slow movers). Meanwhile broker 2 shows
// the moved servers AVAILABLE and the awaited ones UNAVAILABLE with reason
// UNKNOWN, never UNREACHABLE_AGENT, and all AVAILABLE once every agent has
// relinked to it.
func TestCluster_PlannedStopNeverUnreachable(t *testing.T) {
	if testing.Short() {
		t.Skip("runs two brokers and moves their agents")
	}
	dsn := pgtest.DSN(t)
	t.Parallel()
	run := func(id string) *testBroker {
		return MustRunMain(t, filepath.Join(t.TempDir(), id), func(c *Config) {
			c.PersistenceDB, c.PersistenceDSN, c.BrokerID = "postgresql", dsn, id
			// How long broker 2 awaits broker 1's agents: longer than
			// this test's window on a loaded machine.
			c.AgentHeartbeatTimeout = 30 * time.Second
		})
	}
	b1, b2 := run("b1"), run("b2")
	both := []string{"wss://" + b1.AgentAddr(), "wss://" + b2.AgentAddr()}
	const n = 4
	var slow []*simAgent
	for i := range n {
		urls := both
		if i >= 2 {
			urls = both[:1]
		}
		a := startSimAgentOn(t, b1.dir, urls, t.TempDir(), hostReport(fmt.Sprint("host-", i), 0, nil))
		if i >= 2 {
			slow = append(slow, a)
		}
	}
	c2 := b2.MustClient(t)
	poll.Until(t, 20*time.Second, "every agent linked to broker 1, and AVAILABLE on broker 2", func() bool {
		s := serverState(t, c2)
		for i := range n {
			if s[fmt.Sprint("host-", i)] != stateAvailable {
				return false
			}
		}
		return b1.hub.Count() == n
	})

	seen := map[string]map[string]bool{}
	watch := func(want func(map[string]string) bool) func() bool {
		return func() bool {
			s := serverState(t, c2)
			for host, st := range s {
				if seen[host] == nil {
					seen[host] = map[string]bool{}
				}
				seen[host][st] = true
				if st == api.AvailabilityUnavailable+"/"+api.ReasonUnreachableAgent {
					t.Fatalf("%s is UNREACHABLE_AGENT on broker 2 during a planned stop of broker 1 (states seen: %v)", host, seen)
				}
			}
			return want(s)
		}
	}
	if err := b1.Close(); err != nil {
		t.Fatalf("stop broker 1: %v", err)
	}
	poll.Until(t, 20*time.Second, "the moved servers AVAILABLE and the awaited ones UNKNOWN on broker 2", watch(func(s map[string]string) bool {
		return s["host-0"] == stateAvailable && s["host-1"] == stateAvailable &&
			s["host-2"] == stateAwaited && s["host-3"] == stateAwaited
	}))
	for i, a := range slow {
		a.Stop()
		startSimAgentOn(t, b1.dir, both, a.StateDir, hostReport(fmt.Sprint("host-", i+2), 0, nil))
	}
	poll.Until(t, 20*time.Second, "every agent relinked to broker 2", watch(func(s map[string]string) bool {
		for i := range n {
			if s[fmt.Sprint("host-", i)] != stateAvailable {
				return false
			}
		}
		return b2.hub.Count() == n
	}))
	t.Logf("states seen on broker 2 while the agents moved: %v", seen)
}

package e2e

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/berth-dev/berth/api"
)

// Cluster is a berth deployment of several brokers sharing one PostgreSQL
// database, with agents spread across them.
type Cluster struct {
	Dir     string
	Bin     string
	DSN     string // the brokers' persistence-dsn
	CAFile  string // the cluster's CA certificate (the same ca.pem in every working path)
	Brokers []*ClusterBroker
	Agents  []*ClusterAgent

	clientID, secret string
}

// ClusterBroker is one broker process of a Cluster.
type ClusterBroker struct {
	ID        string
	Dir       string // working path
	Conf      string
	URL       string // client API
	AgentAddr string
	Proc      *Process
	// Client calls the API of this broker with the cluster's API client.
	Client *api.Client
	HTTP   *http.Client
	// GatewayHTTP trusts this broker's gateway-ca.pem, the web gateway CA
	// that the cluster's brokers share.
	GatewayHTTP *http.Client
}

// ClusterAgent is one agent process of a Cluster.
type ClusterAgent struct {
	Name     string
	ServerID string
	Conf     string
	Proc     *Process
	WebPort  int // vnc only
}

// MustStartCluster starts n brokers (b1, b2, …) on dsn, one after the other,
// and registers one API client, which every broker accepts.
func MustStartCluster(tb testing.TB, dsn string, n int, extraProps ...string) *Cluster {
	tb.Helper()
	c := &Cluster{Dir: tb.TempDir(), Bin: MustBuild(tb), DSN: dsn}
	tb.Cleanup(func() {
		if tb.Failed() {
			for _, b := range c.Brokers {
				tb.Logf("last lines of %s's log %s:\n%s", b.ID, b.Proc.Log, logTail(b.Proc.Log, 30))
			}
			for _, a := range c.Agents {
				tb.Logf("last lines of %s's log %s:\n%s", a.Name, a.Proc.Log, logTail(a.Proc.Log, 15))
			}
		}
	})
	for i := range n {
		c.startBroker(tb, i+1, extraProps)
	}
	c.CAFile = filepath.Join(c.Brokers[0].Dir, "ca.pem")
	out, err := exec.Command(filepath.Join(c.Bin, "berth-broker"), "register-api-client", "--config", c.Brokers[n-1].Conf, "--client-name", "e2e-cluster").CombinedOutput()
	if err != nil {
		tb.Fatalf("berth-broker register-api-client: %v\n%s", err, out)
	}
	for _, line := range strings.Split(string(out), "\n") {
		if v, ok := strings.CutPrefix(line, "client-id: "); ok {
			c.clientID = strings.TrimSpace(v)
		}
		if v, ok := strings.CutPrefix(line, "client-password: "); ok {
			c.secret = strings.TrimSpace(v)
		}
	}
	for _, b := range c.Brokers {
		ca, err := os.ReadFile(filepath.Join(b.Dir, "ca.pem"))
		first, _ := os.ReadFile(c.CAFile)
		if err != nil || string(ca) != string(first) {
			tb.Fatalf("broker %s has another ca.pem than b1 (%v): the brokers must share one CA", b.ID, err)
		}
		hc := *b.HTTP
		if _, bench := tb.(*testing.B); !bench {
			hc.Transport = &validatingTransport{tb: tb, next: b.HTTP.Transport}
		}
		b.Client = &api.Client{BrokerURL: b.URL, ClientID: c.clientID, ClientSecret: c.secret, HTTPClient: &hc}
	}
	return c
}

func (c *Cluster) startBroker(tb testing.TB, i int, extra []string) {
	tb.Helper()
	b := &ClusterBroker{ID: fmt.Sprintf("b%d", i), Dir: filepath.Join(c.Dir, fmt.Sprintf("b%d", i))}
	b.Conf = filepath.Join(c.Dir, b.ID+".properties")
	props := append([]string{
		"session-manager-working-path = " + b.Dir,
		"persistence-db = postgresql",
		"persistence-dsn = " + c.DSN,
		"broker-id = " + b.ID,
		"client-to-broker-connector-https-port = 0",
		"client-to-broker-connector-bind-host = 127.0.0.1",
		"agent-to-broker-connector-https-port = 0",
		"agent-to-broker-connector-bind-host = 127.0.0.1",
		"agent-heartbeat-timeout-seconds = 10",
		// The agents' web gateways listen on loopback here.
		"web-gateway-ca-permitted-subtrees = 127.0.0.0/8",
		"log-format = json",
		"log-level = info",
	}, extra...)
	if err := os.WriteFile(b.Conf, []byte(strings.Join(props, "\n")+"\n"), 0o600); err != nil {
		tb.Fatal(err)
	}
	logPath := filepath.Join(c.Dir, b.ID+".log")
	b.Proc = MustStartProcess(tb, b.ID, logPath, filepath.Join(c.Bin, "berth-broker"), "--config", b.Conf)
	tb.Cleanup(func() { b.Proc.Stop(tb) })
	deadline := time.Now().Add(30 * time.Second)
	for {
		if b.Proc.Exited() {
			tb.Fatalf("broker %s exited at start:\n%s", b.ID, logTail(logPath, 40))
		}
		if client, agent := startedLine(logPath); client != "" {
			b.URL, b.AgentAddr = "https://"+client, agent
			break
		}
		if time.Now().After(deadline) {
			tb.Fatalf("broker %s logged no \"broker started\" line within 30 s:\n%s", b.ID, logTail(logPath, 40))
		}
		time.Sleep(50 * time.Millisecond)
	}
	hc, err := api.NewHTTPClient(filepath.Join(b.Dir, "ca.pem"), false)
	if err != nil {
		tb.Fatal(err)
	}
	b.HTTP = hc
	if b.GatewayHTTP, err = api.NewHTTPClient(filepath.Join(b.Dir, "gateway-ca.pem"), false); err != nil {
		tb.Fatal(err)
	}
	c.Brokers = append(c.Brokers, b)
}

// MustStartAgent starts an agent with driver (sim or vnc) that knows the
// brokers in the given order (indexes into c.Brokers), waits until its server
// is listed by every live broker, and returns it.
func (c *Cluster) MustStartAgent(tb testing.TB, driver string, order []int, extra string) *ClusterAgent {
	tb.Helper()
	var hosts []string
	for _, i := range order {
		hosts = append(hosts, c.Brokers[i].AgentAddr)
	}
	return c.MustStartAgentAt(tb, driver, hosts, extra)
}

// MustStartAgentAt is MustStartAgent with the agent's broker addresses
// given (a load balancer's, say).
func (c *Cluster) MustStartAgentAt(tb testing.TB, driver string, hosts []string, extra string) *ClusterAgent {
	tb.Helper()
	a := &ClusterAgent{Name: fmt.Sprintf("agent%d-%s", len(c.Agents)+1, driver)}
	before := c.serverIDs(tb)
	conf := fmt.Sprintf(`version = '0.1'
[agent]
broker_host = '%s'
ca_file = '%s'
software_statement_path = '%s'
driver = '%s'
state_dir = '%s'
init_folder = '%s'
autorun_folder = '%s'
broker_update_interval = %d
%s
[log]
level = 'info'
`, strings.Join(hosts, ","), c.CAFile, filepath.Join(c.Brokers[0].Dir, "agent-software-statement"), driver,
		filepath.Join(c.Dir, a.Name), filepath.Join(folders, "init"), filepath.Join(folders, "autorun"),
		int(updateInterval/time.Second), extra)
	if driver == "vnc" {
		a.WebPort = mustFreePort(tb)
		conf += fmt.Sprintf("[vnc]\nweb_port = %d\nweb_bind_host = '127.0.0.1'\n", a.WebPort)
	}
	a.Conf = filepath.Join(c.Dir, a.Name+".conf")
	if err := os.WriteFile(a.Conf, []byte(conf), 0o600); err != nil {
		tb.Fatal(err)
	}
	a.Proc = MustStartProcess(tb, a.Name, filepath.Join(c.Dir, a.Name+".log"), filepath.Join(c.Bin, "berth-agent"), "--config", a.Conf)
	c.Agents = append(c.Agents, a)
	tb.Cleanup(func() { a.Proc.Stop(tb) })
	deadline := time.Now().Add(30 * time.Second)
	for a.ServerID == "" {
		for id := range c.serverIDs(tb) {
			if !before[id] {
				a.ServerID = id
			}
		}
		if a.Proc.Exited() {
			tb.Fatalf("%s exited:\n%s", a.Name, logTail(a.Proc.Log, 30))
		}
		if time.Now().After(deadline) {
			tb.Fatalf("%s's server did not appear within 30 s", a.Name)
		}
		time.Sleep(50 * time.Millisecond)
	}
	c.MustWaitAvailable(tb, 30*time.Second, a.ServerID)
	return a
}

// serverIDs reads the servers from the database.
func (c *Cluster) serverIDs(tb testing.TB) map[string]bool {
	tb.Helper()
	out := map[string]bool{}
	for id := range c.Links(tb) {
		out[id] = true
	}
	return out
}

// Links returns, for every server, the broker that holds its agent's link as
// the database records it.
func (c *Cluster) Links(tb testing.TB) map[string]string {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, c.DSN)
	if err != nil {
		tb.Fatalf("connect to the cluster's database: %v", err)
	}
	defer conn.Close(ctx)
	rows, err := conn.Query(ctx, `SELECT id, broker_id FROM servers`)
	if err != nil {
		tb.Fatalf("read servers: %v", err)
	}
	out := map[string]string{}
	for rows.Next() {
		var id, b string
		if err := rows.Scan(&id, &b); err != nil {
			tb.Fatal(err)
		}
		out[id] = b
	}
	if err := rows.Err(); err != nil {
		tb.Fatal(err)
	}
	return out
}

// Live returns the brokers whose process runs.
func (c *Cluster) Live() []*ClusterBroker {
	var out []*ClusterBroker
	for _, b := range c.Brokers {
		if !b.Proc.Exited() {
			out = append(out, b)
		}
	}
	return out
}

// MustWaitAvailable waits until every live broker lists each server as
// AVAILABLE.
func (c *Cluster) MustWaitAvailable(tb testing.TB, timeout time.Duration, ids ...string) {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	for _, b := range c.Live() {
		for {
			last, ok := "", true
			ctx, cancel := context.WithTimeout(context.Background(), apiTimeout)
			out, err := b.Client.DescribeServers(ctx, api.DescribeServersRequest{ServerIds: ids})
			cancel()
			switch {
			case err != nil:
				last, ok = err.Error(), false
			case len(out.Servers) != len(ids):
				last, ok = fmt.Sprintf("%d of %d servers listed", len(out.Servers), len(ids)), false
			default:
				for _, s := range out.Servers {
					if s.Availability != api.AvailabilityAvailable {
						last, ok = fmt.Sprintf("server %s is %s (%s)", s.Id, s.Availability, s.UnavailabilityReason), false
					}
				}
			}
			if ok {
				break
			}
			if time.Now().After(deadline) {
				tb.Fatalf("broker %s: servers %v not AVAILABLE within %s: %s", b.ID, ids, timeout, last)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
}

// describe returns one session as broker b shows it.
func describe(ctx context.Context, b *ClusterBroker, id string) (*api.Session, error) {
	out, err := b.Client.DescribeSessions(ctx, api.DescribeSessionsRequest{SessionIds: []string{id}})
	if err != nil {
		return nil, err
	}
	for i := range out.Sessions {
		if out.Sessions[i].Id == id {
			return &out.Sessions[i], nil
		}
	}
	return nil, nil
}

// MustWaitSession waits until broker b shows the session in state want.
func MustWaitSession(tb testing.TB, b *ClusterBroker, id, want string, timeout time.Duration) api.Session {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	last := "not listed"
	for {
		ctx, cancel := context.WithTimeout(context.Background(), apiTimeout)
		s, err := describe(ctx, b, id)
		cancel()
		switch {
		case err != nil:
			last = err.Error()
		case s != nil && s.State == want:
			return *s
		case s != nil:
			last = fmt.Sprintf("%s %s (%q)", s.State, s.Substate, s.StateReason)
			if s.State == api.StateDeleted {
				tb.Fatalf("broker %s: session %s is DELETED (%q), expected %s", b.ID, id, s.StateReason, want)
			}
		}
		if time.Now().After(deadline) {
			tb.Fatalf("broker %s: session %s not %s within %s: %s", b.ID, id, want, timeout, last)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// onServer is the requirements expression that places a session on one server.
func onServer(id string) string { return fmt.Sprintf("server:Id = '%s'", id) }

// brokerLogs and agentLogs return the paths of the processes' logs.
func (c *Cluster) brokerLogs() []string {
	var out []string
	for _, b := range c.Brokers {
		out = append(out, b.Proc.Log)
	}
	return out
}

func (c *Cluster) agentLogs() []string {
	var out []string
	for _, a := range c.Agents {
		out = append(out, a.Proc.Log)
	}
	return out
}

package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/internal/apispec"
	"github.com/berth-dev/berth/internal/oauth"
	"github.com/berth-dev/berth/internal/sqlite"
)

// The local users that own the test sessions; TestMain creates them.
const (
	user1 = "berthe2e1"
	user2 = "berthe2e2"
)

// updateInterval is the agents' broker_update_interval.
const updateInterval = 2 * time.Second

// Bounds of the waits (the machine is small and shared).
const (
	readyTimeout   = 30 * time.Second // CreateSessions → READY
	deletedTimeout = 20 * time.Second // DeleteSessions → DELETED
	apiTimeout     = 15 * time.Second // one API call
)

// folders is the world-readable directory (0755, so that the session owners
// can run what is in it) holding the agents' init, autorun and tags folders.
var folders string

// TestMain skips the package where it cannot run, creates the test users
// and the init and autorun folders, and removes the built binaries at the
// end.
func TestMain(m *testing.M) {
	if os.Geteuid() != 0 {
		fmt.Println("SKIPPING internal/e2e: the end-to-end tests run real desktop sessions as local users and need root")
		os.Exit(0)
	}
	if _, err := os.Stat("/usr/bin/Xvnc"); err != nil {
		if _, err := exec.LookPath("Xvnc"); err != nil {
			fmt.Println("SKIPPING internal/e2e: Xvnc is not installed (apt-get install tigervnc-standalone-server openbox xterm novnc chromium)")
			os.Exit(0)
		}
	}
	for _, u := range []string{user1, user2} {
		if _, err := user.Lookup(u); err != nil {
			if out, err := exec.Command("useradd", "-m", "-s", "/bin/sh", u).CombinedOutput(); err != nil {
				fmt.Printf("internal/e2e: useradd %s: %v: %s\n", u, err, out)
				os.Exit(1)
			}
		}
	}
	var err error
	if folders, err = os.MkdirTemp("", "berth-e2e-"); err == nil {
		err = setupFolders(folders)
	}
	if err != nil {
		fmt.Println("internal/e2e:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(folders)
	if build.dir != "" {
		os.RemoveAll(build.dir)
	}
	os.Exit(code)
}

// setupFolders copies testdata's init and autorun programs into dir and adds
// init/escape.sh, a symlink that leads out of the init folder.
func setupFolders(dir string) error {
	for _, d := range []string{"", "init", "autorun", "tags"} {
		p := filepath.Join(dir, d)
		if err := os.MkdirAll(p, 0o755); err != nil {
			return err
		}
		if err := os.Chmod(p, 0o755); err != nil {
			return err
		}
	}
	for _, f := range []string{"init/wm.sh", "autorun/args.sh", "autorun/xterm.sh", "autorun/typing.sh", "autorun/wait-wm.sh", "outside.sh"} {
		b, err := os.ReadFile(filepath.Join("testdata", f))
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(dir, f), b, 0o755); err != nil {
			return err
		}
	}
	return os.Symlink("../outside.sh", filepath.Join(dir, "init", "escape.sh"))
}

// build holds the binaries built once per test run.
var build struct {
	once sync.Once
	dir  string // holds bin/berth-broker, bin/berth-agent, bin/berth
	err  error
}

// MustBuild builds berth-broker, berth-agent and berth from this checkout
// (once per test run) and returns the directory that holds them.
func MustBuild(tb testing.TB) string {
	tb.Helper()
	build.once.Do(func() {
		root, err := repoRoot()
		if err != nil {
			build.err = err
			return
		}
		goBin, err := exec.LookPath("go")
		if err != nil {
			goBin = "/usr/local/go/bin/go"
		}
		if build.dir, err = os.MkdirTemp("", "berth-e2e-bin-"); err != nil {
			build.err = err
			return
		}
		bin := filepath.Join(build.dir, "bin")
		cmd := exec.Command(goBin, "build", "-o", bin+string(filepath.Separator), "./cmd/berth-broker", "./cmd/berth-agent", "./cmd/berth")
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			build.err = fmt.Errorf("go build in %s: %v\n%s", root, err, out)
		}
	})
	if build.err != nil {
		tb.Fatalf("build the binaries: %v", build.err)
	}
	return filepath.Join(build.dir, "bin")
}

// repoRoot walks up from the working directory to the one holding go.mod.
func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("go.mod not found above the working directory")
		}
		dir = parent
	}
}

// Process is a berth binary running under a test. Its stderr goes to a log
// file, whose end is logged when the test fails.
type Process struct {
	Name string
	Cmd  *exec.Cmd
	Log  string // path of the log file
	done chan struct{}
}

// MustStartProcess starts bin with args in its own process group, its
// stderr and stdout appended to logPath.
func MustStartProcess(tb testing.TB, name, logPath, bin string, args ...string) *Process {
	tb.Helper()
	f, err := os.OpenFile(logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = f, f
	// Pdeathsig: a test binary killed before its cleanup (a -timeout
	// panic, a signal) takes the broker and the agent with it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	if err := cmd.Start(); err != nil {
		tb.Fatalf("start %s: %v", name, err)
	}
	p := &Process{Name: name, Cmd: cmd, Log: logPath, done: make(chan struct{})}
	go func() {
		cmd.Wait()
		close(p.done)
	}()
	return p
}

// Exited says whether the process has ended.
func (p *Process) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Stop ends the process with SIGTERM and waits for it (SIGKILL after 20 s).
func (p *Process) Stop(tb testing.TB) {
	tb.Helper()
	if p.Exited() {
		return
	}
	p.Cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(20 * time.Second):
		tb.Errorf("%s did not stop within 20 s of SIGTERM; killing it", p.Name)
		p.Kill(tb)
	}
}

// Kill ends the process with SIGKILL and waits for it.
func (p *Process) Kill(tb testing.TB) {
	tb.Helper()
	p.Cmd.Process.Signal(syscall.SIGKILL)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		tb.Errorf("%s (pid %d) did not end within 10 s of SIGKILL", p.Name, p.Cmd.Process.Pid)
	}
}

// logTail returns the last n lines of a log file.
func logTail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return "(" + err.Error() + ")"
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// Env is one berth deployment under test: a berth-broker and a berth-agent
// process with the vnc driver, an API client registered with the broker,
// and the sessions the test created.
type Env struct {
	Dir        string // the test's temporary directory
	Bin        string // directory of the built binaries
	BrokerDir  string // the broker's working path (berth.db, ca.pem, ...)
	BrokerConf string // broker.properties
	AgentConf  string // agent.conf
	CAFile     string // the broker's CA certificate
	BrokerURL  string // client API, https://127.0.0.1:PORT
	AgentAddr  string // the broker's agent connector, 127.0.0.1:PORT
	WebPort    int    // the agent's web gateway port (on 127.0.0.1)

	// Client calls the API with an OAuth token of the registered client.
	Client *api.Client
	// HTTP trusts the broker's CA, ca.pem.
	HTTP *http.Client
	// GatewayHTTP trusts the web gateway CA, gateway-ca.pem, which issues
	// the agents' web gateway certificates (and not ca.pem).
	GatewayHTTP *http.Client

	Broker *Process
	Agent  *Process

	mu       sync.Mutex
	sessions map[string]string // created session ID → owner
	opts     EnvOptions
}

// MustStartEnv starts a broker and an agent in a temporary directory,
// registers an API client and waits until the agent's server is AVAILABLE.
// Cleanup deletes every session created through MustCreate (and kills what
// is left of them), then stops the agent and the broker. Every API answer is
// checked against berth's and Amazon's OpenAPI documents, except in
// benchmarks (the check would add to what they measure).
func MustStartEnv(tb testing.TB) *Env {
	tb.Helper()
	return MustStartEnvWith(tb, EnvOptions{})
}

// EnvOptions change what MustStartEnvWith starts.
type EnvOptions struct {
	// LogLevel is both daemons' log level (info).
	LogLevel string
	// BrokerProps are more broker.properties lines.
	BrokerProps []string
	// AgentAgent are more lines for agent.conf's [agent] table, and
	// AgentTables more tables at its end.
	AgentAgent, AgentTables string
	// HostDesktop leaves agent.conf's [vnc] desktop_command unset, so that
	// sessions without an InitFile start the host's desktop session (XFCE
	// where test.sh installed it), as make run's do. Otherwise it is
	// 'openbox': a full desktop per test session would cost seconds and
	// memory the tests do not need.
	HostDesktop bool
	// Client, if set, makes e.Client once the broker runs, instead of an
	// API client registered with the broker (for a broker whose tokens
	// come from an external authorization server). Its answers are
	// checked against the OpenAPI documents, as e.Client's are.
	Client func(tb testing.TB, e *Env) *api.Client
}

// MustStartEnvWith is MustStartEnv with options.
func MustStartEnvWith(tb testing.TB, opts EnvOptions) *Env {
	tb.Helper()
	if opts.LogLevel == "" {
		opts.LogLevel = "info"
	}
	bin := MustBuild(tb)
	dir := tb.TempDir()
	e := &Env{
		Dir:        dir,
		Bin:        bin,
		BrokerDir:  filepath.Join(dir, "broker"),
		BrokerConf: filepath.Join(dir, "broker.properties"),
		AgentConf:  filepath.Join(dir, "agent.conf"),
		sessions:   map[string]string{},
		opts:       opts,
	}
	e.CAFile = filepath.Join(e.BrokerDir, "ca.pem")
	tb.Cleanup(func() {
		if tb.Failed() {
			for _, p := range []*Process{e.Broker, e.Agent} {
				if p != nil {
					tb.Logf("last lines of %s's log %s:\n%s", p.Name, p.Log, logTail(p.Log, 40))
				}
			}
		}
	})
	e.mustStartBroker(tb)
	if opts.Client != nil {
		e.Client = opts.Client(tb, e)
		e.Client.HTTPClient = e.validating(tb, e.Client.HTTPClient)
	} else {
		e.mustRegisterClient(tb)
	}
	e.WebPort = mustFreePort(tb)
	e.mustWriteAgentConf(tb)
	e.MustStartAgent(tb)
	tb.Cleanup(func() {
		if e.Agent != nil {
			e.Agent.Stop(tb)
		}
	})
	// Registered last, so it runs first: sessions go while the agent runs.
	tb.Cleanup(func() { e.deleteAll(tb) })
	e.MustWaitServer(tb)
	return e
}

// mustStartBroker writes broker.properties and starts the broker; both
// connectors listen on 127.0.0.1 on ports the broker picks (no race with
// other tests for a port), read back from its "broker started" log line.
func (e *Env) mustStartBroker(tb testing.TB) {
	tb.Helper()
	props := strings.Join([]string{
		"# berth e2e broker",
		"session-manager-working-path = " + e.BrokerDir,
		"client-to-broker-connector-https-port = 0",
		"client-to-broker-connector-bind-host = 127.0.0.1",
		"agent-to-broker-connector-https-port = 0",
		"agent-to-broker-connector-bind-host = 127.0.0.1",
		"agent-heartbeat-timeout-seconds = 10",
		// The agents' web gateways listen on loopback here.
		"web-gateway-ca-permitted-subtrees = 127.0.0.0/8",
		"log-format = json",
		"log-level = " + e.opts.LogLevel,
		strings.Join(e.opts.BrokerProps, "\n"),
		"",
	}, "\n")
	if err := os.WriteFile(e.BrokerConf, []byte(props), 0o600); err != nil {
		tb.Fatal(err)
	}
	logPath := filepath.Join(e.Dir, "broker.log")
	e.Broker = MustStartProcess(tb, "berth-broker", logPath, filepath.Join(e.Bin, "berth-broker"), "--config", e.BrokerConf)
	tb.Cleanup(func() { e.Broker.Stop(tb) })

	deadline := time.Now().Add(30 * time.Second)
	for {
		if e.Broker.Exited() {
			tb.Fatalf("berth-broker exited at start:\n%s", logTail(logPath, 40))
		}
		if client, agent := startedLine(logPath); client != "" {
			e.BrokerURL, e.AgentAddr = "https://"+client, agent
			break
		}
		if time.Now().After(deadline) {
			tb.Fatalf("berth-broker logged no \"broker started\" line within 30 s:\n%s", logTail(logPath, 40))
		}
		time.Sleep(50 * time.Millisecond)
	}
	hc, err := api.NewHTTPClient(e.CAFile, false)
	if err != nil {
		tb.Fatal(err)
	}
	e.HTTP = hc
	if e.GatewayHTTP, err = api.NewHTTPClient(filepath.Join(e.BrokerDir, "gateway-ca.pem"), false); err != nil {
		tb.Fatal(err)
	}
	// /health answers once the store does.
	deadline = time.Now().Add(15 * time.Second)
	for {
		resp, err := hc.Get(e.BrokerURL + "/health")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
			err = fmt.Errorf("status %d", resp.StatusCode)
		}
		if time.Now().After(deadline) {
			tb.Fatalf("broker %s/health did not answer 200 within 15 s: %v", e.BrokerURL, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// startedLine returns the addresses of the broker's "broker started" line.
func startedLine(logPath string) (client, agent string) {
	f, err := os.Open(logPath)
	if err != nil {
		return "", ""
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		var rec struct {
			Msg        string `json:"msg"`
			ClientAddr string `json:"client_addr"`
			AgentAddr  string `json:"agent_addr"`
		}
		if json.Unmarshal(sc.Bytes(), &rec) == nil && rec.Msg == "broker started" {
			return rec.ClientAddr, rec.AgentAddr
		}
	}
	return "", ""
}

// mustRegisterClient registers an API client with the running broker's
// store (berth-broker register-api-client) and builds e.Client.
func (e *Env) mustRegisterClient(tb testing.TB) {
	tb.Helper()
	out, err := exec.Command(filepath.Join(e.Bin, "berth-broker"), "register-api-client", "--config", e.BrokerConf, "--client-name", "e2e").CombinedOutput()
	if err != nil {
		tb.Fatalf("berth-broker register-api-client: %v\n%s", err, out)
	}
	var id, secret string
	for _, line := range strings.Split(string(out), "\n") {
		if v, ok := strings.CutPrefix(line, "client-id: "); ok {
			id = strings.TrimSpace(v)
		}
		if v, ok := strings.CutPrefix(line, "client-password: "); ok {
			secret = strings.TrimSpace(v)
		}
	}
	if id == "" || secret == "" {
		tb.Fatalf("register-api-client printed no client-id:/client-password: lines:\n%s", out)
	}
	e.Client = &api.Client{BrokerURL: e.BrokerURL, ClientID: id, ClientSecret: secret, HTTPClient: e.validating(tb, e.HTTP)}
}

// validating returns a copy of hc whose answers are checked against the
// OpenAPI documents (hc itself in benchmarks).
func (e *Env) validating(tb testing.TB, hc *http.Client) *http.Client {
	if _, bench := tb.(*testing.B); bench {
		return hc
	}
	c := *hc
	next := hc.Transport
	if next == nil {
		next = http.DefaultTransport
	}
	c.Transport = &validatingTransport{tb: tb, next: next}
	return &c
}

// mustFreePort returns a TCP port that was free on 127.0.0.1 a moment ago.
func mustFreePort(tb testing.TB) int {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// mustWriteAgentConf writes agent.conf: the vnc driver, the gateway on
// 127.0.0.1:WebPort, the shared init/autorun/tags folders, a state
// directory of its own and openbox as the desktop (unless HostDesktop).
func (e *Env) mustWriteAgentConf(tb testing.TB) {
	tb.Helper()
	_, port, _ := net.SplitHostPort(e.AgentAddr)
	desktop := "desktop_command = 'openbox'"
	if e.opts.HostDesktop {
		desktop = "# desktop_command unset: the host's desktop session"
	}
	conf := fmt.Sprintf(`# berth e2e agent
version = '0.1'
[agent]
broker_host = '127.0.0.1'
broker_port = %s
ca_file = '%s'
software_statement_path = '%s'
driver = 'vnc'
state_dir = '%s'
init_folder = '%s'
autorun_folder = '%s'
tags_folder = '%s'
broker_update_interval = %d
%s
[vnc]
web_port = %d
web_bind_host = '127.0.0.1'
%s
[log]
level = '%s'
%s
`, port, e.CAFile, filepath.Join(e.BrokerDir, "agent-software-statement"), filepath.Join(e.Dir, "agent"),
		filepath.Join(folders, "init"), filepath.Join(folders, "autorun"), filepath.Join(folders, "tags"),
		int(updateInterval/time.Second), e.opts.AgentAgent, e.WebPort, desktop, e.opts.LogLevel, e.opts.AgentTables)
	if err := os.WriteFile(e.AgentConf, []byte(conf), 0o600); err != nil {
		tb.Fatal(err)
	}
}

// MustStartAgent starts berth-agent with agent.conf (again, after Kill or
// Stop: same state directory, same gateway port).
func (e *Env) MustStartAgent(tb testing.TB) {
	tb.Helper()
	e.Agent = MustStartProcess(tb, "berth-agent", filepath.Join(e.Dir, "agent.log"), filepath.Join(e.Bin, "berth-agent"), "--config", e.AgentConf)
}

// MustWaitServer waits until the broker lists the agent's server as
// AVAILABLE with the gateway's endpoint, and returns it.
func (e *Env) MustWaitServer(tb testing.TB) api.Server {
	tb.Helper()
	deadline := time.Now().Add(30 * time.Second)
	last := "no server"
	for {
		if e.Agent.Exited() {
			tb.Fatalf("berth-agent exited:\n%s", logTail(e.Agent.Log, 40))
		}
		ctx, cancel := context.WithTimeout(context.Background(), apiTimeout)
		out, err := e.Client.DescribeServers(ctx, api.DescribeServersRequest{})
		cancel()
		if err != nil {
			last = err.Error()
		} else if len(out.Servers) > 0 {
			s := out.Servers[0]
			last = fmt.Sprintf("%d server(s), the first %s %s", len(out.Servers), s.Availability, s.UnavailabilityReason)
			if len(out.Servers) == 1 && s.Availability == api.AvailabilityAvailable && s.Port == strconv.Itoa(e.WebPort) {
				return s
			}
		}
		if time.Now().After(deadline) {
			tb.Fatalf("the agent's server was not AVAILABLE with gateway port %d within 30 s (last: %s)", e.WebPort, last)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// apiCtx returns a context bounded by apiTimeout, cancelled at cleanup (for
// one-off calls; loops use their own).
func apiCtx(tb testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), apiTimeout)
	tb.Cleanup(cancel)
	return ctx
}

// MustCreate sends one CreateSessions call and fails unless every item was
// accepted; the sessions are deleted at cleanup.
func (e *Env) MustCreate(tb testing.TB, reqs ...api.CreateSessionRequest) []api.Session {
	tb.Helper()
	out, err := e.Client.CreateSessions(apiCtx(tb), reqs)
	if err != nil {
		tb.Fatalf("CreateSessions: %v", err)
	}
	e.track(out.SuccessfulList)
	if len(out.UnsuccessfulList) > 0 || len(out.SuccessfulList) != len(reqs) {
		tb.Fatalf("CreateSessions accepted %d of %d; refused: %+v", len(out.SuccessfulList), len(reqs), out.UnsuccessfulList)
	}
	return out.SuccessfulList
}

// track records created sessions for cleanup.
func (e *Env) track(list []api.Session) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, s := range list {
		e.sessions[s.Id] = s.Owner
	}
}

// Describe returns a session as DescribeSessions shows it.
func (e *Env) Describe(tb testing.TB, id string) (api.Session, error) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), apiTimeout)
	defer cancel()
	out, err := e.Client.DescribeSessions(ctx, api.DescribeSessionsRequest{SessionIds: []string{id}})
	if err != nil {
		return api.Session{}, err
	}
	for _, s := range out.Sessions {
		if s.Id == id {
			return s, nil
		}
	}
	return api.Session{}, fmt.Errorf("DescribeSessions does not list session %s", id)
}

// MustWaitState polls DescribeSessions until the session is in state want,
// and fails after timeout with the state it was in. It fails early when the
// session reaches DELETED and want is something else.
func (e *Env) MustWaitState(tb testing.TB, id, want string, timeout time.Duration) api.Session {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	var last api.Session
	var lastErr error
	for {
		s, err := e.Describe(tb, id)
		if err == nil {
			last, lastErr = s, nil
			if s.State == want {
				return s
			}
			if s.State == api.StateDeleted {
				tb.Fatalf("session %s (owner %s) is DELETED (reason %q), expected %s", id, s.Owner, s.StateReason, want)
			}
		} else {
			lastErr = err
		}
		if time.Now().After(deadline) {
			tb.Fatalf("session %s did not reach %s within %s: last state %s %s (reason %q), last error %v",
				id, want, timeout, last.State, last.Substate, last.StateReason, lastErr)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// MustDelete deletes sessions through the API and waits until each is
// DELETED.
func (e *Env) MustDelete(tb testing.TB, ids ...string) {
	tb.Helper()
	var reqs []api.DeleteSessionRequest
	e.mu.Lock()
	for _, id := range ids {
		reqs = append(reqs, api.DeleteSessionRequest{SessionId: id, Owner: e.sessions[id]})
	}
	e.mu.Unlock()
	out, err := e.Client.DeleteSessions(apiCtx(tb), reqs)
	if err != nil {
		tb.Fatalf("DeleteSessions: %v", err)
	}
	if len(out.UnsuccessfulList) > 0 {
		tb.Fatalf("DeleteSessions refused: %+v", out.UnsuccessfulList)
	}
	for _, id := range ids {
		e.MustWaitState(tb, id, api.StateDeleted, deletedTimeout)
	}
}

// deleteAll deletes the sessions the test created and left, then kills any
// process still carrying one of their IDs (a failed test must not leave
// desktops behind).
func (e *Env) deleteAll(tb testing.TB) {
	e.mu.Lock()
	ids := make([]string, 0, len(e.sessions))
	for id := range e.sessions {
		ids = append(ids, id)
	}
	e.mu.Unlock()
	if len(ids) == 0 {
		return
	}
	var reqs []api.DeleteSessionRequest
	for _, id := range ids {
		if s, err := e.Describe(tb, id); err == nil && s.State == api.StateDeleted {
			continue
		}
		reqs = append(reqs, api.DeleteSessionRequest{SessionId: id, Owner: e.sessions[id]})
	}
	if len(reqs) > 0 && e.Agent != nil && !e.Agent.Exited() {
		ctx, cancel := context.WithTimeout(context.Background(), apiTimeout)
		_, err := e.Client.DeleteSessions(ctx, reqs)
		cancel()
		if err != nil {
			tb.Logf("cleanup: DeleteSessions: %v", err)
		}
		deadline := time.Now().Add(deletedTimeout)
		for _, r := range reqs {
			for {
				s, err := e.Describe(tb, r.SessionId)
				if err == nil && s.State == api.StateDeleted {
					break
				}
				if time.Now().After(deadline) {
					tb.Errorf("cleanup: session %s is not DELETED %s after DeleteSessions: %s %v", r.SessionId, deletedTimeout, s.State, err)
					break
				}
				time.Sleep(100 * time.Millisecond)
			}
		}
	}
	for _, id := range ids {
		for _, p := range sessionProcesses(id) {
			tb.Logf("cleanup: killing pid %d (%s), left over from session %s", p.pid, p.cmdline, id)
			syscall.Kill(p.pid, syscall.SIGKILL)
		}
	}
}

// ConnectionData returns GetSessionConnectionData for a session and user.
func (e *Env) ConnectionData(tb testing.TB, id, user string) (*api.GetSessionConnectionDataResponse, error) {
	tb.Helper()
	return e.Client.GetSessionConnectionData(apiCtx(tb), id, user)
}

// MustConnectionData is ConnectionData that fails the test on error.
func (e *Env) MustConnectionData(tb testing.TB, id, user string) *api.GetSessionConnectionDataResponse {
	tb.Helper()
	d, err := e.ConnectionData(tb, id, user)
	if err != nil {
		tb.Fatalf("GetSessionConnectionData(%s, %s): %v", id, user, err)
	}
	if d.ConnectionToken == "" {
		tb.Fatalf("GetSessionConnectionData(%s, %s) returned no ConnectionToken", id, user)
	}
	return d
}

// LocalURL returns the session's browser URL (api.ConnectionURL), checking
// that it names the gateway: the agent advertises the address its gateway is
// bound to (web_bind_host 127.0.0.1 here) and the gateway's port.
func (e *Env) LocalURL(tb testing.TB, d *api.GetSessionConnectionDataResponse) string {
	tb.Helper()
	raw := api.ConnectionURL(d)
	u, err := url.Parse(raw)
	if err != nil {
		tb.Fatalf("api.ConnectionURL gave %q: %v", raw, err)
	}
	if u.Port() != strconv.Itoa(e.WebPort) {
		tb.Fatalf("connection URL %s: port %s, want the gateway's %d", redact(raw), u.Port(), e.WebPort)
	}
	if u.Query().Get("authToken") != d.ConnectionToken || u.Fragment != d.Session.Id {
		tb.Fatalf("connection URL %s does not carry the token and the session ID", redact(raw))
	}
	if u.Hostname() != "127.0.0.1" {
		tb.Fatalf("connection URL %s: host %s, want the gateway's bind address 127.0.0.1", redact(raw), u.Hostname())
	}
	return u.String()
}

// redact hides the token of a connection URL.
func redact(s string) string {
	if i := strings.Index(s, "authToken="); i >= 0 {
		end := strings.IndexAny(s[i:], "&#")
		if end < 0 {
			return s[:i] + "authToken=REDACTED"
		}
		return s[:i] + "authToken=REDACTED" + s[i+end:]
	}
	return s
}

// validatingTransport checks every API answer against berth's and Amazon's
// OpenAPI documents (as cmd/berth-broker's tests do).
type validatingTransport struct {
	tb   testing.TB
	next http.RoundTripper
}

var specs struct {
	once       sync.Once
	berth, ref *apispec.Doc
	err        error
}

func (v *validatingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	specs.once.Do(func() {
		if specs.berth, specs.err = apispec.Berth(); specs.err == nil {
			specs.ref, specs.err = apispec.Reference()
		}
	})
	var reqBody []byte
	if req.Body != nil {
		reqBody, _ = io.ReadAll(req.Body)
		req.Body = io.NopCloser(bytes.NewReader(reqBody))
	}
	resp, err := v.next.RoundTrip(req)
	if err != nil || req.URL.Path == "/oauth2/token" {
		return resp, err
	}
	if strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		// An event stream has no end to read up to: only its status is
		// checked here (the events are checked by the tests that read them).
		if resp.StatusCode != http.StatusOK {
			v.tb.Errorf("%s %s: an event stream answered %s", req.Method, req.URL.Path, resp.Status)
		}
		return resp, nil
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	resp.Body = io.NopCloser(bytes.NewReader(body))
	if err != nil {
		return resp, err
	}
	if specs.err != nil {
		v.tb.Errorf("load the OpenAPI documents: %v", specs.err)
		return resp, nil
	}
	if err := specs.berth.ValidateResponse(req, reqBody, resp.StatusCode, resp.Header, body); err != nil {
		v.tb.Errorf("%s %s: the answer does not match berth's OpenAPI document: %v", req.Method, req.URL.Path, err)
	}
	if strings.HasPrefix(req.URL.Path, "/berth/") {
		return resp, nil // berth's own paths are in berth's document only
	}
	if err := specs.ref.ValidateResponse(req, reqBody, resp.StatusCode, resp.Header, body); err != nil && !errors.Is(err, apispec.ErrUndocumentedStatus) {
		v.tb.Errorf("%s %s: the answer does not match Amazon's OpenAPI document: %v", req.Method, req.URL.Path, err)
	}
	return resp, nil
}

// MustMintExpiredToken issues a connection token for a session and user that
// expired an hour ago, signed with the broker's own current key: it opens
// the broker's store beside the running broker, as berth-broker's admin
// commands do, and issues the token with a clock set two hours back (the
// shortest lifetime the broker can be configured with is a minute, too long
// to wait for here).
func (e *Env) MustMintExpiredToken(tb testing.TB, sessionID, owner, user string) string {
	tb.Helper()
	ctx := apiCtx(tb)
	st, err := sqlite.OpenWith(ctx, filepath.Join(e.BrokerDir, "berth.db"), sqlite.Options{NoSessionCache: true})
	if err != nil {
		tb.Fatalf("open the broker's store: %v", err)
	}
	defer st.Close()
	a := oauth.New(st, "berth-broker")
	a.Now = func() time.Time { return time.Now().Add(-2 * time.Hour) }
	tok, err := a.IssueConnectionToken(ctx, sessionID, owner, user)
	if err != nil {
		tb.Fatalf("mint an expired connection token: %v", err)
	}
	return tok
}

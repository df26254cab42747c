package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/internal/hostinfo"
	"github.com/berth-dev/berth/internal/poll"
)

// testWriter sends log lines to the test log.
type testWriter struct{ tb testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.tb.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func testLogger(tb testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{tb}, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

func TestRun_Flags(t *testing.T) {
	ctx := context.Background()
	var out, errOut bytes.Buffer
	if code := run(ctx, []string{"--version"}, &out, &errOut); code != 0 || !strings.HasPrefix(out.String(), "berth-agent ") {
		t.Errorf("--version: exit %d, stdout %q", code, out.String())
	}
	out.Reset()
	if code := run(ctx, []string{"--help"}, &out, &errOut); code != 0 || !strings.Contains(errOut.String(), "load testing only") {
		t.Errorf("--help: exit %d, stderr %q", code, errOut.String())
	}
	errOut.Reset()
	if code := run(ctx, []string{"--bogus"}, &out, &errOut); code != 2 {
		t.Errorf("--bogus: exit %d, want 2", code)
	}
	errOut.Reset()
	if code := run(ctx, []string{"--config", "testdata/agent-full.conf", "extra"}, &out, &errOut); code != 2 || !strings.Contains(errOut.String(), `unexpected argument "extra"`) {
		t.Errorf("extra argument: exit %d, stderr %q", code, errOut.String())
	}
	errOut.Reset()
	bad := filepath.Join(t.TempDir(), "agent.conf")
	mustWrite(t, bad, "[agent]\nbroker_host = 'b'\ndriver = 'kvm'\n")
	if code := run(ctx, []string{"--config", bad}, &out, &errOut); code != 1 || !strings.Contains(errOut.String(), `agent.driver: unknown driver "kvm"`) {
		t.Errorf("unknown driver: exit %d, stderr %q", code, errOut.String())
	}
}

// testConfig is a configuration whose files live in dir.
func testConfig(dir string) Config {
	c := DefaultConfig()
	c.Agent.Driver = "sim" // the tests that need a desktop set vnc
	c.Agent.BrokerHost = "127.0.0.1"
	c.Agent.TagsFolder = filepath.Join(dir, "tags")
	c.Agent.InitFolder = filepath.Join(dir, "init")
	c.Agent.AutorunFolder = filepath.Join(dir, "autorun")
	c.Agent.StateDir = filepath.Join(dir, "state")
	return c
}

func TestMain_Run_Errors(t *testing.T) {
	for _, tt := range []struct {
		name string
		edit func(t *testing.T, dir string, c *Config)
		want string
	}{
		{"bad tags", func(t *testing.T, dir string, c *Config) {
			mustWrite(t, filepath.Join(c.Agent.TagsFolder, "a.toml"), "x = [1]\n")
		}, "agent.tags_folder: tags file"},
		{"state dir", func(t *testing.T, dir string, c *Config) {
			mustWrite(t, filepath.Join(dir, "file"), "")
			c.Agent.StateDir = filepath.Join(dir, "file", "state")
		}, "agent.state_dir:"},
		{"log dir", func(t *testing.T, dir string, c *Config) {
			mustWrite(t, filepath.Join(dir, "file"), "")
			c.Log.Directory = filepath.Join(dir, "file", "log")
		}, "log.directory:"},
		{"invalid", func(t *testing.T, dir string, c *Config) { c.Agent.BrokerPort = -1 }, "agent.broker_port:"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			m := NewMain()
			m.Config = testConfig(dir)
			m.Stderr = io.Discard
			tt.edit(t, dir, &m.Config)
			if tt.name != "log dir" {
				m.Logger = testLogger(t)
			}
			err := m.Run(context.Background())
			if err == nil {
				m.Close()
				t.Fatal("Run succeeded")
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("err = %v, want %q", err, tt.want)
			}
		})
	}
}

// TestMain_LogDirectory checks that log.directory receives agent.log (JSON)
// while stderr gets the same lines.
func TestMain_LogDirectory(t *testing.T) {
	dir := t.TempDir()
	m := NewMain()
	m.Config = testConfig(dir)
	m.Config.Agent.BrokerPort = freePort(t) // nothing listens: the agent retries
	m.Config.Log.Directory = filepath.Join(dir, "log")
	m.Config.Log.Level = "debug"
	var stderr syncBuffer
	m.Stderr = &stderr
	m.Prober = &hostinfo.Prober{Skip: []string{"aws"}}
	if err := m.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	data := string(mustRead(t, filepath.Join(dir, "log", "agent.log")))
	for _, out := range []string{data, stderr.String()} {
		if !strings.Contains(out, `"msg":"agent started"`) || !strings.Contains(out, `"server_id":"`+m.ServerID()+`"`) {
			t.Errorf("log lacks the start line:\n%s", out)
		}
	}
	if strings.Contains(data, "eyJ") {
		t.Errorf("log holds the software statement:\n%s", data)
	}
}

// logBackups returns the rotated files next to agent.log in dir.
func logBackups(t *testing.T, dir string) []string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(dir, "agent-*.log*"))
	if err != nil {
		t.Fatal(err)
	}
	return files
}

// TestMain_LogRotation: with log.directory the agent writes agent.log there
// (0600, JSON), starts a new one when it passes log.max_size_mb, keeps
// log.max_backups rotated files, and rotates on demand (SIGHUP).
func TestMain_LogRotation(t *testing.T) {
	dir := t.TempDir()
	logDir := filepath.Join(dir, "log")
	m := NewMain()
	m.Config = testConfig(dir)
	m.Config.Agent.BrokerPort = freePort(t) // nothing listens: the agent retries
	m.Config.Log.Directory = logDir
	m.Config.Log.Rotation = "size"
	m.Config.Log.MaxSizeMB = 1
	m.Config.Log.MaxBackups = 2
	m.Stderr = io.Discard
	m.Prober = &hostinfo.Prober{Skip: []string{"aws"}}
	if err := m.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	active := filepath.Join(logDir, "agent.log")
	if fi, err := os.Stat(active); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("agent.log: %v %v", fi, err)
	}
	if !strings.Contains(string(mustRead(t, active)), `"msg":"agent started"`) {
		t.Errorf("agent.log lacks the start line:\n%s", mustRead(t, active))
	}
	filler := strings.Repeat("x", 400<<10)
	for i := range 8 { // 3.2 MB through 1 MB files
		m.Logger.Info("filler", "n", i, "data", filler, "client_secret", "s3cret")
	}
	poll.Until(t, 10*time.Second, "two rotated files, the older ones removed", func() bool { return len(logBackups(t, logDir)) == 2 })
	data := string(mustRead(t, active))
	if !strings.Contains(data, `"n":7`) || len(data) > 1<<20 {
		t.Errorf("agent.log holds %d bytes, want the last line within 1 MB", len(data))
	}
	if strings.Contains(data, "s3cret") {
		t.Error("agent.log holds a secret")
	}
	// On demand (SIGHUP): a new, empty agent.log; still two backups.
	before := logBackups(t, logDir)
	if err := m.RotateLog(); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(active); err != nil || fi.Size() != 0 {
		t.Errorf("agent.log after rotation: %v %v", fi, err)
	}
	poll.Until(t, 10*time.Second, "the rotation's backup, and the oldest removed", func() bool {
		after := logBackups(t, logDir)
		return len(after) == 2 && !slices.Equal(after, before)
	})
	m.Logger.Info("after rotation")
	if !strings.Contains(string(mustRead(t, active)), "after rotation") {
		t.Error("agent.log not written after rotation")
	}
}

// TestRun_SIGHUPRotatesLog: the process rotates agent.log on SIGHUP.
func TestRun_SIGHUPRotatesLog(t *testing.T) {
	dir := t.TempDir()
	logDir := filepath.Join(dir, "log")
	conf := filepath.Join(dir, "agent.conf")
	mustWrite(t, conf, fmt.Sprintf(`[agent]
broker_host = '127.0.0.1:%d'
driver = 'sim'
tags_folder = '%[2]s/tags'
state_dir = '%[2]s/state'
[log]
directory = '%[3]s'
rotation = 'daily'
`, freePort(t), dir, logDir))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int, 1)
	go func() { done <- run(ctx, []string{"--config", conf}, io.Discard, io.Discard) }()
	poll.Until(t, 10*time.Second, "agent.log", func() bool {
		data, _ := os.ReadFile(filepath.Join(logDir, "agent.log"))
		return strings.Contains(string(data), "agent started")
	})
	if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	poll.Until(t, 10*time.Second, "a rotated file after SIGHUP", func() bool { return len(logBackups(t, logDir)) == 1 })
	cancel()
	select {
	case code := <-done:
		if code != 0 {
			t.Errorf("exit code %d", code)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("run did not return")
	}
}

// syncBuffer is a bytes.Buffer safe for the agent's goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// freePort returns a loopback port that was free a moment ago.
func freePort(tb testing.TB) int {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// brokerProcess is a real berth-broker binary running on loopback.
type brokerProcess struct {
	bin, dir, config string
	clientPort       int
	agentPort        int
	client           *api.Client // an API client registered before start
	cmd              *exec.Cmd
	exited           chan struct{}
}

// mustStartBroker builds cmd/berth-broker and runs it with its state in a
// temporary directory, on free loopback ports. The web gateway CA may
// certify loopback addresses, where the tests' web gateways listen.
func mustStartBroker(tb testing.TB) *brokerProcess {
	return mustStartBrokerWith(tb, nil)
}

// mustStartBrokerWith is mustStartBroker with prepare, if not nil, called
// with the broker's working path before the broker starts.
func mustStartBrokerWith(tb testing.TB, prepare func(dir string)) *brokerProcess {
	tb.Helper()
	tmp := tb.TempDir()
	b := &brokerProcess{
		bin: filepath.Join(tmp, "berth-broker"), dir: filepath.Join(tmp, "broker"), config: filepath.Join(tmp, "broker.properties"),
		clientPort: freePort(tb), agentPort: freePort(tb),
	}
	build := exec.Command("go", "build", "-o", b.bin, "github.com/berth-dev/berth/cmd/berth-broker")
	if out, err := build.CombinedOutput(); err != nil {
		tb.Fatalf("build berth-broker: %v\n%s", err, out)
	}
	mustWrite(tb, b.config, fmt.Sprintf(`session-manager-working-path = %s
client-to-broker-connector-https-port = %d
client-to-broker-connector-bind-host = 127.0.0.1
agent-to-broker-connector-https-port = %d
agent-to-broker-connector-bind-host = 127.0.0.1
web-gateway-ca-permitted-subtrees = 127.0.0.0/8, 10.0.0.0/8
`, b.dir, b.clientPort, b.agentPort))
	if prepare != nil {
		prepare(b.dir)
	}
	// The admin commands use the store directly, so register the API client
	// before the broker holds it.
	b.client = b.mustAPIClient(tb)
	b.cmd = exec.Command(b.bin, "--config", b.config)
	b.cmd.Stdout, b.cmd.Stderr = testWriter{tb}, testWriter{tb}
	if err := b.cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	b.exited = make(chan struct{})
	go func() {
		_ = b.cmd.Wait()
		close(b.exited)
	}()
	tb.Cleanup(b.stop)

	// Ready once the agent port answers /health over TLS with the broker's CA.
	deadline := time.Now().Add(60 * time.Second)
	for {
		if time.Now().After(deadline) {
			tb.Fatal("broker did not become ready")
		}
		select {
		case <-b.exited:
			tb.Fatal("broker exited at start")
		default:
		}
		if hc, err := b.httpClient(); err == nil {
			resp, err := hc.Get(fmt.Sprintf("https://127.0.0.1:%d/health", b.agentPort))
			if err == nil {
				resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					b.client.HTTPClient = hc
					return b
				}
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (b *brokerProcess) httpClient() (*http.Client, error) {
	pem, err := os.ReadFile(filepath.Join(b.dir, "ca.pem"))
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("no certificate in ca.pem yet")
	}
	return &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}, nil
}

func (b *brokerProcess) stop() {
	select {
	case <-b.exited:
		return
	default:
	}
	_ = b.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-b.exited:
	case <-time.After(10 * time.Second):
		_ = b.cmd.Process.Kill()
		<-b.exited
	}
}

// mustAPIClient registers an API client with the broker's admin command.
func (b *brokerProcess) mustAPIClient(tb testing.TB) *api.Client {
	tb.Helper()
	var stderr bytes.Buffer
	cmd := exec.Command(b.bin, "register-api-client", "--config", b.config, "--client-name", "t")
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		tb.Fatalf("register-api-client: %v\n%s", err, stderr.String())
	}
	var id, secret string
	for _, line := range strings.Split(string(out), "\n") {
		if v, ok := strings.CutPrefix(line, "client-id: "); ok {
			id = v
		}
		if v, ok := strings.CutPrefix(line, "client-password: "); ok {
			secret = v
		}
	}
	if id == "" || secret == "" {
		tb.Fatalf("register-api-client printed %q", out)
	}
	return &api.Client{BrokerURL: fmt.Sprintf("https://127.0.0.1:%d", b.clientPort), ClientID: id, ClientSecret: secret}
}

// TestMain_Broker runs the agent in-process against a real berth-broker binary
// and checks through the API that DescribeServers shows this host as /proc and
// /etc/os-release describe it, with the tags from the tags folder.
func TestMain_Broker(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs berth-broker")
	}
	b := mustStartBroker(t)
	dir := t.TempDir()
	m := NewMain()
	m.Config = testConfig(dir)
	m.Config.Agent.BrokerPort = b.agentPort
	m.Config.Agent.CAFile = filepath.Join(b.dir, "ca.pem")
	m.Config.Agent.SoftwareStatementPath = filepath.Join(b.dir, "agent-software-statement")
	m.Config.Agent.BrokerUpdateInterval, m.Config.Agent.updateIntervalSet = 1, true
	m.Config.Agent.MaxVirtualSessions = 3
	mustWrite(t, filepath.Join(m.Config.Agent.TagsFolder, "10-site.toml"), "site = \"paris\"\ngpu = \"none\"\n")
	mustWrite(t, filepath.Join(m.Config.Agent.TagsFolder, "20-override.toml"), "gpu = \"t4\"\nseats = 4\n")
	m.Logger = testLogger(t)
	if err := m.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })

	client := b.client
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var srv *api.Server
	for srv == nil {
		resp, err := client.DescribeServers(ctx, api.DescribeServersRequest{ServerIds: []string{m.ServerID()}})
		if err != nil && ctx.Err() != nil {
			t.Fatalf("DescribeServers: %v", err)
		}
		if err == nil && len(resp.Servers) == 1 && resp.Servers[0].Availability == "AVAILABLE" {
			srv = &resp.Servers[0]
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Logf("server: %+v", *srv)

	host, _ := os.Hostname()
	if srv.Id != m.ServerID() || srv.Hostname != host {
		t.Errorf("server %q hostname %q, want %q and %q", srv.Id, srv.Hostname, m.ServerID(), host)
	}
	if srv.SessionManagerAgentVersion != version {
		t.Errorf("agent version %q, want %q", srv.SessionManagerAgentVersion, version)
	}
	rel := map[string]string{}
	for _, line := range strings.Split(string(mustRead(t, "/etc/os-release")), "\n") {
		if k, v, ok := strings.Cut(line, "="); ok {
			rel[k] = strings.Trim(v, `"'`)
		}
	}
	if os := srv.Host.Os; os.Family != "linux" || os.Name != rel["NAME"] || os.Version != rel["VERSION_ID"] || os.KernelVersion == "" {
		t.Errorf("Os = %+v, /etc/os-release has NAME %q VERSION_ID %q", os, rel["NAME"], rel["VERSION_ID"])
	}
	var memTotal int64
	for _, line := range strings.Split(string(mustRead(t, "/proc/meminfo")), "\n") {
		if v, ok := strings.CutPrefix(line, "MemTotal:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			memTotal = kb * 1024
		}
	}
	if srv.Host.Memory.TotalBytes != memTotal || srv.Host.Memory.UsedBytes <= 0 || srv.Host.Memory.UsedBytes > memTotal {
		t.Errorf("Memory = %+v, /proc/meminfo MemTotal is %d", srv.Host.Memory, memTotal)
	}
	if c := srv.Host.CpuInfo; c.NumberOfCpus < 1 || c.PhysicalCoresPerCpu < 1 || c.Architecture == "" {
		t.Errorf("CpuInfo = %+v", c)
	}
	tags := map[string]string{}
	for _, kv := range srv.Tags {
		tags[kv.Key] = kv.Value
	}
	for k, v := range map[string]string{"site": "paris", "gpu": "t4", "seats": "4", "dcv:max-virtual-sessions": "3"} {
		if tags[k] != v {
			t.Errorf("tag %s = %q, want %q (tags %v)", k, tags[k], v, tags)
		}
	}

	// The agent registered with the software statement and kept its credentials.
	if _, err := os.Stat(filepath.Join(m.Config.Agent.StateDir, "agent-credentials.json")); err != nil {
		t.Errorf("no stored agent credentials: %v", err)
	}
	if err := m.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
}

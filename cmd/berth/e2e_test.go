package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/berth-dev/berth/api"
)

// e2eBroker is a real berth-broker process on loopback.
type e2eBroker struct {
	dir       string // working path: store, ca.pem
	bin       string // directory of the built binaries
	url       string
	agentAddr string // host:port of the agent-to-broker connector
	id, pw    string
	berth     string // path of the built berth binary
	client    *api.Client
	stderr    *lockedBuffer
	baseEnv   []string
	caBundle  string
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// startE2EBroker builds berth, berth-broker and berth-agent, registers an API
// client and starts the broker with its client and agent ports on free
// loopback ports.
func startE2EBroker(t *testing.T) *e2eBroker {
	t.Helper()
	if testing.Short() {
		t.Skip("builds and starts the real berth-broker; skipped with -short")
	}
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("go command not found")
	}
	tmp := t.TempDir()
	bin := filepath.Join(tmp, "bin")
	build := exec.Command(goBin, "build", "-o", bin+string(filepath.Separator), "./cmd/berth-broker", "./cmd/berth", "./cmd/berth-agent")
	build.Dir = filepath.Join("..", "..")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	b := &e2eBroker{dir: filepath.Join(tmp, "broker"), bin: bin, berth: filepath.Join(bin, "berth"), stderr: &lockedBuffer{}}
	if err := os.MkdirAll(b.dir, 0o700); err != nil {
		t.Fatal(err)
	}
	props := filepath.Join(tmp, "broker.properties")
	// Port 0: the broker picks free ports and logs them in its "broker started" line.
	err = os.WriteFile(props, []byte(strings.Join([]string{
		"session-manager-working-path = " + b.dir,
		"client-to-broker-connector-https-port = 0",
		"client-to-broker-connector-bind-host = 127.0.0.1",
		"agent-to-broker-connector-https-port = 0",
		"agent-to-broker-connector-bind-host = 127.0.0.1",
		"create-sessions-queue-max-time-seconds = 2",
		// The vnc agent's web gateway listens on loopback here.
		"web-gateway-ca-permitted-subtrees = 127.0.0.0/8",
		"log-format = json",
		"log-level = info",
		"",
	}, "\n")), 0o600)
	if err != nil {
		t.Fatal(err)
	}
	broker := filepath.Join(bin, "berth-broker")
	// Register the API client before the broker starts: the admin commands
	// open the store, which a running broker holds.
	out, err := exec.Command(broker, "register-api-client", "--config", props, "--client-name", "cli").CombinedOutput()
	if err != nil {
		t.Fatalf("register-api-client: %v\n%s", err, out)
	}
	for _, line := range strings.Split(string(out), "\n") {
		if v, ok := strings.CutPrefix(line, "client-id: "); ok {
			b.id = strings.TrimSpace(v)
		}
		if v, ok := strings.CutPrefix(line, "client-password: "); ok {
			b.pw = strings.TrimSpace(v)
		}
	}
	if b.id == "" || b.pw == "" {
		t.Fatalf("register-api-client printed %q", out)
	}

	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, broker, "--config", props)
	cmd.Cancel = func() error { return cmd.Process.Signal(os.Interrupt) }
	cmd.WaitDelay = 10 * time.Second
	pipe, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	addr := make(chan [2]string, 1)
	go func() {
		sc := bufio.NewScanner(pipe)
		sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
		for sc.Scan() {
			fmt.Fprintln(b.stderr, sc.Text())
			var rec struct {
				Msg        string `json:"msg"`
				ClientAddr string `json:"client_addr"`
				AgentAddr  string `json:"agent_addr"`
			}
			if json.Unmarshal(sc.Bytes(), &rec) == nil && rec.Msg == "broker started" {
				addr <- [2]string{rec.ClientAddr, rec.AgentAddr}
			}
		}
		io.Copy(b.stderr, pipe)
	}()
	t.Cleanup(func() {
		cancel()
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("berth-broker log:\n%s", b.stderr.String())
		}
	})
	select {
	case a := <-addr:
		b.url = "https://" + a[0]
		b.agentAddr = a[1]
	case <-time.After(60 * time.Second):
		t.Fatalf("berth-broker did not start within 60s:\n%s", b.stderr.String())
	}
	b.caBundle = filepath.Join(b.dir, "ca.pem")
	hc, err := api.NewHTTPClient(b.caBundle, false)
	if err != nil {
		t.Fatal(err)
	}
	b.client = &api.Client{BrokerURL: b.url, ClientID: b.id, ClientSecret: b.pw, HTTPClient: hc}
	home := t.TempDir()
	b.baseEnv = []string{"HOME=" + home, "XDG_CONFIG_HOME=" + home, "PATH=" + os.Getenv("PATH"),
		"BERTH_CLIENT_ID=" + b.id, "BERTH_CLIENT_PASSWORD=" + b.pw}
	return b
}

// run runs the built berth binary against the broker.
func (b *e2eBroker) run(t *testing.T, env []string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	return b.runAt(t, b.url, b.caBundle, env, args...)
}

// runAt runs the built berth binary against the broker API at url, trusting
// the CA bundle ca. It gives up after two minutes.
func (b *e2eBroker) runAt(t *testing.T, url, ca string, env []string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	if env == nil {
		env = b.baseEnv
	}
	full := append([]string{"--broker-url", url, "--ca-bundle", ca}, args...)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, b.berth, full...)
	cmd.Env = env
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code = 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("run berth: %v", err)
	}
	return out.String(), errb.String(), code
}

// sameAnswer decodes the CLI's JSON into the type of want and compares them,
// ignoring the fields that legitimately differ between two calls (see
// normalize).
func sameAnswer[T any](t *testing.T, what, stdout string, want *T) {
	t.Helper()
	var got T
	dec := json.NewDecoder(strings.NewReader(stdout))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&got); err != nil {
		t.Fatalf("%s: output is not the API answer: %v\n%s", what, err, stdout)
	}
	normalize(reflect.ValueOf(&got))
	w := *want
	normalize(reflect.ValueOf(&w))
	if !reflect.DeepEqual(got, w) {
		t.Errorf("%s: CLI output differs from the api.Client answer:\ncli: %+v\napi: %+v", what, got, w)
	}
	var again bytes.Buffer
	if json.Indent(&again, []byte(stdout), "", "  ") != nil || again.String() != stdout {
		t.Errorf("%s: output is not indented JSON:\n%s", what, stdout)
	}
}

// volatile names the fields that differ between two calls that ask the same:
// each call gets its own RequestId and ConnectionToken, and the host report
// (memory and swap use, load, logged-in users) and the connection counts of
// sessions change with every agent report.
var volatile = map[string]bool{
	"RequestId": true, "ConnectionToken": true, "NumOfConnections": true, "LastDisconnectionTime": true,
	"UsedBytes": true, "CpuLoadAverage": true, "LoggedInUsers": true,
}

// normalize zeroes the volatile fields of v, and the Data and CreationTime of
// screenshot images (each call takes a new screenshot), at any depth.
func normalize(v reflect.Value) {
	switch v.Kind() {
	case reflect.Pointer, reflect.Interface:
		if !v.IsNil() {
			normalize(v.Elem())
		}
	case reflect.Slice, reflect.Array:
		for i := range v.Len() {
			normalize(v.Index(i))
		}
	case reflect.Struct:
		image := v.Type() == reflect.TypeFor[api.SessionScreenshotImage]()
		for i := range v.NumField() {
			name := v.Type().Field(i).Name
			if volatile[name] || image && (name == "Data" || name == "CreationTime") {
				v.Field(i).SetZero()
				continue
			}
			normalize(v.Field(i))
		}
	}
}

// TestE2E runs the berth binary against a real berth-broker, first for every
// command that needs no agent, then (as root, with TigerVNC installed) against
// a real berth-agent with the vnc driver for every command and option that
// needs a live server (testE2EAgent). It checks each JSON output against
// api.Client's answer.
func TestE2E(t *testing.T) {
	b := startE2EBroker(t)
	ctx := context.Background()

	t.Run("describe-servers", func(t *testing.T) {
		out, stderr, code := b.run(t, nil, "describe-servers")
		if code != 0 {
			t.Fatalf("exit %d: %s", code, stderr)
		}
		want, err := b.client.DescribeServers(ctx, api.DescribeServersRequest{})
		if err != nil {
			t.Fatal(err)
		}
		sameAnswer(t, "describe-servers", out, want)
		out, _, code = b.run(t, nil, "describe-servers", "--output", "table", "--all", "--max-results", "1")
		if code != 0 || out != "ID  HOSTNAME  IP  AVAILABILITY  REASON  CONSOLE  VIRTUAL  OS  AGENT\n(0 servers)\n" {
			t.Errorf("table: exit %d\n%s", code, out)
		}
	})

	// An enqueued request that no server takes: --wait sees it DELETED after
	// create-sessions-queue-max-time-seconds and exits 1 with the reason.
	var waited api.Session
	t.Run("create-session --wait, deleted", func(t *testing.T) {
		out, stderr, code := b.run(t, nil, "create-session", "--name", "e2e-wait", "--owner", "alice", "--type", "virtual",
			"--enqueue-request", "true", "--max_concurrent-clients", "3", "--wait", "--wait-timeout", "1m")
		if code != 1 {
			t.Fatalf("exit %d, want 1: %s", code, stderr)
		}
		var resp api.DescribeSessionsResponse
		if err := json.Unmarshal([]byte(out), &resp); err != nil || len(resp.Sessions) != 1 {
			t.Fatalf("stdout is not the final DescribeSessions answer: %v\n%s", err, out)
		}
		waited = resp.Sessions[0]
		if waited.State != api.StateDeleted || waited.StateReason == "" || waited.MaxConcurrentClients != 3 {
			t.Errorf("final session = %+v", waited)
		}
		lines := strings.Split(strings.TrimSpace(stderr), "\n")
		if !strings.HasPrefix(lines[0], "waiting for session "+waited.Id+": CREATING/SESSION_PLACING (") {
			t.Errorf("first progress line = %q", lines[0])
		}
		if want := "berth: create-session: session " + waited.Id + " is DELETED: " + waited.StateReason; lines[len(lines)-1] != want {
			t.Errorf("last line = %q, want %q", lines[len(lines)-1], want)
		}
	})

	t.Run("describe-sessions", func(t *testing.T) {
		if waited.Id == "" {
			t.Skip("no session from the previous step")
		}
		want, err := b.client.DescribeSessions(ctx, api.DescribeSessionsRequest{})
		if err != nil {
			t.Fatal(err)
		}
		out, stderr, code := b.run(t, nil, "describe-sessions")
		if code != 0 {
			t.Fatalf("exit %d: %s", code, stderr)
		}
		sameAnswer(t, "describe-sessions", out, want)
		out, _, code = b.run(t, nil, "describe-sessions", "--session-ids", waited.Id, "--owner", "alice", "--all", "--max-results", "1")
		one, err := b.client.DescribeSessions(ctx, api.DescribeSessionsRequest{SessionIds: []string{waited.Id}})
		if err != nil {
			t.Fatal(err)
		}
		if code != 0 {
			t.Fatalf("exit %d", code)
		}
		sameAnswer(t, "describe-sessions --session-ids", out, one)
		out, _, _ = b.run(t, nil, "--output", "table", "describe-sessions", "--session-ids", waited.Id)
		if !strings.Contains(out, waited.Id+"  e2e-wait  alice  VIRTUAL  DELETED") || !strings.HasSuffix(out, "(1 session)\n") {
			t.Errorf("table:\n%s", out)
		}
	})

	t.Run("create-session, no server meets the requirements", func(t *testing.T) {
		out, stderr, code := b.run(t, nil, "create-session", "--name", "e2e-req", "--owner", "bob", "--type", "Console",
			"--requirements", "server:Id = 'nope'")
		if code != 1 {
			t.Fatalf("exit %d, want 1: %s", code, stderr)
		}
		want, err := b.client.CreateSessions(ctx, []api.CreateSessionRequest{{Name: "e2e-req", Owner: "bob", Type: "CONSOLE", Requirements: "server:Id = 'nope'"}})
		if err != nil {
			t.Fatal(err)
		}
		sameAnswer(t, "create-session", out, want)
		if len(want.UnsuccessfulList) != 1 {
			t.Fatalf("api answer = %+v", want)
		}
		if line := "berth: create-session: e2e-req: " + want.UnsuccessfulList[0].FailureReason + "\n"; stderr != line {
			t.Errorf("stderr = %q, want %q", stderr, line)
		}
	})

	// The refused create above asked for capacity that no server offers:
	// the scaling signals show its class.
	t.Run("describe-capacity", func(t *testing.T) {
		out, stderr, code := b.run(t, nil, "describe-capacity")
		if code != 0 {
			t.Fatalf("exit %d: %s", code, stderr)
		}
		var resp api.DescribeCapacityResponse
		if err := json.Unmarshal([]byte(out), &resp); err != nil {
			t.Fatalf("stdout is not the capacity answer: %v\n%s", err, out)
		}
		var class string
		for _, s := range resp.Shortfall {
			if strings.Contains(s.Requirements, "nope") && s.Type == api.TypeConsole && s.Refused >= 1 {
				class = s.Class
			}
		}
		if class == "" {
			t.Fatalf("no shortfall for the refused console create: %+v", resp.Shortfall)
		}
		out, stderr, code = b.run(t, nil, "describe-capacity", "--output", "table")
		if code != 0 || !strings.Contains(out, "CLASS") || !strings.Contains(out, class) || !strings.Contains(out, "IDLE SERVER ID") {
			t.Errorf("table: exit %d: %s\n%s", code, stderr, out)
		}
	})

	t.Run("describe-queue", func(t *testing.T) {
		out, stderr, code := b.run(t, nil, "describe-queue")
		if code != 0 {
			t.Fatalf("exit %d: %s", code, stderr)
		}
		var resp api.DescribeQueueResponse
		if err := json.Unmarshal([]byte(out), &resp); err != nil || resp.RequestId == "" {
			t.Fatalf("stdout is not the queue answer: %v\n%s", err, out)
		}
		out, _, code = b.run(t, nil, "describe-queue", "--output", "table")
		if code != 0 || !strings.HasPrefix(out, "POSITION  SESSION ID  OWNER  ENQUEUED  REASON\n") {
			t.Errorf("table: exit %d\n%s", code, out)
		}
	})

	t.Run("open-servers unknown", func(t *testing.T) {
		out, stderr, code := b.run(t, nil, "open-servers", "--server-ids", "nope-1,nope-2")
		if code != 1 {
			t.Fatalf("exit %d, want 1: %s", code, stderr)
		}
		want, err := b.client.OpenServers(ctx, []api.OpenServerRequest{{ServerId: "nope-1"}, {ServerId: "nope-2"}})
		if err != nil {
			t.Fatal(err)
		}
		sameAnswer(t, "open-servers", out, want)
		if !strings.HasPrefix(stderr, "berth: open-servers: nope-1: DCV_SERVER_NOT_FOUND: ") || strings.Count(stderr, "\n") != 2 {
			t.Errorf("stderr = %q", stderr)
		}
	})

	t.Run("close-servers unknown", func(t *testing.T) {
		out, stderr, code := b.run(t, nil, "close-servers", "--server-ids", "nope", "--force")
		if code != 1 {
			t.Fatalf("exit %d, want 1: %s", code, stderr)
		}
		want, err := b.client.CloseServers(ctx, []api.CloseServerRequest{{ServerId: "nope", Force: true}})
		if err != nil {
			t.Fatal(err)
		}
		sameAnswer(t, "close-servers", out, want)
		if !strings.HasPrefix(stderr, "berth: close-servers: nope: DCV_SERVER_NOT_FOUND: ") {
			t.Errorf("stderr = %q", stderr)
		}
	})

	t.Run("delete-session unknown", func(t *testing.T) {
		out, stderr, code := b.run(t, nil, "delete-session", "--session-id", "nope", "--owner", "alice")
		want, err := b.client.DeleteSessions(ctx, []api.DeleteSessionRequest{{SessionId: "nope", Owner: "alice"}})
		if err != nil {
			t.Fatal(err)
		}
		if code != 1 || len(want.UnsuccessfulList) != 1 {
			t.Fatalf("exit %d, want 1: %s (api: %+v)", code, stderr, want)
		}
		sameAnswer(t, "delete-session", out, want)
		if line := "berth: delete-session: nope: " + want.UnsuccessfulList[0].FailureReason + "\n"; stderr != line {
			t.Errorf("stderr = %q, want %q", stderr, line)
		}
	})

	t.Run("get-session-screenshots unknown", func(t *testing.T) {
		out, stderr, code := b.run(t, nil, "get-session-screenshots", "--session-ids", "nope", "--max-width", "100")
		if code != 1 {
			t.Fatalf("exit %d, want 1: %s", code, stderr)
		}
		w := int64(100)
		want, err := b.client.GetSessionScreenshots(ctx, []api.GetSessionScreenshotRequest{{SessionId: "nope", MaxWidth: &w}})
		if err != nil {
			t.Fatal(err)
		}
		sameAnswer(t, "get-session-screenshots", out, want)
	})

	t.Run("update-session-permissions unknown", func(t *testing.T) {
		perm := filepath.Join(t.TempDir(), "p.perm")
		os.WriteFile(perm, []byte("[permissions]\n%owner% allow builtin\n"), 0o600)
		out, stderr, code := b.run(t, nil, "update-session-permissions", "--session-id", "nope", "--owner", "alice", "--permission-file", perm)
		want, err := b.client.UpdateSessionPermissions(ctx, []api.UpdateSessionPermissionsRequest{{SessionId: "nope", Owner: "alice", PermissionsFile: b64("[permissions]\n%owner% allow builtin\n")}})
		var ae *api.Error
		switch {
		case err == nil:
			if code != 1 {
				t.Fatalf("exit %d, want 1: %s", code, stderr)
			}
			sameAnswer(t, "update-session-permissions", out, want)
		case errors.As(err, &ae):
			if code != 1 || stderr != "berth: update-session-permissions: "+ae.Error()+"\n" {
				t.Errorf("exit %d, stderr %q; api error %v", code, stderr, ae)
			}
		default:
			t.Fatal(err)
		}
	})

	t.Run("get-session-connection-data unknown", func(t *testing.T) {
		_, stderr, code := b.run(t, nil, "get-session-connection-data", "--session-id", "nope", "--user", "alice")
		_, err := b.client.GetSessionConnectionData(ctx, "nope", "alice")
		if err == nil {
			t.Fatal("api.Client got connection data for an unknown session")
		}
		if want := "berth: get-session-connection-data: " + err.Error() + "\n"; code != 1 || stderr != want {
			t.Errorf("exit %d, stderr %q; want 1, %q", code, stderr, want)
		}
	})

	t.Run("wrong password", func(t *testing.T) {
		env := append(append([]string(nil), b.baseEnv...), "BERTH_CLIENT_PASSWORD=wrong")
		_, stderr, code := b.run(t, env, "describe-sessions")
		if code != 1 || !strings.Contains(stderr, "the auth server refused the client credentials") || strings.Contains(stderr, "wrong") {
			t.Errorf("exit %d, stderr %q", code, stderr)
		}
	})

	t.Run("no credentials", func(t *testing.T) {
		home := t.TempDir()
		_, stderr, code := b.run(t, []string{"HOME=" + home, "XDG_CONFIG_HOME=" + home}, "describe-sessions")
		if code != 1 || !strings.Contains(stderr, "the broker requires credentials") {
			t.Errorf("exit %d, stderr %q", code, stderr)
		}
	})

	t.Run("untrusted certificate", func(t *testing.T) {
		cmd := exec.Command(b.berth, "--broker-url", b.url, "describe-servers")
		cmd.Env = b.baseEnv
		var errb bytes.Buffer
		cmd.Stderr = &errb
		err := cmd.Run()
		ee, ok := err.(*exec.ExitError)
		if !ok || ee.ExitCode() != 2 || !strings.Contains(errb.String(), "cannot verify the TLS certificate") || strings.Count(errb.String(), "\n") != 1 {
			t.Errorf("err %v, stderr %q", err, errb.String())
		}
	})

	t.Run("dcvsmcli.conf", func(t *testing.T) {
		xdg := t.TempDir()
		conf := fmt.Sprintf("[output]\noutput-format = json\n[security]\nca-bundle = %s\n[authentication]\nauth-server-url = %s/oauth2/token?grant_type=client_credentials\nclient-id = %s\nclient-password = %s\n[broker]\nurl = %s\n",
			b.caBundle, b.url, b.id, b.pw, b.url)
		os.WriteFile(filepath.Join(xdg, "dcvsmcli.conf"), []byte(conf), 0o600)
		cmd := exec.Command(b.berth, "describe-servers")
		cmd.Env = []string{"XDG_CONFIG_HOME=" + xdg, "HOME=" + xdg}
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("berth with only dcvsmcli.conf: %v", err)
		}
		want, err := b.client.DescribeServers(ctx, api.DescribeServersRequest{})
		if err != nil {
			t.Fatal(err)
		}
		sameAnswer(t, "describe-servers (dcvsmcli.conf)", string(out), want)
	})

	// Last: the subtests above expect a broker without servers.
	t.Run("vnc agent", func(t *testing.T) { testE2EAgent(t, b) })
}

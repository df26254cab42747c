package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"image"
	_ "image/jpeg"
	_ "image/png"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/internal/poll"
)

// e2eUser owns the sessions of the agent e2e test; it is created when missing.
const e2eUser = "berthcli1"

// e2eAgent is a real berth-agent process connected to an e2eBroker.
type e2eAgent struct {
	serverID string
	stateDir string // agent.state_dir
	webPort  int    // vnc.web_port (vnc driver only)
	stderr   *lockedBuffer
}

// agentFolders are the init and autorun folders of the vnc agent: under a
// world-readable directory, since the session owner runs what is in them.
type agentFolders struct{ init, autorun string }

// loudSkip skips t with a message that shows without -v too.
func loudSkip(t *testing.T, msg string) {
	t.Helper()
	fmt.Fprintf(os.Stderr, "\n*** %s: SKIPPED: %s ***\n\n", t.Name(), msg)
	t.Skip(msg)
}

// freePort returns a TCP port that was free on 127.0.0.1 a moment ago.
func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// startAgent starts berth-agent with driver ("vnc" or "sim") against b, waits
// until the broker lists its server as AVAILABLE and returns it. At cleanup it
// force-deletes the sessions left on the server, waits (bounded) until the
// agent has torn them down, and stops the agent.
func (b *e2eBroker) startAgent(t *testing.T, name, driver string, folders *agentFolders) *e2eAgent {
	t.Helper()
	host, port, err := net.SplitHostPort(b.agentAddr)
	if err != nil {
		t.Fatalf("agent address %q: %v", b.agentAddr, err)
	}
	dir := t.TempDir()
	a := &e2eAgent{stateDir: filepath.Join(dir, "state"), stderr: &lockedBuffer{}}
	conf := []string{
		"version = '0.1'",
		"[agent]",
		"broker_host = '" + host + "'",
		"broker_port = " + port,
		"ca_file = '" + b.caBundle + "'",
		"software_statement_path = '" + filepath.Join(b.dir, "agent-software-statement") + "'",
		"driver = '" + driver + "'",
		"state_dir = '" + a.stateDir + "'",
		"tags_folder = '" + filepath.Join(dir, "tags") + "'",
		"broker_update_interval = 2",
	}
	if folders != nil {
		conf = append(conf, "init_folder = '"+folders.init+"'", "autorun_folder = '"+folders.autorun+"'")
	}
	if driver == "vnc" {
		a.webPort = freePort(t)
		conf = append(conf, "[vnc]", "web_port = "+strconv.Itoa(a.webPort), "web_bind_host = '127.0.0.1'", "desktop_command = 'openbox'")
	}
	conf = append(conf, "[log]", "level = 'info'", "")
	confPath := filepath.Join(dir, "agent.conf")
	if err := os.WriteFile(confPath, []byte(strings.Join(conf, "\n")), 0o600); err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, filepath.Join(b.bin, "berth-agent"), "--config", confPath)
	cmd.Cancel = func() error { return cmd.Process.Signal(os.Interrupt) }
	cmd.WaitDelay = 10 * time.Second
	pipe, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	started := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(pipe)
		sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
		for sc.Scan() {
			fmt.Fprintln(a.stderr, sc.Text())
			var rec struct {
				Msg      string `json:"msg"`
				ServerID string `json:"server_id"`
			}
			if json.Unmarshal(sc.Bytes(), &rec) == nil && rec.Msg == "agent started" {
				started <- rec.ServerID
			}
		}
		io.Copy(a.stderr, pipe)
	}()
	t.Cleanup(func() {
		if a.serverID != "" {
			b.deleteLeftovers(t, a)
		}
		cancel()
		_ = cmd.Wait()
		if driver == "vnc" {
			killLeftoverSessions(t, a)
		}
		if t.Failed() {
			t.Logf("berth-agent (%s) log:\n%s", name, a.stderr.String())
		}
	})
	select {
	case a.serverID = <-started:
	case <-time.After(30 * time.Second):
		t.Fatalf("berth-agent (%s) did not start within 30s:\n%s", name, a.stderr.String())
	}
	poll.Until(t, 30*time.Second, "server "+a.serverID+" ("+name+") to be AVAILABLE", func() bool {
		resp, err := b.client.DescribeServers(context.Background(), api.DescribeServersRequest{ServerIds: []string{a.serverID}})
		return err == nil && len(resp.Servers) == 1 && resp.Servers[0].Availability == api.AvailabilityAvailable
	})
	return a
}

// deleteLeftovers force-deletes the sessions still on a's server and waits,
// bounded, until the agent has removed their records (their processes are
// gone then).
func (b *e2eBroker) deleteLeftovers(t *testing.T, a *e2eAgent) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	resp, err := b.client.DescribeSessions(ctx, api.DescribeSessionsRequest{})
	if err != nil {
		t.Logf("cleanup: describe sessions: %v", err)
		return
	}
	var del []api.DeleteSessionRequest
	for _, s := range resp.Sessions {
		if s.Server != nil && s.Server.Id == a.serverID && s.State != api.StateDeleted {
			del = append(del, api.DeleteSessionRequest{SessionId: s.Id, Owner: s.Owner, Force: true})
		}
	}
	if len(del) > 0 {
		if _, err := b.client.DeleteSessions(ctx, del); err != nil {
			t.Logf("cleanup: delete sessions: %v", err)
		}
	}
	for ctx.Err() == nil {
		if len(sessionRecords(a)) == 0 {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("cleanup: the agent still has session records after 20s: %v", sessionRecords(a))
}

// sessionRecords lists the vnc driver's session record files of a.
func sessionRecords(a *e2eAgent) []string {
	m, _ := filepath.Glob(filepath.Join(a.stateDir, "vnc", "sessions", "*.json"))
	return m
}

// killLeftoverSessions ends the process groups of sessions the stopped agent
// left behind (vnc sessions outlive their agent), by the PIDs in its records.
func killLeftoverSessions(t *testing.T, a *e2eAgent) {
	for _, p := range sessionRecords(a) {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		var rec struct {
			ServerPID  int `json:"server_pid"`
			InitPID    int `json:"init_pid"`
			AutorunPID int `json:"autorun_pid"`
		}
		if json.Unmarshal(b, &rec) != nil {
			continue
		}
		for _, pid := range []int{rec.ServerPID, rec.InitPID, rec.AutorunPID} {
			if pid > 1 {
				// Each is the leader of its own process group.
				syscall.Kill(-pid, syscall.SIGKILL)
			}
		}
		t.Logf("cleanup: killed the processes of the leftover session record %s", p)
	}
}

// exchange is one API call that went through a recorder.
type exchange struct {
	method, path string
	status       int
	req, resp    []byte
}

// recorder is a TLS reverse proxy in front of the broker that records the API
// calls (not the token endpoint's) with their raw answers, so a test can check
// that berth prints exactly what the broker answered, also for calls that
// cannot be repeated (a create, a delete).
type recorder struct {
	url, ca string
	mu      sync.Mutex
	log     []exchange
}

func (b *e2eBroker) startRecorder(t *testing.T) *recorder {
	t.Helper()
	tr := b.client.HTTPClient.Transport
	r := &recorder{}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, err := io.ReadAll(req.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		out, err := http.NewRequestWithContext(req.Context(), req.Method, b.url+req.URL.RequestURI(), bytes.NewReader(body))
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		out.Header = req.Header.Clone()
		out.Header.Del("Accept-Encoding") // the transport's own gzip is undone for us
		resp, err := tr.RoundTrip(out)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		defer resp.Body.Close()
		rb, err := io.ReadAll(resp.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		if req.URL.Path != "/oauth2/token" {
			r.mu.Lock()
			r.log = append(r.log, exchange{method: req.Method, path: req.URL.Path, status: resp.StatusCode, req: body, resp: rb})
			r.mu.Unlock()
		}
		for k, vs := range resp.Header {
			if k != "Content-Length" && k != "Content-Encoding" {
				w.Header()[k] = vs
			}
		}
		w.WriteHeader(resp.StatusCode)
		w.Write(rb)
	}))
	srv.StartTLS()
	t.Cleanup(srv.Close)
	r.url = srv.URL
	r.ca = filepath.Join(t.TempDir(), "recorder-ca.pem")
	if err := os.WriteFile(r.ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	return r
}

// run runs berth through the recorder and returns what it printed, its exit
// code and the API calls it made.
func (r *recorder) run(t *testing.T, b *e2eBroker, args ...string) (stdout, stderr string, code int, calls []exchange) {
	t.Helper()
	r.mu.Lock()
	r.log = nil
	r.mu.Unlock()
	stdout, stderr, code = b.runAt(t, r.url, r.ca, nil, args...)
	r.mu.Lock()
	calls = r.log
	r.mu.Unlock()
	return stdout, stderr, code, calls
}

// printedAnswer checks that stdout is exactly the raw answer of the last call
// (indented, as berth prints it) and that the call went to path.
func printedAnswer(t *testing.T, what, stdout string, calls []exchange, method, path string) exchange {
	t.Helper()
	if len(calls) == 0 {
		t.Fatalf("%s: berth made no API call", what)
	}
	last := calls[len(calls)-1]
	if last.method != method || last.path != path {
		t.Fatalf("%s: last call %s %s, want %s %s", what, last.method, last.path, method, path)
	}
	var want bytes.Buffer
	if err := json.Indent(&want, last.resp, "", "  "); err != nil {
		t.Fatalf("%s: the broker's answer is not JSON: %v\n%s", what, err, last.resp)
	}
	want.WriteByte('\n')
	if stdout != want.String() {
		t.Errorf("%s: output is not the broker's answer:\ncli:\n%s\nbroker:\n%s", what, stdout, want.String())
	}
	return last
}

// strictDecode decodes s into a T, refusing fields T does not have.
func strictDecode[T any](t *testing.T, what string, s []byte) *T {
	t.Helper()
	var v T
	dec := json.NewDecoder(bytes.NewReader(s))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&v); err != nil {
		t.Fatalf("%s: %v\n%s", what, err, s)
	}
	return &v
}

// ensureUser creates the local user name (useradd -m) when missing and
// returns its home directory.
func ensureUser(t *testing.T, name string) string {
	t.Helper()
	u, err := user.Lookup(name)
	if err != nil {
		if out, err := exec.Command("useradd", "-m", "-s", "/bin/sh", name).CombinedOutput(); err != nil {
			if u, err = user.Lookup(name); err != nil { // created meanwhile by another test?
				t.Fatalf("useradd %s: %s", name, out)
			}
		} else if u, err = user.Lookup(name); err != nil {
			t.Fatal(err)
		}
	}
	return u.HomeDir
}

// writeFolders writes the init and autorun programs of the test into a fresh
// world-readable directory, removed at cleanup.
func writeFolders(t *testing.T) *agentFolders {
	t.Helper()
	root, err := os.MkdirTemp("", "berth-cli-e2e-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(root) })
	f := &agentFolders{init: filepath.Join(root, "init"), autorun: filepath.Join(root, "autorun")}
	files := map[string]string{
		// marks that the init file ran, in the storage root, then runs the window manager
		filepath.Join(f.init, "wm.sh"): "#!/bin/sh\n: > \"$HOME/berth/init-ran\"\nexec openbox\n",
		// writes its arguments, one per line, into the storage root
		filepath.Join(f.autorun, "args.sh"): "#!/bin/sh\nout=\"$HOME/berth\"\n" +
			"printf '%s\\n' \"$@\" > \"$out/args.tmp\" && mv \"$out/args.tmp\" \"$out/args\"\nexec sleep 600\n",
	}
	for _, d := range []string{root, f.init, f.autorun} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for p, text := range files {
		if err := os.WriteFile(p, []byte(text), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return f
}

// waitState polls DescribeSessions until session id is in state, or fails.
func (b *e2eBroker) waitState(t *testing.T, id, state string, timeout time.Duration) api.Session {
	t.Helper()
	var last api.Session
	deadline := time.Now().Add(timeout)
	for {
		resp, err := b.client.DescribeSessions(context.Background(), api.DescribeSessionsRequest{SessionIds: []string{id}})
		if err == nil && len(resp.Sessions) == 1 {
			last = resp.Sessions[0]
			if last.State == state {
				return last
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("session %s is not %s after %s: %+v (err %v)", id, state, timeout, last, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// testE2EAgent runs against b plus a real berth-agent with the vnc driver
// (TigerVNC, as local user berthcli1) and, for paging, a second agent with
// the sim driver. It exercises every command and option that needs a live
// server and checks each JSON output against the broker's raw answer (through
// a recording proxy) and against api.Client's answer to the same request.
func testE2EAgent(t *testing.T, b *e2eBroker) {
	if os.Geteuid() != 0 {
		loudSkip(t, "the vnc agent e2e test starts desktops as a local user and needs root")
	}
	if _, err := exec.LookPath("Xvnc"); err != nil {
		if _, err := os.Stat("/usr/bin/Xvnc"); err != nil {
			loudSkip(t, "Xvnc is not installed (apt-get install tigervnc-standalone-server openbox xterm novnc)")
		}
	}
	ctx := context.Background()
	home := ensureUser(t, e2eUser)
	storage := filepath.Join(home, "berth")
	for _, f := range []string{"args", "args.tmp", "init-ran"} {
		os.Remove(filepath.Join(storage, f))
	}
	t.Cleanup(func() { os.RemoveAll(storage) }) // the session's storage root
	folders := writeFolders(t)
	vnc := b.startAgent(t, "vnc", "vnc", folders)
	rec := b.startRecorder(t)
	tmp := t.TempDir()
	ownerPerm := "[permissions]\n%owner% allow builtin\n"
	permFile := filepath.Join(tmp, "owner.perm")
	teamPerm := "[permissions]\n%owner% allow builtin\ncarol allow display\n"
	teamFile := filepath.Join(tmp, "team.perm")
	for p, text := range map[string]string{permFile: ownerPerm, teamFile: teamPerm} {
		if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	var full, two, three string // session IDs

	// Two sessions without --wait first, so they get ready while the next
	// steps run. Each prints the CreateSessions answer.
	for _, c := range []struct {
		name, typ, maxOpt string
		id                *string
	}{
		{"e2e-two", "virtual", "--max-concurrents-clients", &two},
		{"e2e-three", "VIRTUAL", "--max_concurrent-clients", &three},
	} {
		ok := t.Run("create-session "+c.typ+" "+c.maxOpt, func(t *testing.T) {
			out, stderr, code, calls := rec.run(t, b, "create-session", "--name", c.name, "--owner", e2eUser, "--type", c.typ, c.maxOpt, "1")
			if code != 0 || stderr != "" {
				t.Fatalf("exit %d, stderr %q", code, stderr)
			}
			last := printedAnswer(t, "create-session", out, calls, "POST", "/createSessions")
			one := int64(1)
			if got := strictDecode[[]api.CreateSessionRequest](t, "request", last.req); !reflect.DeepEqual(*got,
				[]api.CreateSessionRequest{{Name: c.name, Owner: e2eUser, Type: api.TypeVirtual, MaxConcurrentClients: &one}}) {
				t.Errorf("request = %s", last.req)
			}
			resp := strictDecode[api.CreateSessionsResponse](t, "create-session output", []byte(out))
			if len(resp.SuccessfulList) != 1 || len(resp.UnsuccessfulList) != 0 {
				t.Fatalf("answer = %+v", resp)
			}
			s := resp.SuccessfulList[0]
			if s.Id == "" || s.Name != c.name || s.Owner != e2eUser || s.Type != api.TypeVirtual || s.State != api.StateCreating || s.MaxConcurrentClients != 1 {
				t.Errorf("session = %+v", s)
			}
			*c.id = s.Id
		})
		if !ok {
			return
		}
	}

	// Every option of create-session, with --wait: READY, the final
	// DescribeSessions answer on stdout, progress on stderr.
	ok := t.Run("create-session every option --wait", func(t *testing.T) {
		args := []string{"create-session", "--name", "e2e-full", "--owner", e2eUser, "--type", "Virtual",
			"--init-file-path", "wm.sh", "--autorun-file", "args.sh", "--autorun-file-arguments", "a b,c",
			"--max-concurrent-clients", "2", "--permissions-file", permFile,
			"--requirements", "server:Host.Os.Family = 'linux'", "--storage-root", "%home%/berth",
			"--enqueue-request", "true", "--disable-retry-on-failure", "--wait", "--wait-timeout", "45s"}
		out, stderr, code, calls := rec.run(t, b, args...)
		if code != 0 {
			t.Fatalf("exit %d, stderr %q\n%s", code, stderr, out)
		}
		two := int64(2)
		wantReq := []api.CreateSessionRequest{{Name: "e2e-full", Owner: e2eUser, Type: api.TypeVirtual,
			InitFile: "wm.sh", AutorunFile: "args.sh", AutorunFileArguments: []string{"a b", "c"}, MaxConcurrentClients: &two,
			PermissionsFile: base64.StdEncoding.EncodeToString([]byte(ownerPerm)), Requirements: "server:Host.Os.Family = 'linux'",
			StorageRoot: "%home%/berth", EnqueueRequest: true, DisableRetryOnFailure: true}}
		if calls[0].path != "/createSessions" {
			t.Fatalf("first call %s", calls[0].path)
		}
		if got := strictDecode[[]api.CreateSessionRequest](t, "request", calls[0].req); !reflect.DeepEqual(*got, wantReq) {
			t.Errorf("request = %s", calls[0].req)
		}
		created := strictDecode[api.CreateSessionsResponse](t, "CreateSessions answer", calls[0].resp)
		if len(created.SuccessfulList) != 1 {
			t.Fatalf("CreateSessions answer: %s", calls[0].resp)
		}
		full = created.SuccessfulList[0].Id
		printedAnswer(t, "create-session --wait", out, calls, "POST", "/describeSessions")
		want, err := b.client.DescribeSessions(ctx, api.DescribeSessionsRequest{SessionIds: []string{full}})
		if err != nil {
			t.Fatal(err)
		}
		sameAnswer(t, "create-session --wait", out, want)
		s := want.Sessions[0]
		if s.State != api.StateReady || s.Name != "e2e-full" || s.Owner != e2eUser || s.Type != api.TypeVirtual ||
			s.MaxConcurrentClients != 2 || s.StorageRoot != "%home%/berth" || s.Server == nil || s.Server.Id != vnc.serverID {
			t.Errorf("session = %+v", s)
		}
		// One progress line per state (stderr is no terminal), READY last.
		progress := regexp.MustCompile(`^waiting for session ` + full + `: (CREATING(/[A-Z_]+)?|READY) \(\d+s\)$`)
		lines := strings.Split(strings.TrimSpace(stderr), "\n")
		for _, l := range lines {
			if !progress.MatchString(l) {
				t.Errorf("stderr line %q is not a progress line", l)
			}
		}
		if !strings.Contains(lines[len(lines)-1], ": READY (") {
			t.Errorf("progress lines:\n%s", stderr)
		}
		// The options reached the host: the init file ran, the autorun file
		// got its two arguments, in the storage root the agent created.
		poll.Until(t, 15*time.Second, "the autorun file's output", func() bool {
			_, err := os.Stat(filepath.Join(storage, "args"))
			return err == nil
		})
		if got, _ := os.ReadFile(filepath.Join(storage, "args")); string(got) != "a b\nc\n" {
			t.Errorf("autorun arguments = %q, want %q", got, "a b\nc\n")
		}
		if _, err := os.Stat(filepath.Join(storage, "init-ran")); err != nil {
			t.Errorf("the init file did not run: %v", err)
		}
	})
	if !ok {
		return
	}

	// No server here can run DCV GL: the broker refuses the request at
	// placement, and --wait has nothing to wait for.
	t.Run("create-session --dcv-gl-enabled", func(t *testing.T) {
		out, stderr, code, calls := rec.run(t, b, "create-session", "--name", "e2e-gl", "--owner", e2eUser, "--type", "Virtual",
			"--dcv-gl-enabled", "--wait", "--wait-timeout", "30s")
		if code != 1 {
			t.Fatalf("exit %d, want 1: %s", code, stderr)
		}
		last := printedAnswer(t, "create-session --dcv-gl-enabled", out, calls, "POST", "/createSessions")
		req := []api.CreateSessionRequest{{Name: "e2e-gl", Owner: e2eUser, Type: api.TypeVirtual, DcvGlEnabled: true}}
		if got := strictDecode[[]api.CreateSessionRequest](t, "request", last.req); !reflect.DeepEqual(*got, req) {
			t.Errorf("request = %s", last.req)
		}
		want, err := b.client.CreateSessions(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		sameAnswer(t, "create-session --dcv-gl-enabled", out, want)
		if len(want.SuccessfulList) != 0 || len(want.UnsuccessfulList) != 1 || !strings.Contains(want.UnsuccessfulList[0].FailureReason, "GL") {
			t.Fatalf("answer = %+v", want)
		}
		if line := "berth: create-session: e2e-gl: " + want.UnsuccessfulList[0].FailureReason + "\n"; stderr != line {
			t.Errorf("stderr %q, want %q", stderr, line)
		}
		t.Logf("failure reason: %s", want.UnsuccessfulList[0].FailureReason)
	})

	t.Run("sessions READY", func(t *testing.T) {
		b.waitState(t, two, api.StateReady, 45*time.Second)
		b.waitState(t, three, api.StateReady, 45*time.Second)
	})
	if t.Failed() {
		return
	}

	// A second server, for paging through describe-servers. It starts after
	// the last create, so no session lands on it.
	sim := b.startAgent(t, "sim", "sim", nil)

	t.Run("describe-sessions", func(t *testing.T) {
		owner := []api.KeyValuePair{{Key: "owner", Value: e2eUser}}
		one := 1
		var next string
		for _, c := range []struct {
			args []string
			req  api.DescribeSessionsRequest
		}{
			{nil, api.DescribeSessionsRequest{}},
			{[]string{"--session-ids", full + "," + two}, api.DescribeSessionsRequest{SessionIds: []string{full, two}}},
			{[]string{"--session-ids", full, "--session-ids", three}, api.DescribeSessionsRequest{SessionIds: []string{full, three}}},
			{[]string{"--owner", e2eUser}, api.DescribeSessionsRequest{Filters: owner}},
			{[]string{"--owner", e2eUser, "--max-results", "1"}, api.DescribeSessionsRequest{Filters: owner, MaxResults: &one}},
			{[]string{"--owner", e2eUser, "--max-results", "1", "--next-token", "NEXT"}, api.DescribeSessionsRequest{Filters: owner, MaxResults: &one, NextToken: "NEXT"}},
		} {
			args := append([]string{"describe-sessions"}, c.args...)
			if i := slices.Index(args, "NEXT"); i >= 0 {
				if next == "" {
					t.Fatal("no NextToken from the page before")
				}
				args[i], c.req.NextToken = next, next
			}
			what := strings.Join(args, " ")
			out, stderr, code, calls := rec.run(t, b, args...)
			if code != 0 {
				t.Fatalf("%s: exit %d: %s", what, code, stderr)
			}
			last := printedAnswer(t, what, out, calls, "POST", "/describeSessions")
			if got := strictDecode[api.DescribeSessionsRequest](t, what+": request", last.req); !reflect.DeepEqual(*got, c.req) {
				t.Errorf("%s: request %s", what, last.req)
			}
			want, err := b.client.DescribeSessions(ctx, c.req)
			if err != nil {
				t.Fatal(err)
			}
			sameAnswer(t, what, out, want)
			if c.req.MaxResults != nil && c.req.NextToken == "" {
				if want.NextToken == "" || len(want.Sessions) != 1 {
					t.Fatalf("%s: a first page of 1 of 3 sessions: %+v", what, want)
				}
				next = want.NextToken
			}
		}

		// --all follows NextToken: every page as one answer.
		out, stderr, code, calls := rec.run(t, b, "describe-sessions", "--owner", e2eUser, "--all", "--max-results", "1")
		if code != 0 {
			t.Fatalf("--all: exit %d: %s", code, stderr)
		}
		if len(calls) != 3 {
			t.Errorf("--all: %d calls for 3 sessions, one per page", len(calls))
		}
		all := &api.DescribeSessionsResponse{}
		req := api.DescribeSessionsRequest{Filters: owner, MaxResults: &one}
		for {
			page, err := b.client.DescribeSessions(ctx, req)
			if err != nil {
				t.Fatal(err)
			}
			all.Sessions = append(all.Sessions, page.Sessions...)
			if req.NextToken = page.NextToken; req.NextToken == "" {
				break
			}
		}
		if len(all.Sessions) != 3 {
			t.Errorf("api: %d sessions of %s, want 3", len(all.Sessions), e2eUser)
		}
		sameAnswer(t, "describe-sessions --all", out, all)
		if strings.Contains(out, "NextToken") {
			t.Errorf("--all output has a NextToken:\n%s", out)
		}

		out, _, code, _ = rec.run(t, b, "describe-sessions", "--output", "table", "--session-ids", full)
		if code != 0 || !regexp.MustCompile(`(?m)^`+full+` +e2e-full +`+e2eUser+` +VIRTUAL +READY +- +\S+ +0 +`).MatchString(out) ||
			!strings.HasSuffix(out, "\n(1 session)\n") {
			t.Errorf("table: exit %d\n%s", code, out)
		}
		out, _, code, _ = rec.run(t, b, "describe-sessions", "--output", "table", "--owner", e2eUser, "--max-results", "1")
		if code != 0 || !strings.HasSuffix(out, "(1 session)\nmore: --next-token "+next+"\n") {
			t.Errorf("table of a partial page: exit %d\n%s", code, out)
		}
		out, _, code, _ = rec.run(t, b, "describe-sessions", "--output", "table", "--owner", e2eUser, "--max-results", "1", "--all")
		if code != 0 || !strings.HasSuffix(out, "(3 sessions)\n") {
			t.Errorf("table --all: exit %d\n%s", code, out)
		}
	})

	t.Run("describe-servers", func(t *testing.T) {
		one := 1
		var next string
		for _, c := range []struct {
			args []string
			req  api.DescribeServersRequest
		}{
			{nil, api.DescribeServersRequest{}},
			{[]string{"--server-ids", vnc.serverID}, api.DescribeServersRequest{ServerIds: []string{vnc.serverID}}},
			{[]string{"--server-ids", vnc.serverID + "," + sim.serverID}, api.DescribeServersRequest{ServerIds: []string{vnc.serverID, sim.serverID}}},
			{[]string{"--max-results", "1"}, api.DescribeServersRequest{MaxResults: &one}},
			{[]string{"--max-results", "1", "--next-token", "NEXT"}, api.DescribeServersRequest{MaxResults: &one, NextToken: "NEXT"}},
		} {
			args := append([]string{"describe-servers"}, c.args...)
			if i := slices.Index(args, "NEXT"); i >= 0 {
				if next == "" {
					t.Fatal("no NextToken from the page before")
				}
				args[i], c.req.NextToken = next, next
			}
			what := strings.Join(args, " ")
			out, stderr, code, calls := rec.run(t, b, args...)
			if code != 0 {
				t.Fatalf("%s: exit %d: %s", what, code, stderr)
			}
			last := printedAnswer(t, what, out, calls, "POST", "/describeServers")
			if got := strictDecode[api.DescribeServersRequest](t, what+": request", last.req); !reflect.DeepEqual(*got, c.req) {
				t.Errorf("%s: request %s", what, last.req)
			}
			want, err := b.client.DescribeServers(ctx, c.req)
			if err != nil {
				t.Fatal(err)
			}
			sameAnswer(t, what, out, want)
			if c.req.MaxResults != nil && c.req.NextToken == "" {
				if want.NextToken == "" || len(want.Servers) != 1 {
					t.Fatalf("%s: a first page of 1 of 2 servers: %+v", what, want)
				}
				next = want.NextToken
			}
			if c.req.NextToken != "" && (want.NextToken != "" || len(want.Servers) != 1) {
				t.Errorf("%s: the last page of 1 of 2 servers: %+v", what, want)
			}
		}
		out, stderr, code, calls := rec.run(t, b, "describe-servers", "--all", "--max-results", "1")
		if code != 0 {
			t.Fatalf("--all: exit %d: %s", code, stderr)
		}
		if len(calls) != 2 {
			t.Errorf("--all: %d calls for 2 servers, one per page", len(calls))
		}
		want, err := b.client.DescribeServers(ctx, api.DescribeServersRequest{})
		if err != nil {
			t.Fatal(err)
		}
		sameAnswer(t, "describe-servers --all", out, want)
		var vs api.Server
		for _, s := range want.Servers {
			if s.Id == vnc.serverID {
				vs = s
			}
		}
		if vs.Availability != api.AvailabilityAvailable || vs.VirtualSessionCount != 3 || vs.Port != strconv.Itoa(vnc.webPort) {
			t.Errorf("vnc server = %+v", vs)
		}

		out, _, code, _ = rec.run(t, b, "describe-servers", "--output", "table")
		if code != 0 || !regexp.MustCompile(`(?m)^`+vnc.serverID+` .* AVAILABLE +- +0 +3 `).MatchString(out) ||
			!regexp.MustCompile(`(?m)^`+sim.serverID+` .* AVAILABLE `).MatchString(out) || !strings.HasSuffix(out, "\n(2 servers)\n") {
			t.Errorf("table: exit %d\n%s", code, out)
		}
		out, _, code, _ = rec.run(t, b, "describe-servers", "--output", "table", "--max-results", "1")
		if code != 0 || !strings.HasSuffix(out, "(1 server)\nmore: --next-token "+next+"\n") {
			t.Errorf("table of a partial page: exit %d\n%s", code, out)
		}
		out, _, code, _ = rec.run(t, b, "describe-servers", "--output", "table", "--max-results", "1", "--all")
		if code != 0 || !strings.HasSuffix(out, "(2 servers)\n") {
			t.Errorf("table --all: exit %d\n%s", code, out)
		}
	})

	t.Run("get-session-connection-data", func(t *testing.T) {
		out, stderr, code, calls := rec.run(t, b, "get-session-connection-data", "--session-id", full, "--user", e2eUser)
		if code != 0 {
			t.Fatalf("exit %d: %s", code, stderr)
		}
		printedAnswer(t, "get-session-connection-data", out, calls, "GET", "/sessionConnectionData/"+full+"/"+e2eUser)
		want, err := b.client.GetSessionConnectionData(ctx, full, e2eUser)
		if err != nil {
			t.Fatal(err)
		}
		sameAnswer(t, "get-session-connection-data", out, want)
		if got := strictDecode[api.GetSessionConnectionDataResponse](t, "output", []byte(out)); got.ConnectionToken == "" || got.Session.Id != full {
			t.Errorf("connection data = %+v", got)
		}

		out, stderr, code = b.run(t, nil, "get-session-connection-data", "--session-id", full, "--user", e2eUser, "--url")
		if code != 0 {
			t.Fatalf("--url: exit %d: %s", code, stderr)
		}
		m := regexp.MustCompile(`^https://([^/?#]+):(\d+)/\?authToken=([^#&]+)#(.+)\n$`).FindStringSubmatch(out)
		if m == nil || m[2] != strconv.Itoa(vnc.webPort) || m[4] != full || m[1] != want.Session.Server.Ip {
			t.Fatalf("--url printed %q", out)
		}
		tok, err := url.QueryUnescape(m[3])
		if err != nil {
			t.Fatal(err)
		}
		same := *want
		same.ConnectionToken = tok
		if u := api.ConnectionURL(&same); out != u+"\n" {
			t.Errorf("--url printed %q, want %q", out, u)
		}

		out, _, code = b.run(t, nil, "--output", "table", "get-session-connection-data", "--session-id", full, "--user", e2eUser)
		if code != 0 || !regexp.MustCompile(`(?m)^Session: +`+full+`$`).MatchString(out) ||
			!regexp.MustCompile(`(?m)^URL: +https://.*#`+full+`$`).MatchString(out) {
			t.Errorf("table: exit %d\n%s", code, out)
		}
	})

	t.Run("update-session-permissions", func(t *testing.T) {
		// carol may not connect under the owner-only permissions of the create.
		_, stderr, code := b.run(t, nil, "get-session-connection-data", "--session-id", full, "--user", "carol")
		_, apiErr := b.client.GetSessionConnectionData(ctx, full, "carol")
		var ae *api.Error
		if !errors.As(apiErr, &ae) {
			t.Fatalf("api: carol got connection data before the update (err %v)", apiErr)
		}
		if want := "berth: get-session-connection-data: " + apiErr.Error() + "\n"; code != 1 || stderr != want {
			t.Errorf("before the update: exit %d, stderr %q; want 1, %q", code, stderr, want)
		}

		for _, opt := range []string{"--permission-file", "--permissions-file"} {
			out, stderr, code, calls := rec.run(t, b, "update-session-permissions", "--session-id", full, "--owner", e2eUser, opt, teamFile)
			if code != 0 || stderr != "" {
				t.Fatalf("%s: exit %d, stderr %q\n%s", opt, code, stderr, out)
			}
			last := printedAnswer(t, "update-session-permissions "+opt, out, calls, "PUT", "/sessionPermissions")
			wantReq := []api.UpdateSessionPermissionsRequest{{SessionId: full, Owner: e2eUser, PermissionsFile: base64.StdEncoding.EncodeToString([]byte(teamPerm))}}
			if got := strictDecode[[]api.UpdateSessionPermissionsRequest](t, "request", last.req); !reflect.DeepEqual(*got, wantReq) {
				t.Errorf("%s: request %s", opt, last.req)
			}
			want, err := b.client.UpdateSessionPermissions(ctx, wantReq)
			if err != nil {
				t.Fatal(err)
			}
			sameAnswer(t, "update-session-permissions "+opt, out, want)
			if len(want.SuccessfulList) != 1 || want.SuccessfulList[0].SessionId != full || len(want.UnsuccessfulList) != 0 {
				t.Errorf("answer = %+v", want)
			}
		}

		out, stderr, code, calls := rec.run(t, b, "get-session-connection-data", "--session-id", full, "--user", "carol")
		if code != 0 {
			t.Fatalf("after the update: exit %d: %s", code, stderr)
		}
		printedAnswer(t, "get-session-connection-data --user carol", out, calls, "GET", "/sessionConnectionData/"+full+"/carol")
		want, err := b.client.GetSessionConnectionData(ctx, full, "carol")
		if err != nil {
			t.Fatal(err)
		}
		sameAnswer(t, "get-session-connection-data --user carol", out, want)
	})

	t.Run("get-session-screenshots", func(t *testing.T) {
		w, h := int64(320), int64(200)
		out, stderr, code, calls := rec.run(t, b, "get-session-screenshots", "--session-ids", full+","+two, "--max-width", "320", "--max-height", "200")
		if code != 0 {
			t.Fatalf("exit %d: %s", code, stderr)
		}
		last := printedAnswer(t, "get-session-screenshots", out, calls, "POST", "/getSessionScreenshots")
		req := []api.GetSessionScreenshotRequest{{SessionId: full, MaxWidth: &w, MaxHeight: &h}, {SessionId: two, MaxWidth: &w, MaxHeight: &h}}
		if got := strictDecode[[]api.GetSessionScreenshotRequest](t, "request", last.req); !reflect.DeepEqual(*got, req) {
			t.Errorf("request %s", last.req)
		}
		want, err := b.client.GetSessionScreenshots(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		sameAnswer(t, "get-session-screenshots", out, want)
		got := strictDecode[api.GetSessionScreenshotsResponse](t, "output", []byte(out))
		if len(got.SuccessfulList) != 2 || len(got.UnsuccessfulList) != 0 {
			t.Fatalf("answer: %d successful, %+v unsuccessful", len(got.SuccessfulList), got.UnsuccessfulList)
		}
		for _, s := range got.SuccessfulList {
			if len(s.SessionScreenshot.Images) == 0 {
				t.Fatalf("no image for %s", s.SessionScreenshot.SessionId)
			}
			for _, img := range s.SessionScreenshot.Images {
				data, err := base64.StdEncoding.DecodeString(img.Data)
				if err != nil {
					t.Fatal(err)
				}
				cfg, format, err := image.DecodeConfig(bytes.NewReader(data))
				if err != nil || !strings.EqualFold(format, img.Format) || cfg.Width < 1 || cfg.Width > 320 || cfg.Height < 1 || cfg.Height > 200 {
					t.Errorf("%s: image %s %dx%d (err %v), want a %s within 320x200", s.SessionScreenshot.SessionId, format, cfg.Width, cfg.Height, err, img.Format)
				}
			}
		}

		dir := filepath.Join(t.TempDir(), "shots")
		out, stderr, code = b.run(t, nil, "get-session-screenshots", "--session-ids", full, "--max-width", "320", "--max-height", "200", "--out", dir)
		if code != 0 {
			t.Fatalf("--out: exit %d: %s", code, stderr)
		}
		paths := strings.Fields(out)
		if len(paths) == 0 || !regexp.MustCompile(`^`+regexp.QuoteMeta(filepath.Join(dir, full))+`-1\.(png|jpeg)$`).MatchString(paths[0]) {
			t.Fatalf("--out printed %q", out)
		}
		for _, p := range paths {
			f, err := os.Open(p)
			if err != nil {
				t.Fatal(err)
			}
			cfg, _, err := image.DecodeConfig(f)
			f.Close()
			if err != nil || cfg.Width > 320 || cfg.Height > 200 {
				t.Errorf("%s: %dx%d, err %v", p, cfg.Width, cfg.Height, err)
			}
		}
	})

	t.Run("close-servers and open-servers", func(t *testing.T) {
		out, stderr, code, calls := rec.run(t, b, "close-servers", "--server-ids", vnc.serverID)
		if code != 1 {
			t.Fatalf("without --force: exit %d, want 1: %s", code, stderr)
		}
		printedAnswer(t, "close-servers", out, calls, "POST", "/closeServers")
		want, err := b.client.CloseServers(ctx, []api.CloseServerRequest{{ServerId: vnc.serverID}})
		if err != nil {
			t.Fatal(err)
		}
		sameAnswer(t, "close-servers", out, want)
		if len(want.UnsuccessfulList) != 1 || want.UnsuccessfulList[0].FailureCode != api.FailureCodeServerHasSessions {
			t.Fatalf("answer = %+v", want)
		}
		if line := "berth: close-servers: " + vnc.serverID + ": DCV_SERVER_HAS_SESSIONS: " + want.UnsuccessfulList[0].FailureReason + "\n"; stderr != line {
			t.Errorf("stderr %q, want %q", stderr, line)
		}

		out, stderr, code, calls = rec.run(t, b, "close-servers", "--server-ids", vnc.serverID, "--force")
		if code != 0 || stderr != "" {
			t.Fatalf("--force: exit %d, stderr %q", code, stderr)
		}
		last := printedAnswer(t, "close-servers --force", out, calls, "POST", "/closeServers")
		if got := strictDecode[[]api.CloseServerRequest](t, "request", last.req); !reflect.DeepEqual(*got, []api.CloseServerRequest{{ServerId: vnc.serverID, Force: true}}) {
			t.Errorf("request %s", last.req)
		}
		closed := strictDecode[api.CloseServersResponse](t, "output", []byte(out))
		if !reflect.DeepEqual(closed.SuccessfulList, []api.ServerIdResult{{ServerId: vnc.serverID}}) || len(closed.UnsuccessfulList) != 0 {
			t.Errorf("answer = %s", out)
		}
		again, err := b.client.CloseServers(ctx, []api.CloseServerRequest{{ServerId: vnc.serverID, Force: true}})
		if err != nil {
			t.Fatal(err)
		}
		sameAnswer(t, "close-servers --force", out, again)
		ds, err := b.client.DescribeServers(ctx, api.DescribeServersRequest{ServerIds: []string{vnc.serverID}})
		if err != nil || len(ds.Servers) != 1 || ds.Servers[0].Availability != api.AvailabilityUnavailable || ds.Servers[0].UnavailabilityReason != api.ReasonServerClosed {
			t.Errorf("after close-servers --force: %+v (err %v)", ds, err)
		}

		out, stderr, code, calls = rec.run(t, b, "open-servers", "--server-ids", vnc.serverID)
		if code != 0 || stderr != "" {
			t.Fatalf("open-servers: exit %d, stderr %q", code, stderr)
		}
		printedAnswer(t, "open-servers", out, calls, "POST", "/openServers")
		opened, err := b.client.OpenServers(ctx, []api.OpenServerRequest{{ServerId: vnc.serverID}})
		if err != nil {
			t.Fatal(err)
		}
		sameAnswer(t, "open-servers", out, opened)
		if !reflect.DeepEqual(opened.SuccessfulList, []api.ServerIdResult{{ServerId: vnc.serverID}}) {
			t.Errorf("answer = %+v", opened)
		}
		ds, err = b.client.DescribeServers(ctx, api.DescribeServersRequest{ServerIds: []string{vnc.serverID}})
		if err != nil || len(ds.Servers) != 1 || ds.Servers[0].Availability != api.AvailabilityAvailable {
			t.Errorf("after open-servers: %+v (err %v)", ds, err)
		}
	})

	t.Run("delete-session", func(t *testing.T) {
		for _, c := range []struct {
			id, state string
			force     bool
		}{
			{two, api.StateDeleting, false},
			{three, api.StateDeleted, true},
		} {
			args := []string{"delete-session", "--session-id", c.id, "--owner", e2eUser}
			if c.force {
				args = append(args, "--force")
			}
			what := strings.Join(args[:1], " ")
			if c.force {
				what += " --force"
			}
			out, stderr, code, calls := rec.run(t, b, args...)
			if code != 0 || stderr != "" {
				t.Fatalf("%s: exit %d, stderr %q", what, code, stderr)
			}
			last := printedAnswer(t, what, out, calls, "POST", "/deleteSessions")
			if got := strictDecode[[]api.DeleteSessionRequest](t, "request", last.req); !reflect.DeepEqual(*got, []api.DeleteSessionRequest{{SessionId: c.id, Owner: e2eUser, Force: c.force}}) {
				t.Errorf("%s: request %s", what, last.req)
			}
			got := strictDecode[api.DeleteSessionsResponse](t, "output", []byte(out))
			if !reflect.DeepEqual(got.SuccessfulList, []api.DeleteSessionSuccess{{SessionId: c.id, State: c.state}}) || len(got.UnsuccessfulList) != 0 {
				t.Errorf("%s: answer %s", what, out)
			}
			s := b.waitState(t, c.id, api.StateDeleted, 30*time.Second)
			if reason := "deleted by request"; c.force {
				if reason += " (Force)"; s.StateReason != reason {
					t.Errorf("%s: StateReason %q, want %q", what, s.StateReason, reason)
				}
			}
			// Deleting it again: both berth and api.Client get the refusal.
			out, stderr, code = b.run(t, nil, args...)
			want, err := b.client.DeleteSessions(ctx, []api.DeleteSessionRequest{{SessionId: c.id, Owner: e2eUser, Force: c.force}})
			if err != nil {
				t.Fatal(err)
			}
			if code != 1 || len(want.UnsuccessfulList) != 1 {
				t.Fatalf("%s again: exit %d (%s), api %+v", what, code, stderr, want)
			}
			sameAnswer(t, what+" again", out, want)
		}
		// The agent tore both down: only the full session's record is left.
		poll.Until(t, 20*time.Second, "the agent to remove the deleted sessions", func() bool {
			recs := sessionRecords(vnc)
			return len(recs) == 1 && filepath.Base(recs[0]) == full+".json"
		})
	})

	t.Run("delete-session the last", func(t *testing.T) {
		out, stderr, code, calls := rec.run(t, b, "delete-session", "--session-id", full, "--owner", e2eUser)
		if code != 0 || stderr != "" {
			t.Fatalf("exit %d, stderr %q", code, stderr)
		}
		printedAnswer(t, "delete-session", out, calls, "POST", "/deleteSessions")
		b.waitState(t, full, api.StateDeleted, 30*time.Second)
		poll.Until(t, 20*time.Second, "the agent to remove every session", func() bool { return len(sessionRecords(vnc)) == 0 })
	})
}

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/berth-dev/berth/api"
)

// TestE2E_DCV drives a real broker and a real agent with the dcv driver
// through the API (acceptance 1 of issue 5). Amazon DCV cannot be installed
// where berth is tested, so agent.dcv_root is the recorded `dcv` stand-in
// (internal/driver/dcv/testdata/fakedcv), which checks every argument list
// against DCV's documented syntax and keeps its sessions in a JSON file.
// A session is created (Name, Owner, PermissionsFile, AutorunFile with
// arguments), described with the server's dcv.conf endpoints (the defaults:
// HTTP on 8443, path "/"), screenshotted, given new permissions and deleted;
// then, after the agent restarts with `dcv create-session` failing, a
// create ends DELETED with dcv's message as its StateReason.
func TestE2E_DCV(t *testing.T) {
	e := mustStartDCVEnv(t, "")

	t.Run("lifecycle", func(t *testing.T) {
		args := []string{"two words", `it's "quoted"`, "$HOME"}
		s := e.MustCreate(t, api.CreateSessionRequest{
			Name:                 "e2e dcv",
			Owner:                user1,
			Type:                 api.TypeVirtual,
			PermissionsFile:      permissions("%owner% allow builtin"),
			AutorunFile:          "args.sh",
			AutorunFileArguments: args,
		})[0]
		got := e.MustWaitState(t, s.Id, api.StateReady, readyTimeout)
		if got.Name != "e2e dcv" || got.Owner != user1 || !strings.EqualFold(got.Type, "Virtual") {
			t.Errorf("DescribeSessions: name %q owner %q type %q", got.Name, got.Owner, got.Type)
		}
		srv := got.Server
		if srv == nil {
			t.Fatal("DescribeSessions shows no Server for the READY session")
		}
		if srv.Port != "8443" || srv.WebUrlPath != "/" {
			t.Errorf("session's server: Port %q WebUrlPath %q, want dcv.conf's defaults 8443 and /", srv.Port, srv.WebUrlPath)
		}
		if len(srv.Endpoints) != 1 || srv.Endpoints[0].Port != 8443 || srv.Endpoints[0].Protocol != "HTTP" || srv.Endpoints[0].WebUrlPath != "/" {
			t.Errorf("session's server endpoints %+v, want one HTTP endpoint on 8443 at /", srv.Endpoints)
		}

		// What the agent asked of dcv: the fake recorded the session's
		// owner, name, permissions and init (the autorun wrapper).
		fs := e.fakeSession(t, s.Id)
		if fs == nil {
			t.Fatalf("the fake dcv has no session %s", s.Id)
		}
		if fs.Owner != user1 || fs.User != user1 || fs.Name != "e2e dcv" || fs.Type != "virtual" {
			t.Errorf("fake dcv session: owner %q user %q name %q type %q", fs.Owner, fs.User, fs.Name, fs.Type)
		}
		if !strings.Contains(fs.FakePermissions, "%owner% allow builtin") {
			t.Errorf("fake dcv session permissions %q, want the PermissionsFile's", fs.FakePermissions)
		}
		if fs.FakeInit == "" {
			t.Error("create-session was given no --init (the autorun wrapper)")
		} else if b, err := os.ReadFile(fs.FakeInit); err != nil {
			t.Errorf("read the autorun wrapper: %v", err)
		} else {
			w := string(b)
			if !strings.Contains(w, filepath.Join(folders, "autorun", "args.sh")) {
				t.Errorf("autorun wrapper does not exec args.sh:\n%s", w)
			}
			if !strings.Contains(w, `'two words'`) || !strings.Contains(w, `'$HOME'`) {
				t.Errorf("autorun wrapper does not quote the arguments:\n%s", w)
			}
		}

		img := mustScreenshot(t, e, s.Id, 640, 480)
		if b := img.Bounds(); b.Dx() > 640 || b.Dy() > 480 || b.Dx() == 0 {
			t.Errorf("screenshot is %dx%d, want at most 640x480", b.Dx(), b.Dy())
		}

		mustSetPermissions(t, e, s.Id, user1, permissions("%owner% allow builtin", user2+" allow display"))
		if fs := e.fakeSession(t, s.Id); fs == nil || !strings.Contains(fs.FakePermissions, user2+" allow display") {
			t.Errorf("after UpdateSessionPermissions the fake dcv has permissions %v", fs)
		}

		e.MustDelete(t, s.Id)
		if fs := e.fakeSession(t, s.Id); fs != nil {
			t.Errorf("session %s is DELETED but the fake dcv still has it", s.Id)
		}
	})

	t.Run("create fails", func(t *testing.T) {
		e.Agent.Stop(t)
		t.Setenv("FAKEDCV_FAIL", "create-session:license expired")
		e.MustStartAgent(t)
		e.mustWaitDCVServer(t)
		// The broker may still hold the agent's old connection for a
		// moment; the create is retried until the new agent answers it.
		deadline := time.Now().Add(readyTimeout)
		for {
			s := e.MustCreate(t, api.CreateSessionRequest{Name: "e2e dcv fail", Owner: user1, Type: api.TypeVirtual, DisableRetryOnFailure: true})[0]
			got := e.MustWaitStateAny(t, s.Id, api.StateDeleted, readyTimeout)
			if strings.Contains(got.StateReason, "license expired") {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("session %s is DELETED with reason %q, want one containing dcv's \"license expired\"", s.Id, got.StateReason)
			}
			t.Logf("session %s DELETED with reason %q; retrying", s.Id, got.StateReason)
		}
	})
}

// mustStartDCVEnv is MustStartEnv with the dcv driver: it builds the
// recorded dcv stand-in into the test's directory, writes an agent.conf
// with driver = 'dcv' and dcv_root naming it, and starts the broker and the
// agent with FAKEDCV_STATE (and FAKEDCV_FAIL when fail is not empty) in the
// environment, which the agent passes on to every dcv it runs.
func mustStartDCVEnv(tb testing.TB, fail string) *Env {
	tb.Helper()
	bin := MustBuild(tb)
	dir := tb.TempDir()
	e := &Env{
		Dir:        dir,
		Bin:        bin,
		BrokerDir:  filepath.Join(dir, "broker"),
		BrokerConf: filepath.Join(dir, "broker.properties"),
		AgentConf:  filepath.Join(dir, "agent.conf"),
		sessions:   map[string]string{},
		opts:       EnvOptions{LogLevel: "info"},
	}
	e.CAFile = filepath.Join(e.BrokerDir, "ca.pem")

	root, err := repoRoot()
	if err != nil {
		tb.Fatal(err)
	}
	goBin, err := exec.LookPath("go")
	if err != nil {
		goBin = "/usr/local/go/bin/go"
	}
	dcvPath := filepath.Join(dir, "dcv")
	cmd := exec.Command(goBin, "build", "-o", dcvPath, "./internal/driver/dcv/testdata/fakedcv")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		tb.Fatalf("build the fake dcv: %v\n%s", err, out)
	}
	// t.Setenv: the broker and agent processes inherit the test's
	// environment; it is restored at cleanup.
	setenv := tb.(interface{ Setenv(k, v string) })
	setenv.Setenv("FAKEDCV_STATE", filepath.Join(dir, "fakedcv-state.json"))
	setenv.Setenv("FAKEDCV_LOG", filepath.Join(dir, "fakedcv.log"))
	setenv.Setenv("FAKEDCV_FAIL", fail)
	setenv.Setenv("FAKEDCV_HANG", "")

	tb.Cleanup(func() {
		if tb.Failed() {
			for _, p := range []*Process{e.Broker, e.Agent} {
				if p != nil {
					tb.Logf("last lines of %s's log %s:\n%s", p.Name, p.Log, logTail(p.Log, 40))
				}
			}
			tb.Logf("last dcv invocations:\n%s", logTail(filepath.Join(dir, "fakedcv.log"), 20))
		}
	})
	e.mustStartBroker(tb)
	e.mustRegisterClient(tb)
	e.mustWriteDCVAgentConf(tb, dcvPath)
	e.MustStartAgent(tb)
	tb.Cleanup(func() {
		if e.Agent != nil {
			e.Agent.Stop(tb)
		}
	})
	// Registered last, so it runs first: sessions go while the agent runs.
	tb.Cleanup(func() { e.deleteAll(tb) })
	e.mustWaitDCVServer(tb)
	return e
}

// mustWriteDCVAgentConf writes agent.conf for the dcv driver on dcvPath,
// with the shared init/autorun/tags folders and a state directory of its own.
func (e *Env) mustWriteDCVAgentConf(tb testing.TB, dcvPath string) {
	tb.Helper()
	_, port, _ := net.SplitHostPort(e.AgentAddr)
	conf := fmt.Sprintf(`# berth e2e agent (dcv driver, recorded dcv)
version = '0.1'
[agent]
broker_host = '127.0.0.1'
broker_port = %s
ca_file = '%s'
software_statement_path = '%s'
driver = 'dcv'
dcv_root = '%s'
state_dir = '%s'
init_folder = '%s'
autorun_folder = '%s'
tags_folder = '%s'
broker_update_interval = %d
[log]
level = 'info'
`, port, e.CAFile, filepath.Join(e.BrokerDir, "agent-software-statement"), dcvPath, filepath.Join(e.Dir, "agent"),
		filepath.Join(folders, "init"), filepath.Join(folders, "autorun"), filepath.Join(folders, "tags"),
		int(updateInterval/time.Second))
	if err := os.WriteFile(e.AgentConf, []byte(conf), 0o600); err != nil {
		tb.Fatal(err)
	}
}

// mustWaitDCVServer waits until the broker lists the agent's server as
// AVAILABLE with dcv.conf's default web port (8443; there is no dcv.conf
// here), and returns it.
func (e *Env) mustWaitDCVServer(tb testing.TB) api.Server {
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
			last = fmt.Sprintf("%d server(s), the first %s %s port %s", len(out.Servers), s.Availability, s.UnavailabilityReason, s.Port)
			if len(out.Servers) == 1 && s.Availability == api.AvailabilityAvailable && s.Port == "8443" {
				return s
			}
		}
		if time.Now().After(deadline) {
			tb.Fatalf("the agent's server was not AVAILABLE with port 8443 within 30 s (last: %s)", last)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// MustWaitStateAny polls DescribeSessions until the session is in state
// want, whatever it passes through, and fails after timeout.
func (e *Env) MustWaitStateAny(tb testing.TB, id, want string, timeout time.Duration) api.Session {
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
		} else {
			lastErr = err
		}
		if time.Now().After(deadline) {
			tb.Fatalf("session %s did not reach %s within %s: last state %s (reason %q), last error %v",
				id, want, timeout, last.State, last.StateReason, lastErr)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// fakeDCVSession is a session in the fake dcv's state file: the keys of
// describe-session, and what create-session and set-permissions were given.
type fakeDCVSession struct {
	ID              string `json:"id"`
	Owner           string `json:"owner"`
	User            string `json:"user"`
	Name            string `json:"name"`
	Type            string `json:"type"`
	FakeInit        string `json:"fake-init"`
	FakePermissions string `json:"fake-permissions"`
}

// fakeSession returns the fake dcv's session id, or nil when it has none.
func (e *Env) fakeSession(tb testing.TB, id string) *fakeDCVSession {
	tb.Helper()
	b, err := readLocked(filepath.Join(e.Dir, "fakedcv-state.json"))
	if err != nil {
		tb.Fatalf("read the fake dcv's state: %v", err)
	}
	var st struct {
		Sessions []*fakeDCVSession `json:"sessions"`
	}
	if err := json.Unmarshal(b, &st); err != nil {
		tb.Fatalf("the fake dcv's state: %v", err)
	}
	for _, s := range st.Sessions {
		if s.ID == id {
			return s
		}
	}
	return nil
}

// readLocked reads the fake dcv's state file under a shared lock: the fake
// rewrites it in place under an exclusive one, so an unlocked read can see
// it truncated.
func readLocked(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_SH); err != nil {
		return nil, err
	}
	defer syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
	return io.ReadAll(f)
}

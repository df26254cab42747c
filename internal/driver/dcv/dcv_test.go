package dcv

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"image"
	_ "image/jpeg"
	_ "image/png"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/agent"
	"github.com/berth-dev/berth/internal/agentproto"
	"github.com/berth-dev/berth/internal/poll"
)

// fakeDCV is the recorded dcv executable (testdata/fakedcv), built once.
var fakeDCV string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "fakedcv-")
	if err != nil {
		panic(err)
	}
	fakeDCV = filepath.Join(dir, "dcv")
	if out, err := exec.Command("go", "build", "-o", fakeDCV, "./testdata/fakedcv").CombinedOutput(); err != nil {
		os.RemoveAll(dir)
		panic("build testdata/fakedcv: " + err.Error() + "\n" + string(out))
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// env is one test's fake DCV host.
type env struct {
	t        *testing.T
	dir      string
	log      string // FAKEDCV_LOG
	state    string // FAKEDCV_STATE
	init     string // InitFolder
	autorun  string // AutorunFolder
	stateDir string
	d        *Driver
}

func newEnv(t *testing.T, mod func(*Config)) *env {
	t.Helper()
	dir := t.TempDir()
	e := &env{t: t, dir: dir, log: filepath.Join(dir, "argv.log"), state: filepath.Join(dir, "state.json"),
		init: filepath.Join(dir, "init"), autorun: filepath.Join(dir, "autorun"), stateDir: filepath.Join(dir, "state")}
	t.Setenv("FAKEDCV_STATE", e.state)
	t.Setenv("FAKEDCV_LOG", e.log)
	t.Setenv("FAKEDCV_FAIL", "")
	t.Setenv("FAKEDCV_HANG", "")
	for _, d := range []string{e.init, e.autorun} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	// Session users run the wrapper scripts and what they start: the test
	// directory is theirs to traverse, as /run/berth-agent is on a host.
	for _, d := range []string{filepath.Dir(dir), dir} { // t.TempDir's parent too
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	cfg := Config{
		DCVPath: fakeDCV, InitFolder: e.init, AutorunFolder: e.autorun, StateDir: e.stateDir,
		ScriptDir:      filepath.Join(dir, "scripts"),
		CommandTimeout: 10 * time.Second, ConfPath: filepath.Join(dir, "dcv.conf"), PollInterval: time.Hour,
		SessionInit: filepath.Join(dir, "no-dcvsessioninit"),
		Logger:      slog.New(slog.NewTextHandler(io.Discard, nil)),
		// The contract tests use the owner names of a domain-joined DCV
		// host, which this host does not know; the account policy has
		// tests of its own (TestCreate_AccountPolicy).
		Account: acceptAll{},
	}
	if mod != nil {
		mod(&cfg)
	}
	d, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	e.d = d
	return e
}

// acceptAll is an account policy that accepts every owner.
type acceptAll struct{}

func (acceptAll) Check(string) error { return nil }

// calls returns the argument lists the fake received for subcommand sub.
func (e *env) calls(sub string) [][]string {
	e.t.Helper()
	f, err := os.Open(e.log)
	if err != nil {
		return nil
	}
	defer f.Close()
	var out [][]string
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var a []string
		if err := json.Unmarshal(sc.Bytes(), &a); err != nil {
			e.t.Fatal(err)
		}
		if len(a) > 0 && a[0] == sub {
			out = append(out, a)
		}
	}
	return out
}

func (e *env) last(sub string) []string {
	e.t.Helper()
	c := e.calls(sub)
	if len(c) == 0 {
		e.t.Fatalf("the fake never ran %s", sub)
	}
	return c[len(c)-1]
}

// fakeSession is the fake's record of a session.
type fakeSession struct {
	ID, Owner, User, Name, Type string
	Init                        string `json:"fake-init"`
	GL                          string `json:"fake-gl"`
	MCC                         int    `json:"fake-max-concurrent-clients"`
	Permissions                 string `json:"fake-permissions"`
	StorageRoot                 string `json:"storage-root"`
}

func (e *env) fakeSession(id string) *fakeSession {
	e.t.Helper()
	b, err := os.ReadFile(e.state)
	if err != nil {
		e.t.Fatal(err)
	}
	var st struct{ Sessions []*fakeSession }
	if err := json.Unmarshal(b, &st); err != nil {
		e.t.Fatal(err)
	}
	for _, s := range st.Sessions {
		if s.ID == id {
			return s
		}
	}
	return nil
}

// dcv runs the fake directly, as an administrator on the host would.
func (e *env) dcv(args ...string) {
	e.t.Helper()
	if out, err := exec.Command(fakeDCV, args...).CombinedOutput(); err != nil {
		e.t.Fatalf("dcv %q: %v: %s", args, err, out)
	}
}

func writeExec(t *testing.T, path, text string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(text), 0o755); err != nil {
		t.Fatal(err)
	}
}

// TestCreateMapping checks every request field's place in the argument list.
func TestCreateMapping(t *testing.T) {
	e := newEnv(t, nil)
	writeExec(t, filepath.Join(e.init, "desk", "init.sh"), "#!/bin/sh\n")
	ctx := context.Background()
	hazard := `it's a "test" $HOME ` + "`id`" + ` ; rm -rf * \ é`
	tests := []struct {
		name string
		req  agent.CreateRequest
		want []string
	}{
		{"virtual defaults", agent.CreateRequest{ID: "s1", Owner: "alice", Name: "one"},
			[]string{"create-session", "--type", "virtual", "--owner", "alice", "--name", "one", "--user", "alice", "--gl", "off", "s1"}},
		{"console", agent.CreateRequest{ID: "s2", Owner: "bob", Name: "two", Type: "CONSOLE", MaxConcurrentClients: 3},
			[]string{"create-session", "--type", "console", "--owner", "bob", "--name", "two", "--max-concurrent-clients", "3", "s2"}},
		{"everything", agent.CreateRequest{ID: "3f0c-uuid", Owner: "carol", Name: "three", Type: "VIRTUAL", DcvGlEnabled: true,
			StorageRoot: "%home%/files", InitFile: "desk/init.sh", MaxConcurrentClients: 2},
			[]string{"create-session", "--type", "virtual", "--owner", "carol", "--name", "three", "--user", "carol",
				"--init", filepath.Join(e.init, "desk", "init.sh"), "--storage-root", "%home%/files", "--gl", "on", "--max-concurrent-clients", "2", "3f0c-uuid"}},
		{"hazards", agent.CreateRequest{ID: "s4", Owner: `CORP\dave`, Name: hazard, StorageRoot: "/srv/my files/$x"},
			[]string{"create-session", "--type", "virtual", "--owner", `CORP\dave`, "--name", hazard, "--user", `CORP\dave`, "--storage-root", "/srv/my files/$x", "--gl", "off", "s4"}},
		{"name starting with a dash", agent.CreateRequest{ID: "s5", Owner: "eve", Name: "--type=console"},
			[]string{"create-session", "--type", "virtual", "--owner", "eve", "--name=--type=console", "--user", "eve", "--gl", "off", "s5"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if err := e.d.Create(ctx, tc.req); err != nil {
				t.Fatal(err)
			}
			if got := e.last("create-session"); !slices.Equal(got, tc.want) {
				t.Errorf("argv\n got %q\nwant %q", got, tc.want)
			}
			s := e.fakeSession(tc.req.ID)
			if s == nil || s.Name != tc.req.Name || s.Owner != tc.req.Owner {
				t.Errorf("fake session %+v", s)
			}
		})
	}
	// Idempotent: the same ID again is no error.
	if err := e.d.Create(ctx, tests[0].req); err != nil {
		t.Errorf("create again: %v", err)
	}
}

func TestCreateRefusals(t *testing.T) {
	e := newEnv(t, nil)
	writeExec(t, filepath.Join(e.dir, "outside.sh"), "#!/bin/sh\n")
	if err := os.Symlink(filepath.Join(e.dir, "outside.sh"), filepath.Join(e.init, "link.sh")); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(e.init, "noexec.sh"), []byte("#!/bin/sh\n"), 0o644)
	base := agent.CreateRequest{ID: "s1", Owner: "alice"}
	tests := []struct {
		name string
		mod  func(*agent.CreateRequest)
		want string
	}{
		{"dash id", func(r *agent.CreateRequest) { r.ID = "-rf" }, "session ID"},
		{"slash id", func(r *agent.CreateRequest) { r.ID = "a/b" }, "session ID"},
		{"no owner", func(r *agent.CreateRequest) { r.Owner = "" }, "Owner"},
		{"newline name", func(r *agent.CreateRequest) { r.Name = "a\nb" }, "Name"},
		{"long name", func(r *agent.CreateRequest) { r.Name = strings.Repeat("x", 257) }, "Name"},
		{"bad type", func(r *agent.CreateRequest) { r.Type = "WEB" }, "unsupported session type"},
		{"console gl", func(r *agent.CreateRequest) { r.Type = "CONSOLE"; r.DcvGlEnabled = true }, "DcvGlEnabled"},
		{"console autorun", func(r *agent.CreateRequest) { r.Type = "CONSOLE"; r.AutorunFile = "x" }, "AutorunFile"},
		{"init escape", func(r *agent.CreateRequest) { r.InitFile = "../outside.sh" }, "escapes the init folder"},
		{"init absolute", func(r *agent.CreateRequest) { r.InitFile = "/bin/sh" }, "relative"},
		{"init symlink out", func(r *agent.CreateRequest) { r.InitFile = "link.sh" }, "escapes the init folder"},
		{"init not executable", func(r *agent.CreateRequest) { r.InitFile = "noexec.sh" }, "not executable"},
		{"init missing", func(r *agent.CreateRequest) { r.InitFile = "nope.sh" }, "does not exist"},
		{"args without autorun", func(r *agent.CreateRequest) { r.AutorunFileArguments = []string{"x"} }, "without an AutorunFile"},
		{"negative clients", func(r *agent.CreateRequest) { r.MaxConcurrentClients = -1 }, "MaxConcurrentClients"},
	}
	for _, tc := range tests {
		req := base
		tc.mod(&req)
		err := e.d.Create(context.Background(), req)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err %v, want %q", tc.name, err, tc.want)
		}
	}
	if c := e.calls("create-session"); len(c) != 0 {
		t.Errorf("dcv ran for refused requests: %q", c)
	}
}

// TestCreate_OwnerNames: directory-style owner names reach dcv unchanged as
// single arguments; names that could escape a path or a command line are
// refused before dcv runs, with an error that names the field.
func TestCreate_OwnerNames(t *testing.T) {
	e := newEnv(t, nil)
	tests := []struct {
		owner string
		ok    bool
	}{
		{"alice", true},
		{"first.last", true},
		{"user@corp.example", true},
		{`CORP\alice`, true},
		{"svc_build-01", true},
		{"WS01$", true},
		{"", false},
		{"..", false},
		{"../etc/passwd", false},
		{"a/b", false},
		{"a\x00b", false},
		{"a\nb", false},
		{"-rf", false},
		{"--owner=root", false},
		{".hidden", false},
		{"a..b", false},
		{"a b", false},
		{"a;b", false},
		{"$(id)", false},
		{"`id`", false},
		{"a|b", false},
		{"a'b", false},
		{"a$b", false},
		{`\\server\share`, false},
		{`a\b\c`, false},
		{`CORP\`, false},
		{"ünïcode", false},
		{"\xff", false},
		{strings.Repeat("a", 257), false},
	}
	for i, tc := range tests {
		t.Run(fmt.Sprintf("%q", tc.owner), func(t *testing.T) {
			id := fmt.Sprintf("own%d", i)
			for _, typ := range []string{"VIRTUAL", "CONSOLE"} {
				n := len(e.calls("create-session"))
				err := e.d.Create(context.Background(), agent.CreateRequest{ID: id + typ[:1], Owner: tc.owner, Type: typ})
				if !tc.ok {
					if err == nil || !strings.HasPrefix(err.Error(), "Owner ") || !errors.Is(err, agent.ErrInvalidRequest) {
						t.Errorf("%s: err %v, want a refusal that names Owner", typ, err)
					}
					if len(e.calls("create-session")) != n {
						t.Errorf("%s: dcv ran for a refused owner", typ)
					}
					continue
				}
				if err != nil {
					t.Fatalf("%s: %v", typ, err)
				}
				argv := e.last("create-session")
				i := slices.Index(argv, "--owner")
				if i < 0 || argv[i+1] != tc.owner {
					t.Errorf("%s: argv %q, want --owner %q", typ, argv, tc.owner)
				}
				if j := slices.Index(argv, "--user"); (typ == "VIRTUAL") != (j >= 0) || j >= 0 && argv[j+1] != tc.owner {
					t.Errorf("%s: argv %q, want --user %q for virtual sessions only", typ, argv, tc.owner)
				}
				if s := e.fakeSession(id + typ[:1]); s == nil || s.Owner != tc.owner {
					t.Errorf("%s: fake session %+v", typ, s)
				}
				if err := e.d.Delete(context.Background(), id+typ[:1]); err != nil { // one console at a time
					t.Fatal(err)
				}
			}
		})
	}
}

func TestPermissionsFileAtCreate(t *testing.T) {
	e := newEnv(t, nil)
	text := "[groups]\n[permissions]\n%owner% allow builtin\nbob allow display\n"
	if err := e.d.Create(context.Background(), agent.CreateRequest{ID: "p1", Owner: "alice", PermissionsFile: text}); err != nil {
		t.Fatal(err)
	}
	argv := e.last("create-session")
	i := slices.Index(argv, "--permissions-file")
	if i < 0 {
		t.Fatalf("no --permissions-file in %q", argv)
	}
	if !strings.HasPrefix(argv[i+1], e.stateDir+"/") {
		t.Errorf("permissions file %s outside StateDir", argv[i+1])
	}
	if got := e.fakeSession("p1").Permissions; got != text {
		t.Errorf("dcv read %q", got)
	}
	if _, err := os.Stat(argv[i+1]); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("temporary permissions file left behind: %v", err)
	}
}

// TestAutorunWrapper runs the generated init wrapper as the session's owner
// and checks that the autorun program receives exactly the request's
// arguments. The attack: the arguments may be private (a token, a URL), and
// another user of the host reads them from the wrapper; the wrapper is the
// owner's, mode 0700, in a directory that others cannot list.
func TestAutorunWrapper(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: the wrapper belongs to a local user created here")
	}
	newUser(t, "bdcv-owner", []string{"-m", "-s", "/bin/sh"})
	newUser(t, "bdcv-other", []string{"-m", "-s", "/bin/sh"})
	owner, other := ids(t, "bdcv-owner"), ids(t, "bdcv-other")
	for _, withInit := range []bool{true, false} {
		name := "default init"
		if withInit {
			name = "init file"
		}
		t.Run(name, func(t *testing.T) {
			var sessionInit string
			e := newEnv(t, func(c *Config) {
				sessionInit = filepath.Join(filepath.Dir(c.StateDir), "dcvsessioninit")
				c.SessionInit = sessionInit
			})
			outDir := filepath.Join(e.dir, "out")
			if err := os.Mkdir(outDir, 0o777); err != nil {
				t.Fatal(err)
			}
			os.Chmod(outDir, 0o777)
			out := filepath.Join(outDir, "out")
			writeExec(t, sessionInit, "#!/bin/sh\ntouch \"$OUT.default-init\"\n")
			writeExec(t, filepath.Join(e.init, "my init.sh"), "#!/bin/sh\ntouch \"$OUT.init\"\n")
			writeExec(t, filepath.Join(e.autorun, "app's dir", "run.sh"), "#!/bin/sh\nprintf '%s\\0' \"$@\" > \"$OUT\"\n")
			args := []string{"plain", "with space", "it's", `"double"`, "$HOME", "`id`", "$(id)", "a\nb", "back\\slash", "", "'", "*", "-x", "; exit 1"}
			req := agent.CreateRequest{ID: "a1", Owner: "bdcv-owner", AutorunFile: "app's dir/run.sh", AutorunFileArguments: args}
			if withInit {
				req.InitFile = "my init.sh"
			}
			if err := e.d.Create(context.Background(), req); err != nil {
				t.Fatal(err)
			}
			argv := e.last("create-session")
			i := slices.Index(argv, "--init")
			if i < 0 {
				t.Fatalf("no --init in %q", argv)
			}
			script := argv[i+1]
			if script != e.d.scriptPath("a1") {
				t.Errorf("--init %s, want the wrapper", script)
			}
			fi, err := os.Stat(script)
			if err != nil {
				t.Fatal(err)
			}
			if st := fi.Sys().(*syscall.Stat_t); fi.Mode().Perm() != 0o700 || st.Uid != owner.Uid || st.Gid != owner.Gid {
				t.Errorf("wrapper: mode %v uid %d gid %d, want 0700 and the owner's %d:%d", fi.Mode().Perm(), st.Uid, st.Gid, owner.Uid, owner.Gid)
			}
			if fi, err := os.Stat(filepath.Dir(script)); err != nil || fi.Mode().Perm() != 0o711 {
				t.Errorf("script directory: %v, want mode 0711 (%v)", fi.Mode().Perm(), err)
			}
			// Another user can neither read the wrapper nor list the
			// directory's session IDs.
			for _, argv := range [][]string{{"cat", script}, {"ls", filepath.Dir(script)}} {
				cmd := exec.Command(argv[0], argv[1:]...)
				cmd.SysProcAttr = &syscall.SysProcAttr{Credential: other}
				if b, err := cmd.CombinedOutput(); err == nil || !strings.Contains(string(b), "Permission denied") {
					t.Errorf("%q as another user: %v: %s", argv, err, b)
				}
			}
			if e.fakeSession("a1").Init != script {
				t.Errorf("fake recorded init %q", e.fakeSession("a1").Init)
			}
			cmd := exec.Command(script)
			cmd.Env = []string{"OUT=" + out, "PATH=/usr/bin:/bin", "HOME=/nonexistent"}
			cmd.SysProcAttr = &syscall.SysProcAttr{Credential: owner} // as DCV runs it
			if b, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("wrapper: %v: %s", err, b)
			}
			got, err := os.ReadFile(out)
			if err != nil {
				t.Fatal(err)
			}
			want := strings.Join(args, "\x00") + "\x00"
			if string(got) != want {
				t.Errorf("autorun got %q\nwant %q", got, want)
			}
			marker := out + ".default-init"
			if withInit {
				marker = out + ".init"
			}
			poll.Until(t, 5*time.Second, "the init program to run ("+marker+")", func() bool {
				_, err := os.Stat(marker)
				return err == nil
			})
			if err := e.d.Delete(context.Background(), "a1"); err != nil {
				t.Fatal(err)
			}
			if _, err := os.Stat(script); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("wrapper left after delete: %v", err)
			}
		})
	}
}

func TestCreateHangs(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.CommandTimeout = 300 * time.Millisecond })
	t.Setenv("FAKEDCV_HANG", "create-session")
	start := time.Now()
	err := e.d.Create(context.Background(), agent.CreateRequest{ID: "h1", Owner: "alice"})
	if err == nil || err.Error() != "dcv create-session did not answer within 300ms" {
		t.Fatalf("err %v", err)
	}
	if el := time.Since(start); el > 5*time.Second {
		t.Errorf("took %s", el)
	}
}

func TestCreateFails(t *testing.T) {
	e := newEnv(t, nil)
	t.Setenv("FAKEDCV_FAIL", "create-session:Could not create session. No license available\n\tretry later")
	err := e.d.Create(context.Background(), agent.CreateRequest{ID: "f1", Owner: "alice"})
	want := "dcv create-session failed: Could not create session. No license available; retry later"
	if err == nil || err.Error() != want {
		t.Fatalf("err %v, want %q", err, want)
	}
	t.Setenv("FAKEDCV_FAIL", "create-session:"+strings.Repeat("x", 5000))
	err = e.d.Create(context.Background(), agent.CreateRequest{ID: "f1", Owner: "alice"})
	if err == nil || len(err.Error()) > maxReasonLen+64 {
		t.Errorf("long reason not bounded: %d bytes", len(err.Error()))
	}
	e.d.cfg.DCVPath = filepath.Join(e.dir, "missing-dcv")
	err = e.d.Create(context.Background(), agent.CreateRequest{ID: "f1", Owner: "alice"})
	if err == nil || !strings.Contains(err.Error(), "could not start") {
		t.Errorf("missing dcv: %v", err)
	}
}

// TestFakeChecksSyntax shows that the recorded dcv refuses what the real one
// would.
func TestFakeChecksSyntax(t *testing.T) {
	e := newEnv(t, nil)
	for _, args := range [][]string{
		{"create-session", "--typo", "x", "s1"},
		{"create-session", "--type", "web", "s1"},
		{"create-session", "--gl", "yes", "--type", "virtual", "s1"},
		{"create-session", "--max-concurrent-clients", "many", "s1"},
		{"create-session", "--type", "console", "--user", "u", "s1"},
		{"create-session", "a", "b"},
		{"get-screenshot", "--format", "GIF", "s1"},
		{"set-permissions", "--session", "s1"},
		{"list-sessions", "extra"},
	} {
		cmd := exec.Command(fakeDCV, args...)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		err := cmd.Run()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 2 || stderr.Len() == 0 {
			t.Errorf("%q: %v %q", args, err, stderr.String())
		}
	}
	_ = e
}

func TestSessionsAndDescribe(t *testing.T) {
	e := newEnv(t, nil)
	ctx := context.Background()
	if err := e.d.Create(ctx, agent.CreateRequest{ID: "b1", Owner: "alice", Name: "broker's", StorageRoot: "/data"}); err != nil {
		t.Fatal(err)
	}
	e.dcv("create-session", "--type", "console", "--owner", "root", "console") // created on the host
	list, err := e.d.Sessions(ctx)
	if err != nil {
		t.Fatal(err)
	}
	slices.SortFunc(list, func(a, b agentproto.Session) int { return strings.Compare(a.ID, b.ID) })
	if len(list) != 2 || list[0].ID != "b1" || list[1].ID != "console" {
		t.Fatalf("sessions %+v", list)
	}
	b1 := list[0]
	if b1.Owner != "alice" || b1.Name != "broker's" || b1.Type != "VIRTUAL" || b1.State != agentproto.StateReady ||
		b1.StorageRoot != "/data" || b1.CreationTime.IsZero() || !b1.LastDisconnectionTime.IsZero() {
		t.Errorf("b1 %+v", b1)
	}
	if c := list[1]; c.Type != "CONSOLE" || c.Owner != "root" || c.State != agentproto.StateReady {
		t.Errorf("console %+v", c)
	}
	// The owner's groups on this host (root's include root), looked up
	// once per session.
	if c := list[1]; !slices.Contains(c.OwnerGroups, "root") || !c.LastInputTime.IsZero() {
		t.Errorf("console owner groups %q, last input %v: want root's groups and no last input (dcv does not report it)", c.OwnerGroups, c.LastInputTime)
	}
	if got := e.last("list-sessions"); !slices.Equal(got, []string{"list-sessions", "-j"}) {
		t.Errorf("list argv %q", got)
	}
	s, err := e.d.Describe(ctx, "b1")
	if err != nil || !reflect.DeepEqual(s, b1) {
		t.Errorf("describe %+v %v, want %+v", s, err, b1)
	}
	if got := e.last("describe-session"); !slices.Equal(got, []string{"describe-session", "b1", "-j"}) {
		t.Errorf("describe argv %q", got)
	}
	if _, err := e.d.Describe(ctx, "nope"); !errors.Is(err, errNoSession) {
		t.Errorf("describe unknown: %v", err)
	}
}

// TestParseDocumented parses describe-session output with the documented keys.
func TestParseDocumented(t *testing.T) {
	const out = `{
  "id" : "my-session",
  "owner" : "dcvuser",
  "name" : "My session",
  "num-of-connections" : 2,
  "creation-time" : "2019-05-13T13:21:19.262883Z",
  "last-disconnection-time" : "2019-05-14T12:32:14.357567Z",
  "licensing-mode" : "DEMO",
  "licenses" : [ { "product" : "dcv", "status" : "LICENSED", "check-timestamp" : "2019-05-14T12:35:40Z", "expiration-date" : "2019-05-29T00:00:00Z" } ],
  "storage-root" : "",
  "type" : "virtual",
  "x11-display" : ":1",
  "x11-authority" : "/run/user/1009/dcv/my-session.xauth",
  "display-layout" : [ { "width" : 800, "height" : 600, "x" : 0, "y" : 0 } ]
}`
	var s dcvSession
	if err := json.Unmarshal([]byte(out), &s); err != nil {
		t.Fatal(err)
	}
	got := s.session()
	want := agentproto.Session{ID: "my-session", Owner: "dcvuser", Name: "My session", Type: "VIRTUAL", State: agentproto.StateReady,
		NumConnections: 2, CreationTime: time.Date(2019, 5, 13, 13, 21, 19, 262883000, time.UTC),
		LastDisconnectionTime: time.Date(2019, 5, 14, 12, 32, 14, 357567000, time.UTC)}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %+v\nwant %+v", got, want)
	}
}

func TestScreenshot(t *testing.T) {
	e := newEnv(t, nil)
	ctx := context.Background()
	if err := e.d.Create(ctx, agent.CreateRequest{ID: "v1", Owner: "alice"}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		format   string
		w, h     int
		wantArgs []string
		wantFmt  string
	}{
		{agentproto.FormatPNG, 200, 100, []string{"get-screenshot", "--max-width", "200", "--max-height", "100", "--format", "PNG", "--primary", "-j", "v1"}, "png"},
		{agentproto.FormatJPEG, 64, 0, []string{"get-screenshot", "--max-width", "64", "--format", "JPEG", "--primary", "-j", "v1"}, "jpeg"},
		{"", 0, 0, []string{"get-screenshot", "--format", "PNG", "--primary", "-j", "v1"}, "png"},
	} {
		imgs, err := e.d.Screenshot(ctx, "v1", tc.w, tc.h, tc.format)
		if err != nil {
			t.Fatal(err)
		}
		if got := e.last("get-screenshot"); !slices.Equal(got, tc.wantArgs) {
			t.Errorf("argv %q, want %q", got, tc.wantArgs)
		}
		if len(imgs) != 1 || imgs[0].Format != tc.wantFmt || !imgs[0].Primary {
			t.Fatalf("images %+v", imgs)
		}
		cfg, kind, err := image.DecodeConfig(bytes.NewReader(imgs[0].Data))
		if err != nil || kind != tc.wantFmt {
			t.Fatalf("decode: %v %s", err, kind)
		}
		if (tc.w > 0 && cfg.Width > tc.w) || (tc.h > 0 && cfg.Height > tc.h) {
			t.Errorf("image %dx%d exceeds %dx%d", cfg.Width, cfg.Height, tc.w, tc.h)
		}
	}
	if _, err := e.d.Screenshot(ctx, "nope", 0, 0, ""); err == nil || !strings.Contains(err.Error(), "dcv get-screenshot failed") {
		t.Errorf("unknown session: %v", err)
	}
	if _, err := e.d.Screenshot(ctx, "v1", 0, 0, "gif"); err == nil {
		t.Error("gif accepted")
	}
}

func TestSetPermissions(t *testing.T) {
	e := newEnv(t, nil)
	ctx := context.Background()
	if err := e.d.Create(ctx, agent.CreateRequest{ID: "v1", Owner: "alice"}); err != nil {
		t.Fatal(err)
	}
	text := "[permissions]\n%owner% allow builtin\n'bob smith' allow display\n"
	if err := e.d.SetPermissions(ctx, "v1", text); err != nil {
		t.Fatal(err)
	}
	argv := e.last("set-permissions")
	if len(argv) != 5 || argv[1] != "--session" || argv[2] != "v1" || argv[3] != "--file" {
		t.Fatalf("argv %q", argv)
	}
	if _, err := os.Stat(argv[4]); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("temporary file left: %v", err)
	}
	if got := e.fakeSession("v1").Permissions; got != text {
		t.Errorf("dcv got %q", got)
	}
	if err := e.d.SetPermissions(ctx, "nope", text); err == nil {
		t.Error("unknown session accepted")
	}
}

func TestDeleteAndVanished(t *testing.T) {
	e := newEnv(t, nil)
	ctx := context.Background()
	for _, id := range []string{"d1", "d2"} {
		if err := e.d.Create(ctx, agent.CreateRequest{ID: id, Owner: "alice"}); err != nil {
			t.Fatal(err)
		}
	}
	if err := e.d.Delete(ctx, "d1"); err != nil {
		t.Fatal(err)
	}
	if got := e.last("close-session"); !slices.Equal(got, []string{"close-session", "d1"}) {
		t.Errorf("argv %q", got)
	}
	if err := e.d.Delete(ctx, "d1"); err != nil {
		t.Errorf("delete again: %v", err)
	}
	if err := e.d.Delete(ctx, "-x"); err != nil {
		t.Errorf("delete invalid id: %v", err)
	}
	list, _ := e.d.Sessions(ctx)
	if len(list) != 1 || list[0].ID != "d2" {
		t.Errorf("after delete %+v", list)
	}
	e.dcv("close-session", "d2") // ends outside the agent
	list, _ = e.d.Sessions(ctx)
	if len(list) != 1 || list[0].ID != "d2" || list[0].State != agentproto.StateDeleted {
		t.Errorf("vanished %+v", list)
	}
	list, _ = e.d.Sessions(ctx)
	if len(list) != 0 {
		t.Errorf("DELETED reported twice: %+v", list)
	}
}

func TestEndpoints(t *testing.T) {
	e := newEnv(t, nil)
	if w, p, q := e.d.Endpoints(); w != 8443 || p != "/" || q != 0 {
		t.Errorf("no dcv.conf: %d %q %d", w, p, q)
	}
	conf := `[license]
license-file = "5053@licenseserver"

[connectivity]
# comment
web-port=8444
web-url-path="/dcv-server"
enable-quic-frontend=true
quic-port = 9443

[security]
web-port=1
`
	if err := os.WriteFile(e.d.cfg.ConfPath, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	if w, p, q := e.d.Endpoints(); w != 8444 || p != "/dcv-server" || q != 9443 {
		t.Errorf("got %d %q %d", w, p, q)
	}
	os.WriteFile(e.d.cfg.ConfPath, []byte("[connectivity]\nenable-quic-frontend=false\nquic-port=9443\nweb-port=x\n"), 0o644)
	if w, p, q := e.d.Endpoints(); w != 8443 || p != "/" || q != 0 {
		t.Errorf("quic off: %d %q %d", w, p, q)
	}
	os.WriteFile(e.d.cfg.ConfPath, []byte("[connectivity]\nenable-quic-frontend=true\n"), 0o644)
	if _, _, q := e.d.Endpoints(); q != 8443 {
		t.Errorf("quic default port %d", q)
	}
}

// TestServerRestart: while dcv does not answer the host is unhealthy; once it
// answers again the same driver is healthy, and each change is notified.
func TestServerRestart(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.PollInterval = 50 * time.Millisecond })
	var notes atomic.Int64
	e.d.Notify(func() { notes.Add(1) })
	ctx := context.Background()
	if ok, reason := e.d.Health(ctx); !ok {
		t.Fatalf("unhealthy at start: %s", reason)
	}
	n := notes.Load()
	t.Setenv("FAKEDCV_FAIL", "list-sessions:Could not connect to the DCV server")
	poll.Until(t, 10*time.Second, "a notification of the failure", func() bool { return notes.Load() > n })
	ok, reason := e.d.Health(ctx)
	if ok || reason != "dcv list-sessions failed: Could not connect to the DCV server" {
		t.Errorf("down: %v %q", ok, reason)
	}
	if _, err := e.d.Sessions(ctx); err == nil {
		t.Error("sessions while down")
	}
	n = notes.Load()
	os.Setenv("FAKEDCV_FAIL", "")
	e.dcv("create-session", "--type", "virtual", "--owner", "alice", "after-restart")
	poll.Until(t, 10*time.Second, "a notification of the recovery", func() bool { return notes.Load() > n })
	if ok, reason := e.d.Health(ctx); !ok {
		t.Errorf("still unhealthy after restart: %s", reason)
	}
	list, err := e.d.Sessions(ctx)
	if err != nil || len(list) != 1 || list[0].ID != "after-restart" {
		t.Errorf("after restart %+v %v", list, err)
	}
}

// TestNoClientCommands: the dcv CLI documents no command that closes one
// client connection or notifies a session's users (docs/dcv.md), so the
// driver has neither capability and the agent answers the broker's
// disconnect and notify commands with a clear failure; DCV's own
// [connectivity] idle-timeout disconnects idle clients.
func TestNoClientCommands(t *testing.T) {
	var d any = &Driver{}
	if _, ok := d.(agent.Disconnecter); ok {
		t.Error("the dcv driver claims Disconnecter: document the dcv command it uses in docs/dcv.md and test it with the recorded dcv")
	}
	if _, ok := d.(agent.UserNotifier); ok {
		t.Error("the dcv driver claims UserNotifier: document the dcv command it uses in docs/dcv.md and test it with the recorded dcv")
	}
}

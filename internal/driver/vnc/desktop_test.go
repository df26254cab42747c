package vnc

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/agent"
	"github.com/berth-dev/berth/internal/poll"
)

func TestParseDesktopCommand(t *testing.T) {
	for _, c := range []struct {
		line string
		want []string
		err  string // part of the error; "" for none
	}{
		{"", nil, ""},
		{"  ", nil, ""},
		{"-", nil, ""},
		{"openbox", []string{"openbox"}, ""},
		{"  startxfce4  ", []string{"startxfce4"}, ""},
		{"/usr/bin/openbox --startup /usr/bin/xterm", []string{"/usr/bin/openbox", "--startup", "/usr/bin/xterm"}, ""},
		{"icewm-session\t--no-tray", []string{"icewm-session", "--no-tray"}, ""},
		{"openbox --config-file=/etc/berth/rc.xml", []string{"openbox", "--config-file=/etc/berth/rc.xml"}, ""},
		{"sh -c 'xterm & openbox'", nil, "without a shell"},
		{"openbox; rm -rf ~", nil, "without a shell"},
		{"openbox && xterm", nil, "without a shell"},
		{"openbox | tee log", nil, "without a shell"},
		{"openbox > /tmp/log", nil, "without a shell"},
		{"xterm -e $SHELL", nil, "without a shell"},
		{"xterm -e `id`", nil, "without a shell"},
		{`xterm -title a\ b`, nil, "without a shell"},
		{"ls *", nil, "without a shell"},
		{"DISPLAY=:1 openbox", nil, "environment assignment"},
		{"./openbox", nil, "neither an absolute path"},
		{"bin/openbox", nil, "neither an absolute path"},
		{"open\x00box", nil, "control character"},
		{"open\x1bbox", nil, "control character"},
		{"openbox \xff", nil, "invalid UTF-8"},
		{"openbox " + strings.Repeat("a", maxDesktopCommand), nil, "longer than"},
	} {
		got, err := ParseDesktopCommand(c.line)
		switch {
		case c.err == "" && err != nil:
			t.Errorf("%q: %v", c.line, err)
		case c.err != "" && (err == nil || !strings.Contains(err.Error(), c.err)):
			t.Errorf("%q: error %v, want one saying %q", c.line, err, c.err)
		case !slices.Equal(got, c.want):
			t.Errorf("%q = %q, want %q", c.line, got, c.want)
		}
	}
}

// TestNew_DesktopCommand: a desktop command that is not a plain command line
// stops the driver from starting, naming the setting.
func TestNew_DesktopCommand(t *testing.T) {
	for _, c := range []Config{{DesktopCommand: "openbox; xterm"}, {DefaultInit: "$WM"}} {
		c.StateDir = t.TempDir()
		_, err := New(c)
		if err == nil || !strings.Contains(err.Error(), "without a shell") || !strings.Contains(err.Error(), "desktop command") && !strings.Contains(err.Error(), "default init") {
			t.Errorf("%+v: %v", c, err)
		}
	}
}

// fakeHost points the driver's view of the host's X session setup at dir:
// dir/Xsession, dir/Xsession.options, dir/x-session-manager.
func fakeHost(t *testing.T, dir string) {
	t.Helper()
	old := []string{xsessionPath, xsessionOptionsPath, sessionManagerPath}
	xsessionPath = filepath.Join(dir, "Xsession")
	xsessionOptionsPath = filepath.Join(dir, "Xsession.options")
	sessionManagerPath = filepath.Join(dir, "x-session-manager")
	t.Cleanup(func() { xsessionPath, xsessionOptionsPath, sessionManagerPath = old[0], old[1], old[2] })
}

func writeFile(t *testing.T, path, text string, mode os.FileMode) {
	t.Helper()
	if err := os.WriteFile(path, []byte(text), mode); err != nil {
		t.Fatal(err)
	}
}

// TestDesktopFor: the desktop a session without an InitFile gets, in the
// documented order (desktop.go), on fake hosts.
func TestDesktopFor(t *testing.T) {
	openbox, err := lookPath("openbox")
	if err != nil {
		t.Skip("openbox is not installed")
	}
	type host struct {
		xsession  bool   // /etc/X11/Xsession exists
		options   string // Xsession.options
		sm        string // what x-session-manager links to ("" none)
		userFile  string // ~/.xsession, ~/.Xsession or "" (none)
		userExec  bool   // the user's file is executable
		cmd, init string // Config.DesktopCommand, DefaultInit
	}
	const allow = "allow-failsafe\nallow-user-xsession\n"
	for _, c := range []struct {
		name string
		host host
		// want is the argv with "X" for the fake Xsession, "SM" for the fake
		// x-session-manager, "~/" for the home; nil: nothing.
		want []string
		full bool
		err  string
	}{
		{"desktop_command wins", host{xsession: true, options: allow, sm: "xfce4-session", userFile: ".xsession", cmd: "openbox --sm-disable", init: "xterm"}, []string{openbox, "--sm-disable"}, false, ""},
		{"desktop_command - runs nothing", host{xsession: true, options: allow, sm: "xfce4-session", cmd: "-"}, nil, false, ""},
		{"desktop_command not installed", host{cmd: "berth-no-such-desktop"}, nil, false, "berth-no-such-desktop not found"},
		{"default init when no desktop_command", host{xsession: true, options: allow, sm: "xfce4-session", init: "openbox"}, []string{openbox}, false, ""},
		{"default init not installed runs nothing", host{init: "berth-no-such-wm"}, nil, false, ""},
		{"user xsession through Xsession", host{xsession: true, options: allow, sm: "openbox-session", userFile: ".xsession"}, []string{"X"}, true, ""},
		{"user Xsession through Xsession", host{xsession: true, options: allow, userFile: ".Xsession"}, []string{"X"}, true, ""},
		{"user xsession not allowed", host{xsession: true, options: "allow-failsafe\n", sm: "xfce4-session", userFile: ".xsession"}, []string{"X"}, true, ""},
		{"user xsession not allowed, no desktop", host{xsession: true, options: "allow-failsafe\n", sm: "openbox-session", userFile: ".xsession"}, []string{"fallback"}, false, ""},
		{"user xsession without Xsession", host{userFile: ".xsession", userExec: true}, []string{"~/.xsession"}, true, ""},
		{"user xsession without Xsession, not executable", host{userFile: ".xsession"}, []string{"/bin/sh", "~/.xsession"}, true, ""},
		{"host desktop through Xsession", host{xsession: true, options: allow, sm: "xfce4-session"}, []string{"X"}, true, ""},
		{"host desktop without Xsession", host{sm: "xfce4-session"}, []string{"SM"}, true, ""},
		{"openbox-session is no desktop", host{xsession: true, options: allow, sm: "openbox-session"}, []string{"fallback"}, false, ""},
		{"no session manager", host{xsession: true, options: allow}, []string{"fallback"}, false, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			fakeHost(t, dir)
			home := filepath.Join(dir, "home")
			if err := os.Mkdir(home, 0o755); err != nil {
				t.Fatal(err)
			}
			h := c.host
			if h.xsession {
				writeFile(t, xsessionPath, "#!/bin/sh\n", 0o755)
			}
			writeFile(t, xsessionOptionsPath, h.options, 0o644)
			if h.sm != "" {
				target := filepath.Join(dir, h.sm)
				writeFile(t, target, "#!/bin/sh\n", 0o755)
				if err := os.Symlink(target, sessionManagerPath); err != nil {
					t.Fatal(err)
				}
			}
			if h.userFile != "" {
				mode := os.FileMode(0o644)
				if h.userExec {
					mode = 0o755
				}
				writeFile(t, filepath.Join(home, h.userFile), "exec openbox\n", mode)
			}
			d := &Driver{cfg: Config{DesktopCommand: h.cmd, DefaultInit: h.init}, log: slog.New(slog.NewTextHandler(io.Discard, nil))}
			got, err := d.desktopFor(&owner{name: "u", home: home, shell: "/bin/sh"})
			if c.err != "" {
				if err == nil || !strings.Contains(err.Error(), c.err) {
					t.Fatalf("error %v, want one saying %q", err, c.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var want []string
			for _, w := range c.want {
				switch {
				case w == "X":
					w = xsessionPath
				case w == "SM":
					w = sessionManagerPath
				case strings.HasPrefix(w, "~/"):
					w = filepath.Join(home, w[2:])
				}
				want = append(want, w)
			}
			if slices.Equal(want, []string{"fallback"}) {
				// openbox, its --startup running a panel (where one is
				// installed) and a terminal.
				if len(got.argv) != 3 || got.argv[0] != openbox || got.argv[1] != "--startup" || !strings.HasPrefix(got.argv[2], "/bin/sh -c '") || !strings.Contains(got.argv[2], "exec /") {
					t.Fatalf("argv %q, want openbox --startup with a terminal", got.argv)
				}
			} else if !slices.Equal(got.argv, want) {
				t.Fatalf("argv %q, want %q", got.argv, want)
			}
			if got.full != c.full {
				t.Errorf("full = %v, want %v", got.full, c.full)
			}
			t.Logf("%s: %q", got.what, got.argv)
		})
	}
}

// sessionProcs returns the command names (argv[0] base names) of a
// session's live processes.
func sessionProcs(rec *record) map[string]int {
	roots := map[int]bool{rec.ServerPID: true, rec.BusPID: true, rec.InitPID: true, rec.AutorunPID: true}
	delete(roots, 0)
	out := map[string]int{}
	for _, pid := range sessionProcesses(rec, roots) {
		if argv := procCmdline(pid); len(argv) > 0 {
			out[filepath.Base(argv[0])] = pid
		}
	}
	return out
}

// readEnviron returns /proc/PID/environ. It reads empty while the process
// execs (an autorun script execs sleep) and once it has ended, so an empty
// read is tried again for up to 2 s.
func readEnviron(pid int) []byte {
	var data []byte
	for range 20 {
		if data, _ = os.ReadFile("/proc/" + strconv.Itoa(pid) + "/environ"); len(data) > 0 {
			break
		}
		time.Sleep(100 * time.Millisecond) //sleep-ok: polling /proc until the exec is over
	}
	return data
}

// environOf returns a process's initial environment.
func environOf(pid int) map[string]string {
	data := readEnviron(pid)
	env := map[string]string{}
	for kv := range strings.SplitSeq(strings.TrimRight(string(data), "\x00"), "\x00") {
		k, v, _ := strings.Cut(kv, "=")
		env[k] = v
	}
	return env
}

// checkDesktopEnv checks that pid runs with the session's bus and session
// type.
func checkDesktopEnv(t *testing.T, rec *record, pid int, name string) {
	t.Helper()
	env := environOf(pid)
	if !strings.HasPrefix(env["DBUS_SESSION_BUS_ADDRESS"], "unix:path="+filepath.Join(rec.Dir, "bus")) {
		t.Errorf("%s: DBUS_SESSION_BUS_ADDRESS=%q, want the session's bus in %s", name, env["DBUS_SESSION_BUS_ADDRESS"], rec.Dir)
	}
	if env["XDG_SESSION_TYPE"] != "x11" || env["XDG_RUNTIME_DIR"] != filepath.Dir(rec.Dir) || env["DISPLAY"] != ":"+strconv.Itoa(rec.Display) {
		t.Errorf("%s: XDG_SESSION_TYPE=%q XDG_RUNTIME_DIR=%q DISPLAY=%q", name, env["XDG_SESSION_TYPE"], env["XDG_RUNTIME_DIR"], env["DISPLAY"])
	}
}

// checkDeleted deletes a session and checks that none of its processes is
// left.
func checkDeleted(t *testing.T, d *Driver, id string, rec *record) {
	t.Helper()
	if err := d.Delete(context.Background(), id); err != nil {
		t.Fatal(err)
	}
	if left := sessionProcs(rec); len(left) > 0 {
		t.Errorf("processes left after delete: %v", left)
	}
	if _, err := os.Lstat(filepath.Join(rec.Dir, "bus")); err == nil {
		t.Error("the bus socket is left")
	}
}

// logOnFailure logs the session log when the test fails.
func logOnFailure(t *testing.T, rec *record) {
	t.Cleanup(func() {
		if t.Failed() {
			data, _ := os.ReadFile(rec.Log)
			t.Logf("session log:\n%s", data)
		}
	})
}

// TestDriver_Desktop_Host: with no desktop command configured, a session
// starts the host's desktop session as a display manager would
// (/etc/X11/Xsession, x-session-manager: XFCE where make run or test.sh
// installed it) in a session bus of its own, with XDG_SESSION_TYPE=x11; its
// window manager comes up, and deleting the session ends every process of
// it, the bus's activated services included.
func TestDriver_Desktop_Host(t *testing.T) {
	sm, ok := hostDesktop()
	if !ok || !isExecutable(xsessionPath) {
		t.Skipf("no desktop environment on this host (x-session-manager: %q; test.sh installs XFCE)", sm)
	}
	if _, err := lookPath("dbus-daemon"); err != nil {
		t.Skip("dbus-daemon is not installed")
	}
	d := newDriverWith(t, func(c *Config) { c.DesktopCommand = "" })
	id := newID(t)
	// The autorun program starts once the desktop's window manager runs.
	mustCreate(t, d, agent.CreateRequest{ID: id, Owner: testUser2, AutorunFile: "sleep.sh"})
	rec, _ := d.recordOf(id)
	logOnFailure(t, &rec)
	if argv := procCmdline(rec.BusPID); len(argv) == 0 || filepath.Base(argv[0]) != "dbus-daemon" {
		t.Fatalf("bus process runs %q", argv)
	}
	checkOwnerProcess(t, rec.BusPID, uidOf(t, testUser2))
	if fi, err := os.Lstat(filepath.Join(rec.Dir, "bus")); err != nil || fi.Mode().Type() != os.ModeSocket {
		t.Fatalf("bus socket: %v", err)
	}
	checkDesktopEnv(t, &rec, rec.InitPID, "init")
	checkDesktopEnv(t, &rec, rec.AutorunPID, "autorun")
	cookie, _ := rec.xCookie()
	if !waitWindowManager(context.Background(), rec.Display, cookie, rec.ServerPID, desktopWait, 0) {
		t.Fatal("no window manager runs")
	}
	// The session manager x-session-manager names runs, on the session's
	// bus.
	var procs map[string]int
	want := strings.TrimPrefix(sm, "start") // startxfce4 execs xfce4-session
	if want == "xfce4" {
		want = "xfce4-session"
	}
	poll.Until(t, 30*time.Second, "the session manager "+want, func() bool {
		procs = sessionProcs(&rec)
		return procs[want] != 0
	})
	checkDesktopEnv(t, &rec, procs[want], want)
	t.Logf("session processes: %v", procs)
	checkDeleted(t, d, id, &rec)
}

// TestDriver_Desktop_UserXsession: the user's ~/.xsession runs (through the
// host's /etc/X11/Xsession where it has one), with the session's bus.
func TestDriver_Desktop_UserXsession(t *testing.T) {
	u := testUser2
	home := "/home/" + u
	marker := filepath.Join(home, "berth-xsession-ran")
	os.Remove(marker)
	script := "#!/bin/sh\nprintf '%s %s\\n' \"$XDG_SESSION_TYPE\" \"$DBUS_SESSION_BUS_ADDRESS\" > \"$HOME/berth-xsession-ran.tmp\"\nmv \"$HOME/berth-xsession-ran.tmp\" \"$HOME/berth-xsession-ran\"\nexec openbox\n"
	path := filepath.Join(home, ".xsession")
	writeFile(t, path, script, 0o755)
	uid := uidOf(t, u)
	os.Chown(path, uid, uid)
	t.Cleanup(func() { os.Remove(path); os.Remove(marker) })

	d := newDriverWith(t, func(c *Config) { c.DesktopCommand = "" })
	id := newID(t)
	mustCreate(t, d, agent.CreateRequest{ID: id, Owner: u})
	rec, _ := d.recordOf(id)
	logOnFailure(t, &rec)
	var got []byte
	poll.Until(t, 20*time.Second, "~/.xsession to run", func() bool {
		var err error
		got, err = os.ReadFile(marker)
		return err == nil
	})
	if f := strings.Fields(string(got)); len(f) != 2 || f[0] != "x11" || !strings.HasPrefix(f[1], "unix:path="+filepath.Join(rec.Dir, "bus")) {
		t.Errorf("~/.xsession ran with %q, want x11 and the session's bus", got)
	}
	checkDeleted(t, d, id, &rec)
}

// TestDriver_Desktop_Fallback: on a host without a desktop environment (here:
// no x-session-manager) a session gets openbox with a panel, where one is
// installed, and a terminal.
func TestDriver_Desktop_Fallback(t *testing.T) {
	if _, err := lookPath("openbox"); err != nil {
		t.Skip("openbox is not installed")
	}
	term := terminal()
	if term == "" {
		t.Skip("no terminal installed")
	}
	fakeHost(t, t.TempDir()) // no Xsession, no x-session-manager
	d := newDriverWith(t, func(c *Config) { c.DesktopCommand = "" })
	id := newID(t)
	mustCreate(t, d, agent.CreateRequest{ID: id, Owner: testUser1})
	rec, _ := d.recordOf(id)
	logOnFailure(t, &rec)
	if argv := procCmdline(rec.InitPID); len(argv) < 2 || filepath.Base(argv[0]) != "openbox" || argv[1] != "--startup" {
		t.Fatalf("init runs %q, want openbox --startup", argv)
	}
	// x-terminal-emulator is a link (alternatives); the process is the
	// program it leads to (xfce4-terminal.wrapper runs xfce4-terminal).
	real, _ := filepath.EvalSymlinks(term)
	wantTerm := strings.TrimSuffix(filepath.Base(real), ".wrapper")
	var panel string
	for _, p := range []string{"tint2", "xfce4-panel"} {
		if _, err := lookPath(p); err == nil {
			panel = p
			break
		}
	}
	var procs map[string]int
	poll.Until(t, 30*time.Second, fmt.Sprintf("openbox's panel %q and terminal %q", panel, wantTerm), func() bool {
		procs = sessionProcs(&rec)
		return procs[wantTerm] != 0 && (panel == "" || procs[panel] != 0)
	})
	checkDesktopEnv(t, &rec, procs[wantTerm], wantTerm)
	checkDeleted(t, d, id, &rec)
}

// TestDriver_DesktopCommand_NotInstalled: a session whose configured desktop
// command is not installed fails to start, saying so, as the host's fault
// (not an invalid request); an InitFile still works.
func TestDriver_DesktopCommand_NotInstalled(t *testing.T) {
	d := newDriverWith(t, func(c *Config) { c.DesktopCommand = "berth-no-such-desktop --flag" })
	err := d.Create(context.Background(), agent.CreateRequest{ID: newID(t), Owner: testUser1})
	if err == nil || !strings.Contains(err.Error(), "desktop_command") || !strings.Contains(err.Error(), "berth-no-such-desktop") {
		t.Fatalf("create: %v", err)
	}
	if errors.Is(err, agent.ErrInvalidRequest) {
		t.Errorf("a host's missing desktop is reported as an invalid request: %v", err)
	}
	mustCreate(t, d, agent.CreateRequest{ID: newID(t), Owner: testUser1, InitFile: "wm.sh"})
}

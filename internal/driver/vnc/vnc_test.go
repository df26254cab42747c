package vnc

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"image"
	"image/jpeg"
	"image/png"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jezek/xgb/xproto"

	"github.com/berth-dev/berth/internal/agent"
	"github.com/berth-dev/berth/internal/agentproto"
	"github.com/berth-dev/berth/internal/poll"
)

func TestDriver_Create_RunsAsOwner(t *testing.T) {
	d := newDriver(t, "")
	id := newID(t)
	start := time.Now()
	mustCreate(t, d, agent.CreateRequest{ID: id, Owner: testUser1, Name: "first", MaxConcurrentClients: 2, AutorunFile: "sleep.sh"})
	took := time.Since(start)
	t.Logf("create to READY: %s", took)
	if took > 10*time.Second {
		t.Errorf("create took %s", took)
	}
	info, ok := sessionInfo(t, d, id)
	if !ok || info.State != agentproto.StateReady || info.Owner != testUser1 || info.Type != "VIRTUAL" || info.Name != "first" || info.MaxConcurrentClients != 2 || info.CreationTime.IsZero() {
		t.Fatalf("session = %+v", info)
	}
	rec, _ := d.recordOf(id)
	uid := uidOf(t, testUser1)

	// X11 directory: root's, 1777 (G1).
	fi, err := os.Lstat("/tmp/.X11-unix")
	if err != nil {
		t.Fatal(err)
	}
	if st := fi.Sys().(*syscall.Stat_t); st.Uid != 0 || fi.Mode()&os.ModeSticky == 0 || fi.Mode().Perm() != 0o777 {
		t.Errorf("/tmp/.X11-unix: uid %d mode %v", st.Uid, fi.Mode())
	}
	// Socket, cookie and directory: the owner's, private.
	for _, c := range []struct {
		path string
		mode os.FileMode
	}{{rec.Socket, 0o600}, {rec.Cookie, 0o600}, {rec.Dir, 0o700}, {filepath.Dir(rec.Dir), 0o700}} {
		fi, err := os.Lstat(c.path)
		if err != nil {
			t.Fatal(err)
		}
		if st := fi.Sys().(*syscall.Stat_t); int(st.Uid) != uid || fi.Mode().Perm() != c.mode {
			t.Errorf("%s: uid %d mode %v, want uid %d mode %v", c.path, st.Uid, fi.Mode().Perm(), uid, c.mode)
		}
	}
	if fi, _ := os.Lstat(rec.Socket); fi.Mode().Type() != os.ModeSocket {
		t.Errorf("%s is not a socket", rec.Socket)
	}
	if fi, err := os.Stat(d.recordPath(id)); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("state file: %v %v", fi, err)
	}
	// Server, init and autorun: the owner's credentials, each in its own
	// session and process group, with a clean environment.
	wantEnv := map[string]bool{"HOME": true, "USER": true, "LOGNAME": true, "SHELL": true, "PATH": true, "XDG_RUNTIME_DIR": true, "DISPLAY": true, "XAUTHORITY": true, "LANG": true, "PWD": true}
	// The desktop's programs also get the session type and their bus.
	desktopEnv := map[string]bool{"XDG_SESSION_TYPE": true, "DBUS_SESSION_BUS_ADDRESS": true}
	for _, pid := range []int{rec.ServerPID, rec.InitPID, rec.AutorunPID} {
		if pid == 0 {
			t.Errorf("missing pid in %+v", rec)
			continue
		}
		checkOwnerProcess(t, pid, uid)
		pi, err := readStat(pid)
		if err != nil || pi.pgid != pid || pi.sid != pid {
			t.Errorf("pid %d: pgid %d sid %d (%v), want its own", pid, pi.pgid, pi.sid, err)
		}
		env := readEnviron(pid)
		if len(env) == 0 {
			// A process that has ended (a zombie until the driver reaps it)
			// shows an empty environment: nothing to check, unless it is
			// the X server, which must be alive.
			if st, err := readStat(pid); pid == rec.ServerPID || err == nil && st.state != 'Z' {
				t.Errorf("pid %d: empty environment (state %q, %v)", pid, st.state, err)
			} else {
				t.Logf("pid %d has ended: its environment is not checked", pid)
			}
			continue
		}
		for kv := range strings.SplitSeq(strings.TrimRight(string(env), "\x00"), "\x00") {
			k, v, _ := strings.Cut(kv, "=")
			if !wantEnv[k] && !(pid != rec.ServerPID && desktopEnv[k]) {
				t.Errorf("pid %d: unexpected environment variable %q", pid, k)
			}
			if k == "HOME" && v != "/home/"+testUser1 || k == "PATH" && strings.Contains(v, "sbin") || k == "DISPLAY" && v != ":"+strconv.Itoa(rec.Display) {
				t.Errorf("pid %d: %s", pid, kv)
			}
		}
	}
	// The autorun program inherits only stdin, stdout and stderr. Its script
	// ends in exec sleep: until then the shell holds the script open (dash
	// on fd 10), and right after it the dynamic loader its libraries, so a
	// leaked descriptor is one still there once sleep runs and settles.
	var fds []os.DirEntry
	poll.Until(t, 10*time.Second, "the autorun program to be sleep with 3 descriptors", func() bool {
		fds, _ = os.ReadDir("/proc/" + strconv.Itoa(rec.AutorunPID) + "/fd")
		args := procCmdline(rec.AutorunPID)
		return len(args) > 0 && args[0] == "sleep" && len(fds) == 3
	})
	if len(fds) != 3 {
		var names []string
		for _, f := range fds {
			l, _ := os.Readlink("/proc/" + strconv.Itoa(rec.AutorunPID) + "/fd/" + f.Name())
			names = append(names, f.Name()+"→"+l)
		}
		t.Errorf("autorun has fds %v, want 0, 1, 2", names)
	}
	// The VNC socket speaks RFB; the user's other processes could not open it.
	if err := rfbPing(rec.Socket, time.Now().Add(3*time.Second)); err != nil {
		t.Fatal(err)
	}
	// No TCP listener: the server's sockets are unix sockets only.
	if tcp := tcpListeners(t, rec.ServerPID); len(tcp) > 0 {
		t.Errorf("Xvnc listens on TCP: %v", tcp)
	}
	// Creating again is idempotent.
	if err := d.Create(context.Background(), agent.CreateRequest{ID: id, Owner: testUser1}); err != nil {
		t.Errorf("second create: %v", err)
	}
}

// checkOwnerProcess checks a process's real, effective, saved and fs IDs
// and its groups.
func checkOwnerProcess(t *testing.T, pid, uid int) {
	t.Helper()
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		t.Errorf("pid %d: %v", pid, err)
		return
	}
	for line := range strings.SplitSeq(string(data), "\n") {
		k, v, _ := strings.Cut(line, ":")
		f := strings.Fields(v)
		switch k {
		case "Uid":
			for _, x := range f {
				if x != strconv.Itoa(uid) {
					t.Errorf("pid %d: Uid %v, want %d", pid, f, uid)
					break
				}
			}
		case "Groups":
			for _, x := range f {
				if x == "0" {
					t.Errorf("pid %d: in group 0: %v", pid, f)
				}
			}
		case "CapEff":
			if strings.Trim(v, " \t0") != "" {
				t.Errorf("pid %d: effective capabilities %s", pid, strings.TrimSpace(v))
			}
		}
	}
}

// tcpListeners returns the TCP sockets a process has open.
func tcpListeners(t *testing.T, pid int) []string {
	t.Helper()
	inodes := map[string]bool{}
	fds, _ := os.ReadDir("/proc/" + strconv.Itoa(pid) + "/fd")
	for _, f := range fds {
		l, _ := os.Readlink("/proc/" + strconv.Itoa(pid) + "/fd/" + f.Name())
		if strings.HasPrefix(l, "socket:[") {
			inodes[strings.TrimSuffix(strings.TrimPrefix(l, "socket:["), "]")] = true
		}
	}
	var out []string
	for _, file := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		data, _ := os.ReadFile(file)
		for line := range strings.SplitSeq(string(data), "\n") {
			f := strings.Fields(line)
			if len(f) > 9 && inodes[f[9]] {
				out = append(out, file+" "+f[1])
			}
		}
	}
	return out
}

func TestDriver_Create_Refused(t *testing.T) {
	d := newDriver(t, "")
	cases := []struct {
		name string
		req  agent.CreateRequest
		want string
	}{
		{"unknown owner", agent.CreateRequest{Owner: "no-such-user-berth"}, "not a local user"},
		{"root owner", agent.CreateRequest{Owner: "root"}, "root"},
		{"init dotdot", agent.CreateRequest{Owner: testUser1, InitFile: "../secret.sh"}, "InitFile escapes the init folder"},
		{"init dotdot inside", agent.CreateRequest{Owner: testUser1, InitFile: "sub/../../secret.sh"}, "InitFile escapes the init folder"},
		{"init absolute", agent.CreateRequest{Owner: testUser1, InitFile: "/bin/sh"}, "InitFile must be relative"},
		{"init symlink escape", agent.CreateRequest{Owner: testUser1, InitFile: "sub/escape.sh"}, "InitFile escapes the init folder"},
		{"init missing", agent.CreateRequest{Owner: testUser1, InitFile: "nope.sh"}, "InitFile \"nope.sh\" does not exist"},
		{"init not executable", agent.CreateRequest{Owner: testUser1, InitFile: "noexec.sh"}, "not executable"},
		{"autorun dotdot", agent.CreateRequest{Owner: testUser1, AutorunFile: "../secret.sh"}, "AutorunFile escapes the autorun folder"},
		{"autorun absolute", agent.CreateRequest{Owner: testUser1, AutorunFile: testFolders + "/autorun/sleep.sh"}, "AutorunFile must be relative"},
		{"autorun too many args", agent.CreateRequest{Owner: testUser1, AutorunFile: "sleep.sh", AutorunFileArguments: make([]string, 51)}, "at most 50"},
		{"autorun long arg", agent.CreateRequest{Owner: testUser1, AutorunFile: "sleep.sh", AutorunFileArguments: []string{strings.Repeat("x", 151)}}, "longer than 150"},
		{"gl", agent.CreateRequest{Owner: testUser1, DcvGlEnabled: true}, "DCV GL is not available on this host"},
		{"type", agent.CreateRequest{Owner: testUser1, Type: "OTHER"}, "unsupported session type"},
		{"permissions", agent.CreateRequest{Owner: testUser1, PermissionsFile: "[permissions]\n%owner% allow nonsense\n"}, "invalid permissions file"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			c.req.ID = newID(t)
			err := d.Create(context.Background(), c.req)
			if err == nil {
				d.Delete(context.Background(), c.req.ID)
				t.Fatal("create succeeded")
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Errorf("error %q, want it to contain %q", err, c.want)
			}
			if _, ok := sessionInfo(t, d, c.req.ID); ok {
				t.Error("refused session is listed")
			}
		})
	}
	if err := d.Create(context.Background(), agent.CreateRequest{ID: "../x", Owner: testUser1}); err == nil {
		t.Error("bad id accepted")
	}
	// A symlink that stays inside the folder is fine.
	mustCreate(t, d, agent.CreateRequest{ID: newID(t), Owner: testUser1, InitFile: "sub/inside.sh"})
}

// TestDriver_Create_OwnerNames: owners that the host's user database knows
// run their sessions as that user, whatever the shape of the name; names
// that could escape a path or a command line are refused before any lookup,
// and a DOMAIN\user the host does not know is refused with the reason.
func TestDriver_Create_OwnerNames(t *testing.T) {
	d := newDriver(t, "")
	tests := []struct {
		owner string
		want  string // "" for accepted, else part of the error
	}{
		{testUser1, ""},
		{testUserDotted, ""},
		{testUserMail, ""},
		{testUserDomain, ""},
		{`BERTH\nosuchuser`, `works only on a host joined to the domain`},
		{`nosuchdomain\` + testUser1, `works only on a host joined to the domain`}, // never stripped to berthtest1
		{"no-such-user-berth", "not a local user on this host"},
		{"root", "cannot be owned by root"},
		{"", "Owner is required"},
		{"..", `must not start with '.'`},
		{"../etc/passwd", `must not start with '.'`},
		{"a/../../b", `must not contain ".."`},
		{"a/b", `character '/' is not allowed`},
		{"a\x00b", `character '\x00' is not allowed`},
		{"a\nb", `character '\n' is not allowed`},
		{"-rf", `must not start with '-'`},
		{"a b", `character ' ' is not allowed`},
		{"a;b", `character ';' is not allowed`},
		{"$(id)", `character '(' is not allowed`},
		{"a$b", `"$" is allowed only at the end`},
		{`\\server\share`, "a backslash is allowed only once"},
		{`a\b\c`, "a backslash is allowed only once"},
		{"ünïcode", `character 'ü' is not allowed`},
	}
	for _, tc := range tests {
		t.Run(fmt.Sprintf("%q", tc.owner), func(t *testing.T) {
			id := newID(t)
			if tc.want != "" {
				err := d.Create(context.Background(), agent.CreateRequest{ID: id, Owner: tc.owner})
				if err == nil {
					d.Delete(context.Background(), id)
					t.Fatal("create succeeded")
				}
				if !strings.Contains(err.Error(), tc.want) || !errors.Is(err, agent.ErrInvalidRequest) {
					t.Errorf("error %q (invalid request: %v), want it to contain %q", err, errors.Is(err, agent.ErrInvalidRequest), tc.want)
				}
				if _, ok := sessionInfo(t, d, id); ok {
					t.Error("refused session is listed")
				}
				return
			}
			mustCreate(t, d, agent.CreateRequest{ID: id, Owner: tc.owner})
			s, ok := sessionInfo(t, d, id)
			if !ok || s.Owner != tc.owner || s.State != agentproto.StateReady {
				t.Errorf("session %+v", s)
			}
			rec, _ := d.recordOf(id)
			if uid := uidOf(t, tc.owner); rec.UID != uid || processUID(t, rec.ServerPID) != uid {
				t.Errorf("Xvnc runs as uid %d (record %d), want %d", processUID(t, rec.ServerPID), rec.UID, uid)
			}
		})
	}
}

// processUID returns the real user ID of a process.
func processUID(t testing.TB, pid int) int {
	t.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "Uid:"); ok {
			f := strings.Fields(v)
			n, _ := strconv.Atoi(f[0])
			return n
		}
	}
	t.Fatalf("no Uid in /proc/%d/status", pid)
	return -1
}

func TestDriver_Create_NoConsole(t *testing.T) {
	d := newDriver(t, "")
	err := d.Create(context.Background(), agent.CreateRequest{ID: newID(t), Owner: testUser2, Type: "CONSOLE"})
	if err == nil || err.Error() != "no console display on this host" {
		t.Fatalf("err = %v", err)
	}
}

func TestDriver_Autorun_Arguments(t *testing.T) {
	d := newDriver(t, "")
	home := "/home/" + testUser2
	storage := home + "/berth-autorun-test"
	os.RemoveAll(storage)
	t.Cleanup(func() { os.RemoveAll(storage) })
	args := []string{"first arg", "it's $HOME", `say "hi" and 'bye'`, "--flag=1", "", "a\\b", "`id`", "; rm -rf / #", "$(whoami)", "  spaced  ", "*"}
	id := newID(t)
	mustCreate(t, d, agent.CreateRequest{ID: id, Owner: testUser2, StorageRoot: "%home%/berth-autorun-test", AutorunFile: "args.sh", AutorunFileArguments: args})
	fi, err := os.Stat(storage)
	if err != nil {
		t.Fatal(err)
	}
	if int(fi.Sys().(*syscall.Stat_t).Uid) != uidOf(t, testUser2) {
		t.Errorf("storage root is not owned by the owner")
	}
	var got []byte
	poll.Until(t, 10*time.Second, "the autorun output", func() bool {
		got, err = os.ReadFile(storage + "/args")
		return err == nil
	})
	want := strings.Join(args, "\n") + "\n"
	if string(got) != want {
		t.Errorf("autorun argv:\n%q\nwant\n%q", got, want)
	}
	if info, _ := sessionInfo(t, d, id); info.StorageRoot != "%home%/berth-autorun-test" {
		t.Errorf("storage root reported as %q", info.StorageRoot)
	}
}

func TestDriver_Screenshot(t *testing.T) {
	d := newDriver(t, "")
	id := newID(t)
	mustCreate(t, d, agent.CreateRequest{ID: id, Owner: testUser1, AutorunFile: "xterm.sh"})
	ctx := context.Background()
	if _, err := d.Screenshot(ctx, "nope", 0, 0, agentproto.FormatPNG); err != ErrNotFound {
		t.Errorf("unknown session: %v", err)
	}
	rec, _ := d.recordOf(id)
	t.Cleanup(func() {
		if t.Failed() {
			data, _ := os.ReadFile(rec.Log)
			t.Logf("session log:\n%s", data)
		}
	})
	shoot := func() image.Image {
		imgs, err := d.Screenshot(ctx, id, 320, 240, agentproto.FormatPNG)
		if err != nil {
			t.Fatal(err)
		}
		if len(imgs) != 1 || !imgs[0].Primary || imgs[0].Format != agentproto.FormatPNG {
			t.Fatalf("images = %+v", imgs)
		}
		img, err := png.Decode(bytes.NewReader(imgs[0].Data))
		if err != nil {
			t.Fatal(err)
		}
		return img
	}
	img := shoot()
	// The xterm shows within a second or two, but its first start for a new
	// user (font caches) can take much longer on a busy host: then draw a
	// window of our own.
	for deadline := time.Now().Add(10 * time.Second); colours(img) < 2 && time.Now().Before(deadline); {
		time.Sleep(100 * time.Millisecond)
		img = shoot()
	}
	if colours(img) < 2 {
		t.Log("no xterm yet; drawing a window")
		drawWindow(t, &rec)
		poll.Until(t, 10*time.Second, "a non-uniform screenshot", func() bool { img = shoot(); return colours(img) > 1 })
	}
	// 1280×800 fits 320×240 as 320×200.
	if b := img.Bounds(); b.Dx() != 320 || b.Dy() != 200 {
		t.Errorf("png size %v", b)
	}
	imgs, err := d.Screenshot(ctx, id, 0, 0, agentproto.FormatJPEG)
	if err != nil {
		t.Fatal(err)
	}
	full, err := jpeg.Decode(bytes.NewReader(imgs[0].Data))
	if err != nil {
		t.Fatal(err)
	}
	if b := full.Bounds(); b.Dx() != 1280 || b.Dy() != 800 {
		t.Errorf("jpeg size %v", b)
	}
	if colours(full) < 2 {
		t.Error("full screenshot is uniform")
	}
	if _, err := d.Screenshot(ctx, id, 0, 0, "gif"); err == nil {
		t.Error("gif accepted")
	}
}

// colours counts the distinct colours of an image (up to 16).
func colours(img image.Image) int {
	seen := map[[4]uint32]bool{}
	b := img.Bounds()
	for y := b.Min.Y; y < b.Max.Y; y += 2 {
		for x := b.Min.X; x < b.Max.X; x += 2 {
			r, g, bb, a := img.At(x, y).RGBA()
			seen[[4]uint32{r >> 8, g >> 8, bb >> 8, a >> 8}] = true
			if len(seen) >= 16 {
				return len(seen)
			}
		}
	}
	return len(seen)
}

func TestDriver_Delete_LeavesNothing(t *testing.T) {
	d := newDriver(t, "")
	id := newID(t)
	mustCreate(t, d, agent.CreateRequest{ID: id, Owner: testUser1, AutorunFile: "escape.sh"})
	rec, _ := d.recordOf(id)
	roots := map[int]bool{rec.ServerPID: true, rec.InitPID: true, rec.AutorunPID: true}
	// The escaped sleep (own session) is found by its environment.
	poll.Until(t, 5*time.Second, "the escaped child", func() bool { return len(sessionProcesses(&rec, roots)) >= 4 })
	before := sessionProcesses(&rec, roots)
	t0 := time.Now()
	if err := d.Delete(context.Background(), id); err != nil {
		t.Fatal(err)
	}
	t.Logf("delete took %s", time.Since(t0))
	for _, pid := range before {
		if running(pid, 0) {
			if uid, _ := procUID(pid); uid == rec.UID {
				t.Errorf("process %d (%v) survived", pid, procCmdline(pid))
			}
		}
	}
	if left := sessionProcesses(&rec, roots); len(left) > 0 {
		t.Errorf("processes left: %v", left)
	}
	for _, p := range []string{rec.Dir, rec.Socket, d.recordPath(id), rec.Log} {
		if _, err := os.Lstat(p); err == nil {
			t.Errorf("%s is left", p)
		}
	}
	// Test packages run side by side, so another package's X server may
	// take the freed display at once; only this server's files count.
	for _, p := range []string{"/tmp/.X11-unix/X" + strconv.Itoa(rec.Display), "/tmp/.X" + strconv.Itoa(rec.Display) + "-lock"} {
		if _, err := os.Lstat(p); err == nil && !displayRetaken(rec.Display, rec.ServerPID) {
			t.Errorf("%s is left", p)
		}
	}
	if _, ok := sessionInfo(t, d, id); ok {
		t.Error("deleted session is listed")
	}
	if err := d.Delete(context.Background(), id); err != nil {
		t.Errorf("second delete: %v", err)
	}
}

// displayRetaken reports whether display n's lock file names a running X
// server other than pid: one that took the display after pid's went.
func displayRetaken(n, pid int) bool {
	b, err := os.ReadFile("/tmp/.X" + strconv.Itoa(n) + "-lock")
	if err != nil {
		return false
	}
	other, err := strconv.Atoi(strings.TrimSpace(string(b)))
	return err == nil && other != pid && running(other, 0)
}

func TestDriver_ServerDies(t *testing.T) {
	d := newDriver(t, "")
	var notified atomic.Int32
	d.Notify(func() { notified.Add(1) })
	var watched atomic.Value
	stop := d.Watch(func(id string) { watched.Store(id) })
	defer stop()
	id := newID(t)
	mustCreate(t, d, agent.CreateRequest{ID: id, Owner: testUser2, AutorunFile: "sleep.sh"})
	rec, _ := d.recordOf(id)
	before := notified.Load()
	if err := syscall.Kill(rec.ServerPID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	poll.Until(t, 5*time.Second, "the notification", func() bool { return notified.Load() > before })
	t.Logf("notified %s after the kill", time.Since(t0))
	info, ok := sessionInfo(t, d, id)
	if !ok || info.State != agentproto.StateDeleted || info.StateReason != reasonExited {
		t.Fatalf("session = %+v", info)
	}
	if w, _ := watched.Load().(string); w != id {
		t.Errorf("watcher got %q", w)
	}
	if _, ok := d.Session(id); ok {
		t.Error("the gateway still sees the session")
	}
	// The rest of the session goes too.
	roots := map[int]bool{rec.ServerPID: true, rec.InitPID: true, rec.AutorunPID: true}
	poll.Until(t, 6*time.Second, "the session's processes to end", func() bool { return len(sessionProcesses(&rec, roots)) == 0 })
	poll.Until(t, 2*time.Second, "the session's files to go", func() bool {
		_, err1 := os.Lstat(rec.Dir)
		_, err2 := os.Lstat(d.recordPath(id))
		return err1 != nil && err2 != nil
	})
	if err := d.Delete(context.Background(), id); err != nil {
		t.Errorf("delete of a dead session: %v", err)
	}
}

func TestDriver_Readopt(t *testing.T) {
	state := t.TempDir()
	d1, err := New(Config{StateDir: state, AutorunFolder: testFolders + "/autorun", Geometry: "1024x768", DesktopCommand: "openbox"})
	if err != nil {
		t.Fatal(err)
	}
	id := newID(t)
	ctx := context.Background()
	if err := d1.Create(ctx, agent.CreateRequest{ID: id, Owner: testUser1, AutorunFile: "xterm.sh", PermissionsFile: "[permissions]\n%owner% allow builtin\n"}); err != nil {
		t.Fatal(err)
	}
	rec, _ := d1.recordOf(id)
	d1.Close()
	if !running(rec.ServerPID, rec.ServerStart) {
		t.Fatal("Close stopped the session")
	}

	d2 := newDriver(t, state)
	info, ok := sessionInfo(t, d2, id)
	if !ok || info.State != agentproto.StateReady || info.Owner != testUser1 || !info.CreationTime.Equal(rec.Created) {
		t.Fatalf("re-adopted session = %+v", info)
	}
	if gs, ok := d2.Session(id); !ok || gs.Socket != rec.Socket || gs.PID != rec.ServerPID || gs.Permissions == nil {
		t.Errorf("gateway view = %+v", gs)
	}
	if _, err := d2.Screenshot(ctx, id, 100, 100, agentproto.FormatPNG); err != nil {
		t.Errorf("screenshot of a re-adopted session: %v", err)
	}
	// A new session does not take the adopted one's display.
	id2 := newID(t)
	mustCreate(t, d2, agent.CreateRequest{ID: id2, Owner: testUser2})
	if rec2, _ := d2.recordOf(id2); rec2.Display == rec.Display {
		t.Errorf("display %d given twice", rec.Display)
	}
	// Its death is noticed although it is no child of this process.
	var notified atomic.Int32
	d2.Notify(func() { notified.Add(1) })
	syscall.Kill(rec.ServerPID, syscall.SIGTERM)
	poll.Until(t, 8*time.Second, "the adopted session's death", func() bool {
		info, _ := sessionInfo(t, d2, id)
		return info.State == agentproto.StateDeleted
	})
	poll.Until(t, time.Second, "the notification", func() bool { return notified.Load() > 0 })

	// A stale record is dropped and reported DELETED once.
	stale := rec
	stale.ID = newID(t)
	stale.ServerPID = 1 << 22
	stale.Dir, stale.Socket, stale.Cookie, stale.Log = "", "", "", ""
	if err := d2.saveRecord(&stale); err != nil {
		t.Fatal(err)
	}
	d3 := newDriver(t, state)
	if info, ok := sessionInfo(t, d3, stale.ID); !ok || info.State != agentproto.StateDeleted {
		t.Errorf("stale session = %+v %v", info, ok)
	}
	if _, err := os.Stat(d3.recordPath(stale.ID)); err == nil {
		t.Error("stale record kept")
	}
}

func TestDriver_Permissions(t *testing.T) {
	d := newDriver(t, "")
	id := newID(t)
	mustCreate(t, d, agent.CreateRequest{ID: id, Owner: testUser1})
	ctx := context.Background()
	gs, _ := d.Session(id)
	if !gs.Permissions.CanConnect(testUser1, testUser1, nil) || gs.Permissions.CanConnect(testUser2, testUser1, nil) {
		t.Error("default permissions are not owner-only")
	}
	var watched atomic.Value
	stop := d.Watch(func(id string) { watched.Store(id) })
	defer stop()
	if err := d.SetPermissions(ctx, id, "[permissions]\n%owner% allow bogus\n"); err == nil {
		t.Error("invalid file accepted")
	}
	text := "[permissions]\n%owner% allow builtin\n" + testUser2 + " allow display\n"
	if err := d.SetPermissions(ctx, id, text); err != nil {
		t.Fatal(err)
	}
	if w, _ := watched.Load().(string); w != id {
		t.Errorf("watcher got %q", w)
	}
	gs, _ = d.Session(id)
	if !gs.Permissions.CanConnect(testUser2, testUser1, nil) || gs.Permissions.Allowed(testUser2, testUser1, "keyboard", nil) {
		t.Error("new permissions not applied")
	}
	data, _ := os.ReadFile(d.recordPath(id))
	if !strings.Contains(string(data), testUser2+` allow display`) {
		t.Error("permissions not kept in the state file")
	}
	if err := d.SetPermissions(ctx, "nope", text); err != ErrNotFound {
		t.Errorf("unknown session: %v", err)
	}
	// Connection counts from the gateway show in Sessions.
	when := time.Now()
	d.ConnectionChanged(id, 2, time.Time{})
	if info, _ := sessionInfo(t, d, id); info.NumConnections != 2 || !info.LastDisconnectionTime.IsZero() {
		t.Errorf("session = %+v", info)
	}
	d.ConnectionChanged(id, 1, when)
	if info, _ := sessionInfo(t, d, id); info.NumConnections != 1 || !info.LastDisconnectionTime.Equal(when.UTC().Truncate(time.Millisecond)) {
		t.Errorf("session = %+v", info)
	}
}

func TestDriver_Displays(t *testing.T) {
	d := newDriver(t, "")
	// Squat the first free display with a lock file, as a stale server would.
	n, err := d.allocDisplay("probe", nil)
	if err != nil {
		t.Fatal(err)
	}
	d.mu.Lock()
	d.releaseDisplayLocked(n, "probe")
	d.mu.Unlock()
	lock := "/tmp/.X" + strconv.Itoa(n) + "-lock"
	if err := os.WriteFile(lock, []byte("      1\n"), 0o444); err != nil {
		t.Fatal(err)
	}
	defer os.Remove(lock)
	// And a later one with an abstract socket, which the allocator sees: the
	// next number whose abstract socket is free (tests of other packages
	// may run X servers at the same time).
	var abs net.Listener
	m := n + 1
	for ; m < n+displayCount; m++ {
		if abs, err = net.Listen("unix", "@/tmp/.X11-unix/X"+strconv.Itoa(m)); err == nil {
			break
		}
	}
	if abs == nil {
		t.Fatalf("no display above %d to squat: %v", n, err)
	}
	defer abs.Close()
	id1, id2 := newID(t), newID(t)
	mustCreate(t, d, agent.CreateRequest{ID: id1, Owner: testUser1})
	mustCreate(t, d, agent.CreateRequest{ID: id2, Owner: testUser2})
	r1, _ := d.recordOf(id1)
	r2, _ := d.recordOf(id2)
	if r1.Display == n || r1.Display == m || r2.Display == n || r2.Display == m || r1.Display == r2.Display {
		t.Errorf("displays %d and %d (squatted %d, %d)", r1.Display, r2.Display, n, m)
	}
}

func TestDriver_Health(t *testing.T) {
	d := newDriver(t, "")
	if ok, reason := d.Health(context.Background()); !ok {
		t.Errorf("health: %s", reason)
	}
	d2, err := New(Config{StateDir: t.TempDir(), XvncPath: "/nonexistent/Xvnc"})
	if err != nil {
		t.Fatal(err)
	}
	defer d2.Close()
	ok, reason := d2.Health(context.Background())
	if ok || reason != "Xvnc (tigervnc-standalone-server) is not installed" {
		t.Errorf("health = %v %q", ok, reason)
	}
	if err := d2.Create(context.Background(), agent.CreateRequest{ID: newID(t), Owner: testUser1}); err == nil || !strings.Contains(err.Error(), "not installed") {
		t.Errorf("create without Xvnc: %v", err)
	}
	if _, err := New(Config{}); err == nil {
		t.Error("New without a state directory")
	}
	if _, err := New(Config{StateDir: t.TempDir(), Geometry: "big"}); err == nil {
		t.Error("bad geometry accepted")
	}
}

func TestDriver_DeleteWhileCreating(t *testing.T) {
	d := newDriver(t, "")
	id := newID(t)
	errc := make(chan error, 1)
	go func() { errc <- d.Create(context.Background(), agent.CreateRequest{ID: id, Owner: testUser1}) }()
	poll.Until(t, 5*time.Second, "the session to be listed", func() bool { _, ok := sessionInfo(t, d, id); return ok })
	if err := d.Delete(context.Background(), id); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; err == nil {
		// The start may have finished before the delete: then the delete
		// removed a READY session, which is fine too.
		t.Log("create finished before the delete")
	}
	if _, ok := sessionInfo(t, d, id); ok {
		t.Error("session still listed")
	}
	if _, err := os.Stat(d.recordPath(id)); err == nil {
		t.Error("state file left")
	}
}

// drawWindow maps a white 200×100 window on the session's display.
func drawWindow(t *testing.T, rec *record) {
	t.Helper()
	cookie, err := rec.xCookie()
	if err != nil {
		t.Fatal(err)
	}
	c, err := xConnect(context.Background(), rec.Display, cookie, rec.ServerPID, time.Now().Add(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	scr := xproto.Setup(c).DefaultScreen(c)
	w, err := xproto.NewWindowId(c)
	if err != nil {
		t.Fatal(err)
	}
	err = xproto.CreateWindowChecked(c, scr.RootDepth, w, scr.Root, 50, 50, 200, 100, 0, xproto.WindowClassInputOutput, scr.RootVisual,
		xproto.CwBackPixel|xproto.CwOverrideRedirect, []uint32{scr.WhitePixel, 1}).Check()
	if err == nil {
		err = xproto.MapWindowChecked(c, w).Check()
	}
	if err != nil {
		t.Fatal(err)
	}
}

func TestReadXauth_OwnerOnly(t *testing.T) {
	dir := t.TempDir()
	uid := uidOf(t, testUser1)
	cookie := bytes.Repeat([]byte{7}, 16)
	good := filepath.Join(dir, "good")
	os.WriteFile(good, xauthEntry(cookie), 0o600)
	os.Chown(good, uid, 0)
	if got, err := cookieFor(good, 3, uid); err != nil || !bytes.Equal(got, cookie) {
		t.Errorf("owner's file: %v %v", got, err)
	}
	if _, err := cookieFor(good, 3, uid+1); err == nil {
		t.Error("another user's file accepted")
	}
	link := filepath.Join(dir, "link")
	os.Symlink(good, link)
	if _, err := cookieFor(link, 3, uid); err == nil {
		t.Error("symlink followed")
	}
}

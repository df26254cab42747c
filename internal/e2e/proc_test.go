package e2e

import (
	"bytes"
	"fmt"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// procInfo is a process as /proc shows it.
type procInfo struct {
	pid     int
	uid     int // owner of /proc/PID (the effective user)
	state   string
	args    []string
	cmdline string // args joined with spaces
	environ []string
}

// listProcs reads every process of the host. Processes that end while it
// reads are skipped; zombies have no command line or environment.
func listProcs() []procInfo {
	ents, _ := os.ReadDir("/proc")
	var out []procInfo
	for _, ent := range ents {
		pid, err := strconv.Atoi(ent.Name())
		if err != nil {
			continue
		}
		dir := filepath.Join("/proc", ent.Name())
		fi, err := os.Stat(dir)
		if err != nil {
			continue
		}
		p := procInfo{pid: pid, uid: int(fi.Sys().(*syscall.Stat_t).Uid)}
		if b, err := os.ReadFile(filepath.Join(dir, "stat")); err == nil {
			if i := bytes.LastIndexByte(b, ')'); i >= 0 && i+3 < len(b) {
				p.state = string(b[i+2 : i+3])
			}
		}
		if b, err := os.ReadFile(filepath.Join(dir, "cmdline")); err == nil {
			p.args = splitNUL(b)
			p.cmdline = strings.Join(p.args, " ")
		}
		if b, err := os.ReadFile(filepath.Join(dir, "environ")); err == nil {
			p.environ = splitNUL(b)
		}
		out = append(out, p)
	}
	return out
}

func splitNUL(b []byte) []string {
	b = bytes.TrimRight(b, "\x00")
	if len(b) == 0 {
		return nil
	}
	return strings.Split(string(b), "\x00")
}

// hasEnv says whether env holds exactly kv.
func hasEnv(env []string, kv string) bool {
	for _, e := range env {
		if e == kv {
			return true
		}
	}
	return false
}

// sessionProcesses returns the live processes that carry a session's ID:
// in their command line (Xvnc's socket path) or environment (XAUTHORITY in
// /run/user/UID/berth-ID).
func sessionProcesses(id string) []procInfo {
	var out []procInfo
	for _, p := range listProcs() {
		if p.pid == os.Getpid() || p.state == "Z" {
			continue
		}
		match := strings.Contains(p.cmdline, id)
		for _, e := range p.environ {
			if strings.HasPrefix(e, "XAUTHORITY=") && strings.Contains(e, "berth-"+id) {
				match = true
			}
		}
		if match {
			out = append(out, p)
		}
	}
	return out
}

// xserver is a session's Xvnc as found in /proc.
type xserver struct {
	pid     int
	display int
	uid     int
	socket  string // the -rfbunixpath argument
}

// mustFindXvnc finds the Xvnc of a session: the process named Xvnc whose
// command line holds the session ID.
func mustFindXvnc(tb testing.TB, id string) xserver {
	tb.Helper()
	for _, p := range listProcs() {
		if len(p.args) < 2 || filepath.Base(p.args[0]) != "Xvnc" || !strings.Contains(p.cmdline, id) || p.state == "Z" {
			continue
		}
		x := xserver{pid: p.pid, uid: p.uid, display: -1}
		if n, err := strconv.Atoi(strings.TrimPrefix(p.args[1], ":")); err == nil && strings.HasPrefix(p.args[1], ":") {
			x.display = n
		}
		for i, a := range p.args {
			if a == "-rfbunixpath" && i+1 < len(p.args) {
				x.socket = p.args[i+1]
			}
		}
		if x.display < 0 || x.socket == "" {
			tb.Fatalf("Xvnc of session %s (pid %d) has no display or socket in its command line: %q", id, p.pid, p.cmdline)
		}
		return x
	}
	tb.Fatalf("no Xvnc process has session %s in its command line", id)
	return xserver{}
}

// leftovers returns the processes of uid that belong to a session: its ID in
// their command line or XAUTHORITY, or its display in their DISPLAY.
func leftovers(uid int, id string, display int) []procInfo {
	var out []procInfo
	disp := "DISPLAY=:" + strconv.Itoa(display)
	for _, p := range listProcs() {
		if p.uid != uid || p.state == "Z" {
			continue
		}
		if strings.Contains(p.cmdline, id) || hasEnv(p.environ, disp) {
			out = append(out, p)
			continue
		}
		for _, e := range p.environ {
			if strings.HasPrefix(e, "XAUTHORITY=") && strings.Contains(e, "berth-"+id) {
				out = append(out, p)
				break
			}
		}
	}
	return out
}

// describeProcs formats processes for a failure message.
func describeProcs(ps []procInfo) string {
	var b strings.Builder
	for _, p := range ps {
		fmt.Fprintf(&b, "\n  pid %d uid %d state %s: %s", p.pid, p.uid, p.state, p.cmdline)
	}
	return b.String()
}

// mustUser returns a local user's UID and home directory.
func mustUser(tb testing.TB, name string) (int, string) {
	tb.Helper()
	u, err := user.Lookup(name)
	if err != nil {
		tb.Fatal(err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	return uid, u.HomeDir
}

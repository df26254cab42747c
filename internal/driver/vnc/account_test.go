package vnc

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/account"
	"github.com/berth-dev/berth/internal/agent"
	"github.com/berth-dev/berth/internal/agentproto"
)

// run runs an account tool (useradd, usermod, ...), retrying while another
// one holds the lock on /etc/passwd or /etc/group (other test packages
// create users at the same time).
func run(t testing.TB, name string, args ...string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		out, err := exec.Command(name, args...).CombinedOutput()
		if err == nil {
			return
		}
		if strings.Contains(string(out), "lock") && time.Now().Before(deadline) {
			time.Sleep(100 * time.Millisecond)
			continue
		}
		t.Fatalf("%s %q: %v: %s", name, args, err, out)
	}
}

// quiet runs an account tool and ignores its failure (removing what may not
// exist).
func quiet(name string, args ...string) { exec.Command(name, args...).Run() }

// newGroup creates a local group for the test (removed afterwards).
func newGroup(t testing.TB, name string) {
	t.Helper()
	quiet("groupdel", name)
	run(t, "groupadd", name)
	t.Cleanup(func() { quiet("groupdel", name) })
}

// newUser creates a local user with useradd's arguments (removed with its
// home afterwards), then runs setup's commands on it.
func newUser(t testing.TB, name string, useradd []string, setup ...[]string) {
	t.Helper()
	quiet("userdel", "-r", name)
	run(t, "useradd", append(useradd, name)...)
	t.Cleanup(func() { quiet("userdel", "-r", "-f", name) })
	for _, c := range setup {
		run(t, c[0], c[1:]...)
	}
}

// setPassword gives a user a password (chpasswd), so that a lock has
// something to lock.
func setPassword(t testing.TB, name string) {
	t.Helper()
	cmd := exec.Command("chpasswd")
	cmd.Stdin = strings.NewReader(name + ":Berth-test-pw-9\n")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("chpasswd: %v: %s", err, out)
	}
}

// userProcesses returns the live processes of uid that belong to a
// session with ID id: an X server, or a program whose XAUTHORITY is in the
// session's directory (other processes of system accounts, such as atd's,
// are not the test's business).
func userProcesses(uid int, id string) []string {
	var out []string
	for _, pid := range listPIDs() {
		if u, err := procUID(pid); err != nil || u != uid {
			continue
		}
		if pi, err := readStat(pid); err != nil || pi.state == 'Z' {
			continue
		}
		argv := procCmdline(pid)
		env, _ := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pid))
		if len(argv) > 0 && strings.Contains(argv[0], "Xvnc") || strings.Contains(string(env), "/berth-"+id+"/") {
			out = append(out, fmt.Sprintf("%d %q", pid, argv))
		}
	}
	return out
}

// refused checks that a create was refused with want as its whole reason,
// marked invalid, and that nothing of the session exists: no listing, no
// process of the owner, no session directory.
func refused(t *testing.T, d *Driver, owner, want string) {
	t.Helper()
	id := newID(t)
	err := d.Create(context.Background(), agent.CreateRequest{ID: id, Owner: owner, AutorunFile: "sleep.sh"})
	if err == nil {
		d.Delete(context.Background(), id)
		t.Fatalf("%s: create succeeded", owner)
	}
	if err.Error() != want || !errors.Is(err, agent.ErrInvalidRequest) {
		t.Errorf("%s: error\n got %v (invalid request: %v)\nwant %s", owner, err, errors.Is(err, agent.ErrInvalidRequest), want)
	}
	if _, ok := sessionInfo(t, d, id); ok {
		t.Errorf("%s: refused session is listed", owner)
	}
	uid := uidOf(t, owner)
	if ps := userProcesses(uid, id); len(ps) > 0 {
		t.Errorf("%s: processes of uid %d run after the refusal: %v", owner, uid, ps)
	}
	if _, err := os.Lstat(filepath.Join("/run/user", strconv.Itoa(uid), "berth-"+id)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("%s: the session directory exists (%v)", owner, err)
	}
}

// TestDriver_AccountPolicy: the attack is a broker (or a client it trusts)
// asking for a desktop owned by an account that must never log in: a system
// account, one whose shell is nologin, a locked or an expired account, a
// member of a denied group, a non-member of the allowed groups. Each create
// is refused with the policy's reason before anything runs as the owner;
// valid users still get working sessions.
func TestDriver_AccountPolicy(t *testing.T) {
	newGroup(t, "bvpol-deny")
	newGroup(t, "bvpol-allow")
	newUser(t, "bvpol-sys", []string{"-r", "-s", "/bin/sh"})
	newUser(t, "bvpol-nologin", []string{"-m", "-s", "/usr/sbin/nologin"})
	newUser(t, "bvpol-locked", []string{"-m", "-s", "/bin/sh"})
	setPassword(t, "bvpol-locked")
	run(t, "usermod", "-L", "bvpol-locked")
	newUser(t, "bvpol-expired", []string{"-m", "-s", "/bin/sh"}, []string{"usermod", "-e", "1970-01-02", "bvpol-expired"})
	newUser(t, "bvpol-inactive", []string{"-m", "-s", "/bin/sh"})
	setPassword(t, "bvpol-inactive")
	run(t, "chage", "-d", "2000-01-01", "-M", "30", "-I", "10", "bvpol-inactive")
	newUser(t, "bvpol-denied", []string{"-m", "-s", "/bin/sh", "-G", "bvpol-deny"})
	newUser(t, "bvpol-allowed", []string{"-m", "-s", "/bin/bash", "-G", "bvpol-allow"})

	pol := account.DefaultPolicy()
	pol.DenyGroups = []string{"bvpol-deny"}
	d := newDriverWith(t, func(c *Config) { c.Account = &account.Checker{Policy: pol} })
	prefix := func(owner string) string {
		return fmt.Sprintf("owner %q is refused by the account policy: ", owner)
	}
	sysUID := uidOf(t, "bvpol-sys")
	tests := []struct{ owner, want string }{
		{"daemon", prefix("daemon") + "uid 1 is below the minimum 1000 (agent.conf [account] min_uid)"},
		{"bvpol-sys", prefix("bvpol-sys") + fmt.Sprintf("uid %d is below the minimum 1000 (agent.conf [account] min_uid)", sysUID)},
		{"bvpol-nologin", prefix("bvpol-nologin") + "the login shell /usr/sbin/nologin refuses logins (agent.conf [account] require_valid_shell)"},
		{"bvpol-locked", prefix("bvpol-locked") + "the account is locked (its password is locked in /etc/shadow) (agent.conf [account] refuse_locked)"},
		{"bvpol-expired", prefix("bvpol-expired") + "the account expired on 1970-01-02 (agent.conf [account] refuse_expired)"},
		{"bvpol-inactive", prefix("bvpol-inactive") + "the account is disabled: its password expired on 2000-01-31 and stayed unchanged past the inactivity period of 10 days (agent.conf [account] refuse_expired)"},
		{"bvpol-denied", prefix("bvpol-denied") + `the user is a member of the denied group "bvpol-deny" (agent.conf [account] deny_groups)`},
	}
	for _, tc := range tests {
		t.Run(tc.owner, func(t *testing.T) { refused(t, d, tc.owner, tc.want) })
	}
	// The default policy lets the test users through.
	mustCreate(t, d, agent.CreateRequest{ID: newID(t), Owner: testUser1})

	// allow_groups: members only.
	pol = account.DefaultPolicy()
	pol.AllowGroups = []string{"bvpol-allow"}
	d2 := newDriverWith(t, func(c *Config) { c.Account = &account.Checker{Policy: pol} })
	refused(t, d2, testUser2, prefix(testUser2)+`the user is in none of the allowed groups "bvpol-allow" (agent.conf [account] allow_groups)`)
	id := newID(t)
	mustCreate(t, d2, agent.CreateRequest{ID: id, Owner: "bvpol-allowed", AutorunFile: "sleep.sh"})
	if s, ok := sessionInfo(t, d2, id); !ok || s.State != agentproto.StateReady {
		t.Fatalf("allowed user's session %+v", s)
	}
	rec, _ := d2.recordOf(id)
	if processUID(t, rec.ServerPID) != uidOf(t, "bvpol-allowed") {
		t.Error("the allowed user's Xvnc runs as someone else")
	}
	if err := rfbPing(rec.Socket, time.Now().Add(3*time.Second)); err != nil {
		t.Errorf("the allowed user's session does not answer: %v", err)
	}
	d2.Delete(context.Background(), id)
}

// TestDriver_PAM_Nologin: pam_nologin's file (here the test service's
// file=...; /etc/nologin on a host) refuses new sessions with its text in the
// reason, the way it refuses logins; nothing of the session runs. Without
// the file sessions start again.
func TestDriver_PAM_Nologin(t *testing.T) {
	d := newDriver(t, "")
	nologin := filepath.Join(testFolders, "nologin")
	if err := os.WriteFile(nologin, []byte("berth maintenance until noon\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	defer os.Remove(nologin)
	refused(t, d, testUser2, fmt.Sprintf("owner %q is refused by PAM (service %s, account): Authentication failure: berth maintenance until noon", testUser2, testPAMService))
	os.Remove(nologin)
	mustCreate(t, d, agent.CreateRequest{ID: newID(t), Owner: testUser2})
}

// TestDriver_PAM_Limits: pam_limits' limits (the test service's conf=...)
// apply to the session's X server, window manager and autorun program, and
// not to the agent. The agent's soft open-files limit is set below its hard
// limit first, as under systemd, so that the Go runtime's restore of that
// limit at exec would show.
func TestDriver_PAM_Limits(t *testing.T) {
	var orig syscall.Rlimit
	syscall.Getrlimit(syscall.RLIMIT_NOFILE, &orig)
	if orig.Max < 4096 {
		t.Skipf("the hard open files limit %d is too low for the test", orig.Max)
	}
	low := syscall.Rlimit{Cur: 1024, Max: orig.Max}
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &low); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Setrlimit(syscall.RLIMIT_NOFILE, &orig) })
	hard := strconv.FormatUint(orig.Max, 10)
	limits := filepath.Join(testFolders, "limits.conf")
	conf := fmt.Sprintf("%[1]s soft nofile 1234\n%[1]s hard nofile %[2]s\n%[1]s - locks 777\n", testUser2, hard)
	if err := os.WriteFile(limits, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.WriteFile(limits, nil, 0o644) })
	before, _ := os.ReadFile("/proc/self/limits")

	d := newDriver(t, "")
	id := newID(t)
	mustCreate(t, d, agent.CreateRequest{ID: id, Owner: testUser2, AutorunFile: "sleep.sh"})
	rec, _ := d.recordOf(id)
	for _, p := range []struct {
		role string
		pid  int
	}{{"Xvnc", rec.ServerPID}, {"init", rec.InitPID}, {"autorun", rec.AutorunPID}} {
		if p.pid == 0 {
			t.Errorf("no %s process", p.role)
			continue
		}
		if soft, h := procLimit(t, p.pid, "Max open files"); soft != "1234" || h != hard {
			t.Errorf("%s: open files limit %s/%s, want 1234/%s", p.role, soft, h, hard)
		}
		if soft, h := procLimit(t, p.pid, "Max file locks"); soft != "777" || h != "777" {
			t.Errorf("%s: file locks limit %s/%s, want 777/777", p.role, soft, h)
		}
	}
	if argv := procCmdline(rec.ServerPID); len(argv) == 0 || !strings.Contains(argv[0], "Xvnc") {
		t.Errorf("the recorded server PID runs %q, want Xvnc itself", argv)
	}
	after, _ := os.ReadFile("/proc/self/limits")
	if string(before) != string(after) {
		t.Errorf("the agent's limits changed:\n%s\n%s", before, after)
	}
}

// TestDriver_PAM_Modes: with pam = required a missing service refuses
// sessions and says why; auto starts them without PAM; off never uses PAM.
func TestDriver_PAM_Modes(t *testing.T) {
	d := newDriverWith(t, func(c *Config) { c.PAMService = "berth-no-such-service" })
	id := newID(t)
	err := d.Create(context.Background(), agent.CreateRequest{ID: id, Owner: testUser1})
	want := `sessions need PAM here (agent.conf [account] pam = "required"), but the PAM service "berth-no-such-service" has no file /etc/pam.d/berth-no-such-service`
	if err == nil || err.Error() != want {
		d.Delete(context.Background(), id)
		t.Errorf("required without a service: %v, want %s", err, want)
	}
	for _, mode := range []string{PAMAuto, PAMOff} {
		d := newDriverWith(t, func(c *Config) { c.PAM = mode; c.PAMService = "berth-no-such-service" })
		mustCreate(t, d, agent.CreateRequest{ID: newID(t), Owner: testUser1})
	}
	// With the service, off ignores it: the nologin file does not refuse.
	nologin := filepath.Join(testFolders, "nologin")
	os.WriteFile(nologin, []byte("closed\n"), 0o644)
	defer os.Remove(nologin)
	d = newDriverWith(t, func(c *Config) { c.PAM = PAMOff })
	mustCreate(t, d, agent.CreateRequest{ID: newID(t), Owner: testUser1})
	if _, err := New(Config{StateDir: t.TempDir(), PAM: "sometimes"}); err == nil {
		t.Error("PAM mode sometimes accepted")
	}
}

// procLimit reads one row of /proc/PID/limits: soft and hard.
func procLimit(t *testing.T, pid int, name string) (string, string) {
	t.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/limits", pid))
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.SplitSeq(string(data), "\n") {
		if rest, ok := strings.CutPrefix(line, name); ok {
			f := strings.Fields(rest)
			return f[0], f[1]
		}
	}
	t.Fatalf("no %q in /proc/%d/limits", name, pid)
	return "", ""
}

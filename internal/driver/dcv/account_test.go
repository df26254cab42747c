package dcv

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/account"
	"github.com/berth-dev/berth/internal/agent"
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

// quiet runs an account tool and ignores its failure.
func quiet(name string, args ...string) { exec.Command(name, args...).Run() }

// newUser creates a local user with useradd's arguments (removed with its
// home afterwards).
func newUser(t testing.TB, name string, useradd []string) {
	t.Helper()
	quiet("userdel", "-r", name)
	run(t, "useradd", append(useradd, name)...)
	t.Cleanup(func() { quiet("userdel", "-r", "-f", name) })
}

// ids returns a user's credentials.
func ids(t testing.TB, name string) *syscall.Credential {
	t.Helper()
	u, err := user.Lookup(name)
	if err != nil {
		t.Fatal(err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
}

// TestCreate_AccountPolicy: a virtual session runs its desktop as the owner,
// so its owner must pass the account policy before dcv runs: a system
// account, a nologin shell, a locked or expired account, a member of a
// denied group are refused with the reason, and `dcv create-session` never
// runs for them. Console sessions, whose desktop is the console user's, are
// not checked.
func TestCreate_AccountPolicy(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates local users")
	}
	quiet("groupdel", "bdcv-deny")
	run(t, "groupadd", "bdcv-deny")
	t.Cleanup(func() { quiet("groupdel", "bdcv-deny") })
	newUser(t, "bdcv-nologin", []string{"-m", "-s", "/usr/sbin/nologin"})
	newUser(t, "bdcv-locked", []string{"-m", "-s", "/bin/sh"})
	cmd := exec.Command("chpasswd")
	cmd.Stdin = strings.NewReader("bdcv-locked:Berth-test-pw-9\n")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("chpasswd: %v: %s", err, out)
	}
	run(t, "usermod", "-L", "bdcv-locked")
	newUser(t, "bdcv-expired", []string{"-m", "-s", "/bin/sh", "-e", "1970-01-02"})
	newUser(t, "bdcv-denied", []string{"-m", "-s", "/bin/sh", "-G", "bdcv-deny"})
	newUser(t, "bdcv-valid", []string{"-m", "-s", "/bin/bash"})

	pol := account.DefaultPolicy()
	pol.DenyGroups = []string{"bdcv-deny"}
	e := newEnv(t, func(c *Config) { c.Account = &account.Checker{Policy: pol} })
	writeExec(t, e.autorun+"/app.sh", "#!/bin/sh\n")
	prefix := func(owner string) string {
		return fmt.Sprintf("owner %q is refused by the account policy: ", owner)
	}
	tests := []struct{ owner, want string }{
		{"daemon", prefix("daemon") + "uid 1 is below the minimum 1000 (agent.conf [account] min_uid)"},
		{"bdcv-nologin", prefix("bdcv-nologin") + "the login shell /usr/sbin/nologin refuses logins (agent.conf [account] require_valid_shell)"},
		{"bdcv-locked", prefix("bdcv-locked") + "the account is locked (its password is locked in /etc/shadow) (agent.conf [account] refuse_locked)"},
		{"bdcv-expired", prefix("bdcv-expired") + "the account expired on 1970-01-02 (agent.conf [account] refuse_expired)"},
		{"bdcv-denied", prefix("bdcv-denied") + `the user is a member of the denied group "bdcv-deny" (agent.conf [account] deny_groups)`},
		{"no-such-user-berth", `owner "no-such-user-berth" is not a local user on this host`},
	}
	for i, tc := range tests {
		id := fmt.Sprintf("pol%d", i)
		err := e.d.Create(context.Background(), agent.CreateRequest{ID: id, Owner: tc.owner, AutorunFile: "app.sh", AutorunFileArguments: []string{"secret"}})
		if err == nil || err.Error() != tc.want || !errors.Is(err, agent.ErrInvalidRequest) {
			t.Errorf("%s: err\n got %v (invalid request: %v)\nwant %s", tc.owner, err, errors.Is(err, agent.ErrInvalidRequest), tc.want)
		}
		if _, err := os.Stat(e.d.scriptPath(id)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s: a wrapper script was written (%v)", tc.owner, err)
		}
	}
	if c := e.calls("create-session"); len(c) != 0 {
		t.Errorf("dcv ran for refused owners: %q", c)
	}
	if err := e.d.Create(context.Background(), agent.CreateRequest{ID: "ok1", Owner: "bdcv-valid", AutorunFile: "app.sh"}); err != nil {
		t.Errorf("valid owner: %v", err)
	}
	if err := e.d.Create(context.Background(), agent.CreateRequest{ID: "con1", Owner: "daemon", Type: "CONSOLE"}); err != nil {
		t.Errorf("console session: %v", err)
	}
	if n := len(e.calls("create-session")); n != 2 {
		t.Errorf("dcv ran %d times, want 2", n)
	}
}

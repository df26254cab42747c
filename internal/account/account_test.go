package account

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// fixtureNow is 2025-01-01, day 20089.
var fixtureNow = time.Date(2025, 1, 1, 12, 0, 0, 0, time.UTC)

// TestChecker_Fixtures applies policies to the fixture host in
// testdata/host: each refusal names its reason and key.
func TestChecker_Fixtures(t *testing.T) {
	def := DefaultPolicy()
	withGroups := func(allow, deny []string) Policy {
		p := DefaultPolicy()
		p.AllowGroups, p.DenyGroups = allow, deny
		return p
	}
	tests := []struct {
		name   string
		policy Policy
		user   string
		want   string // "" accepted; else the whole error text
	}{
		{"regular user", def, "alice", ""},
		{"system account", def, "daemon", `owner "daemon" is refused by the account policy: uid 1 is below the minimum 1000 (agent.conf [account] min_uid)`},
		{"root", def, "root", `owner "root" is refused by the account policy: uid 0 is below the minimum 1000 (agent.conf [account] min_uid)`},
		{"system account with a shell", def, "svc", `owner "svc" is refused by the account policy: uid 998 is below the minimum 1000 (agent.conf [account] min_uid)`},
		{"min_uid lowered", Policy{MinUID: 900, RequireValidShell: true}, "svc", ""},
		{"min_uid raised", Policy{MinUID: 1005}, "alice", `owner "alice" is refused by the account policy: uid 1000 is below the minimum 1005 (agent.conf [account] min_uid)`},
		{"empty shell is /bin/sh", def, "noshell", ""},
		{"nologin", def, "nologin", `owner "nologin" is refused by the account policy: the login shell /usr/sbin/nologin refuses logins (agent.conf [account] require_valid_shell)`},
		{"false", def, "falsesh", `owner "falsesh" is refused by the account policy: the login shell /bin/false refuses logins (agent.conf [account] require_valid_shell)`},
		{"unlisted shell", def, "oddshell", `owner "oddshell" is refused by the account policy: the login shell /opt/bin/notashell is not listed in /etc/shells (agent.conf [account] require_valid_shell)`},
		{"shell check off", Policy{}, "oddshell", ""},
		{"nologin with shell check off", Policy{}, "nologin", ""},
		{"locked", def, "locked", `owner "locked" is refused by the account policy: the account is locked (its password is locked in /etc/shadow) (agent.conf [account] refuse_locked)`},
		{"locked allowed", Policy{RequireValidShell: true, RefuseExpired: true}, "locked", ""},
		{"no password set is not locked", def, "nopass", ""},
		{"expired", def, "expired", `owner "expired" is refused by the account policy: the account expired on 2025-01-01 (agent.conf [account] refuse_expired)`},
		{"expired allowed", Policy{RefuseLocked: true}, "expired", ""},
		{"inactive", def, "inactive", `owner "inactive" is refused by the account policy: the account is disabled: its password expired on 2022-04-08 and stayed unchanged past the inactivity period of 30 days (agent.conf [account] refuse_expired)`},
		{"password must change", def, "mustchange", ""},
		{"no shadow entry", def, "noshadow", ""},
		{"deny group (supplementary)", withGroups(nil, []string{"banned"}), "denied", `owner "denied" is refused by the account policy: the user is a member of the denied group "banned" (agent.conf [account] deny_groups)`},
		{"deny group (primary)", withGroups(nil, []string{"staff"}), "member", `owner "member" is refused by the account policy: the user is a member of the denied group "staff" (agent.conf [account] deny_groups)`},
		{"deny group, not a member", withGroups(nil, []string{"banned"}), "alice", ""},
		{"allow group, member", withGroups([]string{"desktop"}, nil), "alice", ""},
		{"allow group, primary", withGroups([]string{"staff", "desktop"}, nil), "member", ""},
		{"allow group, not a member", withGroups([]string{"desktop", "wheel"}, nil), "member", `owner "member" is refused by the account policy: the user is in none of the allowed groups "desktop", "wheel" (agent.conf [account] allow_groups)`},
		{"deny wins over allow", withGroups([]string{"desktop"}, []string{"banned"}), "denied", `owner "denied" is refused by the account policy: the user is a member of the denied group "banned" (agent.conf [account] deny_groups)`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := &Checker{Policy: tc.policy, Root: "testdata/host", Now: func() time.Time { return fixtureNow }}
			err := c.Check(tc.user)
			if tc.want == "" {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			var r *Refusal
			if !errors.As(err, &r) {
				t.Fatalf("err = %v, want a *Refusal", err)
			}
			if err.Error() != tc.want {
				t.Errorf("err\n got %s\nwant %s", err, tc.want)
			}
		})
	}
}

// TestShadow_Expired follows pam_unix: the expiry day itself is expired; a
// password past its maximum age plus the inactivity period disables.
func TestShadow_Expired(t *testing.T) {
	at := func(d int64) time.Time { return time.Unix(d*86400+3600, 0) }
	tests := []struct {
		name string
		s    Shadow
		day  int64
		want bool
	}{
		{"expire tomorrow", Shadow{LastChange: 100, MaxDays: -1, Inactive: -1, Expire: 501}, 500, false},
		{"expire today", Shadow{LastChange: 100, MaxDays: -1, Inactive: -1, Expire: 500}, 500, true},
		{"expire day 0 (chage -E 0)", Shadow{LastChange: 100, MaxDays: -1, Inactive: -1, Expire: 0}, 500, true},
		{"no expiry", Shadow{LastChange: 100, MaxDays: -1, Inactive: -1, Expire: -1}, 500, false},
		{"inactive, last day", Shadow{LastChange: 100, MaxDays: 90, Inactive: 30, Expire: -1}, 219, false},
		{"inactive, disabled", Shadow{LastChange: 100, MaxDays: 90, Inactive: 30, Expire: -1}, 220, true},
		{"past max, no inactive period", Shadow{LastChange: 100, MaxDays: 90, Inactive: -1, Expire: -1}, 5000, false},
		{"must change (last change 0)", Shadow{LastChange: 0, MaxDays: 90, Inactive: 0, Expire: -1}, 5000, false},
		{"changed in the future", Shadow{LastChange: 6000, MaxDays: 90, Inactive: 0, Expire: -1}, 5000, false},
		{"huge values do not overflow", Shadow{LastChange: 1, MaxDays: 1 << 40, Inactive: 1 << 40, Expire: -1}, 5000, false},
	}
	for _, tc := range tests {
		if got := tc.s.expired(at(tc.day)) != ""; got != tc.want {
			t.Errorf("%s: expired = %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestLocked(t *testing.T) {
	tests := []struct {
		field string
		want  bool
	}{
		{"$y$j9T$salt$hash", false},
		{"!$y$j9T$salt$hash", true}, // usermod -L, passwd -l
		{"!!$6$salt$hash", true},
		{"!*", true},
		{"*LK*$6$x", true}, // Solaris-style lock
		{"!", false},       // useradd without a password (Debian)
		{"!!", false},      // useradd without a password (Red Hat)
		{"*", false},       // no password login
		{"", false},
	}
	for _, tc := range tests {
		if got := Locked(tc.field); got != tc.want {
			t.Errorf("Locked(%q) = %v, want %v", tc.field, got, tc.want)
		}
	}
}

func TestParseUIDMin(t *testing.T) {
	tests := []struct {
		text string
		want int
	}{
		{"UID_MIN 1000\n", 1000},
		{"# UID_MIN 5\nUID_MIN\t\t\t 500\nUID_MAX 60000\n", 500},
		{"UID_MIN 0x3e8\n", 1000},
		{"UID_MIN 01750\n", 1000},
		{"UID_MIN nonsense\n", DefaultUIDMin},
		{"UID_MIN -5\n", DefaultUIDMin},
		{"", DefaultUIDMin},
	}
	for _, tc := range tests {
		if got := parseUIDMin(tc.text); got != tc.want {
			t.Errorf("parseUIDMin(%q) = %d, want %d", tc.text, got, tc.want)
		}
	}
}

// TestChecker_MissingFiles: a host without login.defs takes 1000, without
// /etc/shells accepts no shell, without a shadow file has no locks.
func TestChecker_MissingFiles(t *testing.T) {
	root := t.TempDir()
	os.MkdirAll(filepath.Join(root, "etc"), 0o755)
	os.WriteFile(filepath.Join(root, "etc/passwd"), []byte("u:x:999:999::/home/u:/bin/sh\nv:x:1000:1000::/home/v:/bin/sh\n"), 0o644)
	c := &Checker{Policy: DefaultPolicy(), Root: root}
	if err := c.Check("u"); err == nil || !strings.Contains(err.Error(), "uid 999 is below the minimum 1000") {
		t.Errorf("u: %v", err)
	}
	if err := c.Check("v"); err == nil || !strings.Contains(err.Error(), "not listed in /etc/shells") {
		t.Errorf("v: %v", err)
	}
	c.Policy.RequireValidShell = false
	if err := c.Check("v"); err != nil {
		t.Errorf("v without the shell check: %v", err)
	}
	if err := c.Check("nobody-here"); !errors.Is(err, ErrUnknownUser) {
		t.Errorf("unknown user: %v", err)
	}
}

// TestChecker_UnreadableShadow: a shadow file that exists but cannot be read
// is an error, not an empty entry that would let a locked user through.
func TestChecker_UnreadableShadow(t *testing.T) {
	root := t.TempDir()
	os.MkdirAll(filepath.Join(root, "etc/shadow"), 0o755) // a directory: reading fails
	os.WriteFile(filepath.Join(root, "etc/passwd"), []byte("v:x:1000:1000::/home/v:/bin/sh\n"), 0o644)
	c := &Checker{Policy: DefaultPolicy(), Root: root}
	err := c.Check("v")
	var r *Refusal
	if err == nil || errors.As(err, &r) {
		t.Fatalf("err = %v, want a read error", err)
	}
}

// TestChecker_Host runs the default policy on this host's real files and
// name service: root and daemon are system accounts everywhere.
func TestChecker_Host(t *testing.T) {
	c := &Checker{Policy: DefaultPolicy()}
	for _, name := range []string{"root", "daemon"} {
		err := c.Check(name)
		var r *Refusal
		if !errors.As(err, &r) || r.Key != "min_uid" {
			t.Errorf("%s: %v, want a min_uid refusal", name, err)
		}
	}
	if err := c.Check("no-such-user-berth"); !errors.Is(err, ErrUnknownUser) {
		t.Errorf("unknown user: %v", err)
	}
	a, h, err := c.Lookup("daemon")
	if err != nil {
		t.Fatal(err)
	}
	if a.UID != 1 || h.UIDMin < 100 || len(h.Shells) == 0 {
		t.Errorf("daemon %+v, host %+v", a, h)
	}
}

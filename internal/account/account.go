// Package account decides whether a local user may own a desktop session on
// this host: the account policy that the agent applies before it starts
// anything as the user (agent.conf [account]).
//
// A user passes when, in this order:
//
//   - their user ID is at least the minimum (MinUID; 0 takes UID_MIN from
//     /etc/login.defs, 1000 when it says nothing): system accounts such as
//     daemon (uid 1) or www-data never own desktops;
//   - their login shell (empty means /bin/sh, as for login(1)) is listed in
//     /etc/shells and is not a nologin or false program (RequireValidShell);
//   - their password is not locked (RefuseLocked): a shadow password field
//     that is '!' followed by something, as `usermod -L` and `passwd -l`
//     leave a set password ("!$y$...", "!*"), or "*LK*". A field of only '!'
//     or '!!' (no password was ever set: useradd's default on Debian and Red
//     Hat) and '*' (no password login) are not locks: sessions do not log in
//     with a password, and such accounts are how hosts whose users sign in
//     elsewhere (single sign-on through the broker) look;
//   - their account is not expired and not disabled for inactivity
//     (RefuseExpired), as pam_unix decides: the shadow expiry date (field 8)
//     is today or earlier, or the password is older than its maximum age
//     plus the inactivity period (fields 5 and 7). A password that merely
//     must be changed (age past the maximum but within the inactivity
//     period, or last change 0) is not a refusal: sessions do not use it;
//   - they are in none of DenyGroups and, when AllowGroups is set, in at
//     least one of AllowGroups (primary group included). Deny wins.
//
// Users and groups come from the host's name service (NSS: /etc/passwd and
// /etc/group, or SSSD, winbind, LDAP), shadow entries from /etc/shadow; a
// user without a shadow entry (a directory user) has no lock or expiry
// information here, which the PAM account stack (package login) then
// checks. Tests point a Checker at fixture files with Root.
package account

import (
	"errors"
	"fmt"
	"math"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

// DefaultUIDMin is the minimum user ID when /etc/login.defs sets no UID_MIN.
const DefaultUIDMin = 1000

// Policy is the account policy: the [account] table of agent.conf.
type Policy struct {
	// MinUID is the lowest user ID that may own a session; 0 means UID_MIN
	// from /etc/login.defs (DefaultUIDMin when it has none).
	MinUID int
	// RequireValidShell refuses users whose login shell is not listed in
	// /etc/shells or is a nologin or false program.
	RequireValidShell bool
	// RefuseLocked refuses users whose password was locked.
	RefuseLocked bool
	// RefuseExpired refuses expired accounts and accounts disabled for
	// password inactivity.
	RefuseExpired bool
	// AllowGroups, when not empty, admits only members of one of these
	// groups (by name; the primary group counts).
	AllowGroups []string
	// DenyGroups refuses members of any of these groups.
	DenyGroups []string
}

// DefaultPolicy is the policy of an agent.conf without an [account] table:
// every check on, no group lists.
func DefaultPolicy() Policy {
	return Policy{RequireValidShell: true, RefuseLocked: true, RefuseExpired: true}
}

// Refusal is a user the policy refuses. Its text names the user, the reason
// and the agent.conf key that decided it.
type Refusal struct {
	// User is the user name as asked.
	User string
	// Reason says why, e.g. "uid 1 is below the minimum 1000".
	Reason string
	// Key is the [account] key concerned, e.g. "min_uid".
	Key string
}

// Error implements error:
// `owner "daemon" is refused by the account policy: uid 1 is below the minimum 1000 (agent.conf [account] min_uid)`.
func (r *Refusal) Error() string {
	return fmt.Sprintf("owner %q is refused by the account policy: %s (agent.conf [account] %s)", r.User, r.Reason, r.Key)
}

// ErrUnknownUser is returned (wrapped) for a user the host does not know.
var ErrUnknownUser = errors.New("not a local user on this host")

// Account is what the policy looks at about one user.
type Account struct {
	Name  string
	UID   int
	GID   int
	Shell string // as in passwd; "" means /bin/sh
	// Groups are the names of the user's groups, the primary group first.
	Groups []string
	// Shadow is the user's shadow entry; nil when there is none.
	Shadow *Shadow
}

// Shadow is an /etc/shadow entry. Day numbers count days since 1970-01-01;
// -1 stands for an empty field.
type Shadow struct {
	Password   string // field 2
	LastChange int64  // field 3
	MaxDays    int64  // field 5
	Inactive   int64  // field 7
	Expire     int64  // field 8
}

// Host is what the policy needs to know about the host.
type Host struct {
	// UIDMin is UID_MIN of /etc/login.defs (DefaultUIDMin when unset).
	UIDMin int
	// Shells are the lines of /etc/shells.
	Shells []string
}

// Evaluate applies the policy to an account: nil, or the *Refusal of the
// first check it fails. now decides expiry. It reads nothing.
func (p *Policy) Evaluate(a *Account, h *Host, now time.Time) *Refusal {
	refuse := func(key, format string, args ...any) *Refusal {
		return &Refusal{User: a.Name, Reason: fmt.Sprintf(format, args...), Key: key}
	}
	minUID := p.MinUID
	if minUID <= 0 {
		minUID = h.UIDMin
		if minUID <= 0 {
			minUID = DefaultUIDMin
		}
	}
	if a.UID < minUID {
		return refuse("min_uid", "uid %d is below the minimum %d", a.UID, minUID)
	}
	if p.RequireValidShell {
		shell := a.Shell
		if shell == "" {
			shell = "/bin/sh"
		}
		switch {
		case refusesLogins(shell):
			return refuse("require_valid_shell", "the login shell %s refuses logins", shell)
		case !slices.Contains(h.Shells, shell):
			return refuse("require_valid_shell", "the login shell %s is not listed in /etc/shells", shell)
		}
	}
	if p.RefuseLocked && a.Shadow != nil && Locked(a.Shadow.Password) {
		return refuse("refuse_locked", "the account is locked (its password is locked in /etc/shadow)")
	}
	if p.RefuseExpired && a.Shadow != nil {
		if why := a.Shadow.expired(now); why != "" {
			return refuse("refuse_expired", "%s", why)
		}
	}
	for _, g := range p.DenyGroups {
		if slices.Contains(a.Groups, g) {
			return refuse("deny_groups", "the user is a member of the denied group %q", g)
		}
	}
	if len(p.AllowGroups) > 0 && !slices.ContainsFunc(p.AllowGroups, func(g string) bool { return slices.Contains(a.Groups, g) }) {
		return refuse("allow_groups", "the user is in none of the allowed groups %s", quoteList(p.AllowGroups))
	}
	return nil
}

// refusesLogins reports whether a shell is a program that refuses logins.
func refusesLogins(shell string) bool {
	switch filepath.Base(shell) {
	case "nologin", "false":
		return true
	}
	return false
}

// Locked reports whether a shadow password field is locked: '!' (any number)
// followed by something (a locked password or '*'), or "*LK*". '!' or '!!'
// alone means no password was ever set, and is not a lock.
func Locked(field string) bool {
	if strings.HasPrefix(field, "*LK*") {
		return true
	}
	rest := strings.TrimLeft(field, "!")
	return rest != field && rest != ""
}

// expired says why a shadow entry is expired at now, or "". It follows
// pam_unix (check_shadow_expiry): the account expires on its expiry day; a
// password older than its maximum age plus the inactivity period disables
// the account.
func (s *Shadow) expired(now time.Time) string {
	today := now.Unix() / 86400
	if s.Expire >= 0 && today >= s.Expire {
		return fmt.Sprintf("the account expired on %s", day(s.Expire))
	}
	if s.LastChange <= 0 || today < s.LastChange || s.MaxDays < 0 || s.Inactive < 0 {
		return ""
	}
	limit := s.MaxDays + s.Inactive
	if limit < s.MaxDays {
		limit = math.MaxInt64 // overflow: never
	}
	if today-s.LastChange >= limit {
		return fmt.Sprintf("the account is disabled: its password expired on %s and stayed unchanged past the inactivity period of %d days", day(s.LastChange+s.MaxDays), s.Inactive)
	}
	return ""
}

// day formats a day number as a date.
func day(n int64) string {
	return time.Unix(n*86400, 0).UTC().Format(time.DateOnly)
}

func quoteList(l []string) string {
	q := make([]string, len(l))
	for i, s := range l {
		q[i] = strconv.Quote(s)
	}
	return strings.Join(q, ", ")
}

package account

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// Checker applies a Policy to the users of this host. The zero value applies
// the zero Policy (only the minimum user ID); use DefaultPolicy for the
// agent's defaults.
type Checker struct {
	// Policy is the policy applied.
	Policy Policy
	// Root, when set, makes the Checker read every file under Root
	// (Root/etc/passwd, group, shadow, login.defs, shells) and take users and
	// groups from those files only. Empty: this host, users and groups from
	// the name service (NSS). Tests only.
	Root string
	// Now is the clock of the expiry checks; nil means time.Now.
	Now func() time.Time
}

// Check applies the policy to the user name: nil when the user may own a
// session, a *Refusal when the policy refuses them, an error wrapping
// ErrUnknownUser for a user the host does not know, another error when an
// account database cannot be read.
func (c *Checker) Check(name string) error {
	a, h, err := c.Lookup(name)
	if err != nil {
		return err
	}
	now := time.Now
	if c.Now != nil {
		now = c.Now
	}
	if r := c.Policy.Evaluate(a, h, now()); r != nil {
		r.User = name
		return r
	}
	return nil
}

// Lookup gathers what the policy looks at about a user and the host.
func (c *Checker) Lookup(name string) (*Account, *Host, error) {
	a, err := c.user(name)
	if err != nil {
		return nil, nil, err
	}
	h := &Host{}
	if h.UIDMin, err = readUIDMin(c.path("/etc/login.defs")); err != nil {
		return nil, nil, err
	}
	if h.Shells, err = readShells(c.path("/etc/shells")); err != nil {
		return nil, nil, err
	}
	if a.Shadow, err = readShadow(c.path("/etc/shadow"), a.Name); err != nil {
		return nil, nil, err
	}
	return a, h, nil
}

func (c *Checker) path(p string) string {
	if c.Root == "" {
		return p
	}
	return filepath.Join(c.Root, p)
}

// user looks a user and their groups up: in the files under Root, or
// through NSS.
func (c *Checker) user(name string) (*Account, error) {
	if c.Root != "" {
		return filesUser(c.path("/etc/passwd"), c.path("/etc/group"), name)
	}
	pw, err := lookupPasswd(name)
	if err != nil {
		return nil, err
	}
	a := &Account{Name: pw.name, UID: pw.uid, GID: pw.gid, Shell: pw.shell}
	u := &user.User{Username: pw.name, Uid: strconv.Itoa(pw.uid), Gid: strconv.Itoa(pw.gid)}
	gids, err := u.GroupIds()
	if err != nil {
		// Without the list a member of a denied group could pass.
		return nil, fmt.Errorf("account policy: cannot list the groups of %q: %v", name, err)
	}
	// The primary group first.
	if len(gids) == 0 || gids[0] != u.Gid {
		gids = append([]string{u.Gid}, gids...)
	}
	seen := map[string]bool{}
	for _, gid := range gids {
		if seen[gid] {
			continue
		}
		seen[gid] = true
		g, err := user.LookupGroupId(gid)
		if err != nil {
			var unknown user.UnknownGroupIdError
			if errors.As(err, &unknown) {
				continue // a group ID without a name matches no name
			}
			return nil, fmt.Errorf("account policy: cannot look up group %s of %q: %v", gid, name, err)
		}
		a.Groups = append(a.Groups, g.Name)
	}
	return a, nil
}

// passwdEntry is the part of a passwd entry the policy needs.
type passwdEntry struct {
	name  string
	uid   int
	gid   int
	shell string
}

// unknownUser is the error for a user the host does not know.
func unknownUser(name string) error {
	return fmt.Errorf("owner %q is %w", name, ErrUnknownUser)
}

// filesUser reads a user and their groups from passwd and group files.
func filesUser(passwdPath, groupPath, name string) (*Account, error) {
	pw, ok, err := findPasswd(passwdPath, name)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, unknownUser(name)
	}
	a := &Account{Name: pw.name, UID: pw.uid, GID: pw.gid, Shell: pw.shell}
	var primary string
	var others []string
	err = eachLine(groupPath, func(f []string) {
		if len(f) < 4 {
			return
		}
		gid, err := strconv.Atoi(f[2])
		if err != nil {
			return
		}
		if gid == pw.gid && primary == "" {
			primary = f[0]
			return
		}
		for m := range strings.SplitSeq(f[3], ",") {
			if strings.TrimSpace(m) == pw.name {
				others = append(others, f[0])
				break
			}
		}
	})
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	if primary != "" {
		a.Groups = append(a.Groups, primary)
	}
	a.Groups = append(a.Groups, others...)
	return a, nil
}

// findPasswd finds a user in a passwd file.
func findPasswd(path, name string) (passwdEntry, bool, error) {
	var pw passwdEntry
	found := false
	err := eachLine(path, func(f []string) {
		if found || len(f) < 7 || f[0] != name {
			return
		}
		uid, err1 := strconv.Atoi(f[2])
		gid, err2 := strconv.Atoi(f[3])
		if err1 != nil || err2 != nil {
			return
		}
		pw = passwdEntry{name: f[0], uid: uid, gid: gid, shell: f[6]}
		found = true
	})
	if err != nil {
		return pw, false, fmt.Errorf("account policy: %w", err)
	}
	return pw, found, nil
}

// eachLine calls f with the ':'-separated fields of every line of a file
// that is not empty or a comment.
func eachLine(path string, f func(fields []string)) error {
	file, err := os.Open(path)
	if err != nil {
		return err
	}
	defer file.Close()
	sc := bufio.NewScanner(file)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		f(strings.Split(line, ":"))
	}
	return sc.Err()
}

// readUIDMin reads UID_MIN from login.defs; a missing file or key gives
// DefaultUIDMin.
func readUIDMin(path string) (int, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return DefaultUIDMin, nil
	}
	if err != nil {
		return 0, fmt.Errorf("account policy: %w", err)
	}
	return parseUIDMin(string(data)), nil
}

// parseUIDMin reads UID_MIN from the text of login.defs (decimal, 0x hex or
// 0 octal, as shadow's getdef reads numbers); DefaultUIDMin when it is
// missing or not a positive number.
func parseUIDMin(text string) int {
	uidMin := DefaultUIDMin
	for line := range strings.SplitSeq(text, "\n") {
		f := strings.Fields(line)
		if len(f) < 2 || f[0] != "UID_MIN" {
			continue
		}
		if n, err := strconv.ParseInt(strings.Trim(f[1], `"`), 0, 32); err == nil && n > 0 {
			uidMin = int(n)
		}
	}
	return uidMin
}

// readShells reads /etc/shells; a missing file lists nothing.
func readShells(path string) ([]string, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("account policy: %w", err)
	}
	var out []string
	for line := range strings.SplitSeq(string(data), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || line[0] == '#' {
			continue
		}
		out = append(out, line)
	}
	return out, nil
}

// readShadow returns name's shadow entry, nil when the file or the entry is
// missing. A file that exists but cannot be read is an error.
func readShadow(path, name string) (*Shadow, error) {
	var out *Shadow
	err := eachLine(path, func(f []string) {
		if out == nil && len(f) >= 8 && f[0] == name {
			out = parseShadow(f)
		}
	})
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("account policy: %w", err)
	}
	return out, nil
}

// parseShadow reads the fields of a shadow line; an empty or malformed
// number is -1 (unset), as shadow's own readers treat it.
func parseShadow(f []string) *Shadow {
	num := func(s string) int64 {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil || n < 0 || n > 1<<40 {
			return -1
		}
		return n
	}
	return &Shadow{Password: f[1], LastChange: num(f[2]), MaxDays: num(f[4]), Inactive: num(f[6]), Expire: num(f[7])}
}

// Groups returns the names of name's groups in the host's name service,
// the primary group first; nil when it cannot tell. The drivers report
// them with each session (a groups source for the broker's quotas).
func Groups(name string) []string {
	a, err := (&Checker{}).user(name)
	if err != nil {
		return nil
	}
	return a.Groups
}

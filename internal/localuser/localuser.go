// Package localuser gives berth's tests the real local users they run
// desktops and files as: it adds them with useradd when missing.
package localuser

import (
	"os"
	"os/exec"
	"os/user"
	"strconv"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/poll"
)

// User is a local user of the host.
type User struct {
	Name     string
	UID, GID int
	Home     string
}

// Ensure returns the local user name, added (with a home and /bin/sh) if
// missing. It skips tb when the process is not root. useradd fails while
// another test holds /etc/passwd's lock or adds the same user, so it tries
// until the user is there, for up to 30 s.
func Ensure(tb testing.TB, name string) User {
	tb.Helper()
	if os.Geteuid() != 0 {
		tb.Skip("needs root: runs as the real local user " + name)
	}
	var u *user.User
	poll.Until(tb, 30*time.Second, "useradd "+name, func() bool {
		var err error
		if u, err = user.Lookup(name); err != nil {
			exec.Command("useradd", "-m", "-s", "/bin/sh", name).Run()
			u, err = user.Lookup(name)
		}
		return err == nil
	})
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return User{Name: name, UID: uid, GID: gid, Home: u.HomeDir}
}

package vnc

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/agent"
	"github.com/berth-dev/berth/internal/agentproto"
	"github.com/berth-dev/berth/internal/login"
)

// Test users, created by TestMain when missing. The last three have the
// shapes of directory names: the host's user database knows them as they are,
// as it does on a host joined to a domain (SSSD, winbind).
const (
	testUser1      = "berthtest1"
	testUser2      = "berthtest2"
	testUserDotted = "berth.first"
	testUserMail   = "berth@corp.example"
	testUserDomain = `BERTH\berthdom`
)

// testFolders is a world-readable directory holding the init and autorun
// folders (test users must be able to run what is in them), and the files of
// the test PAM service.
var testFolders string

// testPAMService is the PAM service of the tests' drivers, installed in
// /etc/pam.d for the run: the packaged service, with pam_nologin and
// pam_limits reading testFolders/nologin and testFolders/limits.conf (the
// host's /etc/nologin and limits stay untouched).
var testPAMService = fmt.Sprintf("berth-vnc-test-%d", os.Getpid())

func TestMain(m *testing.M) {
	login.Main() // sessions start through the login helper: this binary
	if os.Geteuid() != 0 {
		fmt.Println("skipping internal/driver/vnc: the vnc driver tests run real Xvnc sessions as local users and need root")
		os.Exit(0)
	}
	if _, reason := findXvnc(""); reason != "" {
		fmt.Println("skipping internal/driver/vnc: " + reason + " (apt-get install tigervnc-standalone-server openbox xterm)")
		os.Exit(0)
	}
	for _, u := range []string{testUser1, testUser2, testUserDotted, testUserMail, testUserDomain} {
		if _, err := user.Lookup(u); err != nil {
			if out, err := exec.Command("useradd", "-m", "-s", "/bin/sh", u).CombinedOutput(); err != nil {
				fmt.Printf("useradd %s: %v: %s\n", u, err, out)
				os.Exit(1)
			}
		}
	}
	var err error
	testFolders, err = os.MkdirTemp("", "berth-vnc-test-")
	if err == nil {
		err = setupFolders(testFolders)
	}
	if err != nil {
		fmt.Println(err)
		os.Exit(1)
	}
	pamFile := filepath.Join("/etc/pam.d", testPAMService)
	pamText, err := testPAMText(testFolders)
	if err == nil {
		err = os.WriteFile(pamFile, []byte(pamText), 0o644)
	}
	if err != nil {
		fmt.Println(err)
		os.Exit(1)
	}
	code := m.Run()
	os.Remove(pamFile)
	os.RemoveAll(testFolders)
	os.Exit(code)
}

// testPAMText is the test PAM service: the packaged packaging/pam.d/berth
// with pam_nologin and pam_limits reading the files in dir.
func testPAMText(dir string) (string, error) {
	data, err := os.ReadFile("../../../packaging/pam.d/berth")
	if err != nil {
		return "", err
	}
	text := string(data)
	for mod, arg := range map[string]string{"pam_nologin.so": "file=" + dir + "/nologin", "pam_limits.so": "conf=" + dir + "/limits.conf"} {
		if !strings.Contains(text, mod+"\n") {
			return "", fmt.Errorf("packaging/pam.d/berth: no %s line", mod)
		}
		text = strings.Replace(text, mod+"\n", mod+" "+arg+"\n", 1)
	}
	return "# berth test service (internal/driver/vnc tests); removed after the run\n" + text, nil
}

// setupFolders writes the test init and autorun programs.
func setupFolders(dir string) error {
	files := map[string]string{
		// writes its arguments, one per line, into the storage root
		"autorun/args.sh":  "#!/bin/sh\nout=\"$HOME/berth-autorun-test\"\nfor a in \"$@\"; do printf '%s\\n' \"$a\"; done > \"$out/args.tmp\" && mv \"$out/args.tmp\" \"$out/args\"\nexec sleep 600\n",
		"autorun/xterm.sh": "#!/bin/sh\nexec xterm -fa 'DejaVu Sans Mono' -fs 11 -geometry 80x20+40+40 -bg white -fg black -e sleep 600\n",
		"autorun/sleep.sh": "#!/bin/sh\nexec sleep 600\n",
		"limits.conf":      "",
		// spawns a child that leaves the process group and session
		"autorun/escape.sh": "#!/bin/sh\nsetsid sleep 600 &\nexec sleep 600\n",
		"init/wm.sh":        "#!/bin/sh\nexec openbox\n",
		"init/noexec.sh":    "#!/bin/sh\n",
		"secret.sh":         "#!/bin/sh\nexec sleep 600\n",
	}
	for _, d := range []string{dir, dir + "/init", dir + "/autorun", dir + "/init/sub"} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
		if err := os.Chmod(d, 0o755); err != nil {
			return err
		}
	}
	for name, text := range files {
		mode := os.FileMode(0o755)
		if name == "init/noexec.sh" || name == "limits.conf" {
			mode = 0o644
		}
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), mode); err != nil {
			return err
		}
	}
	// A symlink that leads out of the init folder, and one that stays in.
	if err := os.Symlink("../../secret.sh", dir+"/init/sub/escape.sh"); err != nil {
		return err
	}
	return os.Symlink("../wm.sh", dir+"/init/sub/inside.sh")
}

// newDriver returns a driver on a fresh state directory, closed at cleanup:
// the default account policy, sessions in the test PAM service (required).
func newDriver(t testing.TB, stateDir string) *Driver {
	t.Helper()
	return newDriverWith(t, func(c *Config) {
		if stateDir != "" {
			c.StateDir = stateDir
		}
	})
}

// newDriverWith is newDriver with mod applied to the configuration.
func newDriverWith(t testing.TB, mod func(*Config)) *Driver {
	t.Helper()
	cfg := Config{
		InitFolder:    testFolders + "/init",
		AutorunFolder: testFolders + "/autorun",
		StateDir:      t.TempDir(),
		Geometry:      "1280x800",
		PAM:           PAMRequired,
		PAMService:    testPAMService,
		// openbox alone: a full desktop per test session would take seconds
		// and memory; TestDriver_Desktop covers the host's desktop.
		DesktopCommand: "openbox",
	}
	mod(&cfg)
	d, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

var idSeq struct {
	sync.Mutex
	n int
}

// newID returns a fresh session ID.
func newID(t testing.TB) string {
	idSeq.Lock()
	defer idSeq.Unlock()
	idSeq.n++
	return fmt.Sprintf("t%d-%d-%d", os.Getpid(), time.Now().UnixNano()%1e6, idSeq.n)
}

// mustCreate creates a session and deletes it at cleanup.
func mustCreate(t testing.TB, d *Driver, req agent.CreateRequest) {
	t.Helper()
	if req.ID == "" {
		t.Fatal("request without ID")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	defer cancel()
	t.Cleanup(func() { d.Delete(context.Background(), req.ID) })
	if err := d.Create(ctx, req); err != nil {
		t.Fatalf("create %s: %v", req.ID, err)
	}
}

// sessionInfo returns a session as Sessions lists it.
func sessionInfo(t testing.TB, d *Driver, id string) (agentproto.Session, bool) {
	t.Helper()
	list, err := d.Sessions(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range list {
		if s.ID == id {
			return s, true
		}
	}
	return agentproto.Session{}, false
}

// record returns a copy of a session's record.
func (d *Driver) recordOf(id string) (record, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	s, ok := d.sessions[id]
	if !ok {
		return record{}, false
	}
	return s.rec, true
}

// uidOf returns a test user's UID.
func uidOf(t testing.TB, name string) int {
	t.Helper()
	u, err := user.Lookup(name)
	if err != nil {
		t.Fatal(err)
	}
	n, _ := strconv.Atoi(u.Uid)
	return n
}

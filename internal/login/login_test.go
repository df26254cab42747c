package login

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// testService is the PAM service the tests install in /etc/pam.d (removed
// afterwards); its pam_nologin and pam_limits read files in testDir, so the
// host's own /etc/nologin and limits stay untouched.
var (
	testService string
	testDir     string
	testUser    = "nobody" // on every Debian host; PAM does not look at its shell
)

func TestMain(m *testing.M) {
	Main()
	if os.Geteuid() != 0 {
		fmt.Println("skipping internal/login: the helper switches users and opens PAM sessions, which needs root")
		os.Exit(0)
	}
	if err := loadPAM(); err != nil {
		fmt.Println("skipping internal/login: libpam is not available:", err)
		os.Exit(0)
	}
	var err error
	testDir, err = os.MkdirTemp("", "berth-login-test-")
	if err != nil {
		fmt.Println(err)
		os.Exit(1)
	}
	os.Chmod(testDir, 0o755)
	testService = fmt.Sprintf("berth-login-test-%d", os.Getpid())
	err = installTestService(testService, testDir)
	if err != nil {
		fmt.Println(err)
		os.Exit(1)
	}
	code := m.Run()
	os.Remove(filepath.Join("/etc/pam.d", testService))
	os.RemoveAll(testDir)
	os.Exit(code)
}

// sleepCmd is `sleep 60` as the test user.
func sleepCmd(t testing.TB) *exec.Cmd {
	t.Helper()
	u, err := user.Lookup(testUser)
	if err != nil {
		t.Skip(err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	cmd := exec.Command("sleep", "60")
	cmd.Env = []string{"HOME=/", "PATH=/usr/bin:/bin", "BERTH_MARK=1"}
	cmd.Dir = "/"
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), Groups: []uint32{uint32(gid)}}}
	return cmd
}

// started registers the cleanup of a started program.
func started(t *testing.T, st *Started) int {
	t.Helper()
	pid := st.Process.Pid
	t.Cleanup(func() {
		st.Process.Kill()
		st.Process.Wait()
	})
	return pid
}

// limit reads one line of /proc/PID/limits: soft and hard.
func limit(t *testing.T, pid int, name string) (string, string) {
	t.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/limits", pid))
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.SplitSeq(string(data), "\n") {
		if strings.HasPrefix(line, name) {
			f := strings.Fields(line[len(name):])
			return f[0], f[1]
		}
	}
	t.Fatalf("no %q in /proc/%d/limits", name, pid)
	return "", ""
}

func status(t *testing.T, pid int, key string) string {
	t.Helper()
	data, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	for line := range strings.SplitSeq(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, key+":"); ok {
			return strings.Join(strings.Fields(v), " ")
		}
	}
	return ""
}

// TestStart_PAMSession: the program runs as the user, is the PID Start
// returns (the helper became it), gets pam_limits' limits from the test
// service, keeps its extra descriptor and no other, while this process's
// limits stay as they were. The soft RLIMIT_NOFILE is set below the hard one
// first, as systemd does, so that the Go runtime's own handling of that
// limit at exec is exercised.
func TestStart_PAMSession(t *testing.T) {
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
	// The hard limit stays: Go's restore of the soft limit it found at
	// start would then succeed even without CAP_SYS_RESOURCE. (pam_limits
	// applies a soft nofile only with a hard one.)
	writeLimits(t, fmt.Sprintf("%[1]s soft nofile 1234\n%[1]s hard nofile %[2]s\n%[1]s - locks 777\n", testUser, hard))
	before, _ := os.ReadFile("/proc/self/limits")

	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer pr.Close()
	cmd := sleepCmd(t)
	cmd.ExtraFiles = []*os.File{pw}
	ranBefore := false
	st, err := Start(context.Background(), cmd, Options{Service: testService, User: testUser, Display: ":99", BeforeExec: func() error { ranBefore = true; return nil }})
	pw.Close()
	if err != nil {
		t.Fatal(err)
	}
	pid := started(t, st)
	if !ranBefore {
		t.Error("BeforeExec did not run")
	}
	exe, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
	if filepath.Base(exe) != "sleep" {
		t.Errorf("pid %d runs %s, want sleep", pid, exe)
	}
	u, _ := user.Lookup(testUser)
	for _, key := range []string{"Uid", "Gid"} {
		want := u.Uid
		if key == "Gid" {
			want = u.Gid
		}
		if got := strings.Fields(status(t, pid, key)); len(got) != 4 || got[0] != want || got[1] != want || got[2] != want || got[3] != want {
			t.Errorf("%s %v, want %s everywhere", key, got, want)
		}
	}
	if soft, h := limit(t, pid, "Max open files"); soft != "1234" || h != hard {
		t.Errorf("program's open files limit %s/%s, want 1234/%s", soft, h, hard)
	}
	if soft, hard := limit(t, pid, "Max file locks"); soft != "777" || hard != "777" {
		t.Errorf("program's file locks limit %s/%s, want 777/777", soft, hard)
	}
	after, _ := os.ReadFile("/proc/self/limits")
	if string(before) != string(after) {
		t.Errorf("this process's limits changed:\n%s\n%s", before, after)
	}
	// The program's dynamic loader opens its libraries for a moment after
	// exec (libc.so.6 on fd 4): a leaked descriptor is one that stays.
	var names []string
	deadline := time.Now().Add(5 * time.Second)
	for {
		fds, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
		names = names[:0]
		for _, f := range fds {
			l, _ := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, f.Name()))
			names = append(names, f.Name()+"→"+l)
		}
		if len(fds) == 4 || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if len(names) != 4 {
		t.Errorf("program has descriptors %v, want 0, 1, 2 and 3", names)
	}
	env, _ := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pid))
	if !strings.Contains(string(env), "BERTH_MARK=1") {
		t.Errorf("environment %q lacks the caller's", env)
	}

	// LimitsFrom: another program takes the first one's limits, no PAM.
	st2, err := Start(context.Background(), sleepCmd(t), Options{LimitsFrom: pid})
	if err != nil {
		t.Fatal(err)
	}
	pid2 := started(t, st2)
	if soft, h := limit(t, pid2, "Max open files"); soft != "1234" || h != hard {
		t.Errorf("second program's open files limit %s/%s, want 1234/%s", soft, h, hard)
	}
	if soft, _ := limit(t, pid2, "Max file locks"); soft != "777" {
		t.Errorf("second program's file locks limit %s, want 777", soft)
	}
}

// TestStart_Nologin: pam_nologin's file refuses the user, with its text in
// the reason, and no program runs.
func TestStart_Nologin(t *testing.T) {
	writeLimits(t, "")
	nologin := filepath.Join(testDir, "nologin")
	if err := os.WriteFile(nologin, []byte("berth maintenance until noon\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	defer os.Remove(nologin)
	cmd := sleepCmd(t)
	st, err := Start(context.Background(), cmd, Options{Service: testService, User: testUser})
	if err == nil {
		started(t, st)
		t.Fatal("started despite nologin")
	}
	var r *Refusal
	if !errors.As(err, &r) || !strings.Contains(err.Error(), "berth maintenance until noon") || !strings.Contains(err.Error(), `owner "nobody" is refused by PAM (service `+testService+`, account)`) {
		t.Fatalf("err = %v, want a PAM refusal quoting the nologin file", err)
	}
	os.Remove(nologin)
	st, err = Start(context.Background(), sleepCmd(t), Options{Service: testService, User: testUser})
	if err != nil {
		t.Fatal(err)
	}
	started(t, st)
}

func TestStart_Failures(t *testing.T) {
	writeLimits(t, "")
	cmd := sleepCmd(t)
	cmd.Path = "/nonexistent/program"
	if _, err := Start(context.Background(), cmd, Options{Service: testService, User: testUser}); err == nil || !strings.Contains(err.Error(), "start program: no such file or directory") {
		t.Errorf("missing program: %v", err)
	}
	if _, err := Start(context.Background(), sleepCmd(t), Options{BeforeExec: func() error { return errors.New("not today") }}); err == nil || err.Error() != "not today" {
		t.Errorf("BeforeExec failure: %v", err)
	}
	if _, err := Start(context.Background(), sleepCmd(t), Options{Service: "../passwd"}); err == nil || !strings.Contains(err.Error(), "not a PAM service name") {
		t.Errorf("bad service: %v", err)
	}
	cmd = sleepCmd(t)
	cmd.SysProcAttr.Credential.Uid = 0
	if _, err := Start(context.Background(), cmd, Options{}); err == nil || !strings.Contains(err.Error(), "not start programs as root") {
		t.Errorf("root: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Nanosecond)
	defer cancel()
	<-ctx.Done()
	if _, err := Start(ctx, sleepCmd(t), Options{}); err == nil {
		t.Error("started with an expired context")
	}
}

func TestAvailable(t *testing.T) {
	if err := Available(testService); err != nil {
		t.Errorf("test service: %v", err)
	}
	if err := Available("berth-no-such-service"); err == nil || !strings.Contains(err.Error(), "has no file /etc/pam.d/berth-no-such-service") {
		t.Errorf("missing service: %v", err)
	}
	if err := Available("a/b"); err == nil {
		t.Error("a/b accepted")
	}
}

func TestMergeEnv(t *testing.T) {
	got := MergeEnv([]string{"HOME=/home/a", "DISPLAY=:10"}, []string{"DISPLAY=:0", "XDG_SESSION_ID=4", "bad", "=x", "XDG_SESSION_ID=5"})
	want := "HOME=/home/a DISPLAY=:10 XDG_SESSION_ID=4"
	if strings.Join(got, " ") != want {
		t.Errorf("MergeEnv = %q, want %q", got, want)
	}
}

// writeLimits replaces the test service's limits file.
func writeLimits(t testing.TB, text string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(testDir, "limits.conf"), []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
}

// installTestService writes /etc/pam.d/name: the shape of the packaged
// service (packaging/pam.d/berth), with pam_nologin and pam_limits reading
// files in dir.
func installTestService(name, dir string) error {
	text := fmt.Sprintf(`# berth test service (internal/login tests); removed after the run
auth     sufficient pam_rootok.so
account  requisite  pam_nologin.so file=%[1]s/nologin
account  include    common-account
session  required   pam_limits.so conf=%[1]s/limits.conf
session  include    common-session
`, dir)
	return os.WriteFile(filepath.Join("/etc/pam.d", name), []byte(text), 0o644)
}

// BenchmarkStart measures what the helper adds to a program's start: a
// direct start as the user, the helper without PAM, and the helper with the
// test PAM service (pam_nologin, common-account, pam_limits,
// common-session). Each starts `sleep 60` and kills it.
func BenchmarkStart(b *testing.B) {
	writeLimits(b, "")
	for _, bc := range []struct {
		name string
		opt  *Options
	}{{"direct", nil}, {"helper", &Options{}}, {"helper+PAM", &Options{Service: testService, User: testUser}}} {
		b.Run(bc.name, func(b *testing.B) {
			for b.Loop() {
				cmd := sleepCmd(b)
				var p *os.Process
				if bc.opt == nil {
					if err := cmd.Start(); err != nil {
						b.Fatal(err)
					}
					p = cmd.Process
				} else {
					st, err := Start(context.Background(), cmd, *bc.opt)
					if err != nil {
						b.Fatal(err)
					}
					p = st.Process
				}
				p.Kill()
				p.Wait()
			}
		})
	}
}

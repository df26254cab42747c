package packaging_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
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

// debPackages are the packages `make deb` builds, in install order.
var debPackages = []string{"berth-broker", "berth-agent", "berth-cli"}

// installedPaths are what the packages and their scripts create on the
// machine; TestInstall refuses to run while any exists, and checks that a
// purge removes them all.
var installedPaths = []string{
	"/usr/bin/berth-broker", "/usr/bin/berth-agent", "/usr/bin/berth",
	"/usr/lib/systemd/system/berth-broker.service", "/usr/lib/systemd/system/berth-agent.service",
	"/etc/berth", "/var/lib/berth", "/var/log/berth", "/usr/share/doc/berth-broker",
	"/usr/share/doc/berth-agent", "/usr/share/doc/berth-cli", "/etc/pam.d/berth",
}

// TestInstall builds the Debian packages, installs them on this machine with
// dpkg, runs the broker from the installed files as the berth user (as
// berth-broker.service would: there is no systemd here), checks /health over
// HTTPS with the broker's CA and the installed CLI against it, then removes
// and purges the packages and checks that nothing is left. It runs only as
// root on Debian, on a machine where berth is not installed.
func TestInstall(t *testing.T) {
	if testing.Short() {
		t.Skip("installs packages; not in -short mode")
	}
	if os.Geteuid() != 0 {
		t.Skip("dpkg -i needs root")
	}
	if _, err := os.Stat("/etc/debian_version"); err != nil {
		t.Skip("not a Debian system")
	}
	var tools = map[string]string{}
	for _, name := range []string{"dpkg", "dpkg-query", "make", "setpriv"} {
		p, err := exec.LookPath(name)
		if err != nil {
			t.Skipf("no %s", name)
		}
		tools[name] = p
	}
	gobin := goBin(t)
	// Refuse to touch an installation that is not this test's: the purge
	// at the end would remove it.
	for _, p := range debPackages {
		if s := packageStatus(t, tools["dpkg-query"], p); s != "not-installed" {
			t.Skipf("package %s is %s on this machine; not touching it", p, s)
		}
	}
	if _, err := user.Lookup("berth"); err == nil {
		t.Skip("a user berth exists on this machine; not touching it")
	}
	if _, err := user.LookupGroup("berth"); err == nil {
		t.Skip("a group berth exists on this machine; not touching it")
	}
	for _, p := range installedPaths {
		if _, err := os.Lstat(p); err == nil {
			t.Skipf("%s exists on this machine; not touching it", p)
		}
	}

	start := time.Now()
	root := repoRoot(t)
	dist := t.TempDir()
	if out, err := exec.Command(tools["make"], "-C", root, "deb", "DIST="+dist, "GO="+gobin).CombinedOutput(); err != nil {
		t.Fatalf("make deb: %v\n%s", err, out)
	}
	var debs []string
	for _, p := range debPackages {
		m, _ := filepath.Glob(filepath.Join(dist, p+"_*.deb"))
		if len(m) != 1 {
			t.Fatalf("make deb made %v for %s, want one .deb", m, p)
		}
		debs = append(debs, m[0])
	}
	t.Logf("built %d packages in %v", len(debs), time.Since(start).Round(time.Millisecond))

	// From here on the machine changes: undo it even when the test fails.
	t.Cleanup(func() { forcePurge(t, tools["dpkg"]) })
	mustRun(t, tools["dpkg"], append([]string{"-i"}, debs...)...)

	// What the packages and the postinst scripts installed.
	berth, err := user.Lookup("berth")
	if err != nil {
		t.Fatalf("no user berth after install: %v", err)
	}
	if berth.HomeDir != "/var/lib/berth" {
		t.Errorf("user berth has home %s, want /var/lib/berth", berth.HomeDir)
	}
	uid, _ := strconv.Atoi(berth.Uid)
	gid, _ := strconv.Atoi(berth.Gid)
	if uid == 0 || uid >= 1000 {
		t.Errorf("user berth has uid %d, want a system user", uid)
	}
	checkFile(t, "/etc/berth/broker.properties", 0o640, 0, gid)
	checkFile(t, "/etc/berth/agent.conf", 0o644, 0, 0)
	checkFile(t, "/etc/berth/dcvsmcli.conf", 0o644, 0, 0)
	checkFile(t, "/etc/pam.d/berth", 0o644, 0, 0)
	checkFile(t, "/var/lib/berth", fs.ModeDir|0o750, uid, gid)
	checkFile(t, "/var/log/berth", fs.ModeDir|0o750, uid, gid)
	checkFile(t, "/var/lib/berth/agent", fs.ModeDir|0o700, 0, 0)
	checkFile(t, "/usr/lib/systemd/system/berth-broker.service", 0o644, 0, 0)
	checkFile(t, "/usr/lib/systemd/system/berth-agent.service", 0o644, 0, 0)
	for _, bin := range []string{"/usr/bin/berth-broker", "/usr/bin/berth-agent", "/usr/bin/berth"} {
		checkFile(t, bin, 0o755, 0, 0)
	}
	for p, conf := range map[string]string{
		"berth-broker": "/etc/berth/broker.properties",
		"berth-agent":  "/etc/berth/agent.conf",
		"berth-cli":    "/etc/berth/dcvsmcli.conf",
	} {
		out := mustRun(t, tools["dpkg-query"], "-W", "-f=${Conffiles}", p)
		if !strings.Contains(out, conf+" ") {
			t.Errorf("%s: conffiles %q lack %s", p, out, conf)
		}
	}
	if out := mustRun(t, tools["dpkg-query"], "-W", "-f=${Conffiles}", "berth-agent"); !strings.Contains(out, "/etc/pam.d/berth ") {
		t.Errorf("berth-agent: conffiles %q lack /etc/pam.d/berth", out)
	}
	if sa, err := exec.LookPath("systemd-analyze"); err == nil {
		stdout, stderr, code := run(t, time.Minute, sa, "verify",
			"/usr/lib/systemd/system/berth-broker.service", "/usr/lib/systemd/system/berth-agent.service")
		if code != 0 || strings.TrimSpace(stdout+stderr) != "" {
			t.Errorf("systemd-analyze verify of the installed units: exit %d\n%s%s", code, stdout, stderr)
		}
	}

	// The broker, from the installed binary and configuration, as berth.
	conf, port := brokerConfig(t)
	asBerth := []string{tools["setpriv"], "--reuid=berth", "--regid=berth", "--init-groups", "--"}
	var brokerErr bytes.Buffer
	broker := exec.Command(asBerth[0], append(asBerth[1:], "/usr/bin/berth-broker", "--config", conf)...)
	broker.Dir = "/var/lib/berth"
	broker.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/var/lib/berth", "LANG=C.UTF-8"}
	broker.Stdout, broker.Stderr = &brokerErr, &brokerErr
	if err := broker.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { broker.Wait(); close(exited) }()
	stopBroker := func() {
		select {
		case <-exited:
			return
		default:
		}
		broker.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(15 * time.Second):
			broker.Process.Kill()
			<-exited
			t.Errorf("the broker did not stop on SIGTERM within 15s")
		}
	}
	t.Cleanup(func() { // runs before the purge
		stopBroker()
		if t.Failed() {
			t.Logf("broker output:\n%s", brokerErr.String())
		}
	})

	base := "https://localhost:" + strconv.Itoa(port)
	status, body := waitHealthy(t, base+"/health", exited)
	if status != http.StatusOK {
		t.Fatalf("GET %s/health: %d %s", base, status, body)
	}
	t.Logf("GET %s/health: %d %s", base, status, strings.TrimSpace(body))
	if got := procUID(t, broker.Process.Pid); got != uid {
		t.Errorf("the broker runs as uid %d, want berth (%d)", got, uid)
	}
	for _, name := range []string{"berth.db", "ca.pem"} {
		fi, err := os.Stat(filepath.Join("/var/lib/berth", name))
		if err != nil {
			t.Errorf("working path: %v", err)
		} else if st := fi.Sys().(*syscall.Stat_t); int(st.Uid) != uid {
			t.Errorf("/var/lib/berth/%s is owned by uid %d, want berth", name, st.Uid)
		}
	}

	// An API client registered as the README says, and the installed CLI
	// calling the broker with it.
	out := mustRun(t, asBerth[0], append(asBerth[1:], "/usr/bin/berth-broker", "register-api-client",
		"--client-name", "package-test", "--config", conf)...)
	id, password := field(out, "client-id:"), field(out, "client-password:")
	if id == "" || password == "" {
		t.Fatalf("register-api-client printed no client-id/client-password:\n%s", out)
	}
	cli := exec.Command("/usr/bin/berth", "--broker-url", base, "--ca-bundle", "/var/lib/berth/ca.pem", "describe-servers")
	cli.Env = []string{"PATH=/usr/bin:/bin", "HOME=" + t.TempDir(), "BERTH_CLIENT_ID=" + id, "BERTH_CLIENT_PASSWORD=" + password}
	if out, err := cli.CombinedOutput(); err != nil || !strings.Contains(string(out), `"Servers"`) {
		t.Errorf("berth describe-servers: %v\n%s", err, out)
	}
	version := strings.TrimSpace(mustRun(t, "/usr/bin/berth", "--version"))
	if !strings.HasPrefix(version, "berth ") || version == "berth dev" {
		t.Errorf("berth --version printed %q, want \"berth VERSION\"", version)
	}
	t.Logf("berth --version: %s", version)

	// The agent's shipped file loads; broker_host, which has no default, is
	// the only thing to set.
	_, stderr, code := run(t, 30*time.Second, "/usr/bin/berth-agent", "--config", "/etc/berth/agent.conf")
	if code != 1 || !strings.Contains(stderr, "agent.broker_host: is required") || strings.Count(stderr, "\n") != 1 {
		t.Errorf("berth-agent --config /etc/berth/agent.conf: exit %d\n%s", code, stderr)
	}

	stopBroker()

	// Remove keeps the configuration and the state; purge removes them.
	mustRun(t, tools["dpkg"], append([]string{"--remove"}, debPackages...)...)
	for _, p := range []string{"/etc/berth/broker.properties", "/var/lib/berth/berth.db", "/var/lib/berth/ca.pem"} {
		if _, err := os.Stat(p); err != nil {
			t.Errorf("after dpkg --remove: %v", err)
		}
	}
	if _, err := user.Lookup("berth"); err != nil {
		t.Errorf("after dpkg --remove: %v", err)
	}
	mustRun(t, tools["dpkg"], append([]string{"--purge"}, debPackages...)...)
	for _, p := range debPackages {
		if s := packageStatus(t, tools["dpkg-query"], p); s != "not-installed" {
			t.Errorf("after dpkg --purge: %s is %s", p, s)
		}
	}
	if _, err := user.Lookup("berth"); err == nil {
		t.Errorf("after dpkg --purge: the user berth exists")
	}
	if _, err := user.LookupGroup("berth"); err == nil {
		t.Errorf("after dpkg --purge: the group berth exists")
	}
	for _, p := range installedPaths {
		if _, err := os.Lstat(p); err == nil {
			t.Errorf("after dpkg --purge: %s exists", p)
		}
	}
	t.Logf("install, run and purge took %v", time.Since(start).Round(time.Millisecond))
}

// packageStatus returns dpkg's status of a package: "installed",
// "config-files", ..., or "not-installed" when dpkg does not know it.
func packageStatus(tb testing.TB, dpkgQuery, name string) string {
	tb.Helper()
	out, err := exec.Command(dpkgQuery, "-W", "-f=${db:Status-Status}", name).Output()
	if err != nil || len(out) == 0 {
		return "not-installed"
	}
	return string(out)
}

// forcePurge purges the packages and removes what a failed purge left, the
// paths TestInstall checked to be absent before it started.
func forcePurge(tb testing.TB, dpkg string) {
	if out, err := exec.Command(dpkg, append([]string{"--purge"}, debPackages...)...).CombinedOutput(); err != nil {
		tb.Logf("cleanup: dpkg --purge: %v\n%s", err, out)
	}
	if _, err := user.Lookup("berth"); err == nil {
		tb.Logf("cleanup: removing the user berth")
		exec.Command("userdel", "berth").Run()
	}
	if _, err := user.LookupGroup("berth"); err == nil {
		exec.Command("groupdel", "berth").Run()
	}
	for _, p := range installedPaths {
		if _, err := os.Lstat(p); err == nil {
			tb.Logf("cleanup: removing %s", p)
			os.RemoveAll(p)
		}
	}
}

// mustRun runs a command and returns its stdout; it fails the test when the
// command fails.
func mustRun(tb testing.TB, name string, args ...string) string {
	tb.Helper()
	stdout, stderr, code := run(tb, time.Minute, name, args...)
	if code != 0 {
		tb.Fatalf("%s %s: exit %d\n%s%s", name, strings.Join(args, " "), code, stdout, stderr)
	}
	return stdout
}

// checkFile fails unless path has the mode (type and permissions) and owner.
func checkFile(tb testing.TB, path string, mode fs.FileMode, uid, gid int) {
	tb.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		tb.Errorf("after install: %v", err)
		return
	}
	st := fi.Sys().(*syscall.Stat_t)
	if fi.Mode()&(fs.ModeType|fs.ModePerm) != mode || int(st.Uid) != uid || int(st.Gid) != gid {
		tb.Errorf("%s: mode %v owner %d:%d, want mode %v owner %d:%d", path, fi.Mode(), st.Uid, st.Gid, mode, uid, gid)
	}
}

// portFree reports whether port can be listened on, on every address.
func portFree(port int) bool {
	ln, err := net.Listen("tcp", ":"+strconv.Itoa(port))
	if err != nil {
		return false
	}
	ln.Close()
	return true
}

// freePort returns a port that was free a moment ago.
func freePort(tb testing.TB) int {
	tb.Helper()
	ln, err := net.Listen("tcp", ":0")
	if err != nil {
		tb.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// brokerConfig returns the configuration the broker runs with and its client
// port: the installed /etc/berth/broker.properties unchanged when its ports
// (8443, 8445) are free, else a copy that sets two free ports, readable by
// berth.
func brokerConfig(tb testing.TB) (string, int) {
	tb.Helper()
	const installed = "/etc/berth/broker.properties"
	if portFree(8443) && portFree(8445) {
		tb.Logf("running the broker on %s as installed", installed)
		return installed, 8443
	}
	data, err := os.ReadFile(installed)
	if err != nil {
		tb.Fatal(err)
	}
	client, agent := freePort(tb), freePort(tb)
	dir, err := os.MkdirTemp("", "berth-install-test-")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		tb.Fatal(err)
	}
	data = fmt.Appendf(data, "client-to-broker-connector-https-port = %d\nagent-to-broker-connector-https-port = %d\n", client, agent)
	conf := writeFile(tb, dir, "broker.properties", data)
	tb.Logf("ports 8443/8445 are in use here: running the broker on %s with ports %d and %d", installed, client, agent)
	return conf, client
}

// waitHealthy polls url, trusting the broker's CA once it has written it,
// until it answers or 30 s passed; it fails the test if the broker exits.
func waitHealthy(tb testing.TB, url string, exited <-chan struct{}) (int, string) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var last error
	for {
		select {
		case <-exited:
			tb.Fatalf("the broker exited before it answered %s", url)
		case <-ctx.Done():
			tb.Fatalf("%s did not answer within 30s: %v", url, last)
		case <-time.After(200 * time.Millisecond):
		}
		pem, err := os.ReadFile("/var/lib/berth/ca.pem")
		if err != nil {
			last = err
			continue
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			last = errors.New("/var/lib/berth/ca.pem holds no certificate")
			continue
		}
		client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
		resp, err := client.Get(url)
		if err != nil {
			last = err
			continue
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return resp.StatusCode, string(body)
	}
}

// procUID returns the real uid of a process.
func procUID(tb testing.TB, pid int) int {
	tb.Helper()
	f, err := os.Open("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "Uid:"); ok {
			if f := strings.Fields(rest); len(f) > 0 {
				n, _ := strconv.Atoi(f[0])
				return n
			}
		}
	}
	tb.Fatalf("no Uid in /proc/%d/status", pid)
	return -1
}

// field returns the value after prefix on a line of out ("client-id: X").
func field(out, prefix string) string {
	for _, line := range strings.Split(out, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), prefix); ok {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

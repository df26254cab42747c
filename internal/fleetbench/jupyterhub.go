package fleetbench

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// JupyterHubInstall is the command that installs the JupyterHub the
// comparison runs (Debian 12's package, JupyterHub 3.0).
const JupyterHubInstall = "apt-get install jupyterhub"

// hubAPIBatch is how many users one POST /hub/api/users creates.
const hubAPIBatch = 100

// jupyterHub is a JupyterHub under test: the hub and its
// configurable-http-proxy as a child process group, serving HTTPS on
// loopback with a self-signed certificate, with a service token that may
// manage users.
type jupyterHub struct {
	bin     string // the jupyterhub executable
	dir     string
	port    int
	token   string
	pool    *x509.CertPool // trusts the hub's certificate
	logPath string

	cmd  *exec.Cmd
	done chan struct{}
}

// newJupyterHub writes the configuration of a JupyterHub in dir: a
// self-signed certificate for 127.0.0.1, the SQLite database, the dummy
// authenticator and a service whose token may manage users.
func newJupyterHub(bin, dir string) (*jupyterHub, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	h := &jupyterHub{bin: bin, dir: dir, logPath: filepath.Join(dir, "jupyterhub.log")}
	var tok [24]byte
	if _, err := rand.Read(tok[:]); err != nil {
		return nil, err
	}
	h.token = hex.EncodeToString(tok[:])
	cert, key, pool, err := selfSigned()
	if err != nil {
		return nil, err
	}
	h.pool = pool
	if err := os.WriteFile(filepath.Join(dir, "cert.pem"), cert, 0o600); err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(dir, "key.pem"), key, 0o600); err != nil {
		return nil, err
	}
	ports := make([]int, 3)
	for i := range ports {
		if ports[i], err = freePort(); err != nil {
			return nil, err
		}
	}
	h.port = ports[0]
	q := func(s string) string { return strconv.Quote(s) } // a Python string literal too
	conf := strings.Join([]string{
		"# JupyterHub for berth's fleet benchmark (internal/fleetbench)",
		"c.JupyterHub.bind_url = " + q("https://127.0.0.1:"+strconv.Itoa(ports[0])),
		"c.JupyterHub.hub_bind_url = " + q("http://127.0.0.1:"+strconv.Itoa(ports[1])),
		"c.ConfigurableHTTPProxy.api_url = " + q("http://127.0.0.1:"+strconv.Itoa(ports[2])),
		"c.JupyterHub.ssl_cert = " + q(filepath.Join(dir, "cert.pem")),
		"c.JupyterHub.ssl_key = " + q(filepath.Join(dir, "key.pem")),
		"c.JupyterHub.db_url = " + q("sqlite:///"+filepath.Join(dir, "jupyterhub.sqlite")),
		"c.JupyterHub.cookie_secret_file = " + q(filepath.Join(dir, "cookie_secret")),
		"c.JupyterHub.pid_file = " + q(filepath.Join(dir, "jupyterhub.pid")),
		"c.ConfigurableHTTPProxy.pid_file = " + q(filepath.Join(dir, "proxy.pid")),
		"c.JupyterHub.authenticator_class = 'dummy'",
		"c.JupyterHub.services = [{'name': 'berth-bench', 'api_token': " + q(h.token) + "}]",
		"c.JupyterHub.load_roles = [{'name': 'berth-bench', 'scopes': ['admin:users'], 'services': ['berth-bench']}]",
		"",
	}, "\n")
	if err := os.WriteFile(filepath.Join(dir, "jupyterhub_config.py"), []byte(conf), 0o600); err != nil {
		return nil, err
	}
	return h, nil
}

// selfSigned makes a P-256 certificate for 127.0.0.1, valid for two days:
// its PEM, its key's PEM, and a pool that trusts it.
func selfSigned() (certPEM, keyPEM []byte, pool *x509.CertPool, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: "127.0.0.1"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(48 * time.Hour),
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, nil, err
	}
	kd, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, nil, nil, err
	}
	pool = x509.NewCertPool()
	pool.AddCert(cert)
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kd}), pool, nil
}

// url is the hub's public base URL.
func (h *jupyterHub) url() string { return "https://127.0.0.1:" + strconv.Itoa(h.port) }

// start starts the hub (its output appended to jupyterhub.log) in a
// process group of its own that dies with this process. Debian's
// configurable-http-proxy finds its modules through NODE_PATH when the
// node on PATH is not Debian's.
func (h *jupyterHub) start() error {
	f, err := os.OpenFile(h.logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	defer f.Close()
	cmd := exec.Command(h.bin, "-f", filepath.Join(h.dir, "jupyterhub_config.py"))
	cmd.Dir = h.dir
	cmd.Stdout, cmd.Stderr = f, f
	nodePath := "/usr/share/nodejs"
	if p := os.Getenv("NODE_PATH"); p != "" {
		nodePath = p + ":" + nodePath
	}
	cmd.Env = append(os.Environ(), "NODE_PATH="+nodePath)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", h.bin, err)
	}
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(done)
	}()
	h.cmd, h.done = cmd, done
	return nil
}

// stop ends the hub and its proxy: SIGTERM to the group, SIGKILL after 15 s.
func (h *jupyterHub) stop() {
	if h.cmd == nil {
		return
	}
	pgid := h.cmd.Process.Pid
	_ = syscall.Kill(-pgid, syscall.SIGTERM)
	select {
	case <-h.done:
	case <-time.After(15 * time.Second):
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
		<-h.done
	}
	_ = syscall.Kill(-pgid, syscall.SIGKILL) // the proxy, if it outlived the hub
	h.cmd = nil
}

// client is an HTTPS client that trusts the hub's certificate.
func (h *jupyterHub) client() *http.Client {
	return &http.Client{Timeout: 10 * time.Minute, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: h.pool, MinVersion: tls.VersionTLS12}}}
}

// waitUp waits until GET /hub/api/ answers through the proxy.
func (h *jupyterHub) waitUp(ctx context.Context, timeout time.Duration) error {
	c := h.client()
	defer c.CloseIdleConnections()
	deadline := time.Now().Add(timeout)
	var last error
	for time.Now().Before(deadline) {
		select {
		case <-h.done:
			return fmt.Errorf("jupyterhub exited: %s", tail(h.logPath, 5))
		default:
		}
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, h.url()+"/hub/api/", nil)
		resp, err := c.Do(req)
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = fmt.Errorf("GET /hub/api/: %s", resp.Status)
		}
		last = err
		if !wait(ctx, 200*time.Millisecond) {
			return ctx.Err()
		}
	}
	return fmt.Errorf("jupyterhub did not answer in %s: %v; log: %s", timeout, last, tail(h.logPath, 5))
}

// call sends an API request with the service token and decodes the JSON
// answer into out (if not nil).
func (h *jupyterHub) call(ctx context.Context, c *http.Client, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, h.url()+path, body)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "token "+h.token)
	req.Header.Set("Accept", "application/jupyterhub-pagination+json")
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("%s %s: %s: %.300s", method, path, resp.Status, b)
	}
	if out != nil {
		return json.Unmarshal(b, out)
	}
	return nil
}

// userName is the name of the hub's user i.
func userName(i int) string { return fmt.Sprintf("user%07d", i) }

// createUsers creates users 0..n-1 through the REST API, POST
// /hub/api/users with lists of hubAPIBatch names.
func (h *jupyterHub) createUsers(ctx context.Context, n int) error {
	c := h.client()
	defer c.CloseIdleConnections()
	for start := 0; start < n; start += hubAPIBatch {
		names := make([]string, 0, hubAPIBatch)
		for i := start; i < min(start+hubAPIBatch, n); i++ {
			names = append(names, userName(i))
		}
		if err := h.call(ctx, c, http.MethodPost, "/hub/api/users", map[string]any{"usernames": names}, nil); err != nil {
			return err
		}
	}
	return nil
}

// userCount is the total of GET /hub/api/users.
func (h *jupyterHub) userCount(ctx context.Context) (int, error) {
	c := h.client()
	defer c.CloseIdleConnections()
	var page struct {
		Pagination struct {
			Total int `json:"total"`
		} `json:"_pagination"`
	}
	if err := h.call(ctx, c, http.MethodGet, "/hub/api/users?offset=0&limit=1", nil, &page); err != nil {
		return 0, err
	}
	return page.Pagination.Total, nil
}

// bulkUsers is the Python program that adds users to the hub's stopped
// database as POST /hub/api/users adds them (a users row with a random
// cookie_id, the "user" role and the default spawner), named as userName
// names them, until it holds argv[2] users. The REST API takes about 80 ms a
// user on a 2-core machine (a 100,000-user hub would take over 2 hours), so
// only the first users come through it.
const bulkUsers = `
import datetime, sqlite3, sys, uuid
db, n = sys.argv[1], int(sys.argv[2])
c = sqlite3.connect(db)
role = c.execute("select id from roles where name = 'user'").fetchone()[0]
have = c.execute("select count(*) from users").fetchone()[0]
first = c.execute("select coalesce(max(id), 0) from users").fetchone()[0] + 1
now = datetime.datetime.utcnow().strftime('%Y-%m-%d %H:%M:%S.%f')
ids = range(first, first + max(n - have, 0))
c.executemany("insert into users (id, name, admin, created, cookie_id) values (?, ?, 0, ?, ?)",
              [(u, 'user%07d' % (have + u - first), now, uuid.uuid4().hex) for u in ids])
c.executemany("insert into user_role_map (user_id, role_id) values (?, ?)", [(u, role) for u in ids])
c.executemany("insert into spawners (user_id, name) values (?, '')", [(u,) for u in ids])
c.commit()
print(c.execute("select count(*) from users").fetchone()[0])
`

// python is the interpreter of the jupyterhub script (its #! line), so
// that the bulk insert runs with the hub's own Python.
func python(bin string) string {
	f, err := os.Open(bin)
	if err != nil {
		return "python3"
	}
	defer f.Close()
	line := make([]byte, 256)
	n, _ := f.Read(line)
	first, _, _ := strings.Cut(string(line[:n]), "\n")
	if p, ok := strings.CutPrefix(first, "#!"); ok {
		if fields := strings.Fields(p); len(fields) == 1 && filepath.IsAbs(fields[0]) {
			return fields[0]
		}
	}
	return "python3"
}

// setUp starts the hub with rows users: the first viaAPI through the REST
// API, the rest inserted into its database while it is stopped, then
// started again and checked through the API.
func (h *jupyterHub) setUp(ctx context.Context, rows, viaAPI int, progress func(string, ...any)) error {
	if err := h.start(); err != nil {
		return err
	}
	if err := h.waitUp(ctx, 2*time.Minute); err != nil {
		h.stop()
		return err
	}
	viaAPI = min(rows, viaAPI)
	t0 := time.Now()
	if err := h.createUsers(ctx, viaAPI); err != nil {
		h.stop()
		return fmt.Errorf("create users through the REST API: %w", err)
	}
	progress("JupyterHub: %d users created through POST /hub/api/users in %s", viaAPI, time.Since(t0).Round(time.Millisecond))
	if rows > viaAPI {
		h.stop()
		t0 = time.Now()
		out, err := exec.CommandContext(ctx, python(h.bin), "-c", bulkUsers, filepath.Join(h.dir, "jupyterhub.sqlite"), strconv.Itoa(rows)).CombinedOutput()
		if err != nil {
			return fmt.Errorf("add users to the hub's database: %w: %s", err, out)
		}
		progress("JupyterHub: %d more users inserted into its database in %s", rows-viaAPI, time.Since(t0).Round(time.Millisecond))
		t0 = time.Now()
		if err := h.start(); err != nil {
			return err
		}
		if err := h.waitUp(ctx, 10*time.Minute); err != nil {
			h.stop()
			return err
		}
		progress("JupyterHub: restarted with %d users in %s", rows, time.Since(t0).Round(time.Millisecond))
	}
	n, err := h.userCount(ctx)
	if err == nil && n != rows {
		err = fmt.Errorf("the hub lists %d users, want %d", n, rows)
	}
	if err != nil {
		h.stop()
		return err
	}
	return nil
}

// tail returns the last n lines of the file at path.
func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// errNoJupyterHub says JupyterHub is not installed.
var errNoJupyterHub = errors.New("jupyterhub is not installed (" + JupyterHubInstall + ")")

package fleetbench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/berth-dev/berth/api"
)

// brokerProc is the berth-broker under test: a child process with its own
// working path and broker.properties, restarted on the same ports.
type brokerProc struct {
	bin        string
	dir        string // the broker's working path
	conf       string // broker.properties
	logPath    string
	clientPort int
	agentPort  int

	cmd  *exec.Cmd
	done chan struct{} // closed when cmd has ended
}

// newBroker writes broker.properties for a broker in dir/broker on two
// free loopback ports. props are extra lines.
func newBroker(bin, dir string, o Options) (*brokerProc, error) {
	b := &brokerProc{bin: bin, dir: filepath.Join(dir, "broker"), conf: filepath.Join(dir, "broker.properties"), logPath: filepath.Join(dir, "broker.log")}
	var err error
	if b.clientPort, err = freePort(); err != nil {
		return nil, err
	}
	if b.agentPort, err = freePort(); err != nil {
		return nil, err
	}
	heartbeat := max(int((3*o.UpdateInterval+time.Second-1)/time.Second), 1)
	lines := []string{
		"# berth fleet benchmark broker (internal/fleetbench)",
		"session-manager-working-path = " + b.dir,
		"client-to-broker-connector-https-port = " + strconv.Itoa(b.clientPort),
		"client-to-broker-connector-bind-host = 127.0.0.1",
		"agent-to-broker-connector-https-port = " + strconv.Itoa(b.agentPort),
		"agent-to-broker-connector-bind-host = 127.0.0.1",
		// The broker sends agents an update interval of a third of this.
		"agent-heartbeat-timeout-seconds = " + strconv.Itoa(heartbeat),
		// Every simulated agent comes from 127.0.0.1: no per-address bounds,
		// and no registration rate limit (the benchmark measures the broker
		// taking every registration at once).
		"agent-to-broker-connector-max-connections-per-address = 0",
		"agent-registrations-per-minute = 0",
		"agent-registrations-per-minute-per-address = 0",
		"log-format = json",
		"log-level = " + o.LogLevel,
	}
	if o.Store == "postgres" || o.Store == "postgresql" {
		lines = append(lines, "persistence-db = postgresql", "persistence-dsn = "+o.DSN)
	}
	// The extra properties replace the benchmark's lines of the same key:
	// the broker refuses a key set twice.
	for _, extra := range o.BrokerProperties {
		key, _, _ := strings.Cut(extra, "=")
		key = strings.TrimSpace(key)
		lines = slices.DeleteFunc(lines, func(l string) bool {
			k, _, ok := strings.Cut(l, "=")
			return ok && strings.TrimSpace(k) == key
		})
	}
	lines = append(lines, o.BrokerProperties...)
	if err := os.WriteFile(b.conf, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
		return nil, err
	}
	return b, nil
}

// freePort returns a TCP port that was free on 127.0.0.1 a moment ago.
func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// clientURL is the client API's base URL.
func (b *brokerProc) clientURL() string {
	return "https://127.0.0.1:" + strconv.Itoa(b.clientPort)
}

// agentURL is the agents' broker URL.
func (b *brokerProc) agentURL() string {
	return "wss://127.0.0.1:" + strconv.Itoa(b.agentPort)
}

// start starts the broker; its output is appended to broker.log. It dies
// with this process (Pdeathsig).
func (b *brokerProc) start() error {
	f, err := os.OpenFile(b.logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	defer f.Close()
	cmd := exec.Command(b.bin, "--config", b.conf)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", b.bin, err)
	}
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(done)
	}()
	b.cmd, b.done = cmd, done
	return nil
}

// pid is the running broker's process ID, 0 when none runs.
func (b *brokerProc) pid() int {
	if b == nil || b.cmd == nil || b.exited() {
		return 0
	}
	return b.cmd.Process.Pid
}

// exited says whether the broker process has ended (or never started).
func (b *brokerProc) exited() bool {
	if b.done == nil {
		return true
	}
	select {
	case <-b.done:
		return true
	default:
		return false
	}
}

// waitListening waits until both connectors accept TCP connections.
func (b *brokerProc) waitListening(ctx context.Context, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for _, port := range []int{b.agentPort, b.clientPort} {
		addr := "127.0.0.1:" + strconv.Itoa(port)
		for {
			if b.exited() {
				return fmt.Errorf("berth-broker exited:\n%s", b.logTail(20))
			}
			c, err := net.DialTimeout("tcp", addr, time.Second)
			if err == nil {
				c.Close()
				break
			}
			if !wait(ctx, 5*time.Millisecond) {
				return fmt.Errorf("berth-broker not listening on %s after %s: %v\n%s", addr, timeout, err, b.logTail(20))
			}
		}
	}
	return nil
}

// agentAddr and clientAddr are the broker's connectors' addresses.
func (b *brokerProc) agentAddr() string  { return "127.0.0.1:" + strconv.Itoa(b.agentPort) }
func (b *brokerProc) clientAddr() string { return "127.0.0.1:" + strconv.Itoa(b.clientPort) }

// waitHealthy waits until GET /health answers 200.
func (b *brokerProc) waitHealthy(ctx context.Context, hc *http.Client, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, b.clientURL()+"/health", nil)
		resp, err := hc.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = fmt.Errorf("status %d", resp.StatusCode)
		}
		if b.exited() {
			return fmt.Errorf("berth-broker exited:\n%s", b.logTail(20))
		}
		if !wait(ctx, 20*time.Millisecond) {
			return fmt.Errorf("broker /health: %v", err)
		}
	}
}

// kill ends the broker with SIGKILL and waits for it.
func (b *brokerProc) kill() error {
	if b.exited() {
		return nil
	}
	_ = b.cmd.Process.Signal(syscall.SIGKILL)
	select {
	case <-b.done:
		return nil
	case <-time.After(30 * time.Second):
		return fmt.Errorf("berth-broker (pid %d) still runs 30 s after SIGKILL", b.cmd.Process.Pid)
	}
}

// stop ends the broker with SIGTERM, and SIGKILL after 30 s.
func (b *brokerProc) stop() error {
	if b.exited() {
		return nil
	}
	_ = b.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-b.done:
		return nil
	case <-time.After(30 * time.Second):
		_ = b.kill()
		return errors.New("berth-broker did not stop within 30 s of SIGTERM; killed it")
	}
}

// admin runs an admin command (berth-broker COMMAND --config ... ARGS).
func (b *brokerProc) admin(ctx context.Context, command string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, b.bin, append([]string{command, "--config", b.conf}, args...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("berth-broker %s: %w: %s", command, err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

// registerClient registers an API client and returns a Go client for it.
func (b *brokerProc) registerClient(ctx context.Context) (*api.Client, error) {
	out, err := b.admin(ctx, "register-api-client", "--client-name", "fleetbench")
	if err != nil {
		return nil, err
	}
	c := &api.Client{BrokerURL: b.clientURL()}
	for _, line := range strings.Split(out, "\n") {
		if v, ok := strings.CutPrefix(line, "client-id: "); ok {
			c.ClientID = strings.TrimSpace(v)
		}
		if v, ok := strings.CutPrefix(line, "client-password: "); ok {
			c.ClientSecret = strings.TrimSpace(v)
		}
	}
	if c.ClientID == "" || c.ClientSecret == "" {
		return nil, fmt.Errorf("register-api-client printed no credentials: %q", out)
	}
	hc, err := api.NewHTTPClient(filepath.Join(b.dir, "ca.pem"), false)
	if err != nil {
		return nil, err
	}
	hc.Timeout = 2 * time.Minute
	c.HTTPClient = hc
	return c, nil
}

// agentClients counts the agent clients the broker has registered.
func (b *brokerProc) agentClients(ctx context.Context) (int, error) {
	out, err := b.admin(ctx, "describe-agent-clients")
	if err != nil {
		return 0, err
	}
	// A title line, then a JSON list of {"name", "id", "active"}.
	i := strings.IndexByte(out, '[')
	if i < 0 {
		return 0, fmt.Errorf("describe-agent-clients printed no list: %.200q", out)
	}
	var list []struct {
		ID     string `json:"id"`
		Active bool   `json:"active"`
	}
	if err := json.Unmarshal([]byte(out[i:]), &list); err != nil {
		return 0, fmt.Errorf("describe-agent-clients: %w", err)
	}
	n := 0
	for _, c := range list {
		if c.Active {
			n++
		}
	}
	return n, nil
}

// logTail returns the last n lines of broker.log.
func (b *brokerProc) logTail(n int) string {
	data, err := os.ReadFile(b.logPath)
	if err != nil {
		return "(" + err.Error() + ")"
	}
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// wait waits d or until ctx ends; it reports whether d passed.
func wait(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

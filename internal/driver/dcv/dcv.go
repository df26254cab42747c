// Package dcv is berth's session driver for hosts that run an Amazon DCV
// server. It drives the server through its `dcv` command-line tool, as the
// reference agent does:
//
//   - create: `dcv create-session --type virtual|console --owner O --name N
//     [--user O] [--init PATH] [--storage-root P] [--gl on|off]
//     [--max-concurrent-clients N] [--permissions-file FILE] ID`;
//   - delete: `dcv close-session ID`;
//   - state: `dcv list-sessions -j` (and `dcv describe-session ID -j`);
//   - screenshots: `dcv get-screenshot --max-width W --max-height H
//     --format PNG|JPEG --primary -j ID`;
//   - permissions: `dcv set-permissions --session ID --file FILE`.
//
// Every command runs from an argument list (never through a shell) and under
// a timeout; a command that does not answer in time is killed with its
// process group. The driver polls `dcv list-sessions -j` every few seconds:
// while the DCV server does not answer, Health reports it, and once it
// answers again (after a dcvserver restart, say) the driver carries on
// without an agent restart. Sessions created on the host with `dcv
// create-session` are reported like the broker's.
//
// The owner of a virtual session must pass the account policy (package
// account: minimum user ID, login shell, locked or expired accounts, allowed
// and denied groups) before dcv runs.
//
// AutorunFile and its arguments run through the init step of Linux virtual
// sessions: the driver writes a per-session wrapper script (every argument
// single-quoted) that starts the session's init file (the request's
// InitFile, else /etc/dcv/dcvsessioninit when present) in the background and
// then execs the autorun program. The arguments may be private, so the
// script belongs to the session's owner, who runs it, with mode 0700, in a
// directory (0711) that other users cannot list.
//
// Endpoints reads the web and QUIC ports and the web URL path from the DCV
// server's configuration (dcv.conf).
package dcv

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"syscall"
	"time"
	"unicode/utf8"

	"github.com/berth-dev/berth/internal/account"
	"github.com/berth-dev/berth/internal/agent"
	"github.com/berth-dev/berth/internal/agentproto"
)

// Interface guards.
var (
	_ agent.Driver           = (*Driver)(nil)
	_ agent.Screenshotter    = (*Driver)(nil)
	_ agent.PermissionSetter = (*Driver)(nil)
	_ agent.Notifier         = (*Driver)(nil)
	_ agent.HealthChecker    = (*Driver)(nil)
)

// Defaults of Config.
const (
	DefaultDCVPath        = "/usr/bin/dcv"
	DefaultCommandTimeout = 30 * time.Second
	DefaultConfPath       = "/etc/dcv/dcv.conf"
	DefaultPollInterval   = 3 * time.Second
	// DefaultSessionInit is what DCV runs in a virtual session without an
	// init file; the autorun wrapper starts it when present.
	DefaultSessionInit = "/etc/dcv/dcvsessioninit"
	// maxReasonLen bounds the dcv output quoted in failure reasons.
	maxReasonLen = 300
)

// Config configures a Driver. Everything but StateDir has a default.
type Config struct {
	// DCVPath is the dcv command (the agent's dcv_root); empty means
	// DefaultDCVPath.
	DCVPath string
	// InitFolder holds the init files a CreateRequest may name (InitFile is
	// relative to it). Empty: requests naming an InitFile are refused.
	InitFolder string
	// AutorunFolder holds the programs a CreateRequest may name as
	// AutorunFile. Empty: requests naming an AutorunFile are refused.
	AutorunFolder string
	// StateDir is where the driver writes temporary permissions files.
	// Required; created 0700 when missing.
	StateDir string
	// ScriptDir receives the per-session autorun wrapper scripts, which the
	// session's user runs, so every directory above it must be searchable by
	// that user. Empty means StateDir/init.
	ScriptDir string
	// CommandTimeout bounds every dcv command; 0 means DefaultCommandTimeout.
	CommandTimeout time.Duration
	// ConfPath is the DCV server's configuration; empty means
	// DefaultConfPath.
	ConfPath string
	// PollInterval is the period of the `dcv list-sessions -j` poll; 0 means
	// DefaultPollInterval.
	PollInterval time.Duration
	// SessionInit is the init program DCV runs without an init file; empty
	// means DefaultSessionInit. Tests only.
	SessionInit string
	// Account checks the owner of every virtual session (whose desktop DCV
	// runs as the owner) before dcv runs (agent.conf [account]); nil means
	// the default policy (account.DefaultPolicy) on this host. Console
	// sessions show the desktop of whoever is logged in at the console, so
	// their owner is not checked. PAM is the DCV server's own.
	Account AccountChecker
	// Logger receives operational messages; nil means slog.Default().
	Logger *slog.Logger
}

// AccountChecker decides whether a user may own a virtual session (package
// account's Checker): nil, an *account.Refusal, or an error wrapping
// account.ErrUnknownUser for a refused owner, any other error for an account
// database that cannot answer.
type AccountChecker interface {
	Check(name string) error
}

// Driver is the dcv driver. Create it with New; it is safe for concurrent
// use. Close stops its poller; the sessions belong to the DCV server and
// outlive the agent.
type Driver struct {
	cfg Config
	log *slog.Logger

	ctx    context.Context // cancelled by Close
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu        sync.Mutex
	notifiers []func()                      // guarded by mu
	known     map[string]agentproto.Session // last list; guarded by mu
	groups    map[string][]string           // session ID → its owner's NSS groups, looked up once; guarded by mu
	listed    bool                          // known holds a real list; guarded by mu
	gone      map[string]agentproto.Session // vanished, to report DELETED once; guarded by mu
	closing   map[string]bool               // deleted through Delete; guarded by mu
	healthErr error                         // last poll's failure; guarded by mu
	polled    bool                          // a poll has run; guarded by mu
}

// New returns a driver for cfg and starts its poller. It fails only for a
// misconfiguration; a host whose DCV server is down gives a Driver whose
// Health says so.
func New(cfg Config) (*Driver, error) {
	if cfg.StateDir == "" {
		return nil, errors.New("dcv driver: state directory is required")
	}
	if cfg.DCVPath == "" {
		cfg.DCVPath = DefaultDCVPath
	}
	if cfg.CommandTimeout <= 0 {
		cfg.CommandTimeout = DefaultCommandTimeout
	}
	if cfg.ConfPath == "" {
		cfg.ConfPath = DefaultConfPath
	}
	if cfg.PollInterval <= 0 {
		cfg.PollInterval = DefaultPollInterval
	}
	if cfg.SessionInit == "" {
		cfg.SessionInit = DefaultSessionInit
	}
	for _, f := range []*string{&cfg.InitFolder, &cfg.AutorunFolder, &cfg.StateDir, &cfg.ScriptDir} {
		if *f != "" && !filepath.IsAbs(*f) {
			abs, err := filepath.Abs(*f)
			if err != nil {
				return nil, fmt.Errorf("dcv driver: %w", err)
			}
			*f = abs
		}
	}
	if cfg.ScriptDir == "" {
		cfg.ScriptDir = filepath.Join(cfg.StateDir, "init")
	}
	if err := os.MkdirAll(cfg.StateDir, 0o700); err != nil {
		return nil, fmt.Errorf("dcv driver: state directory: %w", err)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Account == nil {
		cfg.Account = &account.Checker{Policy: account.DefaultPolicy()}
	}
	ctx, cancel := context.WithCancel(context.Background())
	d := &Driver{
		cfg:     cfg,
		log:     cfg.Logger.With("component", "dcv"),
		ctx:     ctx,
		cancel:  cancel,
		known:   map[string]agentproto.Session{},
		groups:  map[string][]string{},
		gone:    map[string]agentproto.Session{},
		closing: map[string]bool{},
	}
	d.wg.Add(1)
	go d.poll()
	return d, nil
}

// Name implements agent.Driver.
func (d *Driver) Name() string { return "dcv" }

// Close stops the poller. The sessions keep running.
func (d *Driver) Close() error {
	d.cancel()
	d.wg.Wait()
	return nil
}

// Notify implements agent.Notifier: f is called after the DCV server's
// sessions or health changed.
func (d *Driver) Notify(f func()) {
	d.mu.Lock()
	d.notifiers = append(d.notifiers, f)
	d.mu.Unlock()
}

func (d *Driver) notify() {
	d.mu.Lock()
	fs := append([]func(){}, d.notifiers...)
	d.mu.Unlock()
	for _, f := range fs {
		f()
	}
}

// Health implements agent.HealthChecker: the host is healthy while
// `dcv list-sessions -j` answers. It asks the server now, so that a restarted
// server counts at once.
func (d *Driver) Health(ctx context.Context) (bool, string) {
	changed, err := d.refresh(ctx)
	if changed {
		d.notify()
	}
	if err != nil {
		return false, err.Error()
	}
	return true, ""
}

// poll refreshes the session list every PollInterval and notifies after
// every change of sessions or health.
func (d *Driver) poll() {
	defer d.wg.Done()
	t := time.NewTicker(d.cfg.PollInterval)
	defer t.Stop()
	for {
		changed, _ := d.refresh(d.ctx)
		if changed {
			d.notify()
		}
		select {
		case <-d.ctx.Done():
			return
		case <-t.C:
		}
	}
}

// refresh lists the sessions and records them; vanished ones move to gone.
// changed says whether the sessions or the health differ from the last
// refresh.
func (d *Driver) refresh(ctx context.Context) (changed bool, err error) {
	list, err := d.list(ctx)
	if ctx.Err() != nil && err != nil {
		return false, err // shutting down or caller gone: no verdict on health
	}
	if err == nil {
		d.fillGroups(list)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	wasHealthy := d.polled && d.healthErr == nil
	d.polled = true
	d.healthErr = err
	if err != nil {
		if wasHealthy {
			d.log.Warn("dcv server does not answer", "err", err)
		}
		return wasHealthy, err
	}
	if !wasHealthy {
		changed = true
	}
	now := make(map[string]agentproto.Session, len(list))
	for _, s := range list {
		now[s.ID] = s
		if old, ok := d.known[s.ID]; !ok || !reflect.DeepEqual(old, s) {
			changed = true
		}
		delete(d.gone, s.ID)
	}
	for id, s := range d.known {
		if _, ok := now[id]; ok {
			continue
		}
		changed = true
		if d.closing[id] {
			delete(d.closing, id)
			continue
		}
		if d.listed {
			s.State, s.StateReason = agentproto.StateDeleted, "the session ended on the dcv server"
			s.NumConnections = 0
			d.gone[id] = s
		}
	}
	d.known, d.listed = now, true
	return changed, nil
}

// fillGroups sets the OwnerGroups of the listed sessions: each session's
// owner's groups in the host's name service, looked up once per session
// (outside the lock: NSS may be slow), and forgotten with the session.
func (d *Driver) fillGroups(list []agentproto.Session) {
	d.mu.Lock()
	missing := map[string]string{} // session ID → owner
	for _, s := range list {
		if _, ok := d.groups[s.ID]; !ok {
			missing[s.ID] = s.Owner
		}
	}
	d.mu.Unlock()
	found := make(map[string][]string, len(missing))
	for id, owner := range missing {
		found[id] = account.Groups(owner)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	listed := make(map[string]bool, len(list))
	for i := range list {
		id := list[i].ID
		listed[id] = true
		if g, ok := found[id]; ok {
			d.groups[id] = g
		}
		list[i].OwnerGroups = d.groups[id]
	}
	for id := range d.groups {
		if !listed[id] {
			delete(d.groups, id)
		}
	}
}

// Sessions implements agent.Driver: the DCV server's sessions, READY, and
// once each the sessions that vanished since the last list, DELETED.
func (d *Driver) Sessions(ctx context.Context) ([]agentproto.Session, error) {
	if _, err := d.refresh(ctx); err != nil {
		return nil, err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make([]agentproto.Session, 0, len(d.known)+len(d.gone))
	for _, s := range d.known {
		out = append(out, s)
	}
	for id, s := range d.gone {
		out = append(out, s)
		delete(d.gone, id)
	}
	return out, nil
}

// cmdError is a dcv command's failure.
type cmdError struct {
	sub    string // the dcv subcommand
	reason string
	exit   int // exit status; -1 when it did not exit by itself
}

func (e *cmdError) Error() string {
	if e.exit < 0 {
		return "dcv " + e.sub + " " + e.reason
	}
	return "dcv " + e.sub + " failed: " + e.reason
}

// run runs `dcv ARGS...` under the command timeout and returns its standard
// output. A non-zero exit gives a *cmdError quoting the (bounded) standard
// error; a command that outlives the timeout is killed with its process
// group.
func (d *Driver) run(ctx context.Context, args ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, d.cfg.CommandTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, d.cfg.DCVPath, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error {
		if cmd.Process == nil {
			return nil
		}
		return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}
	cmd.WaitDelay = 2 * time.Second
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &limitedWriter{buf: &stderr, n: 64 << 10}
	err := cmd.Run()
	sub := args[0]
	if err == nil {
		return stdout.Bytes(), nil
	}
	if ctx.Err() == context.DeadlineExceeded {
		return nil, &cmdError{sub: sub, exit: -1, reason: fmt.Sprintf("did not answer within %s", d.cfg.CommandTimeout)}
	}
	if ctx.Err() != nil {
		return nil, &cmdError{sub: sub, exit: -1, reason: "was cancelled"}
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) && ee.Exited() {
		msg := shortReason(stderr.String())
		if msg == "" {
			msg = shortReason(stdout.String())
		}
		if msg == "" {
			msg = fmt.Sprintf("exit status %d", ee.ExitCode())
		}
		return nil, &cmdError{sub: sub, exit: ee.ExitCode(), reason: msg}
	}
	var pe *os.PathError
	if errors.As(err, &pe) {
		return nil, &cmdError{sub: sub, exit: -1, reason: fmt.Sprintf("could not start (%s: %v)", d.cfg.DCVPath, pe.Err)}
	}
	return nil, &cmdError{sub: sub, exit: -1, reason: "could not run: " + shortReason(err.Error())}
}

// shortReason makes dcv's output a failure reason: its non-empty lines
// joined, control characters dropped, at most maxReasonLen bytes.
func shortReason(s string) string {
	var parts []string
	for _, l := range strings.Split(s, "\n") {
		l = strings.Map(func(r rune) rune {
			if r < 0x20 || r == 0x7f || r == utf8.RuneError {
				return -1
			}
			return r
		}, l)
		if l = strings.TrimSpace(l); l != "" {
			parts = append(parts, l)
		}
	}
	out := strings.Join(parts, "; ")
	if len(out) > maxReasonLen {
		cut := maxReasonLen
		for cut > 0 && !utf8.RuneStart(out[cut]) {
			cut--
		}
		out = out[:cut] + "…"
	}
	return out
}

// limitedWriter keeps the first n bytes written to it.
type limitedWriter struct {
	buf *bytes.Buffer
	n   int
}

func (w *limitedWriter) Write(p []byte) (int, error) {
	if room := w.n - w.buf.Len(); room > 0 {
		w.buf.Write(p[:min(len(p), room)])
	}
	return len(p), nil
}

// Package vnc is berth's real session driver for Linux hosts without Amazon
// DCV: every VIRTUAL session is a TigerVNC Xvnc server run as the session's
// owner, with the host's desktop session (or a configured desktop command,
// or the request's init file) and an optional autorun program, in a D-Bus
// session bus of its own, and is reached from a browser through the agent's web
// gateway (package gateway), which this driver feeds with sessions.
//
// Per session the driver:
//
//   - checks the owner against the account policy (package account:
//     minimum user ID, login shell, locked or expired accounts, allowed and
//     denied groups) before anything starts or is created as them;
//   - allocates a display number (from :10 up, skipping every number with an
//     X socket, a lock file or an abstract socket, and retrying when the X
//     server finds the number taken);
//   - writes a fresh MIT-MAGIC-COOKIE-1 into /run/user/UID/berth-ID/xauth
//     (0600, owned by the owner) and starts Xvnc there as the owner, in its
//     own session and process group, with a clean environment, VNC on the
//     unix socket /run/user/UID/berth-ID/vnc.sock only (mode 0600, security
//     type None: the gateway authenticates) and -displayfd; where the host
//     has PAM, in a PAM login session (package login: the account stack,
//     pam_nologin, pam_limits, pam_systemd), whose limits and environment
//     the session's other programs get too;
//   - reports the session READY once the display number arrived, an X round
//     trip with the cookie answered and the socket spoke RFB 003.008, then
//     starts a session bus (dbus-daemon, where installed), the desktop and
//     the autorun program as the owner: the request's InitFile, else the
//     configured desktop command, else the host's desktop session as a
//     display manager starts it (~/.xsession, /etc/X11/Xsession,
//     x-session-manager), else openbox with a panel and a terminal (see
//     desktop.go);
//   - keeps the session's metadata in StateDir/sessions/ID.json so that a new
//     agent re-adopts the sessions that outlived the old one;
//   - watches every Xvnc (pidfd, or /proc polling) and reports a session whose
//     X server died as DELETED at once.
//
// The agent runs as root. Everything a user can touch (their runtime
// directory, home and storage root) is created either as the user or through
// os.Root, so that symlinks planted by the user cannot make the agent write
// elsewhere, and the gateway checks the peer credentials of the VNC socket it
// dials.
//
// The package is Linux-only (credentials, /proc, pidfds).
package vnc

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/jezek/xgb"
	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/internal/account"
	"github.com/berth-dev/berth/internal/agent"
	"github.com/berth-dev/berth/internal/agentproto"
	"github.com/berth-dev/berth/internal/gateway"
	"github.com/berth-dev/berth/internal/logattr"
	"github.com/berth-dev/berth/internal/login"
	"github.com/berth-dev/berth/internal/permfile"
)

// Interface guards.
var (
	_ agent.Driver           = (*Driver)(nil)
	_ agent.Screenshotter    = (*Driver)(nil)
	_ agent.PermissionSetter = (*Driver)(nil)
	_ agent.Notifier         = (*Driver)(nil)
	_ agent.HealthChecker    = (*Driver)(nil)
	_ gateway.Sessions       = (*Driver)(nil)
)

// ErrNotFound is returned for a session the driver does not have (or that is
// not READY, where a READY session is needed).
var ErrNotFound = errors.New("session not found")

// Defaults of Config.
const (
	DefaultGeometry     = "1920x1080"
	DefaultFirstDisplay = 10
	DefaultReadyTimeout = 20 * time.Second
	DefaultPAMService   = "berth"
	defaultLang         = "C.UTF-8"
	// userPath is the PATH of session processes: the user's, never root's.
	userPath = "/usr/local/bin:/usr/bin:/bin:/usr/games"
	// displayCount bounds the display numbers the driver tries.
	displayCount = 1000
)

// Config configures a Driver. InitFolder, AutorunFolder and StateDir come
// from the agent's configuration; everything else has a default.
type Config struct {
	// InitFolder holds the init files a CreateRequest may name (InitFile is
	// relative to it). Empty: requests naming an InitFile are refused.
	InitFolder string
	// AutorunFolder holds the programs a CreateRequest may name as
	// AutorunFile. Empty: requests naming an AutorunFile are refused.
	AutorunFolder string
	// StateDir is where the driver keeps its session table (in
	// StateDir/sessions) and the session logs. Required.
	StateDir string
	// XvncPath is the Xvnc binary; empty means "Xvnc" looked up in PATH (and
	// /usr/bin).
	XvncPath string
	// Geometry is the screen size of new sessions, WxH; empty means
	// DefaultGeometry.
	Geometry string
	// DesktopCommand is what a VIRTUAL session whose request names no
	// InitFile runs as its desktop (agent.conf [vnc] desktop_command): a
	// command line, split into words at white space and run without a shell
	// (ParseDesktopCommand), its program an absolute path or a name in the
	// session PATH; "-" runs nothing. Empty means the host's desktop session,
	// started as a display manager starts it: the user's ~/.xsession, else
	// the system default (/etc/X11/Xsession, x-session-manager), else openbox
	// with a panel and a terminal (see desktop.go). A session whose
	// DesktopCommand program is not installed fails to start, saying so.
	DesktopCommand string
	// DefaultInit is the older, lower-precedence form of DesktopCommand,
	// used when DesktopCommand is empty: "openbox" (what an empty value
	// meant before the host's desktop became the default), another program,
	// or "-" for nothing. Unlike DesktopCommand, a program that is not
	// installed runs nothing, with a warning.
	DefaultInit string
	// FirstDisplay is the lowest display number of VIRTUAL sessions; 0
	// means DefaultFirstDisplay.
	FirstDisplay int
	// ReadyTimeout bounds the time from starting Xvnc to READY; 0 means
	// DefaultReadyTimeout. (The first start after installing TigerVNC takes
	// seconds.)
	ReadyTimeout time.Duration
	// Lang is the LANG of session processes; empty means C.UTF-8.
	Lang string
	// RuntimeRoot is the parent of the users' runtime directories; empty
	// means /run/user. Tests only.
	RuntimeRoot string
	// Account checks every owner before anything starts as them (agent.conf
	// [account]); nil means the default policy (account.DefaultPolicy) on
	// this host.
	Account AccountChecker
	// PAM says whether a session's X server starts in a PAM login session
	// of PAMService (package login): PAMAuto ("" too) when this program can
	// (login.Main was called, libpam loads, the service has a file), PAMOff,
	// or PAMRequired (sessions are refused when it cannot).
	PAM string
	// PAMService is the PAM service; empty means DefaultPAMService.
	PAMService string
	// ActivityInterval is how often the driver reads its sessions' X idle
	// time, and the least time between two changes of a session's reported
	// LastInputTime (agent.conf [activity] interval_seconds); 0 means
	// DefaultActivityInterval.
	ActivityInterval time.Duration
	// Now is the clock of the activity interval; nil means time.Now.
	// Tests only.
	Now func() time.Time
	// Logger receives operational messages; nil means slog.Default().
	Logger *slog.Logger
}

// The values of Config.PAM.
const (
	PAMAuto     = "auto"
	PAMOff      = "off"
	PAMRequired = "required"
)

// AccountChecker decides whether a user may own a session (package
// account's Checker): nil, an *account.Refusal, or an error wrapping
// account.ErrUnknownUser for a refused owner, any other error for an account
// database that cannot answer.
type AccountChecker interface {
	Check(name string) error
}

// Driver is the vnc driver. Create it with New; it is safe for concurrent
// use. Close stops its watcher but leaves the sessions running: they outlive
// the agent and the next Driver on the same StateDir re-adopts them.
type Driver struct {
	cfg        Config
	log        *slog.Logger
	xvnc       string // resolved Xvnc path; "" when not installed
	xvncReason string // why xvnc is "" (health reason)
	width      int
	height     int
	stateDir   string // StateDir/sessions

	ctx    context.Context // cancelled by Close
	cancel context.CancelFunc
	wg     sync.WaitGroup
	// wakeFDs is the monitor's wake-up pipe (read end, write end).
	wakeFDs [2]int

	x11Once sync.Once // prepares /tmp/.X11-unix (G1)
	x11Err  error

	account AccountChecker
	pamWarn sync.Once // the warning that PAM is off (auto)

	mu        sync.Mutex
	sessions  map[string]*session     // guarded by mu
	displays  map[int]string          // display → session ID (reserved or in use); guarded by mu
	notifiers []func()                // guarded by mu
	watchers  map[int]func(string)    // gateway callbacks; guarded by mu
	clients   map[int]gateway.Clients // attached gateways (Attach); guarded by mu
	nextWatch int                     // guarded by mu
	dead      map[string]*deadEntry   // sessions that ended by themselves; guarded by mu
}

// deadEntry is a session that ended without a Delete, reported DELETED until
// it has been listed once and a minute has passed.
type deadEntry struct {
	info     agentproto.Session
	diedAt   time.Time
	reported bool
}

var silenceXGB sync.Once

// New returns a driver for cfg and re-adopts the sessions recorded in
// cfg.StateDir whose Xvnc still runs. It fails only for a misconfiguration
// (no StateDir, a bad Geometry, a StateDir it cannot create); a host without
// Xvnc gives a Driver whose Health says so.
func New(cfg Config) (*Driver, error) {
	if cfg.StateDir == "" {
		return nil, errors.New("vnc driver: state directory is required")
	}
	if cfg.Geometry == "" {
		cfg.Geometry = DefaultGeometry
	}
	var w, h int
	if n, err := fmt.Sscanf(cfg.Geometry, "%dx%d", &w, &h); err != nil || n != 2 || w < 64 || h < 64 || w > 16384 || h > 16384 || fmt.Sprintf("%dx%d", w, h) != cfg.Geometry {
		return nil, fmt.Errorf("vnc driver: geometry %q is not WIDTHxHEIGHT (64 to 16384 each)", cfg.Geometry)
	}
	if cfg.FirstDisplay <= 0 {
		cfg.FirstDisplay = DefaultFirstDisplay
	}
	if cfg.ReadyTimeout <= 0 {
		cfg.ReadyTimeout = DefaultReadyTimeout
	}
	if cfg.Lang == "" {
		cfg.Lang = defaultLang
	}
	if cfg.RuntimeRoot == "" {
		cfg.RuntimeRoot = "/run/user"
	}
	switch cfg.PAM {
	case "":
		cfg.PAM = PAMAuto
	case PAMAuto, PAMOff, PAMRequired:
	default:
		return nil, fmt.Errorf("vnc driver: PAM %q is not one of auto, off, required", cfg.PAM)
	}
	for _, c := range []struct{ name, line string }{{"desktop command", cfg.DesktopCommand}, {"default init", cfg.DefaultInit}} {
		if _, err := ParseDesktopCommand(c.line); err != nil {
			return nil, fmt.Errorf("vnc driver: %s %q %v", c.name, c.line, err)
		}
	}
	if cfg.PAMService == "" {
		cfg.PAMService = DefaultPAMService
	}
	if err := login.CheckServiceName(cfg.PAMService); err != nil {
		return nil, fmt.Errorf("vnc driver: %w", err)
	}
	for _, f := range []*string{&cfg.InitFolder, &cfg.AutorunFolder} {
		if *f != "" && !filepath.IsAbs(*f) {
			abs, err := filepath.Abs(*f)
			if err != nil {
				return nil, fmt.Errorf("vnc driver: %w", err)
			}
			*f = abs
		}
	}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.Default()
	}
	logger = logger.With("component", "vnc")
	silenceXGB.Do(func() { xgb.Logger = log.New(io.Discard, "", 0) })

	d := &Driver{
		cfg:      cfg,
		log:      logger,
		width:    w,
		height:   h,
		stateDir: filepath.Join(cfg.StateDir, "sessions"),
		sessions: make(map[string]*session),
		displays: make(map[int]string),
		watchers: make(map[int]func(string)),
		clients:  make(map[int]gateway.Clients),
		dead:     make(map[string]*deadEntry),
		account:  cfg.Account,
	}
	if d.account == nil {
		d.account = &account.Checker{Policy: account.DefaultPolicy()}
	}
	if err := os.MkdirAll(d.stateDir, 0o700); err != nil {
		return nil, fmt.Errorf("vnc driver: create state directory: %w", err)
	}
	if err := os.Chmod(d.stateDir, 0o700); err != nil {
		return nil, fmt.Errorf("vnc driver: %w", err)
	}
	d.xvnc, d.xvncReason = findXvnc(cfg.XvncPath)
	if d.xvnc == "" {
		logger.Warn("Xvnc is not usable; the host is reported unhealthy", "reason", d.xvncReason)
	}
	d.checkDesktop()

	if err := unix.Pipe2(d.wakeFDs[:], unix.O_CLOEXEC|unix.O_NONBLOCK); err != nil {
		return nil, fmt.Errorf("vnc driver: %w", err)
	}
	d.ctx, d.cancel = context.WithCancel(context.Background())
	d.adopt()
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		d.monitor()
	}()
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		d.activityLoop()
	}()
	return d, nil
}

// findXvnc resolves the Xvnc binary; it returns "" and a reason when there is
// none.
func findXvnc(p string) (string, string) {
	const missing = "Xvnc (tigervnc-standalone-server) is not installed"
	if p == "" {
		var err error
		if p, err = exec.LookPath("Xvnc"); err != nil {
			p = "/usr/bin/Xvnc"
		}
	}
	fi, err := os.Stat(p)
	if err != nil || fi.IsDir() {
		return "", missing
	}
	if fi.Mode().Perm()&0o111 == 0 {
		return "", "Xvnc is not executable"
	}
	if !filepath.IsAbs(p) {
		if abs, err := filepath.Abs(p); err == nil {
			p = abs
		}
	}
	return p, ""
}

// checkDesktop logs, once at start, a configured desktop program that is
// not installed (sessions resolve their desktop when they start, so that
// installing it later needs no restart).
func (d *Driver) checkDesktop() {
	for _, line := range []string{d.cfg.DesktopCommand, d.cfg.DefaultInit} {
		argv, _ := ParseDesktopCommand(line)
		if len(argv) > 0 {
			if _, err := lookPath(argv[0]); err != nil {
				d.log.Warn("the configured desktop program is not installed", "program", argv[0])
			}
			return
		}
		if line != "" {
			return // "-"
		}
	}
}

// lookPath finds name in the session PATH (not the agent's).
func lookPath(name string) (string, error) {
	if filepath.IsAbs(name) {
		fi, err := os.Stat(name)
		if err != nil || fi.IsDir() || fi.Mode().Perm()&0o111 == 0 {
			return "", fmt.Errorf("%s is not an executable file", name)
		}
		return name, nil
	}
	for _, dir := range filepath.SplitList(userPath) {
		p := filepath.Join(dir, name)
		if fi, err := os.Stat(p); err == nil && !fi.IsDir() && fi.Mode().Perm()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s not found", name)
}

// Name implements agent.Driver.
func (d *Driver) Name() string { return "vnc" }

// Close stops the driver's watcher. Sessions keep running; a Driver on the
// same StateDir re-adopts them. Create and Delete calls must have returned.
func (d *Driver) Close() error {
	d.cancel()
	d.wakeUp()
	d.wg.Wait()
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.wakeFDs[0] >= 0 {
		unix.Close(d.wakeFDs[0])
		unix.Close(d.wakeFDs[1])
		d.wakeFDs = [2]int{-1, -1}
	}
	return nil
}

// Health implements agent.HealthChecker: the host is healthy when Xvnc is
// installed and executable.
func (d *Driver) Health(ctx context.Context) (bool, string) {
	if d.xvnc == "" {
		return false, d.xvncReason
	}
	if _, reason := findXvnc(d.xvnc); reason != "" {
		return false, reason
	}
	return true, ""
}

// Notify implements agent.Notifier.
func (d *Driver) Notify(f func()) {
	d.mu.Lock()
	d.notifiers = append(d.notifiers, f)
	d.mu.Unlock()
}

// Watch implements gateway.Sessions: f is called with a session's ID after its
// permissions changed or it ended (never with the driver's lock held).
func (d *Driver) Watch(f func(id string)) (stop func()) {
	d.mu.Lock()
	n := d.nextWatch
	d.nextWatch++
	d.watchers[n] = f
	d.mu.Unlock()
	return func() {
		d.mu.Lock()
		delete(d.watchers, n)
		d.mu.Unlock()
	}
}

// changed tells the agent (and, with an id, the gateway) that something
// changed. It must be called without d.mu held.
func (d *Driver) changed(id string) {
	d.mu.Lock()
	fs := append([]func(){}, d.notifiers...)
	var ws []func(string)
	if id != "" {
		for _, w := range d.watchers {
			ws = append(ws, w)
		}
	}
	d.mu.Unlock()
	for _, w := range ws {
		w(id)
	}
	for _, f := range fs {
		f()
	}
}

// Sessions implements agent.Driver: every live session (CREATING or READY,
// including one whose delete is under way) and, once, every session whose X
// server died on its own (DELETED).
func (d *Driver) Sessions(ctx context.Context) ([]agentproto.Session, error) {
	now := time.Now()
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make([]agentproto.Session, 0, len(d.sessions)+len(d.dead))
	for id, s := range d.sessions {
		// A session being deleted stays listed until its teardown is done, so
		// the broker shows DELETED only once nothing of it is left; one whose
		// X server died is listed below, DELETED.
		if _, died := d.dead[id]; s.deleting && died {
			continue
		}
		out = append(out, s.infoLocked())
	}
	for id, e := range d.dead {
		if s, ok := d.sessions[id]; ok && !s.deleting {
			delete(d.dead, id) // created again since
			continue
		}
		out = append(out, e.info)
		if e.reported && now.Sub(e.diedAt) > time.Minute {
			delete(d.dead, id)
			continue
		}
		e.reported = true
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}

// SetPermissions implements agent.PermissionSetter: it validates the file,
// keeps it with the session (also across agent restarts) and lets the gateway
// apply it to live connections at once. Empty text means the default (the
// owner may do everything, nobody else anything).
func (d *Driver) SetPermissions(ctx context.Context, id, file string) error {
	perms, err := parsePermissions(file)
	if err != nil {
		return err
	}
	d.mu.Lock()
	s, ok := d.sessions[id]
	if !ok || s.deleting {
		d.mu.Unlock()
		return ErrNotFound
	}
	s.rec.Permissions = file
	s.perms = perms
	rec := s.rec
	d.mu.Unlock()
	if err := d.saveRecord(&rec); err != nil {
		d.log.Error("save session state", logattr.SessionID, id, "err", err)
	}
	d.changed(id)
	return nil
}

// parsePermissions parses a permissions file; empty text is the default.
func parsePermissions(text string) (*permfile.File, error) {
	if text == "" {
		return permfile.Default(), nil
	}
	f, err := permfile.Parse(text)
	if err != nil {
		return nil, fmt.Errorf("invalid permissions file: %w", err)
	}
	return f, nil
}

// Session implements gateway.Sessions: the bridge target of a READY session.
func (d *Driver) Session(id string) (gateway.Session, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	s, ok := d.sessions[id]
	if !ok || s.deleting || s.state != agentproto.StateReady {
		return gateway.Session{}, false
	}
	return gateway.Session{
		ID:          id,
		Owner:       s.rec.Owner,
		Socket:      s.rec.Socket,
		UID:         s.rec.UID,
		GID:         s.rec.GID,
		Home:        s.rec.Home,
		PID:         s.rec.ServerPID,
		MaxClients:  int(s.rec.MaxClients),
		StorageRoot: storagePath(s.rec.StorageRoot, s.rec.Home),
		Permissions: s.perms,
	}, true
}

// storagePath resolves a StorageRoot as CreateSessions gave it ("%home%"
// is the owner's home; a relative path is under it) to an absolute path;
// "" stays "" (the session has none).
func storagePath(root, home string) string {
	if root == "" || strings.ContainsRune(root, 0) {
		return ""
	}
	s := strings.ReplaceAll(root, "%home%", home)
	if !filepath.IsAbs(s) {
		s = filepath.Join(home, s)
	}
	return filepath.Clean(s)
}

// ConnectionChanged implements gateway.Sessions: the gateway reports a
// session's live connections and, after a disconnection, its time. The agent
// is told at once.
func (d *Driver) ConnectionChanged(id string, n int, lastDisconnect time.Time) {
	d.mu.Lock()
	s, ok := d.sessions[id]
	if ok {
		s.conns = n
		if !lastDisconnect.IsZero() {
			s.lastDisconnect = lastDisconnect.UTC().Truncate(time.Millisecond)
		}
	}
	d.mu.Unlock()
	if ok {
		d.changed("")
	}
}

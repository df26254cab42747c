package vnc

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jezek/xgb/xproto"

	"github.com/berth-dev/berth/internal/account"
	"github.com/berth-dev/berth/internal/agent"
	"github.com/berth-dev/berth/internal/agentproto"
	"github.com/berth-dev/berth/internal/logattr"
	"github.com/berth-dev/berth/internal/login"
)

// DCV's limits on autorun arguments.
const (
	maxAutorunArgs   = 50
	maxAutorunArgLen = 150
)

// owner is a local user that owns a session.
type owner struct {
	name   string
	uid    int
	gid    int
	groups []uint32
	home   string
	shell  string
}

// lookupOwner resolves a session owner to a local user: a name the host's
// user database (NSS: /etc/passwd, or SSSD, winbind, LDAP) knows as it is.
// Names are first checked with agent.CheckUserName, so that none can escape a
// path or a command line. A Windows-style "DOMAIN\user" works only where the
// host resolves that exact name (joined to the domain with winbind or SSSD);
// the domain is never stripped to guess a local user, which could hand
// CORP\root's session to root or CORP\alice's to an unrelated local alice.
// An owner the host does not know is an invalid request
// (agent.ErrInvalidRequest); a user database that cannot answer is not.
func lookupOwner(name string) (*owner, error) {
	if err := agent.CheckUserName("Owner", name); err != nil {
		return nil, err
	}
	u, err := user.Lookup(name)
	if err != nil {
		var unknown user.UnknownUserError
		switch {
		case !errors.As(err, &unknown):
			return nil, &lookupError{fmt.Errorf("cannot look up owner %q: %v", name, err)}
		case strings.Contains(name, `\`):
			return nil, agent.InvalidRequest(fmt.Errorf("owner %q is not a local user on this host: the vnc driver runs sessions as local users, and a DOMAIN\\user name works only on a host joined to the domain (winbind or SSSD) that resolves that exact name", name))
		default:
			return nil, agent.InvalidRequest(fmt.Errorf("owner %q is not a local user on this host", name))
		}
	}
	uid, err1 := strconv.Atoi(u.Uid)
	gid, err2 := strconv.Atoi(u.Gid)
	if err1 != nil || err2 != nil {
		return nil, agent.InvalidRequest(fmt.Errorf("owner %q has no numeric user id", name))
	}
	if uid == 0 {
		return nil, agent.InvalidRequest(errors.New("sessions cannot be owned by root"))
	}
	o := &owner{name: u.Username, uid: uid, gid: gid, home: u.HomeDir, shell: loginShell(u.Username)}
	gids, err := u.GroupIds()
	if err != nil {
		gids = []string{u.Gid}
	}
	for _, g := range gids {
		if n, err := strconv.ParseUint(g, 10, 32); err == nil {
			o.groups = append(o.groups, uint32(n))
		}
	}
	if o.home == "" {
		o.home = "/"
	}
	return o, nil
}

// loginShell returns the user's shell from /etc/passwd, or /bin/sh.
func loginShell(name string) string {
	f, err := os.Open("/etc/passwd")
	if err != nil {
		return "/bin/sh"
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Split(sc.Text(), ":")
		if len(fields) >= 7 && fields[0] == name && fields[6] != "" {
			return fields[6]
		}
	}
	return "/bin/sh"
}

// credential returns the SysProcAttr that runs a process as o, in a session
// of its own.
func (o *owner) sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{
		Setsid: true,
		Credential: &syscall.Credential{
			Uid:    uint32(o.uid),
			Gid:    uint32(o.gid),
			Groups: o.groups,
		},
	}
}

// env is the clean environment of a session's processes.
func (d *Driver) env(o *owner, display int, cookie string) []string {
	return []string{
		"HOME=" + o.home,
		"USER=" + o.name,
		"LOGNAME=" + o.name,
		"SHELL=" + o.shell,
		"PATH=" + userPath,
		"XDG_RUNTIME_DIR=" + filepath.Join(d.cfg.RuntimeRoot, strconv.Itoa(o.uid)),
		"DISPLAY=:" + strconv.Itoa(display),
		"XAUTHORITY=" + cookie,
		"LANG=" + d.cfg.Lang,
	}
}

// workDir is the directory session processes start in: the home directory
// when it exists, else /.
func (o *owner) workDir() string {
	if fi, err := os.Stat(o.home); err == nil && fi.IsDir() {
		return o.home
	}
	return "/"
}

// plan is a validated create request.
type plan struct {
	req     agent.CreateRequest
	owner   *owner
	init    []string // argv; nil: nothing
	autorun []string // argv; nil: nothing
	// desktop is the desktop start (init) when the request names no
	// InitFile.
	desktop desktop
	storage string // expanded storage root; "" for none
	// pamService is the PAM service the session's server starts in; "" for
	// none.
	pamService string
}

// validate checks a request and resolves everything it names. Refusals of
// the request are marked agent.ErrInvalidRequest; a host without Xvnc, or a
// user database that cannot answer, is not the request's fault.
func (d *Driver) validate(req agent.CreateRequest) (*plan, error) {
	if d.xvnc == "" {
		return nil, errors.New(d.xvncReason)
	}
	p, err := d.plan(req)
	var le *lookupError
	if err != nil && !errors.As(err, &le) {
		err = agent.InvalidRequest(err)
	}
	return p, err
}

// lookupError is a failure of the host, not of the request: a user
// database that could not answer, a configured desktop that is not
// installed.
type lookupError struct{ err error }

func (e *lookupError) Error() string { return e.err.Error() }
func (e *lookupError) Unwrap() error { return e.err }

// plan is validate without the marking of errors.
func (d *Driver) plan(req agent.CreateRequest) (*plan, error) {
	if req.Type == "" {
		req.Type = "VIRTUAL"
	}
	if req.Type != "VIRTUAL" && req.Type != "CONSOLE" {
		return nil, fmt.Errorf("unsupported session type %q", req.Type)
	}
	if req.DcvGlEnabled {
		return nil, errors.New("DCV GL is not available on this host")
	}
	if req.MaxConcurrentClients < 0 {
		return nil, errors.New("MaxConcurrentClients must not be negative")
	}
	if _, err := parsePermissions(req.PermissionsFile); err != nil {
		return nil, err
	}
	o, err := lookupOwner(req.Owner)
	if err != nil {
		return nil, err
	}
	if err := d.account.Check(req.Owner); err != nil {
		var r *account.Refusal
		if errors.As(err, &r) || errors.Is(err, account.ErrUnknownUser) {
			return nil, err
		}
		return nil, &lookupError{err}
	}
	p := &plan{req: req, owner: o}
	if p.pamService, err = d.pamService(); err != nil {
		return nil, &lookupError{err} // the host's, not the request's
	}
	if req.InitFile != "" {
		path, err := agent.ResolveInFolder(d.cfg.InitFolder, req.InitFile, "InitFile", "init")
		if err != nil {
			return nil, err
		}
		p.init = []string{path}
	} else if req.Type != "CONSOLE" {
		if p.desktop, err = d.desktopFor(o); err != nil {
			return nil, &lookupError{err} // the host's, not the request's
		}
		p.init = p.desktop.argv
	}
	if len(req.AutorunFileArguments) > 0 && req.AutorunFile == "" {
		return nil, errors.New("AutorunFileArguments given without an AutorunFile")
	}
	if req.AutorunFile != "" {
		path, err := agent.ResolveInFolder(d.cfg.AutorunFolder, req.AutorunFile, "AutorunFile", "autorun")
		if err != nil {
			return nil, err
		}
		if len(req.AutorunFileArguments) > maxAutorunArgs {
			return nil, fmt.Errorf("AutorunFileArguments: at most %d arguments", maxAutorunArgs)
		}
		for _, a := range req.AutorunFileArguments {
			if len(a) > maxAutorunArgLen {
				return nil, fmt.Errorf("AutorunFileArguments: an argument is longer than %d characters", maxAutorunArgLen)
			}
			if strings.ContainsRune(a, 0) {
				return nil, errors.New("AutorunFileArguments: an argument contains a NUL character")
			}
		}
		p.autorun = append([]string{path}, req.AutorunFileArguments...)
	}
	if req.StorageRoot != "" {
		if strings.ContainsRune(req.StorageRoot, 0) {
			return nil, errors.New("StorageRoot is not a valid path")
		}
		p.storage = storagePath(req.StorageRoot, o.home)
	}
	return p, nil
}

// pamService returns the PAM service a new session starts in ("" for none),
// or why none can when Config.PAM is PAMRequired.
func (d *Driver) pamService() (string, error) {
	if d.cfg.PAM == PAMOff {
		return "", nil
	}
	err := login.Available(d.cfg.PAMService)
	switch {
	case err == nil:
		return d.cfg.PAMService, nil
	case d.cfg.PAM == PAMRequired:
		return "", fmt.Errorf("sessions need PAM here (agent.conf [account] pam = %q), but %v", PAMRequired, err)
	}
	d.pamWarn.Do(func() {
		d.log.Warn("sessions start without PAM (agent.conf [account] pam = \"auto\")", "reason", err.Error())
	})
	return "", nil
}

// Create implements agent.Driver. It returns once the session is READY (its
// X server answers and its VNC socket speaks RFB) and its init and autorun
// programs have started, or with the reason it failed. Creating an existing
// ID waits for that session's start and returns its outcome.
func (d *Driver) Create(ctx context.Context, req agent.CreateRequest) error {
	if !validID(req.ID) {
		return errors.New("invalid session id")
	}
	d.mu.Lock()
	if s, ok := d.sessions[req.ID]; ok {
		d.mu.Unlock()
		if s.deleting {
			return errors.New("the session is being deleted")
		}
		select {
		case <-s.started:
			return s.startErr
		case <-ctx.Done():
			return fmt.Errorf("create session: %w", ctx.Err())
		}
	}
	d.mu.Unlock()

	p, err := d.validate(req)
	if err != nil {
		return err
	}
	perms, _ := parsePermissions(req.PermissionsFile)
	typ := p.req.Type
	startCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	s := &session{
		rec: record{
			ID:          req.ID,
			Name:        req.Name,
			Owner:       p.owner.name,
			Type:        typ,
			UID:         p.owner.uid,
			GID:         p.owner.gid,
			Home:        p.owner.home,
			Display:     -1,
			MaxClients:  req.MaxConcurrentClients,
			StorageRoot: req.StorageRoot,
			Created:     time.Now().UTC().Truncate(time.Millisecond),
			Permissions: req.PermissionsFile,
			Request:     req,
			Log:         filepath.Join(d.stateDir, req.ID+".log"),
		},
		perms:       perms,
		state:       agentproto.StateCreating,
		started:     make(chan struct{}),
		cancelStart: cancel,
		groups:      account.Groups(p.owner.name),
	}
	d.mu.Lock()
	if other, ok := d.sessions[req.ID]; ok {
		// Another Create won the race.
		d.mu.Unlock()
		select {
		case <-other.started:
			return other.startErr
		case <-ctx.Done():
			return fmt.Errorf("create session: %w", ctx.Err())
		}
	}
	delete(d.dead, req.ID)
	d.sessions[req.ID] = s
	d.mu.Unlock()
	d.changed("")

	t0 := time.Now()
	if typ == "CONSOLE" {
		err = d.startConsole(startCtx, s, p)
	} else {
		err = d.startVirtual(startCtx, s, p)
	}
	d.mu.Lock()
	if err == nil && s.deleting {
		err = errors.New("the session was deleted while it started")
	}
	if err != nil {
		s.deleting = true
	} else {
		s.state = agentproto.StateReady
	}
	rec := s.rec
	d.mu.Unlock()

	if err != nil {
		if ctxErr := ctx.Err(); ctxErr != nil && !strings.Contains(err.Error(), "context") {
			err = fmt.Errorf("%w (%v)", err, ctxErr)
		}
		d.log.Warn("session failed to start", logattr.SessionID, req.ID, logattr.Owner, rec.Owner, "err", err)
		d.teardown(context.WithoutCancel(ctx), s)
		d.mu.Lock()
		if d.sessions[req.ID] == s {
			delete(d.sessions, req.ID)
		}
		d.releaseDisplayLocked(rec.Display, req.ID)
		s.startErr = err
		close(s.started)
		d.mu.Unlock()
		d.changed(req.ID)
		return err
	}
	d.mu.Lock()
	close(s.started)
	d.mu.Unlock()
	d.log.Info("session ready", logattr.SessionID, req.ID, logattr.Owner, rec.Owner, "display", rec.Display, "pid", rec.ServerPID, "took", time.Since(t0).Round(time.Millisecond))
	d.wakeUp()
	d.changed(req.ID)
	return nil
}

// startVirtual starts the Xvnc of a VIRTUAL session and, once it is ready,
// its init and autorun programs.
func (d *Driver) startVirtual(ctx context.Context, s *session, p *plan) error {
	o := p.owner
	if err := d.prepareX11Dir(); err != nil {
		return err
	}
	dirName := "berth-" + s.rec.ID
	dir := filepath.Join(d.cfg.RuntimeRoot, strconv.Itoa(o.uid), dirName)
	cookie := make([]byte, 16)
	rand.Read(cookie)
	d.mu.Lock()
	s.rec.Dir = dir
	s.rec.Socket = filepath.Join(dir, "vnc.sock")
	s.rec.Cookie = filepath.Join(dir, "xauth")
	s.rec.CookieHex = hex.EncodeToString(cookie)
	d.mu.Unlock()

	// The session directory and its cookie: created by root (0700) and
	// handed to the owner once populated, after the PAM session opened (its
	// pam_systemd may mount the owner's runtime directory), before Xvnc
	// starts. A leftover of a crashed session goes first.
	prepared := false
	prepare := func() error {
		if prepared {
			return nil
		}
		rt, err := d.runtimeDir(o)
		if err != nil {
			return err
		}
		root, err := os.OpenRoot(rt)
		if err != nil {
			return fmt.Errorf("open runtime directory: %w", err)
		}
		defer root.Close()
		if err := root.RemoveAll(dirName); err != nil {
			return fmt.Errorf("clear session directory: %w", err)
		}
		if err := root.Mkdir(dirName, 0o700); err != nil {
			return fmt.Errorf("create session directory: %w", err)
		}
		if err := writeCookie(root, dirName+"/xauth", cookie, o); err != nil {
			return err
		}
		if err := root.Lchown(dirName, o.uid, o.gid); err != nil {
			return fmt.Errorf("create session directory: %w", err)
		}
		prepared = true
		return nil
	}
	if p.pamService == "" {
		if err := prepare(); err != nil {
			return err
		}
	}

	logf, err := os.OpenFile(s.rec.Log, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("open session log: %w", err)
	}
	defer logf.Close()

	if err := d.startXvnc(ctx, s, p, cookie, logf, prepare); err != nil {
		return err
	}
	if p.storage != "" {
		if err := makeStorageRoot(ctx, o, p.storage); err != nil {
			return err
		}
	}
	if err := d.startPrograms(ctx, s, p, logf); err != nil {
		return err
	}
	d.mu.Lock()
	s.rec.Ready = true
	rec := s.rec
	d.mu.Unlock()
	return d.saveRecord(&rec)
}

// startXvnc allocates a display and starts Xvnc on it, retrying with the next
// number when the X server finds it taken, and waits until it is ready.
func (d *Driver) startXvnc(ctx context.Context, s *session, p *plan, cookie []byte, logf *os.File, prepare func() error) error {
	var lastErr error
	skip := map[int]bool{}
	for attempt := 0; attempt < 8; attempt++ {
		n, err := d.allocDisplay(s.rec.ID, skip)
		if err != nil {
			return err
		}
		d.mu.Lock()
		s.rec.Display = n
		d.mu.Unlock()
		retry, err := d.tryXvnc(ctx, s, p, n, cookie, logf, prepare)
		if err == nil {
			return nil
		}
		lastErr = err
		d.mu.Lock()
		d.releaseDisplayLocked(n, s.rec.ID)
		s.rec.Display = -1
		d.mu.Unlock()
		if !retry || ctx.Err() != nil {
			return err
		}
		skip[n] = true
		d.log.Info("display taken, trying another", logattr.SessionID, s.rec.ID, "display", n)
	}
	return lastErr
}

// tryXvnc starts Xvnc on display n. retry says the display was taken.
func (d *Driver) tryXvnc(ctx context.Context, s *session, p *plan, n int, cookie []byte, logf *os.File, prepare func() error) (retry bool, err error) {
	o := p.owner
	name := s.rec.Name
	if name == "" {
		name = s.rec.ID
	}
	args := []string{
		":" + strconv.Itoa(n),
		"-geometry", d.cfg.Geometry,
		"-depth", "24",
		"-rfbport", "-1",
		"-rfbunixpath", s.rec.Socket,
		"-rfbunixmode", "0600",
		"-SecurityTypes", "None",
		"-auth", s.rec.Cookie,
		"-nolisten", "tcp",
		"-AlwaysShared",
		"-UseBlacklist=0",
		"-desktop", name,
		"-displayfd", "3",
	}
	pr, pw, err := os.Pipe()
	if err != nil {
		return false, fmt.Errorf("start Xvnc: %w", err)
	}
	defer pr.Close()
	logStart, _ := logf.Seek(0, io.SeekEnd)
	cmd := exec.Command(d.xvnc, args...)
	cmd.Env = d.env(o, n, s.rec.Cookie)
	cmd.Dir = o.workDir()
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.ExtraFiles = []*os.File{pw}
	cmd.SysProcAttr = o.sysProcAttr()
	deadline := time.Now().Add(d.cfg.ReadyTimeout)
	if dl, ok := ctx.Deadline(); ok && dl.Before(deadline) {
		deadline = dl
	}
	pid, err := d.startServer(ctx, s, p, cmd, ":"+strconv.Itoa(n), deadline, prepare)
	pw.Close()
	if err != nil {
		return false, err
	}
	pi, _ := readStat(pid)
	sp := &proc{pid: pid, start: pi.start, child: true, role: "server"}
	d.mu.Lock()
	s.rec.ServerPID, s.rec.ServerStart = pid, pi.start
	s.procs = append(s.procs, sp)
	rec := s.rec
	d.mu.Unlock()
	// Record the session now, so that an agent that dies while it starts
	// leaves nothing unaccounted for.
	if err := d.saveRecord(&rec); err != nil {
		return false, err
	}

	stop := context.AfterFunc(ctx, func() { pr.SetReadDeadline(time.Now()) })
	defer stop()
	pr.SetReadDeadline(deadline)
	got, rerr := readDisplayFD(pr)
	fail := func(reason string) (bool, error) {
		// Stop this attempt's server; the caller tears the rest down.
		syscall.Kill(pid, syscall.SIGKILL)
		waitGone(sp, 2*time.Second)
		d.mu.Lock()
		s.procs = removeProc(s.procs, sp)
		d.mu.Unlock()
		tail := logTail(s.rec.Log, logStart)
		taken := strings.Contains(tail, "already active for display") ||
			strings.Contains(tail, "Cannot establish any listening sockets") ||
			strings.Contains(tail, "Address already in use")
		if !taken {
			removeXFiles(n, o.uid) // what the killed server left
		}
		if taken {
			return true, errors.New("the X display is taken")
		}
		if line := lastLine(tail); line != "" && reason == "the X server exited" {
			reason += ": " + line
		}
		return false, errors.New(reason)
	}
	switch {
	case ctx.Err() != nil:
		return fail("start cancelled")
	case rerr != nil && errors.Is(rerr, os.ErrDeadlineExceeded):
		return fail(fmt.Sprintf("the X server did not become ready within %s", d.cfg.ReadyTimeout))
	case rerr != nil:
		return fail("the X server exited")
	case got != n:
		return fail(fmt.Sprintf("the X server reported display :%d instead of :%d", got, n))
	}
	// The display answers an X round trip with the session's cookie ...
	for {
		err = xPing(ctx, n, cookie, pid, deadline)
		if err == nil || time.Now().After(deadline) || ctx.Err() != nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		return fail("the X display does not answer: " + err.Error())
	}
	// ... and the VNC socket speaks RFB.
	if err := rfbPing(s.rec.Socket, deadline); err != nil {
		return fail("the VNC socket does not answer: " + err.Error())
	}
	return false, nil
}

// startServer starts a session's server (Xvnc, or x0vncserver for the
// console) from cmd, which runs as the owner: directly, or through the login
// helper in a PAM session of p.pamService, whose environment it keeps for
// the session's other programs. prepare runs before the server starts
// (after PAM opened the session). It returns the server's PID, the agent's
// child to reap. A PAM account refusal is an invalid request.
func (d *Driver) startServer(ctx context.Context, s *session, p *plan, cmd *exec.Cmd, display string, deadline time.Time, prepare func() error) (int, error) {
	prog := filepath.Base(cmd.Path)
	closeOnExec()
	if p.pamService == "" {
		if prepare != nil {
			if err := prepare(); err != nil {
				return 0, err
			}
		}
		if err := cmd.Start(); err != nil {
			return 0, fmt.Errorf("start %s: %s", prog, shortExecErr(err))
		}
		pid := cmd.Process.Pid
		cmd.Process.Release() // the monitor reaps it with wait4
		return pid, nil
	}
	pctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	st, err := login.Start(pctx, cmd, login.Options{Service: p.pamService, User: p.owner.name, Display: display, BeforeExec: prepare})
	if err != nil {
		var r *login.Refusal
		if errors.As(err, &r) {
			return 0, agent.InvalidRequest(err)
		}
		return 0, fmt.Errorf("start %s: %w", prog, err)
	}
	if st.Note != "" {
		d.log.Info(st.Note, logattr.SessionID, s.rec.ID, logattr.Owner, p.owner.name)
	}
	d.mu.Lock()
	s.pamEnv = st.Env
	d.mu.Unlock()
	pid := st.Process.Pid
	st.Process.Release()
	return pid, nil
}

// readDisplayFD reads the display number Xvnc writes to -displayfd.
func readDisplayFD(r *os.File) (int, error) {
	var buf []byte
	b := make([]byte, 16)
	for len(buf) < 16 {
		n, err := r.Read(b)
		buf = append(buf, b[:n]...)
		if i := bytes.IndexByte(buf, '\n'); i >= 0 {
			return strconv.Atoi(string(buf[:i]))
		}
		if err != nil {
			return -1, err
		}
	}
	return -1, errors.New("garbage on displayfd")
}

// xPing connects to display n with cookie (checking that the server process
// is pid) and makes a round trip.
func xPing(ctx context.Context, n int, cookie []byte, pid int, deadline time.Time) error {
	c, err := xConnect(ctx, n, cookie, pid, deadline)
	if err != nil {
		return err
	}
	defer c.Close()
	_, err = xproto.GetInputFocus(c).Reply()
	return err
}

// rfbPing dials the VNC socket and reads the server's protocol version.
func rfbPing(sock string, deadline time.Time) error {
	conn, err := net.DialTimeout("unix", sock, time.Until(deadline))
	if err != nil {
		return err
	}
	defer conn.Close()
	conn.SetDeadline(deadline)
	buf := make([]byte, 12)
	if _, err := io.ReadFull(conn, buf); err != nil {
		return err
	}
	if string(buf) != "RFB 003.008\n" {
		return fmt.Errorf("unexpected banner %q", buf)
	}
	return nil
}

// startPrograms starts the init and autorun programs as the owner, each in
// a session of its own. A VIRTUAL session's programs get a desktop's
// environment: XDG_SESSION_TYPE=x11 and the address of the session's own
// D-Bus session bus, which starts first (where dbus-daemon is installed).
func (d *Driver) startPrograms(ctx context.Context, s *session, p *plan, logf *os.File) error {
	if len(p.init) == 0 && len(p.autorun) == 0 {
		return nil
	}
	d.mu.Lock()
	rec := s.rec
	pamEnv := s.pamEnv
	d.mu.Unlock()
	base := d.env(p.owner, rec.Display, rec.Cookie)
	if !isConsole(&rec) {
		// The console shares the user's desktop, and its bus.
		base = append(base, "XDG_SESSION_TYPE=x11")
		if addr := d.startBus(ctx, s, p, login.MergeEnv(base, pamEnv), logf); addr != "" {
			base = append(base, "DBUS_SESSION_BUS_ADDRESS="+addr)
		}
	}
	env := login.MergeEnv(base, pamEnv)
	if len(p.init) > 0 && p.req.InitFile == "" {
		d.log.Info("starting the session's desktop", logattr.SessionID, rec.ID, "desktop", p.desktop.what, "argv", p.init)
	}
	for _, prog := range []struct {
		role string
		argv []string
	}{{"init", p.init}, {"autorun", p.autorun}} {
		if len(prog.argv) == 0 {
			continue
		}
		if prog.role == "autorun" && len(p.init) > 0 {
			// Windows mapped while the window manager starts stay unmanaged;
			// a desktop session takes longer to bring its window manager up.
			pid := rec.ServerPID
			if isConsole(&rec) {
				pid = 0 // the console's X server is not ours
			}
			wait, clients := wmWait, time.Duration(0)
			if p.desktop.full {
				wait, clients = desktopWait, clientWait
			}
			cookie, err := rec.xCookie()
			if err != nil || !waitWindowManager(context.Background(), rec.Display, cookie, pid, wait, clients) {
				d.log.Info("no window manager answered; starting the autorun program anyway", logattr.SessionID, s.rec.ID)
			}
		}
		cmd := exec.Command(prog.argv[0], prog.argv[1:]...)
		cmd.Env = env
		cmd.Dir = p.owner.workDir()
		cmd.Stdout, cmd.Stderr = logf, logf
		cmd.SysProcAttr = p.owner.sysProcAttr()
		pid, err := d.startProcess(ctx, s, p, cmd, prog.role)
		if err != nil {
			return err
		}
		d.mu.Lock()
		if prog.role == "init" {
			s.rec.InitPID = pid
		} else {
			s.rec.AutorunPID = pid
		}
		d.mu.Unlock()
	}
	return nil
}

// startProcess starts cmd, a program of the session run as its owner, in the
// session's PAM session when it has one (with the server's limits), and
// watches it. It returns its PID.
func (d *Driver) startProcess(ctx context.Context, s *session, p *plan, cmd *exec.Cmd, role string) (int, error) {
	closeOnExec()
	var pid int
	if p.pamService == "" {
		if err := cmd.Start(); err != nil {
			return 0, fmt.Errorf("start %s program: %s", role, shortExecErr(err))
		}
		pid = cmd.Process.Pid
		cmd.Process.Release()
	} else {
		d.mu.Lock()
		serverPID := s.rec.ServerPID
		d.mu.Unlock()
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), d.cfg.ReadyTimeout)
		st, err := login.Start(sctx, cmd, login.Options{LimitsFrom: serverPID})
		cancel()
		if err != nil {
			return 0, fmt.Errorf("start %s program: %v", role, err)
		}
		pid = st.Process.Pid
		st.Process.Release()
	}
	pi, _ := readStat(pid)
	d.mu.Lock()
	s.procs = append(s.procs, &proc{pid: pid, start: pi.start, child: true, role: role})
	d.mu.Unlock()
	return pid, nil
}

// startBus starts the session's own D-Bus session bus (dbus-daemon
// --session, listening on DIR/bus in the session directory) with env, and
// returns its address once it listens; "" when dbus-daemon is not installed
// or did not start (the session goes on without). A bus of its own, rather
// than the user's systemd bus, lets one user run several desktop sessions:
// the session managers of XFCE and others claim unique bus names.
func (d *Driver) startBus(ctx context.Context, s *session, p *plan, env []string, logf *os.File) string {
	daemon, err := lookPath("dbus-daemon")
	if err != nil {
		return ""
	}
	d.mu.Lock()
	id, dir := s.rec.ID, s.rec.Dir
	d.mu.Unlock()
	pr, pw, err := os.Pipe()
	if err != nil {
		d.log.Warn("session bus not started", logattr.SessionID, id, "err", err)
		return ""
	}
	defer pr.Close()
	cmd := exec.Command(daemon, "--session", "--nofork", "--nopidfile", "--nosyslog",
		"--address=unix:path="+filepath.Join(dir, "bus"), "--print-address=3")
	cmd.Env = env
	cmd.Dir = p.owner.workDir()
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.ExtraFiles = []*os.File{pw}
	cmd.SysProcAttr = p.owner.sysProcAttr()
	pid, err := d.startProcess(ctx, s, p, cmd, "bus")
	pw.Close()
	if err != nil {
		d.log.Warn("session bus not started", logattr.SessionID, id, "err", err)
		return ""
	}
	d.mu.Lock()
	s.rec.BusPID = pid
	d.mu.Unlock()
	stop := context.AfterFunc(ctx, func() { pr.SetReadDeadline(time.Now()) })
	defer stop()
	pr.SetReadDeadline(time.Now().Add(d.cfg.ReadyTimeout))
	line, err := bufio.NewReader(io.LimitReader(pr, 4096)).ReadString('\n')
	addr := strings.TrimSpace(line)
	if err != nil || !strings.HasPrefix(addr, "unix:") {
		d.log.Warn("the session bus did not start; the session goes on without", logattr.SessionID, id, "err", err)
		return ""
	}
	return addr
}

// shortExecErr strips the path from an exec error.
func shortExecErr(err error) string {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err.Error()
	}
	return err.Error()
}

// makeStorageRoot creates the storage root with its parents, as the owner, so
// that the owner owns what is created and a symlink of theirs cannot make
// root create directories elsewhere.
func makeStorageRoot(ctx context.Context, o *owner, dir string) error {
	mkdir := "/usr/bin/mkdir"
	if _, err := os.Stat(mkdir); err != nil {
		mkdir = "/bin/mkdir"
	}
	cmd := exec.CommandContext(ctx, mkdir, "-p", "--", dir)
	cmd.Env = []string{"PATH=" + userPath, "HOME=" + o.home, "LANG=C"}
	cmd.Dir = o.workDir()
	cmd.SysProcAttr = o.sysProcAttr()
	closeOnExec()
	out, err := cmd.CombinedOutput()
	if err != nil {
		msg := strings.TrimSpace(string(out))
		if i := strings.LastIndex(msg, ": "); i >= 0 {
			msg = msg[i+2:]
		}
		if msg == "" {
			msg = err.Error()
		}
		return fmt.Errorf("cannot create StorageRoot as the owner: %s", msg)
	}
	return nil
}

// prepareX11Dir makes /tmp/.X11-unix root-owned with mode 1777 (pitfall G1:
// otherwise the first X server of a user creates it as theirs).
func (d *Driver) prepareX11Dir() error {
	d.x11Once.Do(func() { d.x11Err = prepareX11Dir("/tmp/.X11-unix") })
	return d.x11Err
}

func prepareX11Dir(dir string) error {
	fi, err := os.Lstat(dir)
	if errors.Is(err, fs.ErrNotExist) {
		if err := os.Mkdir(dir, 0o1777); err != nil && !errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("create %s: %w", dir, err)
		}
		fi, err = os.Lstat(dir)
	}
	if err != nil {
		return fmt.Errorf("check %s: %w", dir, err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("%s is not a directory", dir)
	}
	st := fi.Sys().(*syscall.Stat_t)
	if st.Uid != 0 || st.Gid != 0 {
		if err := os.Lchown(dir, 0, 0); err != nil {
			return fmt.Errorf("chown %s: %w", dir, err)
		}
	}
	if fi.Mode()&(fs.ModePerm|fs.ModeSticky) != 0o777|fs.ModeSticky {
		if err := os.Chmod(dir, 0o777|fs.ModeSticky); err != nil {
			return fmt.Errorf("chmod %s: %w", dir, err)
		}
	}
	return nil
}

// runtimeDir makes sure the owner's runtime directory exists (0700, theirs)
// and returns it.
func (d *Driver) runtimeDir(o *owner) (string, error) {
	if err := os.MkdirAll(d.cfg.RuntimeRoot, 0o755); err != nil {
		return "", fmt.Errorf("create %s: %w", d.cfg.RuntimeRoot, err)
	}
	dir := filepath.Join(d.cfg.RuntimeRoot, strconv.Itoa(o.uid))
	fi, err := os.Lstat(dir)
	if errors.Is(err, fs.ErrNotExist) {
		if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
			return "", fmt.Errorf("create runtime directory: %w", err)
		}
		if err := os.Lchown(dir, o.uid, o.gid); err != nil {
			return "", fmt.Errorf("create runtime directory: %w", err)
		}
		fi, err = os.Lstat(dir)
	}
	if err != nil {
		return "", fmt.Errorf("check runtime directory: %w", err)
	}
	if !fi.IsDir() || int(fi.Sys().(*syscall.Stat_t).Uid) != o.uid {
		return "", fmt.Errorf("runtime directory %s is not a directory owned by the owner", dir)
	}
	return dir, nil
}

// allocDisplay reserves the lowest free display number from FirstDisplay up,
// skipping numbers in use by this driver, in skip, or with an X socket, an
// abstract socket or a lock file.
func (d *Driver) allocDisplay(id string, skip map[int]bool) (int, error) {
	abstract := abstractX11Sockets()
	d.mu.Lock()
	defer d.mu.Unlock()
	for n := d.cfg.FirstDisplay; n < d.cfg.FirstDisplay+displayCount; n++ {
		if _, used := d.displays[n]; used || skip[n] || abstract[n] {
			continue
		}
		if exists(fmt.Sprintf("/tmp/.X11-unix/X%d", n)) || exists(fmt.Sprintf("/tmp/.X%d-lock", n)) {
			continue
		}
		d.displays[n] = id
		return n, nil
	}
	return 0, errors.New("no free X display number on this host")
}

// releaseDisplayLocked frees display n if id holds it. d.mu must be held.
func (d *Driver) releaseDisplayLocked(n int, id string) {
	if n >= 0 && d.displays[n] == id {
		delete(d.displays, n)
	}
}

func exists(p string) bool {
	_, err := os.Lstat(p)
	return err == nil
}

// abstractX11Sockets returns the display numbers with an abstract
// "@/tmp/.X11-unix/XN" socket (X servers listen there too, and a user could
// squat one).
func abstractX11Sockets() map[int]bool {
	data, err := os.ReadFile("/proc/net/unix")
	if err != nil {
		return nil
	}
	m := make(map[int]bool)
	for line := range strings.SplitSeq(string(data), "\n") {
		i := strings.Index(line, "@/tmp/.X11-unix/X")
		if i < 0 {
			continue
		}
		if n, err := strconv.Atoi(strings.TrimSpace(line[i+len("@/tmp/.X11-unix/X"):])); err == nil {
			m[n] = true
		}
	}
	return m
}

// logTail returns what was appended to the log after offset (at most 4 KiB).
func logTail(path string, offset int64) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	end, _ := f.Seek(0, io.SeekEnd)
	if end-offset > 4096 {
		offset = end - 4096
	}
	f.Seek(offset, io.SeekStart)
	data, _ := io.ReadAll(io.LimitReader(f, 4096))
	return string(data)
}

// lastLine returns the last non-empty line of s, trimmed to 160 bytes.
func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	l := strings.TrimSpace(lines[len(lines)-1])
	if len(l) > 160 {
		l = l[:160]
	}
	return l
}

func removeProc(ps []*proc, p *proc) []*proc {
	out := ps[:0]
	for _, q := range ps {
		if q != p {
			out = append(out, q)
		}
	}
	return out
}

// waitGone waits up to d for p to end.
func waitGone(p *proc, d time.Duration) bool {
	deadline := time.Now().Add(d)
	for {
		if p.exited() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(10 * time.Millisecond)
	}
}

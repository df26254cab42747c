// Package login starts a program as a local user in a login session, the way
// a display manager starts a desktop: PAM account management (pam_nologin,
// pam_unix's expiry, pam_access, pam_sss, ...), credentials and session
// (pam_limits' resource limits, pam_systemd's logind session, pam_keyinit),
// the PAM environment, then the switch to the user and the exec.
//
// PAM runs in a helper process, never in the caller: pam_limits sets the
// resource limits of the process that opens the session, and modules may
// leave threads, descriptors or signal handlers behind. The helper is the
// calling program itself, executed again through /proc/self/exe with a
// marker argument: a program that uses Start calls Main first thing in main
// (and a test binary in TestMain). The helper runs as root in the new
// process's session, opens the PAM session, reports the PAM environment,
// waits for the caller's go-ahead (the caller prepares files in the user's
// runtime directory, which pam_systemd may have just mounted), then drops to
// the user and replaces itself with the program: the PID the caller tracks is
// the program's.
//
// The PAM session is never closed (pam_close_session): no process is left to
// do it when the program exits. pam_systemd's logind session ends with the
// program, whose descriptor on the session's FIFO keeps it open; modules
// that undo something at close (pam_mount) do not.
//
// libpam is loaded at run time (dlopen of libpam.so.0): building needs no
// PAM headers, and a host without libpam reports that PAM is unavailable.
package login

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// helperArg is the argument that makes Main run the helper.
const helperArg = "__berth-login-helper"

// DefaultTimeout bounds a helper's PAM work when the context has no
// deadline.
const DefaultTimeout = 30 * time.Second

// registered is set by Main: this program can run the helper.
var registered atomic.Bool

// Main makes this program able to serve as the helper and, when it was
// started as one, runs the helper and exits. Call it first in main (and in
// TestMain of tests that start sessions through Start).
func Main() {
	registered.Store(true)
	if len(os.Args) == 4 && os.Args[1] == helperArg {
		os.Exit(runHelper(os.Args[2], os.Args[3]))
	}
}

// Available says why Start with a PAM service cannot work in this process,
// or nil: Main was called, libpam loads, and the service has a file in
// /etc/pam.d (or /usr/lib/pam.d). Linux-PAM would otherwise fall back to the
// "other" service silently.
func Available(service string) error {
	if !registered.Load() {
		return errors.New("this program cannot run the PAM helper")
	}
	if err := loadPAM(); err != nil {
		return fmt.Errorf("libpam cannot be loaded: %v", err)
	}
	if err := CheckServiceName(service); err != nil {
		return err
	}
	for _, dir := range []string{"/etc/pam.d", "/usr/lib/pam.d"} {
		if fi, err := os.Stat(filepath.Join(dir, service)); err == nil && fi.Mode().IsRegular() {
			return nil
		}
	}
	return fmt.Errorf("the PAM service %q has no file /etc/pam.d/%s", service, service)
}

var serviceRE = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9._-]{0,63}$`)

// CheckServiceName checks a PAM service name: a file name in /etc/pam.d.
func CheckServiceName(service string) error {
	if !serviceRE.MatchString(service) {
		return fmt.Errorf("%q is not a PAM service name (letters, digits, '.', '_', '-'; a file name in /etc/pam.d)", service)
	}
	return nil
}

// Options are what Start needs besides the command.
type Options struct {
	// Service is the PAM service; empty runs no PAM (the helper then only
	// takes LimitsFrom's limits and drops privileges).
	Service string
	// User is the PAM user name (the owner's name as the host knows it).
	User string
	// Display is the X display (":10"): PAM_TTY and PAM_XDISPLAY, from which
	// pam_systemd makes an x11 session.
	Display string
	// LimitsFrom, when positive, is a process whose resource limits and
	// priority the program takes: the session's X server, whose PAM session
	// set them, for the session's other programs.
	LimitsFrom int
	// BeforeExec runs after the PAM session is open and before the program
	// starts; its error stops the start.
	BeforeExec func() error
}

// Refusal is PAM's account stack refusing the user (pam_acct_mgmt).
type Refusal struct {
	// Service is the PAM service, User the user.
	Service, User string
	// Reason is PAM's word and what the modules said.
	Reason string
}

// Error implements error.
func (r *Refusal) Error() string {
	return fmt.Sprintf("owner %q is refused by PAM (service %s, account): %s", r.User, r.Service, r.Reason)
}

// request is what the caller sends the helper.
type request struct {
	Path       string   `json:"path"`
	Argv       []string `json:"argv"`
	Env        []string `json:"env"`
	Dir        string   `json:"dir"`
	UID        uint32   `json:"uid"`
	GID        uint32   `json:"gid"`
	Groups     []uint32 `json:"groups"`
	Service    string   `json:"service,omitempty"`
	User       string   `json:"user,omitempty"`
	Display    string   `json:"display,omitempty"`
	LimitsFrom int      `json:"limits_from,omitempty"`
	// Keep is the number of descriptors from 3 up that the program gets.
	Keep int `json:"keep"`
}

// report is a line the helper sends back: Ready with the PAM environment,
// or Error.
type report struct {
	Ready   bool     `json:"ready,omitempty"`
	Env     []string `json:"env,omitempty"`
	Note    string   `json:"note,omitempty"`
	Error   string   `json:"error,omitempty"`
	Refused bool     `json:"refused,omitempty"`
}

// Started is a program that Start started.
type Started struct {
	// Process is the program (the helper became it).
	Process *os.Process
	// Env is the PAM environment, to give the session's other programs.
	Env []string
	// Note is something worth logging (a password that must be changed).
	Note string
}

// Start starts cmd through the helper: cmd's Path, Args, Env, Dir,
// SysProcAttr.Credential (required: the user), Setsid, Stdin, Stdout,
// Stderr and ExtraFiles (they keep their numbers from 3 up) as exec.Cmd
// would, in a PAM session of opt.Service. It returns once the program runs,
// or with a *Refusal when PAM's account stack refused the user, or another
// error. cmd itself is not started; the caller owns the returned process
// (reap it).
func Start(ctx context.Context, cmd *exec.Cmd, opt Options) (*Started, error) {
	if !registered.Load() {
		return nil, errors.New("this program cannot run the PAM helper (login.Main was not called)")
	}
	if cmd.Err != nil {
		return nil, cmd.Err
	}
	if cmd.SysProcAttr == nil || cmd.SysProcAttr.Credential == nil {
		return nil, errors.New("login: the command has no credential")
	}
	if opt.Service != "" {
		if err := CheckServiceName(opt.Service); err != nil {
			return nil, err
		}
	}
	cred := cmd.SysProcAttr.Credential
	req := request{
		Path: cmd.Path, Argv: cmd.Args, Env: cmd.Env, Dir: cmd.Dir,
		UID: cred.Uid, GID: cred.Gid, Groups: cred.Groups,
		Service: opt.Service, User: opt.User, Display: opt.Display, LimitsFrom: opt.LimitsFrom,
		Keep: len(cmd.ExtraFiles),
	}
	if req.Dir == "" {
		req.Dir = "/"
	}
	if req.Env == nil {
		req.Env = []string{}
	}
	reqR, reqW, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("login: %w", err)
	}
	defer reqW.Close()
	resR, resW, err := os.Pipe()
	if err != nil {
		reqR.Close()
		return nil, fmt.Errorf("login: %w", err)
	}
	defer resR.Close()

	n := len(cmd.ExtraFiles)
	h := exec.Command("/proc/self/exe", helperArg, strconv.Itoa(3+n), strconv.Itoa(4+n))
	h.Args[0] = "berth-login"
	h.Env = []string{}
	h.Dir = "/"
	h.Stdin, h.Stdout, h.Stderr = cmd.Stdin, cmd.Stdout, cmd.Stderr
	h.ExtraFiles = append(append([]*os.File{}, cmd.ExtraFiles...), reqR, resW)
	attr := *cmd.SysProcAttr
	attr.Credential = nil
	h.SysProcAttr = &attr
	err = h.Start()
	reqR.Close()
	resW.Close()
	if err != nil {
		return nil, fmt.Errorf("start the login helper: %w", err)
	}
	kill := func() {
		h.Process.Kill()
		h.Wait()
	}

	t0 := time.Now()
	deadline := t0.Add(DefaultTimeout)
	if dl, ok := ctx.Deadline(); ok {
		deadline = dl
	}
	resR.SetReadDeadline(deadline)
	stop := context.AfterFunc(ctx, func() { resR.SetReadDeadline(time.Now()) })
	defer stop()
	if err := json.NewEncoder(reqW).Encode(&req); err != nil {
		kill()
		return nil, fmt.Errorf("login helper: %w", err)
	}
	lines := bufio.NewReader(resR)
	next := func() (*report, error) {
		line, err := lines.ReadBytes('\n')
		if err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				if ctx.Err() != nil {
					return nil, fmt.Errorf("login helper: %w", ctx.Err())
				}
				return nil, fmt.Errorf("PAM (service %s) did not answer within %s", opt.Service, deadline.Sub(t0).Round(time.Millisecond))
			}
			return nil, err
		}
		var r report
		if err := json.Unmarshal(line, &r); err != nil {
			return nil, fmt.Errorf("login helper: bad report: %v", err)
		}
		return &r, nil
	}
	fail := func(r *report) error {
		h.Wait()
		if r.Refused {
			return &Refusal{Service: opt.Service, User: opt.User, Reason: r.Error}
		}
		return errors.New(r.Error)
	}

	r, err := next()
	if err != nil {
		kill()
		if errors.Is(err, io.EOF) {
			return nil, errors.New("the login helper exited without a report")
		}
		return nil, err
	}
	if !r.Ready {
		return nil, fail(r)
	}
	st := &Started{Env: r.Env, Note: r.Note}
	if opt.BeforeExec != nil {
		if err := opt.BeforeExec(); err != nil {
			kill()
			return nil, err
		}
	}
	if _, err := reqW.Write([]byte("go\n")); err != nil {
		kill()
		return nil, fmt.Errorf("login helper: %w", err)
	}
	reqW.Close()
	// EOF: the exec closed the report pipe. A report: the exec failed.
	r, err = next()
	switch {
	case err == nil:
		return nil, fail(r)
	case errors.Is(err, io.EOF):
		st.Process = h.Process
		return st, nil
	default:
		kill()
		return nil, err
	}
}

// MergeEnv returns base with the PAM environment's variables that base does
// not set: the caller's own (HOME, DISPLAY, XAUTHORITY, PATH, ...) win.
func MergeEnv(base, pam []string) []string {
	out := append([]string{}, base...)
	have := map[string]bool{}
	for _, kv := range base {
		k, _, _ := strings.Cut(kv, "=")
		have[k] = true
	}
	for _, kv := range pam {
		k, _, ok := strings.Cut(kv, "=")
		if !ok || k == "" || have[k] {
			continue
		}
		have[k] = true
		out = append(out, kv)
	}
	return out
}

package dcv

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/user"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/berth-dev/berth/internal/account"
	"github.com/berth-dev/berth/internal/agent"
	"github.com/berth-dev/berth/internal/agentproto"
	"github.com/berth-dev/berth/internal/logattr"
)

// Bounds of create requests.
const (
	maxNameLen       = 256 // dcv create-session --name
	maxAutorunArgs   = 50
	maxAutorunArgLen = 150
)

// newIDRE is what a new session's ID must look like: it names the wrapper
// script file too. Broker IDs are UUIDs.
var newIDRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._@-]{0,127}$`)

// checkID refuses IDs that cannot name a DCV session in an argument list.
func checkID(id string) error {
	if !agentproto.ValidID(id) || strings.HasPrefix(id, "-") {
		return fmt.Errorf("session ID %q is not valid on this host", id)
	}
	return nil
}

// opt appends "--name value", or "--name=value" when value starts with '-'
// and would otherwise read as an option.
func opt(args []string, name, value string) []string {
	if strings.HasPrefix(value, "-") {
		return append(args, name+"="+value)
	}
	return append(args, name, value)
}

// createArgs validates a request and returns the create-session argument
// list, without --permissions-file, and the wrapper script to write (empty
// for none; the caller passes it to --init).
func (d *Driver) createArgs(req agent.CreateRequest) (args []string, script string, err error) {
	if !newIDRE.MatchString(req.ID) {
		return nil, "", fmt.Errorf("session ID %q is not valid for a dcv session (letters, digits, '.', '_', '@', '-'; at most 128)", req.ID)
	}
	typ := req.Type
	if typ == "" {
		typ = "VIRTUAL"
	}
	if typ != "VIRTUAL" && typ != "CONSOLE" {
		return nil, "", fmt.Errorf("unsupported session type %q", req.Type)
	}
	virtual := typ == "VIRTUAL"
	// DCV takes directory names as they are (first.last, user@corp.example,
	// DOMAIN\user): they go to dcv as single argv elements, never through a
	// shell, and no path is built from them.
	if err := agent.CheckUserName("Owner", req.Owner); err != nil {
		return nil, "", err
	}
	if utf8.RuneCountInString(req.Name) > maxNameLen || !utf8.ValidString(req.Name) || strings.ContainsFunc(req.Name, isControl) {
		return nil, "", fmt.Errorf("Name must be at most %d printable characters", maxNameLen)
	}
	if req.MaxConcurrentClients < 0 {
		return nil, "", errors.New("MaxConcurrentClients must not be negative")
	}
	if strings.ContainsRune(req.StorageRoot, 0) {
		return nil, "", errors.New("StorageRoot is not a valid path")
	}
	if !virtual {
		switch {
		case req.DcvGlEnabled:
			return nil, "", errors.New("DcvGlEnabled is only for virtual sessions")
		case req.InitFile != "":
			return nil, "", errors.New("InitFile is only for virtual sessions")
		case req.AutorunFile != "":
			return nil, "", errors.New("AutorunFile is only for virtual sessions on this host")
		}
	}
	if len(req.AutorunFileArguments) > 0 && req.AutorunFile == "" {
		return nil, "", errors.New("AutorunFileArguments given without an AutorunFile")
	}

	args = []string{"create-session", "--type", strings.ToLower(typ)}
	args = opt(args, "--owner", req.Owner)
	args = opt(args, "--name", req.Name)
	if virtual {
		args = opt(args, "--user", req.Owner)
	}
	var initPath string
	if req.InitFile != "" {
		if initPath, err = agent.ResolveInFolder(d.cfg.InitFolder, req.InitFile, "InitFile", "init"); err != nil {
			return nil, "", err
		}
	}
	if req.AutorunFile != "" {
		autorun, err := agent.ResolveInFolder(d.cfg.AutorunFolder, req.AutorunFile, "AutorunFile", "autorun")
		if err != nil {
			return nil, "", err
		}
		if len(req.AutorunFileArguments) > maxAutorunArgs {
			return nil, "", fmt.Errorf("AutorunFileArguments: at most %d arguments", maxAutorunArgs)
		}
		for _, a := range req.AutorunFileArguments {
			if len(a) > maxAutorunArgLen {
				return nil, "", fmt.Errorf("AutorunFileArguments: an argument is longer than %d characters", maxAutorunArgLen)
			}
			if strings.ContainsRune(a, 0) {
				return nil, "", errors.New("AutorunFileArguments: an argument contains a NUL character")
			}
		}
		script = wrapperScript(req.ID, initPath, d.cfg.SessionInit, autorun, req.AutorunFileArguments)
		initPath = "" // the wrapper runs it
	}
	if initPath != "" {
		args = opt(args, "--init", initPath)
	}
	if req.StorageRoot != "" {
		args = opt(args, "--storage-root", req.StorageRoot)
	}
	if virtual {
		gl := "off"
		if req.DcvGlEnabled {
			gl = "on"
		}
		args = append(args, "--gl", gl)
	}
	if req.MaxConcurrentClients > 0 {
		args = append(args, "--max-concurrent-clients", strconv.FormatInt(req.MaxConcurrentClients, 10))
	}
	return args, script, nil
}

func isControl(r rune) bool { return r < 0x20 || r == 0x7f }

// shellQuote quotes s for a POSIX shell: single quotes, each ' as '\”.
func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// wrapperScript is the init script of a session with an autorun program: it
// starts the init file (initPath, or defaultInit when present) in the
// background, then execs the autorun program with its arguments.
func wrapperScript(id, initPath, defaultInit, autorun string, args []string) string {
	var b strings.Builder
	b.WriteString("#!/bin/sh\n")
	fmt.Fprintf(&b, "# Written by the berth agent (dcv driver) for session %s: starts the\n# session's init program, then its autorun program.\n", id)
	if initPath != "" {
		fmt.Fprintf(&b, "%s &\n", shellQuote(initPath))
	} else {
		q := shellQuote(defaultInit)
		fmt.Fprintf(&b, "if [ -x %s ]; then %s & fi\n", q, q)
	}
	b.WriteString("exec " + shellQuote(autorun))
	for _, a := range args {
		b.WriteString(" " + shellQuote(a))
	}
	b.WriteString("\n")
	return b.String()
}

// scriptPath is the wrapper script of session id.
func (d *Driver) scriptPath(id string) string {
	return filepath.Join(d.cfg.ScriptDir, id+".sh")
}

// writeScript writes a session's wrapper script, replacing any older one
// atomically: owned by the owner (uid, gid), who runs it, mode 0700, so that
// no other user reads its autorun arguments, in a root-owned ScriptDir of
// mode 0711 (searchable, not listable).
func (d *Driver) writeScript(id, text string, uid, gid int) (string, error) {
	if err := os.MkdirAll(d.cfg.ScriptDir, 0o711); err != nil {
		return "", fmt.Errorf("write autorun wrapper: %v", errors.Unwrap(err))
	}
	if err := os.Chmod(d.cfg.ScriptDir, 0o711); err != nil {
		return "", fmt.Errorf("write autorun wrapper: %v", errors.Unwrap(err))
	}
	f, err := os.CreateTemp(d.cfg.ScriptDir, ".tmp-*") // 0600, root's
	if err != nil {
		return "", fmt.Errorf("write autorun wrapper: %v", errors.Unwrap(err))
	}
	_, werr := f.WriteString(text)
	if werr == nil {
		werr = f.Chown(uid, gid)
	}
	if werr == nil {
		werr = f.Chmod(0o700)
	}
	if cerr := f.Close(); werr == nil {
		werr = cerr
	}
	path := d.scriptPath(id)
	if werr == nil {
		werr = os.Rename(f.Name(), path)
	}
	if werr != nil {
		os.Remove(f.Name())
		return "", fmt.Errorf("write autorun wrapper: %v", werr)
	}
	return path, nil
}

// checkOwner applies the account policy to a virtual session's owner.
// Refusals are invalid requests.
func (d *Driver) checkOwner(owner string) error {
	err := d.cfg.Account.Check(owner)
	var r *account.Refusal
	if err != nil && (errors.As(err, &r) || errors.Is(err, account.ErrUnknownUser)) {
		return agent.InvalidRequest(err)
	}
	return err
}

// ownerIDs resolves the owner of a virtual session to their user and group
// IDs (the wrapper script's owner).
func ownerIDs(owner string) (uid, gid int, err error) {
	u, err := user.Lookup(owner)
	if err != nil {
		var unknown user.UnknownUserError
		if errors.As(err, &unknown) {
			return 0, 0, agent.InvalidRequest(fmt.Errorf("owner %q is not a local user on this host", owner))
		}
		return 0, 0, fmt.Errorf("cannot look up owner %q: %v", owner, err)
	}
	uid, err1 := strconv.Atoi(u.Uid)
	gid, err2 := strconv.Atoi(u.Gid)
	if err1 != nil || err2 != nil {
		return 0, 0, agent.InvalidRequest(fmt.Errorf("owner %q has no numeric user id", owner))
	}
	return uid, gid, nil
}

// removeScript removes a session's wrapper script, if any.
func (d *Driver) removeScript(id string) {
	if !newIDRE.MatchString(id) {
		return
	}
	if err := os.Remove(d.scriptPath(id)); err != nil && !errors.Is(err, os.ErrNotExist) {
		d.log.Warn("remove autorun wrapper", logattr.SessionID, id, "err", err)
	}
}

// Create implements agent.Driver with `dcv create-session`. It returns once
// dcv answered; a failure's reason quotes dcv's error output. Creating an ID
// the DCV server already has returns nil.
func (d *Driver) Create(ctx context.Context, req agent.CreateRequest) error {
	args, script, err := d.createArgs(req)
	if err != nil {
		return agent.InvalidRequest(err)
	}
	if args[2] == "virtual" {
		if err := d.checkOwner(req.Owner); err != nil {
			d.log.Warn("create session refused", logattr.SessionID, req.ID, logattr.Owner, req.Owner, "err", err)
			return err
		}
	}
	if script != "" {
		uid, gid, err := ownerIDs(req.Owner)
		if err != nil {
			return err
		}
		path, err := d.writeScript(req.ID, script, uid, gid)
		if err != nil {
			return err
		}
		args = opt(args, "--init", path)
	}
	if req.PermissionsFile != "" {
		path, err := d.writePermissions(req.PermissionsFile)
		if err != nil {
			d.removeScript(req.ID)
			return err
		}
		defer os.Remove(path)
		args = opt(args, "--permissions-file", path)
	}
	args = append(args, req.ID)
	if _, err := d.run(ctx, args...); err != nil {
		var ce *cmdError
		if errors.As(err, &ce) && ce.exit > 0 {
			if list, lerr := d.list(ctx); lerr == nil && containsID(list, req.ID) {
				return nil // it exists: create is idempotent
			}
		}
		d.removeScript(req.ID)
		d.log.Warn("create session failed", logattr.SessionID, req.ID, "err", err)
		return err
	}
	d.log.Info("session created", logattr.SessionID, req.ID, logattr.Owner, req.Owner, "type", args[2])
	if changed, _ := d.refresh(ctx); changed {
		d.notify()
	}
	return nil
}

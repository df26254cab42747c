package vnc

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"unicode"
)

// The desktop of a VIRTUAL session without an InitFile, in this order:
//
//  1. Config.DesktopCommand (agent.conf [vnc] desktop_command), else the
//     older Config.DefaultInit: that command line; "-" runs nothing.
//  2. Otherwise the host's desktop session, started as a display manager
//     starts it: /etc/X11/Xsession (Debian's x11-common), which runs the
//     user's ~/.xsession (or ~/.Xsession) where Xsession.options has
//     allow-user-xsession, else x-session-manager; without
//     /etc/X11/Xsession, the user's ~/.xsession, else x-session-manager.
//  3. A host without a desktop environment (no x-session-manager, or one
//     that is only openbox) and a user without ~/.xsession get openbox with
//     a panel (tint2 or xfce4-panel, where installed) and a terminal
//     (x-terminal-emulator, else xterm), started from openbox's --startup
//     once the window manager runs.

// Paths of the host's X session setup (Debian's x11-common), variables for
// the tests.
var (
	xsessionPath        = "/etc/X11/Xsession"
	xsessionOptionsPath = "/etc/X11/Xsession.options"
	sessionManagerPath  = "/usr/bin/x-session-manager"
)

// maxDesktopCommand bounds the length of a desktop command line.
const maxDesktopCommand = 4096

// shellChars are the characters a shell would interpret: a desktop command
// line holding one is refused rather than run differently than it reads.
const shellChars = "\"'`\\$;&|<>(){}[]*?~#!"

// ParseDesktopCommand parses a desktop command line (agent.conf [vnc]
// desktop_command): words separated by white space, run as they are,
// without a shell. The first word is the program: an absolute path or a
// name looked up in the session PATH (/usr/local/bin:/usr/bin:/bin:/usr/games).
// Quotes, backslashes, $, ;, |, &, redirections, globs and the like are
// refused, as is an environment assignment before the program: a command
// that needs a shell belongs in an executable script, named here. "" (the
// host's desktop) and "-" (nothing) give a nil argv.
func ParseDesktopCommand(s string) ([]string, error) {
	s = strings.TrimSpace(s)
	if s == "" || s == "-" {
		return nil, nil
	}
	if len(s) > maxDesktopCommand {
		return nil, fmt.Errorf("is longer than %d bytes", maxDesktopCommand)
	}
	for _, r := range s {
		if unicode.IsControl(r) && !unicode.IsSpace(r) || r == unicode.ReplacementChar {
			return nil, errors.New("holds a control character or invalid UTF-8")
		}
		if strings.ContainsRune(shellChars, r) {
			return nil, fmt.Errorf("holds %q: the command line is split into words at white space and run without a shell; put what needs a shell in an executable script and name the script", r)
		}
	}
	argv := strings.Fields(s)
	prog := argv[0]
	switch {
	case strings.Contains(prog, "="):
		return nil, fmt.Errorf("starts with %q, an environment assignment: name the program first (no shell runs the line)", prog)
	case strings.Contains(prog, "/") && !filepath.IsAbs(prog):
		return nil, fmt.Errorf("names program %q, neither an absolute path nor a name in the session PATH", prog)
	}
	return argv, nil
}

// desktop is the resolved desktop start of a session.
type desktop struct {
	argv []string // nil: nothing runs
	// what says where argv came from, for the log.
	what string
	// full is set for a desktop session (not a window manager alone), whose
	// window manager may take longer to come up.
	full bool
}

// desktopFor resolves the desktop of owner o's session (see the order
// above). A configured command whose program is not installed runs nothing;
// the error says so.
func (d *Driver) desktopFor(o *owner) (desktop, error) {
	line, what := d.cfg.DesktopCommand, "desktop_command"
	if line == "" && d.cfg.DefaultInit != "" {
		line, what = d.cfg.DefaultInit, "default init"
	}
	if line != "" {
		argv, err := ParseDesktopCommand(line)
		if err != nil {
			return desktop{what: what}, fmt.Errorf("%s %q %v", what, line, err)
		}
		if argv == nil {
			return desktop{what: what + " (nothing)"}, nil
		}
		p, err := lookPath(argv[0])
		switch {
		case err != nil && what == "default init":
			d.log.Warn("default init program is not installed; sessions without an InitFile run no window manager", "program", argv[0])
			return desktop{what: what + " (not installed)"}, nil
		case err != nil:
			return desktop{what: what}, fmt.Errorf("%s: %v", what, err)
		}
		argv[0] = p
		return desktop{argv: argv, what: what}, nil
	}

	userFile := userXsession(o)
	xsession := isExecutable(xsessionPath)
	switch {
	case xsession && userFile != "" && allowUserXsession():
		return desktop{argv: []string{xsessionPath}, what: "Xsession (the user's " + filepath.Base(userFile) + ")", full: true}, nil
	case !xsession && userFile != "":
		if isExecutable(userFile) {
			return desktop{argv: []string{userFile}, what: "the user's " + filepath.Base(userFile), full: true}, nil
		}
		return desktop{argv: []string{o.shell, userFile}, what: "the user's " + filepath.Base(userFile), full: true}, nil
	}
	if sm, ok := hostDesktop(); ok {
		if xsession {
			return desktop{argv: []string{xsessionPath}, what: "Xsession (x-session-manager: " + sm + ")", full: true}, nil
		}
		return desktop{argv: []string{sessionManagerPath}, what: "x-session-manager (" + sm + ")", full: true}, nil
	}
	return fallbackDesktop(), nil
}

// userXsession returns the user's ~/.xsession or ~/.Xsession (the first
// that exists), or "".
func userXsession(o *owner) string {
	if o.home == "" || o.home == "/" {
		return ""
	}
	for _, name := range []string{".xsession", ".Xsession"} {
		p := filepath.Join(o.home, name)
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() {
			return p
		}
	}
	return ""
}

// allowUserXsession reports whether Xsession.options lets Xsession run the
// user's ~/.xsession (its allow-user-xsession line; Debian's default).
func allowUserXsession() bool {
	f, err := os.Open(xsessionOptionsPath)
	if err != nil {
		return false
	}
	defer f.Close()
	allow := false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		switch strings.TrimSpace(sc.Text()) {
		case "allow-user-xsession":
			allow = true
		case "no-allow-user-xsession":
			allow = false
		}
	}
	return allow
}

// windowManagersOnly are session managers that start a window manager and
// nothing else: a host whose x-session-manager is one of them has no desktop
// environment.
var windowManagersOnly = map[string]bool{"openbox-session": true, "openbox": true}

// hostDesktop reports whether the host has a desktop environment: an
// x-session-manager (Debian's alternative) that is not a window manager
// alone. It returns the program x-session-manager resolves to.
func hostDesktop() (string, bool) {
	p, err := filepath.EvalSymlinks(sessionManagerPath)
	if err != nil || !isExecutable(p) {
		return "", false
	}
	base := filepath.Base(p)
	return base, !windowManagersOnly[base]
}

// fallbackDesktop is the desktop of a host without a desktop environment:
// openbox, whose --startup command (run once openbox manages the screen)
// starts a panel, where one is installed, and a terminal.
func fallbackDesktop() desktop {
	wm, err := lookPath("openbox")
	if err != nil {
		// No window manager either: a terminal at least.
		if term := terminal(); term != "" {
			return desktop{argv: []string{term}, what: "a terminal (no desktop environment, no openbox)"}
		}
		return desktop{what: "nothing (no desktop environment, no openbox, no terminal)"}
	}
	var parts []string
	what := "openbox"
	for _, panel := range []string{"tint2", "xfce4-panel"} {
		if p, err := lookPath(panel); err == nil {
			parts = append(parts, p+" &")
			what += " with " + panel
			break
		}
	}
	if term := terminal(); term != "" {
		parts = append(parts, "exec "+term)
		what += " and " + filepath.Base(term)
	}
	if len(parts) == 0 {
		return desktop{argv: []string{wm}, what: what + " (no desktop environment)"}
	}
	// openbox parses --startup into words itself (as a shell would, without
	// running one); the paths are lookPath's, from fixed directories and
	// names, so the single quotes hold.
	startup := "/bin/sh -c '" + strings.Join(parts, " ") + "'"
	return desktop{argv: []string{wm, "--startup", startup}, what: what + " (no desktop environment)"}
}

// terminal returns the host's terminal: x-terminal-emulator, else xterm, or
// "".
func terminal() string {
	for _, name := range []string{"x-terminal-emulator", "xterm"} {
		if p, err := lookPath(name); err == nil {
			return p
		}
	}
	return ""
}

// isExecutable reports whether p is a regular file someone may execute.
func isExecutable(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.Mode().IsRegular() && fi.Mode().Perm()&0o111 != 0
}

package vnc

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// consoleDisplay finds the console display of owner: the lowest display
// below FirstDisplay whose X socket exists and belongs to the owner. It
// returns -1 when there is none.
func (d *Driver) consoleDisplay(o *owner) int {
	for n := 0; n < d.cfg.FirstDisplay; n++ {
		fi, err := os.Lstat("/tmp/.X11-unix/X" + strconv.Itoa(n))
		if err != nil || fi.Mode().Type() != os.ModeSocket {
			continue
		}
		if int(fi.Sys().(*syscall.Stat_t).Uid) == o.uid {
			return n
		}
	}
	return -1
}

// findX0 finds TigerVNC's scraping server, which shares an existing display.
func findX0() string {
	for _, p := range []string{"/usr/bin/X0tigervnc", "/usr/bin/x0vncserver"} {
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode().Perm()&0o111 != 0 {
			return p
		}
	}
	return ""
}

// startConsole attaches a CONSOLE session to the owner's running display:
// TigerVNC's scraping server shares it on the session's unix socket, and the
// autorun program (not the init file: the desktop already runs) starts on
// it.
func (d *Driver) startConsole(ctx context.Context, s *session, p *plan) error {
	o := p.owner
	n := d.consoleDisplay(o)
	if n < 0 {
		return errors.New("no console display on this host")
	}
	x0 := findX0()
	if x0 == "" {
		return errors.New("sharing the console display needs x0vncserver (tigervnc-scraping-server), which is not installed")
	}
	d.mu.Lock()
	for _, other := range d.sessions {
		if other != s && other.rec.Type == "CONSOLE" && other.rec.Display == n && !other.deleting {
			d.mu.Unlock()
			return errors.New("the console display already has a session")
		}
	}
	d.mu.Unlock()
	rt, err := d.runtimeDir(o)
	if err != nil {
		return err
	}
	root, err := os.OpenRoot(rt)
	if err != nil {
		return fmt.Errorf("open runtime directory: %w", err)
	}
	defer root.Close()
	dirName := "berth-" + s.rec.ID
	cookie := filepath.Join(o.home, ".Xauthority")
	d.mu.Lock()
	s.rec.Dir = filepath.Join(rt, dirName)
	s.rec.Socket = filepath.Join(s.rec.Dir, "vnc.sock")
	s.rec.Cookie = cookie
	s.rec.Display = n
	d.mu.Unlock()
	if err := root.RemoveAll(dirName); err != nil {
		return fmt.Errorf("clear session directory: %w", err)
	}
	if err := root.Mkdir(dirName, 0o700); err != nil {
		return fmt.Errorf("create session directory: %w", err)
	}
	if err := root.Lchown(dirName, o.uid, o.gid); err != nil {
		return fmt.Errorf("create session directory: %w", err)
	}
	logf, err := os.OpenFile(s.rec.Log, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("open session log: %w", err)
	}
	defer logf.Close()
	logStart, _ := logf.Seek(0, io.SeekEnd)

	cmd := exec.Command(x0,
		"-display", ":"+strconv.Itoa(n),
		"-rfbport", "-1",
		"-rfbunixpath", s.rec.Socket,
		"-rfbunixmode", "0600",
		"-SecurityTypes", "None",
		"-AlwaysShared",
		"-UseBlacklist=0",
	)
	cmd.Env = d.env(o, n, cookie)
	cmd.Dir = o.workDir()
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = o.sysProcAttr()
	deadline := time.Now().Add(d.cfg.ReadyTimeout)
	if dl, ok := ctx.Deadline(); ok && dl.Before(deadline) {
		deadline = dl
	}
	pid, err := d.startServer(ctx, s, p, cmd, ":"+strconv.Itoa(n), deadline, nil)
	if err != nil {
		return err
	}
	pi, _ := readStat(pid)
	pr := &proc{pid: pid, start: pi.start, child: true, role: "server"}
	d.mu.Lock()
	s.rec.ServerPID, s.rec.ServerStart = pid, pi.start
	s.procs = append(s.procs, pr)
	rec := s.rec
	d.mu.Unlock()
	if err := d.saveRecord(&rec); err != nil {
		return err
	}
	for {
		err = rfbPing(s.rec.Socket, deadline)
		if err == nil {
			break
		}
		if pr.exited() {
			msg := "the console sharing server exited"
			if line := lastLine(logTail(s.rec.Log, logStart)); line != "" {
				msg += ": " + line
			}
			return errors.New(msg)
		}
		if ctx.Err() != nil {
			return errors.New("start cancelled")
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the console sharing server did not become ready within %s", d.cfg.ReadyTimeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if p.storage != "" {
		if err := makeStorageRoot(ctx, o, p.storage); err != nil {
			return err
		}
	}
	p.init = nil
	if err := d.startPrograms(ctx, s, p, logf); err != nil {
		return err
	}
	d.mu.Lock()
	s.rec.Ready = true
	rec = s.rec
	d.mu.Unlock()
	return d.saveRecord(&rec)
}

// xCookie returns the cookie the agent connects to the session's display
// with: its own for a VIRTUAL session, the owner's for the console.
func (r *record) xCookie() ([]byte, error) {
	if r.CookieHex != "" {
		return hex.DecodeString(r.CookieHex)
	}
	return cookieFor(r.Cookie, r.Display, r.UID)
}

// cookieFor reads the MIT-MAGIC-COOKIE-1 for display n from an Xauthority
// file, which must be a regular file of uid (not a symlink: the owner must
// not make the agent read other files): an entry for that display, else one
// for any display.
func cookieFor(path string, n, uid int) ([]byte, error) {
	entries, err := readXauth(path, uid)
	if err != nil {
		return nil, err
	}
	var wild []byte
	for _, e := range entries {
		if e.name != cookieName || len(e.data) != 16 {
			continue
		}
		switch e.number {
		case strconv.Itoa(n):
			return e.data, nil
		case "":
			if wild == nil {
				wild = e.data
			}
		}
	}
	if wild != nil {
		return wild, nil
	}
	return nil, errors.New("no cookie for the display in the X authority file")
}

// isConsole reports whether a record is a CONSOLE session.
func isConsole(r *record) bool { return strings.EqualFold(r.Type, "CONSOLE") }

package vnc

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/berth-dev/berth/internal/logattr"
)

// Teardown timings.
const (
	termGrace = 3 * time.Second        // SIGTERM → SIGKILL
	killGrace = 2 * time.Second        // SIGKILL → give up
	scanEvery = 50 * time.Millisecond  // process rescans while stopping
	reapAfter = 500 * time.Millisecond // extra wait for zombies of children
)

// Delete implements agent.Driver: it stops every process of the session
// (SIGTERM, then SIGKILL after 3 s), removes its directory, sockets, lock
// and state file, and drops its gateway connections. Deleting an unknown
// session returns nil.
func (d *Driver) Delete(ctx context.Context, id string) error {
	d.mu.Lock()
	s, ok := d.sessions[id]
	if !ok {
		delete(d.dead, id)
		d.mu.Unlock()
		return nil
	}
	first := !s.deleting
	s.deleting = true
	cancel := s.cancelStart
	started := s.started
	d.mu.Unlock()
	if first {
		d.changed(id) // the gateway drops its connections now
	}
	if cancel != nil {
		cancel()
	}
	// A start under way stops at once and tears itself down.
	select {
	case <-started:
	case <-ctx.Done():
		return fmt.Errorf("delete session: %w", ctx.Err())
	}
	d.mu.Lock()
	failed := s.startErr != nil
	d.mu.Unlock()
	if failed {
		return nil
	}
	d.teardown(ctx, s)
	d.mu.Lock()
	if d.sessions[id] == s {
		delete(d.sessions, id)
	}
	d.releaseDisplayLocked(s.rec.Display, id)
	d.mu.Unlock()
	d.log.Info("session deleted", logattr.SessionID, id)
	d.changed(id)
	return nil
}

// teardown stops the session's processes and removes its files.
func (d *Driver) teardown(ctx context.Context, s *session) {
	d.mu.Lock()
	rec := s.rec
	procs := append([]*proc(nil), s.procs...)
	d.mu.Unlock()
	d.stopProcesses(ctx, &rec, procs)
	d.removeFiles(&rec)
}

// stopProcesses ends every process of the session: its process groups
// (server, bus, init, autorun) and every other process of the owner that
// descends from them or carries the session's XAUTHORITY.
func (d *Driver) stopProcesses(ctx context.Context, rec *record, procs []*proc) {
	roots := map[int]bool{}
	for _, pid := range []int{rec.ServerPID, rec.BusPID, rec.InitPID, rec.AutorunPID} {
		if pid > 0 {
			roots[pid] = true
		}
	}
	if len(roots) == 0 {
		return
	}
	deadline := time.Now().Add(termGrace)
	sig := syscall.SIGTERM
	for {
		pids := sessionProcesses(rec, roots)
		for _, pid := range pids {
			syscall.Kill(pid, sig)
		}
		for _, p := range procs {
			p.exited() // reap children that are gone
		}
		if len(pids) == 0 {
			break
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			if sig == syscall.SIGKILL {
				d.log.Warn("session processes survive SIGKILL", logattr.SessionID, rec.ID, "pids", pids)
				break
			}
			d.log.Info("session processes ignored SIGTERM; killing them", logattr.SessionID, rec.ID, "count", len(pids))
			sig = syscall.SIGKILL
			deadline = time.Now().Add(killGrace)
			continue
		}
		time.Sleep(scanEvery)
	}
	// Children of this agent leave zombies until reaped.
	end := time.Now().Add(reapAfter)
	for _, p := range procs {
		for !p.exited() && time.Now().Before(end) {
			time.Sleep(5 * time.Millisecond)
		}
	}
}

// sessionProcesses returns the live processes of the session's owner that
// belong to it: in the process group or session of one of roots, a
// descendant of one of them, or started with the session's XAUTHORITY.
func sessionProcesses(rec *record, roots map[int]bool) []int {
	type info struct {
		ppid int
		in   bool
	}
	all := map[int]*info{}
	marker := "XAUTHORITY=" + rec.Cookie
	for _, pid := range listPIDs() {
		uid, err := procUID(pid)
		if err != nil || uid != rec.UID {
			continue
		}
		pi, err := readStat(pid)
		if err != nil || pi.state == 'Z' || pi.state == 'X' {
			continue
		}
		in := roots[pid] || roots[pi.pgid] || roots[pi.sid]
		// The cookie path marks a VIRTUAL session's processes; a CONSOLE
		// session shares the user's desktop and its cookie, so only its own
		// processes count.
		if !in && rec.Cookie != "" && !isConsole(rec) {
			in = procEnvironHas(pid, marker)
		}
		all[pid] = &info{ppid: pi.ppid, in: in}
	}
	// Descendants of a member are members.
	var member func(pid int, depth int) bool
	member = func(pid int, depth int) bool {
		x, ok := all[pid]
		if !ok || depth > 64 {
			return false
		}
		if x.in {
			return true
		}
		if member(x.ppid, depth+1) {
			x.in = true
		}
		return x.in
	}
	var out []int
	for pid := range all {
		if member(pid, 0) {
			out = append(out, pid)
		}
	}
	return out
}

// removeFiles removes the session's directory, its sockets and lock files
// and its state file and log.
func (d *Driver) removeFiles(rec *record) {
	if rec.Dir != "" {
		// os.Root keeps the removal inside the owner's runtime directory
		// whatever the owner renamed or linked meanwhile.
		if root, err := os.OpenRoot(filepath.Dir(rec.Dir)); err == nil {
			if err := root.RemoveAll(filepath.Base(rec.Dir)); err != nil {
				d.log.Warn("remove session directory", logattr.SessionID, rec.ID, "err", err)
			}
			root.Close()
		}
	}
	if !isConsole(rec) && rec.Display >= 0 {
		removeXFiles(rec.Display, rec.UID)
	}
	os.Remove(d.recordPath(rec.ID))
	if rec.Log != "" {
		os.Remove(rec.Log)
	}
}

// removeXFiles removes the X socket and lock file of display n that a dead
// server of uid left behind.
func removeXFiles(n, uid int) {
	for _, p := range []string{
		"/tmp/.X11-unix/X" + strconv.Itoa(n),
		fmt.Sprintf("/tmp/.X%d-lock", n),
	} {
		if fi, err := os.Lstat(p); err == nil && int(fi.Sys().(*syscall.Stat_t).Uid) == uid {
			os.Remove(p)
		}
	}
}

package vnc

import (
	"context"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/internal/account"
	"github.com/berth-dev/berth/internal/agentproto"
	"github.com/berth-dev/berth/internal/logattr"
)

// Monitor timings: with pidfds the monitor wakes when a process ends and
// rechecks everything every pollSlow; without them it polls every pollFast.
const (
	pollFast = time.Second
	pollSlow = 5 * time.Second
)

// reasonExited is the StateReason of a session whose X server ended by itself.
const reasonExited = "the session's X server exited"

// wakeUp makes the monitor look at the session table again.
func (d *Driver) wakeUp() {
	d.mu.Lock()
	fd := d.wakeFDs[1]
	d.mu.Unlock()
	if fd >= 0 {
		unix.Write(fd, []byte{0})
	}
}

// monitor watches the sessions' processes until Close: it reaps the
// processes this Driver started and handles the death of X servers.
func (d *Driver) monitor() {
	fds := map[*proc]int{}
	defer func() {
		for _, fd := range fds {
			closeFD(fd)
		}
	}()
	type item struct {
		s *session
		p *proc
	}
	for d.ctx.Err() == nil {
		d.mu.Lock()
		var items []item
		for _, s := range d.sessions {
			for _, p := range s.procs {
				items = append(items, item{s, p})
			}
		}
		d.mu.Unlock()

		// Keep a pidfd for every watched process, and only for those.
		live := make(map[*proc]bool, len(items))
		timeout := pollSlow
		for _, it := range items {
			live[it.p] = true
			if _, ok := fds[it.p]; !ok {
				fds[it.p] = openPidfd(it.p.pid)
			}
			if fds[it.p] < 0 {
				timeout = pollFast
			}
		}
		for p, fd := range fds {
			if !live[p] {
				if fd >= 0 {
					closeFD(fd)
				}
				delete(fds, p)
			}
		}
		pfds := []unix.PollFd{{Fd: int32(d.wakeFDs[0]), Events: unix.POLLIN}}
		for _, it := range items {
			if fd := fds[it.p]; fd >= 0 {
				pfds = append(pfds, unix.PollFd{Fd: int32(fd), Events: unix.POLLIN})
			}
		}
		unix.Poll(pfds, int(timeout/time.Millisecond))
		if pfds[0].Revents != 0 {
			var buf [64]byte
			unix.Read(d.wakeFDs[0], buf[:])
		}
		if d.ctx.Err() != nil {
			return
		}
		for _, it := range items {
			if !it.p.exited() {
				continue
			}
			d.mu.Lock()
			it.s.procs = removeProc(slices.Clone(it.s.procs), it.p)
			d.mu.Unlock()
			if it.p.role == "server" {
				d.died(it.s)
			} else {
				d.log.Debug("session program exited", logattr.SessionID, it.s.rec.ID, "program", it.p.role, "pid", it.p.pid)
			}
		}
	}
}

// died handles a session whose X server ended without a Delete: it is
// reported DELETED at once, then its other processes are stopped and its
// files removed.
func (d *Driver) died(s *session) {
	d.mu.Lock()
	if s.deleting {
		d.mu.Unlock()
		return
	}
	s.deleting = true
	info := s.infoLocked()
	info.State = agentproto.StateDeleted
	info.StateReason = reasonExited
	info.NumConnections = 0
	d.dead[info.ID] = &deadEntry{info: info, diedAt: time.Now()}
	d.mu.Unlock()
	d.log.Warn("session's X server exited", logattr.SessionID, info.ID, logattr.Owner, info.Owner)
	d.changed(info.ID)
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		d.teardown(context.Background(), s)
		d.mu.Lock()
		if d.sessions[info.ID] == s {
			delete(d.sessions, info.ID)
		}
		d.releaseDisplayLocked(s.rec.Display, info.ID)
		d.mu.Unlock()
	}()
}

// adopt loads the state files: sessions whose X server still runs become
// READY sessions of this Driver; the others are cleaned up and reported
// DELETED once.
func (d *Driver) adopt() {
	for _, rec := range d.loadRecords() {
		s := &session{
			rec:     rec,
			state:   agentproto.StateReady,
			started: make(chan struct{}),
			groups:  account.Groups(rec.Owner),
		}
		close(s.started)
		perms, err := parsePermissions(rec.Permissions)
		if err != nil {
			perms, _ = parsePermissions("")
		}
		s.perms = perms
		alive := rec.Ready && serverAlive(&rec)
		if alive {
			// Normally another process started it; within one process (a
			// Driver closed and opened again) it is still our child to reap.
			pi, _ := readStat(rec.ServerPID)
			s.procs = []*proc{{pid: rec.ServerPID, start: rec.ServerStart, role: "server", child: pi.ppid == os.Getpid()}}
			d.sessions[rec.ID] = s
			if rec.Display >= 0 {
				d.displays[rec.Display] = rec.ID
			}
			d.log.Info("re-adopted session", logattr.SessionID, rec.ID, logattr.Owner, rec.Owner, "display", rec.Display, "pid", rec.ServerPID)
			continue
		}
		d.log.Warn("session ended while the agent was away; cleaning up", logattr.SessionID, rec.ID, logattr.Owner, rec.Owner)
		d.teardown(d.ctxOrBackground(), s)
		if rec.Ready {
			info := s.infoLocked()
			info.State = agentproto.StateDeleted
			info.StateReason = reasonExited
			d.dead[rec.ID] = &deadEntry{info: info, diedAt: time.Now()}
		}
	}
}

func (d *Driver) ctxOrBackground() context.Context {
	if d.ctx != nil {
		return d.ctx
	}
	return context.Background()
}

// serverAlive reports whether the recorded server process still runs: same
// PID, same start time, same owner, and the command line of the X server of
// that display.
func serverAlive(rec *record) bool {
	if !running(rec.ServerPID, rec.ServerStart) {
		return false
	}
	if uid, err := procUID(rec.ServerPID); err != nil || uid != rec.UID {
		return false
	}
	argv := procCmdline(rec.ServerPID)
	if len(argv) == 0 {
		return false
	}
	name := argv[0]
	if !strings.Contains(name, "Xvnc") && !strings.Contains(name, "Xtigervnc") && !strings.Contains(name, "x0vncserver") {
		return false
	}
	want := ":" + strconv.Itoa(rec.Display)
	for _, a := range argv[1:] {
		if a == want {
			return true
		}
	}
	return false
}

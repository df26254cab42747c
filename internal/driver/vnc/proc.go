package vnc

import (
	"bytes"
	"errors"
	"os"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// procInfo is what /proc/PID/stat says about a process.
type procInfo struct {
	state byte
	ppid  int
	pgid  int
	sid   int
	start uint64 // start time after boot, in clock ticks
}

// readStat parses /proc/PID/stat.
func readStat(pid int) (procInfo, error) {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return procInfo{}, err
	}
	// The command name (field 2) is in parentheses and may hold anything;
	// the fields after the last ')' are plain.
	i := bytes.LastIndexByte(data, ')')
	if i < 0 || i+2 >= len(data) {
		return procInfo{}, errors.New("malformed stat")
	}
	f := strings.Fields(string(data[i+2:]))
	// f[0] is field 3 (state); field N is f[N-3].
	if len(f) < 20 {
		return procInfo{}, errors.New("malformed stat")
	}
	var pi procInfo
	pi.state = f[0][0]
	pi.ppid, _ = strconv.Atoi(f[1])
	pi.pgid, _ = strconv.Atoi(f[2])
	pi.sid, _ = strconv.Atoi(f[3])
	pi.start, _ = strconv.ParseUint(f[19], 10, 64)
	return pi, nil
}

// procUID returns the real user ID of a process.
func procUID(pid int) (int, error) {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return -1, err
	}
	for line := range strings.SplitSeq(string(data), "\n") {
		if rest, ok := strings.CutPrefix(line, "Uid:"); ok {
			f := strings.Fields(rest)
			if len(f) > 0 {
				return strconv.Atoi(f[0])
			}
		}
	}
	return -1, errors.New("no Uid in status")
}

// procCmdline returns a process's argv.
func procCmdline(pid int) []string {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
	if err != nil || len(data) == 0 {
		return nil
	}
	return strings.Split(strings.TrimSuffix(string(data), "\x00"), "\x00")
}

// procEnvironHas reports whether a process's initial environment holds kv
// ("NAME=value").
func procEnvironHas(pid int, kv string) bool {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/environ")
	if err != nil {
		return false
	}
	for e := range bytes.SplitSeq(data, []byte{0}) {
		if string(e) == kv {
			return true
		}
	}
	return false
}

// listPIDs returns the PIDs in /proc.
func listPIDs() []int {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	pids := make([]int, 0, len(entries))
	for _, e := range entries {
		if pid, err := strconv.Atoi(e.Name()); err == nil && pid > 0 {
			pids = append(pids, pid)
		}
	}
	return pids
}

// running reports whether pid is a live (not zombie) process started at
// start (0: any start time).
func running(pid int, start uint64) bool {
	if pid <= 0 {
		return false
	}
	pi, err := readStat(pid)
	if err != nil || pi.state == 'Z' || pi.state == 'X' {
		return false
	}
	return start == 0 || pi.start == start
}

// exited reports whether p has ended, reaping it if it is a child of this
// process.
func (p *proc) exited() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.done {
		return true
	}
	if p.child {
		var ws syscall.WaitStatus
		wpid, err := syscall.Wait4(p.pid, &ws, syscall.WNOHANG, nil)
		switch {
		case wpid == p.pid:
			p.done = true
			return true
		case err == syscall.ECHILD:
			// Reaped elsewhere (or not ours after all): ask /proc.
			p.child = false
		case err == nil:
			return false // still running
		}
	}
	if !running(p.pid, p.start) {
		p.done = true
	}
	return p.done
}

// openPidfd returns a pidfd for pid, or -1 when the kernel has none.
func openPidfd(pid int) int {
	fd, err := unix.PidfdOpen(pid, unix.PIDFD_NONBLOCK)
	if err != nil {
		return -1
	}
	unix.CloseOnExec(fd)
	return fd
}

func closeFD(fd int) { unix.Close(fd) }

// closeOnExec marks every descriptor from 3 up close-on-exec, so that
// descriptors the agent inherited without the flag (Go sets it on its own)
// never reach a session's processes.
func closeOnExec() {
	if err := unix.CloseRange(3, ^uint(0), unix.CLOSE_RANGE_CLOEXEC); err == nil {
		return
	}
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return
	}
	for _, e := range entries {
		if fd, err := strconv.Atoi(e.Name()); err == nil && fd >= 3 {
			unix.CloseOnExec(fd)
		}
	}
}

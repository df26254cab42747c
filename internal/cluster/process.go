package cluster

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
)

// Process identifies a running process on a machine: the kernel's boot ID,
// its PID namespace, its PID and its start time (clock ticks after boot, as
// /proc/PID/stat gives it). A broker's row records the Process that holds
// its broker-id, so that a broker restarted after a crash on the same
// machine can tell that the holder is gone (Process.gone) and take the ID
// over at once, instead of waiting for the dead process's heartbeat to age.
// The zero Process is unknown: nothing is concluded from it.
type Process struct {
	BootID string
	PIDNS  string
	PID    int
	Start  uint64
}

// ThisProcess returns the calling process's Process, read from /proc; it
// is zero where /proc does not tell (another OS, a restricted sandbox).
func ThisProcess() Process { return ProcessOf(os.Getpid()) }

// ProcessOf returns the Process of the running process pid, as ThisProcess
// does for the calling one; zero when /proc does not tell.
func ProcessOf(pid int) Process {
	boot, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		return Process{}
	}
	ns, err := os.Readlink("/proc/" + strconv.Itoa(pid) + "/ns/pid")
	if err != nil {
		return Process{}
	}
	start, alive := processStart(pid)
	if !alive || start == 0 {
		return Process{}
	}
	p := Process{BootID: strings.TrimSpace(string(boot)), PIDNS: ns, PID: pid, Start: start}
	if !p.known() {
		return Process{}
	}
	return p
}

// known reports whether every field is set and fits the encoding.
func (p Process) known() bool {
	ok := func(s string) bool { return s != "" && len(s) <= 128 && !strings.ContainsAny(s, " \t\r\n") }
	return ok(p.BootID) && ok(p.PIDNS) && p.PID > 0 && p.Start > 0
}

// String encodes p for the brokers table's process column: boot ID, PID
// namespace, PID and start time, separated by spaces; "" when unknown.
func (p Process) String() string {
	if !p.known() {
		return ""
	}
	return fmt.Sprintf("%s %s %d %d", p.BootID, p.PIDNS, p.PID, p.Start)
}

// parseProcess decodes String's encoding; anything else (an older broker's
// empty column, a damaged value) is the zero, unknown Process.
func parseProcess(s string) Process {
	f := strings.Split(s, " ")
	if len(f) != 4 {
		return Process{}
	}
	pid, err1 := strconv.Atoi(f[2])
	start, err2 := strconv.ParseUint(f[3], 10, 64)
	if err1 != nil || err2 != nil {
		return Process{}
	}
	p := Process{BootID: f[0], PIDNS: f[1], PID: pid, Start: start}
	if !p.known() {
		return Process{}
	}
	return p
}

// gone reports whether other, as self sees it, has certainly exited: both
// are known, on the same boot of the same machine and in the same PID
// namespace, and other's PID names no process, or one that started at
// another time (the PID was reused). Anything less certain (another
// machine, another container, an unknown process) is not gone: the caller
// then waits for the holder's heartbeat instead. start looks a PID's start
// time up (processStart).
func (p Process) gone(other Process, start func(pid int) (uint64, bool)) bool {
	if !p.known() || !other.known() || other.BootID != p.BootID || other.PIDNS != p.PIDNS {
		return false
	}
	if other.PID == p.PID {
		return other.Start != p.Start // this process has its PID now
	}
	s, alive := start(other.PID)
	if !alive {
		return true
	}
	return s != 0 && s != other.Start
}

// processStart looks process pid up: alive is false only when the kernel
// says there is no such process (kill(pid, 0) fails with ESRCH) or that it
// has exited and waits to be reaped (a zombie, state Z or X); start is
// its start time (field 22 of /proc/PID/stat), 0 when that cannot be read
// (another user's process under hidepid, say).
func processStart(pid int) (start uint64, alive bool) {
	if pid <= 0 {
		return 0, true // not a single process: conclude nothing
	}
	if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
		return 0, false
	}
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, true
	}
	// The command name (field 2) is in parentheses and may hold spaces or
	// parentheses itself: the fields after it follow its last ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, true
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] is field 3 (state), so field 22 is f[19].
	if len(f) < 20 {
		return 0, true
	}
	if f[0] == "Z" || f[0] == "X" {
		return 0, false
	}
	v, err := strconv.ParseUint(f[19], 10, 64)
	if err != nil {
		return 0, true
	}
	return v, true
}

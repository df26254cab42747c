package login

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// runHelper is the helper process (see the package comment). reqArg and
// resArg are the descriptors of the request pipe and the report pipe. It
// returns the exit code when it does not exec.
func runHelper(reqArg, resArg string) int {
	// One thread does everything: pam_limits sets the priority of the
	// calling thread, and that thread execs the program.
	runtime.LockOSThread()
	reqFD, err1 := strconv.Atoi(reqArg)
	resFD, err2 := strconv.Atoi(resArg)
	if err1 != nil || err2 != nil || reqFD < 3 || resFD < 3 {
		fmt.Fprintln(os.Stderr, "berth-login: bad arguments")
		return 2
	}
	unix.CloseOnExec(reqFD)
	unix.CloseOnExec(resFD)
	res := os.NewFile(uintptr(resFD), "report")
	send := func(r report) {
		b, _ := json.Marshal(r)
		res.Write(append(b, '\n'))
	}
	fail := func(refused bool, format string, args ...any) int {
		send(report{Error: fmt.Sprintf(format, args...), Refused: refused})
		return 1
	}
	in := bufio.NewReader(io.LimitReader(os.NewFile(uintptr(reqFD), "request"), 1<<20))
	line, err := in.ReadBytes('\n')
	if err != nil {
		return fail(false, "login helper: read request: %v", err)
	}
	var req request
	if err := json.Unmarshal(line, &req); err != nil {
		return fail(false, "login helper: bad request: %v", err)
	}
	switch {
	case os.Geteuid() != 0:
		return fail(false, "login helper: needs root")
	case req.UID == 0:
		return fail(false, "login helper: does not start programs as root")
	case req.Path == "" || len(req.Argv) == 0:
		return fail(false, "login helper: no program")
	}

	var noFile0 unix.Rlimit
	unix.Getrlimit(unix.RLIMIT_NOFILE, &noFile0)
	if req.LimitsFrom > 0 {
		if err := copyLimits(req.LimitsFrom); err != nil {
			return fail(false, "take the session's resource limits: %v", err)
		}
	}
	// The user's groups before PAM, whose pam_group may add more.
	groups := make([]int, len(req.Groups))
	for i, g := range req.Groups {
		groups[i] = int(g)
	}
	if len(groups) == 0 {
		groups = []int{int(req.GID)}
	}
	if err := syscall.Setgroups(groups); err != nil {
		return fail(false, "setgroups: %v", err)
	}

	var pamEnv []string
	var note string
	if req.Service != "" {
		tx, err := pamStart(req.Service, req.User)
		if err != nil {
			return fail(false, "PAM (service %s): %v", req.Service, err)
		}
		if req.Display != "" {
			if err := tx.setItem(pamTTY, req.Display); err != nil {
				return fail(false, "PAM (service %s): set PAM_TTY: %v", req.Service, err)
			}
			if err := tx.setItem(pamXDisplay, req.Display); err != nil {
				return fail(false, "PAM (service %s): set PAM_XDISPLAY: %v", req.Service, err)
			}
		}
		mustChange, err := tx.acctMgmt()
		if err != nil {
			tx.end(1)
			return fail(true, "%v", err)
		}
		if mustChange {
			note = "PAM says the user's password must be changed; the session starts anyway (it does not use the password)"
		}
		if err := tx.setCred(); err != nil {
			tx.end(1)
			return fail(false, "PAM (service %s) could not establish the credentials of %q: %v", req.Service, req.User, err)
		}
		if err := tx.openSession(); err != nil {
			tx.end(1)
			return fail(false, "PAM (service %s) could not open a session for %q: %v", req.Service, req.User, err)
		}
		pamEnv = tx.envList()
	}
	send(report{Ready: true, Env: pamEnv, Note: note})
	if line, err := in.ReadBytes('\n'); err != nil || string(line) != "go\n" {
		return 1 // the caller gave up
	}
	unix.Close(reqFD)

	if err := syscall.Setgid(int(req.GID)); err != nil {
		return fail(false, "setgid %d: %v", req.GID, err)
	}
	if err := syscall.Setuid(int(req.UID)); err != nil {
		return fail(false, "setuid %d: %v", req.UID, err)
	}
	if os.Getuid() != int(req.UID) || os.Geteuid() != int(req.UID) || os.Getgid() != int(req.GID) || syscall.Setuid(0) == nil {
		return fail(false, "login helper: could not drop root")
	}
	if err := os.Chdir(req.Dir); err != nil {
		return fail(false, "chdir: %v", err)
	}
	// Go raised its own soft RLIMIT_NOFILE at start and puts the original
	// back at exec, unless told of a change: pam_limits' (or the copied)
	// limit must stay.
	var noFile unix.Rlimit
	if unix.Getrlimit(unix.RLIMIT_NOFILE, &noFile) == nil && noFile != noFile0 {
		lim := syscall.Rlimit{Cur: noFile.Cur, Max: noFile.Max}
		syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim)
	}
	prepareFDs(3 + req.Keep)
	err = syscall.Exec(req.Path, req.Argv, MergeEnv(req.Env, pamEnv))
	fail(false, "start %s: %v", filepath.Base(req.Path), err)
	return 127
}

// copyLimits sets this process's resource limits and priority to pid's.
// The limits are read from /proc/PID/limits: prlimit on another user's
// process needs CAP_SYS_RESOURCE, which containers often drop.
func copyLimits(pid int) error {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/limits")
	if err != nil {
		return err
	}
	lims, err := parseLimits(string(data))
	if err != nil {
		return err
	}
	for res, l := range lims {
		if err := unix.Prlimit(0, res, &l, nil); err != nil {
			return fmt.Errorf("%s: %w", limitNames[res], err)
		}
	}
	// The kernel's getpriority gives 20 - nice.
	if p, err := unix.Getpriority(unix.PRIO_PROCESS, pid); err == nil {
		unix.Setpriority(unix.PRIO_PROCESS, 0, 20-p)
	}
	return nil
}

// limitNames are the rows of /proc/PID/limits, by resource number.
var limitNames = []string{
	unix.RLIMIT_CPU: "Max cpu time", unix.RLIMIT_FSIZE: "Max file size", unix.RLIMIT_DATA: "Max data size",
	unix.RLIMIT_STACK: "Max stack size", unix.RLIMIT_CORE: "Max core file size", unix.RLIMIT_RSS: "Max resident set",
	unix.RLIMIT_NPROC: "Max processes", unix.RLIMIT_NOFILE: "Max open files", unix.RLIMIT_MEMLOCK: "Max locked memory",
	unix.RLIMIT_AS: "Max address space", unix.RLIMIT_LOCKS: "Max file locks", unix.RLIMIT_SIGPENDING: "Max pending signals",
	unix.RLIMIT_MSGQUEUE: "Max msgqueue size", unix.RLIMIT_NICE: "Max nice priority", unix.RLIMIT_RTPRIO: "Max realtime priority",
	unix.RLIMIT_RTTIME: "Max realtime timeout",
}

// parseLimits reads the text of /proc/PID/limits: every resource of
// limitNames, "unlimited" as RLIM_INFINITY.
func parseLimits(text string) (map[int]unix.Rlimit, error) {
	out := map[int]unix.Rlimit{}
	for line := range strings.SplitSeq(text, "\n") {
		for res, name := range limitNames {
			rest, ok := strings.CutPrefix(line, name+" ")
			if !ok {
				continue
			}
			f := strings.Fields(rest)
			if len(f) < 2 {
				return nil, fmt.Errorf("malformed limits line %q", line)
			}
			var l unix.Rlimit
			for i, p := range []*uint64{&l.Cur, &l.Max} {
				if f[i] == "unlimited" {
					*p = unix.RLIM_INFINITY
					continue
				}
				n, err := strconv.ParseUint(f[i], 10, 64)
				if err != nil {
					return nil, fmt.Errorf("malformed limits line %q", line)
				}
				*p = n
			}
			out[res] = l
		}
	}
	if len(out) != len(limitNames) {
		return nil, fmt.Errorf("limits: %d of %d resources found", len(out), len(limitNames))
	}
	return out, nil
}

// prepareFDs marks every descriptor from first up close-on-exec (PAM
// modules may have left some open), except logind's session FIFO, which
// pam_systemd holds open for the session's life: the program keeps it, so
// the logind session lasts as long as the program.
func prepareFDs(first int) {
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		unix.CloseRange(uint(first), ^uint(0), unix.CLOSE_RANGE_CLOEXEC)
		return
	}
	for _, e := range entries {
		fd, err := strconv.Atoi(e.Name())
		if err != nil || fd < first {
			continue
		}
		target, _ := os.Readlink("/proc/self/fd/" + e.Name())
		if strings.HasPrefix(target, "/run/systemd/sessions/") && strings.HasSuffix(target, ".ref") {
			unix.FcntlInt(uintptr(fd), unix.F_SETFD, 0)
			continue
		}
		unix.CloseOnExec(fd)
	}
}

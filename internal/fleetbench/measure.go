package fleetbench

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// clockTicks is USER_HZ, the unit of utime and stime in /proc/PID/stat (100
// on every Linux architecture berth runs on).
const clockTicks = 100

// procSample is one reading of a process's memory and CPU time.
type procSample struct {
	At       time.Time
	RSSKB    int64 // VmRSS
	HWMKB    int64 // VmHWM, the process's peak RSS so far
	CPUTicks int64 // utime + stime
}

// readProc reads /proc/PID/status and /proc/PID/stat.
func readProc(pid int) (procSample, error) {
	s := procSample{At: time.Now()}
	dir := "/proc/" + strconv.Itoa(pid)
	b, err := os.ReadFile(dir + "/status")
	if err != nil {
		return s, err
	}
	if s.RSSKB, s.HWMKB, err = parseStatus(b); err != nil {
		return s, fmt.Errorf("%s/status: %w", dir, err)
	}
	b, err = os.ReadFile(dir + "/stat")
	if err != nil {
		return s, err
	}
	if s.CPUTicks, err = parseStatTicks(b); err != nil {
		return s, fmt.Errorf("%s/stat: %w", dir, err)
	}
	return s, nil
}

// parseStatus returns VmRSS and VmHWM, in kB, from /proc/PID/status.
func parseStatus(b []byte) (rssKB, hwmKB int64, err error) {
	found := 0
	for _, line := range strings.Split(string(b), "\n") {
		for _, f := range []struct {
			key string
			dst *int64
		}{{"VmRSS:", &rssKB}, {"VmHWM:", &hwmKB}} {
			v, ok := strings.CutPrefix(line, f.key)
			if !ok {
				continue
			}
			v = strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB"))
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				return 0, 0, fmt.Errorf("%s %q: %w", f.key, v, err)
			}
			*f.dst = n
			found++
		}
	}
	if found != 2 {
		return 0, 0, errors.New("no VmRSS or no VmHWM line")
	}
	return rssKB, hwmKB, nil
}

// parseStatTicks returns utime+stime, in clock ticks, from /proc/PID/stat.
func parseStatTicks(b []byte) (int64, error) {
	// The fields after the command name, which is in parentheses and may
	// hold spaces: state is field 3, utime 14 and stime 15.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, errors.New("no command name")
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0, fmt.Errorf("only %d fields after the command name", len(f))
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("utime %q, stime %q", f[11], f[12])
	}
	return ut + st, nil
}

// cpuPercent is the CPU a process used between two samples, in % of one
// core.
func cpuPercent(a, b procSample) float64 {
	wall := b.At.Sub(a.At).Seconds()
	if wall <= 0 {
		return 0
	}
	return float64(b.CPUTicks-a.CPUTicks) / clockTicks / wall * 100
}

// sampler reads the broker's RSS at a fixed interval while a scenario runs,
// following the broker across restarts (pid is asked each time).
type sampler struct {
	pid   func() int
	every time.Duration

	mu      sync.Mutex
	samples []procSample
	stop    chan struct{}
	done    chan struct{}
}

// startSampler samples pid() every interval until stopped.
func startSampler(pid func() int, every time.Duration) *sampler {
	s := &sampler{pid: pid, every: every, stop: make(chan struct{}), done: make(chan struct{})}
	go s.run()
	return s
}

func (s *sampler) run() {
	defer close(s.done)
	t := time.NewTicker(s.every)
	defer t.Stop()
	for {
		if p := s.pid(); p > 0 {
			if ps, err := readProc(p); err == nil {
				s.mu.Lock()
				s.samples = append(s.samples, ps)
				s.mu.Unlock()
			}
		}
		select {
		case <-s.stop:
			return
		case <-t.C:
		}
	}
}

// Stop ends the sampling and returns the samples.
func (s *sampler) Stop() []procSample {
	close(s.stop)
	<-s.done
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.samples
}

// maxRSSKB is the largest VmRSS among samples.
func maxRSSKB(samples []procSample) int64 {
	var m int64
	for _, s := range samples {
		m = max(m, s.RSSKB)
	}
	return m
}

// plateau says whether memory levelled off over samples: the mean RSS of
// the last third is within 5 % (and at least 4 MB) of the middle third's.
// It returns the two means in kB; with fewer than 6 samples it cannot tell.
func plateau(samples []procSample) (ok bool, middleKB, lastKB int64, known bool) {
	n := len(samples)
	if n < 6 {
		return false, 0, 0, false
	}
	mean := func(ss []procSample) int64 {
		var sum int64
		for _, s := range ss {
			sum += s.RSSKB
		}
		return sum / int64(len(ss))
	}
	middleKB, lastKB = mean(samples[n/3:2*n/3]), mean(samples[2*n/3:])
	slack := max(middleKB/20, 4<<10)
	return lastKB <= middleKB+slack, middleKB, lastKB, true
}

// raiseFileLimit sets the soft RLIMIT_NOFILE to the hard one, for this
// process and the broker it starts (a limit set with Setrlimit is what
// child processes inherit). It returns the limit in force.
func raiseFileLimit() (uint64, error) {
	var r syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &r); err != nil {
		return 0, err
	}
	r.Cur = r.Max
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &r); err != nil {
		return 0, err
	}
	return r.Cur, nil
}

package e2e

import (
	"bytes"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/berth-dev/berth/api"
)

// clockTicks is USER_HZ, the unit of utime and stime in /proc/PID/stat (100
// on every Linux architecture berth runs on).
const clockTicks = 100

// BenchmarkCreateToReady measures, through the API with the vnc driver, the
// time from sending CreateSessions to DescribeSessions showing the session
// READY, for 20 sessions one after the other (each deleted before the next,
// outside the measurement), and reports their median and 90th percentile.
// Issue 3's target: a median under 1 s.
func BenchmarkCreateToReady(b *testing.B) {
	e := MustStartEnv(b)
	const sessions = 20
	var took []time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for j := 0; j < sessions; j++ {
			owner := []string{user1, user2}[j%2]
			t0 := time.Now()
			s := e.MustCreate(b, api.CreateSessionRequest{Name: fmt.Sprintf("bench %d", j), Owner: owner, Type: api.TypeVirtual})[0]
			mustPollReady(b, e, s.Id)
			took = append(took, time.Since(t0))
			b.StopTimer()
			e.MustDelete(b, s.Id)
			b.StartTimer()
		}
	}
	b.StopTimer()
	slices.Sort(took)
	median, p90 := took[len(took)/2], took[len(took)*9/10]
	if len(took)%2 == 0 {
		median = (took[len(took)/2-1] + took[len(took)/2]) / 2
	}
	b.ReportMetric(ms(median), "median-ms")
	b.ReportMetric(ms(p90), "p90-ms")
	b.ReportMetric(ms(took[len(took)-1]), "max-ms")
	b.Logf("create to READY over %d sessions: min %s, median %s, p90 %s, max %s (target: median < 1 s)",
		len(took), took[0].Round(time.Millisecond), median.Round(time.Millisecond), p90.Round(time.Millisecond), took[len(took)-1].Round(time.Millisecond))
}

// mustPollReady polls DescribeSessions every 10 ms until the session is
// READY (MustWaitState's 50 ms would blur the measurement).
func mustPollReady(tb testing.TB, e *Env, id string) {
	tb.Helper()
	deadline := time.Now().Add(readyTimeout)
	for {
		s, err := e.Describe(tb, id)
		if err == nil && s.State == api.StateReady {
			return
		}
		if err == nil && s.State == api.StateDeleted {
			tb.Fatalf("session %s is DELETED (%s), expected READY", id, s.StateReason)
		}
		if time.Now().After(deadline) {
			tb.Fatalf("session %s is not READY after %s: %s %v", id, readyTimeout, s.State, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// BenchmarkAgentIdle runs 10 sessions, lets the agent settle, then measures
// the berth-agent process over 10 s of idleness: its resident memory
// (VmRSS) and its CPU use (utime+stime over wall time, in % of one core).
// Issue 3's target: at most 30 MB and under 1% of a core.
func BenchmarkAgentIdle(b *testing.B) {
	e := MustStartEnv(b)
	var reqs []api.CreateSessionRequest
	for j := 0; j < 10; j++ {
		reqs = append(reqs, api.CreateSessionRequest{Name: fmt.Sprintf("idle %d", j), Owner: []string{user1, user2}[j%2], Type: api.TypeVirtual})
	}
	for _, s := range e.MustCreate(b, reqs...) {
		e.MustWaitState(b, s.Id, api.StateReady, readyTimeout)
	}
	time.Sleep(3 * time.Second) // the starts' aftermath: reports, GC
	pid := e.Agent.Cmd.Process.Pid
	const window = 10 * time.Second
	var rssKB int64
	var cpu float64
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		c0, t0 := mustCPUTicks(b, pid), time.Now()
		time.Sleep(window)
		c1, wall := mustCPUTicks(b, pid), time.Since(t0)
		cpu = float64(c1-c0) / clockTicks / wall.Seconds() * 100
		rssKB = mustRSSKB(b, pid)
	}
	b.StopTimer()
	b.ReportMetric(float64(rssKB)/1024, "rss-MB")
	b.ReportMetric(cpu, "cpu-%")
	b.Logf("berth-agent with 10 sessions, idle for %s: RSS %.1f MB, CPU %.2f%% of a core (targets: <= 30 MB, < 1%%)", window, float64(rssKB)/1024, cpu)
}

// mustCPUTicks returns a process's utime+stime in clock ticks.
func mustCPUTicks(tb testing.TB, pid int) int64 {
	tb.Helper()
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		tb.Fatal(err)
	}
	// Fields after the command name, which is in parentheses: state is
	// field 3, utime 14 and stime 15.
	i := bytes.LastIndexByte(b, ')')
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		tb.Fatalf("short /proc/%d/stat: %q", pid, b)
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		tb.Fatalf("/proc/%d/stat: utime %q stime %q", pid, f[11], f[12])
	}
	return ut + st
}

// mustRSSKB returns a process's VmRSS in kB.
func mustRSSKB(tb testing.TB, pid int) int64 {
	tb.Helper()
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		tb.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			n, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			if err != nil {
				tb.Fatalf("VmRSS %q: %v", v, err)
			}
			return n
		}
	}
	tb.Fatalf("/proc/%d/status has no VmRSS", pid)
	return 0
}

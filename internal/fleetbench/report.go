package fleetbench

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"time"
)

// Row is one scenario's result: the broker child's memory and CPU, and the
// times the scenario measured. A zero duration or rate was not measured.
type Row struct {
	Scenario string
	Agents   int
	Sessions int

	// RSSMB is the broker's VmRSS at the end of the scenario and PeakRSSMB
	// the largest sampled during it, in MB (10^6 bytes).
	RSSMB, PeakRSSMB float64
	// CPUPercent is the broker's utime+stime over the measured window, in %
	// of one core.
	CPUPercent float64
	// Window is what CPUPercent was measured over.
	Window time.Duration

	// Times from the scenario's start.
	ToListen    time.Duration // the broker accepts TCP connections again
	ToFirst     time.Duration // the first agent is welcomed
	ToLinked    time.Duration // every agent is welcomed
	ToAvailable time.Duration // DescribeServers shows every server AVAILABLE
	ToAccepted  time.Duration // CreateSessions accepted every session
	ToReady     time.Duration // DescribeSessions shows every session READY
	// Rate is sessions per second (to READY, or created in churn).
	Rate float64

	// Check is the session check of the restart scenario.
	Check *SessionCheck
	// Notes say what else was seen (failures, counts, plateau).
	Notes []string
	// Err is why the scenario failed, "" if it ran through.
	Err string
}

// SessionCheck compares the sessions before a broker restart with those
// after.
type SessionCheck struct {
	Before int // sessions READY before the kill
	// Lost are sessions of Before that DescribeSessions no longer lists or
	// lists as DELETED, or that no agent holds.
	Lost int
	// Duplicated are sessions listed twice, held by two agents, or new
	// sessions that nobody created.
	Duplicated int
	// NotReady are sessions of Before still not READY at the end.
	NotReady int
}

// OK says whether no session was lost or duplicated and all are READY.
func (c *SessionCheck) OK() bool {
	return c != nil && c.Lost == 0 && c.Duplicated == 0 && c.NotReady == 0
}

// Report is a whole run.
type Report struct {
	Machine  Machine
	Settings []string // what the run was configured with, one line each
	Rows     []Row
	// SimPeakMB is the benchmark process's own peak RSS (the simulated
	// agents), in MB; 0 if unknown.
	SimPeakMB float64
}

// Failed says whether any scenario failed, or its session check did.
func (r *Report) Failed() bool {
	for _, row := range r.Rows {
		if row.Err != "" || (row.Check != nil && !row.Check.OK()) {
			return true
		}
	}
	return false
}

// Machine describes where the benchmark ran.
type Machine struct {
	CPUs      int
	CPUModel  string
	MemoryMB  int64
	GoVersion string
	Commit    string
	FileLimit uint64
}

// readMachine reads the machine's CPUs, CPU model and memory, the Go
// version and the git commit of the working directory.
func readMachine() Machine {
	m := Machine{CPUs: runtime.NumCPU(), GoVersion: runtime.Version(), CPUModel: "unknown", Commit: "unknown"}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		m.CPUModel = cpuModel(string(b))
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		m.MemoryMB = memTotalMB(string(b))
	}
	if out, err := exec.Command("git", "rev-parse", "--short=12", "HEAD").Output(); err == nil {
		m.Commit = strings.TrimSpace(string(out))
		if out, err := exec.Command("git", "status", "--porcelain", "--untracked-files=no").Output(); err == nil && len(strings.TrimSpace(string(out))) > 0 {
			m.Commit += " (with uncommitted changes)"
		}
	} else if bi, ok := debug.ReadBuildInfo(); ok {
		m.Commit = buildCommit(bi.Settings)
	}
	return m
}

// buildCommit is the commit the binary was built from, as its build
// settings record it (go build -buildvcs=true in a clone): what the table
// names when it runs outside a clone.
func buildCommit(settings []debug.BuildSetting) string {
	rev, modified := "", false
	for _, s := range settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			modified = s.Value == "true"
		}
	}
	switch {
	case rev == "":
		return "unknown"
	case modified:
		return rev[:min(12, len(rev))] + " (built with uncommitted changes)"
	}
	return rev[:min(12, len(rev))] + " (of the binary)"
}

// cpuModel is the first "model name" of /proc/cpuinfo.
func cpuModel(cpuinfo string) string {
	for _, line := range strings.Split(cpuinfo, "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "unknown"
}

// memTotalMB is MemTotal of /proc/meminfo in MB (10^6 bytes).
func memTotalMB(meminfo string) int64 {
	for _, line := range strings.Split(meminfo, "\n") {
		if v, ok := strings.CutPrefix(line, "MemTotal:"); ok {
			n, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return n * 1024 / 1e6
		}
	}
	return 0
}

// columns are the table's headers.
var columns = []string{"scenario", "agents", "sessions", "broker RSS MB (end / peak)", "broker CPU % of a core (window)",
	"listening", "first agent", "all linked", "all AVAILABLE", "all accepted", "all READY", "sessions/s", "notes"}

// WriteMarkdown writes the report: the machine and settings, then one
// table with a row per scenario.
func (r *Report) WriteMarkdown(w io.Writer) error {
	m := r.Machine
	var b strings.Builder
	fmt.Fprintf(&b, "- machine: %d CPUs (%s), %d MB memory; open-file limit %d\n", m.CPUs, m.CPUModel, m.MemoryMB, m.FileLimit)
	fmt.Fprintf(&b, "- %s, commit %s\n", m.GoVersion, m.Commit)
	for _, s := range r.Settings {
		fmt.Fprintf(&b, "- %s\n", s)
	}
	if r.SimPeakMB > 0 {
		fmt.Fprintf(&b, "- the simulating process (agents and client) peaked at %.0f MB RSS\n", r.SimPeakMB)
	}
	b.WriteString("\n| " + strings.Join(columns, " | ") + " |\n|")
	for range columns {
		b.WriteString("---|")
	}
	b.WriteString("\n")
	for _, row := range r.Rows {
		b.WriteString("| " + strings.Join(row.cells(), " | ") + " |\n")
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// cells formats a row for the table.
func (row Row) cells() []string {
	mem := "–"
	if row.RSSMB > 0 {
		mem = fmt.Sprintf("%.0f / %.0f", row.RSSMB, row.PeakRSSMB)
	}
	cpu := "–"
	if row.Window > 0 {
		cpu = fmt.Sprintf("%.1f (%s)", row.CPUPercent, fmtDur(row.Window))
	}
	rate := "–"
	if row.Rate > 0 {
		rate = fmt.Sprintf("%.0f", row.Rate)
	}
	notes := row.Notes
	if row.Check != nil {
		c := row.Check
		notes = append([]string{fmt.Sprintf("sessions before %d: lost %d, duplicated %d, not READY %d", c.Before, c.Lost, c.Duplicated, c.NotReady)}, notes...)
	}
	if row.Err != "" {
		notes = append([]string{"**FAILED: " + row.Err + "**"}, notes...)
	}
	note := strings.Join(notes, "; ")
	if note == "" {
		note = "–"
	}
	sessions := "–"
	if row.Sessions > 0 {
		sessions = strconv.Itoa(row.Sessions)
	}
	return []string{row.Scenario, strconv.Itoa(row.Agents), sessions, mem, cpu,
		fmtDur(row.ToListen), fmtDur(row.ToFirst), fmtDur(row.ToLinked), fmtDur(row.ToAvailable),
		fmtDur(row.ToAccepted), fmtDur(row.ToReady), rate, escapeCell(note)}
}

// fmtDur formats a duration for the table: "–" for zero, milliseconds
// under a second, else seconds with two decimals, or minutes and seconds.
func fmtDur(d time.Duration) string {
	switch {
	case d <= 0:
		return "–"
	case d < time.Second:
		return fmt.Sprintf("%d ms", d.Milliseconds())
	case d < 2*time.Minute:
		return fmt.Sprintf("%.2f s", d.Seconds())
	default:
		return fmt.Sprintf("%d min %02d s", int(d.Minutes()), int(d.Seconds())%60)
	}
}

// cpuPerItem says how much of the broker's CPU each of n items took, from
// its CPU in % of a core over window: steadier than a rate on a machine
// shared with other load, as the broker's own CPU does not count the wait
// for the cores. "" when there is nothing to divide.
func cpuPerItem(percent float64, window time.Duration, n int, item string) string {
	if n <= 0 || window <= 0 || percent <= 0 {
		return ""
	}
	cpu := percent / 100 * window.Seconds()
	return fmt.Sprintf("broker CPU %.0f µs a %s (%.2f s)", cpu/float64(n)*1e6, item, cpu)
}

// escapeCell keeps a table cell on one line and its pipes literal.
func escapeCell(s string) string {
	s = strings.ReplaceAll(s, "\n", " ")
	return strings.ReplaceAll(s, "|", `\|`)
}

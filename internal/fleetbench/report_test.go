package fleetbench

import (
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestParseStatus(t *testing.T) {
	status := "Name:\tberth-broker\nVmPeak:\t 1300000 kB\nVmHWM:\t   81234 kB\nVmRSS:\t   70312 kB\nThreads:\t9\n"
	rss, hwm, err := parseStatus([]byte(status))
	if err != nil || rss != 70312 || hwm != 81234 {
		t.Fatalf("parseStatus = %d, %d, %v; want 70312, 81234, nil", rss, hwm, err)
	}
	for _, bad := range []string{"Name:\tx\n", "VmRSS:\tlots kB\nVmHWM:\t1 kB\n", "VmRSS:\t1 kB\n"} {
		if _, _, err := parseStatus([]byte(bad)); err == nil {
			t.Errorf("parseStatus(%q): no error", bad)
		}
	}
}

func TestParseStatTicks(t *testing.T) {
	// A command name with spaces and a parenthesis: the fields count from
	// the last ')'.
	stat := "4242 (berth (broker) x) S 1 4242 4242 0 -1 4194560 1000 0 0 0 1234 567 0 0 20 0 9 0 100 1000000 2000 18446744073709551615"
	got, err := parseStatTicks([]byte(stat))
	if err != nil || got != 1234+567 {
		t.Fatalf("parseStatTicks = %d, %v; want 1801", got, err)
	}
	for _, bad := range []string{"no parenthesis", "1 (x) S 1 2", "1 (x) S 1 2 3 4 5 6 7 8 9 10 u s"} {
		if _, err := parseStatTicks([]byte(bad)); err == nil {
			t.Errorf("parseStatTicks(%q): no error", bad)
		}
	}
}

// TestReadProcSelf reads this process: RSS, peak and CPU time are there.
func TestReadProcSelf(t *testing.T) {
	s, err := readProc(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if s.RSSKB <= 0 || s.HWMKB < s.RSSKB || s.CPUTicks < 0 {
		t.Fatalf("readProc(self) = %+v", s)
	}
}

func TestCPUPercent(t *testing.T) {
	t0 := time.Unix(100, 0)
	tests := []struct {
		name string
		a, b procSample
		want float64
	}{
		{"half a core", procSample{At: t0, CPUTicks: 100}, procSample{At: t0.Add(10 * time.Second), CPUTicks: 600}, 50},
		{"two cores", procSample{At: t0}, procSample{At: t0.Add(time.Second), CPUTicks: 200}, 200},
		{"no time passed", procSample{At: t0}, procSample{At: t0, CPUTicks: 5}, 0},
	}
	for _, tt := range tests {
		if got := cpuPercent(tt.a, tt.b); got != tt.want {
			t.Errorf("%s: cpuPercent = %v, want %v", tt.name, got, tt.want)
		}
	}
}

func TestPlateau(t *testing.T) {
	mk := func(kb ...int64) []procSample {
		var out []procSample
		for _, k := range kb {
			out = append(out, procSample{RSSKB: k})
		}
		return out
	}
	tests := []struct {
		name      string
		samples   []procSample
		ok, known bool
	}{
		{"flat", mk(100<<10, 100<<10, 101<<10, 100<<10, 101<<10, 100<<10), true, true},
		{"grows then levels", mk(50<<10, 80<<10, 100<<10, 102<<10, 101<<10, 103<<10), true, true},
		{"keeps growing", mk(100<<10, 120<<10, 140<<10, 160<<10, 180<<10, 200<<10), false, true},
		{"falls", mk(200<<10, 200<<10, 150<<10, 150<<10, 100<<10, 100<<10), true, true},
		{"too few samples", mk(1, 2, 3), false, false},
	}
	for _, tt := range tests {
		ok, _, _, known := plateau(tt.samples)
		if ok != tt.ok || known != tt.known {
			t.Errorf("%s: plateau = %v (known %v), want %v (known %v)", tt.name, ok, known, tt.ok, tt.known)
		}
	}
}

func TestFmtDur(t *testing.T) {
	tests := []struct {
		d    time.Duration
		want string
	}{
		{0, "–"},
		{-time.Second, "–"},
		{1500 * time.Microsecond, "1 ms"},
		{999 * time.Millisecond, "999 ms"},
		{1234 * time.Millisecond, "1.23 s"},
		{2*time.Minute + 10*time.Second, "2 min 10 s"},
	}
	for _, tt := range tests {
		if got := fmtDur(tt.d); got != tt.want {
			t.Errorf("fmtDur(%s) = %q, want %q", tt.d, got, tt.want)
		}
	}
}

func TestCPUPerItem(t *testing.T) {
	tests := []struct {
		percent float64
		window  time.Duration
		n       int
		want    string
	}{
		{114.1, 2 * time.Second, 10000, "broker CPU 228 µs a session (2.28 s)"},
		{50, time.Second, 1, "broker CPU 500000 µs a session (0.50 s)"},
		{0, time.Second, 10, ""},
		{50, 0, 10, ""},
		{50, time.Second, 0, ""},
	}
	for _, tt := range tests {
		if got := cpuPerItem(tt.percent, tt.window, tt.n, "session"); got != tt.want {
			t.Errorf("cpuPerItem(%v, %s, %d) = %q, want %q", tt.percent, tt.window, tt.n, got, tt.want)
		}
	}
}

func TestMachineParsing(t *testing.T) {
	if got := cpuModel("processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Xeon(R) Processor\n"); got != "Intel(R) Xeon(R) Processor" {
		t.Errorf("cpuModel = %q", got)
	}
	if got := cpuModel("processor\t: 0\n"); got != "unknown" {
		t.Errorf("cpuModel without a model name = %q", got)
	}
	if got := memTotalMB("MemTotal:       24730000 kB\nMemFree: 1 kB\n"); got != 25323 {
		t.Errorf("memTotalMB = %d, want 25323", got)
	}
}

// TestWriteMarkdown checks the table: the header, one line per row with
// as many cells as columns, "–" for what was not measured, the session
// check and a failure first in the notes, and pipes in notes escaped.
func TestWriteMarkdown(t *testing.T) {
	rep := &Report{
		Machine:  Machine{CPUs: 2, CPUModel: "Xeon", MemoryMB: 25323, GoVersion: "go1.27.3", Commit: "abc123", FileLimit: 20000},
		Settings: []string{"agents report every 10s"},
		Rows: []Row{
			{Scenario: "register", Agents: 1000, RSSMB: 81.4, PeakRSSMB: 90.2, CPUPercent: 45.25, Window: 3 * time.Second,
				ToFirst: 120 * time.Millisecond, ToLinked: 2500 * time.Millisecond, ToAvailable: 2600 * time.Millisecond, Notes: []string{"a | b"}},
			{Scenario: "storm", Agents: 1000, Sessions: 10000, ToAccepted: 2 * time.Second, ToReady: 4 * time.Second, Rate: 2500},
			{Scenario: "restart", Agents: 1000, Sessions: 10000, Check: &SessionCheck{Before: 10000, Lost: 1}, Err: "broke"},
		},
	}
	var b strings.Builder
	if err := rep.WriteMarkdown(&b); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{
		"- machine: 2 CPUs (Xeon), 25323 MB memory; open-file limit 20000\n",
		"- go1.27.3, commit abc123\n",
		"- agents report every 10s\n",
		"| scenario | agents | sessions | broker RSS MB (end / peak) |",
		"| register | 1000 | – | 81 / 90 | 45.2 (3.00 s) | – | 120 ms | 2.50 s | 2.60 s | – | – | – | a \\| b |\n",
		"| storm | 1000 | 10000 | – | – | – | – | – | – | 2.00 s | 4.00 s | 2500 | – |\n",
		"| restart | 1000 | 10000 | – | – | – | – | – | – | – | – | – | **FAILED: broke**; sessions before 10000: lost 1, duplicated 0, not READY 0 |\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("the table lacks %q:\n%s", want, out)
		}
	}
	for _, line := range strings.Split(out, "\n") {
		if strings.HasPrefix(line, "| ") {
			if n := strings.Count(strings.ReplaceAll(line, `\|`, ""), "|"); n != len(columns)+1 {
				t.Errorf("line has %d cells, want %d: %s", n-1, len(columns), line)
			}
		}
	}
	if !rep.Failed() {
		t.Error("Failed() = false with a failed row")
	}
	rep.Rows = rep.Rows[:2]
	if rep.Failed() {
		t.Error("Failed() = true without a failed row")
	}
}

func TestSelected(t *testing.T) {
	tests := []struct {
		in      []string
		want    string
		wantErr bool
	}{
		{nil, strings.Join(Scenarios, ","), false},
		{[]string{"all"}, strings.Join(Scenarios, ","), false},
		{[]string{"restart", "register"}, "register,restart", false},
		{[]string{"nope"}, "", true},
	}
	for _, tt := range tests {
		got, err := Options{Scenarios: tt.in}.selected()
		if (err != nil) != tt.wantErr || strings.Join(got, ",") != tt.want {
			t.Errorf("selected(%v) = %v, %v; want %s (error %v)", tt.in, got, err, tt.want, tt.wantErr)
		}
	}
}

func TestCompareSessions(t *testing.T) {
	before := map[string]string{"a": "u1", "b": "u2", "c": "u3"}
	scan := func(states ...string) sessionScan {
		sc := sessionScan{state: map[string]string{}, listed: map[string]int{}}
		for i := 0; i+1 < len(states); i += 2 {
			sc.state[states[i]] = states[i+1]
			sc.listed[states[i]]++
		}
		return sc
	}
	all := map[string]int{"a": 1, "b": 1, "c": 1}
	tests := []struct {
		name      string
		sc        sessionScan
		held      map[string]int
		heldTwice int
		want      SessionCheck
	}{
		{"all there", scan("a", "READY", "b", "READY", "c", "READY"), all, 0, SessionCheck{Before: 3}},
		{"not listed", scan("a", "READY", "b", "READY"), all, 0, SessionCheck{Before: 3, Lost: 1}},
		{"deleted", scan("a", "READY", "b", "READY", "c", "DELETED"), all, 0, SessionCheck{Before: 3, Lost: 1}},
		{"no agent holds it", scan("a", "READY", "b", "READY", "c", "READY"), map[string]int{"a": 1, "b": 1}, 0, SessionCheck{Before: 3, Lost: 1}},
		{"not ready", scan("a", "READY", "b", "CREATING", "c", "UNKNOWN"), all, 0, SessionCheck{Before: 3, NotReady: 2}},
		{"listed twice", scan("a", "READY", "b", "READY", "c", "READY", "c", "READY"), all, 0, SessionCheck{Before: 3, Duplicated: 1}},
		{"on two agents", scan("a", "READY", "b", "READY", "c", "READY"), map[string]int{"a": 1, "b": 2, "c": 1}, 1, SessionCheck{Before: 3, Duplicated: 1}},
		{"a new session", scan("a", "READY", "b", "READY", "c", "READY", "d", "READY"), map[string]int{"a": 1, "b": 1, "c": 1, "d": 1}, 0, SessionCheck{Before: 3, Duplicated: 2}},
		{"an old deleted one listed", scan("a", "READY", "b", "READY", "c", "READY", "z", "DELETED"), all, 0, SessionCheck{Before: 3}},
	}
	for _, tt := range tests {
		got := compareSessions(before, tt.sc, tt.held, tt.heldTwice)
		if *got != tt.want {
			t.Errorf("%s: %+v, want %+v", tt.name, *got, tt.want)
		}
		if got.OK() != (tt.want == SessionCheck{Before: 3}) {
			t.Errorf("%s: OK() = %v", tt.name, got.OK())
		}
	}
}

func TestReportRate(t *testing.T) {
	for _, tc := range []struct {
		name    string
		n       int
		reports int64
		d, gap  time.Duration
		want    string
	}{
		{"stretched interval", 10000, 10000, time.Minute, 50 * time.Second,
			"agents report every 50s (median gap; 200 reports a second for 10000 agents), 167 a second in the window"},
		{"no gap yet", 10, 0, time.Minute, 0, "10 agents made 0 periodic reports in 1m0s"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := reportRate(tc.n, tc.reports, tc.d, tc.gap); got != tc.want {
				t.Errorf("reportRate = %q\nwant %q", got, tc.want)
			}
		})
	}
}

func TestBuildCommit(t *testing.T) {
	for _, tc := range []struct {
		name     string
		settings []debug.BuildSetting
		want     string
	}{
		{"no vcs", nil, "unknown"},
		{"clean", []debug.BuildSetting{{Key: "vcs.revision", Value: "0123456789abcdef0123"}, {Key: "vcs.modified", Value: "false"}}, "0123456789ab (of the binary)"},
		{"modified", []debug.BuildSetting{{Key: "vcs.revision", Value: "0123456789abcdef0123"}, {Key: "vcs.modified", Value: "true"}}, "0123456789ab (built with uncommitted changes)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := buildCommit(tc.settings); got != tc.want {
				t.Errorf("buildCommit = %q, want %q", got, tc.want)
			}
		})
	}
}

// TestAgentStateDir: the agents' state goes where -agent-state-dir says,
// else to a new directory on /dev/shm when that is a tmpfs, else into the
// work directory.
func TestAgentStateDir(t *testing.T) {
	work := t.TempDir()
	explicit := filepath.Join(t.TempDir(), "agents")
	got, err := agentStateDir(Options{AgentStateDir: explicit}, work)
	if err != nil || got != explicit {
		t.Fatalf("explicit: %q, %v; want %q", got, err, explicit)
	}
	if fi, err := os.Stat(explicit); err != nil || !fi.IsDir() {
		t.Fatalf("explicit directory not made: %v", err)
	}
	got, err = agentStateDir(Options{}, work)
	if err != nil {
		t.Fatal(err)
	}
	var st syscall.Statfs_t
	if syscall.Statfs("/dev/shm", &st) == nil && st.Type == tmpfsMagic {
		defer os.RemoveAll(got)
		if filepath.Dir(got) != "/dev/shm" || !strings.HasPrefix(filepath.Base(got), "berth-bench-agents-") {
			t.Errorf("default with a tmpfs /dev/shm: %q", got)
		}
	} else if got != work {
		t.Errorf("default without a tmpfs: %q, want the work directory %q", got, work)
	}
}

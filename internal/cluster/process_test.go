package cluster

import (
	"os"
	"os/exec"
	"testing"
)

func TestProcess_Gone(t *testing.T) {
	self := Process{BootID: "boot-a", PIDNS: "pid:[1]", PID: 100, Start: 5000}
	// start is the machine as the tests see it: PID 200 started at 7000,
	// PID 300 is another user's (start unreadable), PID 400 does not exist.
	start := func(pid int) (uint64, bool) {
		switch pid {
		case 200:
			return 7000, true
		case 300:
			return 0, true
		}
		return 0, false
	}
	with := func(f func(*Process)) Process {
		p := Process{BootID: "boot-a", PIDNS: "pid:[1]", PID: 200, Start: 7000}
		f(&p)
		return p
	}
	for _, tc := range []struct {
		name  string
		self  Process
		other Process
		want  bool
	}{
		{"alive", self, with(func(*Process) {}), false},
		{"PID gone", self, with(func(p *Process) { p.PID = 400 }), true},
		{"PID reused by a later process", self, with(func(p *Process) { p.Start = 6000 }), true},
		{"this process has its PID now", self, with(func(p *Process) { p.PID, p.Start = 100, 4000 }), true},
		{"this very process (another node of it)", self, self, false},
		{"start unreadable", self, with(func(p *Process) { p.PID, p.Start = 300, 1 }), false},
		{"another boot", self, with(func(p *Process) { p.BootID, p.PID = "boot-b", 400 }), false},
		{"another PID namespace (a container)", self, with(func(p *Process) { p.PIDNS, p.PID = "pid:[2]", 400 }), false},
		{"holder unknown (an older broker)", self, Process{}, false},
		{"this process unknown", Process{}, with(func(p *Process) { p.PID = 400 }), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.self.gone(tc.other, start); got != tc.want {
				t.Errorf("gone = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestProcess_Encoding(t *testing.T) {
	p := Process{BootID: "0b4c-11", PIDNS: "pid:[4026531836]", PID: 4242, Start: 123456}
	if got := parseProcess(p.String()); got != p {
		t.Errorf("parseProcess(%q) = %+v, want %+v", p.String(), got, p)
	}
	for _, s := range []string{"", "a b c", "a b c d e", "a b x 1", "a b 1 x", "a b -1 5", "a b 1 0", "a  1 2", "a b 1 2 "} {
		if got := parseProcess(s); got != (Process{}) {
			t.Errorf("parseProcess(%q) = %+v, want the zero Process", s, got)
		}
	}
	if (Process{BootID: "has space", PIDNS: "x", PID: 1, Start: 1}).String() != "" {
		t.Error("a Process that does not fit the encoding encodes as known")
	}
}

// TestThisProcess reads this process from /proc, and a process that has
// exited is gone to it.
func TestThisProcess(t *testing.T) {
	self := ThisProcess()
	if !self.known() {
		t.Skip("/proc does not tell this process's identity here")
	}
	if self.PID != os.Getpid() {
		t.Fatalf("PID %d, want %d", self.PID, os.Getpid())
	}
	if self.gone(self, processStart) {
		t.Error("this process is gone to itself")
	}
	cmd := exec.Command("true")
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	dead := self
	dead.PID = cmd.ProcessState.Pid()
	if !self.gone(dead, processStart) {
		t.Errorf("exited process %d is not gone", dead.PID)
	}
	if parent := ProcessOf(os.Getppid()); parent.known() && self.gone(parent, processStart) {
		t.Errorf("running parent %+v is gone", parent)
	}
}

// FuzzParseProcess: any column value decodes without panicking, to the
// unknown Process or to one that encodes back to the same value.
func FuzzParseProcess(f *testing.F) {
	for _, s := range []string{"", "0b4c-11 pid:[4026531836] 4242 123456", "a b 1 2", "a b -1 2", "a  1 2", "a b 99999999999999999999 1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		p := parseProcess(s)
		if p == (Process{}) {
			return
		}
		if !p.known() {
			t.Fatalf("parseProcess(%q) = %+v: not known", s, p)
		}
		if again := parseProcess(p.String()); again != p {
			t.Fatalf("parseProcess(%q) = %+v, and its encoding %q parses to %+v", s, p, p.String(), again)
		}
	})
}

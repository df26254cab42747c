package groups_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/broker"
	"github.com/berth-dev/berth/internal/groups"
)

func TestParse(t *testing.T) {
	in := "# comment\n\nstudents:x:1001:alice,bob\nstaff:x:1002:\nstudents:x:1001:carol\r\ngpu:*:7:alice"
	tb, err := groups.Parse(strings.NewReader(in), "g")
	if err != nil {
		t.Fatal(err)
	}
	if got := tb.Groups("alice"); !slices.Equal(got, []string{"gpu", "students"}) {
		t.Errorf("alice: %v", got)
	}
	if got := tb.Members("students"); !slices.Equal(got, []string{"alice", "bob", "carol"}) {
		t.Errorf("students: %v", got)
	}
	if got := tb.Members("staff"); got != nil || tb.Len() != 3 {
		t.Errorf("staff: %v, %d groups", got, tb.Len())
	}
}

func TestParse_Errors(t *testing.T) {
	tests := []struct {
		name, in, want string
	}{
		{"fields", "a:x:1:u\nb:x:2\n", "f:2: 3 fields, want 4"},
		{"empty name", ":x:1:u\n", "f:1: the group name is empty"},
		{"gid", "a:x:one:u\n", `f:1: group "a": gid "one" is not a number`},
		{"member", "a:x:1:alice,../x\n", `f:1: group "a": member "../x"`},
		{"empty member", "a:x:1:alice,\n", `f:1: group "a": member "": is required`},
		{"nis", "+:::\n", `f:1: NIS entry "+"`},
		{"space", "a b:x:1:u\n", `f:1: group "a b": the name contains`},
		{"utf8", "a:x:1:\xff\n", "f:1: not valid UTF-8"},
		{"long line", "a:x:1:u\n" + strings.Repeat("x", groups.MaxLineLength+1) + "\n", "f:2: line longer than"},
		{"long name", strings.Repeat("g", groups.MaxNameLength+1) + ":x:1:u\n", "f:1: the group name is longer"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := groups.Parse(strings.NewReader(tt.in), "f")
			var le *groups.LineError
			if err == nil || !strings.Contains(err.Error(), tt.want) || !errors.As(err, &le) {
				t.Fatalf("err %v, want a *LineError containing %q", err, tt.want)
			}
		})
	}
}

func writeFile(t *testing.T, path, text string, mtime time.Time) {
	t.Helper()
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(path, mtime, mtime); err != nil {
		t.Fatal(err)
	}
}

func TestFileSource_Reload(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "group")
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	writeFile(t, path, "students:x:1:alice\n", t0)
	f, err := groups.NewFileSource(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	now := t0
	f.Now = func() time.Time { return now }
	if got := f.Groups(ctx, "alice"); !slices.Equal(got, []string{"students"}) {
		t.Fatalf("alice: %v", got)
	}
	writeFile(t, path, "students:x:1:bob\n", t0.Add(time.Minute))
	// Within the check interval: not stat'ed yet.
	if got := f.Groups(ctx, "bob"); got != nil {
		t.Fatalf("bob before the interval: %v", got)
	}
	now = now.Add(2 * time.Second)
	if got := f.Groups(ctx, "bob"); !slices.Equal(got, []string{"students"}) {
		t.Fatalf("bob after the change: %v", got)
	}
	if got := f.Members(ctx, "students"); !slices.Equal(got, []string{"bob"}) {
		t.Fatalf("members: %v", got)
	}
	// A broken file keeps the groups read before.
	writeFile(t, path, "students:x:1\n", t0.Add(2*time.Minute))
	now = now.Add(2 * time.Second)
	if got := f.Groups(ctx, "bob"); !slices.Equal(got, []string{"students"}) {
		t.Fatalf("bob after a bad change: %v", got)
	}
}

func TestNewFileSource_Errors(t *testing.T) {
	dir := t.TempDir()
	if _, err := groups.NewFileSource(filepath.Join(dir, "missing"), nil); err == nil {
		t.Fatal("missing file accepted")
	}
	path := filepath.Join(dir, "group")
	writeFile(t, path, "ok:x:1:a\nbad:x:1\n", time.Now())
	_, err := groups.NewFileSource(path, nil)
	if err == nil || !strings.Contains(err.Error(), path+":2:") {
		t.Fatalf("err %v, want the file and line 2 named", err)
	}
}

func TestLearnedAndCombine(t *testing.T) {
	ctx := context.Background()
	l := groups.NewLearned()
	l.Learn("alice", []string{"gpu", "students", "gpu"})
	l.Learn("bob", []string{"students"})
	l.Learn("bob", []string{"staff"}) // the latest report replaces
	if got := l.Members(ctx, "students"); !slices.Equal(got, []string{"alice"}) {
		t.Errorf("students: %v", got)
	}
	path := filepath.Join(t.TempDir(), "group")
	writeFile(t, path, "lab:x:5:bob,carol\n", time.Now())
	f, err := groups.NewFileSource(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	var src broker.GroupSource = groups.Combine(f, nil, l)
	if got := src.Groups(ctx, "bob"); !slices.Equal(got, []string{"lab", "staff"}) {
		t.Errorf("bob: %v", got)
	}
	if got := src.(broker.GroupMembers).Members(ctx, "lab"); !slices.Equal(got, []string{"bob", "carol"}) {
		t.Errorf("lab: %v", got)
	}
	src.(broker.GroupLearner).Learn("carol", []string{"students"})
	if got := src.(broker.GroupMembers).Members(ctx, "students"); !slices.Equal(got, []string{"alice", "carol"}) {
		t.Errorf("students after learning: %v", got)
	}
}

func TestLoadLimits(t *testing.T) {
	dir := t.TempDir()
	write := func(text string) string {
		p := filepath.Join(dir, "limits.toml")
		if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	got, err := groups.LoadLimits(write(`
[groups.students]
idle_timeout_minutes = 30
disconnected_timeout_minutes = 0.5
max_lifetime_hours = 8
max_extension_hours = 2
max_sessions = 40
max_gpus = 4
[groups.staff]
max_sessions = -1
`))
	if err != nil {
		t.Fatal(err)
	}
	want := broker.SessionLimits{IdleTimeoutMinutes: 30, DisconnectedTimeoutMinutes: 0.5, MaxLifetimeHours: 8, MaxExtensionHours: 2, MaxSessions: 40, MaxGPUs: 4}
	if got["students"] != want || got["staff"] != (broker.SessionLimits{MaxSessions: -1}) || len(got) != 2 {
		t.Fatalf("got %+v", got)
	}
	for _, tt := range []struct{ text, want string }{
		{"[groups.a]\nmax_session = 3\nidle = 1\n", "unknown keys: groups.a.idle, groups.a.max_session"},
		{"[other]\nx = 1\n", "unknown keys: other"},
		{"[groups.a]\nmax_sessions = 1.5\n", "limits.toml"},
		{"[groups.a]\nidle_timeout_minutes = nan\n", "groups.a.idle_timeout_minutes: must be a finite number"},
		{"[groups.a\n", "line 2"},
	} {
		_, err := groups.LoadLimits(write(tt.text))
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%q: err %v, want %q", tt.text, err, tt.want)
		}
	}
}

// FuzzParse: any input parses or fails with a *LineError or a read error,
// never panics, and a parsed table's two views agree.
func FuzzParse(f *testing.F) {
	f.Add("students:x:1001:alice,bob\n")
	f.Fuzz(func(t *testing.T, in string) {
		tb, err := groups.Parse(strings.NewReader(in), "fuzz")
		if err != nil {
			var le *groups.LineError
			if !errors.As(err, &le) || le.Line < 1 {
				t.Fatalf("error without a line: %v", err)
			}
			return
		}
		for _, line := range strings.Split(in, "\n") {
			f := strings.Split(strings.TrimRight(line, "\r"), ":")
			if len(f) != 4 || strings.HasPrefix(strings.TrimSpace(line), "#") || f[3] == "" {
				continue
			}
			for _, u := range strings.Split(f[3], ",") {
				if !slices.Contains(tb.Groups(u), f[0]) || !slices.Contains(tb.Members(f[0]), u) {
					t.Fatalf("user %q of group %q missing", u, f[0])
				}
			}
		}
	})
}

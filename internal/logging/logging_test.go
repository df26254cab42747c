package logging_test

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/logging"
)

func TestNew_FormatsAndLevels(t *testing.T) {
	tests := []struct {
		name, level, format string
		json                bool
		debugShown          bool
	}{
		{"auto off a terminal is JSON", "info", "auto", true, false},
		{"json", "debug", "json", true, true},
		{"text", "warn", "text", false, false},
		{"trace is debug", "trace", "json", true, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var buf bytes.Buffer
			l, err := logging.New(logging.Options{Level: tt.level, Format: tt.format, Stderr: &buf})
			if err != nil {
				t.Fatal(err)
			}
			l.Debug("dbg")
			l.Error("boom", "k", "v")
			out := buf.String()
			if got := strings.Contains(out, "dbg"); got != tt.debugShown {
				t.Errorf("debug shown %v, want %v:\n%s", got, tt.debugShown, out)
			}
			line := strings.TrimSpace(strings.Split(strings.TrimSpace(out), "\n")[len(strings.Split(strings.TrimSpace(out), "\n"))-1])
			if isJSON := json.Valid([]byte(line)); isJSON != tt.json {
				t.Errorf("JSON %v, want %v: %q", isJSON, tt.json, line)
			}
		})
	}
	if _, err := logging.New(logging.Options{Level: "verbose"}); err == nil {
		t.Error("level verbose accepted")
	}
}

func TestNew_RedactsSecrets(t *testing.T) {
	var buf bytes.Buffer
	l, _ := logging.New(logging.Options{Format: "json", Stderr: &buf})
	l.Info("x", "password", "hunter2", "client_secret", "s3", "access_token", "eyJhbGc", "Authorization", "Bearer abc",
		"persistence-dsn", "postgres://u:pw@h/db", "session_id", "keep-me", "token_count", 3,
		"software_statement", "eyJpZCI6IjEyMyJ9", "statement", "c3RhdGVtZW50")
	out := buf.String()
	for _, secret := range []string{"hunter2", "s3\"", "eyJhbGc", "Bearer abc", "pw@h", "eyJpZCI6IjEyMyJ9", "c3RhdGVtZW50"} {
		if strings.Contains(out, secret) {
			t.Errorf("%q logged: %s", secret, out)
		}
	}
	if !strings.Contains(out, "keep-me") || !strings.Contains(out, `"token_count":3`) {
		t.Errorf("ordinary attributes lost: %s", out)
	}
}

func TestNew_FileRotates(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "log")
	l, err := logging.New(logging.Options{Dir: dir, File: "agent.log", MaxSizeMB: 1, MaxBackups: 3})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	big := strings.Repeat("x", 1000)
	for range 3000 { // about 3 MB: more than two rotations at 1 MB
		l.Info("filler", "pad", big)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	entries, _ := os.ReadDir(dir)
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if len(names) < 3 {
		t.Fatalf("files after 3 MB at 1 MB each: %v", names)
	}
	fi, err := os.Stat(filepath.Join(dir, "agent.log"))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Size() > 1<<20+2000 {
		t.Errorf("agent.log is %d bytes, over the 1 MB limit", fi.Size())
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("agent.log mode %v", fi.Mode().Perm())
	}
	if _, err := logging.New(logging.Options{Dir: dir, File: "../escape.log"}); err == nil {
		t.Error("a file name with a path was accepted")
	}
}

func TestNew_RotateEvery(t *testing.T) {
	dir := t.TempDir()
	l, err := logging.New(logging.Options{Dir: dir, File: "broker.log", RotateEvery: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	deadline := time.Now().Add(5 * time.Second)
	for {
		l.Info("tick")
		entries, _ := os.ReadDir(dir)
		if len(entries) >= 2 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no rotation within 5 s at a 200 ms interval: %d files", len(entries))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// perm returns the permission bits of path.
func perm(t *testing.T, path string) os.FileMode {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Mode().Perm()
}

// fillAndRotate writes about 2.5 MB at 1 MB per file and closes l, which waits
// for the rotated files to be compressed. It returns the rotated files.
func fillAndRotate(t *testing.T, l *logging.Logger, dir, base string) []string {
	t.Helper()
	big := strings.Repeat("x", 1000)
	for range 2500 {
		l.Info("filler", "pad", big)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var rotated []string
	for _, e := range entries {
		if e.Name() != base {
			rotated = append(rotated, e.Name())
		}
	}
	if len(rotated) < 2 {
		t.Fatalf("rotated files after 2.5 MB at 1 MB each: %v", rotated)
	}
	return rotated
}

// TestNew_FileModes: the log, every file rotated and compressed from it, and
// the directory New creates are the daemon user's only. A log world-readable
// (0644, as a shell redirect or an older version left it) let any local user
// read what the broker logged; New restricts such files.
func TestNew_FileModes(t *testing.T) {
	parent := t.TempDir()
	dir := filepath.Join(parent, "log")
	l, err := logging.New(logging.Options{Dir: dir, File: "broker.log", MaxSizeMB: 1})
	if err != nil {
		t.Fatal(err)
	}
	if got := perm(t, dir); got != 0o700 {
		t.Errorf("log directory mode %v, want 0700", got)
	}
	if got := perm(t, filepath.Join(dir, "broker.log")); got != 0o600 {
		t.Errorf("broker.log mode %v, want 0600", got)
	}
	gz := 0
	for _, n := range fillAndRotate(t, l, dir, "broker.log") {
		if strings.HasSuffix(n, ".gz") {
			gz++
		}
		if got := perm(t, filepath.Join(dir, n)); got != 0o600 {
			t.Errorf("rotated %s mode %v, want 0600", n, got)
		}
	}
	if gz == 0 {
		t.Error("no compressed rotated file: the test proves nothing about them")
	}
	if got := perm(t, filepath.Join(dir, "broker.log")); got != 0o600 {
		t.Errorf("broker.log after rotation mode %v, want 0600", got)
	}

	// Files left world-readable are restricted when the logger opens (and
	// lumberjack compresses the uncompressed one with the restricted mode).
	old := t.TempDir()
	stamp := time.Now().UTC().Add(-time.Hour).Format("2006-01-02T15-04-05.000")
	stamp2 := time.Now().UTC().Add(-2 * time.Hour).Format("2006-01-02T15-04-05.000")
	for _, n := range []string{"agent.log", "agent-" + stamp + ".log", "agent-" + stamp2 + ".log.gz", "other.txt"} {
		if err := os.WriteFile(filepath.Join(old, n), []byte("{}\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(filepath.Join(old, n), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	l, err = logging.New(logging.Options{Dir: old, File: "agent.log"})
	if err != nil {
		t.Fatal(err)
	}
	l.Info("after")
	l.Close()
	entries, err := os.ReadDir(old)
	if err != nil {
		t.Fatal(err)
	}
	var logs int
	for _, e := range entries {
		want := os.FileMode(0o600)
		if e.Name() == "other.txt" {
			want = 0o644 // not a log file of this logger
		} else {
			logs++
		}
		if got := perm(t, filepath.Join(old, e.Name())); got != want {
			t.Errorf("%s mode %v, want %v", e.Name(), got, want)
		}
	}
	if logs < 3 {
		t.Errorf("%d log files left of 3", logs)
	}
}

// TestNew_FileModes_Group: with a Group, that group reads the log and the
// files rotated from it (0640) and the directory (0750); others do not.
func TestNew_FileModes_Group(t *testing.T) {
	gid := os.Getgid()
	dir := filepath.Join(t.TempDir(), "log")
	l, err := logging.New(logging.Options{Dir: dir, File: "broker.log", MaxSizeMB: 1, Group: strconv.Itoa(gid)})
	if err != nil {
		t.Fatal(err)
	}
	if got := perm(t, dir); got != 0o750 {
		t.Errorf("log directory mode %v, want 0750", got)
	}
	for _, n := range append(fillAndRotate(t, l, dir, "broker.log"), "broker.log") {
		p := filepath.Join(dir, n)
		if got := perm(t, p); got != 0o640 {
			t.Errorf("%s mode %v, want 0640", n, got)
		}
		fi, _ := os.Stat(p)
		if g := fi.Sys().(*syscall.Stat_t).Gid; int(g) != gid {
			t.Errorf("%s group %d, want %d", n, g, gid)
		}
	}
	if _, err := logging.New(logging.Options{Dir: dir, File: "broker.log", Group: "no-such-group-berth"}); err == nil || !strings.Contains(err.Error(), "log group") {
		t.Errorf("unknown group: err = %v, want a log group error", err)
	}
}

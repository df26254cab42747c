package logging_test

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
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
		"persistence-dsn", "postgres://u:pw@h/db", "session_id", "keep-me", "token_count", 3)
	out := buf.String()
	for _, secret := range []string{"hunter2", "s3\"", "eyJhbGc", "Bearer abc", "pw@h"} {
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
	if fi.Mode().Perm() != 0o640 && fi.Mode().Perm() != 0o600 {
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

package main

import (
	"bytes"
	"log/slog"
	"strings"
	"syscall"
	"testing"
)

// TestRaiseFileLimit: a soft limit below the hard one is raised to it, and
// a limit below the connector limits is warned of.
func TestRaiseOpenFileLimit(t *testing.T) {
	var orig syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &orig); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &orig) })
	if orig.Max < 512 {
		t.Skipf("hard limit %d", orig.Max)
	}
	low := syscall.Rlimit{Cur: 256, Max: orig.Max}
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &low); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	got := raiseOpenFileLimit(slog.New(slog.NewTextHandler(&buf, nil)), 0)
	var now syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &now); err != nil {
		t.Fatal(err)
	}
	if got != orig.Max || now.Cur != orig.Max {
		t.Errorf("soft limit %d (returned %d), want the hard limit %d", now.Cur, got, orig.Max)
	}
	if !strings.Contains(buf.String(), "level=INFO msg=\"open file limit\"") {
		t.Errorf("log: %s", buf.String())
	}

	buf.Reset()
	raiseOpenFileLimit(slog.New(slog.NewTextHandler(&buf, nil)), int(orig.Max)+1)
	if !strings.Contains(buf.String(), "level=WARN") || !strings.Contains(buf.String(), "LimitNOFILE") {
		t.Errorf("no warning for a limit below the connector limits: %s", buf.String())
	}
}

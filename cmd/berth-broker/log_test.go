package main

import (
	"bufio"
	"encoding/json"
	"github.com/berth-dev/berth/internal/poll"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"
)

// TestBroker_LogDirectory runs a broker with log-directory and checks that it
// writes JSON lines to broker.log there, readable by the broker's user only.
func TestBroker_LogDirectory(t *testing.T) {
	logs := filepath.Join(t.TempDir(), "log")
	b := MustRunMainWith(t, t.TempDir(), func(m *Main) {
		m.Logger = nil // the broker opens its own, from the configuration
		m.Config.LogDirectory = logs
		m.Config.LogLevel = "info"
	})
	c := b.MustClient(t)
	b.MustStartSimAgent(t, t.TempDir(), nil, hostReport("host-a", 0, nil))
	poll.Until(t, 10*time.Second, "a server", func() bool { return len(servers(t, c)) == 1 })
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}

	path := filepath.Join(logs, "broker.log")
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	msgs := map[string]bool{}
	sc := bufio.NewScanner(f)
	n := 0
	for sc.Scan() {
		n++
		var rec map[string]any
		if err := json.Unmarshal(sc.Bytes(), &rec); err != nil {
			t.Fatalf("line %d is not JSON: %q", n, sc.Text())
		}
		for _, k := range []string{"time", "level", "msg"} {
			if _, ok := rec[k]; !ok {
				t.Errorf("line %d has no %q: %q", n, k, sc.Text())
			}
		}
		msgs[rec["msg"].(string)] = true
	}
	for _, want := range []string{"broker started", "agent connected"} {
		if !msgs[want] {
			t.Errorf("broker.log has no %q line; messages: %v", want, msgs)
		}
	}
	if fi, err := os.Stat(path); err == nil && runtime.GOOS != "windows" && fi.Mode().Perm() != 0o600 {
		t.Errorf("broker.log mode %v, want 0600", fi.Mode().Perm())
	}
}

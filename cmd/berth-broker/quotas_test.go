package main

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/berth-dev/berth/internal/broker"
)

// TestLoadConfig_Quotas reads the quota properties and the groups files
// into the broker core's configuration.
func TestLoadConfig_Quotas(t *testing.T) {
	def := DefaultConfig()
	if got := def.quotaLimits(broker.SessionLimits{}); got != (broker.SessionLimits{}) {
		t.Errorf("default quotas = %+v, want none", got)
	}
	src, limits, err := def.groupSources(nil)
	if err != nil || limits != nil || src.Groups(context.Background(), "alice") != nil {
		t.Errorf("default groups: %v, %v, %v", src, limits, err)
	}
	dir := t.TempDir()
	groupsFile, limitsFile := filepath.Join(dir, "group"), filepath.Join(dir, "limits.toml")
	if err := os.WriteFile(groupsFile, []byte("students:x:100:alice,bob\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(limitsFile, []byte("[groups.students]\nmax_sessions = 10\nmax_gpus = 2\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	c, _, err := loadConfigText(t, strings.Join([]string{
		"session-max-sessions-per-user = 3",
		"session-max-gpus-per-user = 1",
		"session-groups-file = " + groupsFile,
		"session-group-limits-file = " + limitsFile,
		"session-idle-timeout-minutes = 5",
	}, "\n"))
	if err != nil {
		t.Fatal(err)
	}
	if got := c.quotaLimits(c.sessionLimits()); got != (broker.SessionLimits{IdleTimeoutMinutes: 5, MaxSessions: 3, MaxGPUs: 1}) {
		t.Errorf("limits = %+v", got)
	}
	src, limits, err = c.groupSources(nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := src.Groups(context.Background(), "bob"); !slices.Equal(got, []string{"students"}) {
		t.Errorf("bob's groups = %v", got)
	}
	if limits["students"] != (broker.SessionLimits{MaxSessions: 10, MaxGPUs: 2}) {
		t.Errorf("group limits = %+v", limits)
	}
	// The agents' reports are learned too.
	src.(broker.GroupLearner).Learn("carol", []string{"staff"})
	if got := src.Groups(context.Background(), "carol"); !slices.Equal(got, []string{"staff"}) {
		t.Errorf("carol's learned groups = %v", got)
	}

	// Bad files fail the start, naming the property, the file and the line or key.
	if err := os.WriteFile(groupsFile, []byte("students:x:100:alice\nbad line\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.groupSources(nil); err == nil || !strings.Contains(err.Error(), "session-groups-file: "+groupsFile+":2:") {
		t.Errorf("bad groups file: %v", err)
	}
	c.SessionGroupsFile = ""
	if err := os.WriteFile(limitsFile, []byte("[groups.students]\nmax_session = 10\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.groupSources(nil); err == nil || !strings.Contains(err.Error(), "session-group-limits-file: ") || !strings.Contains(err.Error(), "groups.students.max_session") {
		t.Errorf("bad limits file: %v", err)
	}
}

// TestLoadConfig_QuotaErrors refuses bad values, naming the property.
func TestLoadConfig_QuotaErrors(t *testing.T) {
	for _, tc := range []struct{ text, key string }{
		{"session-max-sessions-per-user = -1", "session-max-sessions-per-user"},
		{"session-max-sessions-per-user = 2.5", "session-max-sessions-per-user"},
		{"session-max-gpus-per-user = many", "session-max-gpus-per-user"},
		{"session-max-gpus-per-user = 2000000", "session-max-gpus-per-user"},
	} {
		_, _, err := loadConfigText(t, tc.text)
		var ce *ConfigError
		if !errors.As(err, &ce) || ce.Key != tc.key || !strings.Contains(err.Error(), tc.key) {
			t.Errorf("load %q = %v, want an error naming %s", tc.text, err, tc.key)
		}
	}
}

package main

import (
	"fmt"
	"log/slog"

	"github.com/berth-dev/berth/internal/broker"
	"github.com/berth-dev/berth/internal/groups"
)

// The quotas' properties (docs/quotas.md).

// maxQuota caps session-max-sessions-per-user and session-max-gpus-per-user.
const maxQuota = 1_000_000

// quotaKey is a per-user quota of unitName: a whole number, 0 for none.
func quotaKey(name, unitName string, field func(*Config) *int) configKey {
	rule := fmt.Sprintf("a whole number of %s (0: no quota; at most %d)", unitName, maxQuota)
	return intKey(name, rule, func(n int) bool { return n >= 0 && n <= maxQuota }, field)
}

// quotaLimits returns l with the per-user quotas of the properties.
func (c *Config) quotaLimits(l broker.SessionLimits) broker.SessionLimits {
	l.MaxSessions, l.MaxGPUs = c.SessionMaxSessionsPerUser, c.SessionMaxGPUsPerUser
	return l
}

// groupSources reads session-groups-file and session-group-limits-file:
// the broker's groups source (the file, re-read when it changes, and the
// groups agents report for session owners) and the groups' limits. An
// error names the file and, for a bad line or key, which.
func (c *Config) groupSources(log *slog.Logger) (broker.GroupSource, map[string]broker.SessionLimits, error) {
	var file broker.GroupSource
	if c.SessionGroupsFile != "" {
		f, err := groups.NewFileSource(c.SessionGroupsFile, log)
		if err != nil {
			return nil, nil, fmt.Errorf("session-groups-file: %w", err)
		}
		file = f
	}
	var limits map[string]broker.SessionLimits
	if c.SessionGroupLimitsFile != "" {
		l, err := groups.LoadLimits(c.SessionGroupLimitsFile)
		if err != nil {
			return nil, nil, fmt.Errorf("session-group-limits-file: %w", err)
		}
		limits = l
	}
	return groups.Combine(file, groups.NewLearned()), limits, nil
}

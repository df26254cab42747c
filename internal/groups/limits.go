package groups

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"

	"github.com/BurntSushi/toml"

	"github.com/berth-dev/berth/internal/broker"
)

// limitsFile is the group limits file: [groups.NAME] tables.
type limitsFile struct {
	Groups map[string]groupLimits `toml:"groups"`
}

// groupLimits are the keys of a [groups.NAME] table, broker.SessionLimits in
// snake_case.
type groupLimits struct {
	IdleTimeoutMinutes         float64 `toml:"idle_timeout_minutes"`
	DisconnectedTimeoutMinutes float64 `toml:"disconnected_timeout_minutes"`
	MaxLifetimeHours           float64 `toml:"max_lifetime_hours"`
	MaxExtensionHours          float64 `toml:"max_extension_hours"`
	MaxSessions                int     `toml:"max_sessions"`
	MaxGPUs                    int     `toml:"max_gpus"`
}

// LoadLimits reads the group limits file at path (session-group-limits-file):
//
//	[groups.students]
//	idle_timeout_minutes = 30
//	max_sessions = 40
//	max_gpus = 4
//
// Each [groups.NAME] table takes the keys idle_timeout_minutes,
// disconnected_timeout_minutes, max_lifetime_hours, max_extension_hours
// (numbers, fractions allowed), max_sessions and max_gpus (integers); 0 or
// absent is unset, a negative value is off. Unknown keys and tables, and
// values that are not finite, are refused with the file and the key named.
func LoadLimits(path string) (map[string]broker.SessionLimits, error) {
	var f limitsFile
	md, err := toml.DecodeFile(path, &f)
	if err != nil {
		var pe toml.ParseError
		if errors.As(err, &pe) {
			return nil, fmt.Errorf("group limits file %s: line %d: %s", path, pe.Position.Line, pe.Message)
		}
		return nil, fmt.Errorf("group limits file %s: %w", path, err)
	}
	if und := md.Undecoded(); len(und) > 0 {
		keys := make([]string, len(und))
		for i, k := range und {
			keys[i] = k.String()
		}
		slices.Sort(keys)
		return nil, fmt.Errorf("group limits file %s: unknown keys: %s (a [groups.NAME] table takes idle_timeout_minutes, disconnected_timeout_minutes, max_lifetime_hours, max_extension_hours, max_sessions, max_gpus)", path, strings.Join(keys, ", "))
	}
	out := make(map[string]broker.SessionLimits, len(f.Groups))
	for name, g := range f.Groups {
		if strings.TrimSpace(name) == "" {
			return nil, fmt.Errorf("group limits file %s: a [groups] table has an empty name", path)
		}
		for key, v := range map[string]float64{
			"idle_timeout_minutes": g.IdleTimeoutMinutes, "disconnected_timeout_minutes": g.DisconnectedTimeoutMinutes,
			"max_lifetime_hours": g.MaxLifetimeHours, "max_extension_hours": g.MaxExtensionHours,
		} {
			if math.IsNaN(v) || math.IsInf(v, 0) {
				return nil, fmt.Errorf("group limits file %s: groups.%s.%s: must be a finite number", path, name, key)
			}
		}
		out[name] = broker.SessionLimits{
			IdleTimeoutMinutes: g.IdleTimeoutMinutes, DisconnectedTimeoutMinutes: g.DisconnectedTimeoutMinutes,
			MaxLifetimeHours: g.MaxLifetimeHours, MaxExtensionHours: g.MaxExtensionHours,
			MaxSessions: g.MaxSessions, MaxGPUs: g.MaxGPUs,
		}
	}
	return out, nil
}

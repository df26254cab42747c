package main

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/berth-dev/berth/internal/broker"
)

// The session lifetime policies' properties (docs/lifetimes.md).

// numberKey is a key whose value is a number of units, fractions allowed,
// of at least least (0: 0 or more, and 0 turns the policy off).
func numberKey(name, unitName string, least float64, field func(*Config) *float64) configKey {
	rule := fmt.Sprintf("a number of %s (0 or more; fractions allowed)", unitName)
	if least > 0 {
		rule = fmt.Sprintf("a number of %s greater than 0 (fractions allowed)", unitName)
	}
	k := configKey{name: name, rule: rule}
	k.parse = func(c *Config, v string) string {
		n, err := strconv.ParseFloat(v, 64)
		if err != nil || math.IsNaN(n) || math.IsInf(n, 0) {
			return fmt.Sprintf("%q is not %s", v, k.rule)
		}
		if n > 1e6 {
			return fmt.Sprintf("%q is too large", v)
		}
		*field(c) = n
		return ""
	}
	k.valid = func(c *Config) bool { return *field(c) >= least }
	k.show = func(c *Config) string { return strconv.FormatFloat(*field(c), 'f', -1, 64) }
	return k
}

// validWarningMinutes accepts session-warning-minutes.
func validWarningMinutes(s string) bool {
	_, err := warningPoints(s)
	return err == nil
}

// warningPoints parses session-warning-minutes: minutes, comma-separated,
// each greater than 0; empty for none.
func warningPoints(s string) ([]time.Duration, error) {
	out := []time.Duration{}
	if strings.TrimSpace(s) == "" {
		return out, nil
	}
	for f := range strings.SplitSeq(s, ",") {
		n, err := strconv.ParseFloat(strings.TrimSpace(f), 64)
		if err != nil || math.IsNaN(n) || n <= 0 || n > 1e6 {
			return nil, fmt.Errorf("%q is not a number of minutes greater than 0", strings.TrimSpace(f))
		}
		out = append(out, time.Duration(n*float64(time.Minute)))
	}
	return out, nil
}

// sessionLimits returns the broker properties' session limits (broker.Config.Limits).
func (c *Config) sessionLimits() broker.SessionLimits {
	return broker.SessionLimits{
		DisconnectedTimeoutMinutes: c.SessionDisconnectedTimeout,
		IdleTimeoutMinutes:         c.SessionIdleTimeout,
		MaxLifetimeHours:           c.SessionMaxLifetime,
		MaxExtensionHours:          c.SessionMaxExtension,
	}
}

// lifetimeSettings returns the lifetime policies' other settings, as
// broker.Config has them: the warning points, the default extension and
// the loop's period.
func (c *Config) lifetimeSettings() (points []time.Duration, extension, interval time.Duration) {
	points, err := warningPoints(c.SessionWarningMinutes)
	if err != nil { // refused by Validate
		points = nil
	}
	return points, time.Duration(c.SessionExtensionDefault * float64(time.Hour)),
		time.Duration(c.SessionPolicyInterval * float64(time.Second))
}

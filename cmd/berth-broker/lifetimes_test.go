package main

import (
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/broker"
)

// TestLoadConfig_Lifetimes reads the lifetime properties into the broker
// core's configuration.
func TestLoadConfig_Lifetimes(t *testing.T) {
	def := DefaultConfig()
	if got := def.sessionLimits(); got != (broker.SessionLimits{}) {
		t.Errorf("default limits = %+v, want every policy off", got)
	}
	points, ext, every := def.lifetimeSettings()
	if !reflect.DeepEqual(points, []time.Duration{15 * time.Minute, 2 * time.Minute}) || ext != time.Hour || every != 5*time.Second {
		t.Errorf("default settings = %v, %v, %v; want [15m 2m], 1h, 5s", points, ext, every)
	}
	c, _, err := loadConfigText(t, strings.Join([]string{
		"session-disconnected-timeout-minutes = 30",
		"session-idle-timeout-minutes = 0.5",
		"session-max-lifetime-hours = 8",
		"session-max-extension-hours = 2.5",
		"session-warning-minutes = 10, 1,0.25",
		"session-extension-default-hours = 0.5",
		"session-policy-interval-seconds = 0.2",
	}, "\n"))
	if err != nil {
		t.Fatal(err)
	}
	want := broker.SessionLimits{DisconnectedTimeoutMinutes: 30, IdleTimeoutMinutes: 0.5, MaxLifetimeHours: 8, MaxExtensionHours: 2.5}
	if got := c.sessionLimits(); got != want {
		t.Errorf("limits = %+v, want %+v", got, want)
	}
	points, ext, every = c.lifetimeSettings()
	if !reflect.DeepEqual(points, []time.Duration{10 * time.Minute, time.Minute, 15 * time.Second}) || ext != 30*time.Minute ||
		every != 200*time.Millisecond {
		t.Errorf("settings = %v, %v, %v", points, ext, every)
	}
	c, _, err = loadConfigText(t, "session-warning-minutes =")
	if points, _, _ := c.lifetimeSettings(); err != nil || points == nil || len(points) != 0 {
		t.Errorf("empty session-warning-minutes = %v, %v; want no warnings", points, err)
	}
}

// TestLoadConfig_LifetimeErrors refuses bad values, naming the property.
func TestLoadConfig_LifetimeErrors(t *testing.T) {
	for _, tc := range []struct{ text, key string }{
		{"session-disconnected-timeout-minutes = -1", "session-disconnected-timeout-minutes"},
		{"session-idle-timeout-minutes = soon", "session-idle-timeout-minutes"},
		{"session-max-lifetime-hours = NaN", "session-max-lifetime-hours"},
		{"session-max-extension-hours = 1e300", "session-max-extension-hours"},
		{"session-warning-minutes = 15,,2", "session-warning-minutes"},
		{"session-warning-minutes = 15,-2", "session-warning-minutes"},
		{"session-extension-default-hours = 0", "session-extension-default-hours"},
		{"session-policy-interval-seconds = 0", "session-policy-interval-seconds"},
	} {
		_, _, err := loadConfigText(t, tc.text)
		var ce *ConfigError
		if !errors.As(err, &ce) || ce.Key != tc.key || !strings.Contains(err.Error(), tc.key) {
			t.Errorf("load %q = %v, want an error naming %s", tc.text, err, tc.key)
		}
	}
}

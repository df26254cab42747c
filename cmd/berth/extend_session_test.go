package main

import (
	"strings"
	"testing"
)

// TestRun_ExtendSession checks extend-session's requests and its refusals
// of bad usage.
func TestRun_ExtendSession(t *testing.T) {
	fb := newFakeBroker(t)
	fb.answer("/berth/v1/sessions/s1/extend", 200, `{"RequestId":"r","SessionId":"s1","ExpiresAt":"2026-01-02T05:04:05Z"}`)
	for _, tt := range []struct {
		name string
		args []string
		body string
	}{
		{"default", []string{"extend-session", "--session-id", "s1"}, `{}`},
		{"by", []string{"extend-session", "--session-id", "s1", "--by", "90m"}, `{"By":"1h30m0s"}`},
		{"seconds", []string{"extend-session", "--session-id", "s1", "--by", "7200", "--owner", "alice"}, `{"By":"2h0m0s","Owner":"alice"}`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			before := len(fb.calls())
			out, stderr, code := runCLI(t, fb.env(t), tt.args...)
			if code != 0 {
				t.Fatalf("exit %d: %s", code, stderr)
			}
			calls := fb.calls()[before:]
			if len(calls) != 1 || calls[0].Method != "POST" || calls[0].Path != "/berth/v1/sessions/s1/extend" || calls[0].Body != tt.body {
				t.Fatalf("calls = %+v, want one POST of %s", calls, tt.body)
			}
			if !strings.Contains(out, "2026-01-02T05:04:05Z") {
				t.Errorf("output %q does not show the new deadline", out)
			}
		})
	}
	env := isolatedEnv(t, "BERTH_BROKER_URL=https://127.0.0.1:1")
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"extend-session"}, "--session-id is required"},
		{[]string{"extend-session", "--session-id", "s", "--by", "soon"}, `--by "soon" is not a duration`},
		{[]string{"extend-session", "--session-id", "s", "--by", "-2h"}, "--by must be positive"},
		{[]string{"extend-session", "--session-id", "s", "--by", "0"}, "--by must be positive"},
	} {
		_, stderr, code := runCLI(t, env, tt.args...)
		if code != 2 || !strings.Contains(stderr, tt.want) {
			t.Errorf("%v: exit %d, stderr %q; want 2 with %q", tt.args, code, stderr, tt.want)
		}
	}
}

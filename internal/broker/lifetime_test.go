package broker_test

import (
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/berth-dev/berth/internal/broker"
)

var lt0 = time.Date(2026, 1, 1, 8, 0, 0, 0, time.UTC)

func lat(d time.Duration) time.Time { return lt0.Add(d) }

// TestResolveLimits checks the precedence of a session's lifetime limits,
// field by field: template, else the most generous group, else the broker
// properties; negative is off.
func TestResolveLimits(t *testing.T) {
	base := broker.SessionLimits{IdleTimeoutMinutes: 30, DisconnectedTimeoutMinutes: 60, MaxLifetimeHours: 8, MaxExtensionHours: 2}
	cases := []struct {
		name   string
		tpl    *broker.SessionLimits
		groups []broker.SessionLimits
		want   broker.SessionLimits
	}{
		{"properties only", nil, nil, base},
		{"template wins", &broker.SessionLimits{IdleTimeoutMinutes: 5, MaxLifetimeHours: -1},
			[]broker.SessionLimits{{IdleTimeoutMinutes: 90}},
			broker.SessionLimits{IdleTimeoutMinutes: 5, DisconnectedTimeoutMinutes: 60, MaxLifetimeHours: -1, MaxExtensionHours: 2}},
		{"largest group", nil, []broker.SessionLimits{{IdleTimeoutMinutes: 10}, {IdleTimeoutMinutes: 45}, {MaxLifetimeHours: 4}},
			broker.SessionLimits{IdleTimeoutMinutes: 45, DisconnectedTimeoutMinutes: 60, MaxLifetimeHours: 4, MaxExtensionHours: 2}},
		{"off beats a value", nil, []broker.SessionLimits{{IdleTimeoutMinutes: 500}, {IdleTimeoutMinutes: -1}},
			broker.SessionLimits{IdleTimeoutMinutes: -1, DisconnectedTimeoutMinutes: 60, MaxLifetimeHours: 8, MaxExtensionHours: 2}},
		{"quota fields left out", &broker.SessionLimits{MaxSessions: 3, MaxGPUs: 1}, nil, base},
	}
	for _, c := range cases {
		if d := cmp.Diff(c.want, broker.ResolveLimits(c.tpl, c.groups, base)); d != "" {
			t.Errorf("%s (-want +got):\n%s", c.name, d)
		}
	}
}

// TestEvaluatePolicies is the pure decision, case by case.
func TestEvaluatePolicies(t *testing.T) {
	points := []time.Duration{15 * time.Minute, 2 * time.Minute}
	ready := func(conns int64, input, lastDisc time.Time, life broker.SessionLife) *broker.Session {
		return &broker.Session{ID: "s", State: broker.StateReady, CreationTime: lt0, UpdatedAt: lt0,
			NumOfConnections: conns, LastInputTime: input, LastDisconnectionTime: lastDisc, Life: life}
	}
	idle := broker.SessionLimits{IdleTimeoutMinutes: 30}
	gone := broker.SessionLimits{DisconnectedTimeoutMinutes: 20}
	life := broker.SessionLimits{MaxLifetimeHours: 1, MaxExtensionHours: 1}
	cases := []struct {
		name       string
		sess       *broker.Session
		lim        broker.SessionLimits
		now        time.Time
		action     broker.PolicyAction
		policy     string
		deadline   time.Time
		extendable bool
		reason     string // a part of it
		due        time.Time
	}{
		{"no policy", ready(1, lt0, time.Time{}, broker.SessionLife{}), broker.SessionLimits{}, lat(time.Hour),
			broker.PolicyNone, "", time.Time{}, false, "", time.Time{}},
		{"idle: before the first warning", ready(1, lt0, time.Time{}, broker.SessionLife{}), idle, lat(10 * time.Minute),
			broker.PolicyNone, "", time.Time{}, false, "", lat(15 * time.Minute)},
		{"idle: first warning", ready(1, lt0, time.Time{}, broker.SessionLife{}), idle, lat(15 * time.Minute),
			broker.PolicyWarn, broker.PolicyIdle, lat(30 * time.Minute), false, "disconnected in 15m", lat(28 * time.Minute)},
		{"idle: warned points wait", ready(1, lt0, time.Time{}, broker.SessionLife{IdleWarnedFor: lat(30 * time.Minute),
			IdleWarned: []time.Duration{15 * time.Minute}}), idle, lat(20 * time.Minute),
			broker.PolicyNone, "", time.Time{}, false, "", lat(28 * time.Minute)},
		{"idle: input moved the deadline, warnings start again", ready(1, lat(10*time.Minute), time.Time{},
			broker.SessionLife{IdleWarnedFor: lat(30 * time.Minute), IdleWarned: []time.Duration{15 * time.Minute}}), idle,
			lat(25 * time.Minute), broker.PolicyWarn, broker.PolicyIdle, lat(40 * time.Minute), false, "", lat(38 * time.Minute)},
		{"idle: both points passed give one warning", ready(1, lt0, time.Time{}, broker.SessionLife{}), idle, lat(29 * time.Minute),
			broker.PolicyWarn, broker.PolicyIdle, lat(30 * time.Minute), false, "", lat(30 * time.Minute)},
		{"idle: disconnect", ready(1, lt0, time.Time{}, broker.SessionLife{}), idle, lat(30 * time.Minute),
			broker.PolicyDisconnectIdle, broker.PolicyIdle, lat(30 * time.Minute), false, "no keyboard or mouse input for 30m (session-idle-timeout-minutes)", time.Time{}},
		{"idle: disconnected once", ready(1, lt0, time.Time{}, broker.SessionLife{IdleActedFor: lat(30 * time.Minute)}), idle,
			lat(40 * time.Minute), broker.PolicyNone, "", time.Time{}, false, "", time.Time{}},
		{"idle: not for an agent that reports no input (dcv)", ready(1, time.Time{}, time.Time{}, broker.SessionLife{}), idle,
			lat(3 * time.Hour), broker.PolicyNone, "", time.Time{}, false, "", time.Time{}},
		{"idle: not while nobody is connected", ready(0, lt0, time.Time{}, broker.SessionLife{}), idle, lat(40 * time.Minute),
			broker.PolicyNone, "", time.Time{}, false, "", time.Time{}},
		{"disconnected: from the last disconnection", ready(0, time.Time{}, lat(10*time.Minute), broker.SessionLife{}), gone,
			lat(29 * time.Minute), broker.PolicyNone, "", time.Time{}, false, "", lat(30 * time.Minute)},
		{"disconnected: delete", ready(0, time.Time{}, lat(10*time.Minute), broker.SessionLife{}), gone, lat(30 * time.Minute),
			broker.PolicyDelete, broker.PolicyDisconnected, lat(30 * time.Minute), false,
			"deleted by session-disconnected-timeout-minutes: no client connected for 20m", time.Time{}},
		{"disconnected: not while connected", ready(1, time.Time{}, lat(10*time.Minute), broker.SessionLife{}), gone,
			lat(3 * time.Hour), broker.PolicyNone, "", time.Time{}, false, "", time.Time{}},
		{"lifetime: extendable warning", ready(0, time.Time{}, time.Time{}, broker.SessionLife{}), life, lat(45 * time.Minute),
			broker.PolicyWarn, broker.PolicyLifetime, lat(time.Hour), true, "deleted in 15m", lat(58 * time.Minute)},
		{"lifetime: no extension left", ready(0, time.Time{}, time.Time{}, broker.SessionLife{Extension: time.Hour}), life,
			lat(105 * time.Minute), broker.PolicyWarn, broker.PolicyLifetime, lat(2 * time.Hour), false, "", lat(118 * time.Minute)},
		{"lifetime: delete with the extension", ready(0, time.Time{}, time.Time{}, broker.SessionLife{Extension: time.Hour}), life,
			lat(2 * time.Hour), broker.PolicyDelete, broker.PolicyLifetime, lat(2 * time.Hour), false,
			"deleted by session-max-lifetime-hours: the session reached its maximum lifetime of 2h", time.Time{}},
		{"lifetime: minutes in the reason", ready(0, time.Time{}, time.Time{}, broker.SessionLife{Extension: 30 * time.Minute}), life,
			lat(90 * time.Minute), broker.PolicyDelete, broker.PolicyLifetime, lat(90 * time.Minute), false,
			"maximum lifetime of 1h30m", time.Time{}},
		{"lifetime before idle", ready(1, lt0, time.Time{}, broker.SessionLife{}),
			broker.SessionLimits{IdleTimeoutMinutes: 60, MaxLifetimeHours: 1}, lat(time.Hour),
			broker.PolicyDelete, broker.PolicyLifetime, lat(time.Hour), false, "", time.Time{}},
		{"retry defers", ready(0, time.Time{}, time.Time{}, broker.SessionLife{RetryAt: lat(50 * time.Minute)}), life,
			lat(46 * time.Minute), broker.PolicyNone, "", time.Time{}, false, "", lat(50 * time.Minute)},
		{"not READY", &broker.Session{State: broker.StateCreating, CreationTime: lt0}, life, lat(2 * time.Hour),
			broker.PolicyNone, "", time.Time{}, false, "", time.Time{}},
	}
	for _, c := range cases {
		d := broker.EvaluatePolicies(c.sess, c.lim, points, c.now)
		if d.Action != c.action || d.Policy != c.policy || !d.Deadline.Equal(c.deadline) || d.Extendable != c.extendable ||
			!strings.Contains(d.Reason, c.reason) || !d.DueAt.Equal(c.due) {
			t.Errorf("%s: got %v %q deadline %v extendable %v reason %q due %v\nwant %v %q deadline %v extendable %v reason ~%q due %v",
				c.name, d.Action, d.Policy, d.Deadline, d.Extendable, d.Reason, d.DueAt,
				c.action, c.policy, c.deadline, c.extendable, c.reason, c.due)
		}
	}
}

package metrics

import (
	"context"
	"testing"

	"github.com/berth-dev/berth/internal/broker"
)

// TestBroker_PolicyMetrics checks that the broker's metrics get the
// lifetime policies' warnings and actions (broker.PolicyMetrics).
func TestBroker_PolicyMetrics(t *testing.T) {
	b := New(Source{Stats: func(context.Context) (broker.Stats, error) { return broker.Stats{}, nil }}, Options{})
	var pm broker.PolicyMetrics = b
	pm.PolicyWarned(broker.PolicyLifetime)
	pm.PolicyWarned(broker.PolicyLifetime)
	pm.PolicyActed(broker.PolicyIdle, broker.ActionDisconnect)
	s := mustScrape(t, b)
	value := func(fam string, labels map[string]string) float64 {
		for _, m := range s[fam].GetMetric() {
			match := true
			for _, l := range m.GetLabel() {
				if labels[l.GetName()] != l.GetValue() {
					match = false
				}
			}
			if match {
				return m.GetCounter().GetValue()
			}
		}
		t.Fatalf("%s%v: no series", fam, labels)
		return 0
	}
	if v := value("berth_broker_session_policy_warnings_total", map[string]string{"policy": broker.PolicyLifetime}); v != 2 {
		t.Errorf("lifetime warnings = %v, want 2", v)
	}
	if v := value("berth_broker_session_policy_warnings_total", map[string]string{"policy": broker.PolicyIdle}); v != 0 {
		t.Errorf("idle warnings = %v, want 0 (a series from the start)", v)
	}
	if v := value("berth_broker_session_policy_actions_total", map[string]string{"policy": broker.PolicyIdle, "action": broker.ActionDisconnect}); v != 1 {
		t.Errorf("idle disconnections = %v, want 1", v)
	}
	if v := value("berth_broker_session_policy_actions_total", map[string]string{"policy": broker.PolicyDisconnected, "action": broker.ActionDelete}); v != 0 {
		t.Errorf("disconnected deletions = %v, want 0", v)
	}
}

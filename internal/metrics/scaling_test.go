package metrics

import (
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/broker"
)

// TestBroker_CapacityGauges checks the scaling signals' gauges: the
// shortfall and its oldest wait per requirement class, and the idle servers.
func TestBroker_CapacityGauges(t *testing.T) {
	at := time.Date(2026, 3, 1, 9, 30, 0, 0, time.UTC)
	gl := broker.RequirementClass{Type: broker.TypeVirtual, DcvGlEnabled: true}
	plain := broker.RequirementClass{Type: broker.TypeVirtual, Requirements: "server:Hostname = 'a'"}
	capa := broker.Capacity{At: at, Shortfall: []broker.Shortfall{
		{Class: gl, Count: 3, Queued: 2, Refused: 1, OldestSince: at.Add(-90 * time.Second)},
		{Class: plain, Count: 1, Refused: 1, OldestSince: at.Add(-10 * time.Second)},
	}, Idle: []broker.IdleServer{{ServerID: "a"}, {ServerID: "b"}}}
	b := New(Source{Capacity: func() broker.Capacity { return capa }}, Options{})
	s := mustScrape(t, b)
	value := func(fam, class string) float64 {
		t.Helper()
		for _, m := range s[fam].GetMetric() {
			if class == "" && len(m.GetLabel()) == 0 {
				return m.GetGauge().GetValue()
			}
			for _, l := range m.GetLabel() {
				if l.GetName() == "class" && l.GetValue() == class {
					return m.GetGauge().GetValue()
				}
			}
		}
		t.Fatalf("%s{class=%q}: no series", fam, class)
		return 0
	}
	for _, c := range []struct {
		fam, class string
		want       float64
	}{
		{"berth_broker_capacity_shortfall_sessions", gl.ID(), 3},
		{"berth_broker_capacity_shortfall_sessions", plain.ID(), 1},
		{"berth_broker_capacity_shortfall_oldest_wait_seconds", gl.ID(), 90},
		{"berth_broker_capacity_shortfall_oldest_wait_seconds", plain.ID(), 10},
		{"berth_broker_idle_servers", "", 2},
	} {
		if got := value(c.fam, c.class); got != c.want {
			t.Errorf("%s{class=%q} = %v, want %v", c.fam, c.class, got, c.want)
		}
	}
	// A class that cleared has no series.
	capa.Shortfall = capa.Shortfall[:1]
	s = mustScrape(t, b)
	if n := len(s["berth_broker_capacity_shortfall_sessions"].GetMetric()); n != 1 {
		t.Errorf("%d shortfall series after a class cleared, want 1", n)
	}
}

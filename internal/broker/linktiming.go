package broker

import (
	"math"
	"time"
)

// linkTiming is how often agents report and how long a silent one is waited
// for, as the fleet grows. Up to rate × interval servers, agents report
// every interval and a link silent for timeout is lost. Past that, both grow
// in steps of half the base, so that the fleet's updates stay near rate a
// second: the broker's idle load (each update costs a TLS record, a
// WebSocket frame, a decode and a wakeup) then stays bounded whatever the
// fleet size, at the price of a slower verdict on an agent that went silent
// without closing its link (a closed link is seen at once). Nomad's servers
// scale their clients' heartbeat TTL the same way (max_heartbeats_per_second).
//
// Every broker of a cluster computes it from the same server table, so they
// agree on when a server held by another broker is silent.
type linkTiming struct {
	interval, timeout time.Duration
	rate              float64 // updates a second; 0: no cap
}

// at returns the update interval and heartbeat timeout for a fleet of n
// servers.
func (t linkTiming) at(n int) (interval, timeout time.Duration) {
	f := t.factor(n)
	return time.Duration(float64(t.interval) * f), time.Duration(float64(t.timeout) * f)
}

// factor is how many times the base interval the fleet's is: 1, 1.5, 2, ...
func (t linkTiming) factor(n int) float64 {
	if t.rate <= 0 || t.interval <= 0 {
		return 1
	}
	need := float64(n) / t.rate / t.interval.Seconds() // base intervals per update
	if need <= 1 {
		return 1
	}
	return math.Ceil(2*need) / 2
}

// LinkTiming returns the update interval agents are asked for and the
// heartbeat timeout after which a silent agent's link is lost, for the
// fleet as the broker knows it now: Config.HeartbeatTimeout and
// Config.UpdateInterval, stretched when the fleet is larger than
// Config.MaxUpdateRate allows at that interval.
func (s *Service) LinkTiming() (interval, timeout time.Duration) {
	t := s.servers.timing
	if t.timeout == 0 { // a Service not made by New: its config as it is
		t = linkTiming{interval: s.cfg.UpdateInterval, timeout: s.cfg.HeartbeatTimeout, rate: s.cfg.MaxUpdateRate}
	}
	return t.at(int(s.servers.size.Load()))
}

// heartbeatTimeout is LinkTiming's timeout.
func (s *Service) heartbeatTimeout() time.Duration {
	_, t := s.LinkTiming()
	return t
}

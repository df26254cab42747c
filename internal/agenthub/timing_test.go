package agenthub_test

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/agent"
	"github.com/berth-dev/berth/internal/agenthub"
	"github.com/berth-dev/berth/internal/agentproto"
	"github.com/berth-dev/berth/internal/driver/sim"
	"github.com/berth-dev/berth/internal/poll"
)

// fleetTiming is an Options.Timing whose values a test changes, as a
// broker's change when its fleet grows.
type fleetTiming struct{ interval, timeout atomic.Int64 }

func newFleetTiming(interval, timeout time.Duration) *fleetTiming {
	f := &fleetTiming{}
	f.set(interval, timeout)
	return f
}

func (f *fleetTiming) set(interval, timeout time.Duration) {
	f.interval.Store(int64(interval))
	f.timeout.Store(int64(timeout))
}

func (f *fleetTiming) get() (time.Duration, time.Duration) {
	return time.Duration(f.interval.Load()), time.Duration(f.timeout.Load())
}

// TestHub_Retime: the Welcome carries the fleet's timing; once it changes,
// the next ack of a version 5 link carries the new one (once), and the link
// is held to the new timeout. A version 4 link is never retimed.
func TestHub_Retime(t *testing.T) {
	timing := newFleetTiming(100*time.Millisecond, 300*time.Millisecond)
	e := mustStartHub(t, agenthub.Options{UpdateInterval: time.Second, HeartbeatTimeout: 3 * time.Second, Timing: timing.get}, nil)

	for _, tc := range []struct {
		version int
		retimed bool
	}{
		{agentproto.ProtocolVersion, true},
		{4, false},
	} {
		timing.set(100*time.Millisecond, 300*time.Millisecond)
		id := "srv-retime-" + string(rune('0'+tc.version))
		c := e.dial(t)
		h := hello(id)
		h.ProtocolVersion = tc.version
		write(t, c, "", h)
		w, ok := read(t, c).Body.(*agentproto.Welcome)
		if !ok || w.UpdateIntervalMS != 100 || w.HeartbeatTimeoutMS != 300 {
			t.Fatalf("v%d welcome = %+v, want the fleet's timing 100/300 ms", tc.version, w)
		}
		e.svc.wait(t, "connected", id, nil)

		// The fleet grows: the next ack retimes the link.
		timing.set(time.Second, 3*time.Second)
		write(t, c, "u1", &agentproto.Update{Seq: 1})
		ack, ok := read(t, c).Body.(*agentproto.Ack)
		if !ok {
			t.Fatalf("v%d: no ack", tc.version)
		}
		got := ack.UpdateIntervalMS == 1000 && ack.HeartbeatTimeoutMS == 3000
		if got != tc.retimed || (!tc.retimed && (ack.UpdateIntervalMS != 0 || ack.HeartbeatTimeoutMS != 0)) {
			t.Fatalf("v%d ack = %+v, retimed %v", tc.version, ack, tc.retimed)
		}
		if !tc.retimed {
			// The old timeout holds: silence past it ends the link.
			e.svc.wait(t, "disconnected", id, nil)
			continue
		}
		write(t, c, "u2", &agentproto.Update{Seq: 2})
		if ack, ok := read(t, c).Body.(*agentproto.Ack); !ok || ack.UpdateIntervalMS != 0 || ack.HeartbeatTimeoutMS != 0 {
			t.Fatalf("second ack = %+v, want no timing (unchanged)", ack)
		}
		// Silent for twice the old timeout: still linked under the new one.
		time.Sleep(600 * time.Millisecond) //sleep-ok: the agent's silence is the scenario
		if !e.hub.Connected(id) {
			t.Fatal("link closed after 600 ms of silence; the new timeout is 3 s")
		}
		e.svc.none(t, "disconnected", id)
		c.CloseNow()
		e.svc.wait(t, "disconnected", id, nil)
	}
}

// TestHub_AgentFollowsRetime: a real agent without an interval of its own
// reports as often as the broker asks, and slows down when an ack retimes
// its link; one with its own interval keeps it when the broker asks for a
// longer one.
func TestHub_AgentFollowsRetime(t *testing.T) {
	timing := newFleetTiming(100*time.Millisecond, 300*time.Millisecond)
	e := mustStartHub(t, agenthub.Options{Timing: timing.get}, nil)
	var reports, ownReports atomic.Int64
	report := func(n *atomic.Int64) func(context.Context) (agentproto.HostReport, error) {
		return func(context.Context) (agentproto.HostReport, error) {
			n.Add(1)
			return agentproto.HostReport{Hostname: "h", IP: "10.1.2.3", WebURLPath: "/", OS: agentproto.OS{Family: "linux"}}, nil
		}
	}
	e.mustStartAgent(t, "srv-follow", sim.New(), func(a *agent.Agent) {
		a.UpdateInterval = 0
		a.Report = report(&reports)
	})
	e.mustStartAgent(t, "srv-own", sim.New(), func(a *agent.Agent) {
		a.UpdateInterval = 200 * time.Millisecond
		a.Report = report(&ownReports)
	})
	poll.Until(t, 20*time.Second, "both agents linked", func() bool {
		return e.hub.Connected("srv-follow") && e.hub.Connected("srv-own")
	})
	// Every 100 ms: ten reports come soon.
	start := reports.Load()
	poll.Until(t, 20*time.Second, "reports at the fleet's 100 ms", func() bool { return reports.Load()-start >= 10 })

	// The fleet grows to a 2 s interval. The agents ask for an ack at least
	// every half read timeout (200 ms here), whose answer retimes them.
	timing.set(2*time.Second, 6*time.Second)
	poll.Until(t, 20*time.Second, "the retime in the agent's log", func() bool {
		return strings.Contains(e.logs.String(), "broker retimed the link")
	})
	time.Sleep(300 * time.Millisecond) //sleep-ok: a report already under way lands before the count starts
	before, ownBefore := reports.Load(), ownReports.Load()
	time.Sleep(3 * time.Second) //sleep-ok: reports are counted over a fixed window
	// A ticker cannot fire faster than its period: at most two reports in
	// 3 s at 2 s (one more for a tick re-armed at the edge).
	if n := reports.Load() - before; n > 3 {
		t.Errorf("%d reports in 3 s after the retime to 2 s; want at most 3", n)
	}
	// Its own 200 ms is shorter than the 2 s the broker asks: it keeps it.
	if n := ownReports.Load() - ownBefore; n < 5 {
		t.Errorf("agent with its own 200 ms interval made %d reports in 3 s; want it to keep its interval", n)
	}
	if e.hub.Count() != 2 {
		t.Errorf("links = %d, want both still up", e.hub.Count())
	}
}

// TestHub_RetimeHoldsWaitingRead: an update other than a bare heartbeat is
// applied off the read loop, which is already waiting for the next message
// under the old timeout when the ack retimes the link. The waiting read gets
// the new timeout: the agent, told to report less often, may stay silent
// past the old one.
func TestHub_RetimeHoldsWaitingRead(t *testing.T) {
	for _, tc := range []struct {
		name string
		u    *agentproto.Update
	}{
		{"figures", &agentproto.Update{Seq: 1, Figures: &agentproto.HostFigures{MemoryUsedBytes: 1 << 30}}},
		{"host report", &agentproto.Update{Seq: 1, Host: &agentproto.HostReport{Hostname: "raw", OS: agentproto.OS{Family: "linux"}}}},
		{"bare heartbeat", &agentproto.Update{Seq: 1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			timing := newFleetTiming(100*time.Millisecond, 300*time.Millisecond)
			e := mustStartHub(t, agenthub.Options{Timing: timing.get}, nil)
			c := e.dial(t)
			write(t, c, "", hello("srv-wait"))
			read(t, c)
			e.svc.wait(t, "connected", "srv-wait", nil)
			timing.set(time.Second, 3*time.Second)
			write(t, c, "u1", tc.u)
			if ack, ok := read(t, c).Body.(*agentproto.Ack); !ok || ack.HeartbeatTimeoutMS != 3000 {
				t.Fatalf("ack = %+v, want the new timeout", ack)
			}
			time.Sleep(700 * time.Millisecond) //sleep-ok: the agent's silence past the old timeout is the scenario
			if !e.hub.Connected("srv-wait") {
				t.Fatal("link closed 700 ms after the retime; the new timeout is 3 s")
			}
		})
	}
}

package agent_test

import (
	"context"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/agent"
	"github.com/berth-dev/berth/internal/agentmetrics"
	"github.com/berth-dev/berth/internal/agentmetrics/metricstest"
	"github.com/berth-dev/berth/internal/agentproto"
	"github.com/berth-dev/berth/internal/driver/sim"
)

// checkingDriver is the sim driver behind the owner check the real drivers
// make, so that invalid requests reach the agent as they do with vnc and dcv.
type checkingDriver struct{ *sim.Driver }

func (d checkingDriver) Create(ctx context.Context, req agent.CreateRequest) error {
	if err := agent.CheckUserName("Owner", req.Owner); err != nil {
		return err
	}
	return d.Driver.Create(ctx, req)
}

// TestAgent_Metrics drives the agent through a broker link and checks what
// its commands, sessions and link moved in the real Prometheus metrics.
func TestAgent_Metrics(t *testing.T) {
	t.Parallel() // it mostly waits on real time: overlap it with the others that do
	fb := mustStartBroker(t, &fakeBroker{})
	d := sim.New()
	d.CreateDelay = 300 * time.Millisecond
	d.FailOwners = map[string]string{"eve": "user eve is locked"}
	m := agentmetrics.New(agentmetrics.Options{Version: "test", Driver: "sim"})
	mustRunAgent(t, &agent.Agent{BrokerURLs: []string{fb.url}, TLSConfig: fb.tls, Driver: checkingDriver{d}, Metrics: m})
	bc := fb.next(t)
	gather := func() metricstest.Families { return metricstest.Gather(t, m.Registry()) }
	waitMetric(t, m, "berth_agent_broker_connected", 1) // the agent reads the welcome after the broker sent it

	create := func(id, sid, owner string, timeoutMS int64) *agentproto.Result {
		return bc.command(t, id, &agentproto.Command{Kind: agentproto.KindCreate, SessionID: sid, TimeoutMS: timeoutMS,
			Create: &agentproto.CreateCommand{Owner: owner, Type: "VIRTUAL"}})
	}
	if r := create("1", "a", "alice", 0); !r.OK {
		t.Fatalf("create: %+v", r)
	}
	if r := create("2", "b", "first.last", 0); !r.OK {
		t.Fatalf("create: %+v", r)
	}
	if r := create("3", "c", "eve", 0); r.OK {
		t.Fatal("eve's create succeeded")
	}
	if r := create("4", "d", "../root", 0); r.OK {
		t.Fatal("../root's create succeeded")
	}
	if r := create("5", "e", "slow", 100); r.OK { // 300 ms to start, 100 ms allowed
		t.Fatal("slow create succeeded")
	}
	if r := bc.command(t, "6", &agentproto.Command{Kind: agentproto.KindScreenshot, SessionID: "a"}); !r.OK {
		t.Fatalf("screenshot: %+v", r)
	}
	if r := bc.command(t, "7", &agentproto.Command{Kind: agentproto.KindScreenshot, SessionID: "nope"}); r.OK {
		t.Fatal("screenshot of no session succeeded")
	}
	if r := bc.command(t, "8", &agentproto.Command{Kind: agentproto.KindDelete, SessionID: "b"}); !r.OK {
		t.Fatalf("delete: %+v", r)
	}
	// The READY times are taken when the sessions are listed: wait for the
	// listings that follow the creates (the agent pushes updates at once).
	deadline := time.Now().Add(10 * time.Second)
	for {
		fs := gather()
		if n, _ := fs.Value("berth_agent_session_create_to_ready_seconds", "driver", "sim"); n == 2 {
			if v, _ := fs.Value("berth_agent_sessions", "state", "READY"); v == 1 {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("no READY time for the two sessions, or no READY gauge of 1")
		}
		time.Sleep(20 * time.Millisecond)
	}

	fs := gather()
	for _, tt := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"berth_agent_session_starts_total", []string{"driver", "sim"}, 5},
		{"berth_agent_session_start_failures_total", []string{"reason", agent.ReasonDriver}, 1},
		{"berth_agent_session_start_failures_total", []string{"reason", agent.ReasonInvalidRequest}, 1},
		{"berth_agent_session_start_failures_total", []string{"reason", agent.ReasonTimeout}, 1},
		{"berth_agent_session_start_failures_total", []string{"reason", agent.ReasonPanic}, 0},
		{"berth_agent_commands_total", []string{"kind", "create", "result", "ok"}, 2},
		{"berth_agent_commands_total", []string{"kind", "delete", "result", "ok"}, 1},
		{"berth_agent_commands_total", []string{"kind", "screenshot", "result", agent.ReasonDriver}, 1},
		{"berth_agent_screenshot_duration_seconds", []string{"result", "ok"}, 1},
		{"berth_agent_screenshot_duration_seconds", []string{"result", "failed"}, 1},
		{"berth_agent_session_create_to_ready_seconds", nil, 2},
		{"berth_agent_sessions", []string{"state", "READY"}, 1},
		{"berth_agent_broker_reconnects_total", nil, 0},
	} {
		if got := fs.Must(t, tt.name, tt.labels...); got != tt.want {
			t.Errorf("%s%v = %v, want %v", tt.name, tt.labels, got, tt.want)
		}
	}
	if sum, _ := fs.Sum("berth_agent_session_create_to_ready_seconds"); sum < 0.6 || sum > 10 {
		t.Errorf("create-to-READY sum %.3fs for two 300 ms starts", sum)
	}

	// The link drops: connected goes to 0, then back to 1 with a reconnect.
	bc.c.CloseNow()
	bc = fb.next(t)
	waitMetric(t, m, "berth_agent_broker_reconnects_total", 1)
	waitMetric(t, m, "berth_agent_broker_connected", 1)
}

// waitMetric waits until a series has the value want.
func waitMetric(t *testing.T, m *agentmetrics.Metrics, name string, want float64, labels ...string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		v, _ := metricstest.Gather(t, m.Registry()).Value(name, labels...)
		if v == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s%v = %v, want %v", name, labels, v, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

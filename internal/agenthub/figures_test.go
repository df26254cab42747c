package agenthub_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"log/slog"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/agent"
	"github.com/berth-dev/berth/internal/agenthub"
	"github.com/berth-dev/berth/internal/agentproto"
	"github.com/berth-dev/berth/internal/broker"
	"github.com/berth-dev/berth/internal/driver/sim"
	"github.com/berth-dev/berth/internal/poll"
)

// TestHub_Figures: figures sent alone go to AgentFigures, converted, and not
// to AgentUpdate; with changes beside them, both are passed on.
func TestHub_Figures(t *testing.T) {
	e := mustStartHub(t, agenthub.Options{}, nil)
	c := e.dial(t)
	write(t, c, "", hello("srv-fig"))
	read(t, c)
	e.svc.wait(t, "connected", "srv-fig", nil)

	f := &agentproto.HostFigures{Load: agentproto.Load{One: 1.5, Five: 1, Fifteen: 0.5}, MemoryUsedBytes: 3 << 30, SwapUsedBytes: 7}
	if ack := update(t, c, "u1", &agentproto.Update{Seq: 1, Figures: f}); ack.Error != "" || ack.Resync {
		t.Fatalf("ack of figures = %+v", ack)
	}
	update(t, c, "u2", &agentproto.Update{Seq: 2, Figures: f, Changes: []agentproto.Session{ready("a")}})
	update(t, c, "u3", &agentproto.Update{Seq: 3}) // a heartbeat

	// The calls, in order, up to the heartbeat's AgentUpdate.
	var kinds []string
	for len(kinds) == 0 || kinds[len(kinds)-1] != "update" {
		select {
		case ev := <-e.svc.events:
			kinds = append(kinds, ev.kind)
			want := broker.HostFigures{Load1: 1.5, Load5: 1, Load15: 0.5, MemUsed: 3 << 30, SwapUsed: 7}
			if ev.kind == "figures" && ev.figures != want {
				t.Errorf("figures = %+v, want %+v", ev.figures, want)
			}
			if ev.kind == "changes" && (len(ev.sessions) != 1 || ev.sessions[0].ID != "a") {
				t.Errorf("changes beside figures = %+v", ev.sessions)
			}
		case <-time.After(20 * time.Second):
			t.Fatalf("calls so far %v, no AgentUpdate for the heartbeat", kinds)
		}
	}
	if want := []string{"figures", "figures", "changes", "update"}; !slices.Equal(kinds, want) {
		t.Errorf("Service calls = %v, want %v", kinds, want)
	}
}

// TestHub_FiguresReachTheBroker runs a real agent whose load and memory in
// use move against a real broker: DescribeServers shows the new figures,
// the stored record keeps the hello's until a flush, and the rest of the
// report stays as the hello gave it. A version 2 link's whole reports with
// moved figures still reach the cache as before.
func TestHub_FiguresReachTheBroker(t *testing.T) {
	e := mustStartBrokerHub(t)
	var load atomic.Int64 // tenths
	load.Store(5)
	pool := x509.NewCertPool()
	pool.AddCert(e.srv.Certificate())
	a := &agent.Agent{
		BrokerURLs: []string{e.url}, TLSConfig: &tls.Config{RootCAs: pool}, ServerID: "srv-fig", Driver: sim.New(),
		UpdateInterval: 50 * time.Millisecond, Version: "0.0.1-test", Logger: slog.New(slog.DiscardHandler),
		Report: func(ctx context.Context) (agentproto.HostReport, error) {
			l := load.Load()
			return agentproto.HostReport{Hostname: "host-fig", OS: agentproto.OS{Family: "linux"}, Tags: map[string]string{"pool": "p"},
				Memory: agentproto.Memory{TotalBytes: 8 << 30, UsedBytes: l << 20}, Load: agentproto.Load{One: float64(l) / 10}}, nil
		},
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	defer func() { cancel(); <-done }()
	described := func(id string) *broker.ServerView {
		views, _, err := e.svc.DescribeServers(t.Context(), []string{id}, 0, "")
		if err != nil || len(views) != 1 {
			return nil
		}
		return views[0]
	}
	poll.Until(t, 20*time.Second, "the agent linked", func() bool { return described("srv-fig") != nil })
	load.Store(72)
	poll.Until(t, 20*time.Second, "the new load described", func() bool {
		v := described("srv-fig")
		return v.Info.Host.Load1 == 7.2 && v.Info.Host.MemUsed == 72<<20
	})
	v := described("srv-fig")
	if v.Info.Hostname != "host-fig" || v.Info.Tags["pool"] != "p" || v.Info.Host.MemTotal != 8<<30 || v.Availability != broker.Available {
		t.Errorf("described server after figures: %+v, %s", v.Info, v.Availability)
	}
	if s, err := e.st.GetServer(t.Context(), "srv-fig"); err != nil || s.Info.Host.Load1 != 0.5 {
		t.Errorf("stored load before a flush = %v (%v), want the hello's 0.5", s.Info.Host.Load1, err)
	}
	e.svc.FlushHostReports(t.Context())
	if s, err := e.st.GetServer(t.Context(), "srv-fig"); err != nil || s.Info.Host.Load1 != 7.2 {
		t.Errorf("stored load after a flush = %v (%v), want 7.2", s.Info.Host.Load1, err)
	}

	c := e.dial(t)
	h := hello("srv-v2fig")
	h.ProtocolVersion = 2
	write(t, c, "", h)
	read(t, c)
	moved := h.Host
	moved.Load.One = 3
	update(t, c, "u1", &agentproto.Update{Host: &moved})
	if v := described("srv-v2fig"); v == nil || v.Info.Host.Load1 != 3 || v.Info.Hostname != "raw" {
		t.Errorf("version 2 report with a moved load: described %+v", v)
	}
}

// TestHub_UnackedUpdates: updates without an ID get no ack; a gap or a
// failure on one is told with the next ack, as resync, until the full list
// comes.
func TestHub_UnackedUpdates(t *testing.T) {
	e := mustStartHub(t, agenthub.Options{}, nil)
	c := e.dial(t)
	write(t, c, "", hello("srv-quiet"))
	read(t, c)
	e.svc.wait(t, "connected", "srv-quiet", nil)

	write(t, c, "", &agentproto.Update{Seq: 1})
	write(t, c, "", &agentproto.Update{Seq: 3}) // a gap, unacked
	if ack := update(t, c, "u4", &agentproto.Update{Seq: 4}); !ack.Resync {
		t.Fatalf("ack after a gap on an update without ID = %+v, want resync", ack)
	}
	if ack := update(t, c, "u5", &agentproto.Update{Seq: 5, Sessions: []agentproto.Session{}}); ack.Resync {
		t.Fatalf("ack of the full list = %+v, want no resync", ack)
	}
	write(t, c, "", &agentproto.Update{Seq: 6})
	if ack := update(t, c, "u7", &agentproto.Update{Seq: 7}); ack.Resync {
		t.Fatalf("ack in sequence = %+v, want no resync", ack)
	}
}

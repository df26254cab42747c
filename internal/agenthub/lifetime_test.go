package agenthub_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/agenthub"
	"github.com/berth-dev/berth/internal/agentproto"
	"github.com/berth-dev/berth/internal/broker"
)

// TestHub_Dispatch_DisconnectNotify: the broker's disconnect and notify
// commands travel with their notify body to a version 4 agent; an older
// agent is not sent them (its decoder would drop the link) and the
// dispatch fails at once saying why.
func TestHub_Dispatch_DisconnectNotify(t *testing.T) {
	e := mustStartHub(t, agenthub.Options{}, nil)
	deadline := time.Date(2026, 12, 8, 18, 0, 0, 0, time.UTC)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	c := e.dial(t)
	write(t, c, "", hello("srv-v4"))
	read(t, c) // welcome
	e.svc.wait(t, "connected", "srv-v4", nil)
	// answer reads the next command, checks it and answers ok.
	answer := func(check func(*agentproto.Command)) {
		for {
			m := read(t, c)
			if cmd, ok := m.Body.(*agentproto.Command); ok {
				check(cmd)
				write(t, c, m.ID, &agentproto.Result{OK: true})
				return
			}
		}
	}
	for _, tc := range []struct {
		name string
		cmd  broker.Command
		want agentproto.Command
	}{
		{"notify", broker.Command{Kind: broker.CommandNotify, SessionID: "s1", Notify: &broker.NotifyCommand{
			Message: "This session ends in 15 minutes.", Policy: "session-max-lifetime-hours", Deadline: deadline, Extendable: true}},
			agentproto.Command{Kind: agentproto.KindNotify, SessionID: "s1", Notify: &agentproto.NotifyCommand{
				Message: "This session ends in 15 minutes.", Policy: "session-max-lifetime-hours", Deadline: deadline, Extendable: true}}},
		{"disconnect with reason", broker.Command{Kind: broker.CommandDisconnect, SessionID: "s1", Notify: &broker.NotifyCommand{
			Message: "Disconnected after 30 minutes without input", Policy: "session-idle-timeout-minutes"}},
			agentproto.Command{Kind: agentproto.KindDisconnect, SessionID: "s1", Notify: &agentproto.NotifyCommand{
				Message: "Disconnected after 30 minutes without input", Policy: "session-idle-timeout-minutes"}}},
		{"disconnect bare", broker.Command{Kind: broker.CommandDisconnect, SessionID: "s1"},
			agentproto.Command{Kind: agentproto.KindDisconnect, SessionID: "s1"}},
		{"notify too long", broker.Command{Kind: broker.CommandNotify, SessionID: "s1", Notify: &broker.NotifyCommand{Message: strings.Repeat("é", agentproto.MaxNotifyMessage)}},
			agentproto.Command{Kind: agentproto.KindNotify, SessionID: "s1", Notify: &agentproto.NotifyCommand{Message: strings.Repeat("é", agentproto.MaxNotifyMessage/2)}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			done := make(chan error, 1)
			go func() {
				_, err := e.hub.Dispatch(ctx, "srv-v4", tc.cmd)
				done <- err
			}()
			answer(func(got *agentproto.Command) {
				got.TimeoutMS = 0
				if got.Kind != tc.want.Kind || got.SessionID != tc.want.SessionID || (got.Notify == nil) != (tc.want.Notify == nil) ||
					got.Notify != nil && *got.Notify != *tc.want.Notify {
					t.Errorf("agent got %+v (notify %+v), want %+v (notify %+v)", got, got.Notify, tc.want, tc.want.Notify)
				}
			})
			if err := <-done; err != nil {
				t.Errorf("dispatch: %v", err)
			}
		})
	}
	if _, err := e.hub.Dispatch(ctx, "srv-v4", broker.Command{Kind: broker.CommandNotify, SessionID: "s1"}); err == nil {
		t.Error("notify without body accepted")
	}

	// A version 3 agent gets neither.
	old := e.dial(t)
	h := hello("srv-v3")
	h.ProtocolVersion = 3
	write(t, old, "", h)
	read(t, old)
	e.svc.wait(t, "connected", "srv-v3", nil)
	for _, kind := range []string{broker.CommandDisconnect, broker.CommandNotify} {
		_, err := e.hub.Dispatch(ctx, "srv-v3", broker.Command{Kind: kind, SessionID: "s1", Notify: &broker.NotifyCommand{Message: "m"}})
		var ce *broker.CommandError
		if !errors.As(err, &ce) || !strings.Contains(ce.Reason, "upgrade the agent") {
			t.Errorf("%s to a version 3 agent: %v", kind, err)
		}
	}
}

// TestHub_ActivityReported: a session's last input time and owner groups
// reach the broker core.
func TestHub_ActivityReported(t *testing.T) {
	e := mustStartHub(t, agenthub.Options{}, nil)
	c := e.dial(t)
	at := time.Date(2026, 12, 8, 17, 0, 30, 0, time.UTC)
	h := hello("srv-act")
	s := ready("a")
	s.LastInputTime, s.OwnerGroups = at, []string{"u", "gpu"}
	h.Sessions = []agentproto.Session{s}
	write(t, c, "", h)
	read(t, c)
	e.svc.wait(t, "connected", "srv-act", func(ev event) bool {
		return len(ev.sessions) == 1 && ev.sessions[0].LastInputTime.Equal(at) && slices.Equal(ev.sessions[0].OwnerGroups, []string{"u", "gpu"})
	})
	s.LastInputTime = at.Add(30 * time.Second)
	update(t, c, "u1", &agentproto.Update{Seq: 1, Changes: []agentproto.Session{s}})
	e.svc.wait(t, "changes", "srv-act", func(ev event) bool {
		return len(ev.sessions) == 1 && ev.sessions[0].LastInputTime.Equal(at.Add(30*time.Second))
	})
}

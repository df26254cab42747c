package agent_test

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/agent"
	"github.com/berth-dev/berth/internal/agentextend"
	"github.com/berth-dev/berth/internal/agentproto"
	"github.com/berth-dev/berth/internal/broker"
	"github.com/berth-dev/berth/internal/driver/sim"
)

// clientDriver is a sim driver that can disconnect and notify clients,
// recording what it was asked.
type clientDriver struct {
	*sim.Driver
	mu          sync.Mutex
	disconnects []string // "id: message"
	notices     []agent.Notice
}

func (d *clientDriver) Disconnect(_ context.Context, id string, reason agent.Notice) error {
	if id == "gone" {
		return errors.New("session not found")
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	d.disconnects = append(d.disconnects, id+": "+reason.Message)
	return nil
}

func (d *clientDriver) NotifyUsers(_ context.Context, id string, n agent.Notice) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.notices = append(d.notices, n)
	return nil
}

// TestAgent_Commands_DisconnectNotify: disconnect and notify reach a
// driver that has the capabilities, with the notify body; a driver
// without them answers a clear failure, and the link stays up.
func TestAgent_Commands_DisconnectNotify(t *testing.T) {
	deadline := time.Date(2026, 12, 8, 18, 0, 0, 0, time.UTC)
	notify := &agentproto.NotifyCommand{Message: "This session ends in 15 minutes.", Policy: "session-max-lifetime-hours", Deadline: deadline, Extendable: true}
	t.Run("capable", func(t *testing.T) {
		fb := mustStartBroker(t, &fakeBroker{})
		d := &clientDriver{Driver: sim.New()}
		mustRunAgent(t, &agent.Agent{BrokerURLs: []string{fb.url}, TLSConfig: fb.tls, Driver: d})
		bc := fb.next(t)
		r := bc.command(t, "1", &agentproto.Command{Kind: agentproto.KindNotify, SessionID: "a", Notify: notify})
		if !r.OK {
			t.Fatalf("notify: %+v", r)
		}
		r = bc.command(t, "2", &agentproto.Command{Kind: agentproto.KindDisconnect, SessionID: "a", Notify: &agentproto.NotifyCommand{Message: "Disconnected after 30 minutes without input"}})
		if !r.OK {
			t.Fatalf("disconnect: %+v", r)
		}
		r = bc.command(t, "3", &agentproto.Command{Kind: agentproto.KindDisconnect, SessionID: "b"})
		if !r.OK {
			t.Fatalf("disconnect without reason: %+v", r)
		}
		r = bc.command(t, "4", &agentproto.Command{Kind: agentproto.KindDisconnect, SessionID: "gone"})
		if r.OK || r.Error != "session not found" {
			t.Errorf("disconnect of a missing session: %+v", r)
		}
		d.mu.Lock()
		defer d.mu.Unlock()
		want := agent.Notice{Message: notify.Message, Policy: notify.Policy, Deadline: deadline, Extendable: true}
		if len(d.notices) != 1 || d.notices[0] != want {
			t.Errorf("notices %+v, want [%+v]", d.notices, want)
		}
		if got := strings.Join(d.disconnects, "|"); got != "a: Disconnected after 30 minutes without input|b: " {
			t.Errorf("disconnects %q", got)
		}
	})
	t.Run("incapable", func(t *testing.T) {
		fb := mustStartBroker(t, &fakeBroker{})
		mustRunAgent(t, &agent.Agent{BrokerURLs: []string{fb.url}, TLSConfig: fb.tls, Driver: sim.New()})
		bc := fb.next(t)
		r := bc.command(t, "1", &agentproto.Command{Kind: agentproto.KindNotify, SessionID: "a", Notify: notify})
		if r.OK || r.Error != "driver sim cannot notify users" {
			t.Errorf("notify: %+v", r)
		}
		r = bc.command(t, "2", &agentproto.Command{Kind: agentproto.KindDisconnect, SessionID: "a"})
		if r.OK || r.Error != "driver sim cannot disconnect clients" {
			t.Errorf("disconnect: %+v", r)
		}
		r = bc.command(t, "3", &agentproto.Command{Kind: agentproto.KindDelete, SessionID: "a"})
		if !r.OK {
			t.Errorf("the link did not survive: %+v", r)
		}
	})
}

// TestAgent_Sessions_ActivityChanges: a change of a session's
// LastInputTime or OwnerGroups alone is reported as a change.
func TestAgent_Sessions_ActivityChanges(t *testing.T) {
	fb := mustStartBroker(t, &fakeBroker{})
	d := &activityDriver{Driver: sim.New()}
	d.Create(context.Background(), agent.CreateRequest{ID: "a", Owner: "alice"})
	mustRunAgent(t, &agent.Agent{BrokerURLs: []string{fb.url}, TLSConfig: fb.tls, Driver: d, UpdateInterval: time.Hour})
	bc := fb.next(t)
	at := time.Date(2026, 12, 8, 17, 0, 30, 0, time.UTC)
	changes := func() []agentproto.Session {
		for {
			if _, u := bc.nextUpdate(t); len(u.Changes) > 0 {
				return u.Changes
			}
		}
	}
	d.set(at, nil)
	if c := changes(); len(c) != 1 || !c[0].LastInputTime.Equal(at) {
		t.Fatalf("changes %+v, want a with last input %v", c, at)
	}
	d.set(at, []string{"alice", "gpu"})
	if c := changes(); len(c) != 1 || strings.Join(c[0].OwnerGroups, ",") != "alice,gpu" {
		t.Fatalf("changes %+v, want a with groups alice,gpu", c)
	}
}

// activityDriver is a sim driver whose sessions report a set
// LastInputTime and OwnerGroups, telling the agent on each set.
type activityDriver struct {
	*sim.Driver
	mu     sync.Mutex
	input  time.Time
	groups []string
	notify func()
}

func (d *activityDriver) set(at time.Time, groups []string) {
	d.mu.Lock()
	d.input, d.groups = at, groups
	f := d.notify
	d.mu.Unlock()
	if f != nil {
		f()
	}
}

func (d *activityDriver) Notify(f func()) {
	d.mu.Lock()
	d.notify = f
	d.mu.Unlock()
}

func (d *activityDriver) Sessions(ctx context.Context) ([]agentproto.Session, error) {
	list, err := d.Driver.Sessions(ctx)
	d.mu.Lock()
	defer d.mu.Unlock()
	for i := range list {
		list[i].LastInputTime, list[i].OwnerGroups = d.input, d.groups
	}
	return list, err
}

// extendAuth authenticates the fake broker's registered agent clients.
type extendAuth struct{ fb *fakeBroker }

func (a extendAuth) AuthenticateAgent(_ context.Context, id, secret string) (string, error) {
	a.fb.mu.Lock()
	defer a.fb.mu.Unlock()
	if s, ok := a.fb.clients[id]; ok && s == secret {
		return id, nil
	}
	return "", errors.New("bad credentials")
}

// extendSessions places session s1 on a server of agent-1 (the fake
// broker's first registered client) and s2 on another agent's.
type extendSessions struct{}

func (extendSessions) SessionForConnection(_ context.Context, id string) (*broker.SessionView, error) {
	switch id {
	case "s1":
		return &broker.SessionView{Server: &broker.Server{AgentClientID: "agent-1"}}, nil
	case "s2":
		return &broker.SessionView{Server: &broker.Server{AgentClientID: "agent-9"}}, nil
	}
	return nil, broker.Errorf(broker.CodeNotFound, "no session %q", id)
}

// extendBroker extends s1 by the asked time from a fixed deadline, for its
// owner alice, up to 3 h in all.
type extendBroker struct {
	mu  sync.Mutex
	got []broker.ExtendRequest
}

var extendBase = time.Date(2026, 12, 8, 18, 0, 0, 0, time.UTC)

func (b *extendBroker) ExtendSession(_ context.Context, r broker.ExtendRequest) (time.Time, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.got = append(b.got, r)
	if r.Owner != "alice" {
		return time.Time{}, broker.Errorf(broker.CodeForbidden, "only the session's owner may extend it")
	}
	by := r.By
	if by == 0 {
		by = time.Hour
	}
	if by > 3*time.Hour {
		return time.Time{}, broker.Errorf(broker.CodeInvalidInput, "session-max-extension-hours: 3h remain")
	}
	return extendBase.Add(by), nil
}

// TestAgent_ExtendSession: the agent asks the broker's real extension
// handler with its client credentials; the broker's refusals come back
// as *agent.ExtendError with the broker's status and message.
func TestAgent_ExtendSession(t *testing.T) {
	eb := &extendBroker{}
	fb := &fakeBroker{statement: "stmt", auth: true}
	fb.extend = &agentextend.Handler{Auth: extendAuth{fb}, Sessions: extendSessions{}, Extender: eb}
	mustStartBroker(t, fb)
	a := &agent.Agent{BrokerURLs: []string{fb.url}, TLSConfig: fb.tls, ServerID: "srv-1", StateDir: t.TempDir(), SoftwareStatement: "stmt", Driver: sim.New()}
	mustRunAgent(t, a)
	fb.next(t) // linked, with credentials

	ctx := context.Background()
	got, err := a.ExtendSession(ctx, "s1", "alice", 0)
	if err != nil || !got.Equal(extendBase.Add(time.Hour)) {
		t.Errorf("default extension: %v, %v", got, err)
	}
	got, err = a.ExtendSession(ctx, "s1", "alice", 2*time.Hour)
	if err != nil || !got.Equal(extendBase.Add(2*time.Hour)) {
		t.Errorf("2h extension: %v, %v", got, err)
	}
	for _, tc := range []struct {
		id, user string
		by       time.Duration
		status   int
		want     string
	}{
		{"s1", "mallory", 0, http.StatusForbidden, "owner"},
		{"s1", "alice", 5 * time.Hour, http.StatusBadRequest, "session-max-extension-hours"},
		{"s2", "alice", 0, http.StatusNotFound, "not a session of this agent"},
		{"s1", "alice", -time.Hour, http.StatusBadRequest, "by: must not be negative"},
	} {
		_, err := a.ExtendSession(ctx, tc.id, tc.user, tc.by)
		var ee *agent.ExtendError
		if !errors.As(err, &ee) || ee.Status != tc.status || !strings.Contains(ee.Message, tc.want) {
			t.Errorf("%s by %s for %s: %v, want %d %q", tc.id, tc.by, tc.user, err, tc.status, tc.want)
		}
	}
	eb.mu.Lock()
	defer eb.mu.Unlock()
	if len(eb.got) != 4 || eb.got[0] != (broker.ExtendRequest{SessionID: "s1", Actor: "page:alice", Owner: "alice"}) {
		t.Errorf("broker got %+v", eb.got)
	}
}

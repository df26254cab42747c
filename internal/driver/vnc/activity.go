package vnc

import (
	"context"
	"time"

	"github.com/jezek/xgb/screensaver"
	"github.com/jezek/xgb/xproto"

	"github.com/berth-dev/berth/internal/agent"
	"github.com/berth-dev/berth/internal/agentproto"
	"github.com/berth-dev/berth/internal/gateway"
	"github.com/berth-dev/berth/internal/logattr"
)

// Activity: the driver knows a session's last keyboard or pointer input from
// two sources. The web gateway tells it of client input it forwards and of
// new client connections (InputSeen); the X server's idle time
// (MIT-SCREEN-SAVER's ms-since-user-input, read once per activity interval)
// catches input from anywhere else, such as xdotool inside the session or
// another VNC viewer. What the agent reports as LastInputTime changes at most
// once per interval, so that typing causes no message per keystroke.

// DefaultActivityInterval is Config.ActivityInterval when it is zero.
const DefaultActivityInterval = 30 * time.Second

// idleQueryTimeout bounds one session's X idle query.
const idleQueryTimeout = 5 * time.Second

// xJitter is how much later than the known last input an X-derived time
// must be to count: now minus the idle time moves by a few milliseconds
// between two reads without any input.
const xJitter = time.Second

// Interface guards.
var (
	_ agent.Disconnecter    = (*Driver)(nil)
	_ agent.UserNotifier    = (*Driver)(nil)
	_ gateway.InputObserver = (*Driver)(nil)
	_ gateway.Attacher      = (*Driver)(nil)
)

// activityInterval is the configured interval or the default.
func (d *Driver) activityInterval() time.Duration {
	if d.cfg.ActivityInterval > 0 {
		return d.cfg.ActivityInterval
	}
	return DefaultActivityInterval
}

// now is the driver's clock for the activity interval.
func (d *Driver) now() time.Time {
	if d.cfg.Now != nil {
		return d.cfg.Now()
	}
	return time.Now()
}

// InputSeen implements gateway.InputObserver: a client's keyboard or
// pointer input, or a new client connection, at at. It only records the
// time; PollActivity reports it.
func (d *Driver) InputSeen(id string, at time.Time) {
	d.mu.Lock()
	if s, ok := d.sessions[id]; ok && at.After(s.input) {
		s.input = at
	}
	d.mu.Unlock()
}

// activityLoop polls the sessions' activity once per interval until Close.
func (d *Driver) activityLoop() {
	t := time.NewTicker(d.activityInterval())
	defer t.Stop()
	for {
		select {
		case <-d.ctx.Done():
			return
		case <-t.C:
			d.PollActivity(d.ctx)
		}
	}
}

// PollActivity reads the X server's idle time of every READY session, and
// moves a session's reported LastInputTime to the latest input it knows
// of, if the reported value has not changed within the activity interval.
// It tells the agent when a reported value changed. The driver runs it
// once per interval; tests call it directly.
func (d *Driver) PollActivity(ctx context.Context) {
	type target struct {
		id  string
		rec record
	}
	d.mu.Lock()
	var ts []target
	for id, s := range d.sessions {
		if !s.deleting && s.state == agentproto.StateReady {
			ts = append(ts, target{id, s.rec})
		}
	}
	d.mu.Unlock()
	seen := make(map[string]time.Time, len(ts))
	for _, t := range ts {
		at, err := xLastInput(ctx, &t.rec)
		if err != nil {
			d.log.Debug("cannot read the session's X idle time", logattr.SessionID, t.id, "err", err)
			continue
		}
		seen[t.id] = at
	}
	now, every := d.now(), d.activityInterval()
	changed := false
	d.mu.Lock()
	for id, s := range d.sessions {
		if at, ok := seen[id]; ok && at.Sub(s.input) > xJitter {
			s.input = at
		}
		if !s.input.After(s.reportedInput) || !s.reportedAt.IsZero() && now.Sub(s.reportedAt) < every {
			continue
		}
		next := s.input.UTC().Truncate(time.Second)
		if next.After(s.reportedInput) {
			s.reportedInput, s.reportedAt = next, now
			changed = true
		}
	}
	d.mu.Unlock()
	if changed {
		d.changed("")
	}
}

// xLastInput returns the time of the last user input the session's X server
// saw: now less its MIT-SCREEN-SAVER idle time.
func xLastInput(ctx context.Context, rec *record) (time.Time, error) {
	cookie, err := rec.xCookie()
	if err != nil {
		return time.Time{}, err
	}
	pid := rec.ServerPID
	if isConsole(rec) {
		pid = 0 // the console's X server is not ours
	}
	c, err := xConnect(ctx, rec.Display, cookie, pid, time.Now().Add(idleQueryTimeout))
	if err != nil {
		return time.Time{}, err
	}
	defer c.Close()
	if err := screensaver.Init(c); err != nil {
		return time.Time{}, err
	}
	root := xproto.Setup(c).DefaultScreen(c).Root
	r, err := screensaver.QueryInfo(c, xproto.Drawable(root)).Reply()
	if err != nil {
		return time.Time{}, err
	}
	return time.Now().Add(-time.Duration(r.MsSinceUserInput) * time.Millisecond), nil
}

// Attach implements gateway.Attacher: the gateway that bridges this
// driver's sessions registers to receive disconnect and notify commands.
func (d *Driver) Attach(c gateway.Clients) (detach func()) {
	d.mu.Lock()
	n := d.nextWatch
	d.nextWatch++
	d.clients[n] = c
	d.mu.Unlock()
	return func() {
		d.mu.Lock()
		delete(d.clients, n)
		d.mu.Unlock()
	}
}

// attached returns the gateways attached, and whether id is a live session.
func (d *Driver) attached(id string) ([]gateway.Clients, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	s, ok := d.sessions[id]
	if !ok || s.deleting {
		return nil, false
	}
	out := make([]gateway.Clients, 0, len(d.clients))
	for _, c := range d.clients {
		out = append(out, c)
	}
	return out, true
}

// Disconnect implements agent.Disconnecter: every gateway client of the
// session is disconnected, its page told why (reason.Message) and kept from
// reconnecting by itself. The session keeps running.
func (d *Driver) Disconnect(ctx context.Context, id string, reason agent.Notice) error {
	cs, ok := d.attached(id)
	if !ok {
		return ErrNotFound
	}
	n := 0
	for _, c := range cs {
		n += c.Disconnect(id, gatewayNotice(reason))
	}
	d.log.Info("disconnected the session's clients", logattr.SessionID, id, "clients", n, "policy", reason.Policy)
	return nil
}

// NotifyUsers implements agent.UserNotifier: every page of the session
// shows the notice (the gateway keeps it for pages that connect later,
// until its deadline).
func (d *Driver) NotifyUsers(ctx context.Context, id string, n agent.Notice) error {
	cs, ok := d.attached(id)
	if !ok {
		return ErrNotFound
	}
	for _, c := range cs {
		c.Notify(id, gatewayNotice(n))
	}
	return nil
}

func gatewayNotice(n agent.Notice) gateway.Notice {
	return gateway.Notice{Message: n.Message, Policy: n.Policy, Deadline: n.Deadline, Extendable: n.Extendable}
}

package agent

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/berth-dev/berth/internal/agentproto"
	"github.com/berth-dev/berth/internal/logattr"
)

// startCommand runs a broker command in its own goroutine, bounded by
// MaxConcurrentCommands. The command outlives a failing link (a session being
// created keeps starting) and is cancelled only by its deadline or by Run's end;
// its result goes back on the link it came from, if that still stands.
func (r *runner) startCommand(l *link, id string, c *agentproto.Command) {
	arrived := time.Now()
	select {
	case r.cmdSem <- struct{}{}:
	default:
		r.metrics.CommandDone(c.Kind, 0, ReasonBusy)
		l.sendResult(id, &agentproto.Result{Error: "agent busy"})
		return
	}
	r.cmds.Add(1)
	go func() {
		defer r.cmds.Done()
		defer func() { <-r.cmdSem }()
		res, reason := r.execute(r.ctx, c)
		took := time.Since(arrived)
		r.metrics.CommandDone(c.Kind, took, reason)
		log := l.log.With("kind", c.Kind, logattr.SessionID, c.SessionID, "duration", took)
		if res.OK {
			log.Debug("command done")
		} else {
			log.Info("command failed", "reason", res.Error)
		}
		if c.Kind == agentproto.KindCreate && res.OK {
			r.ready.created(c.SessionID, arrived)
		}
		l.sendResult(id, res)
		if c.Kind == agentproto.KindCreate || c.Kind == agentproto.KindDelete {
			r.notify() // for drivers without Notifier
		}
	}()
}

// execute runs one command on the driver within its deadline. reason is ""
// for a success, else the Reason* of the failure.
func (r *runner) execute(ctx context.Context, c *agentproto.Command) (res *agentproto.Result, reason string) {
	timeout := c.Timeout()
	if timeout <= 0 {
		timeout = DefaultCommandTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	defer func() {
		if p := recover(); p != nil {
			r.log.Error("driver panicked", "kind", c.Kind, logattr.SessionID, c.SessionID, "panic", p, "stack", string(debug.Stack()))
			res, reason = &agentproto.Result{Error: "internal agent error"}, ReasonPanic
		}
	}()
	d := r.a.Driver
	var err error
	switch c.Kind {
	case agentproto.KindCreate:
		cr := c.Create
		err = d.Create(ctx, CreateRequest{
			ID:                   c.SessionID,
			Name:                 cr.Name,
			Owner:                cr.Owner,
			Type:                 cr.Type,
			MaxConcurrentClients: cr.MaxConcurrentClients,
			StorageRoot:          cr.StorageRoot,
			DcvGlEnabled:         cr.DcvGlEnabled,
			InitFile:             cr.InitFile,
			AutorunFile:          cr.AutorunFile,
			AutorunFileArguments: cr.AutorunFileArguments,
			PermissionsFile:      cr.PermissionsFile,
		})
	case agentproto.KindDelete:
		err = d.Delete(ctx, c.SessionID)
	case agentproto.KindPermissions:
		ps, ok := d.(PermissionSetter)
		if !ok {
			return &agentproto.Result{Error: fmt.Sprintf("driver %s cannot change permissions", d.Name())}, ReasonUnsupported
		}
		err = ps.SetPermissions(ctx, c.SessionID, c.Permissions.File)
	case agentproto.KindScreenshot:
		ss, ok := d.(Screenshotter)
		if !ok {
			return &agentproto.Result{Error: fmt.Sprintf("driver %s cannot take screenshots", d.Name())}, ReasonUnsupported
		}
		var w, h int
		format := agentproto.FormatPNG
		if s := c.Screenshot; s != nil {
			w, h = s.MaxWidth, s.MaxHeight
			if s.Format != "" {
				format = s.Format
			}
		}
		var images []agentproto.Image
		images, err = ss.Screenshot(ctx, c.SessionID, w, h, format)
		if err == nil {
			return &agentproto.Result{OK: true, Images: images}, ""
		}
	case agentproto.KindDisconnect:
		dc, ok := d.(Disconnecter)
		if !ok {
			return &agentproto.Result{Error: fmt.Sprintf("driver %s cannot disconnect clients", d.Name())}, ReasonUnsupported
		}
		err = dc.Disconnect(ctx, c.SessionID, notice(c.Notify))
	case agentproto.KindNotify:
		un, ok := d.(UserNotifier)
		if !ok {
			return &agentproto.Result{Error: fmt.Sprintf("driver %s cannot notify users", d.Name())}, ReasonUnsupported
		}
		err = un.NotifyUsers(ctx, c.SessionID, notice(c.Notify))
	default: // Decode lets only known kinds through
		return &agentproto.Result{Error: fmt.Sprintf("unknown command kind %q", c.Kind)}, ReasonInvalidRequest
	}
	if err != nil {
		reason = failureReason(ctx, err)
		timedOut := errors.Is(ctx.Err(), context.DeadlineExceeded)
		if timedOut && !strings.Contains(err.Error(), "deadline") {
			err = fmt.Errorf("timed out after %s: %w", timeout, err)
		}
		return &agentproto.Result{Error: err.Error(), Timeout: timedOut}, reason
	}
	return &agentproto.Result{OK: true}, ""
}

// notice converts a command's notify body; nil gives an empty Notice.
func notice(n *agentproto.NotifyCommand) Notice {
	if n == nil {
		return Notice{}
	}
	return Notice{Message: n.Message, Policy: n.Policy, Deadline: n.Deadline, Extendable: n.Extendable}
}

// hostReport builds the host report: the Report func's, completed with the
// agent's version, the driver's name and its health.
func (r *runner) hostReport(ctx context.Context) (agentproto.HostReport, error) {
	var h agentproto.HostReport
	if r.a.Report != nil {
		var err error
		if h, err = r.a.Report(ctx); err != nil {
			return h, err
		}
	} else {
		h.Hostname, _ = os.Hostname()
	}
	if h.AgentVersion == "" {
		h.AgentVersion = r.a.Version
	}
	if h.Driver == "" {
		h.Driver = r.a.Driver.Name()
	}
	r.applyHealth(ctx, &h)
	return h, nil
}

// applyHealth sets the report's health from the driver.
func (r *runner) applyHealth(ctx context.Context, h *agentproto.HostReport) {
	h.Healthy, h.HealthReason = true, ""
	if hc, ok := r.a.Driver.(HealthChecker); ok {
		h.Healthy, h.HealthReason = hc.Health(ctx)
		if h.Healthy {
			h.HealthReason = ""
		}
	}
}

// sessions lists the driver's sessions in ID order, never nil, leaving out any
// with an ID the protocol cannot carry. It runs for every update, over every
// session of the host: it filters the driver's list in place and sorts it
// only if the driver did not list it in order already (sim does).
func (r *runner) sessions(ctx context.Context) ([]agentproto.Session, error) {
	listed := time.Now()
	list, err := r.a.Driver.Sessions(ctx)
	if err != nil {
		return nil, err
	}
	r.ready.listed(list, listed, r.metrics)
	var creating, ready, deleted int
	var other map[string]int // states a driver should not report
	for i := range list {
		switch st := list[i].State; st {
		case agentproto.StateCreating:
			creating++
		case agentproto.StateReady:
			ready++
		case agentproto.StateDeleted:
			deleted++
		default:
			if other == nil {
				other = make(map[string]int)
			}
			other[st]++
		}
	}
	counts := map[string]int{agentproto.StateCreating: creating, agentproto.StateReady: ready, agentproto.StateDeleted: deleted}
	for st, n := range other {
		counts[st] = n
	}
	r.metrics.SessionStates(counts)
	out := list[:0] // the driver's list is ours
	for _, s := range list {
		if !reportableID(s.ID) {
			r.log.Warn("driver reports a session with an invalid id; not reporting it", logattr.SessionID, fmt.Sprintf("%.64q", s.ID))
			continue
		}
		out = append(out, s)
	}
	clear(list[len(out):])
	if out == nil {
		out = []agentproto.Session{}
	}
	byID := func(a, b agentproto.Session) int { return strings.Compare(a.ID, b.ID) }
	if !slices.IsSortedFunc(out, byID) {
		slices.SortFunc(out, byID)
	}
	return out, nil
}

// reportableID is agentproto.ValidID, with a fast path for the plain ASCII
// IDs that drivers use (it runs for every session of every update).
func reportableID(id string) bool {
	if id == "" || len(id) > agentproto.MaxIDLength {
		return false
	}
	for i := 0; i < len(id); i++ {
		if c := id[i]; c < 0x20 || c >= 0x7f {
			return agentproto.ValidID(id) // control or non-ASCII: the full rule
		}
	}
	return true
}

// readyClock measures the time from a create command's arrival to the first
// listing of its session as READY, for Metrics.SessionReady.
type readyClock struct {
	mu      sync.Mutex
	pending map[string]pendingCreate // by session ID
}

// pendingCreate is a session created but not yet listed READY.
type pendingCreate struct {
	arrived time.Time // the create command's arrival
	created time.Time // when Create returned
}

// maxPendingAge drops sessions never listed READY (no link for an hour, or a
// driver that never reports READY).
const maxPendingAge = time.Hour

// created records a session whose Create succeeded.
func (c *readyClock) created(id string, arrived time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.pending == nil {
		c.pending = make(map[string]pendingCreate)
	}
	c.pending[id] = pendingCreate{arrived: arrived, created: time.Now()}
}

// listed records a listing of the driver's sessions taken at listedAt: each
// pending session listed READY is measured; one missing from a listing taken
// after its Create returned has gone.
func (c *readyClock) listed(list []agentproto.Session, listedAt time.Time, m Metrics) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.pending) == 0 {
		return
	}
	seen := make(map[string]bool, len(c.pending))
	for _, s := range list {
		p, ok := c.pending[s.ID]
		if !ok {
			continue
		}
		seen[s.ID] = true
		if s.State == agentproto.StateReady {
			m.SessionReady(time.Since(p.arrived))
			delete(c.pending, s.ID)
		}
	}
	for id, p := range c.pending {
		if !seen[id] && p.created.Before(listedAt) || time.Since(p.created) > maxPendingAge {
			delete(c.pending, id)
		}
	}
}

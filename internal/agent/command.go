package agent

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime/debug"
	"slices"
	"strings"
	"time"

	"github.com/berth-dev/berth/internal/agentproto"
)

// startCommand runs a broker command in its own goroutine, bounded by
// MaxConcurrentCommands. The command outlives a failing link (a session being
// created keeps starting) and is cancelled only by its deadline or by Run's end;
// its result goes back on the link it came from, if that still stands.
func (r *runner) startCommand(l *link, id string, c *agentproto.Command) {
	select {
	case r.cmdSem <- struct{}{}:
	default:
		l.sendResult(id, &agentproto.Result{Error: "agent busy"})
		return
	}
	r.cmds.Add(1)
	go func() {
		defer r.cmds.Done()
		defer func() { <-r.cmdSem }()
		start := time.Now()
		res := r.execute(r.ctx, c)
		log := l.log.With("kind", c.Kind, "session_id", c.SessionID, "duration", time.Since(start))
		if res.OK {
			log.Debug("command done")
		} else {
			log.Info("command failed", "reason", res.Error)
		}
		l.sendResult(id, res)
		if c.Kind == agentproto.KindCreate || c.Kind == agentproto.KindDelete {
			r.notify() // for drivers without Notifier
		}
	}()
}

// execute runs one command on the driver within its deadline.
func (r *runner) execute(ctx context.Context, c *agentproto.Command) (res *agentproto.Result) {
	timeout := c.Timeout()
	if timeout <= 0 {
		timeout = DefaultCommandTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	defer func() {
		if p := recover(); p != nil {
			r.log.Error("driver panicked", "kind", c.Kind, "session_id", c.SessionID, "panic", p, "stack", string(debug.Stack()))
			res = &agentproto.Result{Error: "internal agent error"}
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
			return &agentproto.Result{Error: fmt.Sprintf("driver %s cannot change permissions", d.Name())}
		}
		err = ps.SetPermissions(ctx, c.SessionID, c.Permissions.File)
	case agentproto.KindScreenshot:
		ss, ok := d.(Screenshotter)
		if !ok {
			return &agentproto.Result{Error: fmt.Sprintf("driver %s cannot take screenshots", d.Name())}
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
			return &agentproto.Result{OK: true, Images: images}
		}
	default: // Decode lets only known kinds through
		return &agentproto.Result{Error: fmt.Sprintf("unknown command kind %q", c.Kind)}
	}
	if err != nil {
		if errors.Is(ctx.Err(), context.DeadlineExceeded) && !strings.Contains(err.Error(), "deadline") {
			err = fmt.Errorf("timed out after %s: %w", timeout, err)
		}
		return &agentproto.Result{Error: err.Error()}
	}
	return &agentproto.Result{OK: true}
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
// with an ID the protocol cannot carry.
func (r *runner) sessions(ctx context.Context) ([]agentproto.Session, error) {
	list, err := r.a.Driver.Sessions(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]agentproto.Session, 0, len(list))
	for _, s := range list {
		if !agentproto.ValidID(s.ID) {
			r.log.Warn("driver reports a session with an invalid id; not reporting it", "session_id", fmt.Sprintf("%.64q", s.ID))
			continue
		}
		out = append(out, s)
	}
	slices.SortFunc(out, func(a, b agentproto.Session) int { return strings.Compare(a.ID, b.ID) })
	return out, nil
}

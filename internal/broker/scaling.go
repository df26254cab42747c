package broker

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/berth-dev/berth/internal/placement"
	"github.com/berth-dev/berth/internal/requirements"
)

// Scaling signals (docs/autoscaling.md): what an autoscaler needs to add
// servers when requests ask for capacity that no open server offers, and to
// remove servers that nobody uses. The broker only observes: nothing here
// changes a placement decision.
//
// Each check (every ScalingConfig.Interval, and when Capacity finds the last
// one too old) reads the create queue (one store read; one more for the
// quotas' use when quotas apply) and places it, on a
// copy of the servers' figures, with the pure placement package: the queued
// requests that fit nowhere (and that no quota holds back: more servers would
// not help those) make the queued part of the shortfall. The refused part
// comes from the creates this broker refused for want of a server within
// ScalingConfig.RefusedWindow, kept in memory. Both are grouped by requirement
// class. The leader broker emits a scaling.shortfall event for each class
// whose count changed (0 when it cleared) and a server.idle event once per
// idle period of an open server without sessions.

// ScalingConfig tunes the scaling signals. Zero values take the defaults noted.
type ScalingConfig struct {
	// Interval is the period of the check (default 30s).
	// scaling-interval-seconds.
	Interval time.Duration
	// IdleAfter is how long an open server has had no session before it is
	// reported idle (default 30m). scaling-idle-server-minutes.
	IdleAfter time.Duration
	// RefusedWindow is how long a create refused for want of a server
	// counts in the shortfall (default 5m).
	RefusedWindow time.Duration
}

func (c *ScalingConfig) setDefaults() {
	if c.Interval <= 0 {
		c.Interval = 30 * time.Second
	}
	if c.IdleAfter <= 0 {
		c.IdleAfter = 30 * time.Minute
	}
	if c.RefusedWindow <= 0 {
		c.RefusedWindow = 5 * time.Minute
	}
}

// Bounds on the memory of the refused creates.
const (
	maxScalingClasses  = 1000  // requirement classes refused, and reported, at once
	maxRefusedPerClass = 10000 // refusal times kept per class
)

// RequirementClass is what a create asks of a server: its type, whether it
// wants DCV GL, and its Requirements expression in canonical form.
type RequirementClass struct {
	Type         string
	DcvGlEnabled bool
	Requirements string
}

// ID returns a short stable name of the class (12 hex digits of the SHA-256
// of its fields): the class label of the shortfall gauges.
func (c RequirementClass) ID() string {
	h := sha256.Sum256([]byte(c.Type + "\x00" + strconv.FormatBool(c.DcvGlEnabled) + "\x00" + c.Requirements))
	return hex.EncodeToString(h[:6])
}

// Shortfall is the requests of one class that no open, healthy server can
// take now.
type Shortfall struct {
	Class RequirementClass
	// Queued counts the sessions in the create queue that fit no server;
	// Refused the creates this broker refused for want of a server within
	// ScalingConfig.RefusedWindow. Count is their sum.
	Count, Queued, Refused int
	// OldestSince is when the oldest of them entered the queue or was
	// refused.
	OldestSince time.Time
}

// IdleServer is an open server that has had no session for
// ScalingConfig.IdleAfter.
type IdleServer struct {
	ServerID string
	Hostname string
	// EC2InstanceID and AWSRegion are what the server's agent reported, if
	// it runs on EC2: what an autoscaler needs to terminate it.
	EC2InstanceID, AWSRegion string
	// IdleSince is when the broker first saw it without sessions.
	IdleSince time.Time
}

// Capacity is the result of one check of the scaling signals.
type Capacity struct {
	// At is when the check ran.
	At time.Time
	// Shortfall lists the classes with a shortfall, the most requests first.
	Shortfall []Shortfall
	// Idle lists the idle servers, the longest idle first.
	Idle []IdleServer
	// IdleAfter is ScalingConfig.IdleAfter.
	IdleAfter time.Duration
}

// emitter records events: the Service (Service.Emit), or a test's recorder.
type emitter interface {
	Emit(ctx context.Context, evs ...Event)
}

// scaling is the Service's state of the scaling signals.
type scaling struct {
	mu   sync.Mutex // serializes checks and guards the fields below
	last Capacity   // the last check's result

	refusedMu sync.Mutex
	refused   map[RequirementClass][]time.Time // times of refused creates, oldest first

	emptySince map[string]time.Time // open servers without sessions → since when
	idleSent   map[string]bool      // idle servers whose server.idle was emitted
	sent       map[RequirementClass]int

	emit emitter // nil: the Service
}

// scalingClass returns the requirement class of a session.
func (s *Service) scalingClass(sess *Session) RequirementClass {
	c := RequirementClass{Type: sess.Type, DcvGlEnabled: sess.Spec.DcvGlEnabled}
	if sess.Spec.Requirements != "" {
		if e, err := s.compile(sess.Spec.Requirements); err == nil {
			c.Requirements = e.String()
		}
	}
	return c
}

// scalingRefused records a create refused for want of a server (reason is
// its Metrics.PlacementFailed reason): quota and store failures are no
// shortfall of servers.
func (s *Service) scalingRefused(sess *Session, reason string, now time.Time) {
	switch reason {
	case FailNoServers, FailNoMatch, FailFull, FailQueueFull:
	default:
		return
	}
	c := s.scalingClass(sess)
	sc := &s.scale
	sc.refusedMu.Lock()
	defer sc.refusedMu.Unlock()
	if sc.refused == nil {
		sc.refused = make(map[RequirementClass][]time.Time)
	}
	ts, ok := sc.refused[c]
	if !ok && len(sc.refused) >= maxScalingClasses {
		return
	}
	if len(ts) >= maxRefusedPerClass {
		ts = slices.Delete(ts, 0, 1)
	}
	sc.refused[c] = append(ts, now)
}

// refusedCounts drops the refusals older than the window and returns, by
// class, how many remain and the oldest's time.
func (s *Service) refusedCounts(now time.Time) map[RequirementClass]Shortfall {
	sc := &s.scale
	sc.refusedMu.Lock()
	defer sc.refusedMu.Unlock()
	cut := now.Add(-s.cfg.Scaling.RefusedWindow)
	out := make(map[RequirementClass]Shortfall, len(sc.refused))
	for c, ts := range sc.refused {
		i := 0
		for i < len(ts) && !ts[i].After(cut) {
			i++
		}
		if ts = ts[i:]; len(ts) == 0 {
			delete(sc.refused, c)
			continue
		}
		sc.refused[c] = ts
		out[c] = Shortfall{Class: c, Refused: len(ts), OldestSince: ts[0]}
	}
	return out
}

// Capacity returns the scaling signals: the last check's, or a new check's
// when the last is older than ScalingConfig.Interval.
func (s *Service) Capacity(ctx context.Context) (Capacity, error) {
	return s.checkScaling(ctx, s.cfg.Scaling.Interval)
}

// LastCapacity returns the last check's scaling signals without checking
// (zero before the first check): for the metrics' scrapes.
func (s *Service) LastCapacity() Capacity {
	s.scale.mu.Lock()
	defer s.scale.mu.Unlock()
	return s.scale.last
}

// scalingLoop checks the scaling signals every ScalingConfig.Interval.
func (s *Service) scalingLoop(ctx context.Context) {
	t := time.NewTicker(s.cfg.Scaling.Interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if _, err := s.checkScaling(ctx, 0); err != nil && ctx.Err() == nil {
			s.log.Warn("check the scaling signals", "err", err)
		}
	}
}

// checkScaling runs one check: it computes the shortfall and the idle
// servers, keeps them for Capacity and, on the leader, emits the events of
// what changed. A check younger than reuse is returned instead (requests
// that arrive together share one check).
func (s *Service) checkScaling(ctx context.Context, reuse time.Duration) (Capacity, error) {
	sc := &s.scale
	sc.mu.Lock()
	defer sc.mu.Unlock()
	now := s.Now()
	if reuse > 0 && !sc.last.At.IsZero() && now.Sub(sc.last.At) < reuse {
		return sc.last, nil
	}
	short, err := s.queuedShortfall(ctx)
	if err != nil {
		return Capacity{}, err
	}
	for c, r := range s.refusedCounts(now) {
		x := short[c]
		x.Class, x.Refused = c, r.Refused
		if x.OldestSince.IsZero() || r.OldestSince.Before(x.OldestSince) {
			x.OldestSince = r.OldestSince
		}
		short[c] = x
	}
	capa := Capacity{At: now, IdleAfter: s.cfg.Scaling.IdleAfter}
	for c, x := range short {
		x.Count = x.Queued + x.Refused
		short[c] = x
		capa.Shortfall = append(capa.Shortfall, x)
	}
	slices.SortFunc(capa.Shortfall, func(a, b Shortfall) int {
		if c := cmp.Compare(b.Count, a.Count); c != 0 {
			return c
		}
		return cmp.Compare(a.Class.ID(), b.Class.ID())
	})
	if len(capa.Shortfall) > maxScalingClasses {
		capa.Shortfall = capa.Shortfall[:maxScalingClasses] // bounds the gauges' series
	}
	idle, err := s.idleServers(ctx, now)
	if err != nil {
		return Capacity{}, err
	}
	capa.Idle = idle
	sc.last = capa
	if s.leader(ctx) {
		s.emitScaling(ctx, now, short, idle)
	} else {
		// A broker that becomes the leader restates what it sees.
		sc.sent, sc.idleSent = nil, nil
	}
	return capa, nil
}

// queuedShortfall returns, by class, the queued sessions that fit no open,
// healthy, linked server now, and are held back by no quota. It places the
// queue, in the queue's fair order, on the servers' figures without
// committing anything.
func (s *Service) queuedShortfall(ctx context.Context) (map[RequirementClass]Shortfall, error) {
	out := make(map[RequirementClass]Shortfall)
	waiting, err := s.store.ListSessions(ctx, queueFilter())
	if err != nil || len(waiting) == 0 {
		return out, err
	}
	waiting = s.queueOrder(ctx, waiting)
	qp := s.quotasFor(ctx, waiting)
	if qp != nil {
		if err := qp.load(ctx, s.store); err != nil {
			return nil, err
		}
	}
	var todo []*Session
	var reqs []placement.Request
	for i, w := range waiting {
		if !w.Enqueued {
			continue // a retry after a failed create: placed or failed at once
		}
		if qp != nil && qp.check(i, w) != nil {
			continue // a quota holds it: servers would not help
		}
		var expr *requirements.Expr
		if w.Spec.Requirements != "" {
			if expr, err = s.compile(w.Spec.Requirements); err != nil {
				continue
			}
		}
		todo = append(todo, w)
		reqs = append(reqs, placement.Request{Owner: w.Owner, Type: w.Type, Requirements: expr, GL: w.Spec.DcvGlEnabled, Exclude: w.Excluded})
	}
	if len(todo) == 0 {
		return out, nil
	}
	hosts, err := s.snapshot(ctx, false)
	if err != nil {
		return nil, err
	}
	for k, d := range placement.Place(hosts, reqs) {
		if d.Err == nil {
			continue // the queue places it on its next pass
		}
		w := todo[k]
		c := s.scalingClass(w)
		since := w.EnqueuedAt
		if since.IsZero() {
			since = w.CreationTime
		}
		x := out[c]
		x.Class = c
		x.Queued++
		if x.OldestSince.IsZero() || since.Before(x.OldestSince) {
			x.OldestSince = since
		}
		out[c] = x
	}
	return out, nil
}

// idleServers returns the open servers without sessions for
// ScalingConfig.IdleAfter, longest idle first, and keeps when each open
// server was first seen without sessions.
func (s *Service) idleServers(ctx context.Context, now time.Time) ([]IdleServer, error) {
	counts, err := s.servers.sessionCounts(ctx, s.store, countsMaxAge, now)
	if err != nil {
		return nil, err
	}
	sc := &s.scale
	if sc.emptySince == nil {
		sc.emptySince = make(map[string]time.Time)
	}
	var idle []IdleServer
	seen := make(map[string]bool)
	for _, srv := range s.servers.all() {
		c := counts[srv.ID]
		if !srv.Open || c.Virtual+c.Console > 0 {
			continue
		}
		seen[srv.ID] = true
		since, ok := sc.emptySince[srv.ID]
		if !ok {
			since = now
			sc.emptySince[srv.ID] = now
		}
		if now.Sub(since) >= s.cfg.Scaling.IdleAfter {
			idle = append(idle, IdleServer{ServerID: srv.ID, Hostname: srv.Info.Hostname,
				EC2InstanceID: srv.Info.Host.EC2InstanceID, AWSRegion: srv.Info.Host.AWSRegion, IdleSince: since})
		}
	}
	for id := range sc.emptySince {
		if !seen[id] {
			delete(sc.emptySince, id) // a session landed, or it closed or left
			delete(sc.idleSent, id)
		}
	}
	slices.SortFunc(idle, func(a, b IdleServer) int {
		if c := a.IdleSince.Compare(b.IdleSince); c != 0 {
			return c
		}
		return cmp.Compare(a.ServerID, b.ServerID)
	})
	return idle, nil
}

// emitScaling emits a scaling.shortfall event for each class whose count
// changed since the last emitted (count 0: it cleared) and a server.idle
// event for each idle server not reported in this idle period.
func (s *Service) emitScaling(ctx context.Context, now time.Time, short map[RequirementClass]Shortfall, idle []IdleServer) {
	sc := &s.scale
	if sc.sent == nil {
		sc.sent = make(map[RequirementClass]int)
	}
	if sc.idleSent == nil {
		sc.idleSent = make(map[string]bool)
	}
	var evs []Event
	for c, x := range short {
		if sc.sent[c] != x.Count {
			evs = append(evs, shortfallEvent(now, x))
		}
	}
	for c := range sc.sent {
		if _, ok := short[c]; !ok {
			evs = append(evs, shortfallEvent(now, Shortfall{Class: c}))
		}
	}
	slices.SortFunc(evs, func(a, b Event) int { return cmp.Compare(a.Data["class"].(string), b.Data["class"].(string)) })
	clear(sc.sent)
	for c, x := range short {
		sc.sent[c] = x.Count
	}
	for _, x := range idle {
		if sc.idleSent[x.ServerID] {
			continue
		}
		sc.idleSent[x.ServerID] = true
		evs = append(evs, Event{Time: now, Type: EventServerIdle, ServerID: x.ServerID, Data: map[string]any{
			"hostname": x.Hostname, "idle_since": x.IdleSince.UTC().Format(time.RFC3339Nano),
			"idle_seconds": int64(now.Sub(x.IdleSince) / time.Second), "ec2_instance_id": x.EC2InstanceID, "aws_region": x.AWSRegion,
		}})
	}
	if len(evs) == 0 {
		return
	}
	var e emitter = s
	if sc.emit != nil {
		e = sc.emit
	}
	e.Emit(ctx, evs...)
}

// shortfallEvent is the scaling.shortfall event of one class.
func shortfallEvent(now time.Time, x Shortfall) Event {
	d := map[string]any{
		"class": x.Class.ID(), "type": x.Class.Type, "dcv_gl_enabled": x.Class.DcvGlEnabled,
		"requirements": x.Class.Requirements, "count": x.Count, "queued": x.Queued, "refused": x.Refused,
		"oldest_wait_seconds": int64(0),
	}
	if !x.OldestSince.IsZero() {
		d["oldest_since"] = x.OldestSince.UTC().Format(time.RFC3339Nano)
		d["oldest_wait_seconds"] = int64(max(now.Sub(x.OldestSince), 0) / time.Second)
	}
	return Event{Time: now, Type: EventScalingShortfall, Data: d}
}

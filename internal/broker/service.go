// Package broker is berth's domain core: sessions, servers, their lifecycle and
// the use-cases behind the Session Manager API. It does no I/O of its own; it
// works through the interfaces it owns (Store, Dispatcher, TokenIssuer) and
// decides placement with the pure internal/placement package.
package broker

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/berth-dev/berth/internal/logattr"
	"github.com/berth-dev/berth/internal/requirements"
)

// Config holds the broker's tunables. Zero values take the defaults noted.
type Config struct {
	// BrokerID names this broker in the store (which broker holds an agent link).
	BrokerID string
	// QueueMaxSize caps sessions waiting with EnqueueRequest (default 1000).
	QueueMaxSize int
	// QueueMaxTime is how long a queued session waits before it fails (default 30m).
	QueueMaxTime time.Duration
	// Retries is how many other servers a failed create is retried on (default 2; -1 none).
	Retries int
	// DeletedRetention keeps DELETED sessions visible this long (default 1h).
	DeletedRetention time.Duration
	// UnreachableServerTTL removes servers unreachable this long (default 15m).
	UnreachableServerTTL time.Duration
	// UnreachableSessionsTTL deletes sessions of servers unreachable this long (default 15m).
	UnreachableSessionsTTL time.Duration
	// HeartbeatTimeout makes a silent server unreachable (default 30s), up
	// to the fleet size MaxUpdateRate allows (LinkTiming).
	HeartbeatTimeout time.Duration
	// UpdateInterval is how often agents are asked to report, up to the
	// fleet size MaxUpdateRate allows (default HeartbeatTimeout/3).
	UpdateInterval time.Duration
	// MaxUpdateRate caps the fleet's agent updates a second: a fleet larger
	// than MaxUpdateRate × UpdateInterval gets a longer update interval and
	// heartbeat timeout, in proportion (LinkTiming). 0: no cap.
	// agent-max-updates-per-second.
	MaxUpdateRate float64
	// CreateTimeout bounds an agent's session creation (default 2m).
	CreateTimeout time.Duration
	// CommandTimeout bounds other agent commands (default 20s).
	CommandTimeout time.Duration
	// ScreenshotMaxWidth, ScreenshotMaxHeight and ScreenshotFormat are the
	// screenshot defaults (160, 100, "png").
	ScreenshotMaxWidth  int
	ScreenshotMaxHeight int
	ScreenshotFormat    string
	// AutorunMaxArgs and AutorunMaxArgLength bound AutorunFileArguments (50, 150).
	AutorunMaxArgs      int
	AutorunMaxArgLength int
	// CreateWorkers bounds concurrent create commands across all servers
	// (default 1024); each server gets at most 32 at once (workers.go).
	CreateWorkers int
	// MaintenanceInterval is the period of expiry and cleanup (default: 5s, or a
	// quarter of the shortest expiry time when that is shorter).
	MaintenanceInterval time.Duration
	// SyncInterval is how often a broker whose store implements ServerSyncer
	// (shared with other brokers) refreshes its server cache (default 1s).
	SyncInterval time.Duration
	// Limits are the broker properties' lifetime policies and per-user
	// quotas (session-*-timeout-minutes, session-max-lifetime-hours, ...);
	// zero values are off.
	Limits SessionLimits
	// GroupLimits are the limits of groups (group name → limits): lifetime
	// policies for their members, and quotas on their members together.
	GroupLimits map[string]SessionLimits
	// Groups is the groups source (nil: groups come only from a launch's
	// identity provider claim, SessionSpec.Groups).
	Groups GroupSource
	// WarningPoints are the times before an idle disconnection or a
	// lifetime deletion at which clients are warned (nil: 15m and 2m;
	// empty: no warnings). session-warning-minutes.
	WarningPoints []time.Duration
	// ExtensionDefault is the extension an ExtendSession without By asks
	// for (default 1h). session-extension-default-hours.
	ExtensionDefault time.Duration
	// Scaling tunes the scaling signals (scaling.go).
	Scaling ScalingConfig
	// PolicyInterval is the period of the lifetime policies' loop on the
	// leader broker (default 5s).
	PolicyInterval time.Duration
	// DisableEvents turns the events off: no event is written, the
	// stream sees none (the baseline of the events' overhead benchmark).
	DisableEvents bool
	// EventRetention keeps events this long (default 168h);
	// event-retention-hours.
	EventRetention time.Duration
	// EventPollInterval is how often the events hub reads the store for
	// the events of other brokers (default 500ms).
	EventPollInterval time.Duration
	// EventSubscriberGrace is how long an event stream's reader may leave
	// its full buffer unread before it is closed as too slow (default 10s).
	EventSubscriberGrace time.Duration
}

func (c *Config) setDefaults() {
	def := func(v *int, d int) {
		if *v == 0 {
			*v = d
		}
	}
	defd := func(v *time.Duration, d time.Duration) {
		if *v == 0 {
			*v = d
		}
	}
	def(&c.QueueMaxSize, 1000)
	defd(&c.QueueMaxTime, 30*time.Minute)
	def(&c.Retries, 2)
	if c.Retries < 0 {
		c.Retries = 0
	}
	defd(&c.DeletedRetention, time.Hour)
	defd(&c.UnreachableServerTTL, 15*time.Minute)
	defd(&c.UnreachableSessionsTTL, 15*time.Minute)
	defd(&c.HeartbeatTimeout, 30*time.Second)
	defd(&c.UpdateInterval, c.HeartbeatTimeout/3)
	c.MaxUpdateRate = max(c.MaxUpdateRate, 0)
	defd(&c.CreateTimeout, 2*time.Minute)
	defd(&c.CommandTimeout, 20*time.Second)
	def(&c.ScreenshotMaxWidth, 160)
	def(&c.ScreenshotMaxHeight, 100)
	if c.ScreenshotFormat == "" {
		c.ScreenshotFormat = "png"
	}
	def(&c.AutorunMaxArgs, 50)
	def(&c.AutorunMaxArgLength, 150)
	def(&c.CreateWorkers, 1024)
	c.Scaling.setDefaults()
	defd(&c.SyncInterval, time.Second)
	if c.WarningPoints == nil {
		c.WarningPoints = []time.Duration{15 * time.Minute, 2 * time.Minute}
	}
	defd(&c.ExtensionDefault, time.Hour)
	defd(&c.PolicyInterval, 5*time.Second)
	defd(&c.EventRetention, 168*time.Hour)
	defd(&c.EventPollInterval, 500*time.Millisecond)
	defd(&c.EventSubscriberGrace, 10*time.Second)
	if c.MaintenanceInterval == 0 {
		c.MaintenanceInterval = min(5*time.Second, c.UnreachableServerTTL/4, c.UnreachableSessionsTTL/4, max(c.DeletedRetention/4, time.Second))
	}
}

// TokenIssuer issues ConnectionTokens. Implemented by *oauth.Authority.
type TokenIssuer interface {
	IssueConnectionToken(ctx context.Context, sessionID, owner, user string) (string, error)
}

// Leaser tells whether this broker should run cluster-wide periodic work.
// A nil Leaser means always (a single broker).
type Leaser interface {
	IsLeader(ctx context.Context) bool
}

// Pruner deletes state outside the broker's domain that outlived its use (the
// agent clients that never linked). Implemented by *oauth.Authority.
type Pruner interface {
	Prune(ctx context.Context) error
}

// Service implements the Session Manager use-cases. Create it with New, start its
// background work with Run, and stop it by cancelling Run's context.
type Service struct {
	store  Store
	disp   Dispatcher
	tokens TokenIssuer
	cfg    Config
	log    *slog.Logger

	// Now is the clock; tests may replace it before Run.
	Now func() time.Time
	// Leaser gates periodic cluster-wide work; nil means this broker does it.
	Leaser Leaser
	// Pruners run with the periodic cleanup, on the broker that Leaser
	// elects; set them before Run.
	Pruners []Pruner

	cursorKey []byte

	exprMu sync.Mutex
	exprs  map[string]*requirements.Expr

	servers serverCache
	hosts   hostReports // volatile host figures not yet in the store (hostreport.go)

	creates  *backlog[string] // session IDs whose create must be sent to their agent
	deletes  *backlog[deleteJob]
	wakeQ    chan struct{}
	inflight sync.Map // session ID → struct{}: create command outstanding
	deleting sync.Map // session ID → struct{}: delete command outstanding

	// sendMu guards sendQueues, the creates waiting for a sender per server;
	// sendSlots holds a token per running sender (workers.go).
	sendMu     sync.Mutex
	sendQueues map[string]*createQueue
	sendSlots  chan struct{}

	lastRedrive time.Time // maintenance: when Redrive last ran (leader only)

	batch sessionBatcher // group commit of the agents' session writes (sessionbatch.go)

	obs Metrics // set by SetMetrics; nil reports nothing

	hub   eventHub          // the event stream's reader of the store (events_hub.go)
	emits emitBatches       // Emit's group commit (events_core.go)
	avail availabilityWatch // server.availability (events_servers.go)

	scale scaling // the scaling signals (scaling.go)

	wg sync.WaitGroup
}

// New returns a Service. It loads the server cache and the pagination key from
// the store.
func New(ctx context.Context, store Store, disp Dispatcher, tokens TokenIssuer, cfg Config, log *slog.Logger) (*Service, error) {
	cfg.setDefaults()
	if log == nil {
		log = slog.Default()
	}
	s := &Service{
		store:   store,
		disp:    disp,
		tokens:  tokens,
		cfg:     cfg,
		log:     log.With("component", "broker"),
		Now:     time.Now,
		exprs:   make(map[string]*requirements.Expr),
		creates: newBacklog[string](backlogMax),
		deletes: newBacklog[deleteJob](backlogMax),
		wakeQ:   make(chan struct{}, 1),
	}
	s.sendSlots = make(chan struct{}, cfg.CreateWorkers)
	key, err := store.Setting(ctx, "cursor-key", randomHex(32))
	if err != nil {
		return nil, err
	}
	s.cursorKey = []byte(key)
	s.servers.timing = linkTiming{interval: s.cfg.UpdateInterval, timeout: s.cfg.HeartbeatTimeout, rate: s.cfg.MaxUpdateRate}
	if err := s.servers.load(ctx, store); err != nil {
		return nil, err
	}
	return s, nil
}

// Config returns the effective configuration (defaults applied).
func (s *Service) Config() Config { return s.cfg }

// Run performs background work until ctx is done: sending creates and deletes to
// agents, the placement queue, expiry of DELETED sessions and cleanup of
// unreachable servers. It returns nil when ctx is cancelled.
func (s *Service) Run(ctx context.Context) error {
	s.wg.Add(2)
	go func() {
		defer s.wg.Done()
		s.servers.tally.run(ctx, s.store, isShared(s.store), s.log)
	}()
	go func() {
		defer s.wg.Done()
		s.createLoop(ctx)
	}()
	for range 8 {
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.deleteWorker(ctx)
		}()
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		s.queueLoop(ctx)
	}()
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		s.maintenanceLoop(ctx)
	}()
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		s.policyLoop(ctx)
	}()
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		s.scalingLoop(ctx)
	}()
	if es := s.eventStore(); es != nil {
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.hub.run(ctx, es, s.cfg.EventPollInterval, s)
		}()
	}
	if sy, ok := s.store.(ServerSyncer); ok {
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.syncLoop(ctx, sy)
		}()
	}
	<-ctx.Done()
	s.wg.Wait()
	return nil
}

func (s *Service) wakeQueue() {
	select {
	case s.wakeQ <- struct{}{}:
	default:
	}
}

// compile returns the compiled requirements expression, caching by source.
func (s *Service) compile(src string) (*requirements.Expr, error) {
	s.exprMu.Lock()
	defer s.exprMu.Unlock()
	if e, ok := s.exprs[src]; ok {
		return e, nil
	}
	e, err := requirements.Parse(src)
	if err != nil {
		return nil, err
	}
	if len(s.exprs) > 10000 {
		clear(s.exprs)
	}
	s.exprs[src] = e
	return e, nil
}

func (s *Service) leader(ctx context.Context) bool {
	return s.Leaser == nil || s.Leaser.IsLeader(ctx)
}

// syncLoop keeps the server cache current with the servers that other brokers
// register and hear from.
func (s *Service) syncLoop(ctx context.Context, sy ServerSyncer) {
	t := time.NewTicker(s.cfg.SyncInterval)
	defer t.Stop()
	failing := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		err := s.servers.sync(ctx, s.store, sy, s.cfg.BrokerID)
		switch {
		case err != nil && ctx.Err() == nil && !failing:
			s.log.Warn("refresh servers from the store", "err", err)
			failing = true
		case err == nil && failing:
			s.log.Info("refreshing servers from the store again")
			failing = false
		}
	}
}

// maintenanceLoop runs periodic cleanup.
func (s *Service) maintenanceLoop(ctx context.Context) {
	t := time.NewTicker(s.cfg.MaintenanceInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		s.servers.flushSeen(ctx, s.store, s.cfg.BrokerID, s.log)
		s.maybeFlushHosts(ctx, s.Now()) // host figures reach the store even when reports stop
		if !s.leader(ctx) {
			continue
		}
		s.expire(ctx)
	}
}

// expire purges old DELETED sessions and cleans up unreachable servers.
func (s *Service) expire(ctx context.Context) {
	now := s.Now()
	if now.Sub(s.lastRedrive) >= time.Minute {
		// A safety net for work lost with a broker that died unnoticed:
		// creates and deletes that should long have finished.
		s.lastRedrive = now
		s.Redrive(ctx, s.cfg.CreateTimeout+30*time.Second)
	}
	endPurge := s.servers.tally.begin()
	if n, err := s.store.PurgeDeleted(ctx, now.Add(-s.cfg.DeletedRetention)); err != nil {
		s.log.Error("purge deleted sessions", "err", err)
	} else if n > 0 {
		s.servers.tally.purged(n)
		s.log.Info("purged deleted sessions", "count", n)
	}
	endPurge()
	s.purgeEvents(ctx, now)
	s.noteAvailability(ctx, now)
	for _, p := range s.Pruners {
		if err := p.Prune(ctx); err != nil {
			s.log.Error("prune", "err", err)
		}
	}
	for _, srv := range s.servers.all() {
		since := s.servers.unreachableSince(srv.ID, s.heartbeatTimeout(), now)
		if since.IsZero() {
			continue
		}
		down := now.Sub(since)
		if down >= s.cfg.UnreachableSessionsTTL {
			s.failServerSessions(ctx, srv.ID, "the server was unreachable for "+down.Truncate(time.Second).String())
		}
		if down >= s.cfg.UnreachableServerTTL {
			if err := s.store.DeleteServer(ctx, srv.ID); err != nil {
				s.log.Error("delete unreachable server", logattr.ServerID, srv.ID, "err", err)
				continue
			}
			s.servers.remove(srv.ID)
			s.log.Info("removed unreachable server", logattr.ServerID, srv.ID, "unreachable_for", down.Truncate(time.Second).String())
		}
	}
}

// failServerSessions marks the live sessions of a server DELETED.
func (s *Service) failServerSessions(ctx context.Context, serverID, reason string) {
	ss, err := s.store.ListSessions(ctx, SessionFilter{ServerID: serverID, States: []string{StateCreating, StateReady, StateDeleting, StateUnknown}})
	if err != nil {
		s.log.Error("list sessions of unreachable server", logattr.ServerID, serverID, "err", err)
		return
	}
	for _, sess := range ss {
		s.setDeleted(ctx, sess.ID, reason)
	}
}

// setDeleted moves a session to DELETED with a reason.
func (s *Service) setDeleted(ctx context.Context, id, reason string) {
	defer s.servers.tally.begin()()
	now := s.Now()
	var was Session
	err := s.store.UpdateSession(ctx, id, func(x *Session) error {
		if x.State == StateDeleted {
			return errUnchanged
		}
		was = *x
		if x.State == StateDeleting && x.StateReason != "" {
			reason = x.StateReason // a policy's deletion keeps its reason
		}
		x.State, x.Substate, x.StateReason = StateDeleted, "", reason
		x.DueAt = time.Time{}
		x.Enqueued = false
		x.UpdatedAt = now
		s.attachEvents(&was, x)
		return nil
	})
	s.hub.notify()
	if err != nil {
		if !errors.Is(err, errUnchanged) && !errors.Is(err, ErrNotFound) {
			s.log.Error("mark session deleted", logattr.SessionID, id, "err", err)
		}
		return
	}
	s.servers.released(&was)
	s.wakeQueue()
}

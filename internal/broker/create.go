package broker

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/berth-dev/berth/internal/logattr"
	"github.com/berth-dev/berth/internal/permfile"
	"github.com/berth-dev/berth/internal/placement"
	"github.com/berth-dev/berth/internal/requirements"
)

// CreateRequest is one CreateSessions item, as the client sent it.
type CreateRequest struct {
	Name                  string
	Owner                 string
	Type                  string
	DcvGlEnabled          bool
	MaxConcurrentClients  *int64
	InitFile              string
	AutorunFile           string
	AutorunFileArguments  []string
	PermissionsFile       string // base64
	Requirements          string
	EnqueueRequest        bool
	DisableRetryOnFailure bool
	StorageRoot           string

	// tpl is the template a launch comes from (LaunchTemplate): the session
	// records its ID, a snapshot of its limits and its GPUs.
	tpl *Template
	// groups are the launching user's identity provider groups.
	groups []string
}

// CreateResult is the outcome of one CreateSessions item: Session on success,
// FailureReason (naming the field and the rule) otherwise.
type CreateResult struct {
	Session       *Session
	FailureReason string
}

// validateCreate checks one item and builds its session.
func (s *Service) validateCreate(r *CreateRequest) (*Session, *requirements.Expr, error) {
	if err := validateName(r.Name); err != nil {
		return nil, nil, err
	}
	if err := ValidateUserName("Owner", r.Owner); err != nil {
		return nil, nil, err
	}
	typ := strings.ToUpper(r.Type)
	switch typ {
	case TypeVirtual, TypeConsole:
	case "":
		return nil, nil, fmt.Errorf("Type: is required (VIRTUAL or CONSOLE)")
	default:
		return nil, nil, fmt.Errorf("Type: must be VIRTUAL or CONSOLE, got %q", truncate(r.Type, 40))
	}
	sess := &Session{Name: r.Name, Owner: r.Owner, Type: typ}
	if r.MaxConcurrentClients != nil {
		if *r.MaxConcurrentClients < 1 || *r.MaxConcurrentClients > 10000 {
			return nil, nil, fmt.Errorf("MaxConcurrentClients: must be between 1 and 10000, got %d", *r.MaxConcurrentClients)
		}
		sess.MaxConcurrentClients = *r.MaxConcurrentClients
	}
	if r.DcvGlEnabled && typ != TypeVirtual {
		return nil, nil, fmt.Errorf("DcvGlEnabled: only VIRTUAL sessions support DCV GL")
	}
	if r.InitFile != "" {
		if typ != TypeVirtual {
			return nil, nil, fmt.Errorf("InitFile: only Linux VIRTUAL sessions run an init file")
		}
		if err := validateRelPath("InitFile", r.InitFile); err != nil {
			return nil, nil, err
		}
	}
	if r.AutorunFile != "" {
		if err := validateRelPath("AutorunFile", r.AutorunFile); err != nil {
			return nil, nil, err
		}
	}
	if len(r.AutorunFileArguments) > 0 {
		if r.AutorunFile == "" {
			return nil, nil, fmt.Errorf("AutorunFileArguments: require AutorunFile")
		}
		if typ != TypeVirtual {
			return nil, nil, fmt.Errorf("AutorunFileArguments: only Linux VIRTUAL sessions take autorun arguments")
		}
		if len(r.AutorunFileArguments) > s.cfg.AutorunMaxArgs {
			return nil, nil, fmt.Errorf("AutorunFileArguments: %d arguments exceed the maximum of %d (autorun-file-arguments-max-size)", len(r.AutorunFileArguments), s.cfg.AutorunMaxArgs)
		}
		for i, a := range r.AutorunFileArguments {
			if len(a) > s.cfg.AutorunMaxArgLength {
				return nil, nil, fmt.Errorf("AutorunFileArguments[%d]: %d characters exceed the maximum of %d (autorun-file-arguments-max-argument-length)", i, len(a), s.cfg.AutorunMaxArgLength)
			}
			if strings.IndexByte(a, 0) >= 0 {
				return nil, nil, fmt.Errorf("AutorunFileArguments[%d]: contains a NUL byte", i)
			}
		}
	}
	if r.StorageRoot != "" {
		if err := validateStorageRoot(r.StorageRoot); err != nil {
			return nil, nil, err
		}
		sess.StorageRoot = r.StorageRoot
	}
	spec := SessionSpec{
		DcvGlEnabled: r.DcvGlEnabled, InitFile: r.InitFile, AutorunFile: r.AutorunFile,
		AutorunFileArguments: r.AutorunFileArguments, Requirements: r.Requirements,
		EnqueueRequest: r.EnqueueRequest, DisableRetryOnFailure: r.DisableRetryOnFailure,
	}
	if r.DcvGlEnabled {
		spec.GPUs = 1
	}
	if t := r.tpl; t != nil {
		spec.Template, spec.GPUs = t.ID, t.GPUs
		if t.Limits != (SessionLimits{}) {
			l := t.Limits
			spec.TemplateLimits = &l
		}
	}
	if len(r.groups) > 0 {
		spec.Groups = slices.Clone(r.groups)
	}
	if r.PermissionsFile != "" {
		text, err := decodePermissions("PermissionsFile", r.PermissionsFile)
		if err != nil {
			return nil, nil, err
		}
		spec.PermissionsFile = text
	}
	var expr *requirements.Expr
	if strings.TrimSpace(r.Requirements) != "" {
		e, err := s.compile(r.Requirements)
		if err != nil {
			return nil, nil, fmt.Errorf("Requirements: %v", err)
		}
		expr = e
	}
	sess.Spec = spec
	return sess, expr, nil
}

// decodePermissions decodes and validates a base64 DCV permissions file.
func decodePermissions(field, b64 string) (string, error) {
	raw, err := decodeBase64(field, b64)
	if err != nil {
		return "", err
	}
	if _, err := permfile.Parse(string(raw)); err != nil {
		return "", fmt.Errorf("%s: %v", field, err)
	}
	return string(raw), nil
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "..."
	}
	return s
}

// CreateSessions validates each item on its own, places the good ones and
// returns at once: placed sessions are CREATING/SESSION_PLACING and are then
// created on their servers in the background; items that fit no server fail
// with a reason, or wait in the queue with EnqueueRequest.
func (s *Service) CreateSessions(ctx context.Context, reqs []CreateRequest) ([]CreateResult, error) {
	out := make([]CreateResult, len(reqs))
	now := s.Now().UTC().Truncate(time.Millisecond)
	var pending []*Session
	var exprs []*requirements.Expr
	var idx []int
	for i := range reqs {
		sess, expr, err := s.validateCreate(&reqs[i])
		if err != nil {
			out[i].FailureReason = err.Error()
			continue
		}
		sess.ID = newSessionID()
		sess.State, sess.Substate = StateCreating, SubstatePlacing
		sess.CreationTime, sess.UpdatedAt = now, now
		pending = append(pending, sess)
		exprs = append(exprs, expr)
		idx = append(idx, i)
	}
	if len(pending) == 0 {
		return out, nil
	}
	s.awaitLinks(ctx) // just after a restart: wait for the first agent to relink
	placed, failed, err := s.place(ctx, pending, exprs, true, nil)
	if err != nil {
		return nil, err
	}
	var queue []*Session
	var refused []Event // placement.failed, quota.refused (events_create.go)
	for j, sess := range pending {
		i := idx[j]
		if f, bad := failed[j]; bad {
			if !sess.Spec.EnqueueRequest {
				out[i].FailureReason = f.msg
				s.metrics().PlacementFailed(f.reason)
				s.scalingRefused(sess, f.reason, now) // scaling.go
				refused = s.refusedEvents(refused, sess, f)
				continue
			}
			sess.Enqueued, sess.EnqueuedAt = true, now
			queue = append(queue, sess)
			out[i].Session = sess
			continue
		}
		out[i].Session = sess
	}
	if len(queue) > 0 {
		queued, err := s.store.ListSessions(ctx, SessionFilter{Unplaced: true, States: []string{StateCreating}})
		if err != nil {
			return nil, err
		}
		room := s.cfg.QueueMaxSize - len(queued)
		var accepted []*Session
		for _, sess := range queue {
			if room <= 0 {
				for i := range out {
					if out[i].Session == sess {
						out[i].Session = nil
						out[i].FailureReason = fmt.Sprintf("%s; the create queue is full (create-sessions-queue-max-size %d)", failed[indexOf(pending, sess)].msg, s.cfg.QueueMaxSize)
						s.metrics().PlacementFailed(FailQueueFull)
						s.scalingRefused(sess, FailQueueFull, now)
						refused = s.refusedEvents(refused, sess, placeFailure{out[i].FailureReason, FailQueueFull})
					}
				}
				continue
			}
			room--
			accepted = append(accepted, sess)
		}
		if len(accepted) > 0 {
			s.attachNew(accepted)
			s.attachQueued(accepted, failed, pending)
			end := s.servers.tally.begin()
			if err := s.store.InsertSessions(ctx, accepted); err != nil {
				end()
				s.eventsWritten(accepted...)
				return nil, err
			}
			s.eventsWritten(accepted...)
			s.sessionsInserted(accepted)
			end()
		}
	}
	s.Emit(ctx, refused...)
	for _, sess := range placed {
		s.queueCreate(sess.ID)
	}
	// Hand back copies: the stored rows move on in the background.
	for i := range out {
		if out[i].Session != nil {
			if text := out[i].Session.Spec.PermissionsFile; text != "" {
				s.recordShares(ctx, out[i].Session, text) // shares.go
			}
			cp := *out[i].Session
			cp.Substate = SubstatePlacing
			out[i].Session = &cp
		}
	}
	return out, nil
}

func indexOf(list []*Session, x *Session) int {
	for i, v := range list {
		if v == x {
			return i
		}
	}
	return -1
}

// place chooses servers for sessions and commits the choices. insert says the
// sessions are new (else they exist, unplaced). hosts, when not nil, is the
// snapshot of the servers the first attempt places on (else it takes one).
// It returns the committed sessions and, by index, the reason each failed
// one could not be placed.
func (s *Service) place(ctx context.Context, sessions []*Session, exprs []*requirements.Expr, insert bool, hosts []placement.Host) ([]*Session, map[int]placeFailure, error) {
	failed := map[int]placeFailure{}
	todo := make([]int, len(sessions))
	for i := range todo {
		todo[i] = i
	}
	// Quotas: sessions over one fail (or keep waiting) before they take a
	// server's room from others; the commit checks again.
	qp := s.quotasFor(ctx, sessions)
	if qp != nil {
		if err := qp.load(ctx, s.store); err != nil {
			return nil, nil, err
		}
	}
	var placed []*Session
	for attempt := 0; attempt < 3 && len(todo) > 0; attempt++ {
		if qp != nil {
			keep := todo[:0]
			for _, i := range todo {
				if err := qp.check(i, sessions[i]); err != nil {
					failed[i] = placeFailure{quotaReason(err), FailQuota}
					continue
				}
				qp.take(i, sessions[i])
				keep = append(keep, i)
			}
			if todo = keep; len(todo) == 0 {
				break
			}
		}
		if attempt > 0 || hosts == nil {
			var err error
			if hosts, err = s.snapshot(ctx, attempt > 0); err != nil {
				return nil, nil, err
			}
		}
		reqs := make([]placement.Request, len(todo))
		for k, i := range todo {
			sess := sessions[i]
			reqs[k] = placement.Request{Owner: sess.Owner, Type: sess.Type, Requirements: exprs[i], GL: sess.Spec.DcvGlEnabled, Exclude: sess.Excluded}
		}
		decisions := placement.Place(hosts, reqs)
		var ps []Placement
		var psIdx []int
		// Refused on kept counts that may count a change twice (a read of
		// them overlapped writes, counts.go): count in the store and try
		// again. With a shared store the counts lag the other brokers anyway
		// and reads overlap writes most of the time, so a refusal there
		// stands until the next read (countsQuiet).
		var again []int
		recount := attempt == 0 && !isShared(s.store) && s.servers.tally.uncertain()
		for k, d := range decisions {
			i := todo[k]
			if d.Err != nil && recount {
				again = append(again, i)
				if qp != nil {
					qp.release(i, sessions[i])
				}
				continue
			}
			if d.Err != nil {
				failed[i] = noHostFailure(d.Err)
				if qp != nil {
					qp.release(i, sessions[i])
				}
				continue
			}
			sess := sessions[i]
			var prev *Session
			if !insert && s.eventsOn() {
				p := *sess
				prev = &p
			}
			// Committed with its server, it waits for the server to
			// prepare it: the create is sent without another write.
			sess.ServerID, sess.Substate = d.HostID, SubstatePendingPreparation
			sess.Enqueued = false
			s.attachEvents(prev, sess)
			ps = append(ps, Placement{Session: sess, Insert: insert, Quotas: qp.placementQuotas(i)})
			psIdx = append(psIdx, i)
		}
		todo = append(todo[:0], again...)
		if len(ps) == 0 {
			if len(todo) == 0 {
				break
			}
			continue
		}
		end := s.servers.tally.begin()
		errs, err := s.store.CommitPlacements(ctx, ps)
		for _, p := range ps {
			s.eventsWritten(p.Session)
		}
		if err != nil {
			end()
			return nil, nil, fmt.Errorf("commit placements: %w", err)
		}
		var ok []*Session
		for k, e := range errs {
			i := psIdx[k]
			if e == nil {
				ok = append(ok, sessions[i])
				continue
			}
			sessions[i].ServerID, sessions[i].Substate = "", SubstatePlacing
			if qp != nil {
				qp.release(i, sessions[i])
			}
			var qe *QuotaError
			if errors.As(e, &qe) {
				// Another commit (of this broker or another) took the room.
				if qp != nil {
					qp.use[qe.Quota.Key()] = qe.Use
				}
				failed[i] = placeFailure{qe.Error(), FailQuota}
				continue
			}
			if !insert && errors.Is(e, ErrConflict) {
				continue // deleted or placed by someone else meanwhile: leave it
			}
			if errors.Is(e, ErrServerFull) || errors.Is(e, ErrNotFound) {
				todo = append(todo, i) // the snapshot was stale: place it again
				continue
			}
			failed[i] = placeFailure{"could not commit the placement; retry", FailStore}
			s.log.Error("commit placement", logattr.SessionID, sessions[i].ID, "err", e)
		}
		s.servers.addPlaced(ok, insert)
		end()
		s.metrics().Placed(len(ok))
		placed = append(placed, ok...)
	}
	for _, i := range todo {
		failed[i] = placeFailure{"no DCV server found for the given criteria: servers filled up while placing; retry", FailFull}
	}
	return placed, failed, nil
}

// snapshot builds placement hosts from the servers that are open, reachable and
// healthy. fresh counts the sessions in the store instead of taking the kept
// counts: a commit refused a placement, because another batch (of this
// broker, whose counts may not show it yet, or of another broker) filled the
// server first.
func (s *Service) snapshot(ctx context.Context, fresh bool) ([]placement.Host, error) {
	now := s.Now()
	linked := s.servers.linkedOpen(s.heartbeatTimeout(), s.relinkGrace(), now)
	counts := make([]Counts, len(linked))
	if fresh {
		all, err := s.store.CountSessions(ctx)
		if err != nil {
			return nil, err
		}
		if isShared(s.store) {
			s.servers.invalidateCounts() // take in the other brokers' sessions
		}
		for i, srv := range linked {
			counts[i] = all[srv.ID]
		}
	} else {
		var err error
		if counts, err = s.servers.countsOf(ctx, s.store, now, linked); err != nil {
			return nil, err
		}
	}
	hosts := make([]placement.Host, 0, len(linked))
	for i, srv := range linked {
		c := counts[i]
		hosts = append(hosts, placement.Host{
			ID: srv.ID, Tags: s.tagsOf(srv), Properties: srv, OSFamily: osFamily(&srv.Info),
			MaxVirtualSessions: srv.Info.MaxVirtualSessions, MaxSessionsPerUser: srv.Info.MaxConcurrentSessionsPerUser,
			GLCapable: srv.Info.GLCapable, Virtual: c.Virtual, Console: c.Console, ByOwner: c.ByOwner,
			Load: srv.Info.Host.Load1,
		})
	}
	return hosts, nil
}

func osFamily(info *ServerInfo) string {
	if info.Host.OSFamily == "" {
		return "linux"
	}
	return info.Host.OSFamily
}

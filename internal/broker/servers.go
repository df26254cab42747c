package broker

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/berth-dev/berth/internal/logattr"
	"github.com/berth-dev/berth/internal/placement"
)

// Server availability values and unavailability reasons.
const (
	Available   = "AVAILABLE"
	Unavailable = "UNAVAILABLE"

	ReasonServerFull       = "SERVER_FULL"
	ReasonServerClosed     = "SERVER_CLOSED"
	ReasonUnreachableAgent = "UNREACHABLE_AGENT"
	ReasonUnhealthy        = "UNHEALTHY_DCV_SERVER"
	// ReasonUnknown is the reason of a server whose agent has not relinked
	// yet since its broker went away (this broker restarted, or the broker
	// of a cluster that held the link stopped or died): for up to the
	// heartbeat timeout the broker cannot tell whether the agent is there.
	ReasonUnknown = "UNKNOWN"
)

// countsMaxAge bounds how old the session counts behind server views may be.
// This broker invalidates them on every change it makes; the bound covers
// changes made by other brokers of a cluster.
const countsMaxAge = 5 * time.Second

// ServerView is a server with its computed availability and session counts.
type ServerView struct {
	*Server
	Availability         string
	UnavailabilityReason string
	VirtualSessions      int
	ConsoleSessions      int
	// Tags are the agent's tags plus the system tags (dcv:os-family, ...).
	Tags map[string]string
}

// SystemTags returns the tags the broker adds to every server.
func SystemTags(info *ServerInfo) map[string]string {
	fam := info.Host.OSFamily
	if fam == "" {
		fam = "linux"
	}
	m := map[string]string{"dcv:os-family": fam}
	if info.MaxVirtualSessions > 0 {
		m["dcv:max-virtual-sessions"] = strconv.Itoa(info.MaxVirtualSessions)
	} else {
		m["dcv:max-virtual-sessions"] = "unlimited"
	}
	if info.MaxConcurrentSessionsPerUser > 0 {
		m["dcv:max-concurrent-sessions-per-user"] = strconv.Itoa(info.MaxConcurrentSessionsPerUser)
	} else {
		m["dcv:max-concurrent-sessions-per-user"] = "unlimited"
	}
	return m
}

// view computes a server's availability from link state and counts: a
// server is AVAILABLE only while its agent is linked to some broker
// (links.go).
func (s *Service) view(srv *Server, counts map[string]Counts, now time.Time) *ServerView {
	link, _ := s.linkStatus(srv.ID, now)
	v := viewOf(srv, counts[srv.ID], link)
	return &v
}

// viewOf is the view of srv with session counts c and link state link.
func viewOf(srv *Server, c Counts, link linkStatus) ServerView {
	v := ServerView{Server: srv, VirtualSessions: c.Virtual, ConsoleSessions: c.Console, Availability: Available}
	v.Tags = srv.tags
	if v.Tags == nil {
		v.Tags = SystemTags(&srv.Info)
	}
	switch {
	case link == linkLost:
		v.UnavailabilityReason = ReasonUnreachableAgent
	case link == linkAwaited:
		v.UnavailabilityReason = ReasonUnknown
	case !srv.Info.Healthy:
		v.UnavailabilityReason = ReasonUnhealthy
	case !srv.Open:
		v.UnavailabilityReason = ReasonServerClosed
	case serverFull(&srv.Info, c):
		v.UnavailabilityReason = ReasonServerFull
	}
	if v.UnavailabilityReason != "" {
		v.Availability = Unavailable
	}
	return v
}

// serverFull reports whether a server with counts c has no room for one more
// session of the type it runs, CONSOLE on windows and VIRTUAL otherwise,
// whoever asks: the capacity rule, placement.Fits, refuses it to an owner
// with no session on the server.
func serverFull(info *ServerInfo, c Counts) bool {
	l := placement.Limits{MaxVirtual: info.MaxVirtualSessions, MaxPerUser: info.MaxConcurrentSessionsPerUser}
	a := placement.Ask{Console: info.Host.OSFamily == "windows"}
	return placement.Fits(l, placement.Counts{Virtual: c.Virtual, Console: c.Console}, a) != nil
}

// ServerByID returns the cached server, nil if unknown.
func (s *Service) ServerByID(id string) *Server { return s.servers.get(id) }

// ServerReachable reports whether the server's agent is linked to some
// broker, so that a command can reach it now.
func (s *Service) ServerReachable(id string) bool {
	return s.serverLinked(id, s.Now())
}

// DescribeServers lists servers. maxResults is 1..1000 (0 means 1000).
func (s *Service) DescribeServers(ctx context.Context, ids []string, maxResults int, nextToken string) ([]*ServerView, string, error) {
	if maxResults == 0 {
		maxResults = 1000
	}
	if maxResults < 1 || maxResults > 1000 {
		return nil, "", Errorf(CodeInvalidInput, "MaxResults: must be between 1 and 1000, got %d", maxResults)
	}
	fh := filterHash("servers", ids)
	after, err := s.decodeCursor(nextToken, fh)
	if err != nil {
		return nil, "", err
	}
	counts, err := s.servers.sessionCounts(ctx, s.store, countsMaxAge, s.Now())
	if err != nil {
		return nil, "", err
	}
	var want map[string]bool
	if len(ids) > 0 {
		want = make(map[string]bool, len(ids))
		for _, id := range ids {
			want[id] = true
		}
	}
	now := s.Now()
	var out []*ServerView
	next := ""
	for _, srv := range s.servers.all() {
		if srv.Seq <= after || (want != nil && !want[srv.ID]) {
			continue
		}
		if len(out) == maxResults {
			next = s.encodeCursor(out[len(out)-1].Seq, fh)
			break
		}
		out = append(out, s.view(srv, counts, now))
	}
	return out, next, nil
}

// ServerResult is the outcome of one Open/CloseServers item.
type ServerResult struct {
	ServerID      string
	FailureCode   string // empty on success
	FailureReason string
}

// Failure codes of Open/CloseServers.
const (
	FailureServerNotFound    = "DCV_SERVER_NOT_FOUND"
	FailureServerHasSessions = "DCV_SERVER_HAS_SESSIONS"
	FailureInvalidInput      = "INVALID_INPUT"
)

// OpenServers opens servers for placement.
func (s *Service) OpenServers(ctx context.Context, ids []string) []ServerResult {
	return s.setOpen(ctx, ids, nil, true)
}

// CloseServers closes servers for placement. Without force a server that runs
// sessions is not closed.
func (s *Service) CloseServers(ctx context.Context, ids []string, force []bool) []ServerResult {
	return s.setOpen(ctx, ids, force, false)
}

func (s *Service) setOpen(ctx context.Context, ids []string, force []bool, open bool) []ServerResult {
	out := make([]ServerResult, len(ids))
	for i, id := range ids {
		out[i].ServerID = id
		if id == "" {
			out[i].FailureCode, out[i].FailureReason = FailureInvalidInput, "ServerId: is required"
			continue
		}
		srv := s.servers.get(id)
		if srv == nil {
			out[i].FailureCode, out[i].FailureReason = FailureServerNotFound, "Dcv server not found."
			continue
		}
		if !open && !(i < len(force) && force[i]) {
			ss, err := s.store.ListSessions(ctx, SessionFilter{ServerID: id, States: []string{StateCreating, StateReady, StateDeleting, StateUnknown}, Limit: 1})
			if err != nil {
				out[i].FailureCode, out[i].FailureReason = CodeInternal, "could not check the server's sessions; retry"
				s.log.Error("close server: list sessions", logattr.ServerID, id, "err", err)
				continue
			}
			if len(ss) > 0 {
				out[i].FailureCode = FailureServerHasSessions
				out[i].FailureReason = "Dcv server is running sessions; delete them first or set Force to close it anyway."
				continue
			}
		}
		if err := s.store.SetServerOpen(ctx, id, open); err != nil {
			if errors.Is(err, ErrNotFound) {
				out[i].FailureCode, out[i].FailureReason = FailureServerNotFound, "Dcv server not found."
			} else {
				out[i].FailureCode, out[i].FailureReason = CodeInternal, "could not update the server; retry"
				s.log.Error("set server open", logattr.ServerID, id, "err", err)
			}
			continue
		}
		cp := *srv
		cp.Open = open
		s.servers.put(&cp)
		s.emitServerOpen(ctx, id, open, i < len(force) && force[i])
		if open {
			s.wakeQueue()
		}
	}
	return out
}

// AgentConnected registers or refreshes a server whose agent just opened its link
// and reconciles the broker's sessions with the agent's list. It returns
// ErrConflict if serverID belongs to another agent client.
//
// A relink that changes nothing stored writes no server row (relinkUnchanged):
// after a restart most of a fleet relinks with the report it last sent, and
// the row's contact time reaches the store with the next flush of LastSeen,
// so a reconnect storm costs no serialized store writes.
func (s *Service) AgentConnected(ctx context.Context, agentClientID, serverID string, info ServerInfo, sessions []SessionReport) error {
	if serverID == "" {
		return Errorf(CodeInvalidInput, "server ID is required")
	}
	now := s.Now()
	if cur := s.servers.get(serverID); cur != nil && s.relinkUnchanged(cur, agentClientID, &info) {
		cp := *cur
		cp.Info = info
		cp.LastSeen = now
		s.servers.put(&cp)
		if !infoEqual(&cur.Info, &info) {
			s.hosts.mark(serverID) // volatile figures only: flushed later
		}
	} else {
		srv := &Server{ID: serverID, AgentClientID: agentClientID, Open: true, LastSeen: now, BrokerID: s.cfg.BrokerID, CreatedAt: now, Info: info}
		if err := s.store.UpsertServer(ctx, srv); err != nil {
			return fmt.Errorf("register server %q: %w", serverID, err)
		}
		stored, err := s.store.GetServer(ctx, serverID)
		if err != nil {
			return fmt.Errorf("register server %q: %w", serverID, err)
		}
		s.servers.put(stored)
	}
	s.servers.seen(serverID, now)
	s.Emit(ctx, Event{Type: EventAgentLinked, ServerID: serverID, Data: map[string]any{"broker_id": s.cfg.BrokerID}})
	if err := s.reconcile(ctx, serverID, sessions, true); err != nil {
		return err
	}
	s.wakeQueue()
	return nil
}

// relinkUnchanged reports whether a link of agentClientID for the cached
// server cur may skip the server row's write: the row is bound to that
// client, names this broker as the link's holder, this broker has not seen
// the server's link close since it loaded it (a closed link may have been
// cleared in a shared store: LinkClearer), and the report moves volatile
// figures at most. Such a row differs from what UpsertServer would write
// only in LastSeen and those figures, which the seen and host-report flushes
// write in batches. The PostgreSQL cluster rule holds: the row keeps naming
// this broker, whose heartbeat other brokers check, and its contact time
// moves on with the flush.
func (s *Service) relinkUnchanged(cur *Server, agentClientID string, info *ServerInfo) bool {
	if cur.AgentClientID != agentClientID || cur.BrokerID != s.cfg.BrokerID || cur.BrokerID == "" {
		return false
	}
	s.servers.mu.RLock()
	_, closedHere := s.servers.linkDown[cur.ID]
	s.servers.mu.RUnlock()
	return !closedHere && onlyVolatile(&cur.Info, info)
}

// AgentUpdate records an agent's report. info and sessions may be nil when
// unchanged; with both nil it is a heartbeat.
func (s *Service) AgentUpdate(ctx context.Context, serverID string, info *ServerInfo, sessions []SessionReport) error {
	now := s.Now()
	if info != nil {
		if err := s.agentHostReport(ctx, serverID, info, now); err != nil {
			return err
		}
	}
	s.servers.seen(serverID, now)
	if sessions != nil {
		return s.reconcile(ctx, serverID, sessions, false)
	}
	return nil
}

// AgentDisconnected marks a server unreachable: its link to this broker closed.
func (s *Service) AgentDisconnected(ctx context.Context, serverID string) {
	s.servers.down(serverID, s.Now())
	s.Emit(ctx, Event{Type: EventAgentUnlinked, ServerID: serverID, Data: map[string]any{"broker_id": s.cfg.BrokerID}})
}

// reconcile makes the broker's sessions of a server agree with its agent's
// full list. Sessions the agent no longer has are DELETED (or re-sent if
// their create is lost); sessions the broker does not know are adopted;
// sessions the broker deleted or placed elsewhere are deleted on the host.
// It reads the server's live sessions once and writes every change in one
// store transaction (AgentSessionChanges applies an agent's changes without
// the read).
func (s *Service) reconcile(ctx context.Context, serverID string, reports []SessionReport, connect bool) error {
	s.learnGroups(reports) // quota.go
	stored, err := s.store.ListSessions(ctx, SessionFilter{ServerID: serverID, States: []string{StateCreating, StateReady, StateDeleting, StateUnknown}})
	if err != nil {
		return fmt.Errorf("reconcile %q: %w", serverID, err)
	}
	byID := make(map[string]*Session, len(stored))
	for _, x := range stored {
		byID[x.ID] = x
	}
	now := s.Now()
	adopted := false
	writes := make(map[string]*sessionWrite)
	var ids []string
	write := func(id string, w *sessionWrite) {
		if _, dup := writes[id]; !dup {
			ids = append(ids, id)
		}
		writes[id] = w
	}
	for i := range reports {
		r := &reports[i]
		cur, ok := byID[r.ID]
		if !ok {
			if _, dup := writes[r.ID]; !dup {
				s.adopt(ctx, serverID, r, now)
				adopted = adopted || r.State != StateDeleted
			}
			continue
		}
		delete(byID, r.ID)
		if r.State == StateDeleted {
			if cur.State != StateDeleting {
				write(r.ID, &sessionWrite{report: r})
			}
			continue
		}
		if cur.State == StateDeleting {
			if connect {
				// The agent restarted, or this broker did, while the delete was
				// under way: send it again (deletes are idempotent).
				s.queueDelete(deleteJob{sessionID: cur.ID, serverID: serverID})
			}
			continue
		}
		if sessionDiffers(cur, r) {
			write(r.ID, &sessionWrite{report: r})
		}
	}
	for _, x := range byID {
		switch {
		case x.State == StateDeleting:
			write(x.ID, &sessionWrite{})
		case x.State == StateCreating:
			if _, busy := s.inflight.Load(x.ID); !busy && connect {
				// The create was lost (broker or agent restarted): send it again.
				s.queueCreate(x.ID)
			}
		default:
			write(x.ID, &sessionWrite{reason: "the session no longer exists on the server"})
		}
	}
	if _, err := s.writeSessions(ctx, serverID, ids, writes); err != nil {
		return fmt.Errorf("reconcile: %w", err)
	}
	return nil
}

func sessionDiffers(cur *Session, r *SessionReport) bool {
	state := r.State
	if state == "" {
		state = StateReady
	}
	return cur.State != state || cur.NumOfConnections != r.NumOfConnections ||
		!cur.LastDisconnectionTime.Equal(r.LastDisconnectionTime) || !cur.LastInputTime.Equal(r.LastInputTime) ||
		(state == StateReady && cur.Substate != "") || cur.StateReason != r.StateReason
}

func applyReport(x *Session, r *SessionReport, now time.Time) {
	state := r.State
	if state == "" {
		state = StateReady
	}
	if x.State != state {
		x.UpdatedAt = now
	}
	x.State = state
	if state == StateReady {
		x.Substate = ""
	} else if state == StateCreating {
		x.Substate = SubstatePendingPreparation
	}
	x.StateReason = r.StateReason
	x.NumOfConnections = r.NumOfConnections
	x.LastDisconnectionTime = r.LastDisconnectionTime
	x.LastInputTime = r.LastInputTime
}

// adopt handles a session the agent runs but this server has no record of.
func (s *Service) adopt(ctx context.Context, serverID string, r *SessionReport, now time.Time) {
	defer s.servers.tally.begin()()
	if r.State == StateDeleted {
		return
	}
	known, err := s.store.GetSession(ctx, r.ID)
	switch {
	case err == nil && (known.State == StateDeleted || known.ServerID != serverID):
		// Deleted by the broker (possibly with Force while the server was away),
		// or placed elsewhere after a timed-out create: remove it from the host.
		s.log.Info("deleting orphan session on server", logattr.SessionID, r.ID, logattr.ServerID, serverID)
		s.queueDelete(deleteJob{sessionID: r.ID, serverID: serverID, orphan: true})
		return
	case err == nil:
		return
	case !errors.Is(err, ErrNotFound):
		s.log.Error("adopt session", logattr.SessionID, r.ID, "err", err)
		return
	}
	x := adoptedSession(serverID, r, now)
	s.stampDue(ctx, x)
	s.attachEvents(nil, x)
	err = s.store.InsertSessions(ctx, []*Session{x})
	s.eventsWritten(x)
	if err != nil && !errors.Is(err, ErrConflict) {
		s.log.Error("adopt session", logattr.SessionID, r.ID, "err", err)
		return
	}
	if err == nil {
		s.sessionsInserted([]*Session{x})
	}
	s.log.Info("adopted session created on the server", logattr.SessionID, r.ID, logattr.ServerID, serverID)
}

// ViewServer returns the server with its current availability and counts.
func (s *Service) ViewServer(ctx context.Context, srv *Server) *ServerView {
	now := s.Now()
	counts, err := s.servers.sessionCounts(ctx, s.store, countsMaxAge, now)
	if err != nil {
		s.log.Warn("count sessions for server view", "err", err)
	}
	return s.view(srv, counts, now)
}

package broker

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/berth-dev/berth/internal/logattr"
	"github.com/berth-dev/berth/internal/permfile"
)

// newSessionID returns a random UUID (version 4) string.
func newSessionID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

// DescribeQuery selects sessions for DescribeSessions.
type DescribeQuery struct {
	SessionIDs []string
	// Filters are the request's Key/Value pairs: "owner" and "tag:KEY".
	Filters    [][2]string
	MaxResults int // 1..1000; 0 means 1000
	NextToken  string
	// States and ServerID narrow the sessions in the store: berth's own
	// filters (the portal's admin pages), not the Session Manager API's.
	// A state is the stored one: a READY session of an unreachable server
	// is listed for READY and shows as UNKNOWN (StatesShowing maps a shown
	// state to the stored ones).
	States   []string
	ServerID string
}

// StatesShowing returns the stored states of the sessions that show as
// state: UNKNOWN is stored UNKNOWN, or READY on an unreachable server.
func StatesShowing(state string) []string {
	if state == StateUnknown {
		return []string{StateReady, StateUnknown}
	}
	return []string{state}
}

// SessionView is a session with the state a client should see: a READY session
// whose server is unreachable shows as UNKNOWN.
type SessionView struct {
	*Session
	Server *Server // nil while unplaced or when the server is gone
}

// DescribeSessions lists sessions in creation order, a page at a time.
func (s *Service) DescribeSessions(ctx context.Context, q DescribeQuery) ([]SessionView, string, error) {
	f, fh, err := s.describeFilter(q)
	if err != nil {
		return nil, "", err
	}
	list, err := s.store.ListSessions(ctx, f)
	if err != nil {
		return nil, "", err
	}
	next := ""
	if len(list) > q.limit() {
		list = list[:q.limit()]
		next = s.encodeCursor(list[len(list)-1].Seq, fh)
	}
	out := make([]SessionView, len(list))
	now := s.Now()
	for i, sess := range list {
		out[i] = s.sessionView(sess, now)
	}
	return out, next, nil
}

// limit is the page size q asks for.
func (q *DescribeQuery) limit() int {
	if q.MaxResults == 0 {
		return 1000
	}
	return q.MaxResults
}

// describeFilter checks q and returns the store filter of its page (one
// more than the page, to tell whether another follows) and the hash its
// cursors carry.
func (s *Service) describeFilter(q DescribeQuery) (SessionFilter, []byte, error) {
	max := q.limit()
	if max < 1 || max > 1000 {
		return SessionFilter{}, nil, Errorf(CodeInvalidInput, "MaxResults: must be between 1 and 1000, got %d", q.MaxResults)
	}
	if len(q.SessionIDs) > 1000 {
		return SessionFilter{}, nil, Errorf(CodeInvalidInput, "SessionIds: at most 1000 IDs per request")
	}
	f := SessionFilter{IDs: q.SessionIDs, Limit: max + 1, States: q.States, ServerID: q.ServerID}
	for i, kv := range q.Filters {
		k, v := kv[0], kv[1]
		switch {
		case strings.EqualFold(k, "owner"):
			if f.Owner != "" && f.Owner != v {
				return SessionFilter{}, nil, Errorf(CodeInvalidInput, "Filters[%d]: only one owner filter is supported", i)
			}
			f.Owner = v
		case strings.HasPrefix(strings.ToLower(k), "tag:") && len(k) > 4:
			if f.Tags == nil {
				f.Tags = map[string]string{}
			}
			f.Tags[k[4:]] = v
		default:
			return SessionFilter{}, nil, Errorf(CodeInvalidInput, "Filters[%d].Key: unsupported filter %q (supported: owner, tag:KEY)", i, truncate(k, 64))
		}
	}
	if len(q.Filters) > 50 {
		return SessionFilter{}, nil, Errorf(CodeInvalidInput, "Filters: at most 50 filters per request")
	}
	parts := []any{"sessions", q.SessionIDs, f.Owner, f.Tags}
	if len(q.States) > 0 || q.ServerID != "" {
		parts = append(parts, "states", q.States, "server", q.ServerID)
	}
	fh := filterHash(parts...)
	after, err := s.decodeCursor(q.NextToken, fh)
	if err != nil {
		return SessionFilter{}, nil, err
	}
	f.AfterSeq = after
	return f, fh, nil
}

// reasonUnreachableSession is the StateReason of a READY session shown as
// UNKNOWN because its server's agent is unreachable.
const reasonUnreachableSession = "the agent of the session's server is unreachable"

func (s *Service) sessionView(sess *Session, now time.Time) SessionView {
	v := SessionView{Session: sess}
	if sess.ServerID != "" {
		v.Server = s.servers.get(sess.ServerID)
		if sess.State == StateReady && (v.Server == nil || !s.servers.unreachableSince(sess.ServerID, s.heartbeatTimeout(), now).IsZero()) {
			cp := *sess
			cp.State = StateUnknown
			cp.StateReason = reasonUnreachableSession
			v.Session = &cp
		}
	}
	return v
}

// DeleteRequest is one DeleteSessions item.
type DeleteRequest struct {
	SessionID string
	Owner     string
	Force     bool
}

// DeleteResult is the outcome of one DeleteSessions item.
type DeleteResult struct {
	SessionID     string
	State         string // DELETING or DELETED on success
	FailureReason string
}

type deleteJob struct {
	sessionID string
	serverID  string
	orphan    bool // delete on the host only; the broker's record is already gone
}

// Failure reasons shared with clients that match on them.
const (
	reasonSessionNotExist = "The requested dcvSession does not exist"
	reasonOwnerMismatch   = "The owner does not match the owner of the session"
)

// DeleteSessions starts deleting sessions: each accepted one is DELETING until its
// agent confirms (then DELETED). Force drops the session from the broker at once,
// even when its server is unreachable.
func (s *Service) DeleteSessions(ctx context.Context, reqs []DeleteRequest) []DeleteResult {
	out := make([]DeleteResult, len(reqs))
	now := s.Now()
	for i, r := range reqs {
		out[i].SessionID = r.SessionID
		if r.SessionID == "" {
			out[i].FailureReason = "SessionId: is required"
			continue
		}
		if err := ValidateUserName("Owner", r.Owner); err != nil {
			out[i].FailureReason = err.Error()
			continue
		}
		var job *deleteJob
		state := ""
		err := s.updateSession(ctx, r.SessionID, func(x *Session) error {
			switch {
			case x.Owner != r.Owner:
				return refusal(reasonOwnerMismatch)
			case x.State == StateDeleted:
				return refusal(reasonSessionNotExist)
			case x.State == StateDeleting && !r.Force:
				state = StateDeleting
				return errUnchanged
			}
			x.UpdatedAt = now
			if x.ServerID == "" || r.Force {
				if x.ServerID != "" {
					job = &deleteJob{sessionID: x.ID, serverID: x.ServerID, orphan: true}
				}
				x.State, x.Substate, x.Enqueued = StateDeleted, "", false
				x.StateReason = "deleted by request"
				if r.Force && x.ServerID != "" {
					x.StateReason = "deleted by request (Force)"
				}
				state = StateDeleted
				return nil
			}
			if !s.ServerReachable(x.ServerID) {
				return refusal("the session's server is unreachable; retry later, or set Force to remove the session from the broker")
			}
			x.State, x.Substate, x.StateReason = StateDeleting, "", ""
			job = &deleteJob{sessionID: x.ID, serverID: x.ServerID}
			state = StateDeleting
			return nil
		})
		switch {
		case errors.Is(err, ErrNotFound):
			out[i].FailureReason = reasonSessionNotExist
			continue
		case errors.Is(err, errUnchanged):
		case err != nil:
			var rf refusal
			if errors.As(err, &rf) {
				out[i].FailureReason = string(rf)
			} else {
				out[i].FailureReason = "could not delete the session; retry"
				s.log.Error("delete session", logattr.SessionID, r.SessionID, "err", err)
			}
			continue
		}
		out[i].State = state
		if state == StateDeleted {
			s.wakeQueue()
		}
		if job != nil {
			s.queueDelete(*job)
		}
	}
	return out
}

// refusal is a reason to refuse an item, returned from inside a store update.
type refusal string

func (r refusal) Error() string { return string(r) }

// PermissionsRequest is one UpdateSessionPermissions item.
type PermissionsRequest struct {
	SessionID       string
	Owner           string
	PermissionsFile string // base64
}

// UpdateSessionPermissions validates each permissions file and forwards it to
// the session's agent, which applies it live. It returns a failure reason per
// item ("" on success).
func (s *Service) UpdateSessionPermissions(ctx context.Context, reqs []PermissionsRequest) []string {
	out := make([]string, len(reqs))
	for i, r := range reqs {
		sess, reason := s.ownedReady(ctx, r.SessionID, r.Owner)
		if reason != "" {
			out[i] = reason
			continue
		}
		text, err := decodePermissions("PermissionsFile", r.PermissionsFile)
		if r.PermissionsFile == "" {
			err = fmt.Errorf("PermissionsFile: is required")
		}
		if err != nil {
			out[i] = err.Error()
			continue
		}
		cctx, cancel := context.WithTimeout(ctx, s.cfg.CommandTimeout)
		_, err = s.disp.Dispatch(cctx, sess.ServerID, Command{Kind: CommandPermissions, SessionID: sess.ID, Permissions: text})
		cancel()
		if err != nil {
			out[i] = s.commandFailure(err)
			continue
		}
		err = s.store.UpdateSession(ctx, sess.ID, func(x *Session) error {
			old := *x
			x.Spec.PermissionsFile = text
			s.attachEvents(&old, x)
			return nil
		})
		s.hub.notify()
		if err != nil {
			s.log.Error("store session permissions", logattr.SessionID, sess.ID, "err", err)
			out[i] = "the permissions were applied on the server but could not be recorded; retry"
			continue
		}
		s.recordShares(ctx, sess, text) // shares.go: who the file shares the session with
	}
	return out
}

// commandFailure turns a dispatch error into a client-safe reason.
func (s *Service) commandFailure(err error) string {
	var ce *CommandError
	switch {
	case errors.As(err, &ce):
		return ce.Reason
	case errors.Is(err, ErrAgentUnreachable):
		return "the agent of the session's server is unreachable"
	case errors.Is(err, context.DeadlineExceeded):
		return "the agent did not answer in time"
	default:
		return "the command could not be delivered to the agent"
	}
}

// ownedReady loads a session and checks owner and READY state; it returns a
// failure reason or the session.
func (s *Service) ownedReady(ctx context.Context, id, owner string) (*Session, string) {
	if id == "" {
		return nil, "SessionId: is required"
	}
	if err := ValidateUserName("Owner", owner); err != nil {
		return nil, err.Error()
	}
	sess, err := s.store.GetSession(ctx, id)
	if err != nil {
		if errors.Is(err, ErrNotFound) {
			return nil, reasonSessionNotExist
		}
		s.log.Error("get session", logattr.SessionID, id, "err", err)
		return nil, "could not read the session; retry"
	}
	if sess.Owner != owner {
		return nil, reasonOwnerMismatch
	}
	if sess.State == StateDeleted {
		return nil, reasonSessionNotExist
	}
	if v := s.sessionView(sess, s.Now()); v.State != StateReady {
		return nil, fmt.Sprintf("the session is %s, not READY", v.State)
	}
	return sess, ""
}

// ConnectionData is the answer of GetSessionConnectionData.
type ConnectionData struct {
	View  SessionView
	Token string
}

// GetSessionConnectionData returns a READY session and a ConnectionToken for
// user, if the session's permissions let user connect.
func (s *Service) GetSessionConnectionData(ctx context.Context, sessionID, user string) (*ConnectionData, error) {
	if sessionID == "" || len(sessionID) > 256 {
		return nil, Errorf(CodeInvalidInput, "sessionId: must be 1 to 256 characters")
	}
	if err := ValidateUserName("user", user); err != nil {
		return nil, Errorf(CodeInvalidInput, "%v", err)
	}
	sess, err := s.store.GetSession(ctx, sessionID)
	if errors.Is(err, ErrNotFound) || (err == nil && sess.State == StateDeleted) {
		return nil, Errorf(CodeNotFound, "session %q does not exist", sessionID)
	}
	if err != nil {
		return nil, err
	}
	v := s.sessionView(sess, s.Now())
	if v.State != StateReady {
		return nil, Errorf(CodeNotReady, "session %q is %s, not READY", sessionID, v.State)
	}
	pf := permfile.Default()
	if sess.Spec.PermissionsFile != "" {
		if pf, err = permfile.Parse(sess.Spec.PermissionsFile); err != nil {
			return nil, fmt.Errorf("stored permissions of %q: %w", sessionID, err)
		}
	}
	if !pf.CanConnect(user, sess.Owner, nil) {
		return nil, Errorf(CodeForbidden, "user %q is not allowed to connect to session %q by its permissions", user, sessionID)
	}
	tok, err := s.tokens.IssueConnectionToken(ctx, sess.ID, sess.Owner, user)
	if err != nil {
		return nil, fmt.Errorf("issue connection token: %w", err)
	}
	return &ConnectionData{View: v, Token: tok}, nil
}

// ScreenshotRequest is one GetSessionScreenshots item.
type ScreenshotRequest struct {
	SessionID string
	MaxWidth  *int64
	MaxHeight *int64
}

// ScreenshotResult is the outcome of one GetSessionScreenshots item.
type ScreenshotResult struct {
	Images        []Image
	FailureReason string
}

// maxScreenshotSide caps requested screenshot sizes (8K).
const maxScreenshotSide = 8192

// GetSessionScreenshots asks the agents of READY sessions for screenshots, in
// parallel.
func (s *Service) GetSessionScreenshots(ctx context.Context, reqs []ScreenshotRequest) []ScreenshotResult {
	out := make([]ScreenshotResult, len(reqs))
	done := make(chan struct{}, len(reqs))
	for i, r := range reqs {
		w, h := int64(s.cfg.ScreenshotMaxWidth), int64(s.cfg.ScreenshotMaxHeight)
		if r.MaxWidth != nil {
			w = *r.MaxWidth
		}
		if r.MaxHeight != nil {
			h = *r.MaxHeight
		}
		switch {
		case r.SessionID == "":
			out[i].FailureReason = "SessionId: is required"
		case w < 1 || w > maxScreenshotSide:
			out[i].FailureReason = fmt.Sprintf("MaxWidth: must be between 1 and %d", maxScreenshotSide)
		case h < 1 || h > maxScreenshotSide:
			out[i].FailureReason = fmt.Sprintf("MaxHeight: must be between 1 and %d", maxScreenshotSide)
		}
		if out[i].FailureReason != "" {
			done <- struct{}{}
			continue
		}
		go func() {
			defer func() { done <- struct{}{} }()
			sess, err := s.store.GetSession(ctx, r.SessionID)
			if err != nil || sess.State == StateDeleted {
				out[i].FailureReason = "Dcv session not found."
				return
			}
			if v := s.sessionView(sess, s.Now()); v.State != StateReady {
				out[i].FailureReason = fmt.Sprintf("the session is %s, not READY", v.State)
				return
			}
			cctx, cancel := context.WithTimeout(ctx, s.cfg.CommandTimeout)
			defer cancel()
			res, err := s.disp.Dispatch(cctx, sess.ServerID, Command{Kind: CommandScreenshot, SessionID: sess.ID,
				Screenshot: &ScreenshotCommand{MaxWidth: int(w), MaxHeight: int(h), Format: s.cfg.ScreenshotFormat}})
			if err != nil {
				out[i].FailureReason = s.commandFailure(err)
				return
			}
			out[i].Images = res.Images
		}()
	}
	for range reqs {
		<-done
	}
	return out
}

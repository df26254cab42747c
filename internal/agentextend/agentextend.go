// Package agentextend is the broker's side of the session page's Extend
// button: POST /agent/sessions/{id}/extend on the agent port. The web
// gateway of a vnc host takes the page's request (the user's connection
// token checked there) and its agent forwards it here, authenticated with
// the agent client credentials exactly as POST /agent/certificate is. The
// broker accepts it only from the agent client that owns the server the
// session is placed on, and extends on behalf of the named user, who must
// be the session's owner (broker.ExtendRequest.Owner).
//
// The request body is {"user": "alice", "by_seconds": 3600} (by_seconds 0
// or absent: the broker's default extension). The answer is 200 with
// {"deadline": RFC 3339}, or a 4xx (503 while the broker cannot extend)
// with a plain-text message that is safe to show the user.
package agentextend

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"time"

	"github.com/berth-dev/berth/internal/broker"
	"github.com/berth-dev/berth/internal/logattr"
	"github.com/berth-dev/berth/internal/username"
)

// MaxRequestBytes caps the size of a request body.
const MaxRequestBytes = 4 << 10

// maxBy bounds by_seconds: ten years, far above any extension cap, and far
// below a time.Duration overflow.
const maxBy = 10 * 365 * 24 * 3600

// Authenticator checks agent client credentials and returns the client ID.
type Authenticator interface {
	AuthenticateAgent(ctx context.Context, id, secret string) (string, error)
}

// Sessions finds a session and the server it is placed on;
// *broker.Service implements it.
type Sessions interface {
	SessionForConnection(ctx context.Context, id string) (*broker.SessionView, error)
}

// Extender extends a session's lifetime; *broker.Service implements it.
type Extender interface {
	ExtendSession(ctx context.Context, r broker.ExtendRequest) (time.Time, error)
}

// Handler serves POST /agent/sessions/{id}/extend.
type Handler struct {
	Auth     Authenticator
	Sessions Sessions
	Extender Extender
	Logger   *slog.Logger
}

// request is the body of a request.
type request struct {
	User      string `json:"user"`
	BySeconds *int64 `json:"by_seconds"`
}

// Response is the answer to an accepted request.
type Response struct {
	// Deadline is when the session's lifetime now ends.
	Deadline time.Time `json:"deadline"`
}

// ServeHTTP implements http.Handler.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	log := h.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	id, secret, ok := r.BasicAuth()
	if !ok {
		w.Header().Set("WWW-Authenticate", `Basic realm="berth agents"`)
		refuse(w, http.StatusUnauthorized, "agent client credentials are required")
		return
	}
	clientID, err := h.Auth.AuthenticateAgent(r.Context(), id, secret)
	if err != nil {
		refuse(w, http.StatusUnauthorized, "invalid agent client credentials")
		return
	}
	sid := r.PathValue("id")
	if sid == "" || len(sid) > 256 {
		refuse(w, http.StatusBadRequest, "session id: must be 1 to 256 characters")
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxRequestBytes))
	if err != nil {
		refuse(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("body: larger than %d KiB", MaxRequestBytes>>10))
		return
	}
	var req request
	if err := json.Unmarshal(body, &req); err != nil {
		refuse(w, http.StatusBadRequest, "body: not a JSON object with user and by_seconds: "+err.Error())
		return
	}
	if err := username.Check(req.User); err != nil {
		refuse(w, http.StatusBadRequest, "user: "+err.Error())
		return
	}
	var by time.Duration
	if b := req.BySeconds; b != nil {
		if *b < 0 || *b > maxBy {
			refuse(w, http.StatusBadRequest, fmt.Sprintf("by_seconds: must be 0 (the default extension) to %d", maxBy))
			return
		}
		by = time.Duration(*b) * time.Second
	}
	// The session must be on a server of this agent client: an agent
	// extends only the sessions it runs.
	sess, err := h.Sessions.SessionForConnection(r.Context(), sid)
	switch {
	case broker.ErrorCode(err) == broker.CodeNotFound || err == nil && (sess.Server == nil || sess.Server.AgentClientID != clientID):
		log.Warn("session extension refused: not a session of this agent", logattr.AgentID, clientID, logattr.SessionID, sid)
		refuse(w, http.StatusNotFound, fmt.Sprintf("session %q is not a session of this agent", sid))
		return
	case err != nil:
		h.fail(w, log, clientID, sid, err)
		return
	}
	deadline, err := h.Extender.ExtendSession(r.Context(), broker.ExtendRequest{
		SessionID: sid, By: by, Actor: "page:" + req.User, Owner: req.User,
	})
	if err != nil {
		h.fail(w, log, clientID, sid, err)
		return
	}
	log.Info("session extended from its page", logattr.AgentID, clientID, logattr.SessionID, sid, logattr.User, req.User, "deadline", deadline)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	_ = json.NewEncoder(w).Encode(Response{Deadline: deadline.UTC()})
}

// statusOf maps broker error codes to statuses. Unlike the public API,
// which answers 400 for every lookup failure as the reference does, this
// endpoint has no reference to follow.
var statusOf = map[string]int{
	broker.CodeInvalidInput: http.StatusBadRequest,
	broker.CodeNotFound:     http.StatusNotFound,
	broker.CodeNotReady:     http.StatusConflict,
	broker.CodeForbidden:    http.StatusForbidden,
	broker.CodeUnavailable:  http.StatusServiceUnavailable,
}

// fail answers a broker error: its message for a coded refusal, a generic
// text (the cause logged) for anything else.
func (h *Handler) fail(w http.ResponseWriter, log *slog.Logger, clientID, sid string, err error) {
	var be *broker.Error
	if errors.As(err, &be) {
		if status, ok := statusOf[be.Code]; ok {
			refuse(w, status, be.Message)
			return
		}
	}
	if errors.Is(err, broker.ErrStoreUnavailable) {
		refuse(w, http.StatusServiceUnavailable, broker.ErrStoreUnavailable.Error())
		return
	}
	log.Error("session extension failed", logattr.AgentID, clientID, logattr.SessionID, sid, "err", err)
	refuse(w, http.StatusInternalServerError, "internal error; the broker logged the cause")
}

// refuse writes a plain-text refusal.
func refuse(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("Cache-Control", "no-store")
	http.Error(w, msg, status)
}

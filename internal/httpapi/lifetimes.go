package httpapi

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"time"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/internal/broker"
)

// Operation names of berth's session lifetime API (berth's extension).
const (
	OpExtendSession      = "ExtendSession"
	OpGetSessionLifetime = "GetSessionLifetime"
)

// lifetimeOperations are the operations of the session lifetime API.
func lifetimeOperations() []string { return []string{OpExtendSession, OpGetSessionLifetime} }

// lifetimeRoutes registers the session lifetime API with api.
func (s *Server) lifetimeRoutes(api func(pattern, op string, h func(http.ResponseWriter, *http.Request) error)) {
	api("POST /berth/v1/sessions/{id}/extend", OpExtendSession, s.extendSession)
	api("GET /berth/v1/sessions/{id}/lifetime", OpGetSessionLifetime, s.sessionLifetime)
}

// maxExtension bounds By before the session's own cap is known.
const maxExtension = 100 * 365 * 24 * time.Hour

// parseBy reads the By of an extension: a JSON string holding a Go
// duration ("2h", "90m") or a number of seconds, or a JSON number of
// seconds; absent or null is 0 (the default extension).
func parseBy(raw json.RawMessage) (time.Duration, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" {
		return 0, nil
	}
	bad := func(why string) error {
		return &httpError{status: http.StatusBadRequest, code: broker.CodeInvalidInput,
			msg: "By: " + why + ` (a duration such as "2h" or "90m", or a number of seconds)`}
	}
	var secs float64
	if raw[0] == '"' {
		var text string
		if err := json.Unmarshal(raw, &text); err != nil {
			return 0, bad("is not a string")
		}
		if d, err := time.ParseDuration(text); err == nil {
			switch {
			case d <= 0:
				return 0, bad(fmt.Sprintf("must be positive, got %q", text))
			case d > maxExtension:
				return 0, bad("is too long")
			}
			return d, nil
		}
		n, err := strconv.ParseFloat(text, 64)
		if err != nil {
			return 0, bad(fmt.Sprintf("%q is not a duration", truncateText(text, 64)))
		}
		secs = n
	} else if err := json.Unmarshal(raw, &secs); err != nil {
		return 0, bad("must be a string or a number")
	}
	switch {
	case math.IsNaN(secs) || secs <= 0:
		return 0, bad("must be positive")
	case secs > maxExtension.Seconds():
		return 0, bad("is too long")
	}
	return time.Duration(secs * float64(time.Second)), nil
}

// truncateText cuts s to n bytes for an error message.
func truncateText(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}

func (s *Server) extendSession(w http.ResponseWriter, r *http.Request) error {
	var in api.ExtendSessionRequest
	if err := decode(w, r, &in, true); err != nil {
		return err
	}
	by, err := parseBy(in.By)
	if err != nil {
		return err
	}
	actor := "api"
	if p := PrincipalFrom(r.Context()); p != nil {
		actor = "api client " + p.ClientID
	}
	id := r.PathValue("id")
	dl, err := s.Service.ExtendSession(r.Context(), broker.ExtendRequest{SessionID: id, By: by, Owner: in.Owner, Actor: actor})
	if err != nil {
		return berthError(err)
	}
	writeJSON(w, http.StatusOK, api.ExtendSessionResponse{RequestId: requestID(), SessionId: id, ExpiresAt: dl.UTC()})
	return nil
}

func (s *Server) sessionLifetime(w http.ResponseWriter, r *http.Request) error {
	id := r.PathValue("id")
	lt, err := s.Service.SessionLifetime(r.Context(), id, r.URL.Query().Get("owner"))
	if err != nil {
		return berthError(err)
	}
	ptr := func(t time.Time) *time.Time {
		if t.IsZero() {
			return nil
		}
		t = t.UTC()
		return &t
	}
	writeJSON(w, http.StatusOK, api.SessionLifetimeResponse{
		RequestId: requestID(), SessionId: id, ExpiresAt: ptr(lt.Expires),
		ExtensionSeconds: int64(lt.Extension / time.Second), ExtensionLeftSeconds: int64(lt.ExtensionLeft / time.Second),
		IdleDisconnectAt: ptr(lt.IdleDisconnect), DisconnectedDeleteAt: ptr(lt.DisconnectedDelete),
		LastInputTime: ptr(lt.LastInputTime), NumOfConnections: lt.NumOfConnections,
	})
	return nil
}

package httpapi

import (
	"net/http"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/internal/broker"
)

// OpDescribeQueue names GET /berth/v1/queue (berth's extension).
const OpDescribeQueue = "DescribeQueue"

// quotaRoutes registers the queue API with api.
func (s *Server) quotaRoutes(api func(pattern, op string, h func(http.ResponseWriter, *http.Request) error)) {
	api("GET /berth/v1/queue", OpDescribeQueue, s.describeQueue)
}

// describeQueue answers the sessions waiting in the create queue, in the
// order the queue serves them (round-robin across owners), each with its
// position and why it waits.
func (s *Server) describeQueue(w http.ResponseWriter, r *http.Request) error {
	q, err := s.Service.Queue(r.Context())
	if err != nil {
		return berthError(err)
	}
	resp := api.DescribeQueueResponse{RequestId: requestID(), Queue: make([]api.QueueEntry, len(q))}
	for i, e := range q {
		resp.Queue[i] = api.QueueEntry{Position: e.Position, SessionId: e.SessionID, Owner: e.Owner, Reason: e.Reason}
		if !e.EnqueuedAt.IsZero() {
			at := e.EnqueuedAt.UTC()
			resp.Queue[i].EnqueuedAt = &at
		}
	}
	writeJSON(w, http.StatusOK, resp)
	return nil
}

// limitsFromAPI converts a template's limits from the wire.
func limitsFromAPI(l *api.TemplateLimits) broker.SessionLimits {
	if l == nil {
		return broker.SessionLimits{}
	}
	return broker.SessionLimits{
		IdleTimeoutMinutes: l.IdleTimeoutMinutes, DisconnectedTimeoutMinutes: l.DisconnectedTimeoutMinutes,
		MaxLifetimeHours: l.MaxLifetimeHours, MaxExtensionHours: l.MaxExtensionHours,
		MaxSessions: l.MaxSessions, MaxGPUs: l.MaxGPUs,
	}
}

// limitsToAPI converts a template's limits for the wire; nil when none is set.
func limitsToAPI(l broker.SessionLimits) *api.TemplateLimits {
	if l == (broker.SessionLimits{}) {
		return nil
	}
	return &api.TemplateLimits{
		IdleTimeoutMinutes: l.IdleTimeoutMinutes, DisconnectedTimeoutMinutes: l.DisconnectedTimeoutMinutes,
		MaxLifetimeHours: l.MaxLifetimeHours, MaxExtensionHours: l.MaxExtensionHours,
		MaxSessions: l.MaxSessions, MaxGPUs: l.MaxGPUs,
	}
}

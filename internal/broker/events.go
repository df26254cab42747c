package broker

import (
	"context"
	"time"
)

// Event types: every change berth makes observable (docs/events.md).
const (
	EventSessionState       = "session.state"       // a session's state changed: state, substate, reason, previous_state
	EventSessionPermissions = "session.permissions" // a session's permissions changed
	EventSessionExtended    = "session.extended"    // a session's lifetime was extended: expires_at, by
	EventServerAvailability = "server.availability" // a server's availability changed: availability, reason
	EventServerOpened       = "server.opened"       // OpenServers opened a server
	EventServerClosed       = "server.closed"       // CloseServers closed a server
	EventAgentLinked        = "agent.linked"        // a server's agent linked to a broker
	EventAgentUnlinked      = "agent.unlinked"      // a server's agent link was lost
	EventPlacementFailed    = "placement.failed"    // a create failed to find a server: reason
	EventPlacementQueued    = "placement.queued"    // a create waits in the queue: reason
	EventQuotaRefused       = "quota.refused"       // a quota refused or held a create: quota, use, max
	EventLifetimeWarning    = "lifetime.warning"    // a lifetime policy warned the clients: policy, deadline
	EventLifetimeAction     = "lifetime.action"     // a lifetime policy acted: policy, action, reason
	EventScalingShortfall   = "scaling.shortfall"   // requests ask for capacity no open server offers
	EventServerIdle         = "server.idle"         // a server has had no session for a while
	EventWebhookDisabled    = "webhook.disabled"    // a webhook endpoint was disabled after sustained failure
)

// Event is one observable change. The store assigns ID, which increases in
// commit order across every broker of a cluster, so that a reader that
// resumes after an ID misses none and repeats none.
type Event struct {
	ID        int64
	Time      time.Time
	Type      string
	SessionID string
	ServerID  string
	Owner     string
	// Data holds the event's details (a JSON object).
	Data map[string]any
}

// EventFilter selects events. Zero fields do not filter.
type EventFilter struct {
	// AfterID keeps events with ID > AfterID.
	AfterID int64
	// Types keeps events of these types; a type ending in ".*" matches
	// its prefix ("session.*").
	Types []string
	Owner string
	// Limit caps the result (ordered by ID); 0 means the store's default.
	Limit int
}

// EventStore keeps events. Both stores implement it; the Service finds it
// on its Store by a type assertion.
type EventStore interface {
	// AppendEvents stores events and sets their ID and, if zero, Time.
	AppendEvents(ctx context.Context, evs []*Event) error
	// ListEvents returns the events f selects, ordered by ID.
	ListEvents(ctx context.Context, f EventFilter) ([]*Event, error)
	// PurgeEvents removes events older than before.
	PurgeEvents(ctx context.Context, before time.Time) (int, error)
}

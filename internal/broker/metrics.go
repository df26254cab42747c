package broker

import (
	"context"
	"errors"
	"time"

	"github.com/berth-dev/berth/internal/placement"
)

// Metrics is told of the broker core's events, for monitoring. The broker
// never imports a metrics library: cmd/berth-broker gives the Service an
// implementation with SetMetrics. Methods are called on the request and
// worker paths, so they must be quick and safe for concurrent use.
type Metrics interface {
	// Placed counts n sessions committed on a server (new sessions, queued
	// ones and retries after a failed create).
	Placed(n int)
	// PlacementFailed counts one session that ended without a server, or was
	// refused one: reason is one of PlacementFailureReasons.
	PlacementFailed(reason string)
	// CreateFailed counts one create command that failed on a server (the
	// session may be retried elsewhere): reason is one of CreateFailureReasons.
	CreateFailed(reason string)
	// QueueWait records how long a queued session waited, from entering the
	// queue to its placement.
	QueueWait(d time.Duration)
}

// Reasons given to Metrics.PlacementFailed: a small fixed set, never free
// text, so that each is one time series.
const (
	// FailNoServers: no server was open, healthy and reachable.
	FailNoServers = "no_servers"
	// FailNoMatch: no server matched the requirements, OS or DCV GL (or
	// each that did had already failed the session).
	FailNoMatch = "no_match"
	// FailFull: the servers that matched had no room.
	FailFull = "full"
	// FailQueueFull: the session asked to queue and the queue was full.
	FailQueueFull = "queue_full"
	// FailQueueTimeout: the session waited in the queue longer than
	// create-sessions-queue-max-time-seconds.
	FailQueueTimeout = "queue_timeout"
	// FailCreate: the create failed on a server and no retry was left.
	FailCreate = "create_failed"
	// FailStore: the store could not commit the placement.
	FailStore = "store_error"
	// FailQuota: a user, group or template quota refused the session.
	FailQuota = "quota"
)

// PlacementFailureReasons lists every reason of Metrics.PlacementFailed.
func PlacementFailureReasons() []string {
	return []string{FailNoServers, FailNoMatch, FailFull, FailQueueFull, FailQueueTimeout, FailCreate, FailStore, FailQuota}
}

// Reasons given to Metrics.CreateFailed.
const (
	// CreateUnreachable: the server's agent had no link.
	CreateUnreachable = "unreachable"
	// CreateTimeout: the agent did not answer within the create timeout.
	CreateTimeout = "timeout"
	// CreateRefused: the agent reported a failure (user missing, desktop
	// failing to start, ...).
	CreateRefused = "agent_error"
	// CreateError: the command could not be delivered for another reason.
	CreateError = "error"
)

// CreateFailureReasons lists every reason of Metrics.CreateFailed.
func CreateFailureReasons() []string {
	return []string{CreateUnreachable, CreateTimeout, CreateRefused, CreateError}
}

// noMetrics is the Metrics of a Service that was given none.
type noMetrics struct{}

func (noMetrics) Placed(int)              {}
func (noMetrics) PlacementFailed(string)  {}
func (noMetrics) CreateFailed(string)     {}
func (noMetrics) QueueWait(time.Duration) {}

// SetMetrics makes the Service report its events to m; nil stops reporting.
// Call it before Run.
func (s *Service) SetMetrics(m Metrics) {
	if m == nil {
		m = noMetrics{}
	}
	s.obs = m
}

// metrics returns the Service's Metrics, a no-op one if none was set.
func (s *Service) metrics() Metrics {
	if s.obs == nil {
		return noMetrics{}
	}
	return s.obs
}

// placeFailure is why place could not place a session: the message for the
// client and the reason for Metrics.
type placeFailure struct {
	msg    string
	reason string
}

// noHostFailure classifies a placement decision's error.
func noHostFailure(e *placement.NoHostError) placeFailure {
	f := placeFailure{msg: e.Error(), reason: FailNoMatch}
	switch {
	case e.Total == 0:
		f.reason = FailNoServers
	case e.Full+e.PerUser+e.Console > 0:
		f.reason = FailFull
	}
	return f
}

// createFailure classifies a failed create command for Metrics.CreateFailed.
func createFailure(err error) string {
	var ce *CommandError
	switch {
	case errors.As(err, &ce):
		return CreateRefused
	case errors.Is(err, ErrAgentUnreachable):
		return CreateUnreachable
	case errors.Is(err, context.DeadlineExceeded):
		return CreateTimeout
	default:
		return CreateError
	}
}

// queuedSince returns when each of the sessions that wait in the queue
// entered it, for observeQueueWaits.
func queuedSince(ss []*Session) map[string]time.Time {
	var m map[string]time.Time
	for _, x := range ss {
		if x.Enqueued && !x.EnqueuedAt.IsZero() {
			if m == nil {
				m = make(map[string]time.Time)
			}
			m[x.ID] = x.EnqueuedAt
		}
	}
	return m
}

// observeQueueWaits records the queue wait of each placed session that was
// queued (since, from queuedSince).
func (s *Service) observeQueueWaits(placed []*Session, since map[string]time.Time, now time.Time) {
	if len(since) == 0 {
		return
	}
	m := s.metrics()
	for _, x := range placed {
		if t, ok := since[x.ID]; ok {
			m.QueueWait(max(now.Sub(t), 0))
		}
	}
}

// Stats are the broker's figures at one moment, for monitoring.
type Stats struct {
	// Servers is the number of servers the broker knows.
	Servers int
	// Available is the number of AVAILABLE servers; Unavailable counts the
	// others by UnavailabilityReason (ReasonUnreachableAgent, ...).
	Available   int
	Unavailable map[string]int
	// ByState counts the stored sessions by state, DELETED ones kept for
	// delete-session-duration-hours included. READY includes sessions that
	// DescribeSessions shows as UNKNOWN (READY on an unreachable server).
	ByState map[string]int
	// Virtual and Console count the sessions placed on a server and not
	// DELETED, by type.
	Virtual, Console int
	// Queued is the number of sessions waiting for placement: queued with
	// EnqueueRequest, or waiting to be retried on another server.
	Queued int
}

// Stats returns the broker's figures: servers and their availability from
// the server cache, sessions by state and the queue from the session counts
// the broker keeps (counts.go). It reads the store only until those counts
// are first read.
func (s *Service) Stats(ctx context.Context) (Stats, error) {
	now := s.Now()
	counts, err := s.servers.sessionCounts(ctx, s.store, countsMaxAge, now)
	if err != nil {
		return Stats{}, err
	}
	st := Stats{Unavailable: map[string]int{
		ReasonUnreachableAgent: 0, ReasonUnhealthy: 0, ReasonServerClosed: 0, ReasonServerFull: 0, ReasonUnknown: 0,
	}}
	for _, srv := range s.servers.all() {
		st.Servers++
		if v := s.view(srv, counts, now); v.Availability == Available {
			st.Available++
		} else {
			st.Unavailable[v.UnavailabilityReason]++
		}
	}
	for _, c := range counts {
		st.Virtual += c.Virtual
		st.Console += c.Console
	}
	if st.ByState, st.Queued, err = s.sessionStates(ctx, now); err != nil {
		return Stats{}, err
	}
	return st, nil
}

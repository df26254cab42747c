package agent

import (
	"context"
	"errors"
	"time"
)

// Metrics receives the agent's measurements; internal/agentmetrics exports
// them to Prometheus. The agent calls the methods from many goroutines; they
// must be safe for concurrent use and must not block. Label values come from
// fixed sets: command kinds are agentproto's Kind* constants, failure
// reasons the Reason* constants, session states agentproto's State*
// constants; never from request data or error text.
type Metrics interface {
	// CommandDone records a broker command the agent answered: its kind, how
	// long it ran, and "" for a success or the Reason* of its failure.
	CommandDone(kind string, d time.Duration, reason string)
	// SessionReady records, for a session the agent created, the time from
	// the create command's arrival to the first listing of the session as
	// READY (what the broker sees).
	SessionReady(d time.Duration)
	// SessionStates records how many sessions the driver listed in each
	// state, after every listing.
	SessionStates(counts map[string]int)
	// BrokerLink records the broker link coming up (the broker welcomed the
	// agent) or going down.
	BrokerLink(up bool)
	// CertificateRenewal records an attempt to renew the web gateway's
	// certificate: nil for a new certificate, else the failure.
	CertificateRenewal(err error)
}

// Reasons a command failed, as Metrics.CommandDone receives them.
const (
	// ReasonInvalidRequest: the driver refused the request itself
	// (ErrInvalidRequest): a bad owner, a path outside its folder, ...
	ReasonInvalidRequest = "invalid_request"
	// ReasonTimeout: the command's deadline passed.
	ReasonTimeout = "timeout"
	// ReasonCanceled: the agent stopped while the command ran.
	ReasonCanceled = "canceled"
	// ReasonBusy: MaxConcurrentCommands were already running.
	ReasonBusy = "busy"
	// ReasonUnsupported: the driver lacks the capability (screenshots,
	// permissions).
	ReasonUnsupported = "unsupported"
	// ReasonPanic: the driver panicked.
	ReasonPanic = "panic"
	// ReasonDriver: any other failure of the driver or the host.
	ReasonDriver = "driver_error"
)

// Reasons lists every Reason* value.
var Reasons = []string{ReasonInvalidRequest, ReasonTimeout, ReasonCanceled, ReasonBusy, ReasonUnsupported, ReasonPanic, ReasonDriver}

// failureReason classifies a driver error; ctx is the command's context.
func failureReason(ctx context.Context, err error) string {
	switch {
	case errors.Is(err, ErrInvalidRequest):
		return ReasonInvalidRequest
	case errors.Is(ctx.Err(), context.DeadlineExceeded) || errors.Is(err, context.DeadlineExceeded):
		return ReasonTimeout
	case ctx.Err() != nil || errors.Is(err, context.Canceled):
		return ReasonCanceled
	}
	return ReasonDriver
}

// noMetrics records nothing.
type noMetrics struct{}

func (noMetrics) CommandDone(string, time.Duration, string) {}
func (noMetrics) SessionReady(time.Duration)                {}
func (noMetrics) SessionStates(map[string]int)              {}
func (noMetrics) BrokerLink(bool)                           {}
func (noMetrics) CertificateRenewal(error)                  {}

// metrics returns a.Metrics, or one that records nothing.
func (a *Agent) metrics() Metrics {
	if a.Metrics == nil {
		return noMetrics{}
	}
	return a.Metrics
}

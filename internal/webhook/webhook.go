// Package webhook delivers berth's events to HTTP endpoints: the registry of
// webhooks (a URL, the event types it wants, the secret that signs each
// delivery) and the delivery worker that runs on the leader broker. Each
// webhook has a durable cursor in the store (the ID of the last event it
// acknowledged), so deliveries go out in event ID order, one at a time per
// webhook, at least once across broker restarts and leader changes. Failed
// deliveries are retried with exponential backoff; a webhook that fails for
// longer than the retry period is disabled with a webhook.disabled event.
// See docs/webhooks.md.
package webhook

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
	"time"

	"github.com/berth-dev/berth/internal/broker"
)

// Webhook states.
const (
	StateEnabled  = "ENABLED"
	StateDisabled = "DISABLED"
)

// Limits on what a webhook registration may hold.
const (
	MaxURLLength   = 2048
	MaxTypes       = 64
	MaxTypeLength  = 128
	MinSecretBytes = 16
	MaxSecretBytes = 256
)

// Webhook is one registered endpoint and its delivery state.
type Webhook struct {
	ID  string
	URL string
	// Types selects the events delivered, matched as broker.EventFilter.Types
	// ("session.*" matches a prefix); empty means every event.
	Types []string
	// Secret keys the HMAC-SHA256 signature of each delivery.
	Secret    string
	CreatedAt time.Time
	// State is StateEnabled or StateDisabled; DisabledReason says why.
	State          string
	DisabledReason string
	// Cursor is the ID of the last event the endpoint acknowledged.
	Cursor int64
	// Attempts counts the failed attempts at the event after Cursor since
	// FailingSince; NextAttempt is when the worker tries again.
	Attempts     int
	FailingSince time.Time
	NextAttempt  time.Time
	LastError    string
}

// Delivery is one attempt at delivering an event: the delivery log.
type Delivery struct {
	WebhookID string
	EventID   int64
	EventType string
	// Attempt is 1 for the first try of this event.
	Attempt int
	Time    time.Time
	// Status is the HTTP status answered, 0 when none came.
	Status   int
	Error    string
	Duration time.Duration
}

// OK reports whether the endpoint acknowledged the delivery (2xx).
func (d *Delivery) OK() bool { return d.Status >= 200 && d.Status < 300 && d.Error == "" }

// Store keeps webhooks and their delivery logs. The sqlite and postgres
// stores implement it.
type Store interface {
	// InsertWebhook stores a new webhook; broker.ErrConflict if its ID is taken.
	InsertWebhook(ctx context.Context, w *Webhook) error
	// ListWebhooks returns every webhook, ordered by creation.
	ListWebhooks(ctx context.Context) ([]*Webhook, error)
	// GetWebhook returns broker.ErrNotFound for an unknown ID.
	GetWebhook(ctx context.Context, id string) (*Webhook, error)
	// DeleteWebhook removes a webhook and its log; broker.ErrNotFound for an unknown ID.
	DeleteWebhook(ctx context.Context, id string) error
	// SaveDeliveries, in one transaction, writes w's delivery state
	// (State, DisabledReason, Attempts, FailingSince, NextAttempt,
	// LastError), moves its Cursor forward (never back), and adds ds to its
	// log, keeping the newest keep entries; broker.ErrNotFound once w is
	// deleted.
	SaveDeliveries(ctx context.Context, w *Webhook, ds []*Delivery, keep int) error
	// ListDeliveries returns a webhook's log, newest first, at most limit.
	ListDeliveries(ctx context.Context, webhookID string, limit int) ([]*Delivery, error)
}

// Spec is what a client gives to register a webhook.
type Spec struct {
	URL   string
	Types []string
	// Secret is generated when empty.
	Secret string
}

// Registry registers webhooks after checking them.
type Registry struct {
	Store Store
	// Events, when set, gives a new webhook's starting cursor: the newest
	// event, so that it receives the events that follow its registration.
	Events broker.EventStore
	// Now defaults to time.Now.
	Now func() time.Time
}

func (r *Registry) now() time.Time {
	if r.Now != nil {
		return r.Now()
	}
	return time.Now()
}

// Create checks s and registers the webhook; the result holds its secret,
// which the API shows this once.
func (r *Registry) Create(ctx context.Context, s Spec) (*Webhook, error) {
	if err := CheckURL(s.URL); err != nil {
		return nil, err
	}
	types, err := checkTypes(s.Types)
	if err != nil {
		return nil, err
	}
	secret := s.Secret
	switch {
	case secret == "":
		secret = "whsec_" + randomHex(24)
	case len(secret) < MinSecretBytes || len(secret) > MaxSecretBytes:
		return nil, broker.Errorf(broker.CodeInvalidInput, "Secret: must be %d to %d bytes long", MinSecretBytes, MaxSecretBytes)
	}
	cursor, err := r.tail(ctx)
	if err != nil {
		return nil, err
	}
	w := &Webhook{ID: "whk-" + randomHex(12), URL: s.URL, Types: types, Secret: secret,
		CreatedAt: r.now().UTC().Truncate(time.Millisecond), State: StateEnabled, Cursor: cursor}
	if err := r.Store.InsertWebhook(ctx, w); err != nil {
		return nil, err
	}
	return w, nil
}

// LastEventIDer is implemented by event stores that tell their newest
// event's ID in one query (the sqlite and postgres stores).
type LastEventIDer interface {
	LastEventID(ctx context.Context) (int64, error)
}

// tail returns the ID of the newest event, 0 when there is none or no
// event store.
func (r *Registry) tail(ctx context.Context) (int64, error) {
	if r.Events == nil {
		return 0, nil
	}
	if l, ok := r.Events.(LastEventIDer); ok {
		return l.LastEventID(ctx)
	}
	var last int64
	for {
		evs, err := r.Events.ListEvents(ctx, broker.EventFilter{AfterID: last, Limit: 1000})
		if err != nil {
			return 0, err
		}
		if len(evs) == 0 {
			return last, nil
		}
		last = evs[len(evs)-1].ID
	}
}

// List returns every webhook, secrets removed.
func (r *Registry) List(ctx context.Context) ([]*Webhook, error) {
	ws, err := r.Store.ListWebhooks(ctx)
	for _, w := range ws {
		w.Secret = ""
	}
	return ws, err
}

// Get returns one webhook, its secret removed.
func (r *Registry) Get(ctx context.Context, id string) (*Webhook, error) {
	w, err := r.Store.GetWebhook(ctx, id)
	if err != nil {
		return nil, named(err, id)
	}
	w.Secret = ""
	return w, nil
}

// Delete removes a webhook: its deliveries stop at once.
func (r *Registry) Delete(ctx context.Context, id string) error {
	return named(r.Store.DeleteWebhook(ctx, id), id)
}

// Deliveries returns a webhook's delivery log, newest first;
// broker.ErrNotFound for an unknown webhook.
func (r *Registry) Deliveries(ctx context.Context, id string, limit int) ([]*Delivery, error) {
	if _, err := r.Store.GetWebhook(ctx, id); err != nil {
		return nil, named(err, id)
	}
	if limit <= 0 || limit > 1000 {
		limit = 100
	}
	return r.Store.ListDeliveries(ctx, id, limit)
}

// CheckURL accepts absolute https URLs, and http URLs whose host is a
// loopback address or localhost (for receivers on the broker's host).
func CheckURL(raw string) error {
	if raw == "" {
		return broker.Errorf(broker.CodeInvalidInput, "Url: required")
	}
	if len(raw) > MaxURLLength {
		return broker.Errorf(broker.CodeInvalidInput, "Url: longer than %d bytes", MaxURLLength)
	}
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" || u.Opaque != "" {
		return broker.Errorf(broker.CodeInvalidInput, "Url: not an absolute URL")
	}
	if u.User != nil {
		return broker.Errorf(broker.CodeInvalidInput, "Url: must not carry a user name or password; use the secret")
	}
	if u.Fragment != "" {
		return broker.Errorf(broker.CodeInvalidInput, "Url: must not have a fragment")
	}
	switch u.Scheme {
	case "https":
		return nil
	case "http":
		if IsLoopback(u.Hostname()) {
			return nil
		}
		return broker.Errorf(broker.CodeInvalidInput, "Url: must be https (http only to a loopback address)")
	default:
		return broker.Errorf(broker.CodeInvalidInput, "Url: scheme %q: must be https", u.Scheme)
	}
}

// IsLoopback reports whether host (no port) is localhost or a loopback IP.
func IsLoopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// checkTypes checks event type patterns: names of lower-case letters,
// digits, '_' and '.', or a prefix ending in ".*"; "*" alone means all.
func checkTypes(types []string) ([]string, error) {
	if len(types) > MaxTypes {
		return nil, broker.Errorf(broker.CodeInvalidInput, "EventTypes: more than %d", MaxTypes)
	}
	var out []string
	for i, t := range types {
		if t == "*" {
			return nil, nil
		}
		name := strings.TrimSuffix(t, ".*")
		if name == "" || len(t) > MaxTypeLength || strings.HasPrefix(name, ".") || strings.HasSuffix(name, ".") ||
			strings.Trim(name, "abcdefghijklmnopqrstuvwxyz0123456789_.") != "" {
			return nil, broker.Errorf(broker.CodeInvalidInput,
				"EventTypes[%d]: %q is not an event type (session.state) or a prefix (session.*)", i, t)
		}
		out = append(out, t)
	}
	return out, nil
}

// MatchType reports whether an event of type typ is one of types (empty:
// all; "x.*" matches the prefix "x."), as broker.EventFilter.Types.
func MatchType(types []string, typ string) bool {
	if len(types) == 0 {
		return true
	}
	for _, t := range types {
		if t == typ || (strings.HasSuffix(t, ".*") && strings.HasPrefix(typ, strings.TrimSuffix(t, "*"))) {
			return true
		}
	}
	return false
}

// notFoundError is broker.ErrNotFound with a message for the API.
type notFoundError struct{ e *broker.Error }

func (n *notFoundError) Error() string   { return n.e.Message }
func (n *notFoundError) Unwrap() []error { return []error{n.e, broker.ErrNotFound} }

// named turns the store's broker.ErrNotFound into an error that names the
// webhook, with the code CodeNotFound; other errors pass.
func named(err error, id string) error {
	if !errors.Is(err, broker.ErrNotFound) {
		return err
	}
	if len(id) > 64 {
		id = id[:64]
	}
	return &notFoundError{&broker.Error{Code: broker.CodeNotFound, Message: fmt.Sprintf("webhook %q does not exist", id)}}
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // crypto/rand.Read never fails
	return hex.EncodeToString(b)
}

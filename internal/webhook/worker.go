package webhook

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/berth-dev/berth/internal/broker"
)

// Defaults of the Worker.
const (
	DefaultWorkers        = 32
	DefaultTimeout        = 10 * time.Second
	DefaultRetryFor       = 24 * time.Hour
	DefaultBackoffMin     = 5 * time.Second
	DefaultBackoffMax     = time.Hour
	DefaultInterval       = time.Second
	DefaultBatch          = 100
	DefaultKeepDeliveries = 100
	DefaultRate           = 100
	// MaxResponseBytes is as much of a response body as the worker reads.
	MaxResponseBytes = 64 << 10
)

// Emitter records events; *broker.Service implements it.
type Emitter interface {
	Emit(ctx context.Context, evs ...broker.Event)
}

// Worker delivers events to the enabled webhooks, on the leader broker only.
// Deliveries run on a bounded pool of goroutines of their own, with time
// limits, so that no receiver slows the API or placement.
type Worker struct {
	Store  Store
	Events broker.EventStore
	// Emitter, when set, records webhook.disabled.
	Emitter Emitter
	// Leaser gates the deliveries; nil means this broker delivers.
	Leaser broker.Leaser
	// Client sends deliveries; nil means NewClient(Timeout).
	Client *http.Client
	// Now defaults to time.Now.
	Now    func() time.Time
	Logger *slog.Logger
	// Workers bounds the webhooks delivered to at once. Webhooks that
	// are failing (retrying an event) take at most half of them, so that
	// receivers that hang until the time limit cannot keep the healthy
	// ones waiting.
	Workers int
	// Timeout bounds one delivery: connect, TLS, response and body.
	Timeout time.Duration
	// RetryFor is how long an event is retried before the webhook is disabled.
	RetryFor time.Duration
	// BackoffMin is the first retry delay, doubled per failure up to BackoffMax.
	BackoffMin, BackoffMax time.Duration
	// Interval is how often the worker looks for due webhooks.
	Interval time.Duration
	// Batch is how many events one turn of a webhook delivers at most.
	Batch int
	// KeepDeliveries bounds each webhook's delivery log.
	KeepDeliveries int
	// Rate caps the deliveries per second of all webhooks together, so
	// that receivers that answer at once cannot take the broker's CPU and
	// store from the API; 0 means DefaultRate.
	Rate float64

	once    sync.Once
	limiter *rate.Limiter
	sem     chan struct{}
	mu      sync.Mutex
	busy    map[string]bool
	failing int // failing webhooks in flight
}

func (w *Worker) init() {
	w.once.Do(func() {
		if w.Workers <= 0 {
			w.Workers = DefaultWorkers
		}
		if w.Timeout <= 0 {
			w.Timeout = DefaultTimeout
		}
		if w.RetryFor <= 0 {
			w.RetryFor = DefaultRetryFor
		}
		if w.BackoffMin <= 0 {
			w.BackoffMin = DefaultBackoffMin
		}
		if w.BackoffMax < w.BackoffMin {
			w.BackoffMax = max(DefaultBackoffMax, w.BackoffMin)
		}
		if w.Interval <= 0 {
			w.Interval = DefaultInterval
		}
		if w.Batch <= 0 {
			w.Batch = DefaultBatch
		}
		if w.KeepDeliveries <= 0 {
			w.KeepDeliveries = DefaultKeepDeliveries
		}
		if w.Client == nil {
			w.Client = NewClient(w.Timeout)
		}
		if w.Logger == nil {
			w.Logger = slog.Default()
		}
		if w.Rate <= 0 {
			w.Rate = DefaultRate
		}
		w.limiter = rate.NewLimiter(rate.Limit(w.Rate), max(1, int(w.Rate/10)))
		w.sem = make(chan struct{}, w.Workers)
		w.busy = map[string]bool{}
	})
}

func (w *Worker) now() time.Time {
	if w.Now != nil {
		return w.Now()
	}
	return time.Now()
}

// NewClient returns the HTTP client of deliveries: time limits on connect,
// TLS and the whole exchange, no proxy, no redirects followed (a 3xx is a
// failed delivery), small response headers.
func NewClient(timeout time.Duration) *http.Client {
	tr := &http.Transport{
		DialContext:            (&net.Dialer{Timeout: min(timeout, 5*time.Second), KeepAlive: 30 * time.Second}).DialContext,
		TLSHandshakeTimeout:    min(timeout, 5*time.Second),
		ResponseHeaderTimeout:  timeout,
		ExpectContinueTimeout:  time.Second,
		MaxIdleConnsPerHost:    2,
		IdleConnTimeout:        90 * time.Second,
		MaxResponseHeaderBytes: 64 << 10,
		ForceAttemptHTTP2:      true,
	}
	return &http.Client{
		Transport: tr,
		Timeout:   timeout,
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}
}

// Run delivers until ctx ends, looking for due webhooks every Interval.
func (w *Worker) Run(ctx context.Context) {
	w.init()
	t := time.NewTicker(w.Interval)
	defer t.Stop()
	for {
		w.dispatch(ctx, nil)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Tick starts the deliveries of every due webhook (as many as the pool
// takes) and waits for them: one turn of Run, for tests.
func (w *Worker) Tick(ctx context.Context) {
	w.init()
	var wg sync.WaitGroup
	w.dispatch(ctx, &wg)
	wg.Wait()
}

// dispatch starts a turn for each enabled, due webhook not already in
// flight, while the pool has room, on the leader only: those that were
// healthy first, then by their next attempt. Failing webhooks take at
// most maxFailing slots.
func (w *Worker) dispatch(ctx context.Context, wg *sync.WaitGroup) {
	if w.Leaser != nil && !w.Leaser.IsLeader(ctx) {
		return
	}
	hooks, err := w.Store.ListWebhooks(ctx)
	if err != nil {
		w.Logger.WarnContext(ctx, "webhooks: list", "err", err)
		return
	}
	now := w.now()
	hooks = slices.DeleteFunc(hooks, func(h *Webhook) bool {
		return h.State != StateEnabled || h.NextAttempt.After(now)
	})
	slices.SortStableFunc(hooks, func(a, b *Webhook) int { return a.NextAttempt.Compare(b.NextAttempt) })
	for _, h := range hooks {
		failing := h.Attempts > 0
		w.mu.Lock()
		if w.busy[h.ID] || (failing && w.failing >= w.maxFailing()) {
			w.mu.Unlock()
			continue
		}
		select {
		case w.sem <- struct{}{}:
		default:
			w.mu.Unlock()
			return // the pool is full: the rest wait for the next turn
		}
		w.busy[h.ID] = true
		if failing {
			w.failing++
		}
		w.mu.Unlock()
		if wg != nil {
			wg.Add(1)
		}
		go func() {
			defer func() {
				w.mu.Lock()
				delete(w.busy, h.ID)
				if failing {
					w.failing--
				}
				w.mu.Unlock()
				<-w.sem
				if wg != nil {
					wg.Done()
				}
			}()
			w.turn(ctx, h)
		}()
	}
}

// maxFailing is how many failing webhooks may be in flight at once: half
// the pool, at least one.
func (w *Worker) maxFailing() int { return max(1, w.Workers/2) }

// turn delivers h's pending events in ID order until one fails or none
// is left, then saves the new state and the attempts in one store write
// (so that a busy receiver costs the store one write per turn, not per
// event). A broker killed mid-turn saved nothing of it: the next leader
// delivers those events again, with the same idempotency keys.
func (w *Worker) turn(ctx context.Context, h *Webhook) {
	evs, err := w.Events.ListEvents(ctx, broker.EventFilter{AfterID: h.Cursor, Types: h.Types, Limit: w.Batch})
	if err != nil {
		w.Logger.WarnContext(ctx, "webhooks: list events", "webhook_id", h.ID, "err", err)
		return
	}
	var ds []*Delivery
	var last *broker.Event
	for _, ev := range evs {
		if err := w.limiter.Wait(ctx); err != nil {
			break
		}
		if w.Leaser != nil && !w.Leaser.IsLeader(ctx) {
			break // another broker leads now: it goes on from the saved cursor
		}
		d := w.send(ctx, h, ev)
		if ctx.Err() != nil && !d.OK() {
			break // shutting down: the attempt does not count
		}
		ds, last = append(ds, d), ev
		if !w.record(h, ev, d) {
			break
		}
	}
	if len(ds) == 0 {
		return
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), w.Timeout)
	defer cancel()
	if err := w.Store.SaveDeliveries(sctx, h, ds, w.KeepDeliveries); err != nil {
		if !errors.Is(err, broker.ErrNotFound) { // deleted meanwhile
			w.Logger.WarnContext(ctx, "webhooks: save deliveries", "webhook_id", h.ID, "err", err)
		}
		return
	}
	if h.State == StateDisabled {
		// Not the URL: it can carry a token (as chat services' do).
		w.Logger.WarnContext(ctx, "webhook disabled after sustained failure", "webhook_id", h.ID,
			"reason", h.DisabledReason)
		if w.Emitter != nil {
			w.Emitter.Emit(sctx, broker.Event{Type: broker.EventWebhookDisabled, Time: w.now(), Data: map[string]any{
				"webhook_id": h.ID, "reason": h.DisabledReason, "event_id": last.ID,
				"failing_since": h.FailingSince.UTC().Format(time.RFC3339), "attempts": h.Attempts,
			}})
		}
	}
}

// record applies the outcome of delivering ev to h's state; true when
// delivered.
func (w *Worker) record(h *Webhook, ev *broker.Event, d *Delivery) bool {
	if d.OK() {
		h.Cursor, h.Attempts, h.FailingSince, h.NextAttempt, h.LastError = ev.ID, 0, time.Time{}, time.Time{}, ""
		return true
	}
	now := w.now()
	h.Attempts++
	if h.FailingSince.IsZero() {
		h.FailingSince = d.Time
	}
	h.LastError = d.Error
	if h.LastError == "" {
		h.LastError = "HTTP status " + strconv.Itoa(d.Status)
	}
	h.NextAttempt = now.Add(w.backoff(h.Attempts))
	if now.Sub(h.FailingSince) >= w.RetryFor {
		h.State = StateDisabled
		h.DisabledReason = fmt.Sprintf("deliveries failed for %s since %s: %s",
			w.RetryFor, h.FailingSince.UTC().Format(time.RFC3339), h.LastError)
	}
	return false
}

// backoff is the delay after the n-th failure: BackoffMin doubled per
// failure, at most BackoffMax.
func (w *Worker) backoff(n int) time.Duration {
	d := w.BackoffMin
	for i := 1; i < n && d < w.BackoffMax; i++ {
		d *= 2
	}
	return min(d, w.BackoffMax)
}

// EventJSON is the body of a delivery: one event, encoded as the event
// stream (GET /berth/v1/events, api.Event) gives it, so that one decoder
// serves both.
type EventJSON struct {
	ID        int64          `json:"Id"`
	Time      time.Time      `json:"Time"`
	Type      string         `json:"Type"`
	SessionID string         `json:"SessionId,omitempty"`
	ServerID  string         `json:"ServerId,omitempty"`
	Owner     string         `json:"Owner,omitempty"`
	Data      map[string]any `json:"Data,omitempty"`
}

// IdempotencyKey is the Idempotency-Key of the delivery of event id to
// webhook: the same for every retry of it.
func IdempotencyKey(webhookID string, eventID int64) string {
	return webhookID + "." + strconv.FormatInt(eventID, 10)
}

// send makes one attempt.
func (w *Worker) send(ctx context.Context, h *Webhook, ev *broker.Event) *Delivery {
	start := w.now()
	d := &Delivery{WebhookID: h.ID, EventID: ev.ID, EventType: ev.Type, Attempt: h.Attempts + 1, Time: start}
	body, err := json.Marshal(EventJSON{ID: ev.ID, Time: ev.Time.UTC(), Type: ev.Type, SessionID: ev.SessionID,
		ServerID: ev.ServerID, Owner: ev.Owner, Data: ev.Data})
	if err != nil {
		d.Error = "encode: " + err.Error()
		return d
	}
	ctx, cancel := context.WithTimeout(ctx, w.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, h.URL, bytes.NewReader(body))
	if err != nil {
		d.Error = "the webhook's URL is not valid"
		return d
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "berth-webhook/1")
	req.Header.Set(HeaderEventID, strconv.FormatInt(ev.ID, 10))
	req.Header.Set(HeaderEventType, ev.Type)
	req.Header.Set(HeaderWebhookID, h.ID)
	req.Header.Set(HeaderIdempotency, IdempotencyKey(h.ID, ev.ID))
	req.Header.Set(HeaderSignature, Sign(h.Secret, time.Now(), body))
	t0 := time.Now()
	resp, err := w.Client.Do(req)
	if err == nil {
		d.Status = resp.StatusCode
		// The status decides; the body is read (at most MaxResponseBytes,
		// within the time limit) only so that the connection can be reused.
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, MaxResponseBytes))
		resp.Body.Close()
	} else {
		// Not the URL (url.Error holds it): it can carry a token, and
		// the error reaches the log and the webhook.disabled event.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		d.Error = err.Error()
	}
	d.Duration = time.Since(t0)
	return d
}

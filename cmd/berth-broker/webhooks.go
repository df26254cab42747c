package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/berth-dev/berth/internal/broker"
	"github.com/berth-dev/berth/internal/webhook"
)

// startWebhooks builds the webhook registry on the store and starts the
// delivery worker, which delivers on the leader only (docs/webhooks.md).
func (m *Main) startWebhooks(leaser broker.Leaser) {
	reg := webhookRegistry(m)
	if reg == nil {
		return
	}
	m.webhooks = reg
	if reg.Events == nil {
		return
	}
	c := &m.Config
	w := &webhook.Worker{Store: reg.Store, Events: reg.Events, Emitter: m.svc, Leaser: leaser, Logger: m.Logger,
		Workers: c.WebhookWorkers, Timeout: c.WebhookTimeout, RetryFor: c.WebhookRetry, BackoffMin: m.webhookBackoff, Rate: float64(c.WebhookRate)}
	m.goRun(func() { w.Run(m.runCtx) })
}

// webhookRegistry returns the registry on m's store, nil when the store
// keeps no webhooks.
func webhookRegistry(m *Main) *webhook.Registry {
	ws, ok := m.store.(webhook.Store)
	if !ok {
		return nil
	}
	evs, _ := m.store.(broker.EventStore)
	return &webhook.Registry{Store: ws, Events: evs}
}

// errNoWebhooks answers the webhook commands on a store without webhooks.
var errNoWebhooks = errors.New("this broker's store keeps no webhooks")

func createWebhookCommand() adminCommand {
	return adminCommand{name: "create-webhook",
		summary: "register a webhook: an https URL (http only to a loopback address) that receives berth's events, signed with its secret (printed once)",
		flags: func(fs *flag.FlagSet) func() []string {
			u := fs.String("url", "", "the endpoint (required)")
			types := fs.String("event-types", "", "comma-separated event types or prefixes, e.g. session.state,server.* (default: every event)")
			secret := fs.String("secret", "", "the signing secret, 16 to 256 bytes (default: generated)")
			return func() []string { return []string{*u, *types, *secret} }
		},
		example: "berth-broker create-webhook --url https://hooks.example.com/berth --event-types 'session.*'",
		run: func(ctx context.Context, m *Main, a []string, out io.Writer) error {
			reg := webhookRegistry(m)
			if reg == nil {
				return errNoWebhooks
			}
			if a[0] == "" {
				return usageError("--url is required")
			}
			var types []string
			for t := range strings.SplitSeq(a[1], ",") {
				if t = strings.TrimSpace(t); t != "" {
					types = append(types, t)
				}
			}
			h, err := reg.Create(ctx, webhook.Spec{URL: a[0], Types: types, Secret: a[2]})
			if err != nil {
				return err
			}
			fmt.Fprintf(out, "webhook-id: %s\nsecret: %s\n", h.ID, h.Secret)
			return nil
		}}
}

// webhookRow is a webhook as the admin commands print it.
type webhookRow struct {
	ID             string   `json:"id"`
	URL            string   `json:"url"`
	EventTypes     []string `json:"event-types"`
	CreatedAt      string   `json:"created-at"`
	State          string   `json:"state"`
	DisabledReason string   `json:"disabled-reason,omitempty"`
	LastEventID    int64    `json:"last-event-id"`
	FailedAttempts int      `json:"failed-attempts"`
	NextAttemptAt  string   `json:"next-attempt-at,omitempty"`
	LastError      string   `json:"last-error,omitempty"`
}

func describeWebhooksCommand() adminCommand {
	return adminCommand{name: "describe-webhooks", summary: "list the webhooks and their delivery state (not their secrets)",
		example: "berth-broker describe-webhooks",
		run: func(ctx context.Context, m *Main, _ []string, out io.Writer) error {
			reg := webhookRegistry(m)
			if reg == nil {
				return errNoWebhooks
			}
			hs, err := reg.List(ctx)
			if err != nil {
				return err
			}
			rows := []webhookRow{}
			for _, h := range hs {
				r := webhookRow{ID: h.ID, URL: h.URL, EventTypes: h.Types, CreatedAt: h.CreatedAt.UTC().Format(time.RFC3339),
					State: h.State, DisabledReason: h.DisabledReason, LastEventID: h.Cursor, FailedAttempts: h.Attempts, LastError: h.LastError}
				if r.EventTypes == nil {
					r.EventTypes = []string{}
				}
				if !h.NextAttempt.IsZero() {
					r.NextAttemptAt = h.NextAttempt.UTC().Format(time.RFC3339)
				}
				rows = append(rows, r)
			}
			return printJSON(out, "Webhooks", rows)
		}}
}

func deleteWebhookCommand() adminCommand {
	return adminCommand{name: "delete-webhook", summary: "delete a webhook (its deliveries stop) and its delivery log",
		flags: stringFlag("webhook-id", "ID of the webhook (required)"), example: "berth-broker delete-webhook --webhook-id whk-0123",
		run: func(ctx context.Context, m *Main, a []string, out io.Writer) error {
			reg := webhookRegistry(m)
			if reg == nil {
				return errNoWebhooks
			}
			if a[0] == "" {
				return usageError("--webhook-id is required")
			}
			if err := reg.Delete(ctx, a[0]); err != nil {
				return err
			}
			fmt.Fprintf(out, "Webhook %s deleted.\n", a[0])
			return nil
		}}
}

func describeWebhookDeliveriesCommand() adminCommand {
	return adminCommand{name: "describe-webhook-deliveries", summary: "print a webhook's delivery log, newest first",
		flags: func(fs *flag.FlagSet) func() []string {
			id := fs.String("webhook-id", "", "ID of the webhook (required)")
			limit := fs.Int("limit", 100, "at most this many attempts (1 to 1000)")
			return func() []string { return []string{*id, strconv.Itoa(*limit)} }
		},
		example: "berth-broker describe-webhook-deliveries --webhook-id whk-0123 --limit 20",
		run: func(ctx context.Context, m *Main, a []string, out io.Writer) error {
			reg := webhookRegistry(m)
			if reg == nil {
				return errNoWebhooks
			}
			if a[0] == "" {
				return usageError("--webhook-id is required")
			}
			limit, _ := strconv.Atoi(a[1])
			if limit < 1 || limit > 1000 {
				return usageError("--limit must be from 1 to 1000")
			}
			ds, err := reg.Deliveries(ctx, a[0], limit)
			if err != nil {
				return err
			}
			type row struct {
				EventID    int64  `json:"event-id"`
				EventType  string `json:"event-type"`
				Attempt    int    `json:"attempt"`
				Time       string `json:"time"`
				Status     int    `json:"status"`
				Error      string `json:"error,omitempty"`
				DurationMs int64  `json:"duration-ms"`
				Delivered  bool   `json:"delivered"`
			}
			rows := []row{}
			for _, d := range ds {
				rows = append(rows, row{d.EventID, d.EventType, d.Attempt, d.Time.UTC().Format(time.RFC3339), d.Status, d.Error,
					d.Duration.Milliseconds(), d.OK()})
			}
			return printJSON(out, "Deliveries", rows)
		}}
}

package main

import (
	"context"
	"flag"
	"io"
	"strconv"
	"strings"

	"github.com/berth-dev/berth/api"
)

func createWebhookCommand() *command {
	return &command{
		name:     "create-webhook",
		synopsis: "--url URL [--event-types T,U] [--secret SECRET]",
		short:    "register a webhook that receives berth's events (berth addition)",
		summary: "Register a webhook: an https URL (http only to a loopback address) that receives berth's events,\n" +
			"signed with HMAC-SHA256 (docs/webhooks.md). The secret is generated unless given, and printed this once.",
		example: "berth create-webhook --url https://hooks.example.com/berth --event-types 'session.*,server.*'",
		setup: func(c *cli, fs *flag.FlagSet) action {
			u := fs.String("url", "", "the endpoint `URL` (required)")
			var types listValue
			fs.Var(&types, "event-types", "comma-separated event `TYPES` or prefixes (session.*); default: every event")
			secret := fs.String("secret", "", "the signing `SECRET`, 16 to 256 bytes (default: generated)")
			return func(ctx context.Context, _ []string) error {
				if err := required("url", *u, "--url https://..."); err != nil {
					return err
				}
				cl, err := c.connect(ctx)
				if err != nil {
					return err
				}
				resp, err := cl.CreateWebhook(ctx, api.CreateWebhookRequest{Url: *u, EventTypes: types.items, Secret: *secret})
				if err != nil {
					return err
				}
				if !c.table() {
					return c.printJSON(c.rt.lastBody(), resp)
				}
				if err := webhooksTable(c.stdout, []api.Webhook{resp.Webhook}); err != nil {
					return err
				}
				_, err = io.WriteString(c.stdout, "secret: "+resp.Webhook.Secret+"\n")
				return err
			}
		},
	}
}

func describeWebhooksCommand() *command {
	return &command{
		name:     "describe-webhooks",
		synopsis: "[--webhook-id ID]",
		short:    "describe webhooks and their delivery state (berth addition)",
		summary:  "Describe the webhooks (or one): URL, event types, state, last event acknowledged, failures. Never the secrets.",
		example:  "berth describe-webhooks --output table",
		setup: func(c *cli, fs *flag.FlagSet) action {
			id := fs.String("webhook-id", "", "describe only the webhook `ID`")
			return func(ctx context.Context, _ []string) error {
				cl, err := c.connect(ctx)
				if err != nil {
					return err
				}
				if *id != "" {
					resp, err := cl.GetWebhook(ctx, *id)
					if err != nil {
						return err
					}
					if !c.table() {
						return c.printJSON(c.rt.lastBody(), resp)
					}
					return webhooksTable(c.stdout, []api.Webhook{resp.Webhook})
				}
				resp, err := cl.DescribeWebhooks(ctx)
				if err != nil {
					return err
				}
				if !c.table() {
					return c.printJSON(c.rt.lastBody(), resp)
				}
				return webhooksTable(c.stdout, resp.Webhooks)
			}
		},
	}
}

func deleteWebhookCommand() *command {
	return &command{
		name:     "delete-webhook",
		synopsis: "--webhook-id ID",
		short:    "delete a webhook (berth addition)",
		summary:  "Delete a webhook: its deliveries stop and its delivery log goes.",
		example:  "berth delete-webhook --webhook-id whk-3f2a...",
		setup: func(c *cli, fs *flag.FlagSet) action {
			id := fs.String("webhook-id", "", "`ID` of the webhook (required)")
			return func(ctx context.Context, _ []string) error {
				if err := required("webhook-id", *id, "--webhook-id ID (list IDs with 'berth describe-webhooks')"); err != nil {
					return err
				}
				cl, err := c.connect(ctx)
				if err != nil {
					return err
				}
				resp, err := cl.DeleteWebhook(ctx, *id)
				if err != nil {
					return err
				}
				return c.finish(resp, "WEBHOOK ID", []result{{id: resp.Id, ok: true}}, nil)
			}
		},
	}
}

func describeWebhookDeliveriesCommand() *command {
	return &command{
		name:     "describe-webhook-deliveries",
		synopsis: "--webhook-id ID [--limit N]",
		short:    "describe a webhook's delivery log (berth addition)",
		summary:  "Describe a webhook's newest delivery attempts, newest first: event, attempt, status or error, time taken.",
		example:  "berth describe-webhook-deliveries --webhook-id whk-3f2a... --limit 20 --output table",
		setup: func(c *cli, fs *flag.FlagSet) action {
			id := fs.String("webhook-id", "", "`ID` of the webhook (required)")
			limit := &intValue{min: 1, max: 1000}
			fs.Var(limit, "limit", "at most `N` attempts, 1 to 1000 (default 100)")
			return func(ctx context.Context, _ []string) error {
				if err := required("webhook-id", *id, "--webhook-id ID (list IDs with 'berth describe-webhooks')"); err != nil {
					return err
				}
				cl, err := c.connect(ctx)
				if err != nil {
					return err
				}
				resp, err := cl.DescribeWebhookDeliveries(ctx, *id, int(limit.n))
				if err != nil {
					return err
				}
				if !c.table() {
					return c.printJSON(c.rt.lastBody(), resp)
				}
				tw := newTable(c.stdout, "EVENT", "TYPE", "ATTEMPT", "TIME", "STATUS", "MS", "DELIVERED", "ERROR")
				for _, d := range resp.Deliveries {
					row(tw, strconv.FormatInt(d.EventId, 10), d.EventType, strconv.Itoa(d.Attempt), d.Time.UTC().Format("2006-01-02T15:04:05Z"),
						strconv.Itoa(d.StatusCode), strconv.FormatInt(d.DurationMs, 10), strconv.FormatBool(d.Delivered), d.Error)
				}
				return finishTable(tw, c.stdout, len(resp.Deliveries), "delivery", "")
			}
		},
	}
}

// webhooksTable prints webhooks, one per row.
func webhooksTable(w io.Writer, list []api.Webhook) error {
	tw := newTable(w, "ID", "URL", "EVENT TYPES", "STATE", "LAST EVENT", "FAILURES", "LAST ERROR")
	for _, h := range list {
		row(tw, h.Id, h.Url, strings.Join(h.EventTypes, ","), h.State, strconv.FormatInt(h.LastEventId, 10),
			strconv.Itoa(h.FailedAttempts), h.LastError)
	}
	return finishTable(tw, w, len(list), "webhook", "")
}

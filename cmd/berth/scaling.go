package main

import (
	"context"
	"flag"
	"strconv"
	"time"
)

func describeQueueCommand() *command {
	return &command{
		name:     "describe-queue",
		synopsis: "",
		short:    "list the sessions waiting in the create queue and why (berth addition)",
		summary: "List the sessions that wait in the broker's create queue (created with --enqueue-request true), in the\n" +
			"order the queue serves them (round-robin across owners), and why each waits: the quota it would\n" +
			"exceed now, or that no server has room for it. See docs/quotas.md.",
		example: "berth describe-queue --output table",
		setup: func(c *cli, fs *flag.FlagSet) action {
			return func(ctx context.Context, _ []string) error {
				cl, err := c.connect(ctx)
				if err != nil {
					return err
				}
				resp, err := cl.DescribeQueue(ctx)
				if err != nil {
					return err
				}
				if !c.table() {
					return c.printJSON(c.rt.lastBody(), resp)
				}
				tw := newTable(c.stdout, "POSITION", "SESSION ID", "OWNER", "ENQUEUED", "REASON")
				for _, e := range resp.Queue {
					row(tw, strconv.Itoa(e.Position), e.SessionId, e.Owner, formatTime(e.EnqueuedAt), e.Reason)
				}
				return finishTable(tw, c.stdout, len(resp.Queue), "queued session", "")
			}
		},
	}
}

func describeCapacityCommand() *command {
	return &command{
		name:     "describe-capacity",
		synopsis: "",
		short:    "show the scaling signals: capacity short and idle servers (berth addition)",
		summary: "Show what an autoscaler acts on: per requirement class, the requests that no open server can take\n" +
			"(queued ones that fit nowhere and recent refusals), and the open servers without sessions for the\n" +
			"broker's scaling-idle-server-minutes. The table prints the shortfall, then the idle servers.\n" +
			"See docs/autoscaling.md.",
		example: "berth describe-capacity --output table",
		setup: func(c *cli, fs *flag.FlagSet) action {
			return func(ctx context.Context, _ []string) error {
				cl, err := c.connect(ctx)
				if err != nil {
					return err
				}
				resp, err := cl.DescribeCapacity(ctx)
				if err != nil {
					return err
				}
				if !c.table() {
					return c.printJSON(c.rt.lastBody(), resp)
				}
				tw := newTable(c.stdout, "CLASS", "TYPE", "GL", "REQUIREMENTS", "COUNT", "QUEUED", "REFUSED", "OLDEST WAIT")
				for _, s := range resp.Shortfall {
					row(tw, s.Class, s.Type, strconv.FormatBool(s.DcvGlEnabled), s.Requirements, strconv.Itoa(s.Count),
						strconv.Itoa(s.Queued), strconv.Itoa(s.Refused), (time.Duration(s.OldestWaitSeconds) * time.Second).String())
				}
				if err := finishTable(tw, c.stdout, len(resp.Shortfall), "shortfall", ""); err != nil {
					return err
				}
				tw = newTable(c.stdout, "IDLE SERVER ID", "HOSTNAME", "EC2 INSTANCE", "REGION", "IDLE SINCE", "IDLE FOR")
				for _, s := range resp.IdleServers {
					since := s.IdleSince
					row(tw, s.Id, s.Hostname, s.Ec2InstanceId, s.AwsRegion, formatTime(&since),
						(time.Duration(s.IdleSeconds) * time.Second).String())
				}
				return finishTable(tw, c.stdout, len(resp.IdleServers), "idle server", "")
			}
		},
	}
}

// formatTime is t in RFC 3339, UTC; "" for none.
func formatTime(t *time.Time) string {
	if t == nil || t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339)
}

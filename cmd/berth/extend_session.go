package main

import (
	"context"
	"flag"
	"math"
	"strconv"
	"time"
)

func extendSessionCommand() *command {
	return &command{
		name:     "extend-session",
		synopsis: "--session-id ID [--by 2h] [--owner USER]",
		short:    "extend a session's maximum lifetime (berth addition)",
		summary: "Push the deadline at which session-max-lifetime-hours deletes the session by --by (default: the\n" +
			"broker's session-extension-default-hours), within session-max-extension-hours in total; an extension\n" +
			"larger than what remains is cut to it. Prints the new deadline. See docs/lifetimes.md.",
		example: "berth extend-session --session-id 3f2a... --by 2h",
		setup: func(c *cli, fs *flag.FlagSet) action {
			id := fs.String("session-id", "", "`ID` of the session (required)")
			by := fs.String("by", "", "the extension, a `DURATION` such as 2h or 90m, or a number of seconds (default: the broker's)")
			owner := fs.String("owner", "", "`USER` who owns the session: refused unless it is the owner")
			return func(ctx context.Context, _ []string) error {
				if err := required("session-id", *id, "--session-id ID (list IDs with 'berth describe-sessions')"); err != nil {
					return err
				}
				d, err := parseBy(*by)
				if err != nil {
					return err
				}
				cl, err := c.connect(ctx)
				if err != nil {
					return err
				}
				resp, err := cl.ExtendSession(ctx, *id, d, *owner)
				if err != nil {
					return err
				}
				if !c.table() {
					return c.printJSON(c.rt.lastBody(), resp)
				}
				tw := newTable(c.stdout, "SESSION ID", "EXPIRES")
				row(tw, resp.SessionId, resp.ExpiresAt.UTC().Format(time.RFC3339))
				return finishTable(tw, c.stdout, 1, "session", "")
			}
		},
	}
}

// parseBy reads --by: a Go duration or a number of seconds, positive; ""
// is 0 (the broker's default).
func parseBy(s string) (time.Duration, error) {
	if s == "" {
		return 0, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		secs, ferr := strconv.ParseFloat(s, 64)
		if ferr != nil || math.IsNaN(secs) || math.IsInf(secs, 0) || secs > 1e12 {
			return 0, usagef("--by %q is not a duration; pass e.g. --by 2h, --by 90m or --by 7200 (seconds)", s)
		}
		d = time.Duration(secs * float64(time.Second))
	}
	if d <= 0 {
		return 0, usagef("--by must be positive, got %q", s)
	}
	return d, nil
}

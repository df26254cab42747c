package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"time"

	"github.com/berth-dev/berth/api"
)

// watchRetry is the first wait before watch reconnects after the stream
// ended or failed; it doubles up to watchRetryMax.
const (
	watchRetry    = time.Second
	watchRetryMax = 30 * time.Second
)

func watchCommand() *command {
	return &command{
		name:     "watch",
		synopsis: "[--type TYPE]... [--owner USER] [--after ID]",
		short:    "print berth's events as they happen, one JSON object a line (berth addition)",
		summary: "Follow GET /berth/v1/events and print each event as one line of JSON, oldest first, then as they\n" +
			"happen, until interrupted. --type keeps events of a type (repeatable, or comma-separated; \"session.*\"\n" +
			"matches a prefix), --owner the events of one owner's sessions, --after starts after an event ID (0:\n" +
			"from the oldest kept). When the stream breaks, watch reconnects and resumes after the last event it\n" +
			"printed: no event is printed twice or skipped. See docs/events.md.",
		example: "berth watch --type session.state --owner alice\nberth watch --type 'scaling.*' --after 1200",
		setup: func(c *cli, fs *flag.FlagSet) action {
			types := &listValue{}
			fs.Var(types, "type", "event `TYPE` to print (repeatable; \"session.*\" matches a prefix)")
			owner := fs.String("owner", "", "print only the events of `USER`'s sessions")
			after := &intValue{min: 0}
			fs.Var(after, "after", "start after event `ID` (default 0: the oldest event kept)")
			return func(ctx context.Context, _ []string) error {
				cl, err := c.connect(ctx)
				if err != nil {
					return err
				}
				return c.watch(ctx, cl, api.WatchRequest{Types: types.items, Owner: *owner, After: after.n})
			}
		},
	}
}

// watch prints the events of in until ctx ends, reconnecting after the
// last event printed when the stream ends or fails. A refusal of the broker
// (4xx) ends it with the broker's error.
func (c *cli) watch(ctx context.Context, cl *api.Client, in api.WatchRequest) error {
	wait := watchRetry
	for {
		err := cl.WatchEvents(ctx, in, func(e api.Event) error {
			b, err := json.Marshal(e)
			if err != nil {
				return err
			}
			if _, err := fmt.Fprintf(c.stdout, "%s\n", b); err != nil {
				return err
			}
			in.After = e.Id
			wait = watchRetry
			return nil
		})
		if ctx.Err() != nil {
			return nil
		}
		var ae *api.Error
		if errors.As(err, &ae) && ae.StatusCode/100 == 4 && ae.StatusCode != 429 {
			return err
		}
		if err != nil && !errors.Is(err, api.ErrStreamEnded) {
			fmt.Fprintf(c.stderr, "berth: watch: %v; reconnecting in %s\n", err, wait)
		}
		if err := c.sleep(ctx, wait); err != nil {
			return nil
		}
		wait = min(2*wait, watchRetryMax)
	}
}

package main

import (
	"context"
	"flag"

	"github.com/berth-dev/berth/api"
)

func deleteSessionCommand() *command {
	return &command{
		name:     "delete-session",
		synopsis: "--session-id ID --owner USER [--force]",
		short:    "delete a session",
		summary:  "Delete a session. With --force the broker forgets it without waiting for its server.",
		example:  "berth delete-session --session-id 3f2a... --owner alice",
		setup: func(c *cli, fs *flag.FlagSet) action {
			id := fs.String("session-id", "", "`ID` of the session to delete (required)")
			owner := fs.String("owner", "", "`USER` who owns the session (required)")
			force := fs.Bool("force", false, "remove the session from the broker even if its server does not answer")
			return func(ctx context.Context, _ []string) error {
				if err := required("session-id", *id, "--session-id ID (list IDs with 'berth describe-sessions')"); err != nil {
					return err
				}
				if err := required("owner", *owner, "--owner USER, the session's owner"); err != nil {
					return err
				}
				cl, err := c.connect(ctx)
				if err != nil {
					return err
				}
				resp, err := cl.DeleteSessions(ctx, []api.DeleteSessionRequest{{SessionId: *id, Owner: *owner, Force: *force}})
				if err != nil {
					return err
				}
				var results []result
				for _, s := range resp.SuccessfulList {
					results = append(results, result{id: s.SessionId, state: s.State, ok: true})
				}
				var failed []string
				for _, f := range resp.UnsuccessfulList {
					results = append(results, result{id: f.SessionId, reason: f.FailureReason})
					failed = append(failed, failureLine(f.SessionId, "", f.FailureReason))
				}
				return c.finish(resp, "SESSION ID", results, failed)
			}
		},
	}
}

// required fails with a usage error when a required option is empty; how says
// what to pass.
func required(name, value, how string) error {
	if value == "" {
		return usagef("--%s is required; pass %s", name, how)
	}
	return nil
}

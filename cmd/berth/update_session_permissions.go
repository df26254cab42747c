package main

import (
	"context"
	"encoding/base64"
	"flag"

	"github.com/berth-dev/berth/api"
)

func updateSessionPermissionsCommand() *command {
	return &command{
		name:     "update-session-permissions",
		synopsis: "--session-id ID --owner USER --permission-file FILE",
		short:    "replace a session's permissions file",
		summary:  "Replace a session's DCV permissions with the contents of a permissions file.",
		example:  "berth update-session-permissions --session-id 3f2a... --owner alice --permission-file team.perm",
		setup: func(c *cli, fs *flag.FlagSet) action {
			id := fs.String("session-id", "", "`ID` of the session (required)")
			owner := fs.String("owner", "", "`USER` who owns the session (required)")
			file := fs.String("permission-file", "", "DCV permissions `FILE`, - for stdin (required; sent base64-encoded)")
			alias(fs, "permissions-file", "permission-file")
			return func(ctx context.Context, _ []string) error {
				if err := required("session-id", *id, "--session-id ID (list IDs with 'berth describe-sessions')"); err != nil {
					return err
				}
				if err := required("owner", *owner, "--owner USER, the session's owner"); err != nil {
					return err
				}
				if err := required("permission-file", *file, "--permission-file FILE, a DCV permissions file"); err != nil {
					return err
				}
				b, err := c.readInput("permission-file", *file, "a readable DCV permissions file")
				if err != nil {
					return err
				}
				cl, err := c.connect(ctx)
				if err != nil {
					return err
				}
				resp, err := cl.UpdateSessionPermissions(ctx, []api.UpdateSessionPermissionsRequest{{
					SessionId: *id, Owner: *owner, PermissionsFile: base64.StdEncoding.EncodeToString(b),
				}})
				if err != nil {
					return err
				}
				var results []result
				for _, s := range resp.SuccessfulList {
					results = append(results, result{id: s.SessionId, ok: true})
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

package main

import (
	"context"
	"flag"

	"github.com/berth-dev/berth/api"
)

func closeServersCommand() *command {
	return &command{
		name:     "close-servers",
		synopsis: "--server-ids ID[,ID...] [--force]",
		short:    "close servers to new sessions",
		summary:  "Close DCV servers so the broker places no new sessions on them. Without --force a server with sessions stays open.",
		example:  "berth close-servers --server-ids srv-1 --force",
		setup: func(c *cli, fs *flag.FlagSet) action {
			var ids listValue
			fs.Var(&ids, "server-ids", "comma-separated `IDs` of the servers to close (required)")
			force := fs.Bool("force", false, "close even when sessions run on the server (they keep running)")
			return func(ctx context.Context, _ []string) error {
				if !ids.set {
					return usagef("--server-ids is required; e.g. --server-ids srv-1,srv-2 (list IDs with 'berth describe-servers')")
				}
				cl, err := c.connect(ctx)
				if err != nil {
					return err
				}
				req := make([]api.CloseServerRequest, len(ids.items))
				for i, id := range ids.items {
					req[i] = api.CloseServerRequest{ServerId: id, Force: *force}
				}
				resp, err := cl.CloseServers(ctx, req)
				if err != nil {
					return err
				}
				var results []result
				for _, s := range resp.SuccessfulList {
					results = append(results, result{id: s.ServerId, ok: true})
				}
				var failed []string
				for _, f := range resp.UnsuccessfulList {
					results = append(results, result{id: f.CloseServerRequestData.ServerId, code: f.FailureCode, reason: f.FailureReason})
					failed = append(failed, failureLine(f.CloseServerRequestData.ServerId, f.FailureCode, f.FailureReason))
				}
				return c.finish(resp, "SERVER ID", results, failed)
			}
		},
	}
}

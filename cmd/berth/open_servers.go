package main

import (
	"context"
	"flag"
	"fmt"

	"github.com/berth-dev/berth/api"
)

func openServersCommand() *command {
	return &command{
		name:     "open-servers",
		synopsis: "--server-ids ID[,ID...]",
		short:    "open servers for new sessions",
		summary:  "Open DCV servers so the broker places sessions on them (a new server starts closed).",
		example:  "berth open-servers --server-ids srv-1,srv-2",
		setup: func(c *cli, fs *flag.FlagSet) action {
			var ids listValue
			fs.Var(&ids, "server-ids", "comma-separated `IDs` of the servers to open (required)")
			return func(ctx context.Context, _ []string) error {
				if !ids.set {
					return usagef("--server-ids is required; e.g. --server-ids srv-1,srv-2 (list IDs with 'berth describe-servers')")
				}
				cl, err := c.connect(ctx)
				if err != nil {
					return err
				}
				req := make([]api.OpenServerRequest, len(ids.items))
				for i, id := range ids.items {
					req[i] = api.OpenServerRequest{ServerId: id}
				}
				resp, err := cl.OpenServers(ctx, req)
				if err != nil {
					return err
				}
				var results []result
				for _, s := range resp.SuccessfulList {
					results = append(results, result{id: s.ServerId, ok: true})
				}
				var failed []string
				for _, f := range resp.UnsuccessfulList {
					results = append(results, result{id: f.OpenServerRequestData.ServerId, code: f.FailureCode, reason: f.FailureReason})
					failed = append(failed, failureLine(f.OpenServerRequestData.ServerId, f.FailureCode, f.FailureReason))
				}
				return c.finish(resp, "SERVER ID", results, failed)
			}
		},
	}
}

// failureLine formats one failed item for stderr.
func failureLine(id, code, reason string) string {
	if code != "" {
		return fmt.Sprintf("%s: %s: %s", id, code, reason)
	}
	return fmt.Sprintf("%s: %s", id, reason)
}

// finish prints a batch answer (JSON or a results table) and reports the failed
// items, if any, as an itemsError (exit 1).
func (c *cli) finish(resp any, idHeader string, results []result, failed []string) error {
	var err error
	if c.table() {
		err = resultsTable(c.stdout, idHeader, results)
	} else {
		err = c.printJSON(c.rt.lastBody(), resp)
	}
	if err != nil {
		return err
	}
	if len(failed) > 0 {
		return &itemsError{lines: failed}
	}
	return nil
}

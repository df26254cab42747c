package main

import (
	"context"
	"flag"

	"github.com/berth-dev/berth/api"
)

func describeSessionsCommand() *command {
	return &command{
		name:     "describe-sessions",
		synopsis: "[--session-ids ID[,ID...]] [--owner USER] [--next-token TOKEN] [--max-results N] [--all]",
		short:    "describe sessions",
		summary:  "Describe sessions: state, owner, server and connections.",
		example:  "berth describe-sessions --owner alice --output table",
		setup: func(c *cli, fs *flag.FlagSet) action {
			var ids listValue
			fs.Var(&ids, "session-ids", "comma-separated `IDs` of the sessions to describe (default: all)")
			owner := fs.String("owner", "", "describe only the sessions of `USER`")
			next := fs.String("next-token", "", "`TOKEN` from a previous answer's NextToken: describe the next page")
			maxResults := &intValue{min: 1, max: 1000}
			fs.Var(maxResults, "max-results", "sessions per page, `N` from 1 to 1000")
			all := fs.Bool("all", false, "follow NextToken and print every page as one answer")
			return func(ctx context.Context, _ []string) error {
				cl, err := c.connect(ctx)
				if err != nil {
					return err
				}
				req := api.DescribeSessionsRequest{SessionIds: ids.items, MaxResults: maxResults.intPtr(), NextToken: *next}
				if *owner != "" {
					req.Filters = []api.KeyValuePair{{Key: "owner", Value: *owner}}
				}
				var pages [][]byte
				var sessions []api.Session
				seen := map[string]bool{}
				for {
					resp, err := cl.DescribeSessions(ctx, req)
					if err != nil {
						return err
					}
					pages = append(pages, c.rt.lastBody())
					sessions = append(sessions, resp.Sessions...)
					req.NextToken = resp.NextToken
					if !*all || resp.NextToken == "" || seen[resp.NextToken] {
						break
					}
					seen[resp.NextToken] = true
				}
				if *all {
					req.NextToken = ""
				}
				if c.table() {
					return sessionsTable(c.stdout, sessions, req.NextToken)
				}
				out, err := mergePages(pages, "Sessions")
				if err != nil {
					return err
				}
				return c.printJSON(out, nil)
			}
		},
	}
}

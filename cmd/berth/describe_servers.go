package main

import (
	"context"
	"flag"

	"github.com/berth-dev/berth/api"
)

func describeServersCommand() *command {
	return &command{
		name:     "describe-servers",
		synopsis: "[--server-ids ID[,ID...]] [--next-token TOKEN] [--max-results N] [--all]",
		short:    "describe DCV servers",
		summary:  "Describe the DCV servers the broker knows: availability, endpoints, host report and tags.",
		example:  "berth describe-servers --max-results 50 --all --output table",
		setup: func(c *cli, fs *flag.FlagSet) action {
			var ids listValue
			fs.Var(&ids, "server-ids", "comma-separated `IDs` of the servers to describe (default: all)")
			next := fs.String("next-token", "", "`TOKEN` from a previous answer's NextToken: describe the next page")
			maxResults := &intValue{min: 1, max: 1000}
			fs.Var(maxResults, "max-results", "servers per page, `N` from 1 to 1000 (the broker's default is 1000)")
			all := fs.Bool("all", false, "follow NextToken and print every page as one answer")
			return func(ctx context.Context, _ []string) error {
				cl, err := c.connect(ctx)
				if err != nil {
					return err
				}
				req := api.DescribeServersRequest{ServerIds: ids.items, MaxResults: maxResults.intPtr(), NextToken: *next}
				var pages [][]byte
				var servers []api.Server
				seen := map[string]bool{}
				for {
					resp, err := cl.DescribeServers(ctx, req)
					if err != nil {
						return err
					}
					pages = append(pages, c.rt.lastBody())
					servers = append(servers, resp.Servers...)
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
					return serversTable(c.stdout, servers, req.NextToken)
				}
				out, err := mergePages(pages, "Servers")
				if err != nil {
					return err
				}
				return c.printJSON(out, nil)
			}
		},
	}
}

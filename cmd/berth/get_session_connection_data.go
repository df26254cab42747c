package main

import (
	"context"
	"flag"
	"fmt"
	"text/tabwriter"

	"github.com/berth-dev/berth/api"
)

func getSessionConnectionDataCommand() *command {
	return &command{
		name:     "get-session-connection-data",
		synopsis: "--session-id ID --user USER [--url]",
		short:    "get a session's server and connection token (--url: browser URL)",
		summary:  "Get the data a client needs to connect to a session: its server and a connection token for USER.",
		example:  "berth get-session-connection-data --session-id 3f2a... --user alice --url",
		setup: func(c *cli, fs *flag.FlagSet) action {
			id := fs.String("session-id", "", "`ID` of the session (required)")
			user := fs.String("user", "", "`USER` who will connect (required)")
			asURL := fs.Bool("url", false, "print only the browser URL: https://HOST:PORT/PATH?authToken=TOKEN#SESSION")
			return func(ctx context.Context, _ []string) error {
				if err := required("session-id", *id, "--session-id ID (list IDs with 'berth describe-sessions')"); err != nil {
					return err
				}
				if err := required("user", *user, "--user USER, who will connect"); err != nil {
					return err
				}
				cl, err := c.connect(ctx)
				if err != nil {
					return err
				}
				resp, err := cl.GetSessionConnectionData(ctx, *id, *user)
				if err != nil {
					return err
				}
				if *asURL {
					_, err := fmt.Fprintln(c.stdout, api.ConnectionURL(resp))
					return err
				}
				if !c.table() {
					return c.printJSON(c.rt.lastBody(), resp)
				}
				s := resp.Session
				tw := tabwriter.NewWriter(c.stdout, 0, 0, 2, ' ', 0)
				server := ""
				if s.Server != nil {
					server = s.Server.Hostname + " (" + s.Server.Id + ")"
				}
				row(tw, "Session:", s.Id)
				row(tw, "Name:", s.Name)
				row(tw, "Owner:", s.Owner)
				row(tw, "State:", s.State)
				row(tw, "Server:", server)
				row(tw, "URL:", api.ConnectionURL(resp))
				return tw.Flush()
			}
		},
	}
}

package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"text/tabwriter"
)

func helpCommand() *command {
	return &command{
		name:       "help",
		synopsis:   "[COMMAND]",
		short:      "show help for berth or a command",
		positional: "[COMMAND]",
		summary:    "Show berth's help, or a command's options, defaults and an example.",
		example:    "berth help create-session",
		setup: func(c *cli, fs *flag.FlagSet) action {
			return func(ctx context.Context, args []string) error {
				switch len(args) {
				case 0:
					c.usage(c.stdout)
					return nil
				case 1:
				default:
					return usagef("give one command at most, e.g. 'berth help create-session'")
				}
				cmd := findCommand(args[0])
				if cmd == nil {
					return usagef("unknown command %q; run 'berth help' for the list of commands", args[0])
				}
				cfs := newFlagSet(cmd.name)
				cmd.setup(c, cfs)
				c.commandUsage(c.stdout, cmd, cfs)
				return nil
			}
		},
	}
}

// usage writes berth's help.
func (c *cli) usage(w io.Writer) {
	fmt.Fprint(w, `Usage: berth [global options] <command> [options]

berth drives a berth (or Amazon DCV) Session Manager broker through its REST API.
It takes the commands and options of Amazon's dcvsm CLI and prints the broker's
JSON answers.

Commands:
`)
	for _, cmd := range commands() {
		fmt.Fprintf(w, "  %-28s %s\n", cmd.name, cmd.short)
	}
	fmt.Fprint(w, "\nGlobal options (before or after the command):\n")
	fs := newFlagSet("berth")
	c.globalFlags(fs)
	fs.Bool("version", false, "print the version and exit")
	fs.Bool("help", false, "show this help")
	printOptions(w, fs, nil)
	fmt.Fprint(w, "\nEach setting comes from its option, else the environment, else dcvsmcli.conf, else\nthe default. Credentials never come from options.\n\n")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "  Setting\tEnvironment\tdcvsmcli.conf")
	for _, s := range settingTable() {
		name := "--" + s.name
		if !s.option {
			name = s.name
		}
		fmt.Fprintf(tw, "  %s\t%s\t[%s] %s\n", name, s.env, s.section, s.key)
	}
	tw.Flush()
	fmt.Fprintf(w, `
dcvsmcli.conf is read from --conf FILE, else $XDG_CONFIG_HOME/dcvsmcli.conf
(~/.config/dcvsmcli.conf when XDG_CONFIG_HOME is unset), else dcvsmcli.conf or
conf/dcvsmcli.conf beside the berth binary, else /etc/berth/dcvsmcli.conf.

Exit status: 0 success; 1 a failed item, an API or credentials error; 2 bad usage
(including an unreachable broker).

Example:
  export BERTH_CLIENT_ID=... BERTH_CLIENT_PASSWORD=...
  berth --broker-url https://broker:8443 describe-sessions --output table

Run 'berth help COMMAND' for a command's options and an example.
`)
}

// commandUsage writes a command's help.
func (c *cli) commandUsage(w io.Writer, cmd *command, fs *flag.FlagSet) {
	fmt.Fprintf(w, "Usage: berth [global options] %s %s\n\n%s\n\nOptions:\n", cmd.name, cmd.synopsis, cmd.summary)
	printOptions(w, fs, globalNames())
	fmt.Fprintf(w, "  %-28s%s\n", "--help", "show this help")
	fmt.Fprintf(w, "\nGlobal options (--broker-url, --conf, --output json|table, --debug, ...) also work\nafter the command; see 'berth --help'.\n\nExample:\n  %s\n", cmd.example)
}

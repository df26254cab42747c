package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/berth-dev/berth/api"
)

// cli is one run of berth: its streams, environment, options and, once a
// command needs the broker, its settings and client.
type cli struct {
	stdin          io.Reader
	stdout, stderr io.Writer
	env            map[string]string
	// exe is the path of the berth binary, for the dcvsmcli.conf beside it.
	exe string
	// flagValues holds the global options given, by name.
	flagValues map[string]string
	// stderrTTY says whether stderr is a terminal (progress lines rewrite in place).
	stderrTTY bool
	// sleep waits between --wait polls; tests shorten it.
	sleep func(ctx context.Context, d time.Duration) error
	// progressShown and progressLast track the --wait progress line.
	progressShown bool
	progressLast  string

	st     *settings
	client *api.Client
	rt     *transport
}

// command is one berth subcommand. setup declares its options on fs and returns
// the action to run once fs has parsed the arguments, so one declaration serves
// parsing, help and completion.
type command struct {
	name     string
	synopsis string // options in the usage line
	short    string // one line for the command list
	summary  string
	example  string
	// positional names the positional arguments; "" means none are accepted.
	positional string
	setup      func(c *cli, fs *flag.FlagSet) action
}

// action runs a command with its positional arguments.
type action func(ctx context.Context, args []string) error

// commands lists the commands in help order.
func commands() []*command {
	return []*command{
		describeServersCommand(), openServersCommand(), closeServersCommand(),
		createSessionCommand(), describeSessionsCommand(), deleteSessionCommand(),
		getSessionConnectionDataCommand(), getSessionScreenshotsCommand(),
		updateSessionPermissionsCommand(),
		createTemplateCommand(), describeTemplatesCommand(), updateTemplateCommand(), deleteTemplateCommand(),
		launchTemplateCommand(), shareSessionCommand(), extendSessionCommand(),
		createWebhookCommand(), describeWebhooksCommand(), deleteWebhookCommand(), describeWebhookDeliveriesCommand(),
		watchCommand(), describeQueueCommand(), describeCapacityCommand(),
		helpCommand(), completionCommand(),
	}
}

func findCommand(name string) *command {
	for _, c := range commands() {
		if c.name == name {
			return c
		}
	}
	return nil
}

// usageError is bad usage: exit 2, with a one-line message that names the
// option and says what to do next.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, a ...any) error { return &usageError{fmt.Sprintf(format, a...)} }

// itemsError reports the failed items of a batch call: exit 1, one line each.
type itemsError struct{ lines []string }

func (e *itemsError) Error() string { return strings.Join(e.lines, "; ") }

// exitError ends the run with code and no message (help, already reported).
type exitError struct{ code int }

func (e exitError) Error() string { return fmt.Sprintf("exit %d", e.code) }

// cmdError is an error of a named command; messages are prefixed with it.
type cmdError struct {
	cmd string
	err error
}

func (e *cmdError) Error() string { return e.cmd + ": " + e.err.Error() }
func (e *cmdError) Unwrap() error { return e.err }

// tokenError is a failure to get an access token.
type tokenError struct{ err error }

func (e *tokenError) Error() string { return e.err.Error() }
func (e *tokenError) Unwrap() error { return e.err }

// newFlagSet returns a flag set that reports nothing itself: parse turns its
// errors into one-line usage errors.
func newFlagSet(name string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	return fs
}

// parse parses args into fs. cmd is the command whose help --help prints (nil
// for berth itself); other parse errors become one-line usage errors.
func (c *cli) parse(fs *flag.FlagSet, cmd *command, args []string) error {
	err := fs.Parse(args)
	if err == nil {
		return nil
	}
	if errors.Is(err, flag.ErrHelp) {
		if cmd == nil {
			c.usage(c.stdout)
		} else {
			c.commandUsage(c.stdout, cmd, fs)
		}
		return exitError{0}
	}
	helpRef := "berth --help"
	if cmd != nil {
		helpRef = "berth " + cmd.name + " --help"
	}
	msg := err.Error()
	if name, ok := strings.CutPrefix(msg, "flag provided but not defined: -"); ok {
		hint := ""
		if s := closest("--"+name, optionNames(fs)); s != "" {
			hint = fmt.Sprintf(" (did you mean %s?)", s)
		} else if cmd == nil && findCommand(name) != nil {
			hint = fmt.Sprintf(" (%s is a command: drop the dashes)", name)
		}
		return usagef("unknown option --%s%s; run '%s' for the options", name, hint, helpRef)
	}
	if name, ok := strings.CutPrefix(msg, "flag needs an argument: -"); ok {
		return usagef("option --%s needs a value; run '%s' for an example", name, helpRef)
	}
	if rest, ok := strings.CutPrefix(msg, "invalid value "); ok {
		// invalid value "V" for flag -NAME: REASON
		if val, tail, ok := cutQuoted(rest); ok {
			if name, reason, ok := strings.Cut(strings.TrimPrefix(tail, " for flag -"), ": "); ok {
				return usagef("--%s %s: %s", name, quoteArg(val), reason)
			}
		}
	}
	if rest, ok := strings.CutPrefix(msg, "invalid boolean value "); ok {
		if val, tail, ok := cutQuoted(rest); ok {
			name, _, _ := strings.Cut(strings.TrimPrefix(tail, " for -"), ":")
			return usagef("--%s=%s: not a boolean; write --%s or --%s=false", name, val, name, name)
		}
	}
	if arg, ok := strings.CutPrefix(msg, "bad flag syntax: "); ok {
		return usagef("bad option syntax %s; options look like --name VALUE (run '%s')", quoteArg(arg), helpRef)
	}
	return usagef("%s; run '%s'", msg, helpRef)
}

// cutQuoted splits a Go-quoted string off the front of s.
func cutQuoted(s string) (val, rest string, ok bool) {
	for i := 1; i < len(s); i++ {
		if s[i] == '"' && s[i-1] != '\\' {
			v, err := strconv.Unquote(s[:i+1])
			if err != nil {
				return "", "", false
			}
			return v, s[i+1:], true
		}
	}
	return "", "", false
}

// quoteArg quotes an argument for a message when it is empty or has spaces.
func quoteArg(s string) string {
	if s == "" || strings.ContainsAny(s, " \t\n\"'") {
		return fmt.Sprintf("%q", s)
	}
	return s
}

// main parses the global options and dispatches to the command.
func (c *cli) main(ctx context.Context, args []string) error {
	fs := newFlagSet("berth")
	c.globalFlags(fs)
	showVersion := fs.Bool("version", false, "print the version and exit")
	if err := c.parse(fs, nil, args); err != nil {
		return err
	}
	if *showVersion {
		fmt.Fprintf(c.stdout, "berth %s\n", version)
		return nil
	}
	if fs.NArg() == 0 {
		return usagef("no command given; run 'berth help' for the list of commands")
	}
	cmd := findCommand(fs.Arg(0))
	if cmd == nil {
		var names []string
		for _, x := range commands() {
			names = append(names, x.name)
		}
		hint := ""
		if s := closest(fs.Arg(0), names); s != "" {
			hint = fmt.Sprintf(" (did you mean %s?)", s)
		}
		return usagef("unknown command %q%s; run 'berth help' for the list of commands", fs.Arg(0), hint)
	}
	return c.runCommand(ctx, cmd, fs.Args()[1:])
}

// runCommand parses a command's options and runs it.
func (c *cli) runCommand(ctx context.Context, cmd *command, args []string) error {
	fs := newFlagSet(cmd.name)
	act := cmd.setup(c, fs)
	c.globalFlags(fs)
	err := c.parse(fs, cmd, args)
	if err == nil && cmd.positional == "" && fs.NArg() > 0 {
		err = usagef("unexpected argument %s; options start with -- (write switches as --name=false); run 'berth %s --help'", quoteArg(fs.Arg(0)), cmd.name)
	}
	if err == nil {
		err = act(ctx, fs.Args())
	}
	if err == nil {
		return nil
	}
	var ex exitError
	if errors.As(err, &ex) {
		return err
	}
	return &cmdError{cmd: cmd.name, err: c.classify(ctx, err)}
}

// exitCode reports err on stderr and returns the exit code: 0 success, 1 a
// failed item, an API or credentials error, 2 bad usage, 130 interrupted.
func (c *cli) exitCode(ctx context.Context, err error) int {
	if err == nil {
		return 0
	}
	var ex exitError
	if errors.As(err, &ex) {
		return ex.code
	}
	prefix := "berth: "
	var ce *cmdError
	if errors.As(err, &ce) {
		prefix += ce.cmd + ": "
		err = ce.err
	}
	var ie *itemsError
	var ue *usageError
	switch {
	case errors.As(err, &ie):
		for _, l := range ie.lines {
			fmt.Fprintf(c.stderr, "%s%s\n", prefix, l)
		}
		return 1
	case errors.As(err, &ue):
		fmt.Fprintf(c.stderr, "%s%s\n", prefix, oneLine(ue.msg))
		return 2
	case ctx.Err() != nil && errors.Is(err, context.Canceled):
		fmt.Fprintf(c.stderr, "%sinterrupted\n", prefix)
		return 130
	default:
		fmt.Fprintf(c.stderr, "%s%s\n", prefix, oneLine(err.Error()))
		return 1
	}
}

// oneLine folds a message onto one line.
func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}

// classify turns transport and API errors into messages that say what to do:
// an unreachable or untrusted broker is a usage error (exit 2) naming the
// option; refused credentials and API errors exit 1.
func (c *cli) classify(ctx context.Context, err error) error {
	var ue *usageError
	var ie *itemsError
	if errors.As(err, &ue) || errors.As(err, &ie) || c.st == nil {
		return err
	}
	if ctx.Err() != nil {
		return err
	}
	var uerr *url.Error
	if errors.As(err, &uerr) {
		opt, target := "--broker-url", c.st.BrokerURL
		if c.rt.isToken(uerr.URL) && c.st.AuthURL != "" {
			opt, target = "--auth-server-url", c.st.AuthURL
		}
		var cve *tls.CertificateVerificationError
		var rhe tls.RecordHeaderError
		var ne net.Error
		var dns *net.DNSError
		var op *net.OpError
		switch {
		case errors.As(err, &cve):
			return usagef("cannot verify the TLS certificate of %s (%s): %v; pass --ca-bundle FILE with the broker's CA certificate, or --no-verify-ssl for a test broker", target, opt, cve.Err)
		case errors.As(err, &rhe):
			return usagef("%s (%s) does not speak TLS; use an http:// URL or the broker's HTTPS port", target, opt)
		case errors.As(err, &dns):
			return usagef("cannot resolve %s (%s): %v; check the host name in %s", target, opt, dns.Err, opt)
		case errors.As(err, &ne) && ne.Timeout():
			return usagef("%s (%s) did not answer in time; check %s and that the broker runs", target, opt, opt)
		case errors.As(err, &op):
			return usagef("cannot reach %s (%s): %v; check %s and that the broker runs", target, opt, op.Err, opt)
		default:
			return usagef("cannot reach %s (%s): %v; check %s and that the broker runs", target, opt, uerr.Err, opt)
		}
	}
	var ae *api.Error
	var te *tokenError
	if errors.As(err, &te) && errors.As(err, &ae) {
		switch ae.StatusCode {
		case 400, 401, 403:
			return fmt.Errorf("the auth server refused the client credentials of client-id %q (from %s): %s; check BERTH_CLIENT_ID and BERTH_CLIENT_PASSWORD, or client-id and client-password in [authentication] of %s",
				c.st.ClientID, c.st.Source["client-id"], ae.Message, configFileName)
		case 404, 405:
			return fmt.Errorf("%s is not a token endpoint (it answered %d); set --auth-server-url to the broker's /oauth2/token URL or to your authorization server's token endpoint", c.authURL(), ae.StatusCode)
		}
		return fmt.Errorf("get an access token from %s: %w", c.authURL(), ae)
	}
	if errors.As(err, &ae) && ae.StatusCode == 401 {
		if c.st.ClientID == "" {
			return fmt.Errorf("the broker requires credentials (%s): set BERTH_CLIENT_ID and BERTH_CLIENT_PASSWORD, or client-id and client-password in [authentication] of %s", ae.Message, configFileName)
		}
		return fmt.Errorf("the broker refused the access token (%s); check that --auth-server-url is the broker's token endpoint, or that of an authorization server registered on the broker (register-auth-server) with the audience, issuer and algorithm it expects", ae.Message)
	}
	return err
}

// authURL is the token endpoint in use.
func (c *cli) authURL() string {
	if c.st.AuthURL != "" {
		return c.st.AuthURL
	}
	return strings.TrimRight(c.st.BrokerURL, "/") + "/oauth2/token"
}

// connect resolves the settings and returns a client that holds an access
// token (when credentials are configured).
func (c *cli) connect(ctx context.Context) (*api.Client, error) {
	if c.client != nil {
		return c.client, nil
	}
	path, err := findConfig(c.flagValues["conf"], c.env, c.exe)
	if err != nil {
		return nil, err
	}
	file, err := loadConfig(path, func(msg string) { fmt.Fprintf(c.stderr, "berth: warning: %s\n", msg) })
	if err != nil {
		return nil, err
	}
	st, err := resolveSettings(c.flagValues, c.env, file, path)
	if err != nil {
		return nil, err
	}
	hc, err := api.NewHTTPClient(st.CABundle, st.NoVerifySSL)
	if err != nil {
		return nil, usagef("CA bundle %s (from %s): %v; pass --ca-bundle with a PEM file of the broker's CA certificate", st.CABundle, st.Source["ca-bundle"], err)
	}
	c.st = st
	var debug io.Writer
	if st.Debug {
		debug = c.stderr
		c.debugf("config file: %s", orNone(path))
		vals := map[string]string{"broker-url": st.BrokerURL, "auth-server-url": c.authURL(), "ca-bundle": st.CABundle,
			"no-verify-ssl": fmt.Sprint(st.NoVerifySSL), "output": st.Output, "debug": "true", "client-id": st.ClientID,
			"client-password": "(hidden)"}
		if st.ClientPassword == "" {
			vals["client-password"] = ""
		}
		for _, s := range settingTable() {
			c.debugf("%s = %s (from %s)", s.name, orNone(vals[s.name]), st.Source[s.name])
		}
	}
	c.rt = &transport{next: hc.Transport, debug: debug, tokenURL: c.authURL()}
	hc.Transport = c.rt
	switch {
	case st.ClientID != "" && st.ClientPassword == "":
		return nil, fmt.Errorf("client-id is set (from %s) but client-password is not: set BERTH_CLIENT_PASSWORD or client-password in [authentication] of %s", st.Source["client-id"], configFileName)
	case st.ClientID == "" && st.ClientPassword != "":
		return nil, fmt.Errorf("client-password is set (from %s) but client-id is not: set BERTH_CLIENT_ID or client-id in [authentication] of %s", st.Source["client-password"], configFileName)
	}
	cl := &api.Client{BrokerURL: st.BrokerURL, AuthURL: st.AuthURL, ClientID: st.ClientID, ClientSecret: st.ClientPassword, HTTPClient: hc}
	if _, err := cl.Token(ctx); err != nil {
		return nil, &tokenError{err}
	}
	c.client = cl
	return cl, nil
}

func orNone(s string) string {
	if s == "" {
		return "(none)"
	}
	return s
}

// debugf logs a --debug line on stderr.
func (c *cli) debugf(format string, a ...any) {
	if c.st != nil && c.st.Debug {
		fmt.Fprintf(c.stderr, "berth: debug: "+format+"\n", a...)
	}
}

// table reports whether --output table is in effect.
func (c *cli) table() bool { return c.st != nil && c.st.Output == "table" }

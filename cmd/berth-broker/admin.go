package main

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/berth-dev/berth/internal/broker"
	"github.com/berth-dev/berth/internal/jwks"
	"github.com/berth-dev/berth/internal/oauth"
	"github.com/berth-dev/berth/internal/portal"
)

// adminCommand is one `berth-broker COMMAND` that works on the broker's store.
type adminCommand struct {
	name    string
	summary string
	// flags are the command's own options (beyond --config).
	flags   func(fs *flag.FlagSet) func() []string
	example string
	run     func(ctx context.Context, m *Main, args []string, out io.Writer) error
}

func adminCommands() []adminCommand {
	return append([]adminCommand{
		{name: "register-api-client", summary: "register an API client and print its credentials",
			flags: stringFlag("client-name", "name of the client (required)"), example: "berth-broker register-api-client --client-name portal",
			run: func(ctx context.Context, m *Main, a []string, out io.Writer) error {
				if a[0] == "" {
					return usageError("--client-name is required")
				}
				id, secret, err := m.auth.RegisterClient(ctx, oauth.KindAPI, a[0])
				if err != nil {
					return err
				}
				fmt.Fprintf(out, "client-id: %s\nclient-password: %s\n", id, secret)
				return nil
			}},
		{name: "describe-api-clients", summary: "list API clients", example: "berth-broker describe-api-clients",
			run: func(ctx context.Context, m *Main, _ []string, out io.Writer) error {
				return describeClients(ctx, m, oauth.KindAPI, "Api clients", out)
			}},
		{name: "unregister-api-client", summary: "deactivate an API client (its tokens stop working)",
			flags: stringFlag("client-id", "ID of the client (required)"), example: "berth-broker unregister-api-client --client-id ID",
			run: func(ctx context.Context, m *Main, a []string, out io.Writer) error {
				if err := deactivateClient(ctx, m, oauth.KindAPI, a[0]); err != nil {
					return err
				}
				fmt.Fprintf(out, "Client %s unregistered.\n", a[0])
				return nil
			}},
		{name: "renew-auth-server-api-key", summary: "rotate the token signing key (tokens signed before stay valid until they expire)",
			example: "berth-broker renew-auth-server-api-key",
			run: func(ctx context.Context, m *Main, _ []string, out io.Writer) error {
				if err := m.auth.RotateKey(ctx); err != nil {
					return err
				}
				fmt.Fprintln(out, "Keys renewed.")
				return nil
			}},
		{name: "generate-software-statement", summary: "create a software statement that agents register with (printed once: the broker keeps only its hash)",
			flags: statementFlags, example: "berth-broker generate-software-statement --expires-in 24h --max-uses 10",
			run: func(ctx context.Context, m *Main, a []string, out io.Writer) error {
				lim, err := statementLimits(a, time.Now())
				if err != nil {
					return err
				}
				st, err := m.auth.GenerateSoftwareStatement(ctx, version, lim)
				if err != nil {
					return err
				}
				fmt.Fprintf(out, "software-statement: %s\n", st.Statement)
				return nil
			}},
		{name: "describe-software-statements", summary: "list software statements (by ID: their text is not kept)", example: "berth-broker describe-software-statements",
			run: func(ctx context.Context, m *Main, _ []string, out io.Writer) error {
				list, err := m.store.SoftwareStatements(ctx)
				if err != nil {
					return err
				}
				type row struct {
					Statement string `json:"software-statement"`
					IssuedAt  string `json:"issued-at"`
					Active    string `json:"is-active"`
				}
				rows := []row{}
				now := time.Now()
				for _, s := range list {
					// The text is not kept: the ID stands for it (the
					// deactivate command takes either). A statement that
					// expired or used up its uses registers no agent: not
					// active.
					usable := s.Active && (s.ExpiresAt.IsZero() || now.Before(s.ExpiresAt)) && (s.MaxUses == 0 || s.Uses < s.MaxUses)
					rows = append(rows, row{s.ID, s.IssuedAt.UTC().Format("2006.01.02 15:04:05 -0700"), fmt.Sprint(usable)})
				}
				return printJSON(out, "Software Statements", rows)
			}},
		{name: "deactivate-software-statement", summary: "stop a software statement from registering new agents",
			flags:   stringFlag("software-statement", "the statement: its text, its ID (as describe-software-statements lists it) or its fingerprint (statement_fp in the log) (required)"),
			example: "berth-broker deactivate-software-statement --software-statement STATEMENT",
			run: func(ctx context.Context, m *Main, a []string, out io.Writer) error {
				if a[0] == "" {
					return usageError("--software-statement is required")
				}
				if _, err := m.auth.SetSoftwareStatementActive(ctx, a[0], false); err != nil {
					if errors.Is(err, oauth.ErrNotFound) {
						return fmt.Errorf("software statement not found: check it with describe-software-statements")
					}
					return err
				}
				fmt.Fprintf(out, "Software statement %s deactivated\n", a[0])
				return nil
			}},
		{name: "describe-agent-clients", summary: "list registered agents", example: "berth-broker describe-agent-clients",
			run: func(ctx context.Context, m *Main, _ []string, out io.Writer) error {
				return describeClients(ctx, m, oauth.KindAgent, "Session manager agent clients", out)
			}},
		{name: "unregister-agent-client", summary: "deactivate an agent client (the agent is refused from then on)",
			flags: stringFlag("client-id", "ID of the agent client (required)"), example: "berth-broker unregister-agent-client --client-id ID",
			run: func(ctx context.Context, m *Main, a []string, out io.Writer) error {
				if err := deactivateClient(ctx, m, oauth.KindAgent, a[0]); err != nil {
					return err
				}
				fmt.Fprintf(out, "agent client %s unregistered\n", a[0])
				return nil
			}},
		{name: "register-auth-server", summary: "accept the access tokens of an external authorization server, named by the https URL of its key set (JWKS); in effect on every broker within 5 s",
			flags:   authServerFlags,
			example: "berth-broker register-auth-server --url https://cognito-idp.us-east-1.amazonaws.com/us-east-1_EXAMPLE/.well-known/jwks.json --issuer https://cognito-idp.us-east-1.amazonaws.com/us-east-1_EXAMPLE",
			run:     registerAuthServer},
		{name: "list-auth-servers", summary: "list the registered external authorization servers",
			flags: detailsFlag, example: "berth-broker list-auth-servers --details",
			run: listAuthServers},
		{name: "unregister-auth-server", summary: "stop accepting the tokens of an external authorization server (on every broker within 5 s)",
			flags: stringFlag("url", "the key set URL, as list-auth-servers prints it (required)"), example: "berth-broker unregister-auth-server --url https://idp.example.com/.well-known/jwks.json",
			run: unregisterAuthServer},
		{name: "register-server-dns-mappings", summary: "load the server DNS mappings that the Connection Gateway resolver uses (replaces the loaded ones)",
			flags: stringFlag("file-path", "JSON mapping file in the reference format (required)"), example: "berth-broker register-server-dns-mappings --file-path mappings.json",
			run: registerDNSMappings},
		{name: "describe-server-dns-mappings", summary: "print the loaded server DNS mappings", example: "berth-broker describe-server-dns-mappings",
			run: describeDNSMappings},
		{name: "portal-link", summary: "print a single-use sign-in link to the web portal for a user (the broker keeps only its hash; it expires after --expires-in)",
			flags: portalLinkFlags, example: "berth-broker portal-link --user alice --expires-in 10m",
			run: portalLink},
		createWebhookCommand(), describeWebhooksCommand(), deleteWebhookCommand(), describeWebhookDeliveriesCommand(), // webhooks.go
		{name: "backup", summary: "write a consistent copy of the SQLite database while the broker runs (PostgreSQL: use pg_dump)",
			flags: stringFlag("out", "the new file to write (required; must not exist)"), example: "berth-broker backup --out /backup/berth.db",
			run: backup},
	}, auditCommands()...) // audit.go
}

// authServerFlags are register-auth-server's options: --url, --jws-algorithm,
// --issuer, --audience.
func authServerFlags(fs *flag.FlagSet) func() []string {
	u := fs.String("url", "", "the https URL of the server's JSON Web Key Set, e.g. https://idp.example.com/.well-known/jwks.json (required; plain http only for a loopback host)")
	alg := fs.String("jws-algorithm", "", "accept only tokens signed with this JWS algorithm: "+strings.Join(jwks.Algorithms, ", ")+" (default: any of them that the key allows)")
	iss := fs.String("issuer", "", "accept only tokens whose iss is this (default: not checked)")
	aud := fs.String("audience", "", "accept only tokens whose aud is this, or holds it (default: not checked)")
	return func() []string { return []string{*u, *alg, *iss, *aud} }
}

// detailsFlag is list-auth-servers' --details.
func detailsFlag(fs *flag.FlagSet) func() []string {
	d := fs.Bool("details", false, "also print each server's options as JSON")
	return func() []string { return []string{strconv.FormatBool(*d)} }
}

// registerAuthServer stores an external authorization server (registering
// its URL again replaces its options), then tries its key set once and warns
// on stderr if it cannot be fetched or if no audience is checked.
func registerAuthServer(ctx context.Context, m *Main, a []string, out io.Writer) error {
	s := &oauth.AuthServer{URL: a[0], Algorithm: a[1], Issuer: a[2], Audience: a[3]}
	if s.URL == "" {
		return usageError("--url is required")
	}
	if err := oauth.CheckAuthServer(s); err != nil {
		var ae *oauth.AuthServerError
		if errors.As(err, &ae) {
			return usageError(fmt.Sprintf("--%s: %v", ae.Field, ae.Err))
		}
		return err
	}
	if err := m.store.PutAuthServer(ctx, s); err != nil {
		return err
	}
	fmt.Fprintln(out, "Jwk url registered.")
	if s.Audience == "" {
		fmt.Fprintln(m.Stderr, "berth-broker: warning: no --audience: the broker accepts this server's tokens whatever API they were issued for (Amazon Cognito access tokens carry no aud: set --issuer)")
	}
	client, err := m.authServerClient()
	if err != nil {
		fmt.Fprintf(m.Stderr, "berth-broker: warning: %v\n", err)
		return nil
	}
	src := jwks.NewSource(s.URL, jwks.Options{Client: client, Logger: slog.New(slog.DiscardHandler)})
	select {
	case <-src.Fetch():
	case <-ctx.Done():
	}
	if st := src.Status(); st.Err != nil || st.FetchedAt.IsZero() {
		fmt.Fprintf(m.Stderr, "berth-broker: warning: the key set cannot be fetched now (%v); the brokers refuse this server's tokens until it can\n", cmp.Or(st.Err, ctx.Err()))
	}
	return nil
}

// listAuthServers prints `Urls: [ "u1", "u2" ]`, as the reference does, and
// with --details the servers' options.
func listAuthServers(ctx context.Context, m *Main, a []string, out io.Writer) error {
	list, err := m.store.AuthServers(ctx)
	if err != nil {
		return err
	}
	quoted := make([]string, len(list))
	for i, s := range list {
		quoted[i] = strconv.Quote(s.URL)
	}
	if len(quoted) == 0 {
		fmt.Fprintln(out, "Urls: [ ]")
	} else {
		fmt.Fprintf(out, "Urls: [ %s ]\n", strings.Join(quoted, ", "))
	}
	if a[0] != "true" {
		return nil
	}
	type row struct {
		URL          string `json:"url"`
		JWSAlgorithm string `json:"jws-algorithm"`
		Issuer       string `json:"issuer"`
		Audience     string `json:"audience"`
		RegisteredAt string `json:"registered-at"`
	}
	rows := []row{}
	for _, s := range list {
		rows = append(rows, row{s.URL, s.Algorithm, s.Issuer, s.Audience, s.CreatedAt.UTC().Format(time.RFC3339)})
	}
	return printJSON(out, "Auth servers", rows)
}

// unregisterAuthServer removes an external authorization server.
func unregisterAuthServer(ctx context.Context, m *Main, a []string, out io.Writer) error {
	if a[0] == "" {
		return usageError("--url is required")
	}
	if err := m.store.DeleteAuthServer(ctx, a[0]); err != nil {
		if errors.Is(err, oauth.ErrNotFound) {
			return fmt.Errorf("Jwk url %s is not registered: list them with list-auth-servers", a[0])
		}
		return err
	}
	fmt.Fprintf(out, "Jwk url%s unregistered\n", a[0])
	return nil
}

// backup copies a running broker's SQLite database.
func backup(ctx context.Context, m *Main, a []string, out io.Writer) error {
	if a[0] == "" {
		return usageError("--out is required")
	}
	b, ok := m.store.(interface {
		Backup(ctx context.Context, path string) error
	})
	if !ok {
		return usageError("backup copies the SQLite store; with persistence-db = postgresql use PostgreSQL's tools (pg_dump, base backups)")
	}
	start := time.Now()
	if err := b.Backup(ctx, a[0]); err != nil {
		return err
	}
	fmt.Fprintf(out, "backup written to %s in %s\n", a[0], time.Since(start).Round(time.Millisecond))
	return nil
}

func portalLinkFlags(fs *flag.FlagSet) func() []string {
	user := fs.String("user", "", "the OS user name to sign in as: the owner of the user's sessions (required)")
	groups := fs.String("groups", "", "comma-separated groups the user is a member of, for templates published to groups")
	admin := fs.Bool("admin", false, "sign in as a portal admin")
	in := fs.String("expires-in", "5m", "the link works once, for this long, e.g. 5m, 1h (at most 24h)")
	base := fs.String("base-url", "", "the portal's base URL in the link, e.g. https://broker.example.com:8443 (default: portal-external-url, else https://HOST:client-to-broker-connector-https-port)")
	return func() []string { return []string{*user, *groups, strconv.FormatBool(*admin), *in, *base} }
}

func portalLink(ctx context.Context, m *Main, a []string, out io.Writer) error {
	user, groupList, admin, in, base := a[0], a[1], a[2] == "true", a[3], a[4]
	if user == "" {
		return usageError("--user is required")
	}
	if err := broker.ValidateUserName("--user", user); err != nil {
		return usageError(err.Error())
	}
	ttl, err := time.ParseDuration(in)
	if err != nil || ttl <= 0 || ttl > portal.MaxLinkLifetime {
		return usageError(fmt.Sprintf("--expires-in %q is not a duration from 1s to 24h, such as 5m or 1h", in))
	}
	var groups []string
	for g := range strings.SplitSeq(groupList, ",") {
		if g = strings.TrimSpace(g); g != "" {
			groups = append(groups, g)
		}
	}
	if !m.Config.PortalEnabled {
		fmt.Fprintln(m.Stderr, "berth-broker: warning: portal-enabled is false: the broker serves no portal, so the link will not work until it is true")
	}
	if base == "" {
		base = m.Config.PortalExternalURL
	}
	if base == "" {
		host := ""
		if names := m.Config.certificateNames(); len(names) > 0 {
			host = names[0]
		} else if host, err = os.Hostname(); err != nil || host == "" {
			host = "localhost"
		}
		base = "https://" + net.JoinHostPort(host, strconv.Itoa(m.Config.ClientPort))
	} else if !validExternalURL(base) {
		return usageError(fmt.Sprintf("--base-url %q is not an https URL with a host and no path, such as https://broker.example.com:8443", base))
	}
	ps, ok := m.store.(portal.Store)
	if !ok {
		return errors.New("this store cannot keep portal links")
	}
	tok, err := portal.CreateLink(ctx, ps, user, groups, admin, ttl, time.Now())
	if err != nil {
		return usageError(err.Error())
	}
	fmt.Fprintf(out, "%s/portal/link?token=%s\n", strings.TrimRight(base, "/"), tok)
	return nil
}

func adminUsage() string {
	var b strings.Builder
	for _, c := range adminCommands() {
		fmt.Fprintf(&b, "  %-30s %s\n", c.name, c.summary)
	}
	return b.String()
}

type usageError string

func (e usageError) Error() string { return string(e) }

// statementFlags are generate-software-statement's options: --expires-in,
// --expires-at, --max-uses.
func statementFlags(fs *flag.FlagSet) func() []string {
	in := fs.String("expires-in", "", "the statement registers agents for this long, e.g. 30m, 24h, 7d (default: no expiry)")
	at := fs.String("expires-at", "", "the statement registers agents until this time, RFC 3339, e.g. 2030-01-31T18:00:00Z (default: no expiry)")
	uses := fs.String("max-uses", "", "the statement registers at most this many agents (default: no limit)")
	return func() []string { return []string{*in, *at, *uses} }
}

// statementLimits reads statementFlags' values at now.
func statementLimits(a []string, now time.Time) (oauth.StatementLimits, error) {
	var lim oauth.StatementLimits
	in, at, uses := a[0], a[1], a[2]
	switch {
	case in != "" && at != "":
		return lim, usageError("--expires-in and --expires-at are both set; give one")
	case in != "":
		d, err := parseDays(in)
		if err != nil || d <= 0 {
			return lim, usageError(fmt.Sprintf("--expires-in %q is not a positive duration such as 30m, 24h or 7d", in))
		}
		lim.ExpiresAt = now.Add(d)
	case at != "":
		t, err := time.Parse(time.RFC3339, at)
		if err != nil {
			return lim, usageError(fmt.Sprintf("--expires-at %q is not an RFC 3339 time such as 2030-01-31T18:00:00Z", at))
		}
		if !t.After(now) {
			return lim, usageError(fmt.Sprintf("--expires-at %s is not in the future", at))
		}
		lim.ExpiresAt = t
	}
	if uses != "" {
		n, err := strconv.Atoi(uses)
		if err != nil || n < 1 {
			return lim, usageError(fmt.Sprintf("--max-uses %q is not a whole number of at least 1", uses))
		}
		lim.MaxUses = n
	}
	return lim, nil
}

// parseDays is time.ParseDuration that also takes whole days ("7d").
func parseDays(s string) (time.Duration, error) {
	if n, ok := strings.CutSuffix(s, "d"); ok {
		days, err := strconv.Atoi(n)
		if err != nil || days > 100*365 {
			return 0, fmt.Errorf("bad day count %q", n)
		}
		return time.Duration(days) * 24 * time.Hour, nil
	}
	return time.ParseDuration(s)
}

func stringFlag(name, help string) func(fs *flag.FlagSet) func() []string {
	return func(fs *flag.FlagSet) func() []string {
		v := fs.String(name, "", help)
		return func() []string { return []string{*v} }
	}
}

func describeClients(ctx context.Context, m *Main, kind, title string, out io.Writer) error {
	list, err := m.store.ListClients(ctx, kind)
	if err != nil {
		return err
	}
	type row struct {
		Name   string `json:"name"`
		ID     string `json:"id"`
		Active bool   `json:"active"`
	}
	rows := []row{}
	for _, c := range list {
		rows = append(rows, row{c.Name, c.ID, c.Active})
	}
	return printJSON(out, title, rows)
}

func deactivateClient(ctx context.Context, m *Main, kind, id string) error {
	if id == "" {
		return usageError("--client-id is required")
	}
	c, err := m.store.GetClient(ctx, id)
	if err != nil || c.Kind != kind {
		return fmt.Errorf("client %q not found: list clients with describe-%s-clients", id, kind)
	}
	return m.store.SetClientActive(ctx, id, false)
}

func printJSON(out io.Writer, title string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "%s\n%s\n", title, b)
	return nil
}

// runAdmin runs one admin command against the configured store.
func runAdmin(ctx context.Context, cmd adminCommand, args []string, stdout, stderr io.Writer) error {
	m := NewMain()
	m.Stderr = stderr
	fs := flag.NewFlagSet("berth-broker "+cmd.name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&m.ConfigPath, "config", m.ConfigPath, "broker properties `file`")
	get := func() []string { return nil }
	if cmd.flags != nil {
		get = cmd.flags(fs)
	}
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: berth-broker %s [options]\n\n%s.\n\nOptions:\n", cmd.name, cmd.summary)
		fs.PrintDefaults()
		fmt.Fprintf(stderr, "\nExample:\n  %s\n", cmd.example)
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitError{0}
		}
		return exitError{2}
	}
	if fs.NArg() > 0 {
		return usageError(fmt.Sprintf("unexpected argument %q", fs.Arg(0)))
	}
	if err := m.loadConfig(); err != nil {
		return err
	}
	m.Logger = stderrLogger("warn", m.Stderr)
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := m.openStore(ctx, true); err != nil {
		return err
	}
	defer m.store.Close()
	if err := m.auth.EnsureKey(ctx); err != nil {
		return err
	}
	ids := &printedIDs{w: stdout}
	err := cmd.run(ctx, m, get(), ids)
	recordAdmin(ctx, m, cmd.name, fs, ids, err) // audit.go: state-changing commands are audited
	return err
}

// run is main without the process: it returns the exit code.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	args = auditArgs(args) // audit.go: `audit verify`
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		if args[0] == "help" {
			args = []string{"--help"}
		} else {
			for _, c := range adminCommands() {
				if c.name == args[0] {
					return exitCode(runAdmin(ctx, c, args[1:], stdout, stderr), stderr)
				}
			}
			fmt.Fprintf(stderr, "berth-broker: unknown command %q; run berth-broker --help for the list\n", args[0])
			return 2
		}
	}
	m := NewMain()
	m.Stderr = stderr
	if err := m.ParseFlags(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return exitCode(err, stderr)
	}
	if err := m.Run(ctx); err != nil {
		return exitCode(err, stderr)
	}
	<-ctx.Done()
	m.Logger.Info("shutting down")
	if err := m.Close(); err != nil {
		fmt.Fprintf(stderr, "berth-broker: close: %v\n", err)
		return 1
	}
	return 0
}

func exitCode(err error, stderr io.Writer) int {
	var ee exitError
	var ue usageError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ee):
		return ee.code
	case errors.As(err, &ue):
		fmt.Fprintf(stderr, "berth-broker: %v (see --help)\n", err)
		return 2
	default:
		fmt.Fprintf(stderr, "berth-broker: %v\n", err)
		return 1
	}
}

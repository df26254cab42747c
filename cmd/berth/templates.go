package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/berth-dev/berth/api"
)

// templateFlags are the options that set a template's fields, shared by
// create-template and update-template.
type templateFlags struct {
	name, description, requirements, initFile, autorun, storage *string
	typ                                                         *choiceValue
	args, users, groups                                         *listValue
	maxClients                                                  *intValue
	gl                                                          *boolValue
	// gpus and the limits: quotas and lifetime policies (docs/quotas.md).
	gpus, maxSessions, maxGPUs                    *intValue
	idle, disconnected, maxLifetime, maxExtension *floatValue
}

func declareTemplateFlags(fs *flag.FlagSet, nameUsage string) *templateFlags {
	f := &templateFlags{
		typ: &choiceValue{choices: []string{"Console", "Virtual"}}, args: &listValue{}, users: &listValue{}, groups: &listValue{},
		maxClients: &intValue{min: 1, max: 10000}, gl: &boolValue{},
		gpus: &intValue{min: 0, max: 64}, maxSessions: &intValue{min: -1, max: 1_000_000}, maxGPUs: &intValue{min: -1, max: 1_000_000},
		idle: &floatValue{}, disconnected: &floatValue{}, maxLifetime: &floatValue{}, maxExtension: &floatValue{},
	}
	f.name = fs.String("name", "", nameUsage)
	fs.Var(f.typ, "type", "session `TYPE`: Console or Virtual, in any case")
	f.description = fs.String("description", "", "`TEXT` shown to users (at most 1000 bytes)")
	f.requirements = fs.String("requirements", "", "placement `EXPR` a server must meet, as in create-session")
	f.initFile = fs.String("init-file-path", "", "init script `PATH`, relative to the agent's init folder (Linux virtual sessions)")
	f.autorun = fs.String("autorun-file", "", "`PATH` of a file to run in the session, relative to the agent's autorun folder")
	fs.Var(f.args, "autorun-file-arguments", "comma-separated `ARGS` for --autorun-file (Linux virtual sessions)")
	fs.Var(f.maxClients, "max-concurrent-clients", "most clients connected at once, `N` from 1 to 10000")
	fs.Var(f.gl, "dcv-gl-enabled", "true (a `BOOL`) enables DCV GL (virtual sessions)")
	f.storage = fs.String("storage-root", "", "`PATH` of the session's storage folder")
	fs.Var(f.users, "users", "comma-separated OS `USERS` the template is published to")
	fs.Var(f.groups, "groups", "comma-separated identity provider `GROUPS` whose members see the template")
	fs.Var(f.gpus, "gpus", "`N` GPUs, 0 to 64, that each session of the template counts against GPU quotas")
	fs.Var(f.maxSessions, "max-sessions", "most sessions of the template at once, all owners together: `N`, 0 unset, -1 off")
	fs.Var(f.maxGPUs, "max-gpus", "most GPUs the template's sessions use together: `N`, 0 unset, -1 off")
	fs.Var(f.idle, "idle-timeout-minutes", "disconnect clients after `MINUTES` without input (0 unset, -1 off)")
	fs.Var(f.disconnected, "disconnected-timeout-minutes", "delete a session without clients after `MINUTES` (0 unset, -1 off)")
	fs.Var(f.maxLifetime, "max-lifetime-hours", "delete a session `HOURS` after its creation, plus extensions (0 unset, -1 off)")
	fs.Var(f.maxExtension, "max-extension-hours", "the total extension a session may get, `HOURS` (0 unset, -1 off)")
	return f
}

// apply sets the fields of t whose options were given (all of them when
// every is true).
func (f *templateFlags) apply(fs *flag.FlagSet, t *api.Template, every bool) {
	set := map[string]bool{}
	fs.Visit(func(fl *flag.Flag) { set[fl.Name] = true })
	str := func(name string, dst *string, v string) {
		if every || set[name] {
			*dst = v
		}
	}
	str("name", &t.Name, *f.name)
	str("type", &t.Type, strings.ToUpper(f.typ.v))
	str("description", &t.Description, *f.description)
	str("requirements", &t.Requirements, *f.requirements)
	str("init-file-path", &t.InitFile, *f.initFile)
	str("autorun-file", &t.AutorunFile, *f.autorun)
	str("storage-root", &t.StorageRoot, *f.storage)
	if every || set["autorun-file-arguments"] {
		t.AutorunFileArguments = f.args.items
	}
	if every || set["users"] {
		t.Users = f.users.items
	}
	if every || set["groups"] {
		t.Groups = f.groups.items
	}
	if every || set["max-concurrent-clients"] {
		t.MaxConcurrentClients = f.maxClients.n
	}
	if every || set["dcv-gl-enabled"] {
		t.DcvGlEnabled = f.gl.b
	}
	if every || set["gpus"] {
		t.GPUs = int(f.gpus.n)
	}
	var l api.TemplateLimits
	if t.Limits != nil {
		l = *t.Limits
	}
	if every || set["max-sessions"] {
		l.MaxSessions = int(f.maxSessions.n)
	}
	if every || set["max-gpus"] {
		l.MaxGPUs = int(f.maxGPUs.n)
	}
	for _, fl := range []struct {
		name string
		dst  *float64
		v    *floatValue
	}{
		{"idle-timeout-minutes", &l.IdleTimeoutMinutes, f.idle}, {"disconnected-timeout-minutes", &l.DisconnectedTimeoutMinutes, f.disconnected},
		{"max-lifetime-hours", &l.MaxLifetimeHours, f.maxLifetime}, {"max-extension-hours", &l.MaxExtensionHours, f.maxExtension},
	} {
		if every || set[fl.name] {
			*fl.dst = fl.v.f
		}
	}
	t.Limits = nil
	if l != (api.TemplateLimits{}) {
		t.Limits = &l
	}
}

// floatValue is an option holding a number, fractions allowed: 0 or more,
// or -1.
type floatValue struct{ f float64 }

func (v *floatValue) String() string {
	if v == nil || v.f == 0 {
		return ""
	}
	return strconv.FormatFloat(v.f, 'f', -1, 64)
}

// Set parses s: a finite number of at least 0, or -1 (off).
func (v *floatValue) Set(s string) error {
	n, err := strconv.ParseFloat(strings.TrimSpace(s), 64)
	if err != nil || math.IsNaN(n) || math.IsInf(n, 0) || (n < 0 && n != -1) || n > 1_000_000 {
		return fmt.Errorf("use a number from 0 to 1000000 (fractions allowed), or -1 for off")
	}
	v.f = n
	return nil
}

const templateFieldsSynopsis = "[--description TEXT] [--requirements EXPR] [--init-file-path PATH]\n" +
	"       [--autorun-file PATH] [--autorun-file-arguments A,B] [--max-concurrent-clients N] [--dcv-gl-enabled BOOL]\n" +
	"       [--storage-root PATH] [--users U,V] [--groups G,H] [--gpus N] [--max-sessions N] [--max-gpus N]\n" +
	"       [--idle-timeout-minutes M] [--disconnected-timeout-minutes M] [--max-lifetime-hours H] [--max-extension-hours H]"

func createTemplateCommand() *command {
	return &command{
		name:     "create-template",
		synopsis: "--name NAME --type Console|Virtual " + templateFieldsSynopsis,
		short:    "create a session template (berth addition)",
		summary: "Create a session template: the fields of create-session, published to users and groups, who launch it\n" +
			"with launch-template or from the portal. The broker checks it by create-session's rules.",
		example: "berth create-template --name dev --type Virtual --autorun-file xterm.sh --groups developers --users alice",
		setup: func(c *cli, fs *flag.FlagSet) action {
			f := declareTemplateFlags(fs, "unique template `NAME`, 1 to 100 characters (required)")
			return func(ctx context.Context, _ []string) error {
				example := "e.g. berth create-template --name dev --type Virtual --users alice"
				if *f.name == "" {
					return usagef("--name is required; pass --name NAME (%s)", example)
				}
				if f.typ.v == "" {
					return usagef("--type is required; pass --type Console or --type Virtual (%s)", example)
				}
				var t api.Template
				f.apply(fs, &t, true)
				cl, err := c.connect(ctx)
				if err != nil {
					return err
				}
				resp, err := cl.CreateTemplate(ctx, t)
				if err != nil {
					return err
				}
				return c.printTemplates(resp, []api.Template{resp.Template})
			}
		},
	}
}

func updateTemplateCommand() *command {
	return &command{
		name:     "update-template",
		synopsis: "--template-id ID [--name NAME] [--type Console|Virtual] " + templateFieldsSynopsis,
		short:    "change a session template (berth addition)",
		summary: "Change the given fields of a session template and keep the others. An empty value clears a field\n" +
			"(--users \"\" is refused: pass --users with the full new list).",
		example: "berth update-template --template-id 6c1e... --groups developers,designers",
		setup: func(c *cli, fs *flag.FlagSet) action {
			id := fs.String("template-id", "", "`ID` of the template (required)")
			f := declareTemplateFlags(fs, "new template `NAME`")
			return func(ctx context.Context, _ []string) error {
				if err := required("template-id", *id, "--template-id ID (list IDs with 'berth describe-templates')"); err != nil {
					return err
				}
				cl, err := c.connect(ctx)
				if err != nil {
					return err
				}
				cur, err := cl.GetTemplate(ctx, *id)
				if err != nil {
					return err
				}
				t := cur.Template
				f.apply(fs, &t, false)
				t.Id, t.CreationTime, t.UpdateTime = "", nil, nil
				resp, err := cl.UpdateTemplate(ctx, *id, t)
				if err != nil {
					return err
				}
				return c.printTemplates(resp, []api.Template{resp.Template})
			}
		},
	}
}

func deleteTemplateCommand() *command {
	return &command{
		name:     "delete-template",
		synopsis: "--template-id ID",
		short:    "delete a session template (berth addition)",
		summary:  "Delete a session template. Sessions launched from it keep running.",
		example:  "berth delete-template --template-id 6c1e...",
		setup: func(c *cli, fs *flag.FlagSet) action {
			id := fs.String("template-id", "", "`ID` of the template (required)")
			return func(ctx context.Context, _ []string) error {
				if err := required("template-id", *id, "--template-id ID (list IDs with 'berth describe-templates')"); err != nil {
					return err
				}
				cl, err := c.connect(ctx)
				if err != nil {
					return err
				}
				resp, err := cl.DeleteTemplate(ctx, *id)
				if err != nil {
					return err
				}
				return c.finish(resp, "TEMPLATE ID", []result{{id: resp.TemplateId, ok: true}}, nil)
			}
		},
	}
}

func describeTemplatesCommand() *command {
	return &command{
		name:     "describe-templates",
		synopsis: "[--template-id ID] [--user USER] [--groups G,H]",
		short:    "describe session templates (berth addition)",
		summary: "Describe session templates: all of them, one (--template-id), or those published to a user or to\n" +
			"one of some groups (--user, --groups), as the portal shows that user.",
		example: "berth describe-templates --user alice --groups developers --output table",
		setup: func(c *cli, fs *flag.FlagSet) action {
			id := fs.String("template-id", "", "describe only the template `ID`")
			user := fs.String("user", "", "describe only the templates published to `USER` (or to --groups)")
			var groups listValue
			fs.Var(&groups, "groups", "describe only the templates published to one of `GROUPS` (or to --user)")
			return func(ctx context.Context, _ []string) error {
				if *id != "" && (*user != "" || groups.set) {
					return usagef("--template-id describes one template; leave out --user and --groups with it")
				}
				cl, err := c.connect(ctx)
				if err != nil {
					return err
				}
				if *id != "" {
					resp, err := cl.GetTemplate(ctx, *id)
					if err != nil {
						return err
					}
					return c.printTemplates(resp, []api.Template{resp.Template})
				}
				resp, err := cl.DescribeTemplates(ctx, *user, groups.items)
				if err != nil {
					return err
				}
				return c.printTemplates(resp, resp.Templates)
			}
		},
	}
}

// printTemplates prints an answer as JSON, or its templates as a table.
func (c *cli) printTemplates(resp any, list []api.Template) error {
	if !c.table() {
		return c.printJSON(c.rt.lastBody(), resp)
	}
	return templatesTable(c.stdout, list)
}

// templatesTable prints templates, one per row.
func templatesTable(w io.Writer, list []api.Template) error {
	tw := newTable(w, "ID", "NAME", "TYPE", "USERS", "GROUPS", "UPDATED", "DESCRIPTION")
	for _, t := range list {
		updated := ""
		if t.UpdateTime != nil {
			updated = t.UpdateTime.UTC().Format(time.RFC3339)
		}
		row(tw, t.Id, t.Name, t.Type, strings.Join(t.Users, ","), strings.Join(t.Groups, ","), updated, t.Description)
	}
	return finishTable(tw, w, len(list), "template", "")
}

func launchTemplateCommand() *command {
	return &command{
		name:     "launch-template",
		synopsis: "--template-id ID --owner USER [--groups G,H] [--wait] [--wait-timeout DURATION]",
		short:    "create a session from a template (berth addition)",
		summary: "Create a session from a template for a user it is published to (directly or through --groups), as\n" +
			"create-session would with the template's fields. A launch that finds no room waits in the queue.",
		example: "berth launch-template --template-id 6c1e... --owner alice --groups developers --wait",
		setup: func(c *cli, fs *flag.FlagSet) action {
			id := fs.String("template-id", "", "`ID` of the template (required)")
			owner := fs.String("owner", "", "`USER` who will own the session (required)")
			var groups listValue
			fs.Var(&groups, "groups", "comma-separated `GROUPS` the owner is in, for templates published to groups")
			wait := fs.Bool("wait", false, "poll until the session is READY and print it; exit 1 if it is deleted instead")
			waitTimeout := fs.Duration("wait-timeout", 15*time.Minute, "give up --wait after `DURATION`")
			return func(ctx context.Context, _ []string) error {
				if err := required("template-id", *id, "--template-id ID (list IDs with 'berth describe-templates')"); err != nil {
					return err
				}
				if err := required("owner", *owner, "--owner USER, who will own the session"); err != nil {
					return err
				}
				if *waitTimeout <= 0 {
					return usagef("--wait-timeout %s: must be positive; e.g. --wait-timeout 10m", *waitTimeout)
				}
				cl, err := c.connect(ctx)
				if err != nil {
					return err
				}
				resp, err := cl.LaunchTemplate(ctx, *id, api.LaunchTemplateRequest{Owner: *owner, Groups: groups.items})
				if err != nil {
					return err
				}
				if resp.Session == nil || !*wait {
					if c.table() && resp.Session != nil {
						err = sessionsTable(c.stdout, []api.Session{*resp.Session}, "")
					} else {
						err = c.printJSON(c.rt.lastBody(), resp)
					}
					if err != nil {
						return err
					}
					if resp.Session == nil {
						return &itemsError{lines: []string{failureLine(*id, "", resp.FailureReason)}}
					}
					return nil
				}
				wctx, cancel := context.WithTimeout(ctx, *waitTimeout)
				defer cancel()
				return c.waitReady(wctx, ctx, cl, resp.Session.Id, *waitTimeout)
			}
		},
	}
}

func shareSessionCommand() *command {
	return &command{
		name:     "share-session",
		synopsis: "--session-id ID --owner USER [--user USER --level view|full|none]",
		short:    "share a session with another user, or list its shares (berth addition)",
		summary: "Give another user view-only (view) or full (keyboard, mouse, clipboard; no file transfer) access to\n" +
			"a READY session, or take it back (none), by rewriting that user's rules in the session's permissions\n" +
			"file as update-session-permissions does. Without --user, list the session's shares.",
		example: "berth share-session --session-id 3f2a... --owner alice --user bob --level view",
		setup: func(c *cli, fs *flag.FlagSet) action {
			id := fs.String("session-id", "", "`ID` of the session (required)")
			owner := fs.String("owner", "", "`USER` who owns the session (required to share)")
			user := fs.String("user", "", "`USER` to share the session with")
			level := &choiceValue{choices: []string{api.ShareView, api.ShareFull, api.ShareNone}}
			fs.Var(level, "level", "access `LEVEL`: view (display only), full (display, keyboard, mouse, clipboard) or none (remove)")
			return func(ctx context.Context, _ []string) error {
				if err := required("session-id", *id, "--session-id ID (list IDs with 'berth describe-sessions')"); err != nil {
					return err
				}
				if (*user == "") != (level.v == "") {
					return usagef("--user and --level go together: pass both to share (e.g. --user bob --level view), neither to list the shares")
				}
				if *user != "" {
					if err := required("owner", *owner, "--owner USER, the session's owner"); err != nil {
						return err
					}
				}
				cl, err := c.connect(ctx)
				if err != nil {
					return err
				}
				var resp *api.SessionSharesResponse
				if *user == "" {
					resp, err = cl.DescribeSessionShares(ctx, *id)
				} else {
					resp, err = cl.ShareSession(ctx, *id, api.ShareSessionRequest{Owner: *owner, User: *user, Level: level.v})
				}
				if err != nil {
					return err
				}
				if !c.table() {
					return c.printJSON(c.rt.lastBody(), resp)
				}
				tw := newTable(c.stdout, "USER", "LEVEL")
				for _, sh := range resp.Shares {
					row(tw, sh.User, sh.Level)
				}
				return finishTable(tw, c.stdout, len(resp.Shares), "share", "")
			}
		},
	}
}

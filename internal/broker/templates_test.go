package broker_test

import (
	"context"
	"errors"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/berth-dev/berth/internal/broker"
	"github.com/berth-dev/berth/internal/poll"
	"github.com/berth-dev/berth/internal/sqlite"
)

// recordingAgents accepts every command and records the permissions files
// sent, by session.
type recordingAgents struct {
	mu    sync.Mutex
	perms map[string]string
}

func (a *recordingAgents) Dispatch(ctx context.Context, serverID string, cmd broker.Command) (*broker.Result, error) {
	if cmd.Kind == broker.CommandPermissions {
		a.mu.Lock()
		if a.perms == nil {
			a.perms = map[string]string{}
		}
		a.perms[cmd.SessionID] = cmd.Permissions
		a.mu.Unlock()
	}
	return &broker.Result{}, nil
}

func (a *recordingAgents) sent(id string) string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.perms[id]
}

// newTemplateBroker returns a running broker on a real SQLite store with one
// linked linux server, "s1", and the agents it sends commands to.
func newTemplateBroker(t *testing.T) (*broker.Service, *recordingAgents) {
	t.Helper()
	ctx := t.Context()
	st, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "berth.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	agents := &recordingAgents{}
	svc, err := broker.New(ctx, st, agents, nil, broker.Config{BrokerID: "b1", AutorunMaxArgs: 3}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	info := broker.ServerInfo{Hostname: "s1", Healthy: true, Host: broker.Host{OSFamily: "linux"}}
	if err := svc.AgentConnected(ctx, "", "s1", info, nil); err != nil {
		t.Fatal(err)
	}
	rctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() { _ = svc.Run(rctx) })
	t.Cleanup(func() { cancel(); wg.Wait() })
	return svc, agents
}

func goodTemplate() broker.Template {
	return broker.Template{
		Name: "Dev desktop", Description: "xterm and tools", Type: "virtual",
		Requirements: "server:Host.Os.Family = 'linux'", InitFile: "init.sh", AutorunFile: "run.sh",
		AutorunFileArguments: []string{"--fast"}, MaxConcurrentClients: 2, StorageRoot: "%home%/work",
		Users: []string{"bob", "alice", "bob"}, Groups: []string{"devs"},
	}
}

// TestTemplate_Validation checks each rule of a template: the field named,
// and why; the session fields go through CreateSessions' own rules.
func TestTemplate_Validation(t *testing.T) {
	svc, _ := newTemplateBroker(t)
	ctx := t.Context()
	if _, err := svc.CreateTemplate(ctx, broker.Template{Name: "taken", Type: broker.TypeVirtual}); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		change func(*broker.Template)
		want   string
	}{
		{"name required", func(x *broker.Template) { x.Name = " " }, "Name: is required"},
		{"name too long", func(x *broker.Template) { x.Name = strings.Repeat("n", 101) }, "Name: 101 characters exceed the maximum of 100"},
		{"name control", func(x *broker.Template) { x.Name = "a\nb" }, "Name: contains invalid characters"},
		{"name spaces", func(x *broker.Template) { x.Name = "taken " }, "Name: must not start or end with spaces"},
		{"name taken", func(x *broker.Template) { x.Name = "taken" }, `Name: a template named "taken" exists already`},
		{"description too long", func(x *broker.Template) { x.Description = strings.Repeat("d", 1001) }, "Description: 1001 bytes exceed"},
		{"type required", func(x *broker.Template) { x.Type = "" }, "Type: is required"},
		{"type unknown", func(x *broker.Template) { x.Type = "desktop" }, "Type: must be VIRTUAL or CONSOLE"},
		{"requirements", func(x *broker.Template) { x.Requirements = "server:Host.Os.Family = " }, "Requirements: "},
		{"init file absolute", func(x *broker.Template) { x.InitFile = "/etc/init.sh" }, "InitFile: must be relative"},
		{"init file escapes", func(x *broker.Template) { x.InitFile = "../x.sh" }, `InitFile: must not contain ".."`},
		{"init file on console", func(x *broker.Template) { x.Type, x.AutorunFileArguments = "CONSOLE", nil }, "InitFile: only Linux VIRTUAL sessions"},
		{"autorun escapes", func(x *broker.Template) { x.AutorunFile = "a/../../b" }, `AutorunFile: must not contain ".."`},
		{"arguments without autorun", func(x *broker.Template) { x.AutorunFile = "" }, "AutorunFileArguments: require AutorunFile"},
		{"too many arguments", func(x *broker.Template) { x.AutorunFileArguments = []string{"1", "2", "3", "4"} }, "AutorunFileArguments: 4 arguments exceed the maximum of 3"},
		{"argument with NUL", func(x *broker.Template) { x.AutorunFileArguments = []string{"a\x00"} }, "AutorunFileArguments[0]: contains a NUL byte"},
		{"max clients", func(x *broker.Template) { x.MaxConcurrentClients = -1 }, "MaxConcurrentClients: must be between 1 and 10000"},
		{"gl on console", func(x *broker.Template) {
			x.Type, x.InitFile, x.AutorunFileArguments, x.DcvGlEnabled = "CONSOLE", "", nil, true
		}, "DcvGlEnabled: only VIRTUAL sessions"},
		{"storage root", func(x *broker.Template) { x.StorageRoot = "work" }, "StorageRoot: must be an absolute path"},
		{"user name", func(x *broker.Template) { x.Users = []string{"ok", "../root"} }, "Users[1]: "},
		{"group empty", func(x *broker.Template) { x.Groups = []string{""} }, "Groups[0]: is empty"},
		{"group control", func(x *broker.Template) { x.Groups = []string{"a\x01"} }, "Groups[0]: contains invalid characters"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tpl := goodTemplate()
			tc.change(&tpl)
			_, err := svc.CreateTemplate(ctx, tpl)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("CreateTemplate = %v, want an error with %q", err, tc.want)
			}
			if code := broker.ErrorCode(err); code != broker.CodeInvalidInput {
				t.Errorf("code %s, want %s", code, broker.CodeInvalidInput)
			}
		})
	}
	if list, _ := svc.ListTemplates(ctx); len(list) != 1 {
		t.Errorf("refused templates were stored: %d templates", len(list))
	}
}

// TestTemplate_CRUD creates, reads, updates and deletes a template; the type
// and the lists come back normalized.
func TestTemplate_CRUD(t *testing.T) {
	svc, _ := newTemplateBroker(t)
	ctx := t.Context()
	created, err := svc.CreateTemplate(ctx, goodTemplate())
	if err != nil {
		t.Fatal(err)
	}
	if created.ID == "" || created.Type != broker.TypeVirtual || created.CreatedAt.IsZero() {
		t.Errorf("created = %+v, want an ID, VIRTUAL and a creation time", created)
	}
	if d := cmp.Diff([]string{"alice", "bob"}, created.Users); d != "" {
		t.Errorf("Users sorted without duplicates (-want +got):\n%s", d)
	}
	got, err := svc.GetTemplate(ctx, created.ID)
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(created, got); d != "" {
		t.Errorf("GetTemplate (-want +got):\n%s", d)
	}
	upd := *got
	upd.Name, upd.Groups = "Renamed", nil
	after, err := svc.UpdateTemplate(ctx, upd)
	if err != nil {
		t.Fatal(err)
	}
	if after.Name != "Renamed" || after.Groups != nil || !after.CreatedAt.Equal(created.CreatedAt) {
		t.Errorf("updated = %+v", after)
	}
	if err := svc.DeleteTemplate(ctx, created.ID); err != nil {
		t.Fatal(err)
	}
	for name, err := range map[string]error{
		"GetTemplate":    func() error { _, err := svc.GetTemplate(ctx, created.ID); return err }(),
		"UpdateTemplate": func() error { _, err := svc.UpdateTemplate(ctx, upd); return err }(),
		"DeleteTemplate": svc.DeleteTemplate(ctx, created.ID),
	} {
		if !errors.Is(err, broker.ErrNotFound) || broker.ErrorCode(err) != broker.CodeNotFound {
			t.Errorf("%s of a deleted template = %v (code %s), want ErrNotFound with %s", name, err, broker.ErrorCode(err), broker.CodeNotFound)
		}
	}
}

// TestTemplatesFor checks publication: to a user name, or to a group the
// user is in; nobody else sees the template.
func TestTemplatesFor(t *testing.T) {
	svc, _ := newTemplateBroker(t)
	ctx := t.Context()
	for _, tpl := range []broker.Template{
		{Name: "for alice", Type: "VIRTUAL", Users: []string{"alice"}},
		{Name: "for devs", Type: "VIRTUAL", Groups: []string{"devs"}},
		{Name: "for nobody", Type: "VIRTUAL"},
	} {
		if _, err := svc.CreateTemplate(ctx, tpl); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		user   string
		groups []string
		want   []string
	}{
		{"alice", nil, []string{"for alice"}},
		{"alice", []string{"devs"}, []string{"for alice", "for devs"}},
		{"bob", []string{"ops", "devs"}, []string{"for devs"}},
		{"bob", []string{"alice"}, nil}, // a group named like a user is not the user
		{"devs", nil, nil},              // nor a user named like a group
	}
	for _, tc := range tests {
		list, err := svc.TemplatesFor(ctx, tc.user, tc.groups)
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, x := range list {
			names = append(names, x.Name)
		}
		if d := cmp.Diff(tc.want, names); d != "" {
			t.Errorf("TemplatesFor(%s, %v) (-want +got):\n%s", tc.user, tc.groups, d)
		}
	}
}

// TestLaunchTemplate checks that a launch is a CreateSessions item of the
// template for the user, refused when the template is not published to them.
func TestLaunchTemplate(t *testing.T) {
	svc, _ := newTemplateBroker(t)
	ctx := t.Context()
	tpl, err := svc.CreateTemplate(ctx, goodTemplate())
	if err != nil {
		t.Fatal(err)
	}
	res, err := svc.LaunchTemplate(ctx, tpl.ID, "carol", []string{"devs"})
	if err != nil {
		t.Fatal(err)
	}
	if res.Session == nil {
		t.Fatalf("LaunchTemplate failed: %s", res.FailureReason)
	}
	want := &broker.Session{
		Name: tpl.Name, Owner: "carol", Type: broker.TypeVirtual, ServerID: "s1", MaxConcurrentClients: 2, StorageRoot: "%home%/work",
		Spec: broker.SessionSpec{InitFile: "init.sh", AutorunFile: "run.sh", AutorunFileArguments: []string{"--fast"},
			Requirements: tpl.Requirements, EnqueueRequest: true, Template: tpl.ID, Groups: []string{"devs"}},
	}
	if d := cmp.Diff(want, res.Session, cmpopts.IgnoreFields(broker.Session{}, "Seq", "ID", "State", "Substate", "CreationTime", "UpdatedAt")); d != "" {
		t.Errorf("launched session (-want +got):\n%s", d)
	}

	_, err = svc.LaunchTemplate(ctx, tpl.ID, "mallory", []string{"ops"})
	if broker.ErrorCode(err) != broker.CodeForbidden || !strings.Contains(err.Error(), "not published to user \"mallory\"") {
		t.Errorf("launch by a user it is not published to = %v (code %s), want %s", err, broker.ErrorCode(err), broker.CodeForbidden)
	}
	if _, err := svc.LaunchTemplate(ctx, "no-such-template", "carol", nil); !errors.Is(err, broker.ErrNotFound) {
		t.Errorf("launch of an unknown template = %v, want ErrNotFound", err)
	}
	if _, err := svc.LaunchTemplate(ctx, tpl.ID, "../root", nil); err == nil || !strings.HasPrefix(err.Error(), "Owner: ") {
		t.Errorf("launch for a bad user name = %v, want an Owner error", err)
	}

	// A template whose requirements no server meets waits in the queue, as
	// CreateSessions with EnqueueRequest does.
	tight := goodTemplate()
	tight.Name, tight.Requirements = "windows only", "server:Host.Os.Family = 'windows'"
	tight.InitFile, tight.AutorunFileArguments = "", nil
	wt, err := svc.CreateTemplate(ctx, tight)
	if err != nil {
		t.Fatal(err)
	}
	res, err = svc.LaunchTemplate(ctx, wt.ID, "alice", nil)
	if err != nil || res.Session == nil || !res.Session.Enqueued {
		t.Errorf("launch with no server = %+v, %v; want a queued session", res, err)
	}
}

// readySession launches a session for owner and reports it READY.
func readySession(t *testing.T, svc *broker.Service, owner string) *broker.Session {
	t.Helper()
	ctx := t.Context()
	res, err := svc.CreateSessions(ctx, []broker.CreateRequest{{Name: "d", Owner: owner, Type: broker.TypeVirtual}})
	if err != nil || res[0].Session == nil {
		t.Fatalf("CreateSessions = %+v, %v", res, err)
	}
	sess := res[0].Session
	report := []broker.SessionReport{{ID: sess.ID, Name: sess.Name, Owner: owner, Type: sess.Type, State: broker.StateReady}}
	poll.Until(t, 10*time.Second, "session READY", func() bool {
		if err := svc.AgentUpdate(ctx, "s1", nil, report); err != nil {
			t.Fatal(err)
		}
		views, _, err := svc.DescribeSessions(ctx, broker.DescribeQuery{SessionIDs: []string{sess.ID}})
		return err == nil && len(views) == 1 && views[0].State == broker.StateReady
	})
	return sess
}

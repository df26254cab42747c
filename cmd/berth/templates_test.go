package main

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/berth-dev/berth/api"
)

// TestRun_TemplateRequests checks the requests of the template and share
// commands for their options.
func TestRun_TemplateRequests(t *testing.T) {
	fb := newFakeBroker(t)
	tpl := `{"RequestId":"r","Template":{"Id":"t1","Name":"dev","Type":"VIRTUAL","Description":"old","Users":["alice"],"MaxConcurrentClients":3,` +
		`"CreationTime":"2026-01-02T03:04:05Z","UpdateTime":"2026-01-02T03:04:05Z"}}`
	fb.answer("/berth/v1/templates", 200, `{"RequestId":"r","Templates":[]}`)
	fb.answer("/berth/v1/templates/t1", 200, tpl)
	fb.answer("/berth/v1/templates/t1/launch", 200, `{"RequestId":"r","Session":{"Id":"s1","Name":"dev","Owner":"alice","Type":"VIRTUAL","State":"CREATING","CreationTime":"2026-01-02T03:04:05Z","NumOfConnections":0}}`)
	fb.answer("/berth/v1/sessions/s1/shares", 200, `{"RequestId":"r","SessionId":"s1","Shares":[{"User":"bob","Level":"view"}]}`)
	tests := []struct {
		name                      string
		args                      []string
		method, path, query, body string
	}{
		{"create-template minimal", []string{"create-template", "--name", "dev", "--type", "virtual"},
			"POST", "/berth/v1/templates", "", `{"Name":"dev","Type":"VIRTUAL"}`},
		{"create-template everything", []string{"create-template", "--name", "dev", "--type", "Virtual", "--description", "d",
			"--requirements", "tag:gpu = 'yes'", "--init-file-path", "i.sh", "--autorun-file", "a.sh", "--autorun-file-arguments", "-x,y z",
			"--max-concurrent-clients", "4", "--dcv-gl-enabled", "true", "--storage-root", "%home%", "--users", "alice,bob", "--groups", "devs"},
			"POST", "/berth/v1/templates", "", `{"Name":"dev","Description":"d","Type":"VIRTUAL","Requirements":"tag:gpu = 'yes'","InitFile":"i.sh",` +
				`"AutorunFile":"a.sh","AutorunFileArguments":["-x","y z"],"MaxConcurrentClients":4,"DcvGlEnabled":true,"StorageRoot":"%home%",` +
				`"Users":["alice","bob"],"Groups":["devs"]}`},
		{"create-template limits", []string{"create-template", "--name", "dev", "--type", "virtual", "--gpus", "2", "--max-sessions", "10",
			"--max-gpus", "-1", "--idle-timeout-minutes", "0.5", "--max-lifetime-hours", "8"},
			"POST", "/berth/v1/templates", "", `{"Name":"dev","Type":"VIRTUAL","Limits":{"IdleTimeoutMinutes":0.5,"MaxLifetimeHours":8,` +
				`"MaxSessions":10,"MaxGPUs":-1},"GPUs":2}`},
		{"describe-templates", []string{"describe-templates"}, "GET", "/berth/v1/templates", "", ""},
		{"describe-templates for a user", []string{"describe-templates", "--user", "alice", "--groups", "devs,a b"},
			"GET", "/berth/v1/templates", "group=devs&group=a+b&user=alice", ""},
		{"describe-templates one", []string{"describe-templates", "--template-id", "t1"}, "GET", "/berth/v1/templates/t1", "", ""},
		{"delete-template", []string{"delete-template", "--template-id", "t1"}, "DELETE", "/berth/v1/templates/t1", "", ""},
		{"launch-template", []string{"launch-template", "--template-id", "t1", "--owner", "alice", "--groups", "devs"},
			"POST", "/berth/v1/templates/t1/launch", "", `{"Owner":"alice","Groups":["devs"]}`},
		{"share-session", []string{"share-session", "--session-id", "s1", "--owner", "alice", "--user", "bob", "--level", "VIEW"},
			"PUT", "/berth/v1/sessions/s1/shares", "", `{"Owner":"alice","User":"bob","Level":"view"}`},
		{"share-session lists", []string{"share-session", "--session-id", "s1"}, "GET", "/berth/v1/sessions/s1/shares", "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := len(fb.calls())
			_, stderr, code := runCLI(t, fb.env(t), tt.args...)
			if code != 0 {
				t.Fatalf("exit %d: %s", code, stderr)
			}
			calls := fb.calls()[before:]
			if len(calls) != 1 {
				t.Fatalf("%d API calls, want 1: %+v", len(calls), calls)
			}
			if c := calls[0]; c.Method != tt.method || c.Path != tt.path || c.Query != tt.query || c.Body != tt.body {
				t.Errorf("request = %s %s?%s %s\nwant      %s %s?%s %s", c.Method, c.Path, c.Query, c.Body, tt.method, tt.path, tt.query, tt.body)
			}
		})
	}

	// update-template reads the template and changes only the options given.
	before := len(fb.calls())
	if _, stderr, code := runCLI(t, fb.env(t), "update-template", "--template-id", "t1", "--groups", "ops", "--description", ""); code != 0 {
		t.Fatalf("update-template: exit %d: %s", code, stderr)
	}
	calls := fb.calls()[before:]
	if len(calls) != 2 || calls[0].Method != "GET" || calls[1].Method != "PUT" || calls[1].Path != "/berth/v1/templates/t1" {
		t.Fatalf("update-template calls = %+v, want GET then PUT of /berth/v1/templates/t1", calls)
	}
	var sent api.Template
	if err := json.Unmarshal([]byte(calls[1].Body), &sent); err != nil {
		t.Fatal(err)
	}
	if sent.Name != "dev" || sent.Description != "" || strings.Join(sent.Users, ",") != "alice" || strings.Join(sent.Groups, ",") != "ops" ||
		sent.MaxConcurrentClients != 3 || sent.Id != "" || sent.CreationTime != nil {
		t.Errorf("update-template sent %s", calls[1].Body)
	}
}

// TestRun_TemplateUsage checks the refusals of bad usage: exit 2 and a line
// that names the option.
func TestRun_TemplateUsage(t *testing.T) {
	env := isolatedEnv(t, "BERTH_BROKER_URL=https://127.0.0.1:1")
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"create-template", "--type", "virtual"}, "--name is required"},
		{[]string{"create-template", "--name", "x"}, "--type is required"},
		{[]string{"create-template", "--name", "x", "--type", "desktop"}, "use one of Console, Virtual"},
		{[]string{"create-template", "--name", "x", "--type", "virtual", "--max-concurrent-clients", "0"}, "out of range"},
		{[]string{"create-template", "--name", "x", "--type", "virtual", "--gpus", "65"}, "out of range"},
		{[]string{"create-template", "--name", "x", "--type", "virtual", "--max-sessions", "-2"}, "out of range"},
		{[]string{"create-template", "--name", "x", "--type", "virtual", "--max-lifetime-hours", "-2"}, "or -1 for off"},
		{[]string{"update-template", "--name", "x"}, "--template-id is required"},
		{[]string{"delete-template"}, "--template-id is required"},
		{[]string{"describe-templates", "--template-id", "t", "--user", "u"}, "leave out --user and --groups"},
		{[]string{"launch-template", "--template-id", "t"}, "--owner is required"},
		{[]string{"share-session", "--session-id", "s", "--user", "bob"}, "--user and --level go together"},
		{[]string{"share-session", "--session-id", "s", "--user", "bob", "--level", "admin"}, "use one of view, full, none"},
		{[]string{"share-session", "--user", "bob", "--level", "view"}, "--session-id is required"},
		{[]string{"share-session", "--session-id", "s", "--user", "bob", "--level", "view"}, "--owner is required"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			_, stderr, code := runCLI(t, env, tt.args...)
			if code != 2 || !strings.Contains(stderr, tt.want) {
				t.Errorf("exit %d, stderr %q; want 2 with %q", code, stderr, tt.want)
			}
		})
	}
}

// TestE2E_Templates runs the template and share commands against a real
// berth-broker: create, a taken name, publication, update, launch (refused,
// then queued for lack of a server), shares refused, delete.
func TestE2E_Templates(t *testing.T) {
	b := startE2EBroker(t)
	run := func(wantCode int, args ...string) string {
		t.Helper()
		out, stderr, code := b.run(t, nil, args...)
		if code != wantCode {
			t.Fatalf("berth %s: exit %d, want %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), code, wantCode, out, stderr)
		}
		return out + stderr
	}
	var created api.TemplateResponse
	if err := json.Unmarshal([]byte(run(0, "create-template", "--name", "dev", "--type", "virtual", "--users", "alice", "--autorun-file", "run.sh")), &created); err != nil {
		t.Fatal(err)
	}
	id := created.Template.Id
	if id == "" || created.Template.Type != api.TypeVirtual {
		t.Fatalf("created %+v", created)
	}
	for _, tc := range []struct {
		code int
		args []string
		want string
	}{
		{1, []string{"create-template", "--name", "dev", "--type", "console"}, `409: Name: a template named "dev" exists already`},
		{1, []string{"create-template", "--name", "x", "--type", "console", "--init-file-path", "i.sh"}, "400: InitFile: only Linux VIRTUAL sessions"},
		{0, []string{"describe-templates", "--user", "alice", "--output", "table"}, "(1 template)"},
		{0, []string{"describe-templates", "--user", "bob"}, `"Templates": []`},
		{0, []string{"update-template", "--template-id", id, "--groups", "devs"}, `"devs"`},
		{0, []string{"describe-templates", "--user", "bob", "--groups", "devs", "--output", "table"}, "alice  devs"},
		{1, []string{"launch-template", "--template-id", id, "--owner", "bob"}, `403: the template "dev" is not published to user "bob"`},
		{1, []string{"launch-template", "--template-id", "nope", "--owner", "bob"}, `404: template "nope" does not exist`},
	} {
		if out := run(tc.code, tc.args...); !strings.Contains(out, tc.want) {
			t.Errorf("berth %s: %s\nwant %q", strings.Join(tc.args, " "), out, tc.want)
		}
	}
	var launched api.LaunchTemplateResponse
	if err := json.Unmarshal([]byte(run(0, "launch-template", "--template-id", id, "--owner", "bob", "--groups", "devs")), &launched); err != nil {
		t.Fatal(err)
	}
	if launched.Session == nil || launched.Session.Owner != "bob" || launched.Session.Name != "dev" {
		t.Fatalf("launched %+v", launched)
	}
	sid := launched.Session.Id
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"share-session", "--session-id", sid, "--owner", "mallory", "--user", "eve", "--level", "full"}, "403: only the session's owner may share it"},
		{[]string{"share-session", "--session-id", sid, "--owner", "bob", "--user", "carol", "--level", "view"}, "409: the session is"},
		{[]string{"share-session", "--session-id", "nope", "--owner", "bob", "--user", "carol", "--level", "view"}, `404: the session "nope" does not exist`},
	} {
		if out := run(1, tc.args...); !strings.Contains(out, tc.want) {
			t.Errorf("berth %s: %s\nwant %q", strings.Join(tc.args, " "), out, tc.want)
		}
	}
	if out := run(0, "share-session", "--session-id", sid); !strings.Contains(out, `"Shares": []`) {
		t.Errorf("shares of an unshared session: %s", out)
	}
	run(0, "delete-template", "--template-id", id)
	if out := run(0, "describe-templates", "--output", "table"); !strings.Contains(out, "(0 templates)") {
		t.Errorf("after delete-template: %s", out)
	}
}

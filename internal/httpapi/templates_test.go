package httpapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/internal/apispec"
	"github.com/berth-dev/berth/internal/broker"
	"github.com/berth-dev/berth/internal/poll"
)

// specChecked is an HTTP client of ts that checks every answer against
// berth's OpenAPI document.
func specChecked(t *testing.T, ts *httptest.Server) *http.Client {
	doc := apispec.MustBerth(t)
	c := *ts.Client()
	next := c.Transport
	c.Transport = roundTripper(func(req *http.Request) (*http.Response, error) {
		var reqBody []byte
		if req.Body != nil {
			reqBody, _ = io.ReadAll(req.Body)
			req.Body = io.NopCloser(bytes.NewReader(reqBody))
		}
		resp, err := next.RoundTrip(req)
		if err != nil {
			return resp, err
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		resp.Body = io.NopCloser(bytes.NewReader(body))
		if err != nil {
			return resp, err
		}
		if err := doc.ValidateResponse(req, reqBody, resp.StatusCode, resp.Header, body); err != nil {
			t.Errorf("%s %s: the answer does not match api/openapi.yaml: %v\n%s", req.Method, req.URL.Path, err, body)
		}
		return resp, nil
	})
	return &c
}

type roundTripper func(*http.Request) (*http.Response, error)

func (f roundTripper) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// TestTemplatesAPI drives the template routes with the api client over real
// HTTPS: create, read, list (all, and for a user and groups), update,
// launch, delete.
func TestTemplatesAPI(t *testing.T) {
	_, _, ts := pageBroker(t, 1)
	ctx := t.Context()
	c := &api.Client{BrokerURL: ts.URL, HTTPClient: specChecked(t, ts)}
	created, err := c.CreateTemplate(ctx, api.Template{Name: "Dev", Type: "virtual", AutorunFile: "run.sh",
		AutorunFileArguments: []string{"-x"}, MaxConcurrentClients: 2, Users: []string{"alice"}, Groups: []string{"devs"}})
	if err != nil {
		t.Fatal(err)
	}
	tpl := created.Template
	if tpl.Id == "" || tpl.Type != api.TypeVirtual || tpl.CreationTime == nil {
		t.Fatalf("created %+v", tpl)
	}
	if _, err := c.CreateTemplate(ctx, api.Template{Name: "Other", Type: "CONSOLE", Groups: []string{"ops"}}); err != nil {
		t.Fatal(err)
	}
	got, err := c.GetTemplate(ctx, tpl.Id)
	if err != nil || got.Template.Name != "Dev" || got.Template.AutorunFileArguments[0] != "-x" {
		t.Fatalf("GetTemplate = %+v, %v", got, err)
	}
	names := func(user string, groups ...string) string {
		t.Helper()
		list, err := c.DescribeTemplates(ctx, user, groups)
		if err != nil {
			t.Fatal(err)
		}
		var n []string
		for _, x := range list.Templates {
			n = append(n, x.Name)
		}
		return strings.Join(n, ",")
	}
	for _, tc := range []struct {
		user   string
		groups []string
		want   string
	}{
		{"", nil, "Dev,Other"},
		{"alice", nil, "Dev"},
		{"bob", []string{"ops"}, "Other"},
		{"bob", []string{"ops", "devs"}, "Dev,Other"},
		{"bob", nil, ""},
	} {
		if got := names(tc.user, tc.groups...); got != tc.want {
			t.Errorf("DescribeTemplates(%q, %v) = %q, want %q", tc.user, tc.groups, got, tc.want)
		}
	}

	upd := tpl
	upd.Id, upd.Name, upd.Users = "", "Dev 2", []string{"alice", "carol"}
	after, err := c.UpdateTemplate(ctx, tpl.Id, upd)
	if err != nil || after.Template.Name != "Dev 2" || !after.Template.CreationTime.Equal(*tpl.CreationTime) {
		t.Fatalf("UpdateTemplate = %+v, %v", after, err)
	}

	launched, err := c.LaunchTemplate(ctx, tpl.Id, api.LaunchTemplateRequest{Owner: "carol"})
	if err != nil {
		t.Fatal(err)
	}
	if launched.Session == nil || launched.Session.Owner != "carol" || launched.Session.Name != "Dev 2" ||
		launched.Session.MaxConcurrentClients != 2 || launched.Session.State != api.StateCreating {
		t.Errorf("LaunchTemplate = %+v", launched)
	}

	if _, err := c.DeleteTemplate(ctx, tpl.Id); err != nil {
		t.Fatal(err)
	}
	if got := names(""); got != "Other" {
		t.Errorf("after delete: %q", got)
	}
}

// TestTemplatesAPI_Refusals checks the status and the message of each
// refusal: 4xx naming the field and why, never 5xx.
func TestTemplatesAPI_Refusals(t *testing.T) {
	_, _, ts := pageBroker(t, 1)
	ctx := t.Context()
	c := &api.Client{BrokerURL: ts.URL, HTTPClient: specChecked(t, ts)}
	tpl, err := c.CreateTemplate(ctx, api.Template{Name: "Dev", Type: "VIRTUAL", Users: []string{"alice"}})
	if err != nil {
		t.Fatal(err)
	}
	id := tpl.Template.Id
	client := specChecked(t, ts)
	tests := []struct {
		name, method, path, body string
		status                   int
		want                     string
	}{
		{"no body", "POST", "/berth/v1/templates", "", 400, "body: is required"},
		{"bad JSON", "POST", "/berth/v1/templates", `{"Name":`, 400, "body: invalid JSON"},
		{"wrong type", "POST", "/berth/v1/templates", `{"Name":"x","Type":"VIRTUAL","Users":"alice"}`, 400, "Users: expected an array"},
		{"no name", "POST", "/berth/v1/templates", `{"Type":"VIRTUAL"}`, 400, "Name: is required"},
		{"bad type", "POST", "/berth/v1/templates", `{"Name":"x","Type":"GAME"}`, 400, "Type: must be VIRTUAL or CONSOLE"},
		{"bad requirements", "POST", "/berth/v1/templates", `{"Name":"x","Type":"VIRTUAL","Requirements":"server:Host.Os.Family ="}`, 400, "Requirements: "},
		{"bad init file", "POST", "/berth/v1/templates", `{"Name":"x","Type":"VIRTUAL","InitFile":"/etc/passwd"}`, 400, "InitFile: must be relative"},
		{"name taken", "POST", "/berth/v1/templates", `{"Name":"Dev","Type":"VIRTUAL"}`, 409, `Name: a template named "Dev" exists already`},
		{"unknown template", "GET", "/berth/v1/templates/nope", "", 404, `template "nope" does not exist`},
		{"update unknown", "PUT", "/berth/v1/templates/nope", `{"Name":"y","Type":"VIRTUAL"}`, 404, "does not exist"},
		{"update with another Id", "PUT", "/berth/v1/templates/" + id, `{"Id":"other","Name":"y","Type":"VIRTUAL"}`, 400, "Id: differs"},
		{"delete unknown", "DELETE", "/berth/v1/templates/nope", "", 404, "does not exist"},
		{"launch unpublished", "POST", "/berth/v1/templates/" + id + "/launch", `{"Owner":"mallory"}`, 403, `not published to user "mallory"`},
		{"launch bad owner", "POST", "/berth/v1/templates/" + id + "/launch", `{"Owner":"../x"}`, 400, "Owner: "},
		{"launch no body", "POST", "/berth/v1/templates/" + id + "/launch", ``, 400, "body: is required"},
		{"list bad user", "GET", "/berth/v1/templates?user=a%20b", "", 400, "user: "},
		{"shares of unknown session", "GET", "/berth/v1/sessions/nope/shares", "", 404, `the session "nope" does not exist`},
		{"share bad level", "PUT", "/berth/v1/sessions/nope/shares", `{"Owner":"a","User":"b","Level":"root"}`, 400, "Level: must be view, full or none"},
		{"share unknown session", "PUT", "/berth/v1/sessions/nope/shares", `{"Owner":"a","User":"b","Level":"view"}`, 404, "does not exist"},
		{"share no user", "PUT", "/berth/v1/sessions/nope/shares", `{"Owner":"a","Level":"view"}`, 400, "User: is required"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req, err := http.NewRequestWithContext(ctx, tc.method, ts.URL+tc.path, strings.NewReader(tc.body))
			if err != nil {
				t.Fatal(err)
			}
			resp, err := client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			var e api.ErrorResponse
			if err := json.Unmarshal(body, &e); err != nil {
				t.Fatalf("%s %s: the answer is not a JSON error: %s", tc.method, tc.path, body)
			}
			if resp.StatusCode != tc.status || !strings.Contains(e.Error, tc.want) {
				t.Errorf("%s %s = %d %s, want %d with %q", tc.method, tc.path, resp.StatusCode, body, tc.status, tc.want)
			}
		})
	}
}

// TestSharesAPI shares a READY session over the API and reads the shares
// back; another owner is refused with 403.
func TestSharesAPI(t *testing.T) {
	svc, _, ts := pageBroker(t, 1)
	ctx := t.Context()
	c := &api.Client{BrokerURL: ts.URL, HTTPClient: specChecked(t, ts)}
	res, err := svc.CreateSessions(ctx, []broker.CreateRequest{{Name: "d", Owner: "alice", Type: "VIRTUAL"}})
	if err != nil || res[0].Session == nil {
		t.Fatal(res, err)
	}
	sess := res[0].Session
	_, err = c.ShareSession(ctx, sess.ID, api.ShareSessionRequest{Owner: "alice", User: "bob", Level: "view"})
	var ae *api.Error
	if !errors.As(err, &ae) || ae.StatusCode != http.StatusConflict || ae.Code != broker.CodeNotReady {
		t.Errorf("share before READY = %v, want 409 %s", err, broker.CodeNotReady)
	}
	report := []broker.SessionReport{{ID: sess.ID, Name: "d", Owner: "alice", Type: "VIRTUAL", State: broker.StateReady}}
	poll.Until(t, 10*time.Second, "session READY", func() bool {
		if err := svc.AgentUpdate(ctx, sess.ServerID, nil, report); err != nil {
			t.Fatal(err)
		}
		views, _, err := svc.DescribeSessions(ctx, broker.DescribeQuery{SessionIDs: []string{sess.ID}})
		return err == nil && len(views) == 1 && views[0].State == broker.StateReady
	})

	out, err := c.ShareSession(ctx, sess.ID, api.ShareSessionRequest{Owner: "alice", User: "bob", Level: "View"})
	if err != nil {
		t.Fatal(err)
	}
	if len(out.Shares) != 1 || out.Shares[0] != (api.SessionShare{User: "bob", Level: api.ShareView}) {
		t.Errorf("ShareSession = %+v", out)
	}
	got, err := c.DescribeSessionShares(ctx, sess.ID)
	if err != nil || len(got.Shares) != 1 || got.SessionId != sess.ID {
		t.Errorf("DescribeSessionShares = %+v, %v", got, err)
	}
	_, err = c.ShareSession(ctx, sess.ID, api.ShareSessionRequest{Owner: "mallory", User: "mallory2", Level: "full"})
	if !errors.As(err, &ae) || ae.StatusCode != http.StatusForbidden || ae.Code != broker.CodeForbidden {
		t.Errorf("share by another owner = %v, want 403 %s", err, broker.CodeForbidden)
	}
	out, err = c.ShareSession(ctx, sess.ID, api.ShareSessionRequest{Owner: "alice", User: "bob", Level: "none"})
	if err != nil || len(out.Shares) != 0 {
		t.Errorf("share none = %+v, %v", out, err)
	}
}

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/berth-dev/berth/api"
)

// TestRun_Requests checks the request each command sends for its options,
// including the reference CLI's misspelled option names.
func TestRun_Requests(t *testing.T) {
	fb := newFakeBroker(t)
	ok := `{"RequestId":"r","SuccessfulList":[],"UnsuccessfulList":[]}`
	for _, p := range []string{"/createSessions", "/deleteSessions", "/sessionPermissions", "/getSessionScreenshots", "/openServers", "/closeServers"} {
		fb.answer(p, 200, ok)
	}
	fb.answer("/describeSessions", 200, `{"RequestId":"r","Sessions":[]}`)
	fb.answer("/describeServers", 200, `{"RequestId":"r","Servers":[]}`)
	fb.answer("/sessionConnectionData", 200, `{"Session":{"Id":"s1"},"ConnectionToken":"t"}`)
	perm := filepath.Join(t.TempDir(), "p.perm")
	os.WriteFile(perm, []byte("[permissions]\n%owner% allow builtin\n"), 0o600)
	tests := []struct {
		name   string
		stdin  string
		args   []string
		method string
		path   string
		body   string
	}{
		{"describe-servers", "", []string{"describe-servers"}, "POST", "/describeServers", `{}`},
		{"describe-servers options", "", []string{"describe-servers", "--server-ids", "a, b", "--server-ids=c", "--max-results", "5", "--next-token", "n"},
			"POST", "/describeServers", `{"ServerIds":["a","b","c"],"MaxResults":5,"NextToken":"n"}`},
		{"describe-sessions options", "", []string{"describe-sessions", "--session-ids", "s1,s2", "--owner", "alice", "--max-results", "1000"},
			"POST", "/describeSessions", `{"SessionIds":["s1","s2"],"Filters":[{"Key":"owner","Value":"alice"}],"MaxResults":1000}`},
		{"open-servers", "", []string{"open-servers", "--server-ids", "a,b"}, "POST", "/openServers", `[{"ServerId":"a"},{"ServerId":"b"}]`},
		{"close-servers", "", []string{"close-servers", "--server-ids", "a", "--force"}, "POST", "/closeServers", `[{"ServerId":"a","Force":true}]`},
		{"create-session minimal, type in any case", "", []string{"create-session", "--name", "n", "--owner", "o", "--type", "cOnSoLe"},
			"POST", "/createSessions", `[{"Name":"n","Owner":"o","Type":"CONSOLE"}]`},
		{"create-session everything", "", []string{"create-session", "--name", "n", "--owner", "o", "--type", "Virtual",
			"--init-file-path", "init.sh", "--autorun-file", "run.sh", "--autorun-file-arguments", "-a,b c", "--max-concurrent-clients", "7",
			"--dcv-gl-enabled", "--permissions-file", perm, "--requirements", "server:Host.Os.Family = 'linux'", "--storage-root", "/home/o",
			"--enqueue-request", "true", "--disable-retry-on-failure"},
			"POST", "/createSessions", `[{"Name":"n","Owner":"o","Type":"VIRTUAL","DcvGlEnabled":true,"MaxConcurrentClients":7,"InitFile":"init.sh",` +
				`"AutorunFile":"run.sh","AutorunFileArguments":["-a","b c"],"PermissionsFile":"` + b64("[permissions]\n%owner% allow builtin\n") +
				`","Requirements":"server:Host.Os.Family = 'linux'","EnqueueRequest":true,"DisableRetryOnFailure":true,"StorageRoot":"/home/o"}]`},
		{"create-session --max-concurrents-clients", "", []string{"create-session", "--name", "n", "--owner", "o", "--type", "virtual", "--max-concurrents-clients", "100"},
			"POST", "/createSessions", `[{"Name":"n","Owner":"o","Type":"VIRTUAL","MaxConcurrentClients":100}]`},
		{"create-session --max_concurrent-clients", "", []string{"create-session", "--name", "n", "--owner", "o", "--type", "virtual", "--max_concurrent-clients=1"},
			"POST", "/createSessions", `[{"Name":"n","Owner":"o","Type":"VIRTUAL","MaxConcurrentClients":1}]`},
		{"create-session --enqueue-request false", "", []string{"create-session", "--name", "n", "--owner", "o", "--type", "virtual", "--enqueue-request", "false"},
			"POST", "/createSessions", `[{"Name":"n","Owner":"o","Type":"VIRTUAL"}]`},
		{"create-session permissions from stdin", "perm text", []string{"create-session", "--name", "n", "--owner", "o", "--type", "virtual", "--permissions-file", "-"},
			"POST", "/createSessions", `[{"Name":"n","Owner":"o","Type":"VIRTUAL","PermissionsFile":"` + b64("perm text") + `"}]`},
		{"delete-session", "", []string{"delete-session", "--session-id", "s1", "--owner", "o", "--force"},
			"POST", "/deleteSessions", `[{"SessionId":"s1","Owner":"o","Force":true}]`},
		{"get-session-connection-data escapes the path", "", []string{"get-session-connection-data", "--session-id", "s 1", "--user", "a/b"},
			"GET", "/sessionConnectionData/s 1/a/b", ``},
		{"get-session-screenshots", "", []string{"get-session-screenshots", "--session-ids", "s1,s2", "--max-width", "640", "--max-height", "480"},
			"POST", "/getSessionScreenshots", `[{"SessionId":"s1","MaxWidth":640,"MaxHeight":480},{"SessionId":"s2","MaxWidth":640,"MaxHeight":480}]`},
		{"update-session-permissions", "", []string{"update-session-permissions", "--session-id", "s1", "--owner", "o", "--permission-file", perm},
			"PUT", "/sessionPermissions", `[{"SessionId":"s1","Owner":"o","PermissionsFile":"` + b64("[permissions]\n%owner% allow builtin\n") + `"}]`},
		{"update-session-permissions --permissions-file", "x", []string{"update-session-permissions", "--session-id", "s1", "--owner", "o", "--permissions-file", "-"},
			"PUT", "/sessionPermissions", `[{"SessionId":"s1","Owner":"o","PermissionsFile":"eA=="}]`},
		{"global options after the command", "", []string{"describe-servers", "--output", "table", "--debug"}, "POST", "/describeServers", `{}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := len(fb.calls())
			_, stderr, code := runCLIStdin(t, tt.stdin, fb.env(t), tt.args...)
			if code != 0 {
				t.Fatalf("exit %d: %s", code, stderr)
			}
			calls := fb.calls()[before:]
			if len(calls) != 1 {
				t.Fatalf("%d API calls, want 1: %+v", len(calls), calls)
			}
			if c := calls[0]; c.Method != tt.method || c.Path != tt.path || c.Body != tt.body {
				t.Errorf("request = %s %s %s\nwant      %s %s %s", c.Method, c.Path, c.Body, tt.method, tt.path, tt.body)
			}
		})
	}
}

// TestRun_FailedItems checks exit 1 with one stderr line per failed item, the
// JSON answer still printed.
func TestRun_FailedItems(t *testing.T) {
	fb := newFakeBroker(t)
	fb.answer("/openServers", 200, `{"RequestId":"r","SuccessfulList":[{"ServerId":"a"}],"UnsuccessfulList":[`+
		`{"OpenServerRequestData":{"ServerId":"b"},"FailureCode":"DCV_SERVER_NOT_FOUND","FailureReason":"Dcv server not found."}]}`)
	fb.answer("/createSessions", 200, `{"RequestId":"r","SuccessfulList":[],"UnsuccessfulList":[`+
		`{"CreateSessionRequestData":{"Name":"n","Owner":"o","Type":"VIRTUAL"},"FailureReason":"No DCV server found for placement"}]}`)
	fb.answer("/deleteSessions", 200, `{"RequestId":"r","SuccessfulList":[],"UnsuccessfulList":[{"SessionId":"s","FailureReason":"The requested dcvSession does not exist"}]}`)
	fb.answer("/describeSessions", 400, `{"error":"invalid NextToken","code":"INVALID_INPUT"}`)
	tests := []struct {
		args   []string
		stderr string
	}{
		{[]string{"open-servers", "--server-ids", "a,b"}, "berth: open-servers: b: DCV_SERVER_NOT_FOUND: Dcv server not found.\n"},
		{[]string{"create-session", "--name", "n", "--owner", "o", "--type", "virtual", "--wait"}, "berth: create-session: n: No DCV server found for placement\n"},
		{[]string{"delete-session", "--session-id", "s", "--owner", "o"}, "berth: delete-session: s: The requested dcvSession does not exist\n"},
		{[]string{"describe-sessions", "--next-token", "x"}, "berth: describe-sessions: broker answered 400: invalid NextToken\n"},
	}
	for _, tt := range tests {
		t.Run(tt.args[0], func(t *testing.T) {
			out, stderr, code := runCLI(t, fb.env(t), tt.args...)
			if code != 1 || stderr != tt.stderr {
				t.Errorf("exit %d, stderr %q; want 1, %q", code, stderr, tt.stderr)
			}
			if tt.args[0] != "describe-sessions" && !strings.Contains(out, `"UnsuccessfulList"`) {
				t.Errorf("stdout lacks the answer: %q", out)
			}
		})
	}
}

// TestRun_All checks that --all follows NextToken and prints one answer.
func TestRun_All(t *testing.T) {
	fb := newFakeBroker(t)
	pages := map[string]string{
		"":   `{"RequestId":"r1","Sessions":[{"Id":"s1","State":"READY"}],"NextToken":"t2"}`,
		"t2": `{"RequestId":"r2","Sessions":[{"Id":"s2","State":"READY"}],"NextToken":"t3"}`,
		"t3": `{"RequestId":"r3","Sessions":[{"Id":"s3","State":"CREATING"}]}`,
	}
	fb.answerFunc("/describeSessions", func(body []byte) (int, string) {
		var req api.DescribeSessionsRequest
		json.Unmarshal(body, &req)
		return 200, pages[req.NextToken]
	})
	out, stderr, code := runCLI(t, fb.env(t), "describe-sessions", "--all", "--max-results", "1")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	want := `{
  "RequestId": "r1",
  "Sessions": [
    {
      "Id": "s1",
      "State": "READY"
    },
    {
      "Id": "s2",
      "State": "READY"
    },
    {
      "Id": "s3",
      "State": "CREATING"
    }
  ]
}
`
	if out != want {
		t.Errorf("--all output =\n%s\nwant\n%s", out, want)
	}
	if n := len(fb.calls()); n != 3 {
		t.Errorf("%d calls, want 3", n)
	}
	// Without --all, one page; the table shows how to get the next.
	out, _, _ = runCLI(t, fb.env(t), "describe-sessions", "--output", "table")
	if !strings.Contains(out, "(1 session)\nmore: --next-token t2\n") {
		t.Errorf("table without --all:\n%s", out)
	}
}

// TestRun_Table checks the table output of each command.
func TestRun_Table(t *testing.T) {
	fb := newFakeBroker(t)
	fb.answer("/describeServers", 200, mustJSON(t, api.DescribeServersResponse{RequestId: "r", Servers: []api.Server{{
		Id: "srv-1", Hostname: "host1", Ip: "10.0.0.1", Availability: "UNAVAILABLE", UnavailabilityReason: "SERVER_CLOSED",
		ConsoleSessionCount: 1, VirtualSessionCount: 2, SessionManagerAgentVersion: "2024.0",
		Host: api.Host{Os: api.Os{Name: "Ubuntu", Version: "24.04"}},
	}}}))
	created := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	fb.answer("/describeSessions", 200, mustJSON(t, api.DescribeSessionsResponse{RequestId: "r", Sessions: []api.Session{{
		Id: "sess-1", Name: "dev box", Owner: "alice", Type: "VIRTUAL", State: "READY", CreationTime: created,
		Server: &api.Server{Id: "srv-1", Hostname: "host1"}, NumOfConnections: 2,
	}}}))
	fb.answer("/closeServers", 200, `{"RequestId":"r","SuccessfulList":[{"ServerId":"srv-1"}],"UnsuccessfulList":[`+
		`{"CloseServerRequestData":{"ServerId":"srv-2"},"FailureCode":"DCV_SERVER_HAS_SESSIONS","FailureReason":"has sessions"}]}`)
	fb.answer("/sessionConnectionData", 200, mustJSON(t, api.GetSessionConnectionDataResponse{ConnectionToken: "tok+/=",
		Session: api.Session{Id: "sess-1", Name: "dev", Owner: "alice", State: "READY",
			Server: &api.Server{Id: "srv-1", Hostname: "host1", Ip: "10.0.0.1", Endpoints: []api.Endpoint{{Port: 8443, Protocol: "HTTP", WebUrlPath: "/"}}}}}))
	tests := []struct {
		args []string
		want string
		code int
	}{
		{[]string{"describe-servers"}, `ID     HOSTNAME  IP        AVAILABILITY  REASON         CONSOLE  VIRTUAL  OS            AGENT
srv-1  host1     10.0.0.1  UNAVAILABLE   SERVER_CLOSED  1        2        Ubuntu 24.04  2024.0
(1 server)
`, 0},
		{[]string{"describe-sessions"}, `ID      NAME     OWNER  TYPE     STATE  SUBSTATE  SERVER  CLIENTS  CREATED               REASON
sess-1  dev box  alice  VIRTUAL  READY  -         host1   2        2026-01-02T03:04:05Z  -
(1 session)
`, 0},
		{[]string{"close-servers", "--server-ids", "srv-1,srv-2"}, `SERVER ID  RESULT  STATE  CODE                     REASON
srv-1      ok      -      -                        -
srv-2      failed  -      DCV_SERVER_HAS_SESSIONS  has sessions
`, 1},
		{[]string{"get-session-connection-data", "--session-id", "sess-1", "--user", "alice"}, `Session:  sess-1
Name:     dev
Owner:    alice
State:    READY
Server:   host1 (srv-1)
URL:      https://10.0.0.1:8443/?authToken=tok%2B%2F%3D#sess-1
`, 0},
	}
	for _, tt := range tests {
		t.Run(tt.args[0], func(t *testing.T) {
			out, stderr, code := runCLI(t, fb.env(t, "BERTH_OUTPUT=table"), tt.args...)
			if code != tt.code {
				t.Errorf("exit %d, want %d (%s)", code, tt.code, stderr)
			}
			if out != tt.want {
				t.Errorf("table =\n%s\nwant\n%s", out, tt.want)
			}
		})
	}
	out, _, code := runCLI(t, fb.env(t), "get-session-connection-data", "--session-id", "sess-1", "--user", "alice", "--url")
	if want := "https://10.0.0.1:8443/?authToken=tok%2B%2F%3D#sess-1\n"; code != 0 || out != want {
		t.Errorf("--url: exit %d, %q, want %q", code, out, want)
	}
}

// TestRun_Wait checks create-session --wait: progress on stderr, the READY
// session on stdout, and exit 1 with the StateReason when it is deleted.
func TestRun_Wait(t *testing.T) {
	tests := []struct {
		name   string
		states []api.Session
		code   int
		stderr string
	}{
		{"ready", []api.Session{
			{State: "CREATING", Substate: "SESSION_PLACING"},
			{State: "CREATING", Substate: "PENDING_PREPARATION"},
			{State: "CREATING", Substate: "PENDING_PREPARATION"},
			{State: "READY"},
		}, 0, "waiting for session sess-9: CREATING/SESSION_PLACING (0s)\n" +
			"waiting for session sess-9: CREATING/PENDING_PREPARATION (0s)\n" +
			"waiting for session sess-9: READY (0s)\n"},
		{"deleted", []api.Session{
			{State: "CREATING", Substate: "SESSION_PLACING"},
			{State: "DELETED", StateReason: "no DCV server became available"},
		}, 1, "waiting for session sess-9: CREATING/SESSION_PLACING (0s)\n" +
			"waiting for session sess-9: DELETED (0s)\n" +
			"berth: create-session: session sess-9 is DELETED: no DCV server became available\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fb := newFakeBroker(t)
			fb.answer("/createSessions", 200, `{"RequestId":"r","SuccessfulList":[{"Id":"sess-9","Name":"n","Owner":"o","Type":"VIRTUAL","State":"CREATING","Substate":"SESSION_PLACING"}],"UnsuccessfulList":[]}`)
			polls := 0
			var last string
			fb.answerFunc("/describeSessions", func([]byte) (int, string) {
				s := tt.states[min(polls, len(tt.states)-1)]
				polls++
				s.Id, s.Name = "sess-9", "n"
				last = mustJSON(t, api.DescribeSessionsResponse{RequestId: fmt.Sprint("r", polls), Sessions: []api.Session{s}})
				return 200, last
			})
			var out, errb bytes.Buffer
			c := newCLI(strings.NewReader(""), &out, &errb, fb.env(t))
			var slept []time.Duration
			c.sleep = func(ctx context.Context, d time.Duration) error { slept = append(slept, d); return nil }
			ctx := context.Background()
			code := c.exitCode(ctx, c.main(ctx, []string{"create-session", "--name", "n", "--owner", "o", "--type", "virtual", "--wait"}))
			if code != tt.code || errb.String() != tt.stderr {
				t.Errorf("exit %d, stderr\n%s\nwant %d,\n%s", code, errb.String(), tt.code, tt.stderr)
			}
			var want bytes.Buffer
			json.Indent(&want, []byte(last), "", "  ")
			if out.String() != want.String()+"\n" {
				t.Errorf("stdout =\n%s\nwant the last DescribeSessions answer\n%s", out.String(), want.String())
			}
			if polls != len(tt.states) || len(slept) != len(tt.states)-1 {
				t.Errorf("%d polls and %d sleeps, want %d and %d", polls, len(slept), len(tt.states), len(tt.states)-1)
			}
		})
	}
}

func TestRun_WaitTimeout(t *testing.T) {
	fb := newFakeBroker(t)
	fb.answer("/createSessions", 200, `{"RequestId":"r","SuccessfulList":[{"Id":"s","State":"CREATING"}],"UnsuccessfulList":[]}`)
	fb.answer("/describeSessions", 200, `{"RequestId":"r","Sessions":[{"Id":"s","State":"CREATING","Substate":"SESSION_PLACING"}]}`)
	_, stderr, code := runCLI(t, fb.env(t), "create-session", "--name", "n", "--owner", "o", "--type", "virtual", "--wait", "--wait-timeout", "50ms")
	want := "berth: create-session: session s is still CREATING/SESSION_PLACING after 50ms; check it with 'berth describe-sessions --session-ids s'\n"
	if code != 1 || !strings.HasSuffix(stderr, want) {
		t.Errorf("exit %d, stderr %q; want 1 and %q", code, stderr, want)
	}
}

// TestRun_Screenshots checks --out: one file per image with sanitized names.
func TestRun_Screenshots(t *testing.T) {
	fb := newFakeBroker(t)
	fb.answer("/getSessionScreenshots", 200, mustJSON(t, api.GetSessionScreenshotsResponse{RequestId: "r",
		SuccessfulList: []api.GetSessionScreenshotSuccess{
			{SessionScreenshot: api.SessionScreenshot{SessionId: "s1", Images: []api.SessionScreenshotImage{
				{Format: "png", Data: b64("PNGDATA"), Primary: true}, {Format: "jpeg", Data: b64("JPEGDATA")}}}},
			{SessionScreenshot: api.SessionScreenshot{SessionId: "../evil", Images: []api.SessionScreenshotImage{{Format: "png/x", Data: b64("X")}}}},
		},
		UnsuccessfulList: []api.GetSessionScreenshotFailure{{GetSessionScreenshotRequestData: api.GetSessionScreenshotRequest{SessionId: "s3"}, FailureReason: "Dcv session not found."}},
	}))
	dir := filepath.Join(t.TempDir(), "shots")
	out, stderr, code := runCLI(t, fb.env(t), "get-session-screenshots", "--session-ids", "s1,../evil,s3", "--out", dir)
	if code != 1 || stderr != "berth: get-session-screenshots: s3: Dcv session not found.\n" {
		t.Errorf("exit %d, stderr %q", code, stderr)
	}
	files := map[string]string{"s1-1.png": "PNGDATA", "s1-2.jpeg": "JPEGDATA", "_._evil-1.img": "X"}
	var want []string
	for _, name := range []string{"s1-1.png", "s1-2.jpeg", "_._evil-1.img"} {
		want = append(want, filepath.Join(dir, name))
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil || string(b) != files[name] {
			t.Errorf("%s: %q, %v", name, b, err)
		}
	}
	if out != strings.Join(want, "\n")+"\n" {
		t.Errorf("stdout = %q, want the paths %q", out, want)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 3 {
		t.Errorf("%d files in --out, want 3", len(entries))
	}
}

// TestRun_DebugHidesSecrets checks that --debug logs requests but never the
// password, the access token or the connection token.
func TestRun_DebugHidesSecrets(t *testing.T) {
	fb := newFakeBroker(t)
	fb.answer("/sessionConnectionData", 200, `{"Session":{"Id":"s1"},"ConnectionToken":"conn-secret"}`)
	out, stderr, code := runCLI(t, fb.env(t), "--debug", "get-session-connection-data", "--session-id", "s1", "--user", "u")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	for _, secret := range []string{fakeClientSecret, fakeToken, "conn-secret"} {
		if strings.Contains(stderr, secret) {
			t.Errorf("--debug output shows %q:\n%s", secret, stderr)
		}
	}
	for _, want := range []string{"> POST " + fb.URL + "/oauth2/token?grant_type=client_credentials (client credentials not shown)",
		"> GET " + fb.URL + "/sessionConnectionData/s1/u", "< 200 OK", "client-password = (hidden) (from $BERTH_CLIENT_PASSWORD)"} {
		if !strings.Contains(stderr, want) {
			t.Errorf("--debug output lacks %q:\n%s", want, stderr)
		}
	}
	if !strings.Contains(out, "conn-secret") {
		t.Errorf("stdout lacks the answer")
	}
}

// TestRun_Completion checks the bash completion script: every command and
// option, no misspelled aliases, and valid bash syntax.
func TestRun_Completion(t *testing.T) {
	out, stderr, code := runCLI(t, isolatedEnv(t), "completion", "bash")
	if code != 0 || stderr != "" {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	if !strings.Contains(out, "complete -o default -F _berth berth\n") {
		t.Error("script does not register _berth")
	}
	for _, cmd := range commands() {
		if !strings.Contains(out, "        "+cmd.name+") opts=") {
			t.Errorf("script lacks a case for %s", cmd.name)
		}
	}
	for _, want := range []string{
		`create-session) opts="--autorun-file --autorun-file-arguments --dcv-gl-enabled --disable-retry-on-failure --enqueue-request --init-file-path --max-concurrent-clients --name --owner --permissions-file --requirements --storage-root --type --wait --wait-timeout --help $globals"`,
		`update-session-permissions) opts="--owner --permission-file --session-id --help $globals"`,
		`local globals="--auth-server-url --broker-url --ca-bundle --conf --debug --no-verify-ssl --output"`,
		`--auth-server-url|--broker-url|--ca-bundle|--conf|--output) continue ;;`,
		`COMPREPLY=( $(compgen -W "Console Virtual" -- "$cur") )`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("script lacks %q", want)
		}
	}
	if strings.Contains(out, "max_concurrent") || strings.Contains(out, "concurrents") {
		t.Error("script offers a misspelled alias")
	}
	bash, err := exec.LookPath("bash")
	if err != nil {
		t.Skip("no bash to check the script with")
	}
	// Complete "berth create-session --ty" and "berth describe-s" for real.
	script := out + `
COMP_WORDS=(berth create-session --ty); COMP_CWORD=2; _berth; echo "${COMPREPLY[*]}"
COMP_WORDS=(berth --broker-url https://b describe-s); COMP_CWORD=3; _berth; echo "${COMPREPLY[*]}"
COMP_WORDS=(berth --output json describe-sessions --o); COMP_CWORD=4; _berth; echo "${COMPREPLY[*]}"
COMP_WORDS=(berth create-session --type ""); COMP_CWORD=3; _berth; echo "${COMPREPLY[*]}"
`
	got, err := exec.Command(bash, "--norc", "-c", script).CombinedOutput()
	if err != nil {
		t.Fatalf("bash: %v\n%s", err, got)
	}
	if want := "--type\ndescribe-servers describe-sessions\n--owner --output\nConsole Virtual\n"; string(got) != want {
		t.Errorf("completions =\n%s\nwant\n%s", got, want)
	}
}

// TestMergePages checks the --all merge keeps the first page's members in order.
func TestMergePages(t *testing.T) {
	got, err := mergePages([][]byte{
		[]byte(`{"RequestId":"a","Servers":[{"Id":"1"}],"X":{"y":1},"NextToken":"t"}`),
		[]byte(`{"RequestId":"b","Servers":[],"NextToken":"u"}`),
		[]byte(`{"RequestId":"c","Servers":[{"Id":"2"}]}`),
	}, "Servers")
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"RequestId":"a","Servers":[{"Id":"1"},{"Id":"2"}],"X":{"y":1}}`; string(got) != want {
		t.Errorf("mergePages = %s, want %s", got, want)
	}
	if _, err := mergePages([][]byte{[]byte(`{}`), []byte(`[1]`)}, "Servers"); err == nil {
		t.Error("mergePages accepted a page that is not an object")
	}
	if !reflect.DeepEqual(safeName("../a b.png"), "_._a_b.png") {
		t.Errorf("safeName = %q", safeName("../a b.png"))
	}
}

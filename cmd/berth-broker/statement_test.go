package main

import (
	"encoding/base64"
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/oauth"
)

// statementID returns the "id" inside a software statement.
func statementID(t *testing.T, stmt string) string {
	t.Helper()
	raw, err := base64.StdEncoding.DecodeString(stmt)
	if err != nil {
		t.Fatalf("statement %.12s… is not base64: %v", stmt, err)
	}
	var body struct {
		ID string `json:"id"`
	}
	if err := json.Unmarshal(raw, &body); err != nil || body.ID == "" {
		t.Fatalf("statement body %s: %v", raw, err)
	}
	return body.ID
}

// registerStatus posts an agent registration with stmt and returns the status
// and body.
func (b *testBroker) registerStatus(t *testing.T, stmt string) (int, string) {
	t.Helper()
	body, _ := json.Marshal(map[string]string{"software_statement": stmt, "client_name": "host"})
	resp, err := b.hc.Post("https://"+b.AgentAddr()+"/agent/register", "application/json", strings.NewReader(string(body)))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out strings.Builder
	buf := make([]byte, 4096)
	for {
		n, err := resp.Body.Read(buf)
		out.Write(buf[:n])
		if err != nil {
			break
		}
	}
	return resp.StatusCode, out.String()
}

// TestBroker_StatementLimits: generate-software-statement --max-uses and
// --expires-in/--expires-at limit what a statement registers; describe shows
// a statement that no longer registers as inactive; deactivate takes the
// statement, its ID or its fingerprint; the options are checked.
func TestBroker_StatementLimits(t *testing.T) {
	b := MustRunMain(t, t.TempDir(), nil)
	gen := func(args ...string) string {
		t.Helper()
		out, code := b.admin(t, append([]string{"generate-software-statement"}, args...)...)
		stmt, ok := strings.CutPrefix(strings.TrimSpace(out), "software-statement: ")
		if code != 0 || !ok || strings.Contains(stmt, "\n") {
			t.Fatalf("generate-software-statement %v: %d %q", args, code, out)
		}
		return stmt
	}
	twice := gen("--max-uses", "2")
	for i, want := range []int{201, 201, 400} {
		if code, body := b.registerStatus(t, twice); code != want {
			t.Errorf("registration %d with a 2-use statement: %d %s, want %d", i+1, code, body, want)
		} else if want == 400 && !strings.Contains(body, "invalid_software_statement") {
			t.Errorf("used-up statement: %s", body)
		}
	}
	soon := gen("--expires-at", time.Now().Add(time.Hour).UTC().Format(time.RFC3339))
	if code, body := b.registerStatus(t, soon); code != 201 {
		t.Errorf("statement before its expiry: %d %s", code, body)
	}
	day := gen("--expires-in", "1d")
	out, _ := b.admin(t, "describe-software-statements")
	var rows []map[string]string
	if err := json.Unmarshal([]byte(strings.TrimPrefix(out, "Software Statements\n")), &rows); err != nil {
		t.Fatalf("describe-software-statements output %q: %v", out, err)
	}
	active := map[string]string{}
	for _, r := range rows {
		if len(r) != 3 || r["issued-at"] == "" {
			t.Errorf("row %v: want software-statement, issued-at, is-active", r)
		}
		active[r["software-statement"]] = r["is-active"]
	}
	if active[statementID(t, twice)] != "false" || active[statementID(t, soon)] != "true" || active[statementID(t, day)] != "true" {
		t.Errorf("is-active by ID: %v", active)
	}
	for _, key := range []string{day, statementID(t, soon), oauth.Fingerprint(statementID(t, twice))} {
		if out, code := b.admin(t, "deactivate-software-statement", "--software-statement", key); code != 0 || out != "Software statement "+key+" deactivated\n" {
			t.Errorf("deactivate %.20s: %d %q", key, code, out)
		}
	}
	if code, _ := b.registerStatus(t, day); code != 400 {
		t.Errorf("deactivated statement: %d", code)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--max-uses", "0"}, "--max-uses"},
		{[]string{"--max-uses", "x"}, "--max-uses"},
		{[]string{"--expires-in", "-1h"}, "--expires-in"},
		{[]string{"--expires-in", "soon"}, "--expires-in"},
		{[]string{"--expires-at", "2001-01-01T00:00:00Z"}, "not in the future"},
		{[]string{"--expires-at", "tomorrow"}, "--expires-at"},
		{[]string{"--expires-in", "1h", "--expires-at", "2100-01-01T00:00:00Z"}, "both"},
	} {
		out, code := b.admin(t, append([]string{"generate-software-statement"}, tc.args...)...)
		if code != 2 || !strings.Contains(out, tc.want) {
			t.Errorf("generate-software-statement %v: %d %q, want exit 2 naming %s", tc.args, code, out, tc.want)
		}
	}
}

// TestBroker_LogGroup: with log-group, broker.log is 0640 and of that group.
func TestBroker_LogGroup(t *testing.T) {
	logs := filepath.Join(t.TempDir(), "log")
	gid := os.Getgid()
	b := MustRunMainWith(t, t.TempDir(), func(m *Main) {
		m.Logger = nil // the broker opens its own, from the configuration
		m.Config.LogDirectory = logs
		m.Config.LogGroup = strconv.Itoa(gid)
	})
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(filepath.Join(logs, "broker.log"))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o640 || int(fi.Sys().(*syscall.Stat_t).Gid) != gid {
		t.Errorf("broker.log mode %v group %d, want 0640 and %d", fi.Mode().Perm(), fi.Sys().(*syscall.Stat_t).Gid, gid)
	}
}

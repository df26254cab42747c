package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// runCLI runs berth in-process and returns stdout, stderr and the exit code.
func runCLI(t *testing.T, env []string, args ...string) (string, string, int) {
	t.Helper()
	return runCLIStdin(t, "", env, args...)
}

func runCLIStdin(t *testing.T, stdin string, env []string, args ...string) (string, string, int) {
	t.Helper()
	var out, errb bytes.Buffer
	code := run(context.Background(), args, strings.NewReader(stdin), &out, &errb, env)
	return out.String(), errb.String(), code
}

// isolatedEnv is an environment with no configuration file in reach.
func isolatedEnv(t *testing.T, extra ...string) []string {
	dir := t.TempDir()
	return append([]string{"HOME=" + dir, "XDG_CONFIG_HOME=" + dir}, extra...)
}

// TestRun_BadUsage checks that each kind of bad usage exits 2 with one line
// that names the option (or command) and says what to do.
func TestRun_BadUsage(t *testing.T) {
	fb := newFakeBroker(t)
	dir := t.TempDir()
	perm := filepath.Join(dir, "ok.perm")
	if err := os.WriteFile(perm, []byte("[permissions]\n%owner% allow builtin\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(dir, "missing.perm")
	env := fb.env(t)
	tests := []struct {
		name string
		env  []string // nil: env
		args []string
		want string // the whole stderr line, without "berth: " and the newline
	}{
		{"no command", nil, nil, "no command given; run 'berth help' for the list of commands"},
		{"unknown command", nil, []string{"describe-server"},
			`unknown command "describe-server" (did you mean describe-servers?); run 'berth help' for the list of commands`},
		{"unknown global option", nil, []string{"--brokr-url", "x", "describe-servers"},
			"unknown option --brokr-url (did you mean --broker-url?); run 'berth --help' for the options"},
		{"command as option", nil, []string{"--describe-servers"},
			"unknown option --describe-servers (describe-servers is a command: drop the dashes); run 'berth --help' for the options"},
		{"unknown command option", nil, []string{"describe-servers", "--max-result", "3"},
			"describe-servers: unknown option --max-result (did you mean --max-results?); run 'berth describe-servers --help' for the options"},
		{"max-results 0", nil, []string{"describe-servers", "--max-results", "0"},
			"describe-servers: --max-results 0: out of range; use a whole number from 1 to 1000"},
		{"max-results 1001", nil, []string{"describe-sessions", "--max-results=1001"},
			"describe-sessions: --max-results 1001: out of range; use a whole number from 1 to 1000"},
		{"max-results not a number", nil, []string{"describe-sessions", "--max-results", "ten"},
			"describe-sessions: --max-results ten: not a whole number; use a whole number from 1 to 1000"},
		{"option without value", nil, []string{"describe-sessions", "--owner"},
			"describe-sessions: option --owner needs a value; run 'berth describe-sessions --help' for an example"},
		{"empty list item", nil, []string{"open-servers", "--server-ids", "a,,b"},
			"open-servers: --server-ids a,,b: empty item in the list; separate values with single commas, e.g. a,b"},
		{"max-concurrent-clients 0", nil, []string{"create-session", "--name", "n", "--owner", "o", "--type", "virtual", "--max-concurrent-clients", "0"},
			"create-session: --max-concurrent-clients 0: out of range; use a whole number from 1 to 100"},
		{"max-concurrents-clients 101", nil, []string{"create-session", "--max-concurrents-clients", "101"},
			"create-session: --max-concurrents-clients 101: out of range; use a whole number from 1 to 100"},
		{"max_concurrent-clients 101", nil, []string{"create-session", "--max_concurrent-clients", "101"},
			"create-session: --max_concurrent-clients 101: out of range; use a whole number from 1 to 100"},
		{"bad type", nil, []string{"create-session", "--type", "desktop"},
			"create-session: --type desktop: use one of Console, Virtual"},
		{"bad enqueue-request", nil, []string{"create-session", "--enqueue-request", "maybe"},
			"create-session: --enqueue-request maybe: not a boolean; use true or false"},
		{"bool switch with a value", nil, []string{"create-session", "--dcv-gl-enabled=maybe"},
			"create-session: --dcv-gl-enabled=maybe: not a boolean; write --dcv-gl-enabled or --dcv-gl-enabled=false"},
		{"stray argument", nil, []string{"create-session", "--dcv-gl-enabled", "false"},
			`create-session: unexpected argument false; options start with -- (write switches as --name=false); run 'berth create-session --help'`},
		{"create-session without name", nil, []string{"create-session", "--owner", "o", "--type", "Virtual"},
			"create-session: --name is required; pass --name NAME (e.g. berth create-session --name dev --owner alice --type Virtual)"},
		{"create-session without owner", nil, []string{"create-session", "--name", "n", "--type", "Virtual"},
			"create-session: --owner is required; pass --owner USER (e.g. berth create-session --name dev --owner alice --type Virtual)"},
		{"create-session without type", nil, []string{"create-session", "--name", "n", "--owner", "o"},
			"create-session: --type is required; pass --type Console or --type Virtual (e.g. berth create-session --name dev --owner alice --type Virtual)"},
		{"unreadable permissions file", nil, []string{"create-session", "--name", "n", "--owner", "o", "--type", "Virtual", "--permissions-file", missing},
			"create-session: --permissions-file " + missing + ": no such file; pass a readable DCV permissions file"},
		{"permissions file is a directory", nil, []string{"create-session", "--name", "n", "--owner", "o", "--type", "Virtual", "--permissions-file", dir},
			"create-session: --permissions-file " + dir + ": is a directory; pass a readable DCV permissions file"},
		{"bad wait-timeout", nil, []string{"create-session", "--name", "n", "--owner", "o", "--type", "Virtual", "--wait-timeout", "0s"},
			"create-session: --wait-timeout 0s: must be positive; e.g. --wait-timeout 10m"},
		{"open-servers without ids", nil, []string{"open-servers"},
			"open-servers: --server-ids is required; e.g. --server-ids srv-1,srv-2 (list IDs with 'berth describe-servers')"},
		{"close-servers without ids", nil, []string{"close-servers", "--force"},
			"close-servers: --server-ids is required; e.g. --server-ids srv-1,srv-2 (list IDs with 'berth describe-servers')"},
		{"delete-session without id", nil, []string{"delete-session", "--owner", "o"},
			"delete-session: --session-id is required; pass --session-id ID (list IDs with 'berth describe-sessions')"},
		{"delete-session without owner", nil, []string{"delete-session", "--session-id", "s"},
			"delete-session: --owner is required; pass --owner USER, the session's owner"},
		{"connection data without user", nil, []string{"get-session-connection-data", "--session-id", "s"},
			"get-session-connection-data: --user is required; pass --user USER, who will connect"},
		{"screenshots without ids", nil, []string{"get-session-screenshots", "--max-width", "10"},
			"get-session-screenshots: --session-ids is required; e.g. --session-ids ID1,ID2 (list IDs with 'berth describe-sessions')"},
		{"screenshots max-width 0", nil, []string{"get-session-screenshots", "--session-ids", "s", "--max-width", "0"},
			"get-session-screenshots: --max-width 0: out of range; use a whole number of at least 1"},
		{"permissions without file", nil, []string{"update-session-permissions", "--session-id", "s", "--owner", "o"},
			"update-session-permissions: --permission-file is required; pass --permission-file FILE, a DCV permissions file"},
		{"unreadable permission file", nil, []string{"update-session-permissions", "--session-id", "s", "--owner", "o", "--permissions-file", missing},
			"update-session-permissions: --permission-file " + missing + ": no such file; pass a readable DCV permissions file"},
		{"bad output", nil, []string{"--output", "yaml", "describe-servers"},
			"--output yaml: use one of json, table"},
		{"bad output after command", nil, []string{"describe-servers", "--output", "xml"},
			"describe-servers: --output xml: use one of json, table"},
		{"no broker URL", isolatedEnv(t), []string{"describe-servers"},
			"describe-servers: no broker URL: pass --broker-url https://HOST:8443, set BERTH_BROKER_URL or url in [broker] of dcvsmcli.conf"},
		{"broker URL without scheme", isolatedEnv(t), []string{"--broker-url", "broker:8443", "describe-servers"},
			`describe-servers: broker URL "broker:8443" (from --broker-url): not an https:// URL with a host; use e.g. https://broker.example.com:8443`},
		{"bad boolean in environment", isolatedEnv(t, "BERTH_DEBUG=sometimes", "BERTH_BROKER_URL=https://b"), []string{"describe-servers"},
			`describe-servers: debug "sometimes" (from $BERTH_DEBUG): not a boolean; use true or false`},
		{"missing conf file", nil, []string{"--conf", missing, "describe-servers"},
			"describe-servers: --conf " + missing + ": no such file; pass an existing dcvsmcli.conf"},
		{"missing CA bundle", nil, []string{"--ca-bundle", missing, "describe-servers"},
			"describe-servers: CA bundle " + missing + " (from --ca-bundle): read CA bundle: open " + missing + ": no such file or directory; pass --ca-bundle with a PEM file of the broker's CA certificate"},
		{"unreachable broker", isolatedEnv(t), []string{"--broker-url", "https://127.0.0.1:1", "describe-sessions"},
			"describe-sessions: cannot reach https://127.0.0.1:1 (--broker-url): connect: connection refused; check --broker-url and that the broker runs"},
		{"untrusted broker", fb.env(t, "BERTH_CA_BUNDLE="), []string{"describe-sessions"},
			"describe-sessions: cannot verify the TLS certificate of " + fb.URL + " (--broker-url): x509: certificate signed by unknown authority; pass --ca-bundle FILE with the broker's CA certificate, or --no-verify-ssl for a test broker"},
		{"completion for another shell", nil, []string{"completion", "zsh"},
			"completion: shell zsh is not supported; use 'berth completion bash'"},
		{"completion without shell", nil, []string{"completion"},
			"completion: name the shell: 'berth completion bash'"},
		{"help for unknown command", nil, []string{"help", "frobnicate"},
			`help: unknown command "frobnicate"; run 'berth help' for the list of commands`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := tt.env
			if e == nil {
				e = env
			}
			stdout, stderr, code := runCLI(t, e, tt.args...)
			if code != 2 {
				t.Errorf("exit code = %d, want 2 (stderr %q)", code, stderr)
			}
			if stdout != "" {
				t.Errorf("stdout = %q, want nothing", stdout)
			}
			if want := "berth: " + tt.want + "\n"; stderr != want {
				t.Errorf("stderr =\n%q\nwant\n%q", stderr, want)
			}
		})
	}
	// None of these reached the broker's API.
	if calls := fb.calls(); len(calls) != 0 {
		t.Errorf("bad usage sent %d API calls: %+v", len(calls), calls)
	}
}

// TestRun_Credentials checks missing and wrong credentials: a clear message and exit 1.
func TestRun_Credentials(t *testing.T) {
	fb := newFakeBroker(t)
	fb.answer("/describeServers", 200, `{"RequestId":"r","Servers":[]}`)
	tests := []struct {
		name string
		env  []string
		want string
	}{
		{"none", fb.env(t, "BERTH_CLIENT_ID=", "BERTH_CLIENT_PASSWORD="),
			"describe-servers: the broker requires credentials (No authorization header): set BERTH_CLIENT_ID and BERTH_CLIENT_PASSWORD, or client-id and client-password in [authentication] of dcvsmcli.conf"},
		{"wrong password", fb.env(t, "BERTH_CLIENT_PASSWORD=nope"),
			`describe-servers: the auth server refused the client credentials of client-id "cli-id" (from $BERTH_CLIENT_ID): invalid_client; check BERTH_CLIENT_ID and BERTH_CLIENT_PASSWORD, or client-id and client-password in [authentication] of dcvsmcli.conf`},
		{"id without password", fb.env(t, "BERTH_CLIENT_PASSWORD="),
			"describe-servers: client-id is set (from $BERTH_CLIENT_ID) but client-password is not: set BERTH_CLIENT_PASSWORD or client-password in [authentication] of dcvsmcli.conf"},
		{"password without id", fb.env(t, "BERTH_CLIENT_ID="),
			"describe-servers: client-password is set (from $BERTH_CLIENT_PASSWORD) but client-id is not: set BERTH_CLIENT_ID or client-id in [authentication] of dcvsmcli.conf"},
		{"wrong token endpoint", fb.env(t, "BERTH_AUTH_SERVER_URL="+fb.URL+"/nothing"),
			fb.URL + "/nothing is not a token endpoint (it answered 404); set --auth-server-url to the broker's /oauth2/token URL or to your authorization server's token endpoint"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Helper()
			_, stderr, code := runCLI(t, tt.env, "describe-servers")
			if code != 1 {
				t.Errorf("exit code = %d, want 1", code)
			}
			if want := "berth: describe-servers: " + strings.TrimPrefix(tt.want, "describe-servers: ") + "\n"; stderr != want {
				t.Errorf("stderr =\n%q\nwant\n%q", stderr, want)
			}
			if strings.Contains(stderr, fakeClientSecret) || strings.Contains(stderr, "nope\"") {
				t.Errorf("stderr shows a password: %q", stderr)
			}
		})
	}
}

// TestRun_Help checks --help and 'berth help COMMAND' for every command: exit 0,
// every option with its default, and an example.
func TestRun_Help(t *testing.T) {
	env := isolatedEnv(t)
	out, _, code := runCLI(t, env, "--help")
	if code != 0 || !strings.Contains(out, "Usage: berth [global options] <command> [options]") {
		t.Fatalf("berth --help: exit %d, %q", code, out)
	}
	for _, want := range []string{"--broker-url URL", "--auth-server-url URL", "--ca-bundle FILE", "--no-verify-ssl", "--conf FILE",
		"--debug", "--version", "--output FORMAT", "BERTH_CLIENT_ID", "BERTH_CLIENT_PASSWORD", "[authentication] client-password", "Example:"} {
		if !strings.Contains(out, want) {
			t.Errorf("berth --help lacks %q", want)
		}
	}
	if out2, _, code := runCLI(t, env, "help"); code != 0 || out2 != out {
		t.Errorf("berth help differs from berth --help (exit %d)", code)
	}
	for _, cmd := range commands() {
		t.Run(cmd.name, func(t *testing.T) {
			out, stderr, code := runCLI(t, env, cmd.name, "--help")
			if code != 0 || stderr != "" {
				t.Fatalf("exit %d, stderr %q", code, stderr)
			}
			out2, _, _ := runCLI(t, env, "help", cmd.name)
			if out != out2 {
				t.Errorf("'berth help %s' differs from '--help':\n%s\n---\n%s", cmd.name, out2, out)
			}
			for _, want := range []string{"Usage: berth [global options] " + cmd.name, "Options:", "Example:\n  " + cmd.example} {
				if !strings.Contains(out, want) {
					t.Errorf("help lacks %q:\n%s", want, out)
				}
			}
			fs := newFlagSet(cmd.name)
			cmd.setup(newCLI(nil, nil, nil, nil), fs)
			for _, name := range optionNames(fs) {
				if !strings.Contains(out, name) {
					t.Errorf("help lacks option %s", name)
				}
			}
		})
	}
	out, _, _ = runCLI(t, env, "create-session", "--help")
	for _, want := range []string{"(also --max-concurrents-clients, --max_concurrent-clients)", "(default 15m0s)", "Console or Virtual"} {
		if !strings.Contains(out, want) {
			t.Errorf("create-session --help lacks %q", want)
		}
	}
}

func TestRun_Version(t *testing.T) {
	out, _, code := runCLI(t, isolatedEnv(t), "--version")
	if code != 0 || out != "berth "+version+"\n" {
		t.Errorf("--version: exit %d, %q", code, out)
	}
}

// TestRun_JSONPassThrough checks that the default output is the broker's JSON
// as sent (key order, unknown fields), indented.
func TestRun_JSONPassThrough(t *testing.T) {
	fb := newFakeBroker(t)
	body := `{"RequestId":"r-1","Servers":[{"Id":"s1","Hostname":"h1","Availability":"AVAILABLE","FutureField":{"x":[1,2]}}],"Extra":true}`
	fb.answer("/describeServers", 200, body)
	out, stderr, code := runCLI(t, fb.env(t), "describe-servers")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	var want bytes.Buffer
	json.Indent(&want, []byte(body), "", "  ")
	want.WriteByte('\n')
	if out != want.String() {
		t.Errorf("output =\n%s\nwant\n%s", out, want.String())
	}
}

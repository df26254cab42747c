package main

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/internal/driver/sim"
	"github.com/berth-dev/berth/internal/poll"
)

// admin runs an admin command against the broker's store and returns its output.
func (b *testBroker) admin(t *testing.T, args ...string) (string, int) {
	t.Helper()
	var out, errOut bytes.Buffer
	args = append([]string{args[0], "--config", b.writeConfig(t)}, args[1:]...)
	code := run(context.Background(), args, &out, &errOut)
	return out.String() + errOut.String(), code
}

// TestBroker_AdminCommands checks each admin command and its output format,
// which portals parse.
func TestBroker_AdminCommands(t *testing.T) {
	t.Parallel() // it mostly waits for the broker's timeouts: overlap it with the others that do
	b := MustRunMain(t, t.TempDir(), nil)
	c := b.MustClient(t)
	ctx := context.Background()

	out, code := b.admin(t, "describe-api-clients")
	if code != 0 || !strings.HasPrefix(out, "Api clients\n[") || !strings.Contains(out, `"id": "`+c.ClientID+`"`) || !strings.Contains(out, `"active": true`) {
		t.Errorf("describe-api-clients: %d %q", code, out)
	}
	if _, err := c.DescribeServers(ctx, api.DescribeServersRequest{}); err != nil {
		t.Fatal(err)
	}
	out, code = b.admin(t, "unregister-api-client", "--client-id", c.ClientID)
	if code != 0 || out != "Client "+c.ClientID+" unregistered.\n" {
		t.Errorf("unregister-api-client: %d %q", code, out)
	}
	// The cached token stops working once the broker sees the client inactive.
	var ae *api.Error
	poll.Until(t, 10*time.Second, "unregistered client refused", func() bool {
		_, err := c.DescribeServers(ctx, api.DescribeServersRequest{})
		return errors.As(err, &ae) && ae.StatusCode == 401
	})
	fresh := &api.Client{BrokerURL: c.BrokerURL, ClientID: c.ClientID, ClientSecret: c.ClientSecret, HTTPClient: b.hc}
	if _, err := fresh.Token(ctx); !errors.As(err, &ae) || ae.StatusCode != 401 {
		t.Errorf("token for an unregistered client: %v", err)
	}

	out, code = b.admin(t, "generate-software-statement")
	stmt, ok := strings.CutPrefix(strings.TrimSpace(out), "software-statement: ")
	if code != 0 || !ok || stmt == "" {
		t.Fatalf("generate-software-statement: %d %q", code, out)
	}
	// The broker keeps statements as hashes: describe lists them by ID.
	stmtID := statementID(t, stmt)
	out, code = b.admin(t, "describe-software-statements")
	if code != 0 || !strings.HasPrefix(out, "Software Statements\n") || !strings.Contains(out, `"software-statement": "`+stmtID+`"`) || !strings.Contains(out, `"is-active": "true"`) {
		t.Errorf("describe-software-statements: %d %q", code, out)
	}
	out, code = b.admin(t, "deactivate-software-statement", "--software-statement", stmt)
	if code != 0 || out != "Software statement "+stmt+" deactivated\n" {
		t.Errorf("deactivate-software-statement: %d %q", code, out)
	}
	out, code = b.admin(t, "describe-agent-clients")
	if code != 0 || !strings.HasPrefix(out, "Session manager agent clients\n[") {
		t.Errorf("describe-agent-clients: %d %q", code, out)
	}
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"register-api-client"}, 2, "--client-name is required"},
		{[]string{"unregister-api-client", "--client-id", "nope"}, 1, "not found"},
		{[]string{"no-such-command"}, 2, "unknown command"},
		{[]string{"register-api-client", "--bogus"}, 2, "bogus"},
	} {
		var out, errOut bytes.Buffer
		args := tc.args
		if tc.args[0] != "no-such-command" {
			args = append([]string{tc.args[0], "--config", b.writeConfig(t)}, tc.args[1:]...)
		}
		got := run(ctx, args, &out, &errOut)
		if got != tc.code || !strings.Contains(errOut.String(), tc.want) {
			t.Errorf("%v: exit %d (want %d), stderr %q (want %q)", tc.args, got, tc.code, errOut.String(), tc.want)
		}
	}
}

// TestBroker_TokenEndpoint covers the token request forms clients use.
func TestBroker_TokenEndpoint(t *testing.T) {
	b := MustRunMain(t, t.TempDir(), nil)
	c := b.MustClient(t)
	base := "https://" + b.ClientAddr() + "/oauth2/token"
	post := func(u, body string, basic bool) (int, string) {
		req, _ := http.NewRequest("POST", u, strings.NewReader(body))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		if basic {
			req.SetBasicAuth(c.ClientID, c.ClientSecret)
		}
		resp, err := b.hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		data, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(data)
	}
	for _, tc := range []struct {
		name, url, body string
		basic           bool
		status          int
		want            string
	}{
		{"query grant", base + "?grant_type=client_credentials", "", true, 200, `"token_type":"Bearer"`},
		{"form grant", base, "grant_type=client_credentials", true, 200, `"expires_in":3600`},
		{"form credentials", base, "grant_type=client_credentials&client_id=" + url.QueryEscape(c.ClientID) + "&client_secret=" + url.QueryEscape(c.ClientSecret), false, 200, `"access_token"`},
		{"wrong secret", base + "?grant_type=client_credentials", "client_id=" + c.ClientID + "&client_secret=nope", false, 401, "invalid_client"},
		{"no credentials", base + "?grant_type=client_credentials", "", false, 401, "invalid_client"},
		{"no grant", base, "", true, 400, "error"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			status, body := post(tc.url, tc.body, tc.basic)
			if status != tc.status || !strings.Contains(body, tc.want) {
				t.Errorf("got %d %s, want %d with %q", status, body, tc.status, tc.want)
			}
		})
	}
}

// TestBroker_AuthorizationDisabled: enable-authorization = false needs no token.
func TestBroker_AuthorizationDisabled(t *testing.T) {
	b := MustRunMain(t, t.TempDir(), func(c *Config) { c.EnableAuthorization = false })
	c := &api.Client{BrokerURL: "https://" + b.ClientAddr(), HTTPClient: b.hc}
	if _, err := c.DescribeSessions(context.Background(), api.DescribeSessionsRequest{}); err != nil {
		t.Fatalf("DescribeSessions without a token: %v", err)
	}
}

// TestBroker_AgentAuthorization: only agents with a valid software statement
// register, and a deactivated agent client is refused.
func TestBroker_AgentAuthorization(t *testing.T) {
	b := MustRunMain(t, t.TempDir(), nil)
	c := b.MustClient(t)
	ctx := context.Background()

	// The quick-start statement is in the working path, readable only by its owner.
	fi, err := os.Stat(filepath.Join(b.dir, SoftwareStatementFile))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("software statement file: %v %v", err, fi)
	}

	// A raw connection without credentials is refused before the upgrade.
	resp, err := b.hc.Get("https://" + b.AgentAddr() + "/agent/connect")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("unauthenticated agent link: status %d, want 401", resp.StatusCode)
	}

	// A rogue agent with a made-up statement never registers a server.
	rogue := b.MustStartSimAgent(t, t.TempDir(), nil, hostReport("rogue", 0, nil))
	rogue.Stop()
	rogueAgent := *rogue.Agent
	rogueAgent.SoftwareStatement = "eyJpZCI6ImZvcmdlZCJ9"
	rogueAgent.StateDir = t.TempDir()
	rogueLog := &lockedBuffer{}
	rogueAgent.Logger = slog.New(slog.NewTextHandler(rogueLog, nil))
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { _ = rogueAgent.Run(rctx); close(done) }()

	good := b.MustStartSimAgent(t, t.TempDir(), sim.New(), hostReport("good", 0, nil))
	poll.Until(t, 10*time.Second, "good agent", func() bool { return servers(t, c)["good"].Id != "" })
	// Refused twice, the rogue agent is backing off: it got no credentials.
	poll.Until(t, 10*time.Second, "two refused registrations of the rogue agent", func() bool {
		return strings.Count(rogueLog.String(), "invalid_software_statement") >= 2
	})
	if s, ok := servers(t, c)["rogue"]; ok && s.Availability == api.AvailabilityAvailable {
		t.Errorf("rogue agent registered a server")
	}
	cancel()
	<-done

	// Deactivate the good agent's client: its next link is refused.
	out, _ := b.admin(t, "describe-agent-clients")
	var id string
	for _, line := range strings.Split(out, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), `"id": "`); ok {
			id = strings.TrimSuffix(strings.TrimSuffix(v, ","), `"`)
		}
	}
	if id == "" {
		t.Fatalf("no agent client listed: %q", out)
	}
	if out, code := b.admin(t, "unregister-agent-client", "--client-id", id); code != 0 || out != "agent client "+id+" unregistered\n" {
		t.Fatalf("unregister-agent-client: %d %q", code, out)
	}
	stateDir := good.StateDir
	good.Stop()
	poll.Until(t, 10*time.Second, "the good server unreachable once its agent stopped", func() bool {
		return servers(t, c)["good"].UnavailabilityReason == api.ReasonUnreachableAgent
	})
	// Same state dir (same stored credentials), and no statement to re-register with.
	again := *good.Agent
	again.SoftwareStatement = ""
	again.StateDir = stateDir
	againLog := &lockedBuffer{}
	again.Logger = slog.New(slog.NewTextHandler(againLog, nil))
	actx, acancel := context.WithCancel(ctx)
	adone := make(chan struct{})
	go func() { _ = again.Run(actx); close(adone) }()
	poll.Until(t, 10*time.Second, "two refused links of the deactivated agent", func() bool {
		return strings.Count(againLog.String(), "broker refused agent credentials") >= 2
	})
	if s := servers(t, c)["good"]; s.UnavailabilityReason != api.ReasonUnreachableAgent {
		t.Errorf("deactivated agent reconnected: %+v", s.Availability)
	}
	acancel()
	<-adone
}

// TestBroker_HealthAndSpec: /health answers on both ports and the OpenAPI
// document is served as built into the binary.
func TestBroker_HealthAndSpec(t *testing.T) {
	b := MustRunMain(t, t.TempDir(), nil)
	for _, addr := range []string{b.ClientAddr(), b.AgentAddr()} {
		resp, err := b.hc.Get("https://" + addr + "/health")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || string(body) != `{"status":"ok"}` {
			t.Errorf("%s/health: %d %s", addr, resp.StatusCode, body)
		}
	}
	resp, err := b.hc.Get("https://" + b.ClientAddr() + "/dcv-session-manager-api.yaml")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !bytes.Equal(body, api.OpenAPIDocument) {
		t.Errorf("spec: status %d, %d bytes (want %d)", resp.StatusCode, len(body), len(api.OpenAPIDocument))
	}
	// The store going away makes /health fail for load balancers.
	b.store.Close()
	resp, err = b.hc.Get("https://" + b.ClientAddr() + "/health")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("/health with the store closed: %d, want 503", resp.StatusCode)
	}
}

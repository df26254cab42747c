package e2e

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/berth-dev/berth/api"
)

// TestE2E_NoSecretsInLogs runs a broker and an agent at debug level through
// every path that handles a secret (agent registration, registrations refused
// for a used-up, deactivated or unknown statement and by the rate limit,
// token requests with good and bad secrets, connection tokens, the gateway
// with good and bad tokens, the DCV token verifier, permissions, screenshots,
// deletes), then greps both daemons' logs for every secret and token of the
// run: the API client's password and access tokens, the agent's client
// secret, the software statements with their IDs and secrets (an ID with the
// issue time once sufficed to rebuild a statement), the connection tokens, and
// the CA's private key.
func TestE2E_NoSecretsInLogs(t *testing.T) {
	e := MustStartEnvWith(t, EnvOptions{LogLevel: "debug", BrokerProps: []string{"agent-registrations-per-minute-per-address = 8"}})
	ctx := apiCtx(t)
	var secrets []string
	add := func(what, s string) {
		t.Helper()
		if len(s) < 8 {
			t.Fatalf("%s %q is too short to grep for", what, s)
		}
		secrets = append(secrets, s)
	}
	add("client password", e.Client.ClientSecret)
	tok, err := e.Client.Token(ctx)
	if err != nil {
		t.Fatal(err)
	}
	add("access token", tok)
	stmt, err := os.ReadFile(filepath.Join(e.BrokerDir, "agent-software-statement"))
	if err != nil {
		t.Fatal(err)
	}
	addStatement := func(what, text string) {
		t.Helper()
		add(what, text)
		raw, err := base64.StdEncoding.DecodeString(text)
		if err != nil {
			t.Fatalf("%s is not base64: %v", what, err)
		}
		var body struct{ ID, Secret string }
		if err := json.Unmarshal(raw, &body); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		add(what+" ID", body.ID)
		add(what+" secret", body.Secret)
	}
	addStatement("software statement", strings.TrimSpace(string(stmt)))

	// Registrations the broker refuses: a statement used up, a deactivated
	// one, a made-up one, then too many from one address.
	admin := func(args ...string) string {
		t.Helper()
		out, err := exec.Command(filepath.Join(e.Bin, "berth-broker"), append([]string{args[0], "--config", e.BrokerConf}, args[1:]...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("berth-broker %v: %v\n%s", args, err, out)
		}
		return strings.TrimSpace(string(out))
	}
	register := func(statement string) int {
		t.Helper()
		body, _ := json.Marshal(map[string]string{"software_statement": statement, "client_name": "e2e"})
		resp, err := e.HTTP.Post("https://"+e.AgentAddr+"/agent/register", "application/json", bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	once := strings.TrimPrefix(admin("generate-software-statement", "--max-uses", "1"), "software-statement: ")
	addStatement("single-use statement", once)
	off := strings.TrimPrefix(admin("generate-software-statement", "--expires-in", "1h"), "software-statement: ")
	addStatement("deactivated statement", off)
	admin("deactivate-software-statement", "--software-statement", off)
	forgedStmt := base64.StdEncoding.EncodeToString([]byte(`{"id":"00000000-0000-4000-8000-000000000000","active":true}`))
	add("made-up statement", forgedStmt)
	for i, tc := range []struct {
		statement string
		want      int
	}{{once, 201}, {once, 400}, {off, 400}, {forgedStmt, 400}} {
		if got := register(tc.statement); got != tc.want {
			t.Fatalf("registration %d: %d, want %d", i, got, tc.want)
		}
	}
	limited := false
	for range 10 {
		if register(once) == http.StatusTooManyRequests {
			limited = true
			break
		}
	}
	if !limited {
		t.Fatal("no registration was refused by agent-registrations-per-minute-per-address = 8")
	}
	raw, err := os.ReadFile(filepath.Join(e.Dir, "agent", "agent-credentials.json"))
	if err != nil {
		t.Fatal(err)
	}
	var creds struct {
		ClientSecret string `json:"client_secret"`
	}
	if err := json.Unmarshal(raw, &creds); err != nil {
		t.Fatal(err)
	}
	add("agent client secret", creds.ClientSecret)
	key, err := os.ReadFile(filepath.Join(e.BrokerDir, "ca.key"))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(key), "\n") {
		if len(line) >= 32 && !strings.HasPrefix(line, "-----") {
			add("CA key line", line)
		}
	}

	// A wrong secret and a forged token are refused (and logged as refused).
	bad := &api.Client{BrokerURL: e.Client.BrokerURL, ClientID: e.Client.ClientID, ClientSecret: "wrong-" + e.Client.ClientSecret, HTTPClient: e.HTTP}
	add("wrong client password", bad.ClientSecret)
	if _, err := bad.DescribeSessions(ctx, api.DescribeSessionsRequest{}); err == nil {
		t.Fatal("a wrong client password was accepted")
	}
	forged := tok[:len(tok)-4] + "AAAA"
	add("forged token", forged)
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, e.BrokerURL+"/describeSessions", strings.NewReader("{}"))
	req.Header.Set("Authorization", "Bearer "+forged)
	if resp, err := e.HTTP.Do(req); err != nil || resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("forged token: %v %v", resp, err)
	} else {
		resp.Body.Close()
	}

	s := e.MustCreate(t, api.CreateSessionRequest{Name: "secrets", Owner: user1, Type: api.TypeVirtual})[0]
	e.MustWaitState(t, s.Id, api.StateReady, readyTimeout)
	for _, user := range []string{user1, user2} {
		if user == user2 {
			up, err := e.Client.UpdateSessionPermissions(ctx, []api.UpdateSessionPermissionsRequest{{SessionId: s.Id, Owner: user1, PermissionsFile: permissions("%owner% allow builtin", user2+" allow display")}})
			if err != nil || len(up.SuccessfulList) != 1 {
				t.Fatalf("UpdateSessionPermissions: %v %+v", err, up)
			}
		}
		conn, err := e.Client.GetSessionConnectionData(ctx, s.Id, user)
		if err != nil {
			t.Fatal(err)
		}
		add("connection token", conn.ConnectionToken)
		ws := e.MustConnect(t, s.Id, conn.ConnectionToken, user)
		ws.CloseNow()
		// The DCV token verifier is asked about it, as a DCV server would.
		form := "sessionId=" + s.Id + "&authenticationToken=" + conn.ConnectionToken + "&clientAddress=127.0.0.1"
		vreq, _ := http.NewRequestWithContext(ctx, http.MethodPost, "https://"+e.AgentAddr+"/agent/validate-authentication-token", strings.NewReader(form))
		vreq.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		if resp, err := e.HTTP.Do(vreq); err != nil {
			t.Fatal(err)
		} else {
			resp.Body.Close()
		}
		e.MustRefuse(t, s.Id, conn.ConnectionToken+"x", user+" with a damaged token", http.StatusUnauthorized)
	}
	if _, err := e.Client.GetSessionScreenshots(ctx, []api.GetSessionScreenshotRequest{{SessionId: s.Id}}); err != nil {
		t.Fatal(err)
	}
	e.MustDelete(t, s.Id)

	e.Agent.Stop(t)
	e.Agent = nil
	e.Broker.Stop(t)
	logs := map[string][]byte{}
	for _, p := range []string{filepath.Join(e.Dir, "broker.log"), filepath.Join(e.Dir, "agent.log")} {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Contains(b, []byte(`"level":"DEBUG"`)) {
			t.Fatalf("%s has no debug lines: the test would prove little", filepath.Base(p))
		}
		logs[filepath.Base(p)] = b
	}
	for _, want := range []string{"agent registration refused", "statement used up", "statement deactivated", "unknown software statement", "rate limit", "statement_fp"} {
		if !bytes.Contains(logs["broker.log"], []byte(want)) {
			t.Errorf("broker.log has no %q: the refusals were not logged, so the test proves little", want)
		}
	}
	for name, b := range logs {
		for _, secret := range secrets {
			if i := bytes.Index(b, []byte(secret)); i >= 0 {
				start := max(0, bytes.LastIndexByte(b[:i], '\n')+1)
				end := i + bytes.IndexByte(b[i:], '\n')
				if end < i {
					end = len(b)
				}
				t.Errorf("%s holds a secret (%.12s…) in:\n%s", name, secret, b[start:end])
			}
		}
	}
	t.Logf("%d secrets and tokens checked against %d KB of debug logs", len(secrets), (len(logs["broker.log"])+len(logs["agent.log"]))/1024)
}

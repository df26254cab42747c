package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/internal/idptest"
	"github.com/berth-dev/berth/internal/jwks"
	"github.com/berth-dev/berth/internal/poll"
	"github.com/berth-dev/berth/internal/postgres/pgtest"
)

// idpAudience is the audience the brokers expect in the external tokens (a
// URL: Hydra checks URN audiences not at all, URLs by prefix).
const idpAudience = "https://berth.test"

// idpCAProp is the broker property naming the CA bundle that the broker
// trusts, besides the system's roots, for the authorization servers' JWKS.
const idpCAProp = "auth-server-ca-bundle-file"

// idpEnv is a broker that takes its API tokens from Hydra
// (enable-authorization-server = false, Hydra's JWKS registered with
// register-auth-server) and a vnc agent.
type idpEnv struct {
	*Env
	IdP       *idptest.Server
	IdPClient idptest.Client // Hydra's client for idpAudience
	Bundle    string         // PEM: the broker's CA and Hydra's
	raw       *http.Client   // trusts Bundle; sends what a test gives it
	cached    string         // a token of keys the broker holds (IdPStopped)
}

// mustStartIdPEnv starts Hydra and an Env whose e.Client gets its tokens
// from Hydra through its token URL with ?audience=idpAudience, as the berth
// CLI and dcvsm's users do. At cleanup, if a test left Hydra stopped or its
// keys changed, it starts Hydra again and renews e.Client, so that the
// sessions left over can be deleted.
func mustStartIdPEnv(t *testing.T) *idpEnv {
	t.Helper()
	idp := idptest.Start(t, idptest.Options{})
	ie := &idpEnv{IdP: idp, IdPClient: idp.RegisterClient(t, idpAudience)}
	ie.Env = MustStartEnvWith(t, EnvOptions{
		BrokerProps: []string{
			"enable-authorization-server = false",
			idpCAProp + " = " + idp.CAFile,
		},
		Client: func(tb testing.TB, e *Env) *api.Client {
			ie.Env = e
			mustRegisterAuthServer(tb, e.Bin, e.BrokerConf, idp)
			ie.Bundle = filepath.Join(e.Dir, "bundle.pem")
			mustWriteBundle(tb, ie.Bundle, e.CAFile, idp.CAFile)
			hc, err := api.NewHTTPClient(ie.Bundle, false)
			if err != nil {
				tb.Fatal(err)
			}
			ie.raw = hc
			return ie.apiClient(ie.IdPClient)
		},
	})
	// Registered after MustStartEnvWith's: runs before its session cleanup.
	t.Cleanup(func() {
		if ie.status(t, ie.token(t)) == http.StatusOK {
			return
		}
		t.Log("cleanup: Hydra stopped or rotated; restarting it for the session cleanup")
		ie.renew(t)
	})
	return ie
}

// apiClient returns an API client of the broker that fetches its tokens from
// Hydra for c, with the audience in the token URL's query string.
func (ie *idpEnv) apiClient(c idptest.Client) *api.Client {
	return &api.Client{
		BrokerURL: ie.BrokerURL, AuthURL: ie.authURL(), ClientID: c.ID, ClientSecret: c.Secret,
		HTTPClient: ie.raw,
	}
}

// authURL is Hydra's token endpoint with the audience berth must ask for.
func (ie *idpEnv) authURL() string {
	return ie.IdP.TokenURL + "?audience=" + url.QueryEscape(idpAudience)
}

// renew starts Hydra if it is stopped, registers a new client and replaces
// e.Client, then waits until the broker accepts its tokens (it may refuse a
// new key for a while after its last fetch of the JWKS).
func (ie *idpEnv) renew(tb testing.TB) {
	tb.Helper()
	if !ie.IdP.Running() {
		ie.IdP.Restart(tb)
	}
	ie.IdPClient = ie.IdP.RegisterClient(tb, idpAudience)
	c := ie.apiClient(ie.IdPClient)
	c.HTTPClient = ie.validating(tb, ie.raw)
	ie.Env.Client = c
	tok := ie.token(tb)
	poll.Until(tb, 30*time.Second, "the broker accepts a token of Hydra's new keys", func() bool {
		return ie.status(tb, tok) == http.StatusOK
	})
}

// token returns a fresh token of Hydra for ie.IdPClient and idpAudience
// ("" if Hydra is stopped).
func (ie *idpEnv) token(tb testing.TB) string {
	tb.Helper()
	if !ie.IdP.Running() {
		return ""
	}
	return ie.IdP.Token(tb, ie.IdPClient, idpAudience)
}

// status sends DescribeServers with the bearer token tok ("" for none) and
// returns the status code.
func (ie *idpEnv) status(tb testing.TB, tok string) int {
	tb.Helper()
	code, _ := bearerStatus(tb, ie.raw, ie.BrokerURL, tok)
	return code
}

// bearerStatus sends POST /describeServers to broker with the bearer token
// tok ("" for none) and returns the status code and the body's first 200
// bytes.
func bearerStatus(tb testing.TB, hc *http.Client, broker, tok string) (int, string) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), apiTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, broker+"/describeServers", strings.NewReader("{}"))
	if err != nil {
		tb.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	if tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	resp, err := hc.Do(req)
	if err != nil {
		tb.Fatalf("POST %s/describeServers: %v", broker, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 200))
	return resp.StatusCode, strings.TrimSpace(string(b))
}

// mustRegisterAuthServer registers Hydra's JWKS with the broker of conf
// through the admin command, with its issuer and idpAudience.
func mustRegisterAuthServer(tb testing.TB, bin, conf string, idp *idptest.Server) {
	tb.Helper()
	out := mustAdmin(tb, bin, conf, "register-auth-server", "--url", idp.JWKSURL, "--issuer", idp.Issuer, "--audience", idpAudience)
	if !strings.Contains(out, "Jwk url registered.") {
		tb.Fatalf("register-auth-server printed %q, want \"Jwk url registered.\"", out)
	}
}

// mustAdmin runs a berth-broker admin command for the broker of conf and
// returns its output.
func mustAdmin(tb testing.TB, bin, conf string, args ...string) string {
	tb.Helper()
	args = append([]string{args[0], "--config", conf}, args[1:]...)
	out, err := exec.Command(filepath.Join(bin, "berth-broker"), args...).CombinedOutput()
	if err != nil {
		tb.Fatalf("berth-broker %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// mustWriteBundle writes the concatenation of the PEM files to path.
func mustWriteBundle(tb testing.TB, path string, files ...string) {
	tb.Helper()
	var b bytes.Buffer
	for _, f := range files {
		p, err := os.ReadFile(f)
		if err != nil {
			tb.Fatal(err)
		}
		b.Write(p)
	}
	if err := os.WriteFile(path, b.Bytes(), 0o600); err != nil {
		tb.Fatal(err)
	}
}

// TestE2E_ExternalAuth runs a broker with enable-authorization-server =
// false and Ory Hydra, a real OAuth2 server, registered with
// register-auth-server (issue 13). Hydra's client_credentials tokens work on
// all nine APIs through the typed client and through the berth CLI (option
// and dcvsmcli.conf); tokens without the expected audience are refused;
// with Hydra stopped, tokens of the cached keys still work and a token of a
// key the broker never saw is refused at once; Hydra's keys rotate and new
// tokens work after one refetch of its JWKS.
func TestE2E_ExternalAuth(t *testing.T) {
	skipShort(t, "about 50 s, 10 of them waiting out the broker's refetch interval")
	ie := mustStartIdPEnv(t)
	if !t.Run("NineAPIs", func(t *testing.T) { testIdPNineAPIs(t, ie) }) {
		t.FailNow()
	}
	t.Run("CLI", func(t *testing.T) { testIdPCLI(t, ie) })
	t.Run("CLIConf", func(t *testing.T) { testIdPCLIConf(t, ie) })
	t.Run("Audience", func(t *testing.T) { testIdPAudience(t, ie) })
	// These two change Hydra's keys: last. IdPStopped comes first, while
	// the broker's last fetch of the JWKS is long past, so that the unknown
	// kid makes it try to fetch from the stopped server; KeyRotation starts
	// Hydra again.
	t.Run("IdPStopped", func(t *testing.T) { testIdPStopped(t, ie) })
	t.Run("KeyRotation", func(t *testing.T) { testIdPKeyRotation(t, ie) })
}

// testIdPNineAPIs calls the nine APIs with the typed client, whose tokens
// come from Hydra.
func testIdPNineAPIs(t *testing.T, ie *idpEnv) {
	ctx := apiCtx(t)
	if code := ie.status(t, ""); code != http.StatusUnauthorized {
		t.Fatalf("DescribeServers without a token: %d, want 401", code)
	}
	// 1. DescribeServers
	srv := ie.MustWaitServer(t)
	// 2, 3. CloseServers, OpenServers
	cl, err := ie.Client.CloseServers(ctx, []api.CloseServerRequest{{ServerId: srv.Id}})
	if err != nil || len(cl.SuccessfulList) != 1 {
		t.Fatalf("CloseServers: %v %+v", err, cl)
	}
	op, err := ie.Client.OpenServers(ctx, []api.OpenServerRequest{{ServerId: srv.Id}})
	if err != nil || len(op.SuccessfulList) != 1 {
		t.Fatalf("OpenServers: %v %+v", err, op)
	}
	ie.MustWaitServer(t)
	// 4, 5. CreateSessions, DescribeSessions
	s := ie.MustCreate(t, api.CreateSessionRequest{Name: "idp", Owner: user1, Type: api.TypeVirtual})[0]
	ie.MustWaitState(t, s.Id, api.StateReady, readyTimeout)
	// 6. GetSessionConnectionData
	ie.MustConnectionData(t, s.Id, user1)
	// 7. GetSessionScreenshots
	shots, err := ie.Client.GetSessionScreenshots(ctx, []api.GetSessionScreenshotRequest{{SessionId: s.Id}})
	if err != nil || len(shots.SuccessfulList) != 1 || len(shots.SuccessfulList[0].SessionScreenshot.Images) == 0 {
		t.Fatalf("GetSessionScreenshots: %v %+v", err, shots)
	}
	// 8. UpdateSessionPermissions
	up, err := ie.Client.UpdateSessionPermissions(ctx, []api.UpdateSessionPermissionsRequest{{
		SessionId: s.Id, Owner: user1, PermissionsFile: permissions("%owner% allow builtin", user2+" allow display"),
	}})
	if err != nil || len(up.SuccessfulList) != 1 {
		t.Fatalf("UpdateSessionPermissions: %v %+v", err, up)
	}
	ie.MustConnectionData(t, s.Id, user2)
	// 9. DeleteSessions
	ie.MustDelete(t, s.Id)
}

// berthCLI runs the berth CLI with env (and HOME and XDG_CONFIG_HOME in a
// fresh directory unless env sets them) and returns its stdout, stderr and
// exit code.
func berthCLI(t *testing.T, bin string, env []string, args ...string) (string, string, int) {
	t.Helper()
	home := t.TempDir()
	cmd := exec.Command(filepath.Join(bin, "berth"), args...)
	cmd.Env = append([]string{"HOME=" + home, "XDG_CONFIG_HOME=" + home, "PATH=/usr/bin:/bin"}, env...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("berth %s: %v", strings.Join(args, " "), err)
	}
	return out.String(), errb.String(), code
}

// decodeCLI decodes berth's JSON output into a T, failing t if it is not.
func decodeCLI[T any](t *testing.T, what, out string) T {
	t.Helper()
	var v T
	if err := json.Unmarshal([]byte(out), &v); err != nil {
		t.Fatalf("%s printed no %T: %v\n%s", what, v, err, out)
	}
	return v
}

// testIdPCLI runs the nine commands of the berth CLI with
// --auth-server-url naming Hydra's token endpoint (the audience in its
// query string) and the credentials of Hydra's client in the environment.
func testIdPCLI(t *testing.T, ie *idpEnv) {
	creds := []string{"BERTH_CLIENT_ID=" + ie.IdPClient.ID, "BERTH_CLIENT_PASSWORD=" + ie.IdPClient.Secret}
	global := []string{"--broker-url", ie.BrokerURL, "--ca-bundle", ie.Bundle, "--auth-server-url", ie.authURL()}
	run := func(t *testing.T, args ...string) string {
		t.Helper()
		out, stderr, code := berthCLI(t, ie.Bin, creds, append(append([]string(nil), global...), args...)...)
		if code != 0 || stderr != "" {
			t.Fatalf("berth %s: exit %d, stderr %q\n%s", args[0], code, stderr, out)
		}
		return out
	}

	// The broker's own token endpoint is off: without --auth-server-url
	// berth gets no token.
	if _, stderr, code := berthCLI(t, ie.Bin, creds, "--broker-url", ie.BrokerURL, "--ca-bundle", ie.Bundle, "describe-servers"); code == 0 {
		t.Errorf("berth without --auth-server-url succeeded against a broker whose authorization server is off (stderr %q)", stderr)
	}
	// Hydra refuses a wrong secret; berth says so without showing it.
	_, stderr, code := berthCLI(t, ie.Bin, []string{"BERTH_CLIENT_ID=" + ie.IdPClient.ID, "BERTH_CLIENT_PASSWORD=wrong-secret"},
		append(append([]string(nil), global...), "describe-servers")...)
	if code != 1 || !strings.Contains(stderr, "refused the client credentials") || strings.Contains(stderr, "wrong-secret") {
		t.Errorf("a wrong client secret: exit %d, stderr %q", code, stderr)
	}

	servers := decodeCLI[api.DescribeServersResponse](t, "describe-servers", run(t, "describe-servers"))
	if len(servers.Servers) != 1 {
		t.Fatalf("describe-servers lists %d servers, want 1", len(servers.Servers))
	}
	id := servers.Servers[0].Id
	if r := decodeCLI[api.CloseServersResponse](t, "close-servers", run(t, "close-servers", "--server-ids", id)); len(r.SuccessfulList) != 1 {
		t.Fatalf("close-servers: %+v", r)
	}
	if r := decodeCLI[api.OpenServersResponse](t, "open-servers", run(t, "open-servers", "--server-ids", id)); len(r.SuccessfulList) != 1 {
		t.Fatalf("open-servers: %+v", r)
	}
	ie.MustWaitServer(t)
	created := decodeCLI[api.CreateSessionsResponse](t, "create-session",
		run(t, "create-session", "--name", "idp-cli", "--owner", user1, "--type", "Virtual"))
	ie.track(created.SuccessfulList)
	if len(created.SuccessfulList) != 1 {
		t.Fatalf("create-session: %+v", created)
	}
	sid := created.SuccessfulList[0].Id
	poll.Until(t, readyTimeout, "describe-sessions to show the session READY", func() bool {
		d := decodeCLI[api.DescribeSessionsResponse](t, "describe-sessions", run(t, "describe-sessions", "--session-ids", sid))
		return len(d.Sessions) == 1 && d.Sessions[0].State == api.StateReady
	})
	if d := decodeCLI[api.GetSessionConnectionDataResponse](t, "get-session-connection-data",
		run(t, "get-session-connection-data", "--session-id", sid, "--user", user1)); d.ConnectionToken == "" {
		t.Fatal("get-session-connection-data printed no ConnectionToken")
	}
	if r := decodeCLI[api.GetSessionScreenshotsResponse](t, "get-session-screenshots",
		run(t, "get-session-screenshots", "--session-ids", sid)); len(r.SuccessfulList) != 1 {
		t.Fatalf("get-session-screenshots: %+v", r.UnsuccessfulList)
	}
	perm := filepath.Join(t.TempDir(), "perm.txt")
	if err := os.WriteFile(perm, []byte("[permissions]\n%owner% allow builtin\n"+user2+" allow display\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if r := decodeCLI[api.UpdateSessionPermissionsResponse](t, "update-session-permissions",
		run(t, "update-session-permissions", "--session-id", sid, "--owner", user1, "--permission-file", perm)); len(r.SuccessfulList) != 1 {
		t.Fatalf("update-session-permissions: %+v", r)
	}
	if r := decodeCLI[api.DeleteSessionsResponse](t, "delete-session",
		run(t, "delete-session", "--session-id", sid, "--owner", user1)); len(r.SuccessfulList) != 1 {
		t.Fatalf("delete-session: %+v", r)
	}
	ie.MustWaitState(t, sid, api.StateDeleted, deletedTimeout)
}

// testIdPCLIConf runs berth with nothing but a dcvsmcli.conf whose
// [authentication] section names Hydra (the reference file's form of the
// URL, grant_type in the query string) and Hydra's client.
func testIdPCLIConf(t *testing.T, ie *idpEnv) {
	xdg := t.TempDir()
	conf := fmt.Sprintf("[output]\noutput-format = json\n[security]\nca-bundle = %s\n[authentication]\nauth-server-url = %s?grant_type=client_credentials&audience=%s\nclient-id = %s\nclient-password = %s\n[broker]\nurl = %s\n",
		ie.Bundle, ie.IdP.TokenURL, url.QueryEscape(idpAudience), ie.IdPClient.ID, ie.IdPClient.Secret, ie.BrokerURL)
	if err := os.WriteFile(filepath.Join(xdg, "dcvsmcli.conf"), []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, cmd := range []string{"describe-servers", "describe-sessions"} {
		out, stderr, code := berthCLI(t, ie.Bin, []string{"HOME=" + xdg, "XDG_CONFIG_HOME=" + xdg}, cmd)
		if code != 0 || stderr != "" {
			t.Fatalf("berth %s with dcvsmcli.conf only: exit %d, stderr %q\n%s", cmd, code, stderr, out)
		}
	}
	out, _, _ := berthCLI(t, ie.Bin, []string{"HOME=" + xdg, "XDG_CONFIG_HOME=" + xdg}, "describe-servers")
	if r := decodeCLI[api.DescribeServersResponse](t, "describe-servers", out); len(r.Servers) != 1 {
		t.Fatalf("describe-servers with dcvsmcli.conf lists %d servers, want 1", len(r.Servers))
	}
}

// testIdPAudience presents Hydra's tokens whose "aud" is not the expected
// audience: none (no audience asked), another one, and one that Hydra
// grants by prefix to a client of the expected audience. All are 401; the
// expected audience is 200.
func testIdPAudience(t *testing.T, ie *idpEnv) {
	const other = "https://other.test"
	cl := ie.IdP.RegisterClient(t, idpAudience, other)
	for _, c := range []struct {
		name     string
		audience []string
		want     int
	}{
		{"expected audience", []string{idpAudience}, http.StatusOK},
		{"expected among others", []string{other, idpAudience}, http.StatusOK},
		{"no audience", nil, http.StatusUnauthorized},
		{"another audience", []string{other}, http.StatusUnauthorized},
		// Hydra's own check is a prefix match: it grants this to a client
		// of idpAudience. The broker must compare the whole value.
		{"expected audience as a prefix", []string{idpAudience + "/api"}, http.StatusUnauthorized},
		{"expected audience with a trailing slash", []string{idpAudience + "/"}, http.StatusUnauthorized},
	} {
		t.Run(c.name, func(t *testing.T) {
			tok := ie.IdP.Token(t, cl, c.audience...)
			if code, body := bearerStatus(t, ie.raw, ie.BrokerURL, tok); code != c.want {
				t.Errorf("a token with aud %v: %d %s, want %d", idptest.Claims(tok)["aud"], code, body, c.want)
			}
		})
	}
	// The token's signature is checked, whatever its claims.
	tok := ie.IdP.Token(t, cl, idpAudience)
	forged := tok[:strings.LastIndexByte(tok, '.')+1] + "AAAA" + tok[strings.LastIndexByte(tok, '.')+5:]
	if code, body := bearerStatus(t, ie.raw, ie.BrokerURL, forged); code != http.StatusUnauthorized {
		t.Errorf("a token with a damaged signature: %d %s, want 401", code, body)
	}
}

// fetchFailed starts the broker's log line for a key set it could not fetch.
const fetchFailed = `"msg":"auth server key set fetch failed`

// readFile returns a file's content.
func readFile(tb testing.TB, path string) string {
	tb.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		tb.Fatal(err)
	}
	return string(b)
}

// testIdPStopped stops Hydra: the tokens of the keys the broker holds keep
// working, and a token of a key it never saw (Hydra's keys after one more
// restart) is refused within 1 s. It leaves Hydra stopped and ie.cached set
// to a token of the keys the broker holds.
func testIdPStopped(t *testing.T, ie *idpEnv) {
	cached := ie.token(t)
	if code := ie.status(t, cached); code != http.StatusOK {
		t.Fatalf("a token of the current keys: %d, want 200", code)
	}
	ie.cached = cached
	ie.IdP.Restart(t)
	unknown := ie.IdP.Token(t, ie.IdP.RegisterClient(t, idpAudience), idpAudience)
	ie.IdP.Stop(t)

	if code, body := bearerStatus(t, ie.raw, ie.BrokerURL, cached); code != http.StatusOK {
		t.Fatalf("with Hydra stopped, a token of the cached keys: %d %s, want 200", code, body)
	}
	// The broker fetches a key set at most once per jwks.DefaultMinRefetch:
	// once that has passed since its last fetch, the unknown kid makes it
	// try the stopped server (and not just answer from its cache).
	time.Sleep(jwks.DefaultMinRefetch) //sleep-ok: the scenario needs the broker's refetch interval to have passed
	failedBefore := strings.Count(readFile(t, ie.Broker.Log), fetchFailed)
	start := time.Now()
	code, body := bearerStatus(t, ie.raw, ie.BrokerURL, unknown)
	took := time.Since(start)
	t.Logf("with Hydra stopped, a token of an unknown kid: %d in %s", code, took.Round(time.Millisecond))
	if code != http.StatusUnauthorized {
		t.Errorf("with Hydra stopped, a token of an unknown kid: %d %s, want 401", code, body)
	}
	if took > time.Second {
		t.Errorf("with Hydra stopped, the broker took %s to refuse a token of an unknown kid, want at most 1 s", took)
	}
	poll.Until(t, 5*time.Second, "the broker to log that it could not fetch the stopped server's key set", func() bool {
		return strings.Count(readFile(t, ie.Broker.Log), fetchFailed) > failedBefore
	})
	// The failed fetch did not drop the keys the broker holds: raw tokens
	// and the typed client's cached one still work.
	if code, body := bearerStatus(t, ie.raw, ie.BrokerURL, cached); code != http.StatusOK {
		t.Errorf("after the unknown kid, a token of the cached keys: %d %s, want 200", code, body)
	}
	if _, err := ie.Client.DescribeSessions(apiCtx(t), api.DescribeSessionsRequest{}); err != nil {
		t.Errorf("with Hydra stopped, the typed client's cached token: %v", err)
	}
}

// testIdPKeyRotation starts Hydra again (dsn memory: new keys, new kids): a
// token of the new keys works once the broker has fetched the JWKS once
// more, the old keys' tokens no longer do, and later tokens need no other
// fetch.
func testIdPKeyRotation(t *testing.T, ie *idpEnv) {
	old := ie.cached
	if old == "" {
		old = ie.token(t)
	}
	if code := ie.status(t, old); code != http.StatusOK {
		t.Fatalf("a token of the keys the broker holds: %d, want 200", code)
	}
	fetches := ie.IdP.JWKSRequests(t)

	ie.IdP.Restart(t)
	rotated := time.Now()
	ie.IdPClient = ie.IdP.RegisterClient(t, idpAudience)
	tok := ie.token(t)
	if k := idptest.KeyID(tok); k == "" || k == idptest.KeyID(old) {
		t.Fatalf("the token after the restart has kid %q, the old one %q", k, idptest.KeyID(old))
	}
	var tries int
	// The broker may refuse a new kid for a while after its last fetch (a
	// token naming random kids must not make it hammer the server).
	poll.Until(t, 30*time.Second, "the broker to accept a token of Hydra's new keys", func() bool {
		tries++
		return ie.status(t, tok) == http.StatusOK
	})
	t.Logf("a token of the new keys worked %s after the restart, on try %d", time.Since(rotated).Round(time.Millisecond), tries)
	if n := ie.IdP.JWKSRequests(t) - fetches; n != 1 {
		t.Errorf("the broker fetched Hydra's JWKS %d times after the rotation, want 1", n)
	}
	if code := ie.status(t, old); code != http.StatusUnauthorized {
		t.Errorf("a token of the withdrawn keys after the refetch: %d, want 401", code)
	}
	fetches = ie.IdP.JWKSRequests(t)
	ie.Env.Client = ie.apiClient(ie.IdPClient)
	ie.Env.Client.HTTPClient = ie.validating(t, ie.raw)
	ie.MustWaitServer(t)
	if code := ie.status(t, ie.token(t)); code != http.StatusOK {
		t.Errorf("another token of the new keys: %d, want 200", code)
	}
	if n := ie.IdP.JWKSRequests(t) - fetches; n != 0 {
		t.Errorf("the broker fetched Hydra's JWKS %d more times for tokens of keys it has", n)
	}
}

// TestE2E_ExternalAuth_Unregister: two brokers on one PostgreSQL database
// take Hydra's tokens once it is registered through one of them, and refuse
// them within 5 s of unregister-auth-server through the other.
func TestE2E_ExternalAuth_Unregister(t *testing.T) {
	dsn := pgtest.DSN(t)
	idp := idptest.Start(t, idptest.Options{})
	cl := idp.RegisterClient(t, idpAudience)
	c := MustStartCluster(t, dsn, 2, "enable-authorization-server = false", idpCAProp+" = "+idp.CAFile)
	b1, b2 := c.Brokers[0], c.Brokers[1]
	mustRegisterAuthServer(t, c.Bin, b1.Conf, idp)
	if out := mustAdmin(t, c.Bin, b2.Conf, "list-auth-servers"); !strings.Contains(out, idp.JWKSURL) {
		t.Fatalf("list-auth-servers through b2 does not list %s:\n%s", idp.JWKSURL, out)
	}
	tok := idp.Token(t, cl, idpAudience)
	for _, b := range c.Brokers {
		poll.Until(t, 30*time.Second, b.ID+" to accept Hydra's token", func() bool {
			code, _ := bearerStatus(t, b.HTTP, b.URL, tok)
			return code == http.StatusOK
		})
	}

	start := time.Now()
	out := mustAdmin(t, c.Bin, b2.Conf, "unregister-auth-server", "--url", idp.JWKSURL)
	if want := "Jwk url" + idp.JWKSURL + " unregistered"; !strings.Contains(out, want) {
		t.Errorf("unregister-auth-server printed %q, want %q", out, want)
	}
	deadline := start.Add(5 * time.Second)
	for _, b := range c.Brokers {
		poll.Until(t, time.Until(deadline), b.ID+" to refuse Hydra's token within 5 s of unregister-auth-server", func() bool {
			code, _ := bearerStatus(t, b.HTTP, b.URL, tok)
			return code == http.StatusUnauthorized
		})
		t.Logf("%s refuses the token %s after unregister-auth-server", b.ID, time.Since(start).Round(time.Millisecond))
	}
	if out := mustAdmin(t, c.Bin, b1.Conf, "list-auth-servers"); strings.Contains(out, idp.JWKSURL) {
		t.Errorf("list-auth-servers still lists %s after unregister:\n%s", idp.JWKSURL, out)
	}
}

package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// TestBroker_HostileInput sends bad requests of every kind and expects a 4xx that
// names the problem: never a 5xx, a panic or a hang.
func TestBroker_HostileInput(t *testing.T) {
	b := MustRunMain(t, t.TempDir(), nil)
	c := b.MustClient(t)
	tok, err := c.Token(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	base := "https://" + b.ClientAddr()

	huge := `[{"Name":"` + strings.Repeat("a", 1<<20) + `"}]`
	manyArgs := `[{"Name":"n","Owner":"o","Type":"VIRTUAL","AutorunFile":"x","AutorunFileArguments":[` + strings.TrimSuffix(strings.Repeat(`"a",`, 51), ",") + `]}]`
	longArg := `[{"Name":"n","Owner":"o","Type":"VIRTUAL","AutorunFile":"x","AutorunFileArguments":["` + strings.Repeat("a", 151) + `"]}]`

	expiredTok := signForeign(t, jwt.MapClaims{"sub": "x", "exp": time.Now().Add(-time.Hour).Unix()})
	noneTok := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"none","typ":"JWT"}`)) + "." +
		base64.RawURLEncoding.EncodeToString([]byte(`{"sub":"x","aud":"berth-api","exp":9999999999}`)) + "."
	// A token with a real kid but signed by a foreign key.
	parts := strings.Split(tok, ".")
	hdr, _ := base64.RawURLEncoding.DecodeString(parts[0])
	var h map[string]any
	_ = json.Unmarshal(hdr, &h)
	foreignTok := signForeignKid(t, h["kid"].(string), jwt.MapClaims{"sub": "x", "aud": "berth-api", "exp": time.Now().Add(time.Hour).Unix()})

	cases := []struct {
		name, method, path, body, token string
		status                          int
		want                            string
	}{
		{"malformed JSON", "POST", "/createSessions", `[{"Name":`, tok, 400, "invalid JSON"},
		{"wrong type", "POST", "/createSessions", `[{"Name":5}]`, tok, 400, "Name"},
		{"object instead of array", "POST", "/createSessions", `{"Name":"x"}`, tok, 400, "array"},
		{"missing body", "POST", "/deleteSessions", ``, tok, 400, "body"},
		{"body over 1 MiB", "POST", "/createSessions", huge, tok, 413, "larger than"},
		{"bad MaxResults", "POST", "/describeSessions", `{"MaxResults":5000}`, tok, 400, "MaxResults"},
		{"zero MaxResults", "POST", "/describeServers", `{"MaxResults":0}`, tok, 400, "MaxResults"},
		{"tampered NextToken", "POST", "/describeSessions", `{"NextToken":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}`, tok, 400, "NextToken"},
		{"garbage NextToken", "POST", "/describeServers", `{"NextToken":"%%%"}`, tok, 400, "NextToken"},
		{"unknown filter", "POST", "/describeSessions", `{"Filters":[{"Key":"server","Value":"x"}]}`, tok, 400, "Filters[0]"},
		{"dotdot InitFile", "POST", "/createSessions", `[{"Name":"n","Owner":"o","Type":"VIRTUAL","InitFile":"a/../../etc/passwd"}]`, tok, 200, "InitFile"},
		{"absolute AutorunFile", "POST", "/createSessions", `[{"Name":"n","Owner":"o","Type":"VIRTUAL","AutorunFile":"/bin/sh"}]`, tok, 200, "AutorunFile"},
		{"too many autorun args", "POST", "/createSessions", manyArgs, tok, 200, "autorun-file-arguments-max-size"},
		{"autorun arg too long", "POST", "/createSessions", longArg, tok, 200, "autorun-file-arguments-max-argument-length"},
		{"invalid owner", "POST", "/createSessions", `[{"Name":"n","Owner":"a;rm -rf /","Type":"VIRTUAL"}]`, tok, 200, "Owner"},
		{"owner with slash", "POST", "/createSessions", `[{"Name":"n","Owner":"a/b","Type":"VIRTUAL"}]`, tok, 200, "Owner"},
		{"bad type", "POST", "/createSessions", `[{"Name":"n","Owner":"o","Type":"HEADLESS"}]`, tok, 200, "Type"},
		{"bad base64", "POST", "/createSessions", `[{"Name":"n","Owner":"o","Type":"VIRTUAL","PermissionsFile":"@@@"}]`, tok, 200, "base64"},
		{"bad permissions file", "POST", "/createSessions", `[{"Name":"n","Owner":"o","Type":"VIRTUAL","PermissionsFile":"` + base64.StdEncoding.EncodeToString([]byte("[permissions]\nbob maybe display\n")) + `"}]`, tok, 200, "PermissionsFile"},
		{"invalid requirements", "POST", "/createSessions", `[{"Name":"n","Owner":"o","Type":"VIRTUAL","Requirements":"tag:a = 'x' and ("}]`, tok, 200, "position"},
		{"unknown property", "POST", "/createSessions", `[{"Name":"n","Owner":"o","Type":"VIRTUAL","Requirements":"server:Host.Secret = 1"}]`, tok, 200, "Requirements"},
		{"unknown session delete", "POST", "/deleteSessions", `[{"SessionId":"nope","Owner":"o"}]`, tok, 200, "does not exist"},
		{"unknown session permissions", "PUT", "/sessionPermissions", `[{"SessionId":"nope","Owner":"o","PermissionsFile":"W3Blcm1pc3Npb25zXQo="}]`, tok, 200, "does not exist"},
		{"unknown session screenshot", "POST", "/getSessionScreenshots", `[{"SessionId":"nope"}]`, tok, 200, "not found"},
		{"negative screenshot size", "POST", "/getSessionScreenshots", `[{"SessionId":"x","MaxWidth":-1}]`, tok, 200, "MaxWidth"},
		{"unknown session connection", "GET", "/sessionConnectionData/nope/alice", ``, tok, 400, "does not exist"},
		{"bad user name", "GET", "/sessionConnectionData/nope/bad;user", ``, tok, 400, "user"},
		{"dotdot user name", "GET", "/sessionConnectionData/nope/a..b", ``, tok, 400, "user"},
		{"unknown server open", "POST", "/openServers", `[{"ServerId":"nope"}]`, tok, 200, "DCV_SERVER_NOT_FOUND"},
		{"unknown server close", "POST", "/closeServers", `[{"ServerId":"nope"}]`, tok, 200, "DCV_SERVER_NOT_FOUND"},
		{"unknown path", "POST", "/doesNotExist", `{}`, tok, 404, "no such API"},
		{"no token", "POST", "/describeSessions", `{}`, "", 401, "No authorization header"},
		{"expired token", "POST", "/describeSessions", `{}`, expiredTok, 401, "invalid token"},
		{"foreign key token", "POST", "/describeSessions", `{}`, foreignTok, 401, "invalid token"},
		{"alg none token", "POST", "/describeSessions", `{}`, noneTok, 401, "invalid token"},
		{"garbage token", "POST", "/describeSessions", `{}`, "not.a.jwt", 401, "invalid token"},
		{"token endpoint bad grant", "POST", "/oauth2/token?grant_type=password", ``, "", 400, "unsupported_grant_type"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest(tc.method, base+tc.path, strings.NewReader(tc.body))
			if tc.token != "" {
				req.Header.Set("Authorization", "Bearer "+tc.token)
			}
			req.Header.Set("Content-Type", "application/json")
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			resp, err := b.hc.Do(req.WithContext(ctx))
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d, want %d; body %s", resp.StatusCode, tc.status, body)
			}
			if !strings.Contains(string(body), tc.want) {
				t.Errorf("body %s does not say %q", body, tc.want)
			}
			if resp.StatusCode == 200 && strings.Contains(string(body), `"SuccessfulList":[{`) {
				t.Errorf("hostile item accepted: %s", body)
			}
		})
	}
}

func signForeign(t *testing.T, claims jwt.MapClaims) string {
	return signForeignKid(t, "foreign", claims)
}

func signForeignKid(t *testing.T, kid string, claims jwt.MapClaims) string {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tk := jwt.NewWithClaims(jwt.SigningMethodES256, claims)
	tk.Header["kid"] = kid
	s, err := tk.SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

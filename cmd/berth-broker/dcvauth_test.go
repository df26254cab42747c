package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/internal/agentproto"
	"github.com/berth-dev/berth/internal/dcvauth"
	"github.com/berth-dev/berth/internal/oauth"
	"github.com/berth-dev/berth/internal/poll"
	"github.com/berth-dev/berth/internal/sqlite"
)

// readySessions starts a sim agent with report and creates one READY virtual
// session per owner; it returns the client and the session IDs.
func readySessions(t *testing.T, b *testBroker, report agentproto.HostReport, owners ...string) (*api.Client, []string) {
	t.Helper()
	c := b.MustClient(t)
	b.MustStartSimAgent(t, t.TempDir(), nil, report)
	poll.Until(t, 10*time.Second, "an available server", func() bool {
		s, ok := servers(t, c)[report.Hostname]
		return ok && s.Availability == api.AvailabilityAvailable
	})
	var ids []string
	for _, o := range owners {
		resp := create(t, c, api.CreateSessionRequest{Name: "s-" + o, Owner: o, Type: "VIRTUAL"})
		if len(resp.SuccessfulList) != 1 {
			t.Fatalf("create for %s: %+v", o, resp.UnsuccessfulList)
		}
		id := resp.SuccessfulList[0].Id
		waitState(t, c, id, "READY")
		ids = append(ids, id)
	}
	return c, ids
}

// postAuth posts a token verification form and returns the status, content
// type and body.
func postAuth(t *testing.T, b *testBroker, form url.Values) (int, string, string) {
	t.Helper()
	resp, err := b.hc.Post("https://"+b.AgentAddr()+"/agent/validate-authentication-token",
		"application/x-www-form-urlencoded", strings.NewReader(form.Encode()))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header.Get("Content-Type"), string(body)
}

// foreignToken signs a connection token for sessionID with a key the broker
// does not know.
func foreignToken(t *testing.T, sessionID string) string {
	t.Helper()
	ctx := context.Background()
	st, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "foreign.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	a := oauth.New(st, "berth-broker")
	tok, err := a.IssueConnectionToken(ctx, sessionID, "alice", "alice")
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func TestDCVTokenVerifier(t *testing.T) {
	ctx := context.Background()
	b := MustRunMain(t, t.TempDir(), nil)
	c, ids := readySessions(t, b, hostReport("dcv-host", 0, nil), "alice", "bob")
	alice, bob := ids[0], ids[1]
	cd, err := c.GetSessionConnectionData(ctx, alice, "alice")
	if err != nil {
		t.Fatal(err)
	}
	good := cd.ConnectionToken

	// Expired: signed by the broker's own key, with a clock two hours back.
	past := oauth.New(b.store, "berth-broker")
	past.Now = func() time.Time { return time.Now().Add(-2 * time.Hour) }
	expired, err := past.IssueConnectionToken(ctx, alice, "alice", "alice")
	if err != nil {
		t.Fatal(err)
	}
	// Forged: a foreign token, and one carrying the broker key's header with a
	// foreign payload and signature.
	foreign := foreignToken(t, alice)
	fp := strings.SplitN(foreign, ".", 3)
	forgedKid := strings.SplitN(good, ".", 2)[0] + "." + fp[1] + "." + fp[2]
	// Signed by the broker for alice's session but another owner.
	otherOwner, err := b.auth.IssueConnectionToken(ctx, alice, "bob", "alice")
	if err != nil {
		t.Fatal(err)
	}
	// A session that is not READY: deleted.
	gone, err := b.auth.IssueConnectionToken(ctx, "no-such-session", "alice", "alice")
	if err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name string
		form url.Values
		body string // exact body, or the message's start after result="no"
	}{
		{"good", url.Values{"sessionId": {alice}, "authenticationToken": {good}, "clientAddress": {"10.0.0.1"}},
			`<auth result="yes"><username>alice</username></auth>`},
		{"no client address", url.Values{"sessionId": {alice}, "authenticationToken": {good}},
			`<auth result="yes"><username>alice</username></auth>`},
		{"expired", url.Values{"sessionId": {alice}, "authenticationToken": {expired}}, "authentication token refused: token expired"},
		{"foreign key", url.Values{"sessionId": {alice}, "authenticationToken": {foreign}}, "authentication token refused: unknown signing key"},
		{"forged signature", url.Values{"sessionId": {alice}, "authenticationToken": {forgedKid}}, "authentication token refused: signature is invalid"},
		{"other session", url.Values{"sessionId": {bob}, "authenticationToken": {good}}, "the token is for another session"},
		{"other owner", url.Values{"sessionId": {alice}, "authenticationToken": {otherOwner}}, "the token is for another owner"},
		{"unknown session", url.Values{"sessionId": {"no-such-session"}, "authenticationToken": {gone}}, "the session does not exist"},
		{"malformed token", url.Values{"sessionId": {alice}, "authenticationToken": {"not.a.jwt"}}, "authentication token refused: malformed token"},
		{"garbage token", url.Values{"sessionId": {alice}, "authenticationToken": {strings.Repeat("x", 9000)}}, "authentication token refused"},
		{"missing session", url.Values{"authenticationToken": {good}}, "sessionId is required"},
		{"missing token", url.Values{"sessionId": {alice}}, "authenticationToken is required"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, ct, body := postAuth(t, b, tc.form)
			if code != http.StatusOK || !strings.HasPrefix(ct, "text/xml") {
				t.Fatalf("status %d, content type %q", code, ct)
			}
			if strings.HasPrefix(tc.body, "<auth") {
				if body != tc.body {
					t.Fatalf("body %q, want %q", body, tc.body)
				}
				return
			}
			if want := `<auth result="no"><message>` + tc.body; !strings.HasPrefix(body, want) || !strings.HasSuffix(body, "</message></auth>") {
				t.Fatalf("body %q, want prefix %q", body, want)
			}
			if strings.Contains(body, good) {
				t.Fatal("the answer echoes the token")
			}
		})
	}

	t.Run("malformed bodies", func(t *testing.T) {
		for _, raw := range []string{"%zz=1&sessionId=x", strings.Repeat("a", dcvauth.MaxBody+10), ""} {
			resp, err := b.hc.Post("https://"+b.AgentAddr()+"/agent/validate-authentication-token", "application/x-www-form-urlencoded", strings.NewReader(raw))
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK || !strings.HasPrefix(string(body), `<auth result="no"><message>`) {
				t.Fatalf("body of %d bytes: status %d, %q", len(raw), resp.StatusCode, body)
			}
		}
	})

	t.Run("not READY", func(t *testing.T) {
		if _, err := c.DeleteSessions(ctx, []api.DeleteSessionRequest{{SessionId: bob, Owner: "bob"}}); err != nil {
			t.Fatal(err)
		}
		tok, err := b.auth.IssueConnectionToken(ctx, bob, "bob", "bob")
		if err != nil {
			t.Fatal(err)
		}
		poll.Until(t, 10*time.Second, "bob's session refused", func() bool {
			_, _, body := postAuth(t, b, url.Values{"sessionId": {bob}, "authenticationToken": {tok}})
			return strings.HasPrefix(body, `<auth result="no">`)
		})
	})

	// The review's attack: a new clientAddress for each request. The limit
	// is the caller's (127.0.0.1), which has spent its burst above or
	// spends it now.
	t.Run("rate limit", func(t *testing.T) {
		limited := 0
		for i := range 60 {
			form := url.Values{"sessionId": {alice}, "authenticationToken": {good}, "clientAddress": {fmt.Sprintf("192.0.2.%d", i)}}
			code, _, body := postAuth(t, b, form)
			if code != http.StatusOK {
				t.Fatalf("status %d", code)
			}
			if body == `<auth result="no"><message>too many requests</message></auth>` {
				limited++
			}
		}
		if limited == 0 {
			t.Fatal("rotating clientAddress escaped the rate limit")
		}
	})
}

// TestDCVTokenVerifier_Callers runs the broker with
// dcv-token-verifier-allowed-addresses naming only another network: the
// verifier refuses the caller on loopback with 403 and the XML "no".
func TestDCVTokenVerifier_Callers(t *testing.T) {
	b := MustRunMain(t, t.TempDir(), func(c *Config) { c.DCVVerifierAllowed = "192.0.2.0/24, 2001:db8::/32" })
	_, ids := readySessions(t, b, hostReport("dcv-host", 0, nil), "alice")
	tok, err := b.auth.IssueConnectionToken(context.Background(), ids[0], "alice", "alice")
	if err != nil {
		t.Fatal(err)
	}
	code, ct, body := postAuth(t, b, url.Values{"sessionId": {ids[0]}, "authenticationToken": {tok}})
	if code != http.StatusForbidden || !strings.HasPrefix(ct, "text/xml") ||
		body != `<auth result="no"><message>this address may not verify DCV tokens</message></auth>` {
		t.Fatalf("caller outside dcv-token-verifier-allowed-addresses: status %d, %q, %q", code, ct, body)
	}
}

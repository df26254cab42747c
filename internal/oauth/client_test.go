package oauth_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/oauth"
)

var uuidRE = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)

func TestAuthority_RegisterClient(t *testing.T) {
	e := MustEnv(t)
	ctx := context.Background()
	id, secret, err := e.auth.RegisterClient(ctx, oauth.KindAPI, "portal")
	if err != nil {
		t.Fatal(err)
	}
	if !uuidRE.MatchString(id) {
		t.Errorf("client id %q is not a UUID", id)
	}
	raw, err := base64.RawURLEncoding.DecodeString(secret)
	if err != nil || len(raw) != 32 {
		t.Errorf("secret %q is not 32 bytes of unpadded base64url (%v)", secret, err)
	}
	c, err := e.store.GetClient(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if c.Name != "portal" || c.Kind != oauth.KindAPI || !c.Active || len(c.Salt) != 16 || len(c.SecretHash) != 32 ||
		!c.CreatedAt.Equal(e.clock.Now()) || c.Statement != "" {
		t.Errorf("stored client = %+v", c)
	}
	if bytes.Contains(c.SecretHash, []byte(secret)) || bytes.Contains(c.Salt, raw) {
		t.Error("secret stored in clear")
	}

	id2, secret2, err := e.auth.RegisterClient(ctx, oauth.KindAPI, "portal")
	if err != nil {
		t.Fatal(err)
	}
	if id2 == id || secret2 == secret {
		t.Error("two registrations got the same id or secret")
	}

	for _, tt := range []struct{ kind, name string }{
		{"admin", "x"},
		{"", "x"},
		{oauth.KindAPI, "bad\nname"},
		{oauth.KindAPI, strings.Repeat("n", 300)},
	} {
		if _, _, err := e.auth.RegisterClient(ctx, tt.kind, tt.name); err == nil {
			t.Errorf("RegisterClient(%q, %q) succeeded, want error", tt.kind, tt.name)
		}
	}
}

func TestAuthority_Authenticate(t *testing.T) {
	e := MustEnv(t)
	ctx := context.Background()
	api, apiSecret := e.MustClient(t, oauth.KindAPI)
	agent, agentSecret := e.MustClient(t, oauth.KindAgent)
	gone, goneSecret := e.MustClient(t, oauth.KindAPI)
	if err := e.store.SetClientActive(ctx, gone.ID, false); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name       string
		kind       string
		id, secret string
		ok         bool
	}{
		{"api", oauth.KindAPI, api.ID, apiSecret, true},
		{"agent", oauth.KindAgent, agent.ID, agentSecret, true},
		{"wrong secret", oauth.KindAPI, api.ID, agentSecret, false},
		{"secret with a suffix", oauth.KindAPI, api.ID, apiSecret + "x", false},
		{"empty secret", oauth.KindAPI, api.ID, "", false},
		{"unknown id", oauth.KindAPI, "no-such-client", apiSecret, false},
		{"empty id", oauth.KindAPI, "", apiSecret, false},
		{"long id", oauth.KindAPI, strings.Repeat("a", 1000), apiSecret, false},
		{"agent as api", oauth.KindAPI, agent.ID, agentSecret, false},
		{"api as agent", oauth.KindAgent, api.ID, apiSecret, false},
		{"inactive", oauth.KindAPI, gone.ID, goneSecret, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := e.auth.Authenticate(ctx, tt.kind, tt.id, tt.secret)
			if tt.ok {
				if err != nil || c.ID != tt.id {
					t.Fatalf("Authenticate = %v, %v", c, err)
				}
				return
			}
			if !errors.Is(err, oauth.ErrInvalidClient) {
				t.Fatalf("err = %v, want ErrInvalidClient", err)
			}
		})
	}
}

func TestAuthority_GenerateSoftwareStatement(t *testing.T) {
	e := MustEnv(t)
	ctx := context.Background()
	s, err := e.auth.GenerateSoftwareStatement(ctx, "2024.0-1", oauth.StatementLimits{})
	if err != nil {
		t.Fatal(err)
	}
	raw, err := base64.StdEncoding.DecodeString(s.Statement)
	if err != nil {
		t.Fatalf("statement is not standard base64: %v", err)
	}
	// The shape of the AWS broker's statements, fields in the same order,
	// plus a random secret.
	var body map[string]any
	if err := json.Unmarshal(raw, &body); err != nil {
		t.Fatal(err)
	}
	if body["id"] != s.ID || body["active"] != true || body["brokerVersion"] != "2024.0-1" ||
		body["issuedAt"] != float64(e.clock.Now().UnixMilli())/1000 {
		t.Errorf("statement body = %s", raw)
	}
	if !regexp.MustCompile(`^\{"id":"[0-9a-f-]{36}","active":true,"issuedAt":\d+(\.\d+)?,"brokerVersion":"2024.0-1","secret":"[A-Za-z0-9_-]{43}"\}$`).Match(raw) {
		t.Errorf("statement body = %s", raw)
	}
	if secret, err := base64.RawURLEncoding.DecodeString(body["secret"].(string)); err != nil || len(secret) != 32 {
		t.Errorf("secret is not 32 bytes of base64url: %v", err)
	}
	if !uuidRE.MatchString(s.ID) || !s.Active || !s.IssuedAt.Equal(e.clock.Now()) || s.Legacy || s.MaxUses != 0 || !s.ExpiresAt.IsZero() {
		t.Errorf("statement = %+v", s)
	}
	stored, err := e.store.SoftwareStatements(ctx)
	if err != nil || len(stored) != 1 {
		t.Fatalf("stored statements = %v, %v", stored, err)
	}
	if stored[0].Statement != "" || !bytes.Equal(stored[0].Hash, oauth.StatementHash(s.Statement)) || len(stored[0].Hash) != 32 {
		t.Errorf("stored statement = %+v: want its SHA-256 and no text", stored[0])
	}

	// Limits.
	exp := e.clock.Now().Add(time.Hour)
	l, err := e.auth.GenerateSoftwareStatement(ctx, "v", oauth.StatementLimits{ExpiresAt: exp, MaxUses: 3})
	if err != nil || !l.ExpiresAt.Equal(exp) || l.MaxUses != 3 {
		t.Errorf("limited statement = %+v, %v", l, err)
	}
	for name, lim := range map[string]oauth.StatementLimits{
		"expiry now":    {ExpiresAt: e.clock.Now()},
		"expiry past":   {ExpiresAt: e.clock.Now().Add(-time.Second)},
		"negative uses": {MaxUses: -1},
	} {
		if _, err := e.auth.GenerateSoftwareStatement(ctx, "v", lim); err == nil {
			t.Errorf("%s: generated", name)
		}
	}
}

// TestAuthority_StatementNotDerivableFromLog reproduces finding 2 of the
// security review: a statement was base64 of {"id","active","issuedAt",
// "brokerVersion"}, and the info log gave the ID at the issue time, so one log
// line was enough to register a rogue agent. Now the log names statements by a
// fingerprint only, and a statement rebuilt from everything but its secret is
// refused.
func TestAuthority_StatementNotDerivableFromLog(t *testing.T) {
	e := MustEnv(t)
	ctx := context.Background()
	s, err := e.auth.GenerateSoftwareStatement(ctx, "1.0.0", oauth.StatementLimits{MaxUses: 1})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := e.auth.RegisterAgent(ctx, s.Statement, "host-1"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := e.auth.RegisterAgent(ctx, s.Statement, "host-2"); !errors.Is(err, oauth.ErrStatementUsedUp) {
		t.Fatalf("second use: %v", err)
	}
	if _, err := e.auth.SetSoftwareStatementActive(ctx, s.ID, false); err != nil {
		t.Fatal(err)
	}
	if _, _, err := e.auth.RegisterAgent(ctx, s.Statement, "host-3"); !errors.Is(err, oauth.ErrStatementInactive) {
		t.Fatalf("deactivated: %v", err)
	}
	log := e.log.String()
	var body struct {
		Secret string `json:"secret"`
	}
	raw, _ := base64.StdEncoding.DecodeString(s.Statement)
	json.Unmarshal(raw, &body)
	for what, v := range map[string]string{"statement": s.Statement, "statement ID": s.ID, "statement secret": body.Secret} {
		if strings.Contains(log, v) {
			t.Errorf("the log holds the %s:\n%s", what, log)
		}
	}
	if n := strings.Count(log, "statement_fp="+oauth.Fingerprint(s.ID)); n < 4 {
		t.Errorf("the log names the statement by its fingerprint %d times, want 4 (generated, registered, refused, deactivated):\n%s", n, log)
	}

	// The attacker knows the ID, the issue time and the version: the old
	// statement format rebuilt from them is refused, with a fresh statement
	// as well.
	fresh, err := e.auth.GenerateSoftwareStatement(ctx, "1.0.0", oauth.StatementLimits{})
	if err != nil {
		t.Fatal(err)
	}
	for _, st := range []*oauth.SoftwareStatement{s, fresh} {
		rebuilt, _ := json.Marshal(struct {
			ID            string  `json:"id"`
			Active        bool    `json:"active"`
			IssuedAt      float64 `json:"issuedAt"`
			BrokerVersion string  `json:"brokerVersion"`
		}{st.ID, true, float64(st.IssuedAt.UnixMilli()) / 1000, "1.0.0"})
		forged := base64.StdEncoding.EncodeToString(rebuilt)
		if _, _, err := e.auth.RegisterAgent(ctx, forged, "rogue"); !errors.Is(err, oauth.ErrInvalidStatement) {
			t.Errorf("statement rebuilt from its ID and issue time: err = %v, want ErrInvalidStatement", err)
		}
	}
}

func TestAuthority_RegisterAgent(t *testing.T) {
	e := MustEnv(t)
	ctx := context.Background()
	s, err := e.auth.GenerateSoftwareStatement(ctx, "1.0.0", oauth.StatementLimits{})
	if err != nil {
		t.Fatal(err)
	}
	off, err := e.auth.GenerateSoftwareStatement(ctx, "1.0.0", oauth.StatementLimits{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.auth.SetSoftwareStatementActive(ctx, off.Statement, false); err != nil {
		t.Fatal(err)
	}

	id, secret, err := e.auth.RegisterAgent(ctx, s.Statement+"\n", "host-1")
	if err != nil {
		t.Fatal(err)
	}
	c, err := e.auth.Authenticate(ctx, oauth.KindAgent, id, secret)
	if err != nil {
		t.Fatalf("agent cannot authenticate: %v", err)
	}
	if c.Kind != oauth.KindAgent || c.Statement != s.ID || c.Name != "host-1" {
		t.Errorf("agent client = %+v", c)
	}
	if _, err := e.auth.Authenticate(ctx, oauth.KindAPI, id, secret); !errors.Is(err, oauth.ErrInvalidClient) {
		t.Errorf("agent authenticated as an API client: %v", err)
	}

	wrapped := s.Statement[:10] + "\n" + s.Statement[10:]
	if _, _, err := e.auth.RegisterAgent(ctx, wrapped, "host-2"); err != nil {
		t.Errorf("line-wrapped statement refused: %v", err)
	}

	for name, st := range map[string]string{
		"deactivated": off.Statement,
		"unknown":     base64.StdEncoding.EncodeToString([]byte(`{"id":"x","active":true}`)),
		"empty":       "",
		"prefix":      s.Statement[:20],
		"huge":        strings.Repeat("A", 10000),
	} {
		if _, _, err := e.auth.RegisterAgent(ctx, st, "h"); !errors.Is(err, oauth.ErrInvalidStatement) {
			t.Errorf("%s statement: err = %v, want ErrInvalidStatement", name, err)
		}
	}
}

func TestAuthority_WarnLegacyStatements(t *testing.T) {
	e := MustEnv(t)
	ctx := context.Background()
	legacy := &oauth.SoftwareStatement{ID: "11111111-2222-4333-8444-555555555555", Hash: oauth.StatementHash("old"), IssuedAt: e.clock.Now(), Active: true, Legacy: true}
	gone := &oauth.SoftwareStatement{ID: "66666666-2222-4333-8444-555555555555", Hash: oauth.StatementHash("older"), IssuedAt: e.clock.Now(), Legacy: true}
	for _, st := range []*oauth.SoftwareStatement{legacy, gone} {
		if err := e.store.CreateSoftwareStatement(ctx, st); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := e.auth.GenerateSoftwareStatement(ctx, "1", oauth.StatementLimits{}); err != nil {
		t.Fatal(err)
	}
	if err := e.auth.WarnLegacyStatements(ctx); err != nil {
		t.Fatal(err)
	}
	log := e.log.String()
	if n := strings.Count(log, "level=WARN"); n != 1 || !strings.Contains(log, "statement_fp="+oauth.Fingerprint(legacy.ID)) || strings.Contains(log, legacy.ID) {
		t.Errorf("want one warning naming the active legacy statement by fingerprint:\n%s", log)
	}
}

func TestAuthority_Prune(t *testing.T) {
	e := MustEnv(t)
	ctx := context.Background()
	s, err := e.auth.GenerateSoftwareStatement(ctx, "1", oauth.StatementLimits{})
	if err != nil {
		t.Fatal(err)
	}
	idle, _, err := e.auth.RegisterAgent(ctx, s.Statement, "idle")
	if err != nil {
		t.Fatal(err)
	}
	used, _, err := e.auth.RegisterAgent(ctx, s.Statement, "used")
	if err != nil {
		t.Fatal(err)
	}
	e.store.clients[used].LinkedAt = e.clock.Now()
	api, _ := e.MustClient(t, oauth.KindAPI)
	e.clock.Add(25 * time.Hour)
	if err := e.auth.Prune(ctx); err != nil { // UnlinkedAgentClientTTL zero: nothing
		t.Fatal(err)
	}
	if _, err := e.store.GetClient(ctx, idle); err != nil {
		t.Fatalf("pruned with no TTL: %v", err)
	}
	e.auth.UnlinkedAgentClientTTL = 24 * time.Hour
	if err := e.auth.Prune(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := e.store.GetClient(ctx, idle); !errors.Is(err, oauth.ErrNotFound) {
		t.Errorf("unlinked agent client after 25 h: %v, want deleted", err)
	}
	for _, id := range []string{used, api.ID} {
		if _, err := e.store.GetClient(ctx, id); err != nil {
			t.Errorf("%s pruned: %v", id, err)
		}
	}
	if !strings.Contains(e.log.String(), "client_ids="+idle) {
		t.Errorf("the log does not name the pruned client:\n%s", e.log.String())
	}
}

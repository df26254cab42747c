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
	s, err := e.auth.GenerateSoftwareStatement(ctx, "2024.0-1")
	if err != nil {
		t.Fatal(err)
	}
	raw, err := base64.StdEncoding.DecodeString(s.Statement)
	if err != nil {
		t.Fatalf("statement is not standard base64: %v", err)
	}
	// The shape of the AWS broker's statements, fields in the same order.
	var body map[string]any
	if err := json.Unmarshal(raw, &body); err != nil {
		t.Fatal(err)
	}
	if body["id"] != s.ID || body["active"] != true || body["brokerVersion"] != "2024.0-1" ||
		body["issuedAt"] != float64(e.clock.Now().UnixMilli())/1000 {
		t.Errorf("statement body = %s", raw)
	}
	if !regexp.MustCompile(`^\{"id":"[0-9a-f-]{36}","active":true,"issuedAt":\d+(\.\d+)?,"brokerVersion":"2024.0-1"\}$`).Match(raw) {
		t.Errorf("statement body = %s", raw)
	}
	if !uuidRE.MatchString(s.ID) || !s.Active || !s.IssuedAt.Equal(e.clock.Now()) {
		t.Errorf("statement = %+v", s)
	}
	stored, err := e.store.SoftwareStatements(ctx)
	if err != nil || len(stored) != 1 || stored[0].Statement != s.Statement {
		t.Errorf("stored statements = %v, %v", stored, err)
	}
}

func TestAuthority_RegisterAgent(t *testing.T) {
	e := MustEnv(t)
	ctx := context.Background()
	s, err := e.auth.GenerateSoftwareStatement(ctx, "1.0.0")
	if err != nil {
		t.Fatal(err)
	}
	off, err := e.auth.GenerateSoftwareStatement(ctx, "1.0.0")
	if err != nil {
		t.Fatal(err)
	}
	if err := e.store.SetSoftwareStatementActive(ctx, off.ID, false); err != nil {
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

package oauth

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

const (
	secretBytes = 32
	saltBytes   = 16
	// maxCredentialLen bounds client IDs and secrets that Authenticate hashes
	// or looks up; real ones are 36 and 43 bytes.
	maxCredentialLen = 256
	// maxNameLen bounds client names.
	maxNameLen = 256
	// maxStatementLen bounds software statements that RegisterAgent looks up.
	maxStatementLen = 4096
)

// RegisterClient creates an active client of kind (KindAPI or KindAgent) and
// returns its ID and secret. The secret is not stored and cannot be shown
// again.
func (a *Authority) RegisterClient(ctx context.Context, kind, name string) (id, secret string, err error) {
	if kind != KindAPI && kind != KindAgent {
		return "", "", fmt.Errorf("register client: unknown kind %q", kind)
	}
	return a.registerClient(ctx, kind, name, "")
}

func (a *Authority) registerClient(ctx context.Context, kind, name, statementID string) (id, secret string, err error) {
	name = strings.TrimSpace(name)
	if err := checkName(name); err != nil {
		return "", "", fmt.Errorf("register client: %w", err)
	}
	raw := make([]byte, secretBytes)
	rand.Read(raw) // never fails; see crypto/rand.Read
	secret = base64.RawURLEncoding.EncodeToString(raw)
	salt := make([]byte, saltBytes)
	rand.Read(salt)
	c := &Client{
		ID:         newID(),
		Name:       name,
		Kind:       kind,
		SecretHash: hashSecret(salt, secret),
		Salt:       salt,
		Active:     true,
		CreatedAt:  a.now(),
		Statement:  statementID,
	}
	if err := a.Store.CreateClient(ctx, c); err != nil {
		return "", "", fmt.Errorf("register client: %w", err)
	}
	a.logger().InfoContext(ctx, "client registered", "client_id", c.ID, "kind", kind, "name", name)
	return c.ID, secret, nil
}

// errInvalidName means a client name is too long or has control characters.
var errInvalidName = errors.New("invalid client name")

func checkName(name string) error {
	if len(name) > maxNameLen {
		return fmt.Errorf("%w: longer than %d bytes", errInvalidName, maxNameLen)
	}
	if !utf8.ValidString(name) || strings.ContainsFunc(name, unicode.IsControl) {
		return fmt.Errorf("%w: invalid characters", errInvalidName)
	}
	return nil
}

// hashSecret returns SHA-256(salt || secret).
//
// A fast hash is deliberate. Secrets are 32 random bytes, not passwords: no
// dictionary or brute-force attack on 256 bits of entropy is feasible however
// fast the hash, so a slow KDF (bcrypt, scrypt, argon2) would buy no security,
// while it would cap the token endpoint at a few dozen requests per second per
// core and hand attackers a cheap way to burn CPU. The salt keeps equal
// secrets from having equal hashes.
func hashSecret(salt []byte, secret string) []byte {
	h := sha256.New()
	h.Write(salt)
	h.Write([]byte(secret))
	return h.Sum(nil)
}

// Authenticate returns the client with ID id if it is active, of kind kind and
// secret is its secret. Otherwise it returns ErrInvalidClient, without telling
// which check failed; other errors come from the store.
func (a *Authority) Authenticate(ctx context.Context, kind, id, secret string) (*Client, error) {
	if id == "" || secret == "" || len(id) > maxCredentialLen || len(secret) > maxCredentialLen {
		return nil, ErrInvalidClient
	}
	c, err := a.Store.GetClient(ctx, id)
	if errors.Is(err, ErrNotFound) {
		// Spend the same time as for a known client.
		subtle.ConstantTimeCompare(hashSecret(make([]byte, saltBytes), secret), make([]byte, sha256.Size))
		return nil, ErrInvalidClient
	}
	if err != nil {
		return nil, fmt.Errorf("authenticate client: %w", err)
	}
	ok := subtle.ConstantTimeCompare(hashSecret(c.Salt, secret), c.SecretHash) == 1
	if !ok || !c.Active || c.Kind != kind {
		return nil, ErrInvalidClient
	}
	return c, nil
}

// statementBody is the JSON inside a software statement. Field order and names
// follow the statements the AWS broker generates.
type statementBody struct {
	ID            string  `json:"id"`
	Active        bool    `json:"active"`
	IssuedAt      float64 `json:"issuedAt"` // Unix seconds, millisecond precision
	BrokerVersion string  `json:"brokerVersion"`
}

// GenerateSoftwareStatement creates and stores an active software statement:
// base64 (standard encoding) of
// {"id":"<uuid>","active":true,"issuedAt":<unix seconds>,"brokerVersion":"..."}.
// Agents that present it may register themselves with RegisterAgent.
func (a *Authority) GenerateSoftwareStatement(ctx context.Context, brokerVersion string) (*SoftwareStatement, error) {
	ms := a.now().UnixMilli()
	id := newID()
	body, err := json.Marshal(statementBody{
		ID:            id,
		Active:        true,
		IssuedAt:      float64(ms) / 1000,
		BrokerVersion: brokerVersion,
	})
	if err != nil {
		return nil, fmt.Errorf("generate software statement: %w", err)
	}
	s := &SoftwareStatement{
		ID:        id,
		Statement: base64.StdEncoding.EncodeToString(body),
		IssuedAt:  time.UnixMilli(ms),
		Active:    true,
	}
	if err := a.Store.CreateSoftwareStatement(ctx, s); err != nil {
		return nil, fmt.Errorf("generate software statement: %w", err)
	}
	a.logger().InfoContext(ctx, "software statement generated", "statement_id", s.ID)
	return s, nil
}

// RegisterAgent registers an agent that presents software statement
// statement: it creates an active KindAgent client named name, bound to the
// statement, and returns its ID and secret. It returns ErrInvalidStatement if
// the statement is unknown or deactivated.
func (a *Authority) RegisterAgent(ctx context.Context, statement, name string) (id, secret string, err error) {
	// Statement files may wrap lines or end in a newline.
	text := strings.Join(strings.Fields(statement), "")
	if text == "" || len(text) > maxStatementLen {
		return "", "", ErrInvalidStatement
	}
	all, err := a.Store.SoftwareStatements(ctx)
	if err != nil {
		return "", "", fmt.Errorf("register agent: %w", err)
	}
	var found *SoftwareStatement
	for _, s := range all {
		if subtle.ConstantTimeCompare([]byte(s.Statement), []byte(text)) == 1 {
			found = s
		}
	}
	if found == nil || !found.Active {
		return "", "", ErrInvalidStatement
	}
	return a.registerClient(ctx, KindAgent, name, found.ID)
}

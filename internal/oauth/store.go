package oauth

import (
	"context"
	"errors"
	"time"
)

// ErrNotFound means the client, key or software statement does not exist.
var ErrNotFound = errors.New("not found")

// Client kinds.
const (
	KindAPI   = "api"   // REST API clients (register-api-client)
	KindAgent = "agent" // agents registered with a software statement
)

// Client is an OAuth2 client. Its secret is kept only as a salted hash.
type Client struct {
	ID         string
	Name       string
	Kind       string
	SecretHash []byte
	Salt       []byte
	Active     bool
	CreatedAt  time.Time
	// Statement is the software statement ID an agent client registered with.
	Statement string
}

// SigningKey is a JWT signing key pair. The newest key signs; every key that is not
// yet expired verifies.
type SigningKey struct {
	ID         string // the JWT "kid"
	Algorithm  string // "ES256"
	PrivatePEM []byte // PKCS#8 PEM
	CreatedAt  time.Time
	// RetiredAt is when a newer key replaced this one; zero for the active key.
	RetiredAt time.Time
}

// SoftwareStatement lets an agent register itself (RFC 7591 style).
type SoftwareStatement struct {
	ID        string
	Statement string // the base64 text the agent presents
	IssuedAt  time.Time
	Active    bool
}

// Store keeps clients, signing keys and software statements. Implemented by
// internal/sqlite and internal/postgres.
type Store interface {
	// CreateClient inserts a client.
	CreateClient(ctx context.Context, c *Client) error
	// GetClient returns ErrNotFound for an unknown ID.
	GetClient(ctx context.Context, id string) (*Client, error)
	// ListClients returns the clients of one kind, oldest first.
	ListClients(ctx context.Context, kind string) ([]*Client, error)
	// SetClientActive returns ErrNotFound for an unknown ID.
	SetClientActive(ctx context.Context, id string, active bool) error

	// AddSigningKey stores k and retires (sets RetiredAt on) every older active key,
	// in one transaction.
	AddSigningKey(ctx context.Context, k *SigningKey) error
	// SigningKeys returns all keys, newest first.
	SigningKeys(ctx context.Context) ([]*SigningKey, error)
	// DeleteSigningKeysRetiredBefore removes keys retired before t. It never
	// removes the active key (zero RetiredAt).
	DeleteSigningKeysRetiredBefore(ctx context.Context, t time.Time) error

	// CreateSoftwareStatement inserts a statement.
	CreateSoftwareStatement(ctx context.Context, s *SoftwareStatement) error
	// SoftwareStatements returns all statements, oldest first.
	SoftwareStatements(ctx context.Context) ([]*SoftwareStatement, error)
	// SetSoftwareStatementActive matches by Statement text or ID; ErrNotFound if none.
	SetSoftwareStatementActive(ctx context.Context, statementOrID string, active bool) error
}

package oauth

import (
	"context"
	"errors"
	"time"
)

// ErrNotFound means the client, key or software statement does not exist.
var ErrNotFound = errors.New("not found")

// ErrClientExists means a client of the ID to be inserted exists already.
var ErrClientExists = errors.New("client ID exists")

// ErrNotReissuable means ReissueAgentSecret found the client but may not
// give it a new secret: it is not an active agent client, it has linked, or
// it registered with another statement.
var ErrNotReissuable = errors.New("client may not be given a new secret")

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
	// LinkedAt is when an agent client first linked as a server (the broker
	// bound a server ID to it); zero while it never did. Agent clients that
	// stay unlinked are pruned (Authority.UnlinkedAgentClientTTL).
	LinkedAt time.Time
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

// SoftwareStatement lets an agent register itself (RFC 7591 style). Stores
// keep its hash, never its text.
type SoftwareStatement struct {
	ID string
	// Statement is the base64 text the agent presents. Only
	// GenerateSoftwareStatement returns it; stores neither keep nor return it.
	Statement string
	// Hash is StatementHash of the text: what registration looks up.
	Hash     []byte
	IssuedAt time.Time
	Active   bool
	// ExpiresAt is when the statement stops registering agents; zero: never.
	ExpiresAt time.Time
	// MaxUses is how many agents may register with it; 0: no limit.
	MaxUses int
	// Uses counts the agents registered with it.
	Uses int
	// Legacy marks a statement generated before statements carried a random
	// secret: its text follows from its ID and issue time, which older
	// versions logged. Deactivate such statements.
	Legacy bool
}

// AuthServer is an external authorization server whose access tokens the
// client API accepts (register-auth-server), named by the URL of its JSON Web
// Key Set.
type AuthServer struct {
	// URL is the key set's https URL (see jwks.CheckURL); it identifies the
	// server.
	URL string
	// Algorithm pins the JWS algorithm its tokens must be signed with (one
	// of jwks.Algorithms); empty: any of them that the key allows.
	Algorithm string
	// Issuer, when set, is the "iss" its tokens must carry.
	Issuer string
	// Audience, when set, must be the "aud" of its tokens, or one of them.
	Audience string
	// CreatedAt is when it was first registered.
	CreatedAt time.Time
}

// Store keeps clients, signing keys, software statements and external
// authorization servers. Implemented by internal/sqlite and internal/postgres.
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

	// DeleteUnlinkedAgentClients deletes the KindAgent clients with a zero
	// LinkedAt created before t, and returns their IDs.
	DeleteUnlinkedAgentClients(ctx context.Context, t time.Time) ([]string, error)

	// CreateSoftwareStatement inserts a statement: every field but
	// Statement, which is not kept.
	CreateSoftwareStatement(ctx context.Context, s *SoftwareStatement) error
	// SoftwareStatements returns all statements, oldest first, without
	// their text.
	SoftwareStatements(ctx context.Context) ([]*SoftwareStatement, error)
	// SetSoftwareStatementActive matches by ID; ErrNotFound if none.
	SetSoftwareStatementActive(ctx context.Context, id string, active bool) error
	// RegisterWithStatement registers agent client c with the statement
	// whose Hash is hash, in one transaction: it fails with ErrNotFound if
	// there is none, ErrStatementInactive if it is deactivated,
	// ErrStatementExpired if its ExpiresAt is set and not after
	// c.CreatedAt, ErrStatementUsedUp if MaxUses is set and Uses reached
	// it; otherwise it counts one use, sets c.Statement to the statement's
	// ID, inserts c, and returns the statement as updated. Concurrent calls,
	// from several brokers too, never count more than MaxUses.
	// An existing c.ID fails with an error that wraps ErrClientExists
	// and counts no use.
	RegisterWithStatement(ctx context.Context, hash []byte, c *Client) (*SoftwareStatement, error)
	// ReissueAgentSecret gives the stored client c.ID the new secret of c
	// (SecretHash and Salt) and c.CreatedAt as its CreatedAt (it registered
	// again), in one transaction, and sets c to the client as stored. It
	// does so only if that client is an active KindAgent client that never
	// linked (zero LinkedAt, checked in the update itself, so that a client
	// that links meanwhile keeps its secret) and registered with the
	// statement whose Hash is hash. It fails with ErrNotFound if no client
	// has ID c.ID, ErrNotReissuable if it does but one of those conditions
	// fails, and ErrStatementInactive or ErrStatementExpired (at
	// c.CreatedAt) if the statement no longer registers agents. It
	// neither checks nor counts a use: the client counted its own.
	// It returns the statement.
	ReissueAgentSecret(ctx context.Context, hash []byte, c *Client) (*SoftwareStatement, error)

	// PutAuthServer registers s, or, if a server of its URL is registered,
	// replaces that one's Algorithm, Issuer and Audience (its CreatedAt
	// stays, and is set in s). A zero s.CreatedAt means now.
	PutAuthServer(ctx context.Context, s *AuthServer) error
	// AuthServers returns the registered servers, oldest first.
	AuthServers(ctx context.Context) ([]*AuthServer, error)
	// DeleteAuthServer unregisters the server of URL url; ErrNotFound if
	// there is none.
	DeleteAuthServer(ctx context.Context, url string) error
}

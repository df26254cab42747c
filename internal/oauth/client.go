package oauth

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/berth-dev/berth/internal/logattr"
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
	// maxServerIDLen bounds the server ID of a registration, as
	// agentproto.MaxIDLength does on the link.
	maxServerIDLen = 256
)

// RegisterClient creates an active client of kind (KindAPI or KindAgent) and
// returns its ID and secret. The secret is not stored and cannot be shown
// again.
func (a *Authority) RegisterClient(ctx context.Context, kind, name string) (id, secret string, err error) {
	if kind != KindAPI && kind != KindAgent {
		return "", "", fmt.Errorf("register client: unknown kind %q", kind)
	}
	c, secret, err := a.newClient(kind, name)
	if err != nil {
		return "", "", fmt.Errorf("register client: %w", err)
	}
	if err := a.Store.CreateClient(ctx, c); err != nil {
		return "", "", fmt.Errorf("register client: %w", err)
	}
	a.logger().InfoContext(ctx, "client registered", idAttr(kind), c.ID, "kind", kind, "name", c.Name)
	return c.ID, secret, nil
}

// newClient returns an active client of kind named name, not yet stored, and
// its secret.
func (a *Authority) newClient(kind, name string) (*Client, string, error) {
	name = strings.TrimSpace(name)
	if err := checkName(name); err != nil {
		return nil, "", err
	}
	raw := make([]byte, secretBytes)
	rand.Read(raw) // never fails; see crypto/rand.Read
	secret := base64.RawURLEncoding.EncodeToString(raw)
	salt := make([]byte, saltBytes)
	rand.Read(salt)
	return &Client{
		ID:         newID(),
		Name:       name,
		Kind:       kind,
		SecretHash: hashSecret(salt, secret),
		Salt:       salt,
		Active:     true,
		CreatedAt:  a.now(),
	}, secret, nil
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
// follow the statements the AWS broker generates, plus a random secret: the
// other fields are guessable (and older versions logged the ID with the issue
// time), so without it anyone who read the broker's log could rebuild the
// statement and register an agent.
type statementBody struct {
	ID            string  `json:"id"`
	Active        bool    `json:"active"`
	IssuedAt      float64 `json:"issuedAt"` // Unix seconds, millisecond precision
	BrokerVersion string  `json:"brokerVersion"`
	Secret        string  `json:"secret"` // 32 random bytes, unpadded base64url
}

// StatementLimits bound what a new software statement registers; zero values
// set no limit.
type StatementLimits struct {
	// ExpiresAt is when the statement stops registering agents; zero: never.
	ExpiresAt time.Time
	// MaxUses is how many agents may register with it; 0: no limit.
	MaxUses int
}

// normalizeStatement removes the white space that statement files may add
// (wrapped lines, a final newline).
func normalizeStatement(statement string) string {
	return strings.Join(strings.Fields(statement), "")
}

// StatementHash returns the SHA-256 of a software statement's text (white
// space removed): what stores keep and look statements up by. Statements are
// 256-bit random secrets, so a fast unsalted hash is enough (see hashSecret).
func StatementHash(statement string) []byte {
	h := sha256.Sum256([]byte(normalizeStatement(statement)))
	return h[:]
}

// Fingerprint returns a short name for a value that must not itself be logged
// (a software statement's ID): the first 8 hex digits of its SHA-256. It
// identifies the value among a few without revealing it.
func Fingerprint(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:4])
}

// GenerateSoftwareStatement creates and stores an active software statement
// with the limits lim: base64 (standard encoding) of
// {"id":"<uuid>","active":true,"issuedAt":<unix seconds>,"brokerVersion":"...","secret":"<random>"}.
// Agents that present it may register themselves with RegisterAgent. The
// store keeps only its hash: the returned Statement is the only copy of the
// text.
func (a *Authority) GenerateSoftwareStatement(ctx context.Context, brokerVersion string, lim StatementLimits) (*SoftwareStatement, error) {
	now := a.now()
	switch {
	case lim.MaxUses < 0:
		return nil, fmt.Errorf("generate software statement: maximum uses %d is negative", lim.MaxUses)
	case !lim.ExpiresAt.IsZero() && !lim.ExpiresAt.After(now):
		return nil, fmt.Errorf("generate software statement: expiry %s is not in the future", lim.ExpiresAt.UTC().Format(time.RFC3339))
	}
	ms := now.UnixMilli()
	id := newID()
	raw := make([]byte, secretBytes)
	rand.Read(raw) // never fails; see crypto/rand.Read
	body, err := json.Marshal(statementBody{
		ID:            id,
		Active:        true,
		IssuedAt:      float64(ms) / 1000,
		BrokerVersion: brokerVersion,
		Secret:        base64.RawURLEncoding.EncodeToString(raw),
	})
	if err != nil {
		return nil, fmt.Errorf("generate software statement: %w", err)
	}
	text := base64.StdEncoding.EncodeToString(body)
	s := &SoftwareStatement{
		ID:        id,
		Statement: text,
		Hash:      StatementHash(text),
		IssuedAt:  time.UnixMilli(ms),
		Active:    true,
		MaxUses:   lim.MaxUses,
	}
	if !lim.ExpiresAt.IsZero() {
		s.ExpiresAt = time.UnixMilli(lim.ExpiresAt.UnixMilli())
	}
	if err := a.Store.CreateSoftwareStatement(ctx, s); err != nil {
		return nil, fmt.Errorf("generate software statement: %w", err)
	}
	a.logger().InfoContext(ctx, "software statement generated", "statement_fp", Fingerprint(s.ID),
		"expires_at", s.ExpiresAt, "max_uses", s.MaxUses)
	return s, nil
}

// RegisterAgent registers an agent that presents software statement
// statement: it creates an active KindAgent client named name, bound to the
// statement, and returns its ID and secret. It returns ErrInvalidStatement
// if the statement is unknown, and ErrStatementInactive, ErrStatementExpired
// or ErrStatementUsedUp (which wrap ErrInvalidStatement) if it no longer
// registers agents; a refused registration uses nothing up.
func (a *Authority) RegisterAgent(ctx context.Context, statement, name string) (id, secret string, err error) {
	return a.RegisterAgentServer(ctx, statement, name, "")
}

// RegisterAgentServer is RegisterAgent for an agent that names the server
// ID it will link as (the registration request's server_id). Its client ID
// follows from the statement and the server ID (agentClientID), so that an
// agent that registers again, because the answer to its first registration
// was lost, names the same client: if that client exists, is active, never
// linked, and its statement still registers agents, it gets a new secret
// (the old one stops working) and no statement use is counted; the statement
// may even be used up, since the client counted its use. Otherwise (the
// client linked, was deactivated, or there is none) registration goes on
// as for RegisterAgent, so a server ID whose client linked is claimed no
// more easily than before: the new client cannot link as that server while
// the linked one is active. An empty serverID is RegisterAgent.
func (a *Authority) RegisterAgentServer(ctx context.Context, statement, name, serverID string) (id, secret string, err error) {
	return a.registerAgent(ctx, statement, name, serverID, "")
}

// agentClientID returns the client ID of the agent that statement hash
// registers for server serverID: the SHA-256 of both as a UUID (version 8).
// Anyone who holds the statement can compute it, which grants nothing: an ID
// is not a credential.
func agentClientID(hash []byte, serverID string) string {
	h := sha256.New()
	h.Write([]byte("berth agent client\x00"))
	h.Write(hash) // fixed length: the concatenation is unambiguous
	h.Write([]byte(serverID))
	b := h.Sum(nil)[:16]
	b[6] = b[6]&0x0f | 0x80
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

// registerAgent is RegisterAgentServer for a request from remote (logged
// when not empty).
func (a *Authority) registerAgent(ctx context.Context, statement, name, serverID, remote string) (id, secret string, err error) {
	log := a.logger()
	if remote != "" {
		log = log.With(logattr.Remote, remote)
	}
	if serverID != "" {
		log = log.With(logattr.ServerID, serverID)
	}
	text := normalizeStatement(statement)
	if text == "" || len(text) > maxStatementLen {
		log.InfoContext(ctx, "agent registration refused: no software statement or an oversized one")
		return "", "", ErrInvalidStatement
	}
	if err := checkServerID(serverID); err != nil {
		return "", "", fmt.Errorf("register agent: %w", err)
	}
	c, secret, err := a.newClient(KindAgent, name)
	if err != nil {
		return "", "", fmt.Errorf("register agent: %w", err)
	}
	hash := StatementHash(text)
	if serverID == "" {
		st, err := a.Store.RegisterWithStatement(ctx, hash, c)
		return a.registered(ctx, log, c, secret, st, err)
	}
	c.ID = agentClientID(hash, serverID)
	// Twice at most: a registration for the same server ID at the same
	// time may insert the client between the two calls.
	for try := 0; ; try++ {
		st, err := a.Store.ReissueAgentSecret(ctx, hash, c)
		switch {
		case err == nil:
			log.InfoContext(ctx, "agent client registered again before it ever linked: new secret, the old one no longer works",
				logattr.AgentID, c.ID, "name", c.Name, "statement_fp", Fingerprint(st.ID))
			return c.ID, secret, nil
		case errors.Is(err, ErrNotReissuable):
			// It linked (or is not ours to reset): a client of its own,
			// as before clients were named by server ID.
			c.ID = newID()
		case errors.Is(err, ErrNotFound):
		default:
			return a.registered(ctx, log, c, secret, st, err)
		}
		st, err = a.Store.RegisterWithStatement(ctx, hash, c)
		if errors.Is(err, ErrClientExists) && try == 0 {
			continue
		}
		return a.registered(ctx, log, c, secret, st, err)
	}
}

// registered returns the result of registering client c, whose secret is
// secret, with statement st: err is the store's error.
func (a *Authority) registered(ctx context.Context, log *slog.Logger, c *Client, secret string, st *SoftwareStatement, err error) (id, sec string, _ error) {
	switch {
	case errors.Is(err, ErrNotFound):
		log.InfoContext(ctx, "agent registration refused: unknown software statement")
		return "", "", ErrInvalidStatement
	case errors.Is(err, ErrInvalidStatement):
		args := []any{"reason", refusal(err)}
		if st != nil {
			args = append(args, "statement_fp", Fingerprint(st.ID))
		}
		log.InfoContext(ctx, "agent registration refused", args...)
		return "", "", err
	case err != nil:
		return "", "", fmt.Errorf("register agent: %w", err)
	}
	log.InfoContext(ctx, "agent client registered", logattr.AgentID, c.ID, "name", c.Name,
		"statement_fp", Fingerprint(st.ID), "uses", st.Uses, "max_uses", st.MaxUses)
	return c.ID, secret, nil
}

// errInvalidServerID means a registration's server ID is too long or has
// control characters.
var errInvalidServerID = errors.New("invalid server id")

// checkServerID checks a server ID as the agent protocol does
// (agentproto.ValidID): at most 256 bytes of UTF-8 without control
// characters; empty means none.
func checkServerID(id string) error {
	if len(id) > maxServerIDLen || !utf8.ValidString(id) || strings.ContainsFunc(id, unicode.IsControl) {
		return errInvalidServerID
	}
	return nil
}

// refusal names a statement refusal for the log.
func refusal(err error) string {
	switch {
	case errors.Is(err, ErrStatementInactive):
		return "statement deactivated"
	case errors.Is(err, ErrStatementExpired):
		return "statement expired"
	case errors.Is(err, ErrStatementUsedUp):
		return "statement used up"
	}
	return "invalid statement"
}

// ErrAmbiguousStatement means a fingerprint given to SetSoftwareStatementActive
// names more than one statement.
var ErrAmbiguousStatement = errors.New("more than one software statement has this fingerprint; give its ID")

// SetSoftwareStatementActive activates or deactivates the statement that key
// names: its text, its ID, or its Fingerprint (of the ID, as the log shows
// it). It returns the statement, ErrNotFound if none matches, or
// ErrAmbiguousStatement.
func (a *Authority) SetSoftwareStatementActive(ctx context.Context, key string, active bool) (*SoftwareStatement, error) {
	key = strings.TrimSpace(key)
	all, err := a.Store.SoftwareStatements(ctx)
	if err != nil {
		return nil, fmt.Errorf("set software statement active: %w", err)
	}
	hash := StatementHash(key)
	var found []*SoftwareStatement
	for _, st := range all {
		if st.ID == key || subtle.ConstantTimeCompare(st.Hash, hash) == 1 {
			found = []*SoftwareStatement{st}
			break
		}
		if strings.EqualFold(Fingerprint(st.ID), key) {
			found = append(found, st)
		}
	}
	switch {
	case len(found) == 0:
		return nil, ErrNotFound
	case len(found) > 1:
		return nil, ErrAmbiguousStatement
	}
	st := found[0]
	if err := a.Store.SetSoftwareStatementActive(ctx, st.ID, active); err != nil {
		return nil, fmt.Errorf("set software statement active: %w", err)
	}
	st.Active = active
	a.logger().InfoContext(ctx, "software statement changed", "statement_fp", Fingerprint(st.ID), "active", active)
	return st, nil
}

// WarnLegacyStatements logs a warning for each active statement generated
// before statements carried a random secret (older versions logged enough to
// rebuild them). Brokers call it at start-up.
func (a *Authority) WarnLegacyStatements(ctx context.Context) error {
	all, err := a.Store.SoftwareStatements(ctx)
	if err != nil {
		return fmt.Errorf("list software statements: %w", err)
	}
	for _, st := range all {
		if st.Legacy && st.Active {
			a.logger().WarnContext(ctx, "an active software statement predates statement secrets: anyone who read an older version's log can rebuild it; generate a new one and deactivate this one",
				"statement_fp", Fingerprint(st.ID), "issued_at", st.IssuedAt)
		}
	}
	return nil
}

// Prune deletes the agent clients that registered more than
// UnlinkedAgentClientTTL ago and never linked as a server: registrations that
// nobody used (a flood of them, or agents that never came up; an agent that
// comes up later registers again). It does nothing when UnlinkedAgentClientTTL
// is zero. The broker that holds the maintenance lease calls it periodically.
func (a *Authority) Prune(ctx context.Context) error {
	if a.UnlinkedAgentClientTTL <= 0 {
		return nil
	}
	ids, err := a.Store.DeleteUnlinkedAgentClients(ctx, a.now().Add(-a.UnlinkedAgentClientTTL))
	if err != nil {
		return fmt.Errorf("prune agent clients: %w", err)
	}
	if len(ids) > 0 {
		shown := ids[:min(len(ids), 20)]
		a.logger().InfoContext(ctx, "deleted agent clients that never linked", "count", len(ids),
			"unlinked_for", a.UnlinkedAgentClientTTL.String(), "client_ids", strings.Join(shown, ","))
	}
	return nil
}

// idAttr is the log attribute of a client of kind: an agent client's ID is
// logged as agent_id, as the hub and the broker log it, an API client's as
// client_id.
func idAttr(kind string) string {
	if kind == KindAgent {
		return logattr.AgentID
	}
	return logattr.ClientID
}

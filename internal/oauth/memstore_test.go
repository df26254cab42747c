package oauth_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/oauth"
	"github.com/golang-jwt/jwt/v5"
)

// memStore is an in-memory oauth.Store for these tests; the SQLite store has
// its own contract tests.
type memStore struct {
	mu         sync.Mutex
	clients    map[string]*oauth.Client
	keys       []*oauth.SigningKey // oldest first
	statements []*oauth.SoftwareStatement
	keyLoads   int // calls to SigningKeys
	failKeys   error
	servers    []*oauth.AuthServer // oldest first
	failAuth   error               // returned by AuthServers when set
}

var _ oauth.Store = (*memStore)(nil)

func newMemStore() *memStore {
	return &memStore{clients: map[string]*oauth.Client{}}
}

func (s *memStore) CreateClient(_ context.Context, c *oauth.Client) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	cp := *c
	s.clients[c.ID] = &cp
	return nil
}

func (s *memStore) GetClient(_ context.Context, id string) (*oauth.Client, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, ok := s.clients[id]
	if !ok {
		return nil, oauth.ErrNotFound
	}
	cp := *c
	return &cp, nil
}

func (s *memStore) ListClients(_ context.Context, kind string) ([]*oauth.Client, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []*oauth.Client
	for _, c := range s.clients {
		if c.Kind == kind {
			cp := *c
			out = append(out, &cp)
		}
	}
	slices.SortFunc(out, func(a, b *oauth.Client) int { return a.CreatedAt.Compare(b.CreatedAt) })
	return out, nil
}

func (s *memStore) SetClientActive(_ context.Context, id string, active bool) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, ok := s.clients[id]
	if !ok {
		return oauth.ErrNotFound
	}
	c.Active = active
	return nil
}

func (s *memStore) AddSigningKey(_ context.Context, k *oauth.SigningKey) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, old := range s.keys {
		if old.RetiredAt.IsZero() {
			old.RetiredAt = k.CreatedAt
		}
	}
	cp := *k
	s.keys = append(s.keys, &cp)
	return nil
}

func (s *memStore) SigningKeys(_ context.Context) ([]*oauth.SigningKey, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.keyLoads++
	if s.failKeys != nil {
		return nil, s.failKeys
	}
	out := make([]*oauth.SigningKey, 0, len(s.keys))
	for i := len(s.keys) - 1; i >= 0; i-- {
		cp := *s.keys[i]
		out = append(out, &cp)
	}
	return out, nil
}

func (s *memStore) DeleteSigningKeysRetiredBefore(_ context.Context, t time.Time) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.keys = slices.DeleteFunc(s.keys, func(k *oauth.SigningKey) bool {
		return !k.RetiredAt.IsZero() && k.RetiredAt.Before(t)
	})
	return nil
}

func (s *memStore) CreateSoftwareStatement(_ context.Context, st *oauth.SoftwareStatement) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	cp := *st
	cp.Statement = "" // stores keep the hash only
	s.statements = append(s.statements, &cp)
	return nil
}

func (s *memStore) SoftwareStatements(_ context.Context) ([]*oauth.SoftwareStatement, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]*oauth.SoftwareStatement, 0, len(s.statements))
	for _, st := range s.statements {
		cp := *st
		out = append(out, &cp)
	}
	return out, nil
}

func (s *memStore) SetSoftwareStatementActive(_ context.Context, id string, active bool) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, st := range s.statements {
		if st.ID == id {
			st.Active = active
			return nil
		}
	}
	return oauth.ErrNotFound
}

func (s *memStore) RegisterWithStatement(_ context.Context, hash []byte, c *oauth.Client) (*oauth.SoftwareStatement, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, st := range s.statements {
		if !bytes.Equal(st.Hash, hash) {
			continue
		}
		cp := *st
		switch {
		case !st.Active:
			return &cp, oauth.ErrStatementInactive
		case !st.ExpiresAt.IsZero() && !c.CreatedAt.Before(st.ExpiresAt):
			return &cp, oauth.ErrStatementExpired
		case st.MaxUses > 0 && st.Uses >= st.MaxUses:
			return &cp, oauth.ErrStatementUsedUp
		}
		if _, ok := s.clients[c.ID]; ok {
			return nil, oauth.ErrClientExists
		}
		st.Uses++
		c.Statement = st.ID
		cc := *c
		s.clients[c.ID] = &cc
		cp = *st
		return &cp, nil
	}
	return nil, oauth.ErrNotFound
}

func (s *memStore) ReissueAgentSecret(_ context.Context, hash []byte, c *oauth.Client) (*oauth.SoftwareStatement, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	stored, ok := s.clients[c.ID]
	if !ok {
		return nil, oauth.ErrNotFound
	}
	if stored.Kind != oauth.KindAgent || !stored.Active || !stored.LinkedAt.IsZero() {
		return nil, oauth.ErrNotReissuable
	}
	i := slices.IndexFunc(s.statements, func(st *oauth.SoftwareStatement) bool { return st.ID == stored.Statement })
	if i < 0 || !bytes.Equal(s.statements[i].Hash, hash) {
		return nil, oauth.ErrNotReissuable
	}
	st := *s.statements[i]
	switch {
	case !st.Active:
		return &st, oauth.ErrStatementInactive
	case !st.ExpiresAt.IsZero() && !c.CreatedAt.Before(st.ExpiresAt):
		return &st, oauth.ErrStatementExpired
	}
	stored.SecretHash, stored.Salt, stored.CreatedAt = c.SecretHash, c.Salt, c.CreatedAt
	*c = *stored
	return &st, nil
}

func (s *memStore) DeleteUnlinkedAgentClients(_ context.Context, t time.Time) ([]string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var ids []string
	for id, c := range s.clients {
		if c.Kind == oauth.KindAgent && c.LinkedAt.IsZero() && c.CreatedAt.Before(t) {
			ids = append(ids, id)
			delete(s.clients, id)
		}
	}
	return ids, nil
}

// keyIDs returns the IDs of the stored keys, oldest first.
func (s *memStore) PutAuthServer(_ context.Context, a *oauth.AuthServer) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, x := range s.servers {
		if x.URL == a.URL {
			x.Algorithm, x.Issuer, x.Audience = a.Algorithm, a.Issuer, a.Audience
			a.CreatedAt = x.CreatedAt
			return nil
		}
	}
	if a.CreatedAt.IsZero() {
		a.CreatedAt = time.Now()
	}
	cp := *a
	s.servers = append(s.servers, &cp)
	return nil
}

func (s *memStore) AuthServers(context.Context) ([]*oauth.AuthServer, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.failAuth != nil {
		return nil, s.failAuth
	}
	out := make([]*oauth.AuthServer, len(s.servers))
	for i, x := range s.servers {
		cp := *x
		out[i] = &cp
	}
	return out, nil
}

func (s *memStore) DeleteAuthServer(_ context.Context, url string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, x := range s.servers {
		if x.URL == url {
			s.servers = slices.Delete(s.servers, i, i+1)
			return nil
		}
	}
	return oauth.ErrNotFound
}

func (s *memStore) keyIDs() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var ids []string
	for _, k := range s.keys {
		ids = append(ids, k.ID)
	}
	return ids
}

// privateKey returns the stored private key with ID kid.
func (s *memStore) privateKey(tb testing.TB, kid string) *ecdsa.PrivateKey {
	tb.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, k := range s.keys {
		if k.ID == kid {
			b, _ := pem.Decode(k.PrivatePEM)
			priv, err := x509.ParsePKCS8PrivateKey(b.Bytes)
			if err != nil {
				tb.Fatal(err)
			}
			return priv.(*ecdsa.PrivateKey)
		}
	}
	tb.Fatalf("no key %s", kid)
	return nil
}

// fakeClock is a settable clock.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *fakeClock {
	return &fakeClock{t: time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// syncBuffer is a bytes.Buffer safe for concurrent writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// env is an Authority over a memStore with a fake clock and a captured log.
type env struct {
	store *memStore
	clock *fakeClock
	log   *syncBuffer
	auth  *oauth.Authority
}

// MustEnv returns an Authority with a signing key.
func MustEnv(tb testing.TB) *env {
	tb.Helper()
	e := &env{store: newMemStore(), clock: newClock(), log: &syncBuffer{}}
	e.auth = e.newAuthority("https://broker.test")
	if err := e.auth.EnsureKey(context.Background()); err != nil {
		tb.Fatalf("EnsureKey: %v", err)
	}
	return e
}

// newAuthority returns another Authority (another broker) over the same store and clock.
func (e *env) newAuthority(issuer string) *oauth.Authority {
	a := oauth.New(e.store, issuer)
	a.Now = e.clock.Now
	a.Logger = slog.New(slog.NewTextHandler(e.log, &slog.HandlerOptions{Level: slog.LevelDebug}))
	return a
}

// MustClient registers a client of kind and returns it with its secret.
func (e *env) MustClient(tb testing.TB, kind string) (*oauth.Client, string) {
	tb.Helper()
	ctx := context.Background()
	id, secret, err := e.auth.RegisterClient(ctx, kind, "test "+kind)
	if err != nil {
		tb.Fatalf("RegisterClient: %v", err)
	}
	c, err := e.auth.Authenticate(ctx, kind, id, secret)
	if err != nil {
		tb.Fatalf("Authenticate: %v", err)
	}
	return c, secret
}

// MustAccessToken returns an access token for a new API client.
func (e *env) MustAccessToken(tb testing.TB) (string, *oauth.Client) {
	tb.Helper()
	c, _ := e.MustClient(tb, oauth.KindAPI)
	tok, _, err := e.auth.IssueAccessToken(context.Background(), c)
	if err != nil {
		tb.Fatalf("IssueAccessToken: %v", err)
	}
	return tok, c
}

// parts decodes a token's header and claims without verifying it.
func parts(tb testing.TB, token string) (header, claims map[string]any) {
	tb.Helper()
	segs := strings.Split(token, ".")
	if len(segs) != 3 {
		tb.Fatalf("token has %d segments", len(segs))
	}
	for i, dst := range []*map[string]any{&header, &claims} {
		b, err := base64.RawURLEncoding.DecodeString(segs[i])
		if err != nil {
			tb.Fatal(err)
		}
		if err := json.Unmarshal(b, dst); err != nil {
			tb.Fatal(err)
		}
	}
	return header, claims
}

// sign builds a token with header and claims signed by method with key.
func sign(tb testing.TB, method jwt.SigningMethod, key any, header, claims map[string]any) string {
	tb.Helper()
	t := jwt.NewWithClaims(method, jwt.MapClaims(claims))
	for k, v := range header {
		t.Header[k] = v
	}
	s, err := t.SignedString(key)
	if err != nil {
		tb.Fatalf("sign: %v", err)
	}
	return s
}

// resign returns token with its header and claims modified by edit and signed
// again with the private key named by its kid.
func (e *env) resign(tb testing.TB, token string, edit func(header, claims map[string]any)) string {
	tb.Helper()
	h, c := parts(tb, token)
	key := e.store.privateKey(tb, h["kid"].(string))
	edit(h, c)
	return sign(tb, jwt.SigningMethodES256, key, h, c)
}

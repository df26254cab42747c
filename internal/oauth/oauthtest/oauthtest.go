// Package oauthtest is the contract test suite of oauth.Store. Every
// implementation (internal/sqlite, internal/postgres) runs RunStore from its own
// tests, with an open func that returns an empty store and closes it with
// t.Cleanup. Times the suite stores have millisecond precision and are in UTC.
package oauthtest

import (
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/berth-dev/berth/internal/oauth"
)

// RunStore runs the oauth.Store contract tests as subtests of t. open is called
// once per subtest, with that subtest's t, and must return an empty store that
// stays usable until the subtest ends.
func RunStore(t *testing.T, open func(t *testing.T) oauth.Store) {
	tests := []struct {
		name string
		fn   func(t *testing.T, s oauth.Store)
	}{
		{"CreateClient", testCreateClient},
		{"CreateClient_Duplicate", testCreateClientDuplicate},
		{"GetClient_NotFound", testGetClientNotFound},
		{"ListClients", testListClients},
		{"SetClientActive", testSetClientActive},
		{"AddSigningKey", testAddSigningKey},
		{"DeleteSigningKeysRetiredBefore", testDeleteSigningKeys},
		{"SoftwareStatements", testSoftwareStatements},
		{"SetSoftwareStatementActive", testSetSoftwareStatementActive},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { tt.fn(t, open(t)) })
	}
}

// T0 is the base time of the suite's data: UTC, millisecond precision.
var T0 = time.Date(2025, 6, 1, 12, 0, 0, 250_000_000, time.UTC)

func at(d time.Duration) time.Time { return T0.Add(d) }

var diffOpts = []cmp.Option{cmpopts.EquateEmpty()}

// NewClient returns a client with every field set.
func NewClient(id, kind string, created time.Time) *oauth.Client {
	return &oauth.Client{
		ID:         id,
		Name:       "name of " + id,
		Kind:       kind,
		SecretHash: []byte{0, 1, 2, 0xfe, 0xff, byte(len(id))},
		Salt:       []byte("salt-" + id),
		Active:     true,
		CreatedAt:  created,
		Statement:  "stmt-" + id,
	}
}

// MustCreateClients creates clients and fails tb on error.
func MustCreateClients(tb testing.TB, s oauth.Store, cs ...*oauth.Client) {
	tb.Helper()
	for _, c := range cs {
		if err := s.CreateClient(tb.Context(), c); err != nil {
			tb.Fatalf("CreateClient(%q): %v", c.ID, err)
		}
	}
}

// MustGetClient returns the client and fails tb on error.
func MustGetClient(tb testing.TB, s oauth.Store, id string) *oauth.Client {
	tb.Helper()
	c, err := s.GetClient(tb.Context(), id)
	if err != nil {
		tb.Fatalf("GetClient(%q): %v", id, err)
	}
	return c
}

// MustSigningKeys lists the signing keys and fails tb on error.
func MustSigningKeys(tb testing.TB, s oauth.Store) []*oauth.SigningKey {
	tb.Helper()
	ks, err := s.SigningKeys(tb.Context())
	if err != nil {
		tb.Fatalf("SigningKeys: %v", err)
	}
	return ks
}

// MustStatements lists the software statements and fails tb on error.
func MustStatements(tb testing.TB, s oauth.Store) []*oauth.SoftwareStatement {
	tb.Helper()
	sts, err := s.SoftwareStatements(tb.Context())
	if err != nil {
		tb.Fatalf("SoftwareStatements: %v", err)
	}
	return sts
}

// NewKey returns an active signing key created at created.
func NewKey(id string, created time.Time) *oauth.SigningKey {
	return &oauth.SigningKey{
		ID:         id,
		Algorithm:  "ES256",
		PrivatePEM: []byte("-----BEGIN PRIVATE KEY-----\n" + id + "\n-----END PRIVATE KEY-----\n"),
		CreatedAt:  created,
	}
}

func checkUTC(t *testing.T, what string, ts ...time.Time) {
	t.Helper()
	for _, tm := range ts {
		if !tm.IsZero() && tm.Location() != time.UTC {
			t.Errorf("%s: time in %v, want UTC", what, tm.Location())
		}
	}
}

func testCreateClient(t *testing.T, s oauth.Store) {
	api := NewClient("api-1", oauth.KindAPI, at(0))
	api.Statement = ""
	agent := NewClient("agent-1", oauth.KindAgent, at(time.Second))
	agent.Active = false
	MustCreateClients(t, s, api, agent)
	for _, want := range []*oauth.Client{api, agent} {
		got := MustGetClient(t, s, want.ID)
		if d := cmp.Diff(want, got, diffOpts...); d != "" {
			t.Errorf("GetClient(%s) (-want +got):\n%s", want.ID, d)
		}
		checkUTC(t, "CreatedAt", got.CreatedAt)
	}
}

func testCreateClientDuplicate(t *testing.T, s oauth.Store) {
	MustCreateClients(t, s, NewClient("c", oauth.KindAPI, at(0)))
	want := MustGetClient(t, s, "c")
	dup := NewClient("c", oauth.KindAgent, at(time.Hour))
	dup.Name = "impostor"
	if err := s.CreateClient(t.Context(), dup); err == nil {
		t.Fatal("CreateClient with an existing ID succeeded")
	}
	if d := cmp.Diff(want, MustGetClient(t, s, "c"), diffOpts...); d != "" {
		t.Errorf("rejected CreateClient changed the client (-want +got):\n%s", d)
	}
}

func testGetClientNotFound(t *testing.T, s oauth.Store) {
	MustCreateClients(t, s, NewClient("c", oauth.KindAPI, at(0)))
	if _, err := s.GetClient(t.Context(), "missing"); !errors.Is(err, oauth.ErrNotFound) {
		t.Fatalf("GetClient(unknown): got %v, want ErrNotFound", err)
	}
}

func testListClients(t *testing.T, s oauth.Store) {
	ctx := t.Context()
	got, err := s.ListClients(ctx, oauth.KindAPI)
	if err != nil || len(got) != 0 {
		t.Fatalf("ListClients on an empty store = %v, %v", got, err)
	}
	// Created out of age order: the list is oldest first.
	MustCreateClients(t, s,
		NewClient("api-2", oauth.KindAPI, at(2*time.Hour)),
		NewClient("agent-1", oauth.KindAgent, at(0)),
		NewClient("api-1", oauth.KindAPI, at(time.Hour)),
		NewClient("api-3", oauth.KindAPI, at(3*time.Hour)))
	for kind, want := range map[string][]string{
		oauth.KindAPI:   {"api-1", "api-2", "api-3"},
		oauth.KindAgent: {"agent-1"},
		"other":         nil,
	} {
		cs, err := s.ListClients(ctx, kind)
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, c := range cs {
			got = append(got, c.ID)
		}
		if d := cmp.Diff(want, got, diffOpts...); d != "" {
			t.Errorf("ListClients(%q) (-want +got):\n%s", kind, d)
		}
		for _, c := range cs {
			if d := cmp.Diff(MustGetClient(t, s, c.ID), c, diffOpts...); d != "" {
				t.Errorf("ListClients entry %s differs from GetClient (-want +got):\n%s", c.ID, d)
			}
		}
	}
}

func testSetClientActive(t *testing.T, s oauth.Store) {
	ctx := t.Context()
	MustCreateClients(t, s, NewClient("a", oauth.KindAPI, at(0)), NewClient("b", oauth.KindAPI, at(0)))
	if err := s.SetClientActive(ctx, "a", false); err != nil {
		t.Fatal(err)
	}
	if MustGetClient(t, s, "a").Active {
		t.Error("a active after SetClientActive(false)")
	}
	if !MustGetClient(t, s, "b").Active {
		t.Error("SetClientActive(a) deactivated b")
	}
	if err := s.SetClientActive(ctx, "a", true); err != nil {
		t.Fatal(err)
	}
	if !MustGetClient(t, s, "a").Active {
		t.Error("a inactive after SetClientActive(true)")
	}
	if err := s.SetClientActive(ctx, "missing", true); !errors.Is(err, oauth.ErrNotFound) {
		t.Errorf("SetClientActive(unknown): got %v, want ErrNotFound", err)
	}
}

func testAddSigningKey(t *testing.T, s oauth.Store) {
	ctx := t.Context()
	if ks := MustSigningKeys(t, s); len(ks) != 0 {
		t.Fatalf("SigningKeys on an empty store = %v", ks)
	}
	k1 := NewKey("k1", at(0))
	if err := s.AddSigningKey(ctx, k1); err != nil {
		t.Fatal(err)
	}
	ks := MustSigningKeys(t, s)
	if d := cmp.Diff([]*oauth.SigningKey{k1}, ks, diffOpts...); d != "" {
		t.Fatalf("SigningKeys (-want +got):\n%s", d)
	}

	k2 := NewKey("k2", at(time.Hour))
	if err := s.AddSigningKey(ctx, k2); err != nil {
		t.Fatal(err)
	}
	ks = MustSigningKeys(t, s)
	if len(ks) != 2 || ks[0].ID != "k2" || ks[1].ID != "k1" {
		t.Fatalf("SigningKeys = %v, want k2, k1 (newest first)", ks)
	}
	if !ks[0].RetiredAt.IsZero() {
		t.Errorf("new key retired at %v", ks[0].RetiredAt)
	}
	r1 := ks[1].RetiredAt
	if r1.IsZero() || r1.Before(k1.CreatedAt) {
		t.Errorf("older key RetiredAt = %v, want set and not before its creation %v", r1, k1.CreatedAt)
	}
	checkUTC(t, "signing key", ks[0].CreatedAt, ks[1].CreatedAt, r1)
	want := *k1
	want.RetiredAt = r1
	if d := cmp.Diff(&want, ks[1], diffOpts...); d != "" {
		t.Errorf("retired key (-want +got):\n%s", d)
	}

	k3 := NewKey("k3", at(2*time.Hour))
	if err := s.AddSigningKey(ctx, k3); err != nil {
		t.Fatal(err)
	}
	ks = MustSigningKeys(t, s)
	if len(ks) != 3 || ks[0].ID != "k3" || ks[1].ID != "k2" || ks[2].ID != "k1" {
		t.Fatalf("SigningKeys = %v, want k3, k2, k1", ks)
	}
	if !ks[0].RetiredAt.IsZero() || ks[1].RetiredAt.IsZero() {
		t.Errorf("after the third key: k3 retired %v, k2 retired %v; want only k2 retired", ks[0].RetiredAt, ks[1].RetiredAt)
	}
	if !ks[2].RetiredAt.Equal(r1) {
		t.Errorf("k1 RetiredAt changed from %v to %v", r1, ks[2].RetiredAt)
	}

	if err := s.AddSigningKey(ctx, NewKey("k3", at(3*time.Hour))); err == nil {
		t.Error("AddSigningKey with an existing ID succeeded")
	}
	if ks := MustSigningKeys(t, s); len(ks) != 3 || !ks[0].RetiredAt.IsZero() {
		t.Errorf("rejected AddSigningKey changed the keys: %v", ks)
	}
}

func testDeleteSigningKeys(t *testing.T, s oauth.Store) {
	ctx := t.Context()
	for i, id := range []string{"k1", "k2", "k3"} {
		if err := s.AddSigningKey(ctx, NewKey(id, at(time.Duration(i)*time.Hour))); err != nil {
			t.Fatal(err)
		}
	}
	ks := MustSigningKeys(t, s) // k3 (active), k2, k1
	r1, r2 := ks[2].RetiredAt, ks[1].RetiredAt
	if r2.Before(r1) {
		t.Fatalf("k2 retired at %v before k1 at %v", r2, r1)
	}
	keys := func() []string {
		var out []string
		for _, k := range MustSigningKeys(t, s) {
			out = append(out, k.ID)
		}
		return out
	}

	if err := s.DeleteSigningKeysRetiredBefore(ctx, r1); err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff([]string{"k3", "k2", "k1"}, keys()); d != "" {
		t.Errorf("after deleting keys retired before the first retirement (-want +got):\n%s", d)
	}
	if r2.After(r1) {
		if err := s.DeleteSigningKeysRetiredBefore(ctx, r1.Add(time.Millisecond)); err != nil {
			t.Fatal(err)
		}
		if d := cmp.Diff([]string{"k3", "k2"}, keys()); d != "" {
			t.Errorf("after deleting keys retired before %v (-want +got):\n%s", r1.Add(time.Millisecond), d)
		}
	}
	if err := s.DeleteSigningKeysRetiredBefore(ctx, at(1000*time.Hour)); err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff([]string{"k3"}, keys()); d != "" {
		t.Errorf("the active key must survive (-want +got):\n%s", d)
	}
}

func testSoftwareStatements(t *testing.T, s oauth.Store) {
	ctx := t.Context()
	if sts := MustStatements(t, s); len(sts) != 0 {
		t.Fatalf("SoftwareStatements on an empty store = %v", sts)
	}
	newer := &oauth.SoftwareStatement{ID: "st-2", Statement: "ZXlKaGJHY2lPaUpGVXpJMU5pSjku", IssuedAt: at(time.Hour), Active: true}
	older := &oauth.SoftwareStatement{ID: "st-1", Statement: "b3RoZXIgc3RhdGVtZW50", IssuedAt: at(0), Active: false}
	for _, st := range []*oauth.SoftwareStatement{newer, older} {
		if err := s.CreateSoftwareStatement(ctx, st); err != nil {
			t.Fatal(err)
		}
	}
	got := MustStatements(t, s)
	if d := cmp.Diff([]*oauth.SoftwareStatement{older, newer}, got, diffOpts...); d != "" {
		t.Errorf("SoftwareStatements, oldest first (-want +got):\n%s", d)
	}
	for _, st := range got {
		checkUTC(t, "IssuedAt", st.IssuedAt)
	}
	dup := &oauth.SoftwareStatement{ID: "st-1", Statement: "eA", IssuedAt: at(2 * time.Hour)}
	if err := s.CreateSoftwareStatement(ctx, dup); err == nil {
		t.Error("CreateSoftwareStatement with an existing ID succeeded")
	}
	if n := len(MustStatements(t, s)); n != 2 {
		t.Errorf("%d statements after a rejected create, want 2", n)
	}
}

func testSetSoftwareStatementActive(t *testing.T, s oauth.Store) {
	ctx := t.Context()
	a := &oauth.SoftwareStatement{ID: "st-a", Statement: "c3RhdGVtZW50LWE", IssuedAt: at(0), Active: true}
	b := &oauth.SoftwareStatement{ID: "st-b", Statement: "c3RhdGVtZW50LWI", IssuedAt: at(time.Second), Active: true}
	for _, st := range []*oauth.SoftwareStatement{a, b} {
		if err := s.CreateSoftwareStatement(ctx, st); err != nil {
			t.Fatal(err)
		}
	}
	active := func() map[string]bool {
		out := map[string]bool{}
		for _, st := range MustStatements(t, s) {
			out[st.ID] = st.Active
		}
		return out
	}
	steps := []struct {
		key    string
		active bool
		want   map[string]bool
	}{
		{"st-a", false, map[string]bool{"st-a": false, "st-b": true}},       // by ID
		{b.Statement, false, map[string]bool{"st-a": false, "st-b": false}}, // by text
		{a.Statement, true, map[string]bool{"st-a": true, "st-b": false}},
		{"st-b", true, map[string]bool{"st-a": true, "st-b": true}},
	}
	for _, st := range steps {
		if err := s.SetSoftwareStatementActive(ctx, st.key, st.active); err != nil {
			t.Fatalf("SetSoftwareStatementActive(%q, %v): %v", st.key, st.active, err)
		}
		if d := cmp.Diff(st.want, active()); d != "" {
			t.Errorf("after SetSoftwareStatementActive(%q, %v) (-want +got):\n%s", st.key, st.active, d)
		}
	}
	if err := s.SetSoftwareStatementActive(ctx, "missing", false); !errors.Is(err, oauth.ErrNotFound) {
		t.Errorf("SetSoftwareStatementActive(unknown): got %v, want ErrNotFound", err)
	}
}

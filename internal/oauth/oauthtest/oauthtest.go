// Package oauthtest is the contract test suite of oauth.Store. Every
// implementation (internal/sqlite, internal/postgres) runs RunStore from its own
// tests, with an open func that returns an empty store and closes it with
// t.Cleanup. Times the suite stores have millisecond precision and are in UTC.
package oauthtest

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
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
		{"DeleteUnlinkedAgentClients", testDeleteUnlinkedAgentClients},
		{"SoftwareStatements", testSoftwareStatements},
		{"SetSoftwareStatementActive", testSetSoftwareStatementActive},
		{"RegisterWithStatement", testRegisterWithStatement},
		{"ReissueAgentSecret", testReissueAgentSecret},
		{"RegisterWithStatement_Concurrent", func(t *testing.T, s oauth.Store) {
			MustRegisterConcurrently(t, []oauth.Store{s}, 24, 5)
		}},
		{"AuthServers", testAuthServers},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// Each case has a store of its own (a file, a schema): they run
			// at once, which matters for PostgreSQL, where opening one
			// applies every migration.
			t.Parallel()
			tt.fn(t, open(t))
		})
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
	linked := NewClient("agent-2", oauth.KindAgent, at(time.Second))
	linked.LinkedAt = at(time.Minute)
	MustCreateClients(t, s, api, agent, linked)
	for _, want := range []*oauth.Client{api, agent, linked} {
		got := MustGetClient(t, s, want.ID)
		if d := cmp.Diff(want, got, diffOpts...); d != "" {
			t.Errorf("GetClient(%s) (-want +got):\n%s", want.ID, d)
		}
		checkUTC(t, "CreatedAt", got.CreatedAt, got.LinkedAt)
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

// NewStatement returns an active statement whose hash is that of text, with
// no limits.
func NewStatement(id, text string, issued time.Time) *oauth.SoftwareStatement {
	return &oauth.SoftwareStatement{ID: id, Hash: oauth.StatementHash(text), IssuedAt: issued, Active: true}
}

// MustCreateStatements creates statements and fails tb on error.
func MustCreateStatements(tb testing.TB, s oauth.Store, sts ...*oauth.SoftwareStatement) {
	tb.Helper()
	for _, st := range sts {
		if err := s.CreateSoftwareStatement(tb.Context(), st); err != nil {
			tb.Fatalf("CreateSoftwareStatement(%q): %v", st.ID, err)
		}
	}
}

func testDeleteUnlinkedAgentClients(t *testing.T, s oauth.Store) {
	ctx := t.Context()
	unlinkedOld := NewClient("agent-old", oauth.KindAgent, at(0))
	unlinkedOff := NewClient("agent-off", oauth.KindAgent, at(0))
	unlinkedOff.Active = false
	linkedOld := NewClient("agent-linked", oauth.KindAgent, at(0))
	linkedOld.LinkedAt = at(time.Second)
	unlinkedNew := NewClient("agent-new", oauth.KindAgent, at(time.Hour))
	apiOld := NewClient("api-old", oauth.KindAPI, at(0))
	MustCreateClients(t, s, unlinkedOld, unlinkedOff, linkedOld, unlinkedNew, apiOld)

	ids, err := s.DeleteUnlinkedAgentClients(ctx, at(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(ids)
	if d := cmp.Diff([]string{"agent-off", "agent-old"}, ids); d != "" {
		t.Errorf("deleted (-want +got):\n%s", d)
	}
	for _, id := range []string{"agent-old", "agent-off"} {
		if _, err := s.GetClient(ctx, id); !errors.Is(err, oauth.ErrNotFound) {
			t.Errorf("GetClient(%s) after the delete: %v, want ErrNotFound", id, err)
		}
	}
	for _, id := range []string{"agent-linked", "agent-new", "api-old"} {
		MustGetClient(t, s, id)
	}
	if ids, err := s.DeleteUnlinkedAgentClients(ctx, at(time.Hour)); err != nil || len(ids) != 0 {
		t.Errorf("second delete: %v, %v; want none", ids, err)
	}
}

func testSoftwareStatements(t *testing.T, s oauth.Store) {
	ctx := t.Context()
	if sts := MustStatements(t, s); len(sts) != 0 {
		t.Fatalf("SoftwareStatements on an empty store = %v", sts)
	}
	newer := NewStatement("st-2", "ZXlKaGJHY2lPaUpGVXpJMU5pSjku", at(time.Hour))
	newer.ExpiresAt, newer.MaxUses, newer.Uses = at(48*time.Hour), 10, 3
	older := NewStatement("st-1", "b3RoZXIgc3RhdGVtZW50", at(0))
	older.Active, older.Legacy = false, true
	older.Statement = "b3RoZXIgc3RhdGVtZW50" // the text is not kept
	MustCreateStatements(t, s, newer, older)
	got := MustStatements(t, s)
	wantOlder := *older
	wantOlder.Statement = ""
	if d := cmp.Diff([]*oauth.SoftwareStatement{&wantOlder, newer}, got, diffOpts...); d != "" {
		t.Errorf("SoftwareStatements, oldest first, without text (-want +got):\n%s", d)
	}
	for _, st := range got {
		checkUTC(t, "IssuedAt", st.IssuedAt, st.ExpiresAt)
	}
	for name, dup := range map[string]*oauth.SoftwareStatement{
		"ID":   NewStatement("st-1", "eA", at(2*time.Hour)),
		"hash": NewStatement("st-3", "b3RoZXIgc3RhdGVtZW50", at(2*time.Hour)),
		"none": {ID: "st-4", IssuedAt: at(2 * time.Hour)},
	} {
		if err := s.CreateSoftwareStatement(ctx, dup); err == nil {
			t.Errorf("CreateSoftwareStatement with an existing %s succeeded", name)
		}
	}
	if n := len(MustStatements(t, s)); n != 2 {
		t.Errorf("%d statements after rejected creates, want 2", n)
	}
}

func testSetSoftwareStatementActive(t *testing.T, s oauth.Store) {
	ctx := t.Context()
	a := NewStatement("st-a", "c3RhdGVtZW50LWE", at(0))
	b := NewStatement("st-b", "c3RhdGVtZW50LWI", at(time.Second))
	MustCreateStatements(t, s, a, b)
	active := func() map[string]bool {
		out := map[string]bool{}
		for _, st := range MustStatements(t, s) {
			out[st.ID] = st.Active
		}
		return out
	}
	steps := []struct {
		id     string
		active bool
		want   map[string]bool
	}{
		{"st-a", false, map[string]bool{"st-a": false, "st-b": true}},
		{"st-b", false, map[string]bool{"st-a": false, "st-b": false}},
		{"st-a", true, map[string]bool{"st-a": true, "st-b": false}},
		{"st-b", true, map[string]bool{"st-a": true, "st-b": true}},
	}
	for _, st := range steps {
		if err := s.SetSoftwareStatementActive(ctx, st.id, st.active); err != nil {
			t.Fatalf("SetSoftwareStatementActive(%q, %v): %v", st.id, st.active, err)
		}
		if d := cmp.Diff(st.want, active()); d != "" {
			t.Errorf("after SetSoftwareStatementActive(%q, %v) (-want +got):\n%s", st.id, st.active, d)
		}
	}
	for _, key := range []string{"missing", "c3RhdGVtZW50LWE"} { // by text: no longer
		if err := s.SetSoftwareStatementActive(ctx, key, false); !errors.Is(err, oauth.ErrNotFound) {
			t.Errorf("SetSoftwareStatementActive(%q): got %v, want ErrNotFound", key, err)
		}
	}
}

func testRegisterWithStatement(t *testing.T, s oauth.Store) {
	ctx := t.Context()
	open := NewStatement("st-open", "b3Blbg", at(0))
	limited := NewStatement("st-limited", "bGltaXRlZA", at(0))
	limited.MaxUses, limited.ExpiresAt = 2, at(time.Hour)
	off := NewStatement("st-off", "b2Zm", at(0))
	off.Active = false
	MustCreateStatements(t, s, open, limited, off)
	newAgent := func(id string, created time.Time) *oauth.Client {
		c := NewClient(id, oauth.KindAgent, created)
		c.Statement = ""
		return c
	}
	uses := func(id string) int {
		for _, st := range MustStatements(t, s) {
			if st.ID == id {
				return st.Uses
			}
		}
		t.Fatalf("no statement %s", id)
		return 0
	}

	c := newAgent("agent-1", at(time.Minute))
	st, err := s.RegisterWithStatement(ctx, limited.Hash, c)
	if err != nil {
		t.Fatal(err)
	}
	if st.ID != "st-limited" || st.Uses != 1 || st.MaxUses != 2 || c.Statement != "st-limited" {
		t.Errorf("RegisterWithStatement = %+v, client statement %q", st, c.Statement)
	}
	if got := MustGetClient(t, s, "agent-1"); got.Statement != "st-limited" || got.Kind != oauth.KindAgent || !got.LinkedAt.IsZero() {
		t.Errorf("registered client = %+v", got)
	}
	if _, err := s.RegisterWithStatement(ctx, limited.Hash, newAgent("agent-2", at(time.Minute))); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name string
		hash []byte
		at   time.Time
		want error
	}{
		{"used up", limited.Hash, at(time.Minute), oauth.ErrStatementUsedUp},
		{"deactivated", off.Hash, at(time.Minute), oauth.ErrStatementInactive},
		{"unknown", oauth.StatementHash("bm9wZQ"), at(time.Minute), oauth.ErrNotFound},
	} {
		st, err := s.RegisterWithStatement(ctx, tt.hash, newAgent("agent-"+tt.name, tt.at))
		if !errors.Is(err, tt.want) {
			t.Errorf("%s: err = %v, want %v", tt.name, err, tt.want)
		}
		if tt.want != oauth.ErrNotFound && (st == nil || st.Hash == nil) {
			t.Errorf("%s: the refused statement is not returned: %+v", tt.name, st)
		}
		if _, err := s.GetClient(ctx, "agent-"+tt.name); !errors.Is(err, oauth.ErrNotFound) {
			t.Errorf("%s: the refused client was stored (%v)", tt.name, err)
		}
	}
	if n := uses("st-limited"); n != 2 {
		t.Errorf("st-limited used %d times, want 2", n)
	}

	// Expiry: registering at ExpiresAt or later is refused.
	exp := NewStatement("st-exp", "ZXhw", at(0))
	exp.ExpiresAt = at(time.Hour)
	MustCreateStatements(t, s, exp)
	if _, err := s.RegisterWithStatement(ctx, exp.Hash, newAgent("agent-late", at(time.Hour))); !errors.Is(err, oauth.ErrStatementExpired) {
		t.Errorf("at expiry: err = %v, want ErrStatementExpired", err)
	}
	if _, err := s.RegisterWithStatement(ctx, exp.Hash, newAgent("agent-early", at(time.Hour-time.Millisecond))); err != nil {
		t.Errorf("just before expiry: %v", err)
	}

	// No limits: any number of uses; a duplicate client ID counts none.
	for i := range 3 {
		if _, err := s.RegisterWithStatement(ctx, open.Hash, newAgent(fmt.Sprintf("agent-open-%d", i), at(time.Minute))); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.RegisterWithStatement(ctx, open.Hash, newAgent("agent-open-0", at(time.Minute))); !errors.Is(err, oauth.ErrClientExists) {
		t.Errorf("a duplicate client ID: err = %v, want ErrClientExists", err)
	}
	if n := uses("st-open"); n != 3 {
		t.Errorf("st-open used %d times, want 3", n)
	}
}

// testReissueAgentSecret: a never-linked, active agent client of a statement
// that still registers agents gets a new secret and CreatedAt, its other
// fields kept, and no use is counted (a used-up statement too); a linked,
// deactivated or API client, one of another statement, and one whose
// statement is deactivated or expired keep theirs.
func testReissueAgentSecret(t *testing.T, s oauth.Store) {
	ctx := t.Context()
	open := NewStatement("st-open", "b3Blbg", at(0))
	once := NewStatement("st-once", "b25jZQ", at(0))
	once.MaxUses = 1
	exp := NewStatement("st-exp", "ZXhw", at(0))
	exp.ExpiresAt = at(time.Hour)
	off := NewStatement("st-off", "b2Zm", at(0))
	MustCreateStatements(t, s, open, once, exp, off)
	register := func(st *oauth.SoftwareStatement, id string) {
		t.Helper()
		c := NewClient(id, oauth.KindAgent, at(time.Minute))
		if _, err := s.RegisterWithStatement(ctx, st.Hash, c); err != nil {
			t.Fatalf("RegisterWithStatement(%s): %v", id, err)
		}
	}
	register(open, "agent-new")
	register(once, "agent-once")
	register(exp, "agent-exp")
	register(off, "agent-off")
	register(open, "agent-inactive")
	if err := s.SetClientActive(ctx, "agent-inactive", false); err != nil {
		t.Fatal(err)
	}
	if err := s.SetSoftwareStatementActive(ctx, "st-off", false); err != nil {
		t.Fatal(err)
	}
	linked := NewClient("agent-linked", oauth.KindAgent, at(time.Minute))
	linked.Statement, linked.LinkedAt = "st-open", at(2*time.Minute)
	api := NewClient("api-1", oauth.KindAPI, at(time.Minute))
	api.Statement = "st-open"
	MustCreateClients(t, s, linked, api)
	uses := func() map[string]int {
		m := map[string]int{}
		for _, st := range MustStatements(t, s) {
			m[st.ID] = st.Uses
		}
		return m
	}
	usesBefore := uses()
	reissue := func(id string, hash []byte, created time.Time) (*oauth.Client, *oauth.SoftwareStatement, error) {
		c := &oauth.Client{ID: id, SecretHash: []byte("new hash of " + id), Salt: []byte("new salt"), CreatedAt: created}
		st, err := s.ReissueAgentSecret(ctx, hash, c)
		return c, st, err
	}

	before := MustGetClient(t, s, "agent-new")
	c, st, err := reissue("agent-new", open.Hash, at(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	want := *before
	want.SecretHash, want.Salt, want.CreatedAt = []byte("new hash of agent-new"), []byte("new salt"), at(time.Hour)
	if d := cmp.Diff(&want, MustGetClient(t, s, "agent-new"), diffOpts...); d != "" {
		t.Errorf("stored client after ReissueAgentSecret (-want +got):\n%s", d)
	}
	if d := cmp.Diff(&want, c, diffOpts...); d != "" {
		t.Errorf("client set by ReissueAgentSecret (-want +got):\n%s", d)
	}
	if st == nil || st.ID != "st-open" {
		t.Errorf("ReissueAgentSecret returned statement %+v, want st-open", st)
	}
	// A used-up statement: the client counted its use already.
	if _, _, err := reissue("agent-once", once.Hash, at(time.Hour)); err != nil {
		t.Errorf("a client of a used-up statement: %v", err)
	}

	for _, tt := range []struct {
		name, id string
		hash     []byte
		at       time.Time
		want     error
	}{
		{"unknown client", "agent-none", open.Hash, at(time.Hour), oauth.ErrNotFound},
		{"linked", "agent-linked", open.Hash, at(time.Hour), oauth.ErrNotReissuable},
		{"deactivated client", "agent-inactive", open.Hash, at(time.Hour), oauth.ErrNotReissuable},
		{"api client", "api-1", open.Hash, at(time.Hour), oauth.ErrNotReissuable},
		{"another statement", "agent-exp", open.Hash, at(time.Hour - time.Millisecond), oauth.ErrNotReissuable},
		{"unknown statement", "agent-new", oauth.StatementHash("bm9wZQ"), at(time.Hour), oauth.ErrNotReissuable},
		{"expired statement", "agent-exp", exp.Hash, at(time.Hour), oauth.ErrStatementExpired},
		{"deactivated statement", "agent-off", off.Hash, at(time.Hour), oauth.ErrStatementInactive},
	} {
		before, _ := s.GetClient(ctx, tt.id)
		_, st, err := reissue(tt.id, tt.hash, tt.at)
		if !errors.Is(err, tt.want) {
			t.Errorf("%s: err = %v, want %v", tt.name, err, tt.want)
		}
		if errors.Is(tt.want, oauth.ErrInvalidStatement) && (st == nil || st.Hash == nil) {
			t.Errorf("%s: the refusing statement is not returned: %+v", tt.name, st)
		}
		after, _ := s.GetClient(ctx, tt.id)
		if d := cmp.Diff(before, after, diffOpts...); d != "" {
			t.Errorf("%s: the client changed (-before +after):\n%s", tt.name, d)
		}
	}
	if _, _, err := reissue("agent-exp", exp.Hash, at(time.Hour-time.Millisecond)); err != nil {
		t.Errorf("just before the statement expires: %v", err)
	}
	if d := cmp.Diff(usesBefore, uses()); d != "" {
		t.Errorf("ReissueAgentSecret counted statement uses (-before +after):\n%s", d)
	}
}

// MustRegisterConcurrently registers n agents at once with one statement of
// maxUses uses, spread over stores (several brokers on one database): exactly
// maxUses succeed, the others get ErrStatementUsedUp, and the statement
// counts maxUses uses.
func MustRegisterConcurrently(t *testing.T, stores []oauth.Store, n, maxUses int) {
	t.Helper()
	ctx := t.Context()
	st := NewStatement("st-race", "cmFjZQ", at(0))
	st.MaxUses = maxUses
	MustCreateStatements(t, stores[0], st)
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		ok, out int
		other   []error
	)
	start := make(chan struct{})
	for i := range n {
		wg.Go(func() {
			<-start
			c := NewClient(fmt.Sprintf("agent-race-%d", i), oauth.KindAgent, at(time.Minute))
			_, err := stores[i%len(stores)].RegisterWithStatement(ctx, st.Hash, c)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				ok++
			case errors.Is(err, oauth.ErrStatementUsedUp):
				out++
			default:
				other = append(other, err)
			}
		})
	}
	close(start)
	wg.Wait()
	if ok != maxUses || out != n-maxUses || len(other) > 0 {
		t.Errorf("%d concurrent registrations with %d uses: %d registered, %d used up, other errors %v", n, maxUses, ok, out, other)
	}
	for _, got := range MustStatements(t, stores[0]) {
		if got.ID == st.ID && got.Uses != maxUses {
			t.Errorf("the statement counts %d uses, want %d", got.Uses, maxUses)
		}
	}
	var agents int
	cs, err := stores[len(stores)-1].ListClients(ctx, oauth.KindAgent)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range cs {
		if c.Statement == st.ID {
			agents++
		}
	}
	if agents != maxUses {
		t.Errorf("%d agent clients hold the statement, want %d", agents, maxUses)
	}
}

func testAuthServers(t *testing.T, s oauth.Store) {
	ctx := t.Context()
	if got, err := s.AuthServers(ctx); err != nil || len(got) != 0 {
		t.Fatalf("AuthServers on an empty store = %v, %v", got, err)
	}
	cognito := &oauth.AuthServer{
		URL:       "https://cognito-idp.us-east-1.amazonaws.com/us-east-1_x/.well-known/jwks.json",
		Issuer:    "https://cognito-idp.us-east-1.amazonaws.com/us-east-1_x",
		CreatedAt: at(time.Hour),
	}
	azure := &oauth.AuthServer{
		URL:       "https://login.microsoftonline.com/common/discovery/v2.0/keys",
		Algorithm: "RS256",
		Audience:  "api://berth",
		CreatedAt: at(0),
	}
	bare := &oauth.AuthServer{URL: "http://127.0.0.1:4444/.well-known/jwks.json", CreatedAt: at(2 * time.Hour)}
	for _, a := range []*oauth.AuthServer{cognito, azure, bare} {
		if err := s.PutAuthServer(ctx, a); err != nil {
			t.Fatalf("PutAuthServer(%s): %v", a.URL, err)
		}
	}
	list := func() []*oauth.AuthServer {
		t.Helper()
		got, err := s.AuthServers(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, a := range got {
			checkUTC(t, "CreatedAt", a.CreatedAt)
		}
		return got
	}
	// Oldest first.
	if d := cmp.Diff([]*oauth.AuthServer{azure, cognito, bare}, list(), diffOpts...); d != "" {
		t.Errorf("AuthServers (-want +got):\n%s", d)
	}

	// Registering a URL again replaces its options and keeps its age.
	again := &oauth.AuthServer{URL: cognito.URL, Algorithm: "ES384", Audience: "https://api.example", CreatedAt: at(5 * time.Hour)}
	if err := s.PutAuthServer(ctx, again); err != nil {
		t.Fatal(err)
	}
	if !again.CreatedAt.Equal(cognito.CreatedAt) {
		t.Errorf("PutAuthServer of a registered URL set CreatedAt %v, want the first registration's %v", again.CreatedAt, cognito.CreatedAt)
	}
	if d := cmp.Diff([]*oauth.AuthServer{azure, again, bare}, list(), diffOpts...); d != "" {
		t.Errorf("AuthServers after registering again (-want +got):\n%s", d)
	}

	if err := s.DeleteAuthServer(ctx, azure.URL); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteAuthServer(ctx, azure.URL); !errors.Is(err, oauth.ErrNotFound) {
		t.Errorf("DeleteAuthServer of an unregistered URL = %v, want ErrNotFound", err)
	}
	if err := s.DeleteAuthServer(ctx, strings.ToUpper(bare.URL)); !errors.Is(err, oauth.ErrNotFound) {
		t.Errorf("DeleteAuthServer matched a URL in another case: %v", err)
	}
	if d := cmp.Diff([]*oauth.AuthServer{again, bare}, list(), diffOpts...); d != "" {
		t.Errorf("AuthServers after a delete (-want +got):\n%s", d)
	}

	// A zero CreatedAt is set to the store's time.
	now := &oauth.AuthServer{URL: "https://idp.example/jwks"}
	if err := s.PutAuthServer(ctx, now); err != nil {
		t.Fatal(err)
	}
	if now.CreatedAt.IsZero() {
		t.Error("PutAuthServer left a zero CreatedAt")
	}
}

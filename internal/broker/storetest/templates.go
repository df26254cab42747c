package storetest

import (
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/berth-dev/berth/internal/broker"
)

// RunTemplates runs the broker.TemplateStore contract tests as subtests of t.
// open is as for Run; the store it returns must implement broker.TemplateStore.
func RunTemplates(t *testing.T, open func(t *testing.T) broker.Store) {
	tests := []struct {
		name string
		fn   func(t *testing.T, s broker.Store, ts broker.TemplateStore)
	}{
		{"Templates_CRUD", testTemplatesCRUD},
		{"Templates_Conflict", testTemplatesConflict},
		{"Templates_NotFound", testTemplatesNotFound},
		{"Shares", testShares},
		{"Shares_GoWithSession", testSharesGoWithSession},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := open(t)
			ts, ok := s.(broker.TemplateStore)
			if !ok {
				t.Fatalf("%T does not implement broker.TemplateStore", s)
			}
			tc.fn(t, s, ts)
		})
	}
}

// NewTemplate returns a template with every field set, for store tests.
func NewTemplate(id, name string) *broker.Template {
	return &broker.Template{
		ID: id, Name: name, Description: "a desktop for " + name, Type: broker.TypeVirtual,
		Requirements: "server:Host.Os.Family = 'linux'", InitFile: "init.sh", AutorunFile: "run.sh",
		AutorunFileArguments: []string{"-a", "b c"}, MaxConcurrentClients: 3, DcvGlEnabled: true,
		StorageRoot: "%home%/files", Users: []string{"alice", "bob"}, Groups: []string{"devs"},
		Limits: broker.SessionLimits{
			DisconnectedTimeoutMinutes: 30, IdleTimeoutMinutes: 7.5, MaxLifetimeHours: 8, MaxExtensionHours: -1,
			MaxSessions: 10, MaxGPUs: 4,
		},
		GPUs:      2,
		CreatedAt: at(0), UpdatedAt: at(time.Minute),
	}
}

func testTemplatesCRUD(t *testing.T, _ broker.Store, ts broker.TemplateStore) {
	ctx := t.Context()
	a, b := NewTemplate("t1", "beta"), NewTemplate("t2", "alpha")
	b.AutorunFileArguments, b.Users, b.Groups, b.DcvGlEnabled = nil, nil, nil, false
	b.Limits, b.GPUs = broker.SessionLimits{}, 0
	for _, x := range []*broker.Template{a, b} {
		if err := ts.InsertTemplate(ctx, x); err != nil {
			t.Fatal(err)
		}
	}
	got, err := ts.GetTemplate(ctx, "t1")
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(a, got); d != "" {
		t.Errorf("GetTemplate (-want +got):\n%s", d)
	}
	list, err := ts.ListTemplates(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff([]*broker.Template{b, a}, list); d != "" {
		t.Errorf("ListTemplates, by name (-want +got):\n%s", d)
	}

	upd := *a
	upd.Name, upd.Users, upd.AutorunFileArguments = "gamma", []string{"carol"}, nil
	upd.Limits, upd.GPUs = broker.SessionLimits{MaxSessions: 3, MaxLifetimeHours: 0.5}, 1
	upd.CreatedAt, upd.UpdatedAt = at(time.Hour), at(2*time.Hour) // CreatedAt is kept
	if err := ts.UpdateTemplate(ctx, &upd); err != nil {
		t.Fatal(err)
	}
	got, err = ts.GetTemplate(ctx, "t1")
	if err != nil {
		t.Fatal(err)
	}
	want := upd
	want.CreatedAt = a.CreatedAt
	if d := cmp.Diff(&want, got); d != "" {
		t.Errorf("after UpdateTemplate (-want +got):\n%s", d)
	}

	if err := ts.DeleteTemplate(ctx, "t2"); err != nil {
		t.Fatal(err)
	}
	if _, err := ts.GetTemplate(ctx, "t2"); !errors.Is(err, broker.ErrNotFound) {
		t.Errorf("GetTemplate after delete: %v, want ErrNotFound", err)
	}
	if list, _ := ts.ListTemplates(ctx); len(list) != 1 || list[0].ID != "t1" {
		t.Errorf("ListTemplates after delete: %v", list)
	}
}

func testTemplatesConflict(t *testing.T, _ broker.Store, ts broker.TemplateStore) {
	ctx := t.Context()
	if err := ts.InsertTemplate(ctx, NewTemplate("t1", "one")); err != nil {
		t.Fatal(err)
	}
	if err := ts.InsertTemplate(ctx, NewTemplate("t2", "two")); err != nil {
		t.Fatal(err)
	}
	if err := ts.InsertTemplate(ctx, NewTemplate("t3", "one")); !errors.Is(err, broker.ErrConflict) {
		t.Errorf("insert with a taken name: %v, want ErrConflict", err)
	}
	if err := ts.InsertTemplate(ctx, NewTemplate("t1", "three")); !errors.Is(err, broker.ErrConflict) {
		t.Errorf("insert with a taken ID: %v, want ErrConflict", err)
	}
	if err := ts.UpdateTemplate(ctx, NewTemplate("t2", "one")); !errors.Is(err, broker.ErrConflict) {
		t.Errorf("rename to a taken name: %v, want ErrConflict", err)
	}
	if err := ts.UpdateTemplate(ctx, NewTemplate("t2", "two")); err != nil {
		t.Errorf("update keeping its own name: %v", err)
	}
}

func testTemplatesNotFound(t *testing.T, _ broker.Store, ts broker.TemplateStore) {
	ctx := t.Context()
	if _, err := ts.GetTemplate(ctx, "nope"); !errors.Is(err, broker.ErrNotFound) {
		t.Errorf("GetTemplate: %v, want ErrNotFound", err)
	}
	if err := ts.UpdateTemplate(ctx, NewTemplate("nope", "x")); !errors.Is(err, broker.ErrNotFound) {
		t.Errorf("UpdateTemplate: %v, want ErrNotFound", err)
	}
	if err := ts.DeleteTemplate(ctx, "nope"); !errors.Is(err, broker.ErrNotFound) {
		t.Errorf("DeleteTemplate: %v, want ErrNotFound", err)
	}
	if list, err := ts.ListTemplates(ctx); err != nil || len(list) != 0 {
		t.Errorf("ListTemplates of an empty store = %v, %v", list, err)
	}
}

func testShares(t *testing.T, s broker.Store, ts broker.TemplateStore) {
	ctx := t.Context()
	MustInsertSessions(t, s,
		NewSession("s1", "alice", broker.TypeVirtual, "", broker.StateReady),
		NewSession("s2", "alice", broker.TypeVirtual, "", broker.StateReady))
	must := func(id string, sh ...broker.Share) {
		t.Helper()
		if err := ts.SetShares(ctx, id, sh); err != nil {
			t.Fatal(err)
		}
	}
	must("s1", broker.Share{SessionID: "s1", User: "carol", Level: broker.ShareFull},
		broker.Share{SessionID: "s1", User: "bob", Level: broker.ShareView})
	must("s2", broker.Share{SessionID: "s2", User: "bob", Level: broker.ShareFull})
	got, err := ts.ListShares(ctx, "s1")
	if err != nil {
		t.Fatal(err)
	}
	want := []broker.Share{{SessionID: "s1", User: "bob", Level: broker.ShareView}, {SessionID: "s1", User: "carol", Level: broker.ShareFull}}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("ListShares (-want +got):\n%s", d)
	}
	got, err = ts.SharesWith(ctx, "bob")
	if err != nil {
		t.Fatal(err)
	}
	want = []broker.Share{{SessionID: "s1", User: "bob", Level: broker.ShareView}, {SessionID: "s2", User: "bob", Level: broker.ShareFull}}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("SharesWith (-want +got):\n%s", d)
	}
	must("s1", broker.Share{SessionID: "s1", User: "carol", Level: broker.ShareView}) // replaces: bob's share goes
	if got, _ := ts.SharesWith(ctx, "bob"); len(got) != 1 || got[0].SessionID != "s2" {
		t.Errorf("SharesWith(bob) after replacing s1's shares = %v, want s2 only", got)
	}
	must("s2")
	if got, err := ts.ListShares(ctx, "s2"); err != nil || len(got) != 0 {
		t.Errorf("ListShares after SetShares(none) = %v, %v", got, err)
	}
	if err := ts.SetShares(ctx, "nope", []broker.Share{{SessionID: "nope", User: "bob", Level: broker.ShareView}}); !errors.Is(err, broker.ErrNotFound) {
		t.Errorf("SetShares of an unknown session: %v, want ErrNotFound", err)
	}
}

func testSharesGoWithSession(t *testing.T, s broker.Store, ts broker.TemplateStore) {
	ctx := t.Context()
	old := NewSession("old", "alice", broker.TypeVirtual, "", broker.StateDeleted)
	old.UpdatedAt = at(0)
	MustInsertSessions(t, s, NewSession("s1", "alice", broker.TypeVirtual, "", broker.StateReady), old)
	for _, id := range []string{"s1", "old"} {
		if err := ts.SetShares(ctx, id, []broker.Share{{SessionID: id, User: "bob", Level: broker.ShareView}}); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.DeleteSession(ctx, "s1"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.PurgeDeleted(ctx, at(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if got, err := ts.SharesWith(ctx, "bob"); err != nil || len(got) != 0 {
		t.Errorf("SharesWith after DeleteSession and PurgeDeleted = %v, %v; want none", got, err)
	}
}

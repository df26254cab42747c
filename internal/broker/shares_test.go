package broker_test

import (
	"encoding/base64"
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/berth-dev/berth/internal/broker"
	"github.com/berth-dev/berth/internal/permfile"
)

func sharedIDs(t *testing.T, svc *broker.Service, user string) []string {
	t.Helper()
	ss, err := svc.SharedWith(t.Context(), user)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, s := range ss {
		ids = append(ids, s.ID)
	}
	return ids
}

// TestShareSession follows one session through view, full and none: the
// permissions file sent to the agent, the shares recorded, and what the
// other user sees.
func TestShareSession(t *testing.T) {
	svc, agents := newTemplateBroker(t)
	ctx := t.Context()
	sess := readySession(t, svc, "alice")

	steps := []struct {
		level                 broker.ShareLevel
		wantLine              string
		display, keys, upload bool
		shares                []broker.Share
		shared                []string
	}{
		{broker.ShareView, "user:bob allow display", true, false, false,
			[]broker.Share{{SessionID: sess.ID, User: "bob", Level: broker.ShareView}}, []string{sess.ID}},
		{broker.ShareFull, "user:bob allow display keyboard mouse clipboard-copy clipboard-paste", true, true, false,
			[]broker.Share{{SessionID: sess.ID, User: "bob", Level: broker.ShareFull}}, []string{sess.ID}},
		{broker.ShareNone, "", false, false, false, nil, nil},
	}
	for _, st := range steps {
		if err := svc.ShareSession(ctx, sess.ID, "alice", "bob", st.level); err != nil {
			t.Fatalf("share %s: %v", st.level, err)
		}
		text := agents.sent(sess.ID)
		if strings.Count(text, "user:bob") > 1 || (st.wantLine != "" && !strings.Contains(text, st.wantLine+"\n")) ||
			(st.wantLine == "" && strings.Contains(text, "bob")) {
			t.Errorf("share %s: the agent got\n%s\nwant exactly one line %q", st.level, text, st.wantLine)
		}
		f, err := permfile.Parse(text)
		if err != nil {
			t.Fatalf("share %s: the file sent does not parse: %v", st.level, err)
		}
		if f.Allowed("bob", "alice", "display", nil) != st.display || f.Allowed("bob", "alice", "keyboard", nil) != st.keys ||
			f.Allowed("bob", "alice", "file-upload", nil) != st.upload || !f.Allowed("alice", "alice", "file-upload", nil) {
			t.Errorf("share %s: the file's rights are wrong:\n%s", st.level, text)
		}
		shares, err := svc.SharesOf(ctx, sess.ID)
		if err != nil {
			t.Fatal(err)
		}
		if d := cmp.Diff(st.shares, shares); d != "" {
			t.Errorf("share %s: SharesOf (-want +got):\n%s", st.level, d)
		}
		if d := cmp.Diff(st.shared, sharedIDs(t, svc, "bob")); d != "" {
			t.Errorf("share %s: SharedWith(bob) (-want +got):\n%s", st.level, d)
		}
	}
	if ids := sharedIDs(t, svc, "alice"); ids != nil {
		t.Errorf("SharedWith(owner) = %v, want none: an owner's sessions are not shared with them", ids)
	}
}

// TestShareSession_Refusals checks who may share what: only the owner, not
// with themselves, a known level, a READY session.
func TestShareSession_Refusals(t *testing.T) {
	svc, _ := newTemplateBroker(t)
	ctx := t.Context()
	sess := readySession(t, svc, "alice")
	queued, err := svc.CreateSessions(ctx, []broker.CreateRequest{{Name: "q", Owner: "alice", Type: "VIRTUAL"}})
	if err != nil || queued[0].Session == nil {
		t.Fatal(queued, err)
	}
	tests := []struct {
		name                string
		id, owner, user     string
		level               broker.ShareLevel
		wantCode, wantError string
	}{
		{"another owner", sess.ID, "mallory", "mallory2", broker.ShareFull, broker.CodeForbidden, "only the session's owner may share it"},
		{"with the owner", sess.ID, "alice", "alice", broker.ShareView, broker.CodeInvalidInput, "User: is the session's owner"},
		{"bad level", sess.ID, "alice", "bob", "admin", broker.CodeInvalidInput, `Level: must be view, full or none, got "admin"`},
		{"bad user", sess.ID, "alice", "bob;rm", broker.ShareView, broker.CodeInvalidInput, "User: "},
		{"bad owner", sess.ID, "", "bob", broker.ShareView, broker.CodeInvalidInput, "Owner: is required"},
		{"no session ID", "", "alice", "bob", broker.ShareView, broker.CodeInvalidInput, "SessionId: is required"},
		{"unknown session", "nope", "alice", "bob", broker.ShareView, broker.CodeNotFound, `the session "nope" does not exist`},
		{"not READY", queued[0].Session.ID, "alice", "bob", broker.ShareView, broker.CodeNotReady, "not READY"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := svc.ShareSession(ctx, tc.id, tc.owner, tc.user, tc.level)
			if err == nil || broker.ErrorCode(err) != tc.wantCode || !strings.Contains(err.Error(), tc.wantError) {
				t.Errorf("ShareSession = %v (code %s), want %s with %q", err, broker.ErrorCode(err), tc.wantCode, tc.wantError)
			}
		})
	}
	if shares, _ := svc.SharesOf(ctx, sess.ID); len(shares) != 0 {
		t.Errorf("refused shares were recorded: %v", shares)
	}
}

// TestShares_FromPermissionsFile checks that shares written with the plain
// UpdateSessionPermissions API (and CreateSessions' PermissionsFile) show up
// as shares, and that a share keeps the rest of the owner's file.
func TestShares_FromPermissionsFile(t *testing.T) {
	svc, agents := newTemplateBroker(t)
	ctx := t.Context()
	sess := readySession(t, svc, "alice")
	file := "[groups]\nteam = carol, dave\n\n[permissions]\n%owner% allow builtin\ncarol allow display mouse\nuser:dave allow display\n" +
		"erin allow keyboard\ngroup:team allow audio-out\n%any% allow audio-out\nfrank allow display\nfrank deny display\n"
	b64 := base64.StdEncoding.EncodeToString([]byte(file))
	if r := svc.UpdateSessionPermissions(ctx, []broker.PermissionsRequest{{SessionID: sess.ID, Owner: "alice", PermissionsFile: b64}}); r[0] != "" {
		t.Fatal(r[0])
	}
	want := []broker.Share{
		{SessionID: sess.ID, User: "carol", Level: broker.ShareFull},
		{SessionID: sess.ID, User: "dave", Level: broker.ShareView},
	}
	shares, err := svc.SharesOf(ctx, sess.ID)
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(want, shares); d != "" {
		t.Errorf("shares of the file (-want +got):\n%s", d)
	}

	// Sharing with dave replaces his rule and keeps the others.
	if err := svc.ShareSession(ctx, sess.ID, "alice", "dave", broker.ShareFull); err != nil {
		t.Fatal(err)
	}
	sent := agents.sent(sess.ID)
	for _, keep := range []string{"team = carol, dave", "carol allow display mouse", "group:team allow audio-out", "frank deny display"} {
		if !strings.Contains(sent, keep) {
			t.Errorf("the shared file lost %q:\n%s", keep, sent)
		}
	}
	if strings.Contains(sent, "user:dave allow display\n") {
		t.Errorf("dave's old rule stayed:\n%s", sent)
	}
	if ids := sharedIDs(t, svc, "dave"); len(ids) != 1 {
		t.Errorf("SharedWith(dave) = %v", ids)
	}

	// A session created with a permissions file is shared from the start.
	res, err := svc.CreateSessions(ctx, []broker.CreateRequest{{Name: "p", Owner: "gina", Type: "VIRTUAL", PermissionsFile: b64}})
	if err != nil || res[0].Session == nil {
		t.Fatal(res, err)
	}
	if ids := sharedIDs(t, svc, "carol"); len(ids) != 2 {
		t.Errorf("SharedWith(carol) = %v, want both sessions", ids)
	}

	// A deleted session is no longer shared.
	svc.DeleteSessions(ctx, []broker.DeleteRequest{{SessionID: res[0].Session.ID, Owner: "gina", Force: true}})
	if ids := sharedIDs(t, svc, "carol"); len(ids) != 1 || ids[0] != sess.ID {
		t.Errorf("SharedWith(carol) after a delete = %v, want %s only", ids, sess.ID)
	}
	if _, err := svc.SharesOf(ctx, res[0].Session.ID); !errors.Is(err, broker.ErrNotFound) {
		t.Errorf("SharesOf a deleted session = %v, want ErrNotFound", err)
	}
}

// TestShareSession_DenyWins checks that a share the owner's own file would
// override is refused with the reason, not recorded as given.
func TestShareSession_DenyWins(t *testing.T) {
	svc, _ := newTemplateBroker(t)
	ctx := t.Context()
	sess := readySession(t, svc, "alice")
	file := "[permissions]\n%owner% allow builtin\n%any% deny keyboard mouse\n"
	if r := svc.UpdateSessionPermissions(ctx, []broker.PermissionsRequest{{SessionID: sess.ID, Owner: "alice",
		PermissionsFile: base64.StdEncoding.EncodeToString([]byte(file))}}); r[0] != "" {
		t.Fatal(r[0])
	}
	err := svc.ShareSession(ctx, sess.ID, "alice", "bob", broker.ShareFull)
	if err == nil || !strings.Contains(err.Error(), "Level: the session's permissions file gives bob view access, not full") {
		t.Errorf("full share under %%any%% deny keyboard mouse = %v, want a Level error", err)
	}
	if err := svc.ShareSession(ctx, sess.ID, "alice", "bob", broker.ShareView); err != nil {
		t.Errorf("view share: %v", err)
	}
}

// TestShareSession_Concurrent gives many users a share at once: every share
// lands in the permissions file, none lost to another's write.
func TestShareSession_Concurrent(t *testing.T) {
	svc, agents := newTemplateBroker(t)
	ctx := t.Context()
	sess := readySession(t, svc, "alice")
	users := []string{"u1", "u2", "u3", "u4", "u5", "u6", "u7", "u8"}
	errs := make(chan error, len(users))
	for _, u := range users {
		go func() { errs <- svc.ShareSession(ctx, sess.ID, "alice", u, broker.ShareView) }()
	}
	for range users {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	shares, err := svc.SharesOf(ctx, sess.ID)
	if err != nil {
		t.Fatal(err)
	}
	if len(shares) != len(users) {
		t.Errorf("%d shares after %d concurrent ones: %v\nfile:\n%s", len(shares), len(users), shares, agents.sent(sess.ID))
	}
}

package broker

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"hash/maphash"
	"slices"
	"strings"
	"sync"

	"github.com/berth-dev/berth/internal/logattr"
	"github.com/berth-dev/berth/internal/permfile"
)

// ShareLevel is what a share gives another user.
type ShareLevel string

// Share levels.
const (
	// ShareNone removes the user's share.
	ShareNone ShareLevel = "none"
	// ShareView gives display only (view-only).
	ShareView ShareLevel = "view"
	// ShareFull gives display, keyboard, mouse and clipboard (DCV builtin less file transfer).
	ShareFull ShareLevel = "full"
)

// Share is one user's access to a session of another owner.
type Share struct {
	SessionID string
	User      string
	Level     ShareLevel
}

// shareFeatures are the features a share's permissions line allows, by level.
var shareFeatures = map[ShareLevel]string{
	ShareView: "display",
	ShareFull: "display keyboard mouse clipboard-copy clipboard-paste",
}

// defaultPermissions is the text of permfile.Default: what DCV applies to a
// session without a permissions file, and what a first share extends.
const defaultPermissions = "[permissions]\n%owner% allow builtin\n"

// permissionLine is a rule of a permissions file's [permissions] section.
type permissionLine struct {
	index int    // in the file's lines
	actor string // as written: alice, user:alice, group:x, %any%, ...
}

// scanPermissions splits a permissions file into lines and finds the rules of
// its [permissions] section and the line after which a rule may be added to
// it (-1: the file has no such section). It is the one reader of the file's
// layout; permfile evaluates the rules.
func scanPermissions(text string) (lines []string, rules []permissionLine, end int) {
	lines = strings.Split(strings.TrimRight(text, "\n"), "\n")
	end = -1
	inPerms := false
	for i, l := range lines {
		t := strings.TrimSpace(l)
		switch {
		case t == "" || t[0] == '#' || t[0] == ';':
			continue
		case t[0] == '[':
			inPerms = strings.EqualFold(strings.TrimSpace(strings.Trim(t, "[]")), "permissions")
			if inPerms {
				end = i
			}
			continue
		}
		if inPerms {
			end = i
			if f := strings.Fields(t); len(f) > 0 {
				rules = append(rules, permissionLine{index: i, actor: f[0]})
			}
		}
	}
	return lines, rules, end
}

// actorUser returns the user an actor names, or "" for %owner%, %any% and groups.
func actorUser(actor string) string {
	switch {
	case strings.HasPrefix(actor, "%"), strings.HasPrefix(actor, "group:"), strings.HasPrefix(actor, "osgroup:"):
		return ""
	}
	return strings.TrimPrefix(actor, "user:")
}

// withShare returns text with user's rules replaced by the rule of level (none
// removes them).
func withShare(text, user string, level ShareLevel) string {
	if strings.TrimSpace(text) == "" {
		text = defaultPermissions
	}
	lines, rules, end := scanPermissions(text)
	drop := map[int]bool{}
	for _, r := range rules {
		if actorUser(r.actor) == user {
			drop[r.index] = true
		}
	}
	var out []string
	for i, l := range lines {
		if !drop[i] {
			out = append(out, l)
		}
		if i == end && level != ShareNone {
			out = append(out, "user:"+user+" allow "+shareFeatures[level])
		}
	}
	if end < 0 && level != ShareNone {
		out = append(out, "", "[permissions]", "user:"+user+" allow "+shareFeatures[level])
	}
	return strings.Join(out, "\n") + "\n"
}

// levelOf is the level the rules of f give user on owner's session: full with
// display and keyboard or mouse, view with display only.
func levelOf(f *permfile.File, user, owner string) ShareLevel {
	feats := f.Features(user, owner, nil)
	switch {
	case !feats["display"]:
		return ShareNone
	case feats["keyboard"] || feats["mouse"]:
		return ShareFull
	}
	return ShareView
}

// sharesIn derives a session's shares from its permissions file: every user
// a rule names, other than owner, who may see the display. Rules for %any%
// and groups name no one and make no share.
func sharesIn(sessionID, owner, text string) ([]Share, error) {
	if strings.TrimSpace(text) == "" {
		return nil, nil
	}
	f, err := permfile.Parse(text)
	if err != nil {
		return nil, err
	}
	_, rules, _ := scanPermissions(text)
	var out []Share
	seen := map[string]bool{owner: true, "": true}
	for _, r := range rules {
		u := actorUser(r.actor)
		if seen[u] {
			continue
		}
		seen[u] = true
		if l := levelOf(f, u, owner); l != ShareNone {
			out = append(out, Share{SessionID: sessionID, User: u, Level: l})
		}
	}
	slices.SortFunc(out, func(a, b Share) int { return strings.Compare(a.User, b.User) })
	return out, nil
}

// recordShares writes the shares that a session's permissions file gives,
// after the file was written (CreateSessions, UpdateSessionPermissions,
// ShareSession). A failure is logged: the permissions themselves are applied.
func (s *Service) recordShares(ctx context.Context, sess *Session, text string) {
	ts, ok := s.store.(TemplateStore)
	if !ok {
		return
	}
	shares, err := sharesIn(sess.ID, sess.Owner, text)
	if err == nil {
		err = ts.SetShares(ctx, sess.ID, shares)
	}
	if err != nil && !errors.Is(err, ErrNotFound) {
		s.log.Error("record session shares", logattr.SessionID, sess.ID, "err", err)
	}
}

// shareLocks serialize ShareSession per session (striped by a hash of its ID).
var (
	shareLocks [64]sync.Mutex
	shareSeed  = maphash.MakeSeed()
)

// ShareSession gives user level on owner's session, writing the session's DCV
// permissions through the same core as UpdateSessionPermissions (the same
// validation and agent command), and records the share. Only the owner can
// share: owner must match the session's owner (else a CodeForbidden error);
// an unknown or deleted session is an error matching ErrNotFound, one that
// is not READY is CodeNotReady.
//
// The user's rules in the session's permissions file (or in DCV's default,
// the owner allowed everything) are replaced by one rule: view allows
// display; full allows display, keyboard, mouse, clipboard-copy and
// clipboard-paste; none removes them.
func (s *Service) ShareSession(ctx context.Context, sessionID, owner, user string, level ShareLevel) error {
	invalid := func(format string, args ...any) error { return Errorf(CodeInvalidInput, format, args...) }
	if sessionID == "" {
		return invalid("SessionId: is required")
	}
	if err := ValidateUserName("Owner", owner); err != nil {
		return invalid("%v", err)
	}
	if err := ValidateUserName("User", user); err != nil {
		return invalid("%v", err)
	}
	if level != ShareNone && shareFeatures[level] == "" {
		return invalid("Level: must be view, full or none, got %q", truncate(string(level), 20))
	}
	if user == owner {
		return invalid("User: is the session's owner, who has every right already")
	}
	// Shares of one session are read, changed and written one at a time, so
	// that two shares given at once both land (on this broker; see
	// docs/templates.md for a cluster).
	mu := &shareLocks[maphash.String(shareSeed, sessionID)%uint64(len(shareLocks))]
	mu.Lock()
	defer mu.Unlock()
	sess, reason := s.ownedReady(ctx, sessionID, owner)
	switch {
	case reason == reasonSessionNotExist:
		return coded(ErrNotFound, CodeNotFound, "the session %q does not exist", truncate(sessionID, 64))
	case reason == reasonOwnerMismatch:
		return Errorf(CodeForbidden, "only the session's owner may share it: %s", reasonOwnerMismatch)
	case strings.HasPrefix(reason, "the session is "):
		return Errorf(CodeNotReady, "%s", reason)
	case reason != "":
		return invalid("%s", reason)
	}
	text := withShare(sess.Spec.PermissionsFile, user, level)
	f, err := permfile.Parse(text)
	if err != nil {
		return invalid("the session's permissions file cannot take the share: %v", err)
	}
	if got := levelOf(f, user, owner); level != ShareNone && got != level {
		return invalid("Level: the session's permissions file gives %s %s access, not %s (a rule for %%any%% or a group, or a deny rule, decides)", user, got, level)
	}
	res := s.UpdateSessionPermissions(ctx, []PermissionsRequest{{
		SessionID: sessionID, Owner: owner, PermissionsFile: base64.StdEncoding.EncodeToString([]byte(text)),
	}})
	if res[0] != "" {
		return Errorf(CodeUnavailable, "the share was not applied: %s", res[0])
	}
	return nil
}

// SharesOf lists a session's shares, ordered by user. The caller decides who
// may see them (the owner; the API's clients).
func (s *Service) SharesOf(ctx context.Context, sessionID string) ([]Share, error) {
	ts, err := s.templates()
	if err != nil {
		return nil, err
	}
	if sessionID == "" {
		return nil, Errorf(CodeInvalidInput, "SessionId: is required")
	}
	sess, err := s.store.GetSession(ctx, sessionID)
	if err == nil && sess.State == StateDeleted {
		err = ErrNotFound
	}
	if err != nil {
		if errors.Is(err, ErrNotFound) {
			return nil, coded(ErrNotFound, CodeNotFound, "the session %q does not exist", truncate(sessionID, 64))
		}
		return nil, err
	}
	return ts.ListShares(ctx, sessionID)
}

// SharedWith lists the sessions shared with user (not owned by them, not
// DELETED), ordered by creation.
func (s *Service) SharedWith(ctx context.Context, user string) ([]*Session, error) {
	ts, err := s.templates()
	if err != nil {
		return nil, err
	}
	if err := ValidateUserName("User", user); err != nil {
		return nil, Errorf(CodeInvalidInput, "%v", err)
	}
	shares, err := ts.SharesWith(ctx, user)
	if err != nil || len(shares) == 0 {
		return nil, err
	}
	ids := make([]string, len(shares))
	for i, sh := range shares {
		ids[i] = sh.SessionID
	}
	ss, err := s.store.ListSessions(ctx, SessionFilter{IDs: ids})
	if err != nil {
		return nil, err
	}
	return slices.DeleteFunc(ss, func(x *Session) bool { return x.Owner == user || x.State == StateDeleted }), nil
}

// errShareLevel names the levels, for parsers of a level.
var errShareLevel = fmt.Errorf("must be view, full or none")

// ParseShareLevel reads a level as the API and the CLI spell it (view, full
// or none, any case).
func ParseShareLevel(s string) (ShareLevel, error) {
	switch l := ShareLevel(strings.ToLower(strings.TrimSpace(s))); l {
	case ShareNone, ShareView, ShareFull:
		return l, nil
	}
	return "", errShareLevel
}

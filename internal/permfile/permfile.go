// Package permfile parses and evaluates Amazon DCV session permissions files.
//
// A permissions file says which DCV features (display, keyboard,
// clipboard-copy, ...) each user may use in a session. DCV servers read it;
// berth reads the same text to answer questions a broker or a gateway has to
// answer before the host does: may this user connect at all (CanConnect), and
// which features should a gateway let through (Features).
//
// The format, after the Amazon DCV Administrator Guide ("Working with
// permissions files"):
//
//	#import /etc/dcv/other.perm
//
//	[groups]
//	observers = john, user:jane, group:auditors, osgroup:video
//
//	[aliases]
//	clipboard = clipboard-copy, clipboard-paste
//	view-only = display, pointer, audio-out
//
//	[permissions]
//	%owner%          allow builtin
//	group:observers  allow view-only
//	osgroup:guests   allow clipboard file-download
//	%any%            deny  usb, smartcard
//
// Lines starting with ';' or '#' are comments (except "#import"), blank lines
// are skipped. A permission is ACTOR RULE FEATURE...; features may be
// separated by spaces (as DCV documents) or commas. An actor is a user name
// (optionally "user:NAME"), %owner% (the session owner), %any% (every user),
// group:NAME (a [groups] entry) or osgroup:NAME (an operating system group).
// Rules are allow, disallow (denies, but a later allow overrides it) and deny
// (denies, and nothing overrides it). The builtin alias stands for every
// feature; clipboard-management (clipboard-copy, clipboard-paste) is
// predefined because DCV's own examples use it without defining it, and a
// file may redefine it.
//
// Parse validates strictly and reports a problem as a *SyntaxError: first
// the first bad line, then references (groups, aliases, features) that do
// not resolve. "#import" lines are recorded (see File.Imports) but not followed: the
// rules of an imported file live on the host and are not evaluated here.
// User, group and alias names are compared case-sensitively.
package permfile

import (
	"fmt"
	"slices"
	"strings"
	"unicode"
	"unicode/utf8"
)

// MaxSize is the largest permissions file Parse accepts, in bytes.
const MaxSize = 64 << 10

// features is every DCV feature a permissions file can name, in the order of
// the bits of a featureSet. builtin expands to all of them.
var features = []string{
	"audio-in",
	"audio-out",
	"clipboard-copy",
	"clipboard-paste",
	"display",
	"extensions-client",
	"extensions-server",
	"file-download",
	"file-upload",
	"gamepad",
	"keyboard",
	"keyboard-sas",
	"mouse",
	"pointer",
	"printer",
	"screenshot",
	"smartcard",
	"stylus",
	"touch",
	"unsupervised-access",
	"usb",
	"webauthn-redirection",
	"webcam",
}

// featureSet is a set of features, one bit per entry of features.
type featureSet uint32

var (
	featureBits = func() map[string]featureSet {
		m := make(map[string]featureSet, len(features))
		for i, name := range features {
			m[name] = 1 << i
		}
		return m
	}()
	allFeatures = featureSet(1)<<len(features) - 1
	keyboardSet = featureBits["keyboard"]
	sasSet      = featureBits["keyboard-sas"]
)

// predefinedAliases are aliases every file has unless it defines its own.
var predefinedAliases = map[string]featureSet{
	"clipboard-management": featureBits["clipboard-copy"] | featureBits["clipboard-paste"],
}

// BuiltinFeatures returns every feature name a permissions file may use, in
// alphabetical order; the builtin alias stands for all of them.
func BuiltinFeatures() []string { return slices.Clone(features) }

// SyntaxError reports a problem in a permissions file.
type SyntaxError struct {
	// Line is the 1-based line of the problem; 0 when it concerns the whole
	// file (its size).
	Line int
	Msg  string
}

// Error implements error.
func (e *SyntaxError) Error() string {
	if e.Line == 0 {
		return "permissions file: " + e.Msg
	}
	return fmt.Sprintf("permissions file line %d: %s", e.Line, e.Msg)
}

// GroupResolver returns the OS groups of a user; nil means "unknown".
type GroupResolver func(user string) []string

type verb int

const (
	verbAllow verb = iota
	verbDisallow
	verbDeny
)

type actorKind int

const (
	actorUser actorKind = iota
	actorOwner
	actorAny
	actorGroup
	actorOSGroup
)

// principal is an actor of a rule or a member of a group.
type principal struct {
	kind actorKind
	name string
}

type rule struct {
	actor    principal
	verb     verb
	features featureSet
	line     int
}

type group struct {
	members []principal
	line    int
}

// File is a parsed, validated permissions file. It is immutable and safe
// for concurrent use.
type File struct {
	groups  map[string]group
	rules   []rule
	imports []string
}

// Default returns what DCV applies when a session has no permissions file:
// the session owner may use every feature and nobody else may use any.
func Default() *File {
	return &File{rules: []rule{{actor: principal{kind: actorOwner}, verb: verbAllow, features: allFeatures, line: 1}}}
}

// Imports returns the paths of the file's "#import" lines in file order.
// They are not followed, so the rules of those files are not evaluated.
func (f *File) Imports() []string { return slices.Clone(f.imports) }

// Allowed reports whether user may use feature in a session owned by owner.
// An empty user, or a feature that is not one of BuiltinFeatures, is never
// allowed. Deny rules win over allow rules; of allow and disallow, the later
// rule wins. keyboard-sas is allowed only together with keyboard, which DCV
// requires.
//
// With a nil resolver (or one that returns nil), osgroup: rules are treated
// optimistically for allow and ignored for disallow and deny: the broker
// cannot see the host's groups, and the host enforces the file again.
func (f *File) Allowed(user, owner, feature string, groups GroupResolver) bool {
	bit, ok := featureBits[feature]
	if !ok {
		return false
	}
	return f.allowed(user, owner, groups)&bit != 0
}

// Features returns every feature user is allowed in a session owned by
// owner, by the rules of Allowed (for a gateway enforcing view-only and the
// like). The map holds only allowed features, each mapped to true.
func (f *File) Features(user, owner string, groups GroupResolver) map[string]bool {
	set := f.allowed(user, owner, groups)
	m := make(map[string]bool)
	for i, name := range features {
		if set&(1<<i) != 0 {
			m[name] = true
		}
	}
	return m
}

// CanConnect is Allowed(user, owner, "display", groups).
func (f *File) CanConnect(user, owner string, groups GroupResolver) bool {
	return f.Allowed(user, owner, "display", groups)
}

// match is the answer to "does this actor cover this user".
type match int

const (
	matchNo    match = iota
	matchMaybe       // depends on OS groups the caller could not tell
	matchYes
)

// evaluation holds one query's inputs and its cached OS groups.
type evaluation struct {
	f          *File
	user       string
	owner      string
	resolver   GroupResolver
	resolved   bool
	osGroups   []string
	osGroupsOK bool
}

func (f *File) allowed(user, owner string, groups GroupResolver) featureSet {
	if user == "" {
		return 0
	}
	ev := &evaluation{f: f, user: user, owner: owner, resolver: groups}
	var allowed, denied featureSet
	for _, r := range f.rules {
		m := ev.matches(r.actor, nil)
		switch r.verb {
		case verbAllow:
			if m != matchNo {
				allowed |= r.features
			}
		case verbDisallow:
			if m == matchYes {
				allowed &^= r.features
			}
		case verbDeny:
			if m == matchYes {
				denied |= r.features
			}
		}
	}
	allowed &^= denied
	if allowed&keyboardSet == 0 {
		allowed &^= sasSet
	}
	return allowed
}

// inOSGroup answers whether the user is in the named OS group.
func (ev *evaluation) inOSGroup(name string) match {
	if !ev.resolved {
		ev.resolved = true
		if ev.resolver != nil {
			ev.osGroups = ev.resolver(ev.user)
			ev.osGroupsOK = ev.osGroups != nil
		}
	}
	if !ev.osGroupsOK {
		return matchMaybe
	}
	if slices.Contains(ev.osGroups, name) {
		return matchYes
	}
	return matchNo
}

// matches answers whether p covers the user. visiting holds the groups on
// the current path, so that a cycle of groups ends.
func (ev *evaluation) matches(p principal, visiting map[string]bool) match {
	switch p.kind {
	case actorUser:
		if p.name == ev.user {
			return matchYes
		}
	case actorOwner:
		if ev.owner != "" && ev.user == ev.owner {
			return matchYes
		}
	case actorAny:
		return matchYes
	case actorOSGroup:
		return ev.inOSGroup(p.name)
	case actorGroup:
		if visiting[p.name] {
			return matchNo
		}
		if visiting == nil {
			visiting = make(map[string]bool)
		}
		visiting[p.name] = true
		defer delete(visiting, p.name)
		best := matchNo
		for _, m := range ev.f.groups[p.name].members {
			best = max(best, ev.matches(m, visiting))
			if best == matchYes {
				break
			}
		}
		return best
	}
	return matchNo
}

// Parse parses and validates the text of a permissions file.
func Parse(text string) (*File, error) {
	if len(text) > MaxSize {
		return nil, &SyntaxError{Msg: fmt.Sprintf("larger than %d bytes", MaxSize)}
	}
	text = strings.TrimPrefix(text, "\uFEFF")
	p := &parser{
		f:          &File{groups: make(map[string]group)},
		aliasDefs:  make(map[string]aliasDef),
		aliasCache: make(map[string]featureSet),
	}
	for i, line := range strings.Split(text, "\n") {
		if err := p.line(i+1, strings.TrimSuffix(line, "\r")); err != nil {
			return nil, err
		}
	}
	if err := p.finish(); err != nil {
		return nil, err
	}
	return p.f, nil
}

type section int

const (
	sectionNone section = iota
	sectionGroups
	sectionAliases
	sectionPermissions
)

type aliasDef struct {
	members []string
	line    int
}

// pendingRule is a rule whose features are resolved once every alias is
// known (sections may come in any order).
type pendingRule struct {
	rule
	names []string
}

type parser struct {
	f          *File
	section    section
	aliasDefs  map[string]aliasDef
	aliasCache map[string]featureSet
	rules      []pendingRule
	// groupRefs are the group: references, checked at the end.
	groupRefs []groupRef
}

type groupRef struct {
	name string
	line int
}

func errorf(line int, format string, args ...any) error {
	return &SyntaxError{Line: line, Msg: fmt.Sprintf(format, args...)}
}

func (p *parser) line(n int, s string) error {
	if strings.IndexByte(s, 0) >= 0 {
		return errorf(n, "NUL byte")
	}
	if !utf8.ValidString(s) {
		return errorf(n, "not valid UTF-8")
	}
	s = strings.TrimSpace(s)
	switch {
	case s == "":
		return nil
	case strings.HasPrefix(s, "#import") && (len(s) == len("#import") || isSpace(s[len("#import")])):
		path := strings.TrimSpace(s[len("#import"):])
		if path == "" {
			return errorf(n, "#import without a file")
		}
		p.f.imports = append(p.f.imports, path)
		return nil
	case s[0] == '#' || s[0] == ';':
		return nil
	case s[0] == '[':
		return p.header(n, s)
	}
	switch p.section {
	case sectionGroups:
		return p.groupLine(n, s)
	case sectionAliases:
		return p.aliasLine(n, s)
	case sectionPermissions:
		return p.permissionLine(n, s)
	}
	return errorf(n, "%q is outside a section ([groups], [aliases] or [permissions])", truncate(s))
}

func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\v' || c == '\f' || c == '\r' }

func truncate(s string) string {
	const limit = 40
	if len(s) <= limit {
		return s
	}
	i := limit
	for i > 0 && !utf8.RuneStart(s[i]) {
		i--
	}
	return s[:i] + "..."
}

func (p *parser) header(n int, s string) error {
	if !strings.HasSuffix(s, "]") {
		return errorf(n, "section header %q has no closing ]", truncate(s))
	}
	name := strings.ToLower(strings.TrimSpace(s[1 : len(s)-1]))
	switch name {
	case "groups":
		p.section = sectionGroups
	case "aliases":
		p.section = sectionAliases
	case "permissions":
		p.section = sectionPermissions
	default:
		return errorf(n, "unknown section %q (want [groups], [aliases] or [permissions])", truncate(s))
	}
	return nil
}

// definition splits "name = a, b, c".
func definition(n int, s, what string) (string, []string, error) {
	name, list, ok := strings.Cut(s, "=")
	if !ok {
		return "", nil, errorf(n, "want %s = MEMBER, MEMBER, ...", what)
	}
	name = strings.TrimSpace(name)
	if name == "" {
		return "", nil, errorf(n, "%s definition without a name", what)
	}
	if strings.IndexFunc(name, unicode.IsSpace) >= 0 || strings.ContainsAny(name, ",:=") {
		return "", nil, errorf(n, "bad %s name %q", what, truncate(name))
	}
	var members []string
	for m := range strings.SplitSeq(list, ",") {
		if m = strings.TrimSpace(m); m != "" {
			members = append(members, m)
		}
	}
	return name, members, nil
}

func (p *parser) groupLine(n int, s string) error {
	name, members, err := definition(n, s, "group")
	if err != nil {
		return err
	}
	if g, ok := p.f.groups[name]; ok {
		return errorf(n, "group %q is already defined on line %d", name, g.line)
	}
	g := group{line: n}
	for _, m := range members {
		pr, err := p.parsePrincipal(n, m)
		if err != nil {
			return err
		}
		if pr.kind == actorOwner || pr.kind == actorAny {
			return errorf(n, "%s cannot be a group member", m)
		}
		g.members = append(g.members, pr)
	}
	p.f.groups[name] = g
	return nil
}

func (p *parser) aliasLine(n int, s string) error {
	name, members, err := definition(n, s, "alias")
	if err != nil {
		return err
	}
	if _, ok := featureBits[name]; ok || name == "builtin" {
		return errorf(n, "alias %q has the name of a feature", name)
	}
	if a, ok := p.aliasDefs[name]; ok {
		return errorf(n, "alias %q is already defined on line %d", name, a.line)
	}
	p.aliasDefs[name] = aliasDef{members: members, line: n}
	return nil
}

// parsePrincipal parses an actor or a group member.
func (p *parser) parsePrincipal(n int, s string) (principal, error) {
	kind, name, prefixed := actorUser, s, false
	switch {
	case s == "%owner%":
		return principal{kind: actorOwner}, nil
	case s == "%any%":
		return principal{kind: actorAny}, nil
	case strings.HasPrefix(s, "%") && strings.HasSuffix(s, "%") && len(s) > 1:
		return principal{}, errorf(n, "unknown reference %q (want %%owner%% or %%any%%)", truncate(s))
	case strings.HasPrefix(s, "group:"):
		kind, name, prefixed = actorGroup, s[len("group:"):], true
	case strings.HasPrefix(s, "osgroup:"):
		kind, name, prefixed = actorOSGroup, s[len("osgroup:"):], true
	case strings.HasPrefix(s, "user:"):
		name, prefixed = s[len("user:"):], true
	}
	if prefixed && name == "" {
		return principal{}, errorf(n, "%q names no one", s)
	}
	if strings.IndexFunc(name, unicode.IsSpace) >= 0 {
		return principal{}, errorf(n, "bad name %q", truncate(name))
	}
	if kind == actorGroup {
		p.groupRefs = append(p.groupRefs, groupRef{name: name, line: n})
	}
	return principal{kind: kind, name: name}, nil
}

func parseVerb(s string) (verb, bool) {
	switch s {
	case "allow":
		return verbAllow, true
	case "disallow":
		return verbDisallow, true
	case "deny":
		return verbDeny, true
	}
	return 0, false
}

func (p *parser) permissionLine(n int, s string) error {
	fields := strings.Fields(s)
	if _, isVerb := parseVerb(fields[0]); isVerb && (len(fields) == 1 || !isVerbWord(fields[1])) {
		return errorf(n, "missing actor before %q", fields[0])
	}
	actor, err := p.parsePrincipal(n, fields[0])
	if err != nil {
		return err
	}
	if len(fields) == 1 {
		return errorf(n, "missing rule after %q (want allow, disallow or deny)", truncate(fields[0]))
	}
	v, ok := parseVerb(fields[1])
	if !ok {
		return errorf(n, "unknown rule %q (want allow, disallow or deny)", truncate(fields[1]))
	}
	var names []string
	for _, f := range fields[2:] {
		for name := range strings.SplitSeq(f, ",") {
			if name != "" {
				names = append(names, name)
			}
		}
	}
	if len(names) == 0 {
		return errorf(n, "missing features after %q", fields[1])
	}
	p.rules = append(p.rules, pendingRule{rule: rule{actor: actor, verb: v, line: n}, names: names})
	return nil
}

func isVerbWord(s string) bool {
	_, ok := parseVerb(s)
	return ok
}

// finish checks group references and resolves every rule's features.
func (p *parser) finish() error {
	for _, ref := range p.groupRefs {
		if _, ok := p.f.groups[ref.name]; !ok {
			return errorf(ref.line, "undefined group %q", ref.name)
		}
	}
	// Check every alias, used or not, in line order.
	names := make([]string, 0, len(p.aliasDefs))
	for name := range p.aliasDefs {
		names = append(names, name)
	}
	slices.SortFunc(names, func(a, b string) int { return p.aliasDefs[a].line - p.aliasDefs[b].line })
	for _, name := range names {
		if _, err := p.alias(name, p.aliasDefs[name].line, nil); err != nil {
			return err
		}
	}
	for _, pr := range p.rules {
		r := pr.rule
		for _, name := range pr.names {
			set, err := p.featureOrAlias(name, r.line, nil)
			if err != nil {
				return err
			}
			r.features |= set
		}
		p.f.rules = append(p.f.rules, r)
	}
	return nil
}

// featureOrAlias resolves a feature, builtin or alias name used on line.
func (p *parser) featureOrAlias(name string, line int, visiting map[string]bool) (featureSet, error) {
	if name == "builtin" {
		return allFeatures, nil
	}
	if bit, ok := featureBits[name]; ok {
		return bit, nil
	}
	if _, ok := p.aliasDefs[name]; ok {
		return p.alias(name, line, visiting)
	}
	if set, ok := predefinedAliases[name]; ok {
		return set, nil
	}
	return 0, errorf(line, "unknown feature or alias %q", truncate(name))
}

// alias expands a defined alias; line is where it is used, for a cycle.
func (p *parser) alias(name string, line int, visiting map[string]bool) (featureSet, error) {
	if set, ok := p.aliasCache[name]; ok {
		return set, nil
	}
	def := p.aliasDefs[name]
	if visiting[name] {
		return 0, errorf(def.line, "alias %q includes itself", name)
	}
	if visiting == nil {
		visiting = make(map[string]bool)
	}
	visiting[name] = true
	defer delete(visiting, name)
	var set featureSet
	for _, m := range def.members {
		s, err := p.featureOrAlias(m, def.line, visiting)
		if err != nil {
			return 0, err
		}
		set |= s
	}
	p.aliasCache[name] = set
	return set, nil
}

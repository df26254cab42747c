package broker

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
)

// ErrOverQuota means a placement would take a user, a group or a template
// over its MaxSessions or MaxGPUs quota. Stores return it per item from
// CommitPlacements wrapped in a *QuotaError that tells the quota and its use.
var ErrOverQuota = errors.New("over quota")

// QuotaKind says what a Quota counts.
type QuotaKind string

// The kinds of quota.
const (
	// QuotaUser counts the sessions of one owner (Quota.Name).
	QuotaUser QuotaKind = "user"
	// QuotaGroup counts the sessions of a group's members together: the
	// owners in Quota.Members, and the sessions launched with the group
	// among their identity provider groups (SessionSpec.Groups).
	QuotaGroup QuotaKind = "group"
	// QuotaTemplate counts the sessions of one template (SessionSpec.Template).
	QuotaTemplate QuotaKind = "template"
)

// Quota is one quota a placement must hold: the sessions it counts (placed,
// not DELETED ones) stay at most MaxSessions and their GPUs (SessionSpec.GPUs)
// at most MaxGPUs. A cap of 0 or less is not checked.
type Quota struct {
	Kind QuotaKind
	// Name is the user, the group or the template ID.
	Name string
	// Members are, for QuotaGroup, the owners whose sessions count, sorted.
	Members     []string
	MaxSessions int
	MaxGPUs     int
}

// Key identifies the quota's count: placements with equal keys count the
// same sessions. Stores lock and count per key.
func (q *Quota) Key() string { return string(q.Kind) + ":" + q.Name }

// source names the setting that set the quota, for failure reasons.
func (q *Quota) source(gpus bool) string {
	switch q.Kind {
	case QuotaUser:
		if gpus {
			return " (session-max-gpus-per-user)"
		}
		return " (session-max-sessions-per-user)"
	case QuotaGroup:
		return " (session-group-limits-file)"
	}
	return ""
}

// QuotaUse is what a quota's sessions use now.
type QuotaUse struct {
	Sessions int
	GPUs     int
}

// Check tells whether one more session with gpus GPUs fits the quota, given
// its use: nil, or a *QuotaError.
func (q *Quota) Check(use QuotaUse, gpus int) error {
	if q.MaxSessions > 0 && use.Sessions+1 > q.MaxSessions {
		return &QuotaError{Quota: *q, Use: use}
	}
	if q.MaxGPUs > 0 && gpus > 0 && use.GPUs+gpus > q.MaxGPUs {
		return &QuotaError{Quota: *q, Use: use, GPUs: gpus}
	}
	return nil
}

// QuotaError is a placement refused by a quota. It matches ErrOverQuota.
type QuotaError struct {
	Quota Quota
	// Use is the quota's use when the placement was refused.
	Use QuotaUse
	// GPUs is non-zero when the GPU cap refused: the session's GPUs.
	GPUs int
}

// Error names the quota and its use, e.g. "quota: user alice has 4 of 4
// sessions (session-max-sessions-per-user)".
func (e *QuotaError) Error() string {
	q := &e.Quota
	if e.GPUs == 0 {
		return fmt.Sprintf("quota: %s %s has %d of %d sessions%s", q.Kind, q.Name, e.Use.Sessions, q.MaxSessions, q.source(false))
	}
	need := ""
	if e.GPUs > 1 || e.Use.GPUs < q.MaxGPUs {
		need = fmt.Sprintf(", the session needs %d", e.GPUs)
	}
	return fmt.Sprintf("quota: %s %s uses %d of %d GPUs%s%s", q.Kind, q.Name, e.Use.GPUs, q.MaxGPUs, need, q.source(true))
}

// Unwrap makes a QuotaError match ErrOverQuota.
func (e *QuotaError) Unwrap() error { return ErrOverQuota }

// GroupMembers is implemented by groups sources that can list a group's
// members (a groups file, the groups agents reported). A group quota counts
// the sessions of those members; without it, of the owners being placed.
type GroupMembers interface {
	Members(ctx context.Context, group string) []string
}

// GroupLearner is implemented by groups sources that learn the groups the
// agents report for the owners of their sessions (SessionReport.OwnerGroups).
type GroupLearner interface {
	Learn(user string, groups []string)
}

// learnGroups hands the owner groups that agents reported to the groups
// source, when it learns them.
func (s *Service) learnGroups(reports []SessionReport) {
	l, ok := s.cfg.Groups.(GroupLearner)
	if !ok {
		return
	}
	for i := range reports {
		if r := &reports[i]; r.Owner != "" && len(r.OwnerGroups) > 0 {
			l.Learn(r.Owner, r.OwnerGroups)
		}
	}
}

// hasQuotas tells whether any quota may apply to a session of the
// broker's properties or groups (a template's come with the session).
func (c *Config) hasQuotas() bool {
	if c.Limits.MaxSessions > 0 || c.Limits.MaxGPUs > 0 {
		return true
	}
	for _, l := range c.GroupLimits {
		if l.MaxSessions > 0 || l.MaxGPUs > 0 {
			return true
		}
	}
	return false
}

// quotaPlan holds the quotas of one placement pass, shared by the sessions
// they apply to, and their use as the pass goes.
type quotaPlan struct {
	quotas []*Quota
	byKey  map[string]*Quota
	of     [][]*Quota // by session index
	use    map[string]QuotaUse
}

// quotasFor works out the quotas each of sessions must hold. It returns nil
// when none applies, without calling the groups source or the store.
func (s *Service) quotasFor(ctx context.Context, sessions []*Session) *quotaPlan {
	cfgQuotas := s.cfg.hasQuotas()
	var p *quotaPlan
	add := func(i int, q Quota) {
		if p == nil {
			p = &quotaPlan{byKey: make(map[string]*Quota), of: make([][]*Quota, len(sessions))}
		}
		k := q.Key()
		have := p.byKey[k]
		if have == nil {
			have = &q
			p.byKey[k] = have
			p.quotas = append(p.quotas, have)
		}
		p.of[i] = append(p.of[i], have)
	}
	for i, sess := range sessions {
		if tl := sess.Spec.TemplateLimits; tl != nil && sess.Spec.Template != "" && (tl.MaxSessions > 0 || tl.MaxGPUs > 0) {
			add(i, Quota{Kind: QuotaTemplate, Name: sess.Spec.Template, MaxSessions: tl.MaxSessions, MaxGPUs: tl.MaxGPUs})
		}
		if !cfgQuotas {
			continue
		}
		if l := s.cfg.Limits; l.MaxSessions > 0 || l.MaxGPUs > 0 {
			add(i, Quota{Kind: QuotaUser, Name: sess.Owner, MaxSessions: l.MaxSessions, MaxGPUs: l.MaxGPUs})
		}
		for _, g := range s.ownerGroups(ctx, sess) {
			l, ok := s.cfg.GroupLimits[g]
			if !ok || (l.MaxSessions <= 0 && l.MaxGPUs <= 0) {
				continue
			}
			add(i, Quota{Kind: QuotaGroup, Name: g, MaxSessions: l.MaxSessions, MaxGPUs: l.MaxGPUs, Members: []string{sess.Owner}})
		}
	}
	if p == nil {
		return nil
	}
	// A group counts its members by the groups source and the owners of the
	// pass that are in it.
	lister, _ := s.cfg.Groups.(GroupMembers)
	for i, qs := range p.of {
		for _, q := range qs {
			if q.Kind == QuotaGroup && !slices.Contains(q.Members, sessions[i].Owner) {
				q.Members = append(q.Members, sessions[i].Owner)
			}
		}
	}
	for _, q := range p.quotas {
		if q.Kind != QuotaGroup {
			continue
		}
		if lister != nil {
			q.Members = append(q.Members, lister.Members(ctx, q.Name)...)
		}
		slices.Sort(q.Members)
		q.Members = slices.Compact(q.Members)
	}
	return p
}

// load reads the use of the plan's quotas from the store, in one call.
func (p *quotaPlan) load(ctx context.Context, st Store) error {
	qs := make([]Quota, len(p.quotas))
	for i, q := range p.quotas {
		qs[i] = *q
	}
	use, err := st.QuotaUse(ctx, qs)
	if err != nil {
		return fmt.Errorf("read quota use: %w", err)
	}
	p.use = make(map[string]QuotaUse, len(qs))
	for i, q := range p.quotas {
		p.use[q.Key()] = use[i]
	}
	return nil
}

// check tells whether session i fits its quotas with the sessions the pass
// took so far; nil or a *QuotaError.
func (p *quotaPlan) check(i int, sess *Session) error {
	for _, q := range p.of[i] {
		if err := q.Check(p.use[q.Key()], sess.Spec.GPUs); err != nil {
			return err
		}
	}
	return nil
}

// take counts session i against its quotas.
func (p *quotaPlan) take(i int, sess *Session) {
	for _, q := range p.of[i] {
		u := p.use[q.Key()]
		u.Sessions++
		u.GPUs += sess.Spec.GPUs
		p.use[q.Key()] = u
	}
}

// release gives back what take counted, for a session whose commit failed.
func (p *quotaPlan) release(i int, sess *Session) {
	for _, q := range p.of[i] {
		u := p.use[q.Key()]
		u.Sessions--
		u.GPUs -= sess.Spec.GPUs
		p.use[q.Key()] = u
	}
}

// placementQuotas returns the quotas of session i for its Placement.
func (p *quotaPlan) placementQuotas(i int) []Quota {
	if p == nil || len(p.of[i]) == 0 {
		return nil
	}
	out := make([]Quota, len(p.of[i]))
	for k, q := range p.of[i] {
		out[k] = *q
	}
	return out
}

// quotaReason is the failure reason of a placement a quota refused.
func quotaReason(err error) string {
	var qe *QuotaError
	if errors.As(err, &qe) {
		return qe.Error()
	}
	return strings.TrimSpace(err.Error())
}

// MaxTemplateGPUs caps Template.GPUs.
const MaxTemplateGPUs = 64

// maxLimit caps each field of a SessionLimits (hours, minutes, sessions or
// GPUs): beyond it a value is a mistake, not a policy.
const maxLimit = 1_000_000

// validateLimits checks the limits of a template, field named after prefix:
// each is 0 (unset: the groups' or the broker properties' value applies), a
// positive value up to maxLimit, or -1 (off for the template's sessions,
// whatever the other levels say).
func validateLimits(prefix string, l *SessionLimits) error {
	for _, f := range []struct {
		name string
		v    float64
	}{
		{"DisconnectedTimeoutMinutes", l.DisconnectedTimeoutMinutes}, {"IdleTimeoutMinutes", l.IdleTimeoutMinutes},
		{"MaxLifetimeHours", l.MaxLifetimeHours}, {"MaxExtensionHours", l.MaxExtensionHours},
		{"MaxSessions", float64(l.MaxSessions)}, {"MaxGPUs", float64(l.MaxGPUs)},
	} {
		switch v := f.v; {
		case math.IsNaN(v) || math.IsInf(v, 0):
			return fmt.Errorf("%s%s: must be a finite number", prefix, f.name)
		case v < 0 && v != -1:
			return fmt.Errorf("%s%s: must be 0 (unset), positive, or -1 (off), got %v", prefix, f.name, v)
		case v > maxLimit:
			return fmt.Errorf("%s%s: %v exceeds the maximum of %d", prefix, f.name, v, maxLimit)
		}
	}
	return nil
}

// QuotaCounts are what a store reads to tell the use of quotas, in at most
// three queries whatever their number: the placed, not DELETED sessions
// (and their GPUs) of each owner a quota counts, of each template, and the
// sessions launched with identity provider groups. Use derives a quota's
// use from them.
type QuotaCounts struct {
	ByOwner    map[string]QuotaUse
	ByTemplate map[string]QuotaUse
	// Launched are the sessions launched with identity provider groups
	// (SessionSpec.Groups); read only when a group quota is asked for.
	Launched []LaunchedUse
}

// LaunchedUse is a placed session launched with identity provider groups.
type LaunchedUse struct {
	Owner  string
	Groups []string
	GPUs   int
}

// QuotaReads says what a store must read for qs: the owners whose sessions
// count (users, and groups' members), the templates, and whether any group
// quota needs the sessions launched with identity provider groups. The
// lists are sorted and without repeats.
func QuotaReads(qs []Quota) (owners, templates []string, groups bool) {
	for i := range qs {
		switch q := &qs[i]; q.Kind {
		case QuotaUser:
			owners = append(owners, q.Name)
		case QuotaGroup:
			owners = append(owners, q.Members...)
			groups = true
		case QuotaTemplate:
			templates = append(templates, q.Name)
		}
	}
	slices.Sort(owners)
	slices.Sort(templates)
	return slices.Compact(owners), slices.Compact(templates), groups
}

// Use returns q's use by the counts.
func (c *QuotaCounts) Use(q *Quota) QuotaUse {
	switch q.Kind {
	case QuotaUser:
		return c.ByOwner[q.Name]
	case QuotaTemplate:
		return c.ByTemplate[q.Name]
	case QuotaGroup:
		var u QuotaUse
		for _, m := range q.Members {
			o := c.ByOwner[m]
			u.Sessions += o.Sessions
			u.GPUs += o.GPUs
		}
		for _, l := range c.Launched {
			if slices.Contains(l.Groups, q.Name) {
				if _, member := slices.BinarySearch(q.Members, l.Owner); !member {
					u.Sessions++
					u.GPUs += l.GPUs
				}
			}
		}
		return u
	}
	return QuotaUse{}
}

package groups

import (
	"context"
	"slices"
	"sync"
)

// MaxLearnedUsers caps the users a Learned source remembers; past it, users
// not seen yet are not learned.
const MaxLearnedUsers = 100000

// maxLearnedGroups caps the groups kept per user.
const maxLearnedGroups = 256

// Learned is a broker.GroupSource of the groups that agents reported for
// session owners from their hosts' NSS (broker.SessionReport.OwnerGroups):
// the latest report of a user replaces what was learned of it. It is kept in
// memory, per broker. Learned is safe for concurrent use.
type Learned struct {
	mu      sync.RWMutex
	byUser  map[string][]string
	byGroup map[string]map[string]struct{}
}

// NewLearned returns an empty Learned source.
func NewLearned() *Learned {
	return &Learned{byUser: make(map[string][]string), byGroup: make(map[string]map[string]struct{})}
}

// Learn records the groups of user (broker.GroupLearner).
func (l *Learned) Learn(user string, groups []string) {
	gs := slices.Clone(groups)
	if len(gs) > maxLearnedGroups {
		gs = gs[:maxLearnedGroups]
	}
	slices.Sort(gs)
	gs = slices.Compact(gs)
	l.mu.RLock()
	old, known := l.byUser[user]
	same := known && slices.Equal(old, gs)
	full := !known && len(l.byUser) >= MaxLearnedUsers
	l.mu.RUnlock()
	if same || full {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, g := range l.byUser[user] {
		delete(l.byGroup[g], user)
		if len(l.byGroup[g]) == 0 {
			delete(l.byGroup, g)
		}
	}
	l.byUser[user] = gs
	for _, g := range gs {
		m := l.byGroup[g]
		if m == nil {
			m = make(map[string]struct{})
			l.byGroup[g] = m
		}
		m[user] = struct{}{}
	}
}

// Groups returns the groups learned for user.
func (l *Learned) Groups(_ context.Context, user string) []string {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return l.byUser[user]
}

// Members returns the users learned to be in group, sorted.
func (l *Learned) Members(_ context.Context, group string) []string {
	l.mu.RLock()
	m := l.byGroup[group]
	out := make([]string, 0, len(m))
	for u := range m {
		out = append(out, u)
	}
	l.mu.RUnlock()
	slices.Sort(out)
	return out
}

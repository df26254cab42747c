package groups

import (
	"context"
	"slices"

	"github.com/berth-dev/berth/internal/broker"
)

// Combined is a broker.GroupSource whose groups are those of all its sources;
// it lists members (broker.GroupMembers) and learns groups
// (broker.GroupLearner) through those sources that do.
type Combined []broker.GroupSource

// Combine returns a source of the union of sources' groups; nil sources are
// left out.
func Combine(sources ...broker.GroupSource) Combined {
	var c Combined
	for _, s := range sources {
		if s != nil {
			c = append(c, s)
		}
	}
	return c
}

// Groups returns the groups of user in any source, sorted, without repeats.
func (c Combined) Groups(ctx context.Context, user string) []string {
	var out []string
	for _, s := range c {
		out = append(out, s.Groups(ctx, user)...)
	}
	return sortedSet(out)
}

// Members returns the members of group in any source that lists members.
func (c Combined) Members(ctx context.Context, group string) []string {
	var out []string
	for _, s := range c {
		if m, ok := s.(broker.GroupMembers); ok {
			out = append(out, m.Members(ctx, group)...)
		}
	}
	return sortedSet(out)
}

// Learn hands the groups of user to the sources that learn.
func (c Combined) Learn(user string, groups []string) {
	for _, s := range c {
		if l, ok := s.(broker.GroupLearner); ok {
			l.Learn(user, groups)
		}
	}
}

func sortedSet(l []string) []string {
	if len(l) < 2 {
		return l
	}
	slices.Sort(l)
	return slices.Compact(l)
}

package placement

import (
	"fmt"
	"strings"
)

// NoHostError reports that no host could take a request. Total is the number
// of hosts considered; each other count is the number of hosts that the
// corresponding filter rejected (a host counts under the first filter it
// fails), so the counts add up to Total.
type NoHostError struct {
	Total, Excluded, Requirements, OS, GL, Full, PerUser, Console int
	// Owner is the owner of the request, named in the per-user message.
	Owner string
}

// refused counts a host that the capacity rule refused for r (0: none).
func (e *NoHostError) refused(r Reason) {
	switch r {
	case ReasonFull:
		e.Full++
	case ReasonPerUser:
		e.PerUser++
	case ReasonConsole:
		e.Console++
	}
}

// Error says which condition no host met, for example
// `no DCV server found for the given criteria: of 12 servers, 3 do not match
// the requirements, 9 are full (max_virtual_sessions reached)`.
func (e *NoHostError) Error() string {
	const prefix = "no DCV server found for the given criteria: "
	if e.Total == 0 {
		return prefix + "0 servers available"
	}
	var b strings.Builder
	b.WriteString(prefix)
	fmt.Fprintf(&b, "of %d %s", e.Total, plural(e.Total, "server", "servers"))
	n := b.Len()
	add := func(count int, one, many string) {
		if count > 0 {
			fmt.Fprintf(&b, ", %d %s", count, plural(count, one, many))
		}
	}
	add(e.Excluded, "is excluded after failed attempts", "are excluded after failed attempts")
	add(e.Requirements, "does not match the requirements", "do not match the requirements")
	add(e.OS, "cannot run VIRTUAL sessions (not linux)", "cannot run VIRTUAL sessions (not linux)")
	add(e.GL, "does not support DCV GL", "do not support DCV GL")
	add(e.Full, "is full (max_virtual_sessions reached)", "are full (max_virtual_sessions reached)")
	perUser := fmt.Sprintf("at the per-user limit (max_concurrent_sessions_per_user reached for owner %q)", e.Owner)
	add(e.PerUser, "is "+perUser, "are "+perUser)
	add(e.Console, "already runs a console session", "already run a console session")
	if b.Len() == n {
		b.WriteString(", none is eligible")
	}
	return b.String()
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

// Package username holds the one rule for owner and user names, which the
// broker applies to API input and each agent applies again before a driver
// passes a name to a program or builds anything from it. It accepts what real
// directories use — "alice", "first.last", "user@corp.example",
// "DOMAIN\user", a machine account "host$" — and refuses anything that could
// escape a path or a command line: "..", "/", NUL, control characters, a
// leading '-' or '.', spaces and shell metacharacters, more than one
// backslash.
package username

import (
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"
)

// MaxLength caps names, in bytes.
const MaxLength = 256

// Check returns nil for an acceptable name, or an error that says which rule
// it breaks ("is required", "must not contain \"..\"", …), for the caller to
// prefix with the field's name.
func Check(name string) error {
	switch {
	case name == "":
		return errors.New("is required")
	case len(name) > MaxLength:
		return fmt.Errorf("longer than %d bytes", MaxLength)
	case !utf8.ValidString(name):
		return errors.New("is not valid UTF-8")
	case name[0] == '-' || name[0] == '.':
		return fmt.Errorf("must not start with %q", name[0])
	case strings.Contains(name, ".."):
		return errors.New(`must not contain ".."`)
	case strings.Count(name, `\`) > 1 || strings.HasPrefix(name, `\`) || strings.HasSuffix(name, `\`):
		return errors.New(`a backslash is allowed only once, as DOMAIN\user`)
	}
	for _, r := range name {
		ok := r == '.' || r == '_' || r == '-' || r == '@' || r == '\\' || r == '$' ||
			r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9'
		if !ok {
			return fmt.Errorf(`character %q is not allowed (letters, digits, . _ - @ and one DOMAIN\ prefix)`, r)
		}
	}
	if strings.Contains(name[:len(name)-1], "$") {
		return errors.New(`"$" is allowed only at the end`)
	}
	return nil
}

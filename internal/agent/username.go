package agent

import (
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"
)

// MaxUserNameLength caps owner and user names (the broker's own bound).
const MaxUserNameLength = 256

// ErrInvalidRequest marks a command that a driver refuses because of what it
// asks (a bad owner, a path that escapes its folder, an unsupported option),
// as opposed to a failure of the host. Drivers wrap such refusals with
// [InvalidRequest]; the agent counts them apart in its metrics.
var ErrInvalidRequest = errors.New("invalid request")

// invalidRequest is an error marked as ErrInvalidRequest; its text is the
// wrapped error's, unchanged.
type invalidRequest struct{ err error }

func (e invalidRequest) Error() string        { return e.err.Error() }
func (e invalidRequest) Unwrap() error        { return e.err }
func (e invalidRequest) Is(target error) bool { return target == ErrInvalidRequest }

// InvalidRequest marks err as a refused request (errors.Is(err,
// ErrInvalidRequest) holds) without changing its message. It returns nil for
// nil.
func InvalidRequest(err error) error {
	if err == nil || errors.Is(err, ErrInvalidRequest) {
		return err
	}
	return invalidRequest{err}
}

// CheckUserName checks an owner or user name before a driver passes it to a
// program or builds anything from it. It accepts the names real directories
// use — "alice", "first.last", "user@corp.example", "DOMAIN\user", a machine
// account "host$" — and refuses anything that could escape a path or a
// command line: "..", "/", NUL, control characters, a leading '-' or '.',
// spaces and shell metacharacters, more than one backslash. The rules are the
// broker's (internal/broker ValidateUserName), checked again on the host
// because the agent does not trust its input. field names the request field
// in errors ("Owner"); the error is marked ErrInvalidRequest.
func CheckUserName(field, name string) error {
	fail := func(format string, args ...any) error {
		return InvalidRequest(fmt.Errorf("%s %s", field, fmt.Sprintf(format, args...)))
	}
	switch {
	case name == "":
		return fail("is required")
	case len(name) > MaxUserNameLength:
		return fail("is longer than %d bytes", MaxUserNameLength)
	case !utf8.ValidString(name):
		return fail("is not valid UTF-8")
	case name[0] == '-' || name[0] == '.':
		return fail("%q must not start with %q", name, name[0])
	case strings.Contains(name, ".."):
		return fail("%q must not contain \"..\"", name)
	case strings.Count(name, `\`) > 1 || strings.HasPrefix(name, `\`) || strings.HasSuffix(name, `\`):
		return fail("%q: a backslash is allowed only once, as DOMAIN\\user", name)
	}
	for _, r := range name {
		ok := r == '.' || r == '_' || r == '-' || r == '@' || r == '\\' || r == '$' ||
			r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9'
		if !ok {
			return fail("%q: character %q is not allowed (letters, digits, . _ - @ and one DOMAIN\\ prefix)", name, r)
		}
	}
	if strings.Contains(name[:len(name)-1], "$") {
		return fail("%q: \"$\" is allowed only at the end", name)
	}
	return nil
}

package agent

import (
	"errors"
	"fmt"

	"github.com/berth-dev/berth/internal/username"
)

// MaxUserNameLength caps owner and user names (the broker's own bound).
const MaxUserNameLength = username.MaxLength

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
	err := username.Check(name)
	switch {
	case err == nil:
		return nil
	case name == "":
		return InvalidRequest(fmt.Errorf("%s %w", field, err))
	}
	return InvalidRequest(fmt.Errorf("%s %q: %w", field, name, err))
}

package broker

import (
	"errors"
	"fmt"
)

// Error codes carried to the API as the "code" field. Do not reorder or rename:
// clients may match on them.
const (
	CodeInvalidInput = "INVALID_INPUT"
	CodeNotFound     = "NOT_FOUND"
	CodeNotReady     = "SESSION_NOT_READY"
	CodeForbidden    = "USER_NOT_ALLOWED"
	CodeUnavailable  = "UNAVAILABLE"
	CodeInternal     = "INTERNAL"
)

// Error is a failure with a stable code and a message that is safe to show to API
// clients. The HTTP transport maps codes to statuses in one table.
type Error struct {
	Code    string
	Message string
}

// Error returns the message.
func (e *Error) Error() string { return e.Message }

// Errorf returns an *Error with the given code.
func Errorf(code, format string, args ...any) error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// ErrorCode returns the code of err: CodeUnavailable for ErrStoreUnavailable,
// CodeInternal if it carries none.
func ErrorCode(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	if errors.Is(err, ErrStoreUnavailable) {
		return CodeUnavailable
	}
	return CodeInternal
}

package lookup

import (
	"errors"
	"fmt"
	"net/http"
)

// Error is a lookup failure: an HTTP status, a stable code and a reason
// that never holds a secret value.
type Error struct {
	Status int
	Code   string
	Reason string
	err    error
}

func (e *Error) Error() string { return e.Code + ": " + e.Reason }

// Unwrap returns the underlying cause, if any.
func (e *Error) Unwrap() error { return e.err }

// Is matches the sentinels below by status.
func (e *Error) Is(target error) bool {
	var t *Error
	if errors.As(target, &t) && t.err == nil && t.Reason == "" {
		return t.Status == e.Status
	}
	return false
}

// Sentinels to compare with errors.Is.
var (
	ErrBadRequest   = &Error{Status: http.StatusBadRequest, Code: "bad_request"}
	ErrUnauthorized = &Error{Status: http.StatusUnauthorized, Code: "unauthorized"}
	ErrForbidden    = &Error{Status: http.StatusForbidden, Code: "forbidden"}
	ErrNotFound     = &Error{Status: http.StatusNotFound, Code: "not_found"}
	ErrUnavailable  = &Error{Status: http.StatusServiceUnavailable, Code: "unavailable"}
)

func newErr(kind *Error, cause error, format string, args ...any) *Error {
	return &Error{Status: kind.Status, Code: kind.Code, Reason: fmt.Sprintf(format, args...), err: cause}
}

func badRequest(format string, args ...any) *Error {
	return newErr(ErrBadRequest, nil, format, args...)
}
func unauthorized(format string, args ...any) *Error {
	return newErr(ErrUnauthorized, nil, format, args...)
}
func forbidden(format string, args ...any) *Error { return newErr(ErrForbidden, nil, format, args...) }
func notFound(format string, args ...any) *Error  { return newErr(ErrNotFound, nil, format, args...) }

// unavailable wraps a backend failure; cause's text must already be free
// of values (provider errors are).
func unavailable(cause error, format string, args ...any) *Error {
	return newErr(ErrUnavailable, cause, format, args...)
}

// asError turns any error into an *Error (a non-*Error is a backend
// failure).
func asError(err error) *Error {
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	return unavailable(err, "backend: %v", err)
}

// body is e as the JSON both transports answer with:
// {"error": code, "reason": text}.
func (e *Error) body() []byte {
	b := make([]byte, 0, 64+len(e.Reason))
	b = append(b, `{"error":`...)
	b = appendJSONString(b, e.Code)
	b = append(b, `,"reason":`...)
	b = appendJSONString(b, e.Reason)
	return append(b, "}\n"...)
}

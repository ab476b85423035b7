// errors.go: the domain's errors: a few codes that say what kind of thing
// went wrong. The store and the handlers speak only in these; jsonio.go
// maps each code to its HTTP status in one table.
package main

import (
	"errors"
	"maps"
	"slices"
	"strings"
	"time"
)

// errorCode is the kind of a domain error.
type errorCode int

const (
	codeInternal     errorCode = iota // a bug or an unexpected failure
	codeInvalid                       // the request is malformed or breaks a field rule
	codeUnauthorized                  // no or wrong credentials
	codeForbidden                     // not allowed from here
	codeNotFound                      // no such resource or route
	codeNotAllowed                    // the route exists, the method does not
	codeConflict                      // a unique value is taken, or a limit of the resource is reached
	codePrecondition                  // If-Match or If-None-Match failed
	codeTooLarge                      // the body is too large
	codeUnsupported                   // the body is not JSON
	codeTooMany                       // a rate limit or lockout
	codeUnavailable                   // the database or the password hasher cannot take it now
)

// Error is a domain error. Message is what the client reads as
// {"error": …}; Fields, when set, is answered as {"errors": …} instead.
// Err is the cause, for the log only.
type Error struct {
	Code       errorCode
	Message    string
	Fields     fieldErrors
	RetryAfter time.Duration // sent as Retry-After when set
	Err        error
}

func (e *Error) Error() string {
	msg := e.Message
	if len(e.Fields) > 0 {
		msg = e.Fields.Error()
	}
	if e.Err != nil {
		return msg + ": " + e.Err.Error()
	}
	return msg
}

func (e *Error) Unwrap() error { return e.Err }

// errorCodeOf is the code of err: that of the domain error inside it,
// codeInvalid for field errors, codeInternal for anything else.
func errorCodeOf(err error) errorCode {
	var de *Error
	var fe fieldErrors
	switch {
	case errors.As(err, &de):
		return de.Code
	case errors.As(err, &fe):
		return codeInvalid
	}
	return codeInternal
}

// unavailable marks err as a failure of the database to take the work now
// (answered 503, the cause logged).
func unavailable(err error) error {
	if errorCodeOf(err) == codeUnavailable {
		return err
	}
	return &Error{Code: codeUnavailable, Message: "the database is unavailable right now: retry shortly", Err: err}
}

// conflict is a 409 naming the fields whose value another row holds.
func conflict(fields ...string) error {
	fe := fieldErrors{}
	for _, f := range fields {
		fe[f] = "is already taken"
	}
	return &Error{Code: codeConflict, Fields: fe}
}

// The domain's fixed errors.
var (
	errUserNotFound       = &Error{Code: codeNotFound, Message: "user not found"}
	errGoalNotFound       = &Error{Code: codeNotFound, Message: "goal not found"}
	errRouteNotFound      = &Error{Code: codeNotFound, Message: "not found"}
	errMethodNotAllowed   = &Error{Code: codeNotAllowed, Message: "method not allowed"}
	errBadLogin           = &Error{Code: codeUnauthorized, Message: "invalid username or password"}
	errPreconditionFailed = &Error{Code: codePrecondition, Message: "the resource changed since you read it (If-Match does not match its ETag): read it again"}
	errNoneMatched        = &Error{Code: codePrecondition, Message: "If-None-Match names the resource's current ETag, and asks to write only when it does not"}
	errAlreadyExists      = &Error{Code: codePrecondition, Message: "it exists already, and If-None-Match: * asks to write only where it does not"}
	errReadChanged        = &Error{Code: codePrecondition, Message: "If-Match does not name the current ETag of what was asked for: it changed since it was read, or the ETag is of another representation"}
	errLoginsInFlight     = &Error{Code: codeTooMany, Message: "too many logins for this username are being checked at once: retry in a moment", RetryAfter: time.Second}
	errNothingToMatch     = &Error{Code: codePrecondition, Message: "If-Match names a current version, and there is none: it does not exist"}
)

// maxFieldErrors caps the entries of one {"errors": …} answer, so a body
// with thousands of unknown fields cannot make a huge answer.
const maxFieldErrors = 100

// fieldErrors are per-field problems, answered as 400 {"errors": {...}}.
type fieldErrors map[string]string

func (e fieldErrors) Error() string {
	names := slices.Sorted(maps.Keys(e))
	parts := make([]string, 0, min(len(names), 10))
	for _, k := range names[:min(len(names), 10)] {
		parts = append(parts, k+": "+e[k])
	}
	return "invalid fields: " + strings.Join(parts, "; ")
}

// The problems of a name that is nothing to the route: a body's name that
// is no field, a query parameter the route does not take.
const (
	unknownField = "unknown field"
	unknownParam = "unknown query parameter"
)

// isUnknownName reports whether msg only says that its name is nothing to
// the route.
func isUnknownName(msg string) bool { return msg == unknownField || msg == unknownParam }

// capped returns at most maxFieldErrors entries: the problems of real
// fields and parameters before unknown names (a body or query padded with
// junk names must not hide why its username failed), each kind by name.
func (e fieldErrors) capped() fieldErrors {
	if len(e) <= maxFieldErrors {
		return e
	}
	var real, unknown []string
	for name, msg := range e {
		if isUnknownName(msg) {
			unknown = append(unknown, name)
		} else {
			real = append(real, name)
		}
	}
	slices.Sort(real)
	kept := real[:min(len(real), maxFieldErrors)]
	if room := maxFieldErrors - len(kept); room > 0 {
		slices.Sort(unknown)
		kept = append(kept, unknown[:room]...)
	}
	out := make(fieldErrors, len(kept))
	for _, name := range kept {
		out[name] = e[name]
	}
	return out
}

// merge adds the entries of other that e does not have yet, and a real
// problem of a name over e's word that the name is unknown (a query
// parameter called username must not hide what is wrong with the body's).
func (e fieldErrors) merge(other fieldErrors) {
	for k, v := range other {
		if old, ok := e[k]; !ok || isUnknownName(old) && !isUnknownName(v) {
			e[k] = v
		}
	}
}

// allProblems is the answer to a request whose parts (path, query, body)
// were each checked: the first problem that is not about a field (a
// missing resource, a body that does not parse, …) as it is, so the order
// of errs is the order of precedence; else every field problem of every
// part at once; else nil.
func allProblems(errs ...error) error {
	var all fieldErrors
	for _, err := range errs {
		if err == nil {
			continue // before errors.As, whose target escapes: a request without problems allocates nothing here
		}
		var fe fieldErrors
		if !errors.As(err, &fe) {
			return err
		}
		if all == nil {
			all = fieldErrors{}
		}
		all.merge(fe)
	}
	return all.orNil()
}

// orNil is e as an error, or nil when e is empty.
func (e fieldErrors) orNil() error {
	if len(e) == 0 {
		return nil
	}
	return e
}

// errLoginLocked refuses a login for a username whose failures reached the
// limit, until its window ends (wait, at least a second).
func errLoginLocked(wait time.Duration) *Error {
	return &Error{Code: codeTooMany, Message: "too many failed attempts for this username: retry later", RetryAfter: max(wait, time.Second)}
}

package window

import (
	"errors"

	"github.com/quotamesh/quotamesh"
)

// rooted is a sentinel that also matches a root-package sentinel, so that
// code knowing only quotamesh.Limiter can test errors.Is(err,
// quotamesh.ErrInvalidN) on what the registry returns, with no wrapping on
// the request path.
type rooted struct {
	msg  string
	root error
}

func (e *rooted) Error() string        { return e.msg }
func (e *rooted) Is(target error) bool { return target == e.root }

// Sentinel errors. Errors returned by this package wrap one of them (or
// limits.ErrInvalidKey, limits.ErrInvalidRate, limits.ErrNoRule) and name the
// offending value; test with errors.Is.
var (
	// ErrTooManyKeys reports that a new key was refused because the registry
	// already holds Config.MaxKeys windows.
	// It also matches quotamesh.ErrTooManyKeys.
	ErrTooManyKeys error = &rooted{"quotamesh/window: too many keys", quotamesh.ErrTooManyKeys}
	// ErrInvalidN reports a negative request count. It also matches
	// quotamesh.ErrInvalidN.
	ErrInvalidN error = &rooted{"quotamesh/window: invalid n", quotamesh.ErrInvalidN}
	// ErrExceedsLimit reports a request for more tokens than the key's limit
	// allows in a whole window: waiting cannot help. It also matches
	// quotamesh.ErrExceedsLimit.
	ErrExceedsLimit error = &rooted{"quotamesh/window: n exceeds the limit", quotamesh.ErrExceedsLimit}
	// ErrWindowChanged reports a rate change that would change a window's
	// length; a window's length is fixed, so the caller must replace the
	// window (Registry.SetTable does).
	ErrWindowChanged = errors.New("quotamesh/window: window length changed")
	// ErrInvalidConfig reports a Config field out of range.
	ErrInvalidConfig = errors.New("quotamesh/window: invalid config")
)

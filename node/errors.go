package node

import "errors"

// Sentinel errors. Errors returned by this package wrap one of them, or one
// of the root package's (quotamesh.ErrClosed, ErrInvalidN, ...), or an error
// of the package that failed (consensus, transport, limits), and name the
// bad value; test with errors.Is.
var (
	// ErrInvalidConfig reports a Config field out of range; the message
	// names the field and its value.
	ErrInvalidConfig = errors.New("quotamesh/node: invalid config")
	// ErrStopped reports a call on a node that is shutting down or has shut
	// down. Decisions (AllowN) wrap quotamesh.ErrClosed as well.
	ErrStopped = errors.New("quotamesh/node: stopped")
	// ErrNotServing reports a decision asked of a node that does not serve
	// yet: it is not a member of the cluster, or has not heard a majority of
	// the members since it became one. Decisions wrap
	// quotamesh.ErrUnavailable as well.
	ErrNotServing = errors.New("quotamesh/node: not serving yet")
	// ErrNotReloadable reports a Reload whose configuration differs from the
	// running one in a field that only a restart can change; the message
	// names the fields. Nothing was applied.
	ErrNotReloadable = errors.New("quotamesh/node: field cannot change at run time")
	// ErrForbidden reports an admin operation from a client whose
	// certificate does not name an admin.
	ErrForbidden = errors.New("quotamesh/node: forbidden")
)

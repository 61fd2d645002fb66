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
	// running one in fields that only a restart can change; the message
	// names them. What may change was applied all the same.
	ErrNotReloadable = errors.New("quotamesh/node: field cannot change at run time")
	// ErrForbidden reports a client request its certificate's role does not
	// allow (transport.Identity.May): a change from a decide-only client, a
	// status read from an anonymous one.
	ErrForbidden = errors.New("quotamesh/node: forbidden")
	// ErrDataDirLocked reports a DataDir another process holds; the message
	// names the holder.
	ErrDataDirLocked = errors.New("quotamesh/node: data directory in use")
	// ErrCertificates reports certificates that cannot be loaded or do not
	// fit this node, at Start or Reload; the message names the file.
	ErrCertificates = errors.New("quotamesh/node: certificates")
)

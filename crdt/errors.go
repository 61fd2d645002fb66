package crdt

import "errors"

// Sentinel errors. Errors returned by this package wrap one of them and name
// the offending field and value; test with errors.Is.
var (
	// ErrInvalidConfig reports a Config field out of range.
	ErrInvalidConfig = errors.New("quotamesh/crdt: invalid config")
	// ErrInvalidOrigin reports an origin whose node ID or incarnation is not
	// allowed (see OriginID.Validate).
	ErrInvalidOrigin = errors.New("quotamesh/crdt: invalid origin")
	// ErrInvalidSlot reports own slot counts that cannot be recorded (bad key
	// or epoch).
	ErrInvalidSlot = errors.New("quotamesh/crdt: invalid slot")
	// ErrInvalidDelta reports a delta that breaks a rule of the format: a
	// field out of range, an index that points nowhere, an entry ahead of its
	// origin's asOf. Merge rejects such a delta whole and changes nothing.
	ErrInvalidDelta = errors.New("quotamesh/crdt: invalid delta")
	// ErrFromSelf reports a delta whose sender is the store's own origin: a
	// frame looped back or a second process running with this incarnation.
	ErrFromSelf = errors.New("quotamesh/crdt: delta from own origin")
)

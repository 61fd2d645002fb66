package engine

import "errors"

// Sentinel errors. Errors returned by this package wrap one of them (or an
// error of the window, crdt or limits packages) and name the bad value.
var (
	// ErrInvalidConfig reports a Config field out of range.
	ErrInvalidConfig = errors.New("quotamesh/engine: invalid config")
	// ErrNotMember reports a frame from a node that is not a cluster member:
	// it is dropped without reaching the store.
	ErrNotMember = errors.New("quotamesh/engine: sender is not a member")
	// ErrReplay reports a frame whose sequence number is not above the last
	// one accepted from that peer on its current stream.
	ErrReplay = errors.New("quotamesh/engine: replayed frame")
	// ErrWrongSender reports a frame whose delta claims another sender than
	// the peer it arrived from.
	ErrWrongSender = errors.New("quotamesh/engine: delta from another sender")
	// ErrWrongCluster reports a Hello from a node of another cluster.
	ErrWrongCluster = errors.New("quotamesh/engine: peer of another cluster")
	// ErrInvalidRequest reports a lease request with a negative count.
	ErrInvalidRequest = errors.New("quotamesh/engine: invalid request")
)

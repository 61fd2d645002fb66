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
	// ErrStaleFrame reports a frame its sender sent before this node
	// resumed from a stall longer than QuotaValidity (a paused process): it
	// waited in the socket, and its counts and quotas are as old as the
	// stall. It is dropped unmerged: it is no sign that the sender is alive
	// now (design.md §7, "Resuming").
	ErrStaleFrame = errors.New("quotamesh/engine: frame from before this node resumed")
	// ErrInvalidRequest reports a lease request with a negative count.
	ErrInvalidRequest = errors.New("quotamesh/engine: invalid request")
)

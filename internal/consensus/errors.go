package consensus

import (
	"errors"
	"fmt"

	"github.com/quotamesh/quotamesh/limits"
)

// Sentinel errors. Errors returned by this package wrap one of them (or one of
// limits' sentinels: ErrNoRule, ErrInvalidRate, ErrInvalidPattern,
// ErrInvalidKey, ErrTooManyRules) and say what was asked; test with
// errors.Is. Errors that come back from the leader through a Forwarder keep
// their identity: they travel as an error code and are rebuilt around the
// same sentinel on this side.
var (
	// ErrNotLeader reports that a leader-only operation reached a node that
	// is not the leader. Store methods retry it internally until their
	// context ends; callers see it only wrapped in ErrTimeout.
	ErrNotLeader = errors.New("quotamesh/consensus: not the leader")
	// ErrNoLeader reports that no leader is known: an election is running, or
	// a majority of the voters cannot be reached.
	ErrNoLeader = errors.New("quotamesh/consensus: no leader")
	// ErrClosed reports a call on a closed Store, or on a Store whose Raft
	// instance has stopped.
	ErrClosed = errors.New("quotamesh/consensus: closed")
	// ErrTimeout reports that the caller's context ended before the
	// operation completed. For a write the outcome may be unknown: the
	// message says whether the change was proposed, committed or not sent.
	ErrTimeout = errors.New("quotamesh/consensus: timed out")
	// ErrBadRequest reports a forwarded request or response that does not
	// decode, or that a peer sent with an unknown version or operation.
	ErrBadRequest = errors.New("quotamesh/consensus: malformed request")
	// ErrConfig reports an invalid Config; the message names the field and
	// the bad value.
	ErrConfig = errors.New("quotamesh/consensus: invalid config")
	// ErrForbidden reports a forwarded request its sender may not make
	// (see Store.HandleForwardFrom).
	ErrForbidden = errors.New("quotamesh/consensus: forbidden")
	// ErrAddressInUse reports a join at an address another member already
	// has. Two nodes cannot listen on one address, but a node that merely
	// claims an address must not evict the member there: remove the old
	// member first (Leave) if it is really gone.
	ErrAddressInUse = errors.New("quotamesh/consensus: address in use by another member")
	// ErrDataDir reports a DataDir that Open cannot use: its Raft log or
	// snapshots cannot be read or do not fit together, or it holds the state
	// of another node or another cluster. The message names the path and what
	// is wrong with it. The node must not start from it; if its log is lost,
	// remove the node from the cluster (Leave), clear the directory and join
	// again.
	ErrDataDir = errors.New("quotamesh/consensus: unusable data directory")
)

// code is how an error crosses the wire between a follower and the leader.
// Values are part of the forwarding protocol: never renumber them.
type code uint8

const (
	codeOK code = iota
	codeNotLeader
	codeNoLeader
	codeClosed
	codeTimeout
	codeBadRequest
	codeNoRule
	codeInvalidRate
	codeInvalidPattern
	codeInvalidKey
	codeTooManyRules
	codeDuplicateRule
	codeInternal // any other error; rebuilt as a plain error with its text
	codeForbidden
	codeAddressInUse
	codeInvalidReset
)

// sentinels maps codes to the errors they stand for, in the order codeOf
// tests them.
var sentinels = []struct {
	code code
	err  error
}{
	{codeNotLeader, ErrNotLeader},
	{codeNoLeader, ErrNoLeader},
	{codeClosed, ErrClosed},
	{codeTimeout, ErrTimeout},
	{codeBadRequest, ErrBadRequest},
	{codeNoRule, limits.ErrNoRule},
	{codeInvalidRate, limits.ErrInvalidRate},
	{codeInvalidPattern, limits.ErrInvalidPattern},
	{codeInvalidKey, limits.ErrInvalidKey},
	{codeTooManyRules, limits.ErrTooManyRules},
	{codeDuplicateRule, limits.ErrDuplicateRule},
	{codeForbidden, ErrForbidden},
	{codeAddressInUse, ErrAddressInUse},
	{codeInvalidReset, limits.ErrInvalidReset},
}

// codeOf is the wire code of err.
func codeOf(err error) code {
	if err == nil {
		return codeOK
	}
	for _, s := range sentinels {
		if errors.Is(err, s.err) {
			return s.code
		}
	}
	return codeInternal
}

// errorOf rebuilds an error from its wire code and text. The text is the
// original error's message, so the rebuilt error prints exactly as it did on
// the node that produced it, and errors.Is finds the same sentinel.
func errorOf(c code, msg string) error {
	if c == codeOK {
		return nil
	}
	for _, s := range sentinels {
		if s.code == c {
			if msg == "" {
				return s.err
			}
			return &remoteError{sentinel: s.err, msg: msg}
		}
	}
	if msg == "" {
		msg = fmt.Sprintf("error code %d", c)
	}
	return errors.New(msg)
}

// remoteError is an error that came back from another node: it prints as the
// original did and unwraps to the same sentinel.
type remoteError struct {
	sentinel error
	msg      string
}

func (e *remoteError) Error() string { return e.msg }
func (e *remoteError) Unwrap() error { return e.sentinel }

// retryable reports whether an operation that failed with err may be sent
// again (to the same or a new leader) with the same request ID.
func retryable(err error) bool {
	return errors.Is(err, ErrNotLeader) || errors.Is(err, ErrNoLeader)
}

package node

import (
	"context"
	"fmt"
	"time"

	"github.com/quotamesh/quotamesh"
	"github.com/quotamesh/quotamesh/window"
)

// Allow is AllowN(ctx, key, 1).
func (n *Node) Allow(ctx context.Context, key string) (quotamesh.Decision, error) {
	return n.AllowN(ctx, key, 1)
}

// AllowN decides whether k requests for key may proceed, all or none, on
// this node alone: it never waits for the network or for Raft, and ignores
// ctx. For a key this node already tracks it is lock-free and allocates
// nothing: a clock read, the key's window (one sync.Map load, a
// compare-and-swap on admission) and a conversion. The first request for a
// key creates its window (the registry's and the engine's locks, once).
//
// Errors: quotamesh.ErrInvalidN for k ≤ 0, limits.ErrInvalidKey for a
// malformed key, quotamesh.ErrExceedsLimit for k above the key's whole
// limit (never admissible), quotamesh.ErrTooManyKeys for a new key while
// MaxKeys windows exist (the decision then holds the WhenFull answer),
// quotamesh.ErrClosed (and ErrStopped) once Shutdown has begun, and
// quotamesh.ErrUnavailable (and ErrNotServing) before the node serves: while
// it is not a member, and until it first hears a majority after becoming
// one and its limit table has caught up with the Raft leader's commit. Denials under a quota are not errors: Allowed is false and
// RetryAfter says when to try again.
func (n *Node) AllowN(_ context.Context, key string, k int64) (quotamesh.Decision, error) {
	if s := n.state.Load(); k <= 0 || s != stateServing {
		return n.refuse(s, key, k)
	}
	// The registry's answer and errors are already the root package's
	// (window.Decision is quotamesh.Decision; its sentinels match the root
	// ones): returned as they are, nothing is copied or wrapped. A denial
	// may be a shadow rule's, which lets it through (shadow.go).
	d, err := n.eng.AllowN(n.now(), key, k)
	if !d.Allowed && !d.Unlimited {
		return n.unshadow(key, k, d, err)
	}
	return d, err
}

// Admit decides one request for key and returns only the verdict: the
// embedded hot path for callers that need no remaining count, retry-after
// or error, as x/time/rate's Allow. Lock-free, allocation-free and
// non-blocking for a key that has a window; false while the node does not
// serve, and for a malformed key.
func (n *Node) Admit(key string) bool {
	if n.state.Load() != stateServing {
		return false
	}
	return n.eng.Admit(n.now(), key) || n.admitShadow(key)
}

// refuse answers AllowN when the node is not serving (in state s, as
// AllowN read it: read again, it could have changed) or k is not positive.
func (n *Node) refuse(s int32, key string, k int64) (quotamesh.Decision, error) {
	if s != stateServing {
		return quotamesh.Decision{RetryAfter: time.Second}, n.notServing(s)
	}
	return quotamesh.Decision{RetryAfter: window.Never}, fmt.Errorf("%w: n %d for key %q", quotamesh.ErrInvalidN, k, clip(key))
}

var (
	errClosed     error = &rootError{quotamesh.ErrClosed, ErrStopped}
	errNotServing error = &rootError{quotamesh.ErrUnavailable, ErrNotServing}
)

func (n *Node) notServing(state int32) error {
	if state == stateClosed {
		return errClosed
	}
	return errNotServing
}

// rootError carries the identity of a root-package sentinel (for code that
// knows only quotamesh.Limiter) and of the error that caused it (a window,
// limits or node error, which also gives the message).
type rootError struct {
	root  error
	cause error
}

// Error is the cause's message, which names the key and n.
func (e *rootError) Error() string { return e.cause.Error() }

// Unwrap gives errors.Is both identities.
func (e *rootError) Unwrap() []error { return []error{e.root, e.cause} }

// clip shortens a key for an error message.
func clip(s string) string {
	if len(s) > 64 {
		return s[:64] + "..."
	}
	return s
}

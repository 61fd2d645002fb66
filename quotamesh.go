// Package quotamesh is the public vocabulary of QuotaMesh, a distributed rate
// limiter that needs no central store: the Decision a limiter returns, the
// Limiter interface that both the remote SDK (package client) and an embedded
// node (package node) satisfy, and the errors callers branch on.
//
// A service picks remote or embedded with configuration and codes against
// Limiter either way:
//
//	var lim quotamesh.Limiter = c // *client.Client, or a *node.Node
//	d, err := lim.Allow(ctx, "orders.create")
//	if err == nil && !d.Allowed {
//		// answer 429, retry after d.RetryAfter
//	}
package quotamesh

import (
	"context"
	"errors"
	"time"

	"github.com/quotamesh/quotamesh/limits"
)

// Decision is the answer to one Allow or AllowN.
type Decision struct {
	// Allowed reports whether the request was admitted.
	Allowed bool
	// Remaining is how many more requests this node (or SDK lease) could
	// admit right now under its share; zero when denied.
	Remaining int64
	// RetryAfter is, when denied, the earliest time after which a retry may
	// succeed; zero when allowed.
	RetryAfter time.Duration
	// Limit is the rate governing the key; the zero Rate when Unlimited.
	Limit limits.Rate
	// Unlimited reports that no rule matched the key (the node's unknown-key
	// policy then decided Allowed).
	Unlimited bool
	// Decided is when a node of the cluster decided the call, by that
	// node's clock (the one its slots follow): set when the SDK asked a
	// node (strict mode, or a key without a lease) and the node's version
	// reports it. An admission counts in the node's window at this time,
	// so it says in which slot, and which second aligned on the wall
	// clock, the admission fell; the caller's own clock at the answer can
	// be a round trip later. The zero Time when nothing was asked of a
	// node: the SDK decided alone from a lease, or the limiter is an
	// embedded node; the time of the call is then the decision's time.
	Decided time.Time
}

// Limiter decides whether requests for a key may proceed. Implementations
// are safe for concurrent use.
type Limiter interface {
	// Allow is AllowN(ctx, key, 1).
	Allow(ctx context.Context, key string) (Decision, error)
	// AllowN asks to admit n requests for key at once: all or none. A
	// cancelled or expired ctx returns its error; an embedded node never
	// waits, so it ignores ctx.
	AllowN(ctx context.Context, key string, n int64) (Decision, error)
	// Close releases the limiter. Calls after Close return ErrClosed.
	Close() error
}

// Sentinel errors shared by every Limiter. Errors returned wrap one of these
// (or a limits error for a malformed key) and name the bad value.
var (
	// ErrInvalidN reports n ≤ 0 passed to AllowN.
	ErrInvalidN = errors.New("quotamesh: n must be positive")
	// ErrExceedsLimit reports n larger than the key's whole limit: it can
	// never be admitted.
	ErrExceedsLimit = errors.New("quotamesh: n exceeds the limit")
	// ErrTooManyKeys reports that the node tracks as many keys as it may and
	// refused a new one (its when-full policy decided the answer).
	ErrTooManyKeys = errors.New("quotamesh: too many keys")
	// ErrClosed reports a call on a closed limiter.
	ErrClosed = errors.New("quotamesh: closed")
	// ErrUnavailable reports that no node could be reached in time.
	ErrUnavailable = errors.New("quotamesh: no node available")
	// ErrOverloaded reports that the node answering was past its capacity
	// and refused the request at once, without deciding it (the SDK applies
	// its overload policy first: client.WithOverload).
	ErrOverloaded = errors.New("quotamesh: node overloaded")
)

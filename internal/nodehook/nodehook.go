// Package nodehook carries what only tests and the fault suite give a node:
// options that node.Start reads from its context, so that node.Config, the
// public surface, holds none of them. Code outside this module cannot import
// an internal package, so no embedder can set them, and a node started with
// a context that carries none is a production node.
//
// The fault layer itself (the faultnet socket and the /debug/fault
// endpoints) is package faultctl, which imports faultnet; this package does
// not, so a program that never names faultctl carries neither. The
// quotamesh binary names it only when built with the fault tag
// (docs/faults.md).
package nodehook

import (
	"context"
	"net"
	"net/http"
	"time"

	"github.com/rs/zerolog"
)

// Options are a node's test-only options. The zero value changes nothing.
type Options struct {
	// Fault, if not nil, attaches the fault layer as the node starts
	// (faultctl.Attach). Anyone who reaches the admin listener can then skew
	// the node's clock and break its network; the node logs it loudly.
	Fault Fault
	// UnsafeIgnoreShare makes the node admit up to the whole limit as if it
	// were alone, ignoring what its peers hold: a deliberately broken node,
	// for the fault suite to prove that its checkers catch over-admission.
	// The node logs it loudly.
	UnsafeIgnoreShare bool
	// Wall, if not nil, is what the node times and stamps with off the
	// request path (uptime, sync lag, log rate limits, the durations of its
	// ticks and of shutdown) instead of its coarse clock read exactly.
	// Decisions keep the coarse clock, so that reading it stays one inlined
	// atomic load; timers and tickers run on the runtime's clock.
	Wall func() time.Time
	// RaftTimeouts, if its HeartbeatTimeout is not zero, replaces Raft's
	// heartbeat, election and leader-lease timeouts: tests on a busy
	// machine under the race detector need more than the LAN defaults to
	// keep a leader.
	RaftTimeouts RaftTimeouts
}

// RaftTimeouts are Raft's timing knobs (consensus.Config's fields of the
// same names).
type RaftTimeouts struct {
	HeartbeatTimeout, ElectionTimeout, LeaderLeaseTimeout time.Duration
}

// Fault attaches the fault layer to a node that is starting. An error
// fails Start.
type Fault func(Target) (Attached, error)

// Target is what the fault layer may act on.
type Target struct {
	// PacketConn is the socket the node was given (node.Config.PacketConn),
	// or nil when it opens its own on Listen.
	PacketConn net.PacketConn
	Listen     string
	// Clock is the node's test-only clock offset.
	Clock Offset
	// Disk delays the node's writes to its Raft log and stable store (a
	// slow disk).
	Disk Delay
	// Log is the node's admin logger.
	Log zerolog.Logger
	// Seed is for the randomness of a socket the layer opens.
	Seed uint64
}

// Offset moves node time by an offset, backwards too (clock.Skewed, which
// the node also reports in quotamesh_clock_skew_seconds and Status).
type Offset interface {
	SetOffset(time.Duration)
	Offset() time.Duration
}

// Delay is a delay the fault layer sets and the node applies.
type Delay interface {
	SetDelay(time.Duration)
	Delay() time.Duration
}

// Attached is the fault layer on one node.
type Attached struct {
	// PacketConn, if not nil, is the socket the node runs QUIC on instead of
	// Target.PacketConn.
	PacketConn net.PacketConn
	// Close, if not nil, is called once the node's transport has closed, or
	// if Start fails: it closes what the layer opened.
	Close func() error
	// Routes are served on the node's admin listener, by path.
	Routes map[string]http.Handler
}

type ctxKey struct{}

// With returns ctx carrying o, for node.Start.
func With(ctx context.Context, o Options) context.Context {
	return context.WithValue(ctx, ctxKey{}, o)
}

// From returns the options ctx carries, or the zero Options.
func From(ctx context.Context) Options {
	o, _ := ctx.Value(ctxKey{}).(Options)
	return o
}

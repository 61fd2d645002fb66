// Package peer starts the rate limiters the peer benchmark compares and
// hands each node's decisions to the load generator as a
// quotamesh.Limiter:
//
//   - QuotaMesh: `quotamesh serve` processes (internal/localcluster), the
//     rules set through Raft, one SDK client per node, in lease (default)
//     or strict mode.
//   - Gubernator v2 (github.com/gubernator-io/gubernator/v2), used as a
//     library: each daemon runs in a process of its own, this program run
//     again as `guberd` (RunDaemon), with static peers on loopback; one
//     gRPC client per daemon sends GetRateLimits with GLOBAL behaviour,
//     batching the calls queued while earlier ones are in flight (up to
//     Gubernator's 1,000 per request).
//
// Both run as three processes on 127.0.0.x, so their CPU time is read
// from /proc the same way (internal/cputime) and apart from the load
// generator's; Gubernator's daemons in the benchmark's own process would
// share its Go runtime, scheduler and garbage collector with the SDK
// clients and the generator, and their CPU could not be told apart.
//
// What it promises: every process and goroutine it starts is stopped and
// waited for by the Close or Stop of what started it.
package peer

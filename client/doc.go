// Package client is QuotaMesh's Go SDK: a remote limiter that satisfies
// quotamesh.Limiter (as an embedded node.Node does), admin calls for the
// limit table, CurrentQPS and Reset of keys (quotamesh.Inspector; the key's
// home node answers CurrentQPS), and net/http middleware (design.md §10).
//
//	c, err := client.Dial(ctx, []string{"10.0.0.1:7000", "10.0.0.2:7000"},
//		client.WithCA(pool), client.WithCertificate(cert))
//	...
//	d, err := c.Allow(ctx, "orders.create")
//
// # What it promises
//
//   - Keys have a home. Dial dials every address at once, asks the first
//     node to answer for the membership (mutual TLS, ALPN
//     quotamesh-client/3, or /2 with an older node), and connects to every
//     member. Each key's decisions go to its home node, chosen by
//     rendezvous hashing over the members (package internal/route): every
//     SDK that reaches the same members sends a key to the same node, so in
//     the common case one node sees all of a key's demand and decides it as
//     exactly as a lone node does, however the key's calls are spread over
//     clients. A node the SDK cannot reach is skipped: its keys go to the
//     next node in their order, and the nodes that then share a key share
//     its limit by the cluster's algorithm (design.md §7). WithNearest
//     sends every key to the nearest node instead (one connection), for
//     clients that must talk to one node.
//   - Per connection, all calls share one QUIC connection and one request
//     stream; a writer goroutine sends whatever callers queued while its
//     previous write was in flight as one frame, and a reader goroutine
//     matches replies to callers by request ID. At most WithMaxInFlight
//     requests are queued or in flight; callers beyond wait within their
//     context.
//   - Failover. When a connection ends (the node closed it, said it is
//     shutting down, or was silent for the QUIC idle timeout, 1 s by
//     default) its keys move to their next node at once, the round trips
//     that got no answer are sent there, and the SDK dials the node again
//     with backoff (50 ms doubling to 2 s, with jitter; a refused
//     certificate waits the longest). A call that cannot be answered
//     within the request timeout (WithRequestTimeout, 500 ms by default)
//     fails with quotamesh.ErrUnavailable; one whose context ends first
//     returns the context's error. A decision sent twice may be counted by
//     both nodes: the cluster then admits less, never more. The membership
//     is asked for again every 5 s.
//   - Leases (the default) for keys called often. A key whose calls per
//     lease TTL (100 ms) are few is decided by its home node call by call:
//     one round trip, exact, as in strict mode. Once a key's calls reach 4
//     per TTL, its decisions ask for a lease alongside; the lease rides on
//     the answer, and later calls are decided locally from it: a few
//     atomic operations, no lock, no allocation, no wait, ignoring ctx as
//     an embedded node does. A call without a usable lease is one round
//     trip, never a wait for a lease and then another: the default mode
//     costs no more per call than strict mode. A background goroutine
//     renews a lease three quarters used or half through its TTL (all
//     keys due in one frame per node), settles the lease it replaces with
//     the node that granted it (tokens used and not), and reports calls it
//     denied locally. The node holds a lease's tokens from the grant and
//     counts as admitted only those settled as used, in the slot it hears
//     of them: never earlier than their use, so leases never let a window
//     see more than its limit; a lease never settled counts as fully used
//     when it expires at the node. A key the node said has no room is
//     denied locally until the RetryAfter it gave (at most 20 ms). Keys
//     idle for 5 s are forgotten; at most WithMaxKeys keys hold state, and
//     further keys are decided call by call.
//   - Strict mode (WithStrict). Every decision is a round trip to the
//     key's home node, pipelined and batched with other callers'.
//   - Bad input is refused before any network traffic: a malformed key
//     (limits.ValidateKey) with limits.ErrInvalidKey, n ≤ 0 with
//     quotamesh.ErrInvalidN, any call after Close with quotamesh.ErrClosed.
//     Errors a node reports arrive as codes and are rebuilt into the same
//     sentinels (this package's errors.go), never by comparing strings. A
//     certificate the nodes refuse fails Dial at once with ErrCertificate.
//   - Close settles every lease with the node that granted it (waiting at
//     most 100 ms), fails the calls in progress with quotamesh.ErrClosed,
//     closes the connections, and waits for every goroutine the client
//     started.
//
// # HTTP
//
// Middleware admits each request under a key computed from it and answers
// 429 Too Many Requests with Retry-After and the RateLimit and
// RateLimit-Policy fields of draft-ietf-httpapi-ratelimit-headers-11
// (http.go).
package client

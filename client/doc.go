// Package client is QuotaMesh's Go SDK: a remote limiter that satisfies
// quotamesh.Limiter (as an embedded node.Node does), admin calls for the
// limit table, and net/http middleware (design.md §10).
//
//	c, err := client.Dial(ctx, []string{"10.0.0.1:7000", "10.0.0.2:7000"},
//		client.WithCA(pool), client.WithCertificate(cert))
//	...
//	d, err := c.Allow(ctx, "orders.create")
//
// # What it promises
//
//   - One connection. Dial dials every address at once and keeps the first
//     node to complete the handshake (mutual TLS, ALPN quotamesh-client/1):
//     the nearest reachable one. All calls share one QUIC connection and
//     one request stream; a writer goroutine sends whatever callers queued
//     while its previous write was in flight as one frame, and a reader
//     goroutine matches replies to callers by request ID. At most
//     WithMaxInFlight requests are queued or in flight; callers beyond
//     wait within their context.
//   - Failover. When the connection ends (the node closed it, said it is
//     shutting down, or was silent for the QUIC idle timeout, 1 s by
//     default) the SDK connects to the nearest node that answers, with
//     backoff while none does, and sends again the round trips that got no
//     answer. A call that cannot be answered within the request timeout
//     (WithRequestTimeout, 500 ms by default) fails with
//     quotamesh.ErrUnavailable; one whose context ends first returns the
//     context's error. A decision sent twice may be counted by both nodes:
//     the cluster then admits less, never more.
//   - Leases (the default). The SDK decides locally from short leases of
//     its node's share (YouTube Doorman's approach): a decision is a few
//     atomic operations on the key's token counter, with no lock, no
//     allocation and no wait, and ignores ctx, as an embedded node does.
//     The first call for a key waits for its first lease, as does a call
//     after the key's lease lapsed from disuse and a call that finds its
//     lease spent when the node had granted all the SDK asked (the SDK
//     asked too little); a call whose lease is spent because the node's
//     room ran out is denied locally with a RetryAfter. A background
//     goroutine renews every key in use whose lease is half used or half
//     expired, all keys due in one frame, asking for the key's observed
//     demand (admitted plus denied calls per second) times the lease TTL,
//     reports that demand to the node, and returns unused tokens to the
//     node that granted them. A key called less than once per lease TTL
//     would need a new lease at every call: after its lease lapsed it is
//     decided by the node until its calls come faster. A call for more
//     tokens than any lease of the key held is decided by the node too.
//     Keys idle for 40 lease TTLs are forgotten; at most WithMaxKeys keys
//     hold leases, and further keys are decided by round trips.
//   - Strict mode (WithStrict). Every decision is a round trip to the
//     node, pipelined and batched with other callers'. It admits exactly
//     what the node's window admits, at the cost of a round trip per call
//     and of the connection's ceiling (docs/design.md §10 has the numbers).
//   - Bad input is refused before any network traffic: a malformed key
//     (limits.ValidateKey) with limits.ErrInvalidKey, n ≤ 0 with
//     quotamesh.ErrInvalidN, any call after Close with quotamesh.ErrClosed.
//     Errors a node reports arrive as codes and are rebuilt into the same
//     sentinels (this package's errors.go), never by comparing strings.
//   - Close returns the unused tokens of every lease (waiting at most
//     100 ms), fails the calls in progress with quotamesh.ErrClosed, closes
//     the connection, and waits for every goroutine the client started.
//
// # What leases cost in accuracy
//
// A node counts the tokens it grants in its window at grant time, so tokens
// held by SDKs are in the cluster's counts and in the bound of design.md §7
// whether or not they are used. What leases change is when a token is used:
// up to the lease TTL (50 ms) after the node counted it. A window of the
// node's slots can therefore see up to one lease more than the limit
// admitted by the SDK, a lease being at most the node's MaxLeaseFraction of
// the limit (a tenth) and in practice the key's demand over one TTL:
// against a lone node at 1000/s with 3.4× the limit offered, every run of
// 10 slots held 989 to 1052 admissions (TestLeaseAccuracy). Everything
// else errs towards admitting less: tokens held unused until they are
// returned, tokens of a node that died (never returned), a decision sent
// twice across a failover, and renewals delayed when callers keep every
// core busy (the SDK's goroutines then wait for the Go scheduler). The
// node's window frees room at slot edges, so a second of real time that
// straddles one can see up to twice the limit whether leases are used or
// not (design.md §3).
//
// # HTTP
//
// Middleware admits each request under a key computed from it and answers
// 429 Too Many Requests with Retry-After and the RateLimit and
// RateLimit-Policy fields of draft-ietf-httpapi-ratelimit-headers-11
// (http.go).
package client

// Package node runs one QuotaMesh node: the shell around the engine that
// owns every goroutine, timer and socket (docs/design.md §11). The binary
// (cmd/quotamesh) runs one; a Go service can embed one and decide with
// Node.AllowN, a lock-free in-memory call.
//
// # What a node promises
//
//   - Decisions never wait. AllowN on a key the node already tracks is a
//     clock read (three atomic loads), one sync.Map load and a
//     compare-and-swap: no lock, no channel, no allocation, no network, no
//     Raft. A new key takes the engine's slow path once.
//   - It admits only what it may. A node serves decisions only once it is a
//     member and has heard at least half of the members (itself included);
//     before, AllowN returns quotamesh.ErrUnavailable. Under the
//     conservative policy a node that stops hearing a strict majority fences
//     itself after FenceAfter (admits nothing new) and /readyz says so.
//   - Limits come from Raft, from any node. SetLimit, DeleteLimit, GetLimit
//     and ListLimits (and the admin requests of the client protocol) go
//     through consensus from whichever node is asked; each node applies the
//     committed table as soon as Raft delivers it, and the request path
//     reads it with one atomic load.
//   - Keys can be inspected and reset. CurrentQPS reports a key's rule,
//     rates and room as this node sees them, never on the request path;
//     Reset agrees through Raft on a slot edge from which every node counts
//     the key's admissions afresh, also a node that applies it late
//     (design.md §8, "Resets"). Node satisfies quotamesh.Inspector.
//   - Counts reach the peers every SyncInterval. One goroutine ticks the
//     engine: it mirrors the windows, recomputes quotas and sends each peer
//     its delta; a busy peer is skipped (the next delta covers it), so a
//     slow peer never delays the others or grows a queue.
//   - Only members count. Sync frames from a node that is not a member, or
//     that fail a check (another cluster, a replay, a bad delta, bytes that
//     do not decode), change nothing: they are counted in
//     quotamesh_frames_rejected_total{reason} and logged at most once a
//     second per peer and reason. Forwarded consensus requests carry the
//     sender's certificate identity, and a node that is not a member may
//     only ask to join as itself (consensus.Store.HandleForwardFrom).
//   - Clients are bounded. Each client stream answers frames as they
//     arrive, holds at most a few reply frames for a slow reader, and runs
//     admin operations beside the decisions, never in front of them; with
//     RequireClientCert, admin operations need a certificate naming an
//     admin.
//   - Shutdown is ordered and complete. Shutdown stops taking clients,
//     stops the loops, sends a last delta to every peer, leaves the cluster
//     if configured to, stops Raft (handing leadership over), closes the
//     transport and the admin listener, and returns once every goroutine
//     the node started has ended. It is idempotent, and Close is Shutdown
//     with a short deadline.
//   - Observable. Prometheus metrics on the node's own registry (never the
//     global one, so several nodes can share a process), /healthz, /readyz,
//     /status and pprof on the admin listener, and zerolog logs with one
//     sub-logger per component. Nothing on the request path logs.
//
// # What a node does not do
//
// It does not handle signals (the binary's main does), does not retry
// admin operations beyond what consensus does, and does not change its
// policy, timings or key bounds at run time (Reload says which fields it
// can change). The fault suite's endpoints, which skew the clock and break
// the network, are not part of it: they are attached only by a binary built
// with the fault tag (docs/faults.md).
package node

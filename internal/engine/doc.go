// Package engine is the synchronous core of a QuotaMesh node: the key
// registry and its lock-free windows, the replicated counts (crdt), the
// admission algorithm (share) and the membership timers, joined into one
// object that does no I/O, starts no goroutine and reads no clock.
//
// It follows the shape of etcd's raft.RawNode: the caller drives it. The
// node (package node) calls Tick every sync interval, hands it the frames
// peers sent (Receive, Hello, PeerUp), sends what Tick asks it to send, and
// serves requests with AllowN and Lease. The simulator (package sim) drives
// many engines the same way on simulated time and links, so what it measures
// is the product, not a model of it.
//
// # Concurrency
//
// AllowN for a key that has a window is lock-free (the registry's hot path).
// Everything else (Tick, Receive, Lease's bookkeeping, the slow path of a new
// key) serialises on one mutex, which the request path never takes for an
// existing key. A new key takes the slow path: the registry's creation lock,
// then the engine's mutex, to give the window its first quota from what the
// cluster knows.
//
// # What a tick does (design.md §7)
//
//  1. Drains the keys written since the last tick and mirrors their new slot
//     counts into the store; closes the store's delta interval.
//  2. Re-evaluates membership: which members were heard within DeadAfter,
//     whether this node is in a strict minority (then, after FenceAfter, it
//     is fenced: quota zero), and, if it hears a strict majority, whose
//     reservation it may reclaim (unreachable for ReclaimAfter).
//  3. Recomputes the quota of every key that changed (own writes, merged
//     deltas) and, every RefreshEvery ticks, of every key still holding
//     counts, with share.Compute.
//  4. Builds each peer's delta (crdt.Store.DeltaFor) and hands it to send.
package engine

// Package engine is the synchronous core of a QuotaMesh node: the key
// registry and its lock-free windows, the replicated counts (crdt), the
// admission algorithm (share) and the membership timers, joined into one
// object that does no I/O, starts no goroutine and reads no clock.
//
// It follows the shape of etcd's raft.RawNode: the caller drives it. The
// node (package node) calls Tick every sync interval, sends the frames the
// returned Ready holds and reports with Advance what went out; it hands the
// engine the frames peers sent (Receive, Hello, PeerUp) and serves requests
// with AllowN and Lease. The simulator (package sim) drives many engines
// the same way on simulated time and links, so what it measures is the
// product, not a model of it.
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
// # Ready and Advance
//
// Tick does no I/O: it returns a Ready, per peer the frames to send (the
// delta's parts, then relays), each numbered. The caller encodes and sends
// them without holding anything of the engine's (Ready.Send does the loop),
// sets each Outbox's Sent to the frames that went out before the first
// failure, and calls Advance(rd). Tick and Advance alternate strictly, from
// one goroutine: Tick panics while a Ready awaits Advance, and Advance
// panics on any Ready but the last one. Between them every other method may
// run (Receive, Hello, PeerUp, PeerDown, AllowN, Lease, SetMembers,
// SetTable, Housekeep, Status); each has the effect it would have had after
// Advance, so the engine ends as if the whole tick had run under its lock
// (the store's pending parts that an acknowledgement or a reset dropped
// meanwhile stay dropped; a stream replaced meanwhile keeps its own
// numbering). The frames are never modified once returned: they may be
// read concurrently with any engine method and kept after Advance.
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
//  4. Builds each peer's delta (crdt.Store.DeltaFor) and, for a peer that
//     misses members this node hears, a relay of them (crdt.Store.RelayFor),
//     and returns them as frames in a Ready; Advance records what was sent.
package engine

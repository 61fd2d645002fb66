// Package crdt is QuotaMesh's replicated state: per-slot G-Counters of what
// every origin admitted and was offered, shipped between nodes as deltas, and
// read back as views (docs/design.md sections 5 and 7).
//
// # Model
//
// An origin is one process incarnation of a node (OriginID). The state is a
// map (origin, key, epoch) → (admitted, offered) in which only the origin
// writes its entries and every value only grows, so merge is the pointwise
// maximum: merging is idempotent, commutative and associative, and a delta
// sent twice, late or out of order changes nothing. Each origin also reports
// asOf, its node time up to which its counts are complete; asOf only grows
// too. A restarted node is a new origin: its peers send it its previous
// incarnation's slots, which it counts like any other origin's until they
// expire, so nothing it admitted before the crash is lost or counted twice.
//
// # Views
//
// A view reads origin j's window in j's own slot numbering, ending at the
// slot of T̂_j = asOf_j + max(0, age_j − grace), where age_j is the local
// time since the store learned asOf_j (back-dated by a relayer's age). Clock
// skew between nodes so never moves a count across a window edge. While j
// reports, its view is frozen at its last report; once j falls silent, its
// view slides with local time after the grace and empties within a window.
// T̂_j never moves back: a late report of an older time cannot resurrect
// slots a view has slid past. Views are cached per key and origin and kept
// exact as deltas are merged, so reading them every tick costs a few
// nanoseconds per origin.
//
// # Deltas
//
// Each Tick closes a delta interval. A peer's delta is the join of the
// intervals after the last one it acknowledged: the store's own slots that
// changed since, and its own asOf (a heartbeat even when nothing changed). A
// peer that acknowledged nothing, or lags more than Config.DeltaIntervals
// behind, gets a full state: every origin the store knows, with ages, and
// all their slots, which is how a restarted node recovers its previous
// incarnation's counts and how origins a node cannot hear reach it. A delta
// larger than a frame is split into parts, each a valid delta; the receiver
// acknowledges the delta once it has merged every part in order.
//
// # Memory
//
// A key keeps, per origin, at most its horizon (Config.Horizon) plus
// MaxLeadSlots plus one slots: up to six as (epoch, counts) pairs of 16
// bytes, beyond that in a ring of admitted counts of 1, 2 or 4 bytes each
// (as its largest count needs), with offered counts for the newest
// MaxDemandSlots+MaxLeadSlots+1 slots only. Offered counts are read by
// demand views alone, which never look further back; an older slot reads
// its admitted count as offered, in every replica alike. A series costs 56
// bytes besides its slots. GC drops slots beyond the horizon, keys without
// slots and silent origins without slots, and gives back what rings no
// longer need; it never changes a view.
//
// # What callers may rely on
//
//   - Time is an argument. Every method that depends on time takes the
//     caller's local time in nanoseconds; a time earlier than one already
//     seen is treated as the later one. The package never reads a clock,
//     starts no goroutine and does no I/O, so a test drives it step by step.
//   - Goroutine safety. A Store is not safe for concurrent use: one
//     goroutine owns it (a node's sync loop). The Deltas it returns share
//     memory with it and with each other: encode or copy them, never modify
//     them.
//   - Zero values. The zero Config is valid and means every default. The
//     zero Store is not usable: create one with NewStore. The zero OriginID
//     means "unset" and is invalid.
//   - Bounds. Everything a delta carries is bounded (MaxDeltaEntries,
//     MaxDeltaOrigins, MaxParts, MaxEpoch, MaxTime, MaxAge, MaxNodeIDLen)
//     and checked by Delta.Validate before Merge changes anything; the
//     memory a key holds is bounded as above.
//   - Errors. Merge, RecordOwn and RecordOwnQuota refuse bad input with an
//     error that wraps one of this package's sentinels (test with
//     errors.Is), and then change nothing; no input makes them panic.
package crdt

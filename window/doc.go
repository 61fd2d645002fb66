// Package window is QuotaMesh's local counting: a lock-free sliding window
// per key (Window) and the set of windows a node keeps (Registry). It is a
// building block of its own: nothing in it needs a cluster, a network or a
// clock.
//
// # What callers may rely on
//
//   - Time is an argument. Every method that depends on time takes now, node
//     time in nanoseconds since the Unix epoch as the caller's clock reads
//     it. The package reads no clock, starts no goroutine, holds no timer
//     and does no I/O, so a test drives it with fixed instants.
//   - Goroutine safety. Every method of Window and Registry is safe for
//     concurrent use. The request path (Window.AllowN, Allow, Decide, Reserve, Settle,
//     RecordOffered; Registry.AllowN, Allow and Admit for a key that has a
//     window) takes no lock, never waits for another goroutine and does not
//     allocate, except in a roll that changes the form a key's slots take
//     (its shards when it gets hot, its dense ring or second ring when it
//     warms, a wider ring), not more than a few times per window length.
//   - Zero values. The zero Config is valid and means every default. The
//     zero Window and the zero Registry are not usable: create them with New
//     and NewRegistry.
//   - Bounds. A registry holds at most Config.MaxKeys windows. A window
//     with at most six non-empty slots is its 176-byte header, whatever its
//     length; more make a ring of its length in slots at 2, 4 or 8 bytes a
//     slot as its counts need (1,200 bytes for a 60 s window with counts
//     under 256), plus 480 bytes for the last minute if it is shorter than
//     one, plus about 64 bytes per processor once a slot sees more than 128
//     requests; a slot's counts saturate at 2^32−1.
//   - Errors. Bad input never panics; errors wrap this package's sentinels
//     or those of package limits, tested with errors.Is.
//
// # What a Window promises
//
// Time is cut into 100 ms slots (limits.Slot); slot e is node time
// [e·100ms, (e+1)·100ms). A rate COUNT/WINDOW has K = WINDOW/100ms slots, and
// a window at time t counts the open slot and the K−1 closed slots before it.
//
//   - Exact gate. Tokens are admitted only while the window's total stays
//     within its quota (the rate's count, or the node's share in a cluster).
//     The check and the update are one compare-and-swap, so concurrent
//     callers never overshoot it, not even by one.
//   - Never early. Every admitted token is attributed to the slot of the
//     caller's time or a later one, never an earlier one, so it occupies
//     capacity from its caller's slot for at least K slots, and no K
//     consecutive slots ever hold more than the quota. A caller whose time
//     is before the open slot (a clock stepping back, a stale reading)
//     counts into the open slot.
//   - Nothing lost or counted twice. Every admission is recorded in exactly
//     one slot, and the total changes only by what the slots record, so it
//     never goes negative.
//   - Slots know their epoch. A sparse slot carries its epoch; a ring
//     position's epoch is implied by the open slot and positions of skipped
//     epochs are cleared, so a ring that wraps
//     never counts a stale slot.
//   - Bad input never panics: n == 0 is allowed and counts nothing, n < 0 is
//     denied and counts nothing, n above the rate's count is denied and not
//     counted as demand.
//
// AllowN is the method to call per request (Decide when the caller needs
// RetryAfter and Remaining); Reserve and Settle serve leases, Refund takes back an admission; Counts, Slots,
// Demand and CurrentQPS are for background work and never move the window.
//
// # What a Registry promises
//
// A Registry maps keys to windows under a limits.Table. Deciding for an
// existing key is one lookup in a lock-free key map and a Window decision:
// lock-free and allocation-free. Keys that match no rule are unlimited and
// never get a window. The number of windows is bounded (Config.MaxKeys);
// idle windows are evicted by Sweep, which the owner calls (the registry has
// no goroutine); limit changes apply in place, or by replacing the window and
// carrying its counts over when the window length changes. Counts that race
// with an eviction or a replacement are migrated by the next Sweep.
package window

// Package window is QuotaMesh's local counting: a lock-free sliding window
// per key (Window) and the set of windows a node keeps (Registry).
//
// # What a Window promises
//
// Time is node time in nanoseconds, passed in by the caller; the package
// starts no goroutine, holds no timer, and takes no lock on the request
// path. Time is cut into 100 ms slots (limits.Slot); slot e is node time
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
//   - Slots know their epoch. A ring position's epoch is implied by the open
//     slot and positions of skipped epochs are cleared, so a ring that wraps
//     never counts a stale slot.
//   - Bad input never panics: n == 0 is allowed and counts nothing, n < 0 is
//     denied and counts nothing, n above the rate's count is denied and not
//     counted as demand.
//
// AllowN is the method to call per request (Decide when the caller needs
// RetryAfter and Remaining); TakeUpTo and Refund serve leases; Counts,
// Slots, Demand and CurrentQPS are for the node's background work and never
// move the window.
//
// # What a Registry promises
//
// A Registry maps keys to windows under a limits.Table. Deciding for an
// existing key is one lookup in a lock-free key map (keymap.go) and a Window
// decision: lock-free and allocation-free. Keys that match no rule are unlimited and never get a
// window. The number of windows is bounded (Config.MaxKeys); idle windows
// are evicted by Sweep, which the owner calls (the registry has no
// goroutine); limit changes apply in place, or by replacing the window and
// carrying its counts over when the window length changes. Counts that race
// with an eviction or a replacement are migrated by the next Sweep.
package window

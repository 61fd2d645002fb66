// Package share computes how much of a key's global limit one node may
// admit: its quota. It is the admission algorithm of docs/design.md §7, as
// pure arithmetic: the caller (engine) gathers the views of every origin, the
// membership and the timers, and calls Compute once per key per tick.
//
// What it promises, given views that are at most τ old:
//
//   - nodes that see the same headroom take shares of it that sum to at most
//     one, so N nodes never each take all of it (no N× overshoot);
//   - room is reserved by allocation, not by use: a reachable member counts
//     as holding the whole quota it announced, so room one node was given and
//     has not used yet is never given to another (design.md §7 explains the
//     bias that counting only use produced);
//   - a node whose demand just appeared gets a positive share (the prior β);
//   - under the conservative policy, an unreachable member keeps the share it
//     had when last heard until the caller reclaims it, so the two sides of a
//     partition together stay within the limit;
//   - quotas are rounded stochastically, so the expected quota equals the
//     fractional one and many small shares do not round down to nothing.
//
// Compute does no I/O, keeps no clock, and allocates nothing once a key's
// State has seen its members.
package share

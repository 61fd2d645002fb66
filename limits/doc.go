// Package limits is QuotaMesh's vocabulary for limits: a Rate ("1000/s"), a
// Pattern ("user:*"), a Rule that binds one to the other, and a Table of rules
// that answers which rule governs a key.
//
// Everything here is pure and immutable: a Table is never changed in place,
// With and Without return new tables, so a table can be shared between the
// request path, Raft's state machine and the CLI without locks.
//
// Rates are counted in slots of Slot (100 ms). A rate's window is a whole
// number of slots from MinWindow (100 ms) to MaxWindow (60 s).
//
// Keys are 1 to MaxKeyLen bytes of printable ASCII without spaces. A rule's
// pattern is either an exact key, or a key with one or more '*' wildcards, each
// matching one or more bytes: "user:*" matches "user:42" but not "user:".
// Request keys may contain '*', which is then an ordinary byte; only patterns
// give it a meaning. When several rules match a key, the exact rule wins, then
// the pattern with the most literal bytes, then the one with fewer wildcards,
// then the lexically smaller pattern, so lookups never depend on insertion
// order.
package limits

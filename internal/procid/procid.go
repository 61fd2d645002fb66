// Package procid tells which P (the Go scheduler's processor, one per
// GOMAXPROCS) the calling goroutine runs on, so that hot counters can be
// sharded per P without false sharing.
//
// The id comes from runtime.procPin and runtime.procUnpin, reached through
// //go:linkname. Pulling runtime symbols is normally refused since Go 1.23,
// but these two are in the runtime's list of linknames kept for compatibility
// ("Do not remove or change the type signature", go.dev/issue/67401): the
// runtime marks them with a push //go:linkname because widely used modules
// (sync.Pool-style per-P structures in bytedance/gopkg, choleraehyq/pid,
// songzhibin97/gkit) depend on them. Pinning only increments the M's lock
// count, which disables preemption; ID unpins before it returns, so it never
// holds the pin across a call that could block. Cost: about 3 ns.
//
// The result is a hint, never an identity: the goroutine may migrate to
// another P the instant ID returns, and GOMAXPROCS may change at run time, so
// callers must use it only to pick a shard (masking it into range) and must
// stay correct when two goroutines pick the same shard at once.
package procid

import (
	_ "unsafe" // for go:linkname
)

//go:linkname procPin runtime.procPin
//go:nosplit
func procPin() int

//go:linkname procUnpin runtime.procUnpin
//go:nosplit
func procUnpin()

// ID returns the id of the P the calling goroutine was running on, in
// [0, GOMAXPROCS). It is only a hint (see the package comment). Safe for
// concurrent use; it does not allocate.
func ID() int {
	id := procPin()
	procUnpin()
	return id
}

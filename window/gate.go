package window

import (
	"math"
	"runtime"
	"time"

	"github.com/quotamesh/quotamesh/internal/procid"
)

// admit gates want tokens at epoch e (all of them, or as many as fit if
// partial), counts want as offered, and returns the tokens granted.
func (w *Window) admit(e, want int64, partial bool) int64 {
	return w.admitCounting(e, want, want, partial)
}

// admitCounting is admit with the offered count given separately. A quota
// that expired before epoch e admits nothing.
func (w *Window) admitCounting(e, want, offered int64, partial bool) int64 {
	if e > w.open.Load() && !w.advance(e) {
		g := w.gateAt(e, want, partial)
		w.countAhead(e, g, offered)
		return g
	}
	g := w.gateAt(e, want, partial)
	w.addOpen(g, offered)
	return g
}

func (w *Window) gateAt(e, want int64, partial bool) int64 {
	if e > w.quotaUntil.Load() {
		return 0
	}
	return w.gate(want, partial)
}

// gate reserves tokens in total. The check and the reservation are one CAS,
// so total never exceeds the quota because of concurrent callers.
func (w *Window) gate(want int64, partial bool) int64 {
	for {
		t := w.total.Load()
		room := w.quota.Load() - t
		g := want
		if g > room {
			if !partial || room <= 0 {
				return 0
			}
			g = room
		}
		if w.total.CompareAndSwap(t, t+g) {
			return g
		}
	}
}

// addOpen counts into the open slot, on this P's shard once the window is
// hot. A denial so writes only this P's cache line.
func (w *Window) addOpen(adm, off int64) {
	c := &w.base
	if s := w.shards.Load(); s != nil {
		c = &s.s[procid.ID()&s.mask].counters
	}
	if adm != 0 {
		c.admitted.Add(adm)
	}
	c.offered.Add(off)
}

// countAhead records counts of a caller whose epoch e is ahead of the open
// slot while another goroutine holds busy. Counting them into the open slot
// could attribute them to the slot being closed, earlier than their own
// epoch, and let them expire early; instead they wait in ahead, which is
// only ever moved into a slot at or after e. The epoch is published before
// the counts, so whoever takes the counts sees an epoch at least theirs.
func (w *Window) countAhead(e, adm, off int64) {
	for a := w.ahead.epoch.Load(); a < e && !w.ahead.epoch.CompareAndSwap(a, e); a = w.ahead.epoch.Load() {
	}
	if adm != 0 {
		w.ahead.admitted.Add(adm)
	}
	w.ahead.offered.Add(off)
	w.settle()
}

func (w *Window) aheadPending() bool {
	return w.ahead.admitted.Load() != 0 || w.ahead.offered.Load() != 0
}

// inflate gives a hot window per-P counters.
func (w *Window) inflate() {
	n := 1
	for n < runtime.GOMAXPROCS(0) && n < maxShards {
		n *= 2
	}
	if n > 1 {
		w.shards.Store(&shardSet{mask: n - 1, s: make([]shard, n)})
	}
}

// retryAfter is the time from now until the oldest admitted slot leaves the
// window; the next slot edge if that is already due or nothing is admitted.
func (w *Window) retryAfter(now int64) time.Duration {
	e := EpochOf(now)
	x := w.expire.Load()
	if x <= e || w.total.Load() <= 0 {
		x = e + 1
	}
	// Count in slots first: x−e is small, x·Slot may not fit in an int64.
	if x-e > math.MaxInt64/slotNs {
		return Never
	}
	// now − e·Slot is now mod Slot (e is the floor), without a division.
	return time.Duration((x-e)*slotNs - (now - e*slotNs))
}

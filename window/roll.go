package window

import (
	"runtime"
)

// advance tries to roll the window to epoch e. It reports whether the open
// slot is now at or after e, so that the caller may count into it; false
// means another goroutine holds busy and the caller must count ahead.
func (w *Window) advance(e int64) bool {
	if !w.busy.CompareAndSwap(0, 1) {
		return e <= w.open.Load()
	}
	w.seq.Add(1)
	if e > w.open.Load() {
		w.rollLocked(e)
	}
	w.settleLocked()
	w.unlock()
	return true
}

// settle moves pending ahead counts into the window if nobody holds busy;
// if somebody does, they will on unlock.
func (w *Window) settle() {
	if w.busy.Load() != 0 || !w.busy.CompareAndSwap(0, 1) {
		return
	}
	w.seq.Add(1)
	w.settleLocked()
	w.unlock()
}

// lock takes busy, waiting for a roll in progress, and makes seq odd.
func (w *Window) lock() {
	for i := 0; !w.busy.CompareAndSwap(0, 1); i++ {
		if i >= 4 {
			runtime.Gosched()
		}
	}
	w.seq.Add(1)
}

// unlock makes seq even and releases busy, then settles ahead counts that
// arrived meanwhile. Paired with countAhead (add counts, then look at busy),
// releasing and then looking at the counts guarantees one of the two sees
// the other: no count is left behind once callers stop.
func (w *Window) unlock() {
	for {
		w.seq.Add(1)
		w.busy.Store(0)
		if !w.aheadPending() || !w.busy.CompareAndSwap(0, 1) {
			return
		}
		w.seq.Add(1)
		w.settleLocked()
	}
}

// settleLocked moves the ahead counts into the open slot, rolling first to
// the largest epoch they may come from. Caller holds busy.
func (w *Window) settleLocked() {
	for w.aheadPending() {
		adm, off := w.ahead.admitted.Swap(0), w.ahead.offered.Swap(0)
		// Read after the swap: every count taken was published with an
		// epoch no larger than this.
		if a := w.ahead.epoch.Load(); a > w.open.Load() {
			w.rollLocked(a)
		}
		w.base.admitted.Add(adm)
		w.base.offered.Add(off)
	}
}

// foldOpen takes the open slot's counters, leaving them at zero.
func (w *Window) foldOpen() (adm, off int64) {
	adm, off = w.base.admitted.Swap(0), w.base.offered.Swap(0)
	if s := w.shards.Load(); s != nil {
		for i := range s.s {
			adm += s.s[i].admitted.Swap(0)
			off += s.s[i].offered.Swap(0)
		}
	}
	return adm, off
}

// openRunning reads the open slot's counters without taking them.
func (w *Window) openRunning() (adm, off int64) {
	adm, off = w.base.admitted.Load(), w.base.offered.Load()
	if s := w.shards.Load(); s != nil {
		for i := range s.s {
			adm += s.s[i].admitted.Load()
			off += s.s[i].offered.Load()
		}
	}
	return adm, off
}

// rollLocked closes the open slot and opens epoch e > open. Caller holds
// busy with seq odd. In order: fold the open counters into the closing
// slot; subtract from total what leaves the window; move the expiry hint;
// keep the closing slot and forget those the window no longer needs
// (slots.go: in a sparse word, or at its position in the dense ring,
// clearing the positions of skipped epochs so that position p always holds
// the one epoch in (open−r, open) congruent to p); update the second ring;
// publish the new open epoch last, so that a caller who sees it counts into
// counters that fold into it or a later slot.
func (w *Window) rollLocked(e int64) {
	o := w.open.Load()
	k, r := int64(w.k), int64(w.r)
	adm, off := w.foldOpen()
	closing := pack(adm, off)
	closingAdm := int64(closing >> 32)
	excess := adm - closingAdm // > 0 only if the slot saturated; keep total equal to what the ring records

	var expired int64
	if last := min(e-k, o); last >= o-k+1 {
		if last == o {
			expired += closingAdm
		}
		a, _ := w.sumClosed(o, o-k+1, last)
		expired += a
	}

	// The expiry hint: every closed slot in the window before c is empty.
	c, next := w.expire.Load()-k, e
	if from := max(c, e-k+1); from <= o {
		if next = w.firstAdmitted(o, from); next == o && closingAdm == 0 {
			next = e
		}
	}
	w.expire.Store(next + k)

	minute := w.secondsRing()
	if g := w.denseRing(); g != nil {
		if e-o >= r {
			// Everything the ring held has left it: back to sparse form.
			w.setDense(nil)
		} else {
			if bitsFor(closing) > g.bits {
				g = w.widen(bitsFor(closing))
			}
			g.store(w.pos(o), closing)
			for x := o + 1; x <= e; x++ {
				g.store(w.pos(x), 0)
			}
		}
	} else {
		// A second ring it makes holds the closing slot already.
		w.closeSparse(o, e, closing)
	}
	if minute != nil {
		if floorDiv(e, slotsPerSecond)-floorDiv(o, slotsPerSecond) >= minuteSeconds && w.denseRing() == nil {
			// The whole minute has gone, and the window is sparse again:
			// its sparse words keep the next.
			w.setSeconds(nil)
		} else {
			w.rollMinute(minute, o, e, closing)
		}
	}
	if d := expired + excess; d != 0 {
		w.total.Add(-d)
	}
	w.open.Store(e)
	if off >= inflateAt && w.shards.Load() == nil {
		w.inflate()
	}
}

// rollMinute advances the second ring from open epoch o to e and adds the
// closed slot o to its second. Position s mod 60 holds second s for the 60
// seconds up to the open slot's; each holds the closed slots of its second.
func (w *Window) rollMinute(sec *minuteRing, o, e int64, closing uint64) {
	so, se := floorDiv(o, slotsPerSecond), floorDiv(e, slotsPerSecond)
	for s := so + 1; s <= min(se, so+minuteSeconds); s++ {
		sec[mod(s, minuteSeconds)].Store(0)
	}
	if closing != 0 && so > se-minuteSeconds {
		b := &sec[mod(so, minuteSeconds)]
		b.Store(addPacked(b.Load(), closing))
	}
}

// minuteRefund lowers the admitted count of closed slot g's second.
func (w *Window) minuteRefund(o, g, m int64) {
	sec := w.secondsRing()
	if sec == nil {
		return // the sparse words hold the minute: the slot was lowered there
	}
	sg, so := floorDiv(g, slotsPerSecond), floorDiv(o, slotsPerSecond)
	if sg <= so-minuteSeconds {
		return
	}
	b := &sec[mod(sg, minuteSeconds)]
	v := b.Load()
	if a := int64(v >> 32); a < maxUint32 { // a saturated bucket stays saturated
		b.Store(uint64(max(a-m, 0))<<32 | v&uint64(maxUint32))
	}
}
func (w *Window) pos(epoch int64) int64 { return mod(epoch, int64(w.r)) }

// read runs f until it ran over a state that no roll, refund or reset
// changed meanwhile. Pending ahead counts are settled first, so that what f
// sees of the open slot is where those counts will stay.
func (w *Window) read(f func()) {
	for i := 0; ; i++ {
		if w.aheadPending() {
			w.settle()
		}
		if s := w.seq.Load(); s&1 == 0 {
			f()
			if w.seq.Load() == s && !w.aheadPending() {
				return
			}
		}
		if i >= 4 {
			runtime.Gosched()
		}
	}
}

func pack(adm, off int64) uint64 { return uint64(sat32(adm))<<32 | uint64(sat32(off)) }

func sat32(v int64) uint32 { return uint32(min(max(v, 0), maxUint32)) }

// addPacked adds two packed pairs, each half saturating.
func addPacked(a, b uint64) uint64 {
	return pack(int64(a>>32)+int64(b>>32), int64(a&uint64(maxUint32))+int64(b&uint64(maxUint32)))
}

func floorDiv(a, b int64) int64 {
	q := a / b
	if a%b < 0 {
		q--
	}
	return q
}

func mod(a, b int64) int64 {
	m := a % b
	if m < 0 {
		m += b
	}
	return m
}

package window

// slotCounts is one slot moved between windows: its epoch and packed counts.
type slotCounts struct {
	epoch int64
	v     uint64
}

// drain takes every count w holds (the ring's history and the open slot),
// oldest first, and leaves w empty, its total lowered by exactly what left
// its window. Admissions still being recorded stay counted in w and are
// taken by the next drain. The registry uses it to carry counts to a
// replacement window and to collect counts that raced with an eviction.
func (w *Window) drain() []slotCounts {
	w.lock()
	w.settleLocked()
	o, k, r := w.open.Load(), int64(w.k), int64(w.r)
	var out []slotCounts
	var adm int64
	w.eachClosed(o, o-r+1, o-1, func(x int64, v uint64) {
		out = append(out, slotCounts{x, v})
		if x > o-k {
			adm += int64(v >> 32)
		}
	})
	a, f := w.foldOpen()
	if a != 0 || f != 0 {
		out = append(out, slotCounts{o, pack(a, f)})
		adm += a
	}
	w.clearSlots()
	w.total.Add(-adm)
	w.expire.Store(o + k)
	w.unlock()
	return out
}

// absorb adds slots (oldest first) to w at their own epochs: the open slot,
// a closed slot (counted in the total if it is in the window), or nowhere if
// older than w remembers. It rolls w forward first if the newest slot is
// after its open slot. The total may so exceed the quota: these are
// admissions that already happened. It returns what it added.
func (w *Window) absorb(slots []slotCounts) (adm, off int64) {
	if len(slots) == 0 {
		return 0, 0
	}
	w.lock()
	if last := slots[len(slots)-1].epoch; last > w.open.Load() {
		w.rollLocked(last)
	}
	w.settleLocked()
	o, k, r := w.open.Load(), int64(w.k), int64(w.r)
	c := w.expire.Load() - k
	for _, s := range slots {
		switch {
		case s.epoch == o:
			a, f := int64(s.v>>32), int64(s.v&uint64(maxUint32))
			w.base.admitted.Add(a)
			w.base.offered.Add(f)
			w.total.Add(a)
			adm, off = adm+a, off+f
		case s.epoch > o-r && s.epoch < o:
			old := w.closedAt(o, s.epoch)
			nv := addPacked(old, s.v)
			w.setClosed(o, s.epoch, nv)
			da, df := int64(nv>>32)-int64(old>>32), int64(nv&uint64(maxUint32))-int64(old&uint64(maxUint32))
			if s.epoch > o-k && da > 0 {
				w.total.Add(da)
				c = min(c, s.epoch)
			}
			w.minuteAdd(o, s.epoch, pack(da, df))
			adm, off = adm+da, off+df
		}
	}
	w.expire.Store(c + k)
	w.unlock()
	return adm, off
}

// minuteAdd adds v to the second ring's bucket of closed slot x. Without a
// second ring the sparse words, where x was added, hold the minute.
func (w *Window) minuteAdd(o, x int64, v uint64) {
	sec := w.secondsRing()
	if sec == nil || v == 0 {
		return
	}
	sx, so := floorDiv(x, slotsPerSecond), floorDiv(o, slotsPerSecond)
	if sx <= so-minuteSeconds {
		return
	}
	b := &sec[mod(sx, minuteSeconds)]
	b.Store(addPacked(b.Load(), v))
}

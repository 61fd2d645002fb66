package window

import (
	"math"
	"slices"
	"sync"
)

// idleWheel holds the registry's entries by the slot from which each may be
// idle: its last write as last seen, plus its idle time. Drain, which sees
// every written key, moves an entry's time forward; Sweep takes the entries
// whose time has come and evicts those that were not written since. An
// entry sits on the wheel once, so the cost follows the keys written, not
// the keys held.
type idleWheel struct {
	mu      sync.Mutex
	buckets map[int64][]*entry // by second (10 slots)
	next    int64              // no bucket before this one holds entries
	n       int
}

const idleBucket = 10 // slots per bucket

// add puts en on the wheel for epoch at, or moves it later if it is on.
func (w *idleWheel) add(en *entry, at int64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.addLocked(en, at)
}

func (w *idleWheel) addLocked(en *entry, at int64) {
	if en.idleQueued {
		en.idleAt = max(en.idleAt, at)
		return
	}
	if w.buckets == nil {
		w.buckets = make(map[int64][]*entry)
	}
	en.idleAt, en.idleQueued = at, true
	b := floorDiv(at, idleBucket)
	if w.n == 0 || b < w.next {
		w.next = b
	}
	w.buckets[b] = append(w.buckets[b], en)
	w.n++
}

// due calls fn, without the wheel's lock, with every entry whose time is at
// or before epoch e; an entry whose time moved later meanwhile goes back on
// the wheel instead. fn may call add.
func (w *idleWheel) due(e int64, fn func(*entry)) {
	w.mu.Lock()
	last := floorDiv(e, idleBucket)
	if w.n == 0 || w.next > last {
		w.mu.Unlock()
		return
	}
	var taken []*entry
	take := func(b int64) {
		for _, en := range w.buckets[b] {
			en.idleQueued = false
			w.n--
			if en.idleAt > e {
				w.addLocked(en, en.idleAt)
				continue
			}
			taken = append(taken, en)
		}
		delete(w.buckets, b)
	}
	if last-w.next > int64(2*len(w.buckets)+64) {
		// A long gap: visit the buckets, not every second in between.
		var bs []int64
		for b := range w.buckets {
			if b <= last {
				bs = append(bs, b)
			}
		}
		slices.Sort(bs)
		for _, b := range bs {
			take(b)
		}
	} else {
		for b := w.next; b <= last; b++ {
			take(b)
		}
	}
	w.next = math.MaxInt64
	for b := range w.buckets {
		w.next = min(w.next, b)
	}
	w.mu.Unlock()
	for _, en := range taken {
		fn(en)
	}
}

package window

import "sync/atomic"

// touchList is a lock-free list of the entries written since its owner last
// drained it, each at most once: writers push an entry only if it is not
// already queued, so the hot path costs one atomic load of the entry's flag
// except for the first write after each drain. It is a Treiber stack that is
// only ever pushed to and emptied whole, which makes it ABA-safe.
type touchList struct {
	head atomic.Pointer[entry]
}

func (l *touchList) push(en *entry) {
	if en.queued.Load() || !en.queued.CompareAndSwap(false, true) {
		return
	}
	for {
		h := l.head.Load()
		en.next = h
		if l.head.CompareAndSwap(h, en) {
			return
		}
	}
}

// Touch marks key as written, as AllowN does, for writes made directly on
// its window (Reserve, Settle, Refund, RecordOffered). It does nothing for a key
// without a window.
func (r *Registry) Touch(key string) {
	if en, ok := r.keys.load(key); ok {
		r.touched.push(en)
	}
}

// Drain calls fn with every key written (through AllowN or Touch) since the
// last Drain, once each, in no particular order, and empties the list. A key
// written again while fn runs is queued for the next Drain. fn may call any
// Registry method; the window it should read is the one Lookup returns now
// (a key's window may have been replaced or evicted since it was written).
//
// Drain is how a node finds the keys whose slots it must ship and whose
// quota it must recompute without scanning every window each tick. It is
// safe to call concurrently with writers, but not with another Drain.
func (r *Registry) Drain(fn func(key string)) {
	en := r.touched.head.Swap(nil)
	for en != nil {
		next := en.next
		en.next = nil
		// Clear the flag before fn reads the window: a writer that raced
		// with us either sees the flag cleared and queues the key again, or
		// wrote before we cleared it, in which case fn sees its write.
		en.queued.Store(false)
		r.idle.add(en, en.w.OpenEpoch()+r.idleSlots(*en.rule))
		fn(en.key)
		en = next
	}
}

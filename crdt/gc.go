package crdt

import (
	"math"
	"slices"
	"unsafe"

	"github.com/quotamesh/quotamesh/limits"
)

// GCStats says what a GC pass removed.
type GCStats struct {
	// Slots counts the non-zero slots dropped.
	Slots int
	// Series counts the (key, origin) rings emptied and freed.
	Series int
	// Keys counts the keys left without slots and forgotten.
	Keys int
	// Origins counts the silent origins forgotten.
	Origins int
}

// GC drops, at local time nowLocal, every slot older than its key's horizon
// before its origin's current slot σ (for the own origin, the slot of its
// asOf), every key left without slots or a register that holds room, and
// every origin other than the store's own that holds no slot and was last
// heard more than ForgetAfter ago. It also re-reads each key's horizon from
// Config.Horizon and returns memory that rings no longer need.
//
// GC looks only at keys whose oldest slots may have expired since they
// last changed: each key is due a horizon after its last change, and a
// key that did not change since is not looked at before then, so the cost
// of a pass follows the keys written, not the keys held.
//
// GC never changes a view: σ never moves back, so a slot older than the
// horizon before σ is never read again by a view of a window and demand
// within the horizon.
func (s *Store) GC(nowLocal int64) GCStats {
	var st GCStats
	now := s.advance(nowLocal)
	s.wheel.due(now, func(ks *keyState) {
		if ks.due > now {
			s.wheel.add(ks, ks.due) // changed since it was queued
			return
		}
		if s.gcKey(ks, now, &st) {
			s.scheduleGC(ks, now)
		}
	})
	forget := int64(s.cfg.ForgetAfter)
	for id, o := range s.origins {
		if !o.self && o.nseries == 0 && now-max(o.heardAt, o.lastDirect) > forget {
			s.forgetOrigin(o)
			st.Origins++
			if r := s.recv[id.Node]; r != nil && r.from == id {
				delete(s.recv, id.Node)
			}
		}
	}
	return st
}

// gcKey collects one key at now and reports whether it still holds
// anything.
func (s *Store) gcKey(ks *keyState, now int64, st *GCStats) bool {
	ks.horizon = int32(s.horizonFor(ks.key))
	kept := ks.series[:0]
	for i := range ks.series {
		sr := &ks.series[i]
		o := s.originOf(sr)
		cut := slotOf(s.estimate(o, now)) - int64(ks.horizon)
		st.Slots += sr.dropBelow(cut)
		if !sr.held() {
			st.Series++
			o.nseries--
			if o.self {
				s.unlink(ks)
				ks.own = nil
			}
			continue
		}
		sr.fit(ks.maxCap())
		kept = append(kept, *sr)
	}
	clear(ks.series[len(kept):])
	if len(kept) < len(ks.series) {
		ks.series = append([]series(nil), kept...)
	} else {
		ks.series = kept
	}
	if len(kept) == 0 {
		delete(s.keys, ks.key)
		st.Keys++
		if s.lastKey == ks {
			s.lastKey = nil
		}
		return false
	}
	return true
}

// gcAfterChange marks ks as changed at local time now: GC looks at it
// again once a horizon has passed, plus the grace by which a silent
// origin's view lags.
func (s *Store) gcAfterChange(ks *keyState) {
	due := max(s.now, s.own.asOf) + int64(ks.horizon+2)*int64(limits.Slot) + s.grace
	if due <= ks.due {
		return
	}
	ks.due = due
	if !ks.queued {
		s.wheel.add(ks, due)
	}
}

// scheduleGC queues ks, which GC just looked at and which still holds
// slots or a register, for when its slots may have expired: a horizon
// from now if it holds slots, never if it only holds registers (a change
// queues it again).
func (s *Store) scheduleGC(ks *keyState, now int64) {
	for i := range ks.series {
		if !ks.series[i].empty() {
			ks.due = now + int64(ks.horizon+2)*int64(limits.Slot) + s.grace
			s.wheel.add(ks, ks.due)
			return
		}
	}
	ks.due = 0
}

// gcWheel holds the keys GC must look at, bucketed by the second they are
// due in.
type gcWheel struct {
	buckets map[int64][]*keyState
	next    int64 // no bucket before this one holds keys
	n       int   // keys queued
}

const gcBucket = int64(1e9)

func (w *gcWheel) add(ks *keyState, due int64) {
	if w.buckets == nil {
		w.buckets = make(map[int64][]*keyState)
	}
	b := due / gcBucket
	if w.n == 0 || b < w.next {
		w.next = b
	}
	w.buckets[b] = append(w.buckets[b], ks)
	ks.queued = true
	w.n++
}

// due calls fn for every key queued in a bucket up to now's, taking each
// off the wheel first (fn may queue it again).
func (w *gcWheel) due(now int64, fn func(*keyState)) {
	last := now / gcBucket
	if w.n == 0 || w.next > last {
		return
	}
	take := func(b int64) {
		keys := w.buckets[b]
		delete(w.buckets, b)
		w.n -= len(keys)
		for _, ks := range keys {
			ks.queued = false
			fn(ks)
		}
	}
	if last-w.next > int64(2*len(w.buckets)+64) {
		// A long gap (a paused process): visit the buckets, not the seconds.
		var due []int64
		for b := range w.buckets {
			if b <= last {
				due = append(due, b)
			}
		}
		slices.Sort(due)
		for _, b := range due {
			take(b)
		}
	} else {
		for b := w.next; b <= last; b++ {
			take(b)
		}
	}
	w.next = last + 1
	if w.n > 0 {
		next := int64(math.MaxInt64)
		for b := range w.buckets {
			next = min(next, b)
		}
		w.next = next
	}
}

// keyBytes returns the memory the store holds for key: the key, its state
// and every origin's ring of slots. It is bounded by the number of origins
// holding the key times (horizon + MaxLeadSlots + 1) slots of 8 bytes, plus
// a fixed overhead per origin.
func (s *Store) keyBytes(key string) int {
	ks := s.keys[key]
	if ks == nil {
		return 0
	}
	return ks.bytes()
}

func (ks *keyState) bytes() int {
	n := keyStateSize + len(ks.key) + seriesSize*cap(ks.series)
	for i := range ks.series {
		n += ks.series[i].bytes()
	}
	if ks.own != nil {
		n += ownLogSize
		if ks.own.more != nil {
			n += int(unsafe.Sizeof(*ks.own.more))
		}
	}
	return n
}

// Bytes returns the memory the store holds in all: keys, origins and the
// per-peer bookkeeping (not pending delta parts, which belong to the
// caller once returned).
func (s *Store) Bytes() int {
	n := int(unsafe.Sizeof(*s))
	for _, ks := range s.keys {
		n += ks.bytes()
	}
	for id := range s.origins {
		n += originSize + len(id.Node)
	}
	n += len(s.peers)*(int(unsafe.Sizeof(peerState{}))+64) + len(s.recv)*(int(unsafe.Sizeof(recvState{}))+64)
	return n
}

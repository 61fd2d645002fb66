package crdt

import "unsafe"

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
// asOf), every key left without slots, and every origin other than the
// store's own that holds no slot and was last heard more than ForgetAfter
// ago. It also re-reads each key's horizon from Config.Horizon and returns
// memory that rings no longer need.
//
// GC never changes a view: σ never moves back, so a slot older than the
// horizon before σ is never read again by a view of a window and demand
// within the horizon.
func (s *Store) GC(nowLocal int64) GCStats {
	var st GCStats
	now := s.advance(nowLocal)
	for key, ks := range s.keys {
		ks.horizon = s.horizonFor(key)
		kept := ks.series[:0]
		for _, sr := range ks.series {
			cut := slotOf(s.estimate(sr.o, now)) - int64(ks.horizon)
			st.Slots += sr.dropBelow(cut)
			if sr.qSeq > 0 && sr.qEpoch < cut {
				sr.qEpoch, sr.quota = 0, 0 // qSeq stays: an older announcement must not come back
			}
			if !sr.held(cut) {
				st.Series++
				sr.o.nseries--
				if sr.own != nil {
					s.unlink(sr)
				}
				continue
			}
			sr.fit(ks.maxCap())
			kept = append(kept, sr)
		}
		clear(ks.series[len(kept):])
		ks.series = kept
		if len(kept) == 0 {
			delete(s.keys, key)
			st.Keys++
			if s.lastKey == ks {
				s.lastKey = nil
			}
		}
	}
	forget := int64(s.cfg.ForgetAfter)
	for id, o := range s.origins {
		if !o.self && o.nseries == 0 && now-max(o.heardAt, o.lastDirect) > forget {
			delete(s.origins, id)
			st.Origins++
			if r := s.recv[id.Node]; r != nil && r.from == id {
				delete(s.recv, id.Node)
			}
		}
	}
	return st
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
	n := keyStateSize + len(ks.key) + 8*(cap(ks.series)-len(ks.series))
	for _, sr := range ks.series {
		n += sr.bytes()
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

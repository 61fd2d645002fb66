package crdt

import (
	"cmp"
	"slices"
	"time"
)

// OriginInfo describes an origin as the store knows it.
type OriginInfo struct {
	// ID names the origin.
	ID OriginID
	// Self marks the store's own origin.
	Self bool
	// AsOf is the origin's node time up to which the store holds its counts.
	AsOf int64
	// HeardAt is the local time at which the store learned AsOf, back-dated
	// by the relayer's age if it came relayed.
	HeardAt int64
	// Relayed says AsOf was learned from another node's full state rather
	// than from the origin itself.
	Relayed bool
	// LastDirect is the local time of the last delta the origin itself sent
	// (0: never heard directly).
	LastDirect int64
	// Keys is how many keys hold slots of this origin.
	Keys int
}

func (o *origin) info() OriginInfo {
	return OriginInfo{ID: o.id, Self: o.self, AsOf: o.asOf, HeardAt: o.heardAt, Relayed: o.relayed, LastDirect: o.lastDirect, Keys: o.nseries}
}

// Origins returns every origin the store knows, its own included, sorted by
// node ID and incarnation.
func (s *Store) Origins() []OriginInfo {
	out := make([]OriginInfo, 0, len(s.origins))
	for _, o := range s.origins {
		out = append(out, o.info())
	}
	slices.SortFunc(out, func(a, b OriginInfo) int {
		return cmp.Or(cmp.Compare(a.ID.Node, b.ID.Node), cmp.Compare(a.ID.Incarnation, b.ID.Incarnation))
	})
	return out
}

// View is one origin's counts for one key as read at one local time.
type View struct {
	// Admitted is the origin's admitted count in its window of the
	// requested slots ending at AsOfSlot: slots (AsOfSlot-window, AsOfSlot].
	Admitted int64
	// Demand is the origin's offered count in the demandSlots full slots
	// before AsOfSlot: slots [AsOfSlot-demandSlots, AsOfSlot-1].
	Demand int64
	// AsOfSlot is σ, the slot of the origin's estimated time T̂, in the
	// origin's own slot numbering.
	AsOfSlot int64
	// Age is how long ago the store learned the origin's asOf.
	Age time.Duration
	// Quota is the origin's quota register: the room it holds for the key,
	// valid until the origin replaces or withdraws it (a register of zero),
	// however long ago it was announced. Announced reports whether the
	// origin has announced one at all: an origin that uses a key alone
	// announces none (nobody needs to know what it holds until another
	// origin uses the key too).
	Quota     int64
	Announced bool
}

// Views calls fn once for every origin other than the store's own that
// holds slots of key, with its view at local time nowLocal (design.md
// section 5): the origin's window read in its own slot numbering, ending at
// the slot of T̂ = asOf + max(0, age - grace). window and demandSlots are
// clamped to [1, horizon] and [0, min(horizon, MaxDemandSlots)] for the
// key's horizon. fn must not call back into the store.
//
// Views are cached per key and origin: reading the same window again costs
// a few nanoseconds per origin, and a view that moved forward by one slot
// costs two slot reads; merges keep the caches exact.
func (s *Store) Views(key string, window, demandSlots int, nowLocal int64, fn func(OriginInfo, View)) {
	s.ViewsFrom(key, window, demandSlots, 0, nowLocal, fn)
}

// ViewsFrom is Views counting admitted only in slots at or after floor (in
// each origin's own numbering): the admissions of earlier slots read as
// zero, as after a reset of the key whose first counting slot is floor.
// Demand is unaffected. A floor within the window costs a pass over the
// slots held in range, instead of the cached sum, until it has left it.
func (s *Store) ViewsFrom(key string, window, demandSlots int, floor, nowLocal int64, fn func(OriginInfo, View)) {
	now := s.advance(nowLocal)
	ks := s.keys[key]
	if ks == nil {
		return
	}
	window = min(max(window, 1), int(ks.horizon))
	demandSlots = min(max(demandSlots, 0), int(ks.horizon), MaxDemandSlots)
	for i := range ks.series {
		sr := &ks.series[i]
		o := s.originOf(sr)
		if o.self {
			continue
		}
		sigma := slotOf(s.estimate(o, now))
		k := window
		if lo := sigma - int64(window) + 1; floor > lo {
			k = int(max(0, sigma-floor+1))
		}
		v := View{
			Admitted: sr.windowed(false, sigma, k),
			Demand:   sr.windowed(true, sigma-1, demandSlots),
			AsOfSlot: sigma,
			Age:      time.Duration(max(0, now-o.heardAt)),
		}
		if sr.qSeq > 0 {
			v.Quota, v.Announced = int64(sr.quota), true
		}
		fn(o.info(), v)
	}
}

// Recent is one origin's counts for one key over its last full slots, for
// rates: see Store.Recent.
type Recent struct {
	// Admitted and Offered are the origin's counts in the n full slots
	// before AsOfSlot: slots [AsOfSlot-n, AsOfSlot-1]. Admitted counts only
	// slots at or after the floor passed in.
	Admitted, Offered int64
	// AsOfSlot and Age are as in View.
	AsOfSlot int64
	Age      time.Duration
}

// Recent calls fn once for every origin other than the store's own that
// holds slots of key, with its counts in the n full slots (1 to
// MaxDemandSlots) before the slot of its view at local time nowLocal: what
// the origin admitted and was offered over its last n·100 ms, as this store
// knows it. Admitted reads zero for slots before floor. It sums the slots
// (no cache): for status and inspection, not for every tick. fn must not
// call back into the store.
func (s *Store) Recent(key string, n int, floor, nowLocal int64, fn func(OriginInfo, Recent)) {
	now := s.advance(nowLocal)
	ks := s.keys[key]
	if ks == nil {
		return
	}
	n = min(max(n, 1), MaxDemandSlots)
	for i := range ks.series {
		sr := &ks.series[i]
		o := s.originOf(sr)
		if o.self {
			continue
		}
		sigma := slotOf(s.estimate(o, now))
		lo := sigma - int64(n)
		fn(o.info(), Recent{
			Admitted: sr.sum(max(lo, floor), sigma-1, admittedOf),
			Offered:  sr.sum(lo, sigma-1, offeredOf),
			AsOfSlot: sigma,
			Age:      time.Duration(max(0, now-o.heardAt)),
		})
	}
}

package crdt

// Relaying deltas (design.md §5, "Deltas", and §7, "Sync overlay"): in a
// large cluster a node does not send every peer a frame; each origin's
// changes reach most nodes through one or two relaying peers, which pass
// them on inside their own deltas. A relaying delta is a normal delta (it
// has a basis and is acknowledged like one) that carries, besides the
// sender's own changes since the basis, the changes of the origins the
// caller asked it to relay that the store merged since the basis, and the
// states of those origins whose asOf advanced since then. The store keeps
// a log of what it merged in the last DeltaIntervals intervals for that,
// once EnableRelaying was called.

import (
	"cmp"
	"slices"
)

// relayRec says that in one interval, the slots lo to hi of one origin's
// series of a key changed (merged), and whether its quota register did.
type relayRec struct {
	ks     *keyState
	lo, hi int64
	oi     uint32
	quota  bool
}

// relayLog holds the records of the last DeltaIntervals+1 intervals, by
// interval modulo its length.
type relayLog struct {
	on   bool
	ring [][]relayRec
	// news holds, by interval like ring, the origins whose asOf advanced
	// in it (origin.newsSeq), so that a relaying delta finds them without
	// reading every origin.
	news [][]*origin
}

// RelaySet names the origins (by node ID, every incarnation) whose changes
// a relaying delta carries. Make it with NewRelaySet; it must not change
// once made (deltas are cached by it).
type RelaySet struct {
	id    uint64
	nodes map[string]bool
}

// NewRelaySet returns a set of the given node IDs. Sets made with the same
// IDs are distinct: give each peer of the same role the same set, so that
// they share one delta.
func (s *Store) NewRelaySet(nodes []string) *RelaySet {
	s.relaySets++
	rs := &RelaySet{id: s.relaySets, nodes: make(map[string]bool, len(nodes))}
	for _, n := range nodes {
		rs.nodes[n] = true
	}
	return rs
}

// Len returns how many node IDs rs holds.
func (rs *RelaySet) Len() int {
	if rs == nil {
		return 0
	}
	return len(rs.nodes)
}

// EnableRelaying makes the store log what it merges, so that it can build
// relaying deltas (DeltaForRelaying) from then on. Changes merged before
// are not logged: a peer whose relaying deltas start now should get a full
// state first (Resend).
func (s *Store) EnableRelaying() {
	if s.relay.on {
		return
	}
	s.relay.on = true
	s.relay.ring = make([][]relayRec, s.cfg.DeltaIntervals+1)
	s.relay.news = make([][]*origin, s.cfg.DeltaIntervals+1)
	for _, o := range s.byIdx {
		// News noted before: those of the intervals a delta may still be
		// built on.
		if o != nil && !o.self && o.newsSeq+uint64(s.cfg.DeltaIntervals) > s.last {
			n := &s.relay.news[o.newsSeq%uint64(len(s.relay.news))]
			*n = append(*n, o)
		}
	}
}

// Relaying reports whether EnableRelaying was called.
func (s *Store) Relaying() bool { return s.relay.on }

// logMerged records that o's slot e (or, with quota, its register) of ks
// changed in the open interval.
func (s *Store) logMerged(ks *keyState, o *origin, e int64, quota bool) {
	if !s.relay.on {
		return
	}
	cur := s.last + 1
	r := &s.relay.ring[cur%uint64(len(s.relay.ring))]
	if n := len(*r); n > 0 {
		if last := &(*r)[n-1]; last.ks == ks && last.oi == o.idx {
			if quota {
				last.quota = true
			} else {
				last.lo, last.hi = min(last.lo, e), max(last.hi, e)
			}
			return
		}
	}
	rec := relayRec{ks: ks, oi: o.idx, quota: quota, lo: MaxEpoch, hi: 0}
	if !quota {
		rec.lo, rec.hi = e, e
	}
	*r = append(*r, rec)
}

// noteNews records that origin o's asOf advanced in the open interval.
func (s *Store) noteNews(o *origin) {
	cur := s.last + 1
	if o.newsSeq == cur {
		return
	}
	o.newsSeq = cur
	if s.relay.on {
		n := &s.relay.news[cur%uint64(len(s.relay.news))]
		*n = append(*n, o)
	}
}

// tickRelay empties the records of the interval that opens.
func (s *Store) tickRelay() {
	if !s.relay.on {
		return
	}
	r := &s.relay.ring[(s.last+1)%uint64(len(s.relay.ring))]
	clear(*r)
	*r = (*r)[:0]
	n := &s.relay.news[(s.last+1)%uint64(len(s.relay.news))]
	clear(*n)
	*n = (*n)[:0]
}

// DeltaForRelaying is DeltaFor for a peer that this node relays the
// origins of rs to: its normal deltas carry, besides the store's own
// changes since the basis, what the store merged of rs's origins since
// then (their changed slots and registers) and the state of every origin
// of rs whose asOf advanced since then. Full states are the same as
// DeltaFor's. rs nil or empty, or relaying not enabled, is DeltaFor.
func (s *Store) DeltaForRelaying(peer string, nowLocal int64, rs *RelaySet) []Delta {
	if rs.Len() == 0 || !s.relay.on {
		return s.DeltaFor(peer, nowLocal)
	}
	s.relayWith = rs
	defer func() { s.relayWith = nil }()
	return s.DeltaFor(peer, nowLocal)
}

// addRelayed adds to b what the store merged of rs's origins after
// interval basis, and the states of those whose asOf advanced since.
func (s *Store) addRelayed(b *builder, basis uint64, rs *RelaySet) {
	type pair struct {
		ks *keyState
		oi uint32
	}
	type span struct {
		lo, hi int64
		quota  bool
		at     int // order of first appearance
	}
	spans := make(map[pair]*span)
	var order []pair
	for seq := basis + 1; seq <= s.last; seq++ {
		for _, rec := range s.relay.ring[seq%uint64(len(s.relay.ring))] {
			o := s.byIdx[rec.oi]
			if o == nil || o.self || !rs.nodes[o.id.Node] {
				continue
			}
			k := pair{rec.ks, rec.oi}
			sp := spans[k]
			if sp == nil {
				sp = &span{lo: MaxEpoch, at: len(order)}
				spans[k] = sp
				order = append(order, k)
			}
			sp.lo, sp.hi = min(sp.lo, rec.lo), max(sp.hi, rec.hi)
			sp.quota = sp.quota || rec.quota
		}
	}
	for _, k := range order {
		ks := k.ks
		if s.keys[ks.key] != ks {
			continue // collected since
		}
		o := s.byIdx[k.oi]
		sr := ks.seriesOf(o)
		if sr == nil {
			continue
		}
		sp := spans[k]
		if sp.lo <= sp.hi {
			sr.each(sp.lo, sp.hi, func(e int64, v uint64) { b.add(o, ks.key, e, v) })
		}
		if sp.quota && sr.qSeq > 0 {
			b.addQuota(o, ks.key, sr.qEpoch, sr.qSeq, sr.quota)
		}
	}
	// The origins whose asOf advanced since basis (the open interval
	// included), each at its latest interval, in index order as a walk
	// over every origin would find them.
	news := s.newsScratch[:0]
	for seq := basis + 1; seq <= s.last+1; seq++ {
		for _, o := range s.relay.news[seq%uint64(len(s.relay.news))] {
			if o.newsSeq == seq && s.byIdx[o.idx] == o && rs.nodes[o.id.Node] {
				news = append(news, o)
			}
		}
	}
	slices.SortFunc(news, func(a, b *origin) int { return cmp.Compare(a.idx, b.idx) })
	for i, o := range news {
		b.addBare(o)
		news[i] = nil
	}
	s.newsScratch = news[:0]
}

package crdt

import "math"

// Bounds on QuotaMesh's wire encoding of a delta, used to split deltas so
// that each part fits a frame. The encoder keeps within them (its tests
// check SizeBound against real encodings).
const (
	// sizeHeaderBound bounds a sync frame's length prefix, its message
	// header and the delta's fixed fields, the sender's node ID aside.
	sizeHeaderBound = 256
	// sizeOriginBound bounds one origin state, its node ID aside.
	sizeOriginBound = 40
	// sizeKeyRunBound bounds the start of a run of entries with one key, the
	// key's bytes aside.
	sizeKeyRunBound = 8
	// sizeEntryBound bounds one entry, its key aside.
	sizeEntryBound = 24
	// sizeQuotaBound bounds one quota register, its key aside.
	sizeQuotaBound = 32
)

// SizeBound returns an upper bound on the bytes of a wire frame carrying d:
// a header, each origin state, each run of adjacent entries sharing a key,
// and each entry.
func (d *Delta) SizeBound() int {
	n := sizeHeaderBound + len(d.From.Node)
	for i := range d.Origins {
		n += sizeOriginBound + len(d.Origins[i].ID.Node)
	}
	for i := range d.Entries {
		if i == 0 || d.Entries[i].Key != d.Entries[i-1].Key {
			n += sizeKeyRunBound + len(d.Entries[i].Key)
		}
		n += sizeEntryBound
	}
	for i := range d.Quotas {
		n += sizeQuotaBound + len(d.Quotas[i].Key)
	}
	return n
}

// peerState is the sending side of the protocol with one peer.
type peerState struct {
	// acked is the last interval the peer acknowledged; 0 when none is
	// valid, which calls for a full state.
	acked uint64
	// pending are the parts of a full state or split delta not yet sent,
	// in order.
	pending []Delta
	// inflight is the newest interval whose delta (every part of it) was
	// sent but which the peer has not acknowledged yet; deltas are built on
	// it meanwhile: a sync stream delivers in order or breaks (and a
	// broken stream resets the peer), so what was sent arrives before what
	// follows, and neither a large state nor the changes of a peer that
	// acknowledges seldom (it sends frames only when it has news or a
	// heartbeat is due) are sent again while the acknowledgement is on its
	// way. inflightAt is s.last when the peer last made progress (its
	// acknowledgement advanced) or when the first delta after its last
	// acknowledgement was sent; a peer that makes no progress for
	// DeltaIntervals intervals gets deltas since its acknowledgement again
	// (or a full state, if that is too old), which repairs a delta it could
	// not merge.
	inflight, inflightAt uint64
	// offered is the interval of the single-part normal delta DeltaFor
	// returned last; Sent makes it inflight.
	offered uint64
	// relayFrom is, per origin relayed to this peer (RelayFor), the first
	// epoch the next relay sends; absent: everything. relayNext is what it
	// becomes once RelaySent confirms the last relay.
	relayFrom, relayNext map[OriginID]int64
}

// recvState is the receiving side of the protocol with one peer.
type recvState struct {
	from    OriginID // the incarnation these numbers belong to
	applied uint64   // last delta merged completely (every part)
	seq     uint64   // split delta being assembled
	next    int      // its next expected part; 0 when none is expected
}

func (s *Store) peer(name string) *peerState {
	p := s.peers[name]
	if p == nil {
		p = &peerState{}
		s.peers[name] = p
	}
	return p
}

// DeltaFor returns the delta to send to peer (a node ID) at local time
// nowLocal, as one or more parts to be sent in order, each a valid Delta
// with the same Seq. It is, in order of preference:
//
//   - the parts of a full state or split delta that Sent has not yet
//     accounted for;
//   - a normal delta: the store's own asOf (a heartbeat even when nothing
//     changed) and its own slots changed after the interval the peer last
//     acknowledged;
//   - a full state, if the peer acknowledged nothing yet, acknowledged an
//     interval this store never closed, or lags more than DeltaIntervals
//     intervals behind: every origin the store knows with its age, and all
//     their slots, except the origin peer's deltas came from since the last
//     ResetPeer (its current incarnation, which holds its own slots).
//
// Parts are cut at Config.MaxEntriesPerDelta entries and MaxDeltaBytes
// (by Delta.SizeBound). The returned slices are shared with the store and
// other peers: do not modify them. Report with Sent how many parts were
// handed to the transport.
func (s *Store) DeltaFor(peer string, nowLocal int64) []Delta {
	now := s.advance(nowLocal)
	p := s.peer(peer)
	if len(p.pending) > 0 {
		return p.pending
	}
	basis := p.acked
	if p.inflight > basis {
		if s.last-p.inflightAt > uint64(s.cfg.DeltaIntervals) {
			p.inflight = 0
		} else {
			basis = p.inflight
		}
	}
	var parts []Delta
	if basis < s.seqBase || basis > s.last || s.last-basis > uint64(s.cfg.DeltaIntervals) {
		var exclude *origin
		if r := s.recv[peer]; r != nil {
			exclude = s.origins[r.from]
		}
		parts = s.buildFull(now, exclude)
	} else {
		parts = s.since(now, basis)
	}
	if len(parts) > 1 || parts[0].Full {
		p.pending = parts
	} else {
		p.offered = parts[0].Seq
	}
	return parts
}

// Sent reports that the first n parts last returned by DeltaFor for peer
// were handed to the transport, in order. Parts of a full state or split
// delta that were not are returned again, first, by the next DeltaFor.
// Once every part of a delta was, later deltas are built on it until the
// peer acknowledges it (or makes no progress within DeltaIntervals). A
// delta not reported as sent (n = 0: a busy stream, or a heartbeat the
// caller chose not to send) leaves the next one built on the same basis.
func (s *Store) Sent(peer string, n int) {
	p := s.peers[peer]
	if p == nil || n <= 0 {
		return
	}
	var seq uint64
	restart := p.inflight <= p.acked // nothing was outstanding
	if len(p.pending) == 0 {
		seq, p.offered = p.offered, 0
		if seq == 0 {
			return
		}
	} else {
		seq = p.pending[0].Seq
		p.pending = p.pending[min(n, len(p.pending)):]
		if len(p.pending) > 0 {
			return
		}
		p.pending = nil
		restart = true // a full state or split delta: its acknowledgement takes a while
	}
	if restart {
		p.inflightAt = s.last
	}
	p.inflight = max(p.inflight, seq)
}

// Ack records that peer has merged, completely, the delta with Seq seq (its
// AckFor for this store). An acknowledgement of an interval this store
// never closed, such as one meant for a previous incarnation, counts as no
// acknowledgement: the next delta is a full state.
func (s *Store) Ack(peer string, seq uint64) {
	p := s.peer(peer)
	if seq < s.seqBase || seq > s.last {
		seq = 0
	}
	if seq > p.acked {
		p.inflightAt = s.last // progress
	}
	p.acked = seq
	if p.inflight != 0 && seq >= p.inflight {
		p.inflight = 0
	}
	if len(p.pending) > 0 && seq >= p.pending[0].Seq {
		p.pending = nil // the peer holds it all already
	}
}

// Resend makes the next delta to peer a full state, as if it had
// acknowledged nothing, leaving the receiving side alone: for a peer whose
// relaying deltas change their origins (it may lack what was merged of the
// new ones before).
func (s *Store) Resend(peer string) {
	if p := s.peers[peer]; p != nil {
		p.acked, p.inflight, p.pending, p.offered = 0, 0, nil, 0
	}
}

// ResetPeer forgets the protocol state with peer, both ways: the next delta
// to it is a full state, parts not yet sent are dropped, and its partial
// split deltas and incarnation are forgotten. Call it whenever a connection
// to the peer is established or re-established, before handling its first
// frame: a restarted peer must not be taken for its previous incarnation,
// whose slots its full state has to carry.
func (s *Store) ResetPeer(peer string) {
	delete(s.peers, peer)
	delete(s.recv, peer)
}

// AckFor returns the Seq to acknowledge to peer: the highest interval up to
// which the store holds everything peer's current incarnation sent, that
// is, the Seq of the latest delta merged completely (every part, in order)
// that was a full state or built on a Basis the store had already reached;
// 0 if none.
func (s *Store) AckFor(peer string) uint64 {
	if r := s.recv[peer]; r != nil {
		return r.applied
	}
	return 0
}

// noteReceived advances the assembly of split deltas from d's sender.
func (s *Store) noteReceived(d Delta) {
	r := s.recv[d.From.Node]
	if r == nil || r.from != d.From {
		r = &recvState{from: d.From}
		s.recv[d.From.Node] = r
	}
	switch {
	case d.Part == 0:
		r.seq, r.next = d.Seq, 1
	case r.next > 0 && d.Seq == r.seq && d.Part == r.next:
		r.next++
	default:
		r.next = 0 // a part is missing or out of order: wait for a new delta
	}
	if r.next == d.Parts {
		r.next = 0
		// A delta since Basis completes the receiver only if it held
		// everything up to Basis; otherwise some earlier delta was lost
		// and the sender must go back further (it will, once it sees the
		// acknowledgement lag).
		if d.Full || d.Basis <= r.applied {
			r.applied = max(r.applied, d.Seq)
		}
	}
}

// builder cuts a delta into parts.
type builder struct {
	s        *Store
	now      int64
	full     bool
	basis    uint64
	parts    []Delta
	cur      Delta
	size     int
	lastKey  string
	mark     uint64 // the current part's stamp on its origins (origin.mark)
	included map[*origin]bool
}

func (s *Store) newBuilder(now int64, full bool, basis uint64) *builder {
	b := &builder{s: s, now: now, full: full, basis: basis}
	if full {
		b.included = make(map[*origin]bool, len(s.origins))
	}
	b.start()
	return b
}

func (b *builder) state(o *origin) OriginState {
	if o.self {
		return OriginState{ID: o.id, AsOf: o.asOf}
	}
	return OriginState{ID: o.id, AsOf: o.asOf, Age: min(max(b.now-o.heardAt, 0), MaxAge)}
}

func (b *builder) start() {
	s := b.s
	b.cur = Delta{From: s.self, Seq: s.last, Basis: b.basis, Full: b.full, Origins: []OriginState{b.state(s.own)}}
	// A new stamp: origins stamped for an earlier part, or by an earlier
	// builder (one builds at a time), are not in this part.
	s.marks++
	b.mark = s.marks
	s.own.mark, s.own.markAt = b.mark, 0
	b.size = sizeHeaderBound + len(s.self.Node) + sizeOriginBound + len(s.self.Node)
	b.lastKey = ""
}

func (b *builder) flush() {
	b.parts = append(b.parts, b.cur)
	n := len(b.cur.Entries)
	b.start()
	// Parts after the first are cut at about the same size: allocate once.
	if n > 0 {
		b.cur.Entries = make([]Entry, 0, n)
	}
}

// cost is what adding an entry of o for key to the current part adds.
func (b *builder) cost(o *origin, key string) int {
	c := sizeEntryBound
	if o.mark != b.mark {
		c += sizeOriginBound + len(o.id.Node)
	}
	if key != b.lastKey {
		c += sizeKeyRunBound + len(key)
	}
	return c
}

func (b *builder) addOrigin(o *origin) int {
	if o.mark == b.mark {
		return o.markAt
	}
	b.cur.Origins = append(b.cur.Origins, b.state(o))
	i := len(b.cur.Origins) - 1
	o.mark, o.markAt = b.mark, i
	if b.included != nil {
		b.included[o] = true
	}
	return i
}

func (b *builder) add(o *origin, key string, epoch int64, v uint64) {
	c := b.cost(o, key)
	has := o.mark == b.mark
	if len(b.cur.Entries) > 0 && (len(b.cur.Entries) >= b.s.cfg.MaxEntriesPerDelta ||
		b.size+c > b.s.cfg.MaxDeltaBytes ||
		!has && len(b.cur.Origins) >= MaxDeltaOrigins) {
		b.flush()
		c = b.cost(o, key)
		has = o.mark == b.mark
	}
	if !has {
		b.addOrigin(o)
	}
	b.cur.Entries = append(b.cur.Entries, Entry{
		Origin: o.markAt, Key: key, Epoch: epoch,
		Admitted: uint32(v >> 32), Offered: uint32(v),
	})
	b.size += c
	b.lastKey = key
}

// addQuota adds o's quota register for key.
func (b *builder) addQuota(o *origin, key string, epoch int64, seq uint64, quota uint32) {
	c := sizeQuotaBound + len(key)
	has := o.mark == b.mark
	if !has {
		c += sizeOriginBound + len(o.id.Node)
	}
	if len(b.cur.Entries)+len(b.cur.Quotas) > 0 && (len(b.cur.Quotas) >= b.s.cfg.MaxEntriesPerDelta ||
		b.size+c > b.s.cfg.MaxDeltaBytes ||
		!has && len(b.cur.Origins) >= MaxDeltaOrigins) {
		b.flush()
	}
	b.cur.Quotas = append(b.cur.Quotas, QuotaEntry{Origin: b.addOrigin(o), Key: key, Epoch: epoch, Seq: seq, Quota: quota})
	b.size += c
}

// addBare adds an origin without entries (full states carry every origin).
func (b *builder) addBare(o *origin) {
	if o.mark == b.mark {
		return
	}
	c := sizeOriginBound + len(o.id.Node)
	if len(b.cur.Origins) > 1 && (b.size+c > b.s.cfg.MaxDeltaBytes || len(b.cur.Origins) >= MaxDeltaOrigins) {
		b.flush()
	}
	b.addOrigin(o)
	b.size += c
}

func (b *builder) finish() []Delta {
	b.parts = append(b.parts, b.cur)
	for i := range b.parts {
		b.parts[i].Part, b.parts[i].Parts = i, len(b.parts)
	}
	return b.parts
}

// buildFull builds a full state, leaving out the origin exclude (the
// receiving peer's own, which it holds already).
func (s *Store) buildFull(now int64, exclude *origin) []Delta {
	b := s.newBuilder(now, true, 0)
	b.included[s.own] = true
	for _, ks := range s.keys {
		for i := range ks.series {
			sr := &ks.series[i]
			o := s.originOf(sr)
			if o == exclude || sr.empty() {
				continue
			}
			sr.each(math.MinInt64, math.MaxInt64, func(e int64, v uint64) { b.add(o, ks.key, e, v) })
		}
		for i := range ks.series {
			if sr := &ks.series[i]; s.originOf(sr) != exclude && sr.qSeq > 0 {
				b.addQuota(s.originOf(sr), ks.key, sr.qEpoch, sr.qSeq, sr.quota)
			}
		}
	}
	for _, o := range s.origins {
		if o != exclude && !b.included[o] {
			b.addBare(o)
		}
	}
	return b.finish()
}

// ReleaseDeltas drops the normal deltas the store keeps so that peers at
// the same acknowledgement share one: the caller has handed every peer its
// delta of this interval, and keeping them until the next would hold
// memory for every key that changed. The next DeltaFor builds afresh.
// Parts of full states and split deltas not yet sent are kept.
func (s *Store) ReleaseDeltas() {
	clear(s.cached)
	s.cached = s.cached[:0]
}

// since returns the normal delta since basis, from the cache if the own
// state has not changed since it was built.
func (s *Store) since(now int64, basis uint64) []Delta {
	if s.cacheLast != s.last || s.cacheGen != s.gen {
		s.cacheLast, s.cacheGen = s.last, s.gen
		clear(s.cached)
		s.cached = s.cached[:0]
	}
	var rid uint64
	if s.relayWith != nil {
		rid = s.relayWith.id
	}
	for _, c := range s.cached {
		if c.basis == basis && c.relay == rid {
			return c.parts
		}
	}
	parts := s.buildSince(now, basis)
	if len(s.cached) < 16 {
		s.cached = append(s.cached, cachedDelta{basis, rid, parts})
	}
	return parts
}

// buildSince builds a normal delta: the own slots changed after interval
// basis.
func (s *Store) buildSince(now int64, basis uint64) []Delta {
	b := s.newBuilder(now, false, basis)
	slots, quotas := 0, 0
	for ks := s.head; ks != nil && ks.own.last() > basis; ks = ks.own.next {
		if l := ks.own; l.n > 0 && l.rec(l.n-1).seq > basis {
			slots++
		}
		if ks.own.qSeq > basis {
			quotas++
		}
	}
	// Usually the open and the just-closed slot of each key whose slots
	// changed.
	b.cur.Entries = make([]Entry, 0, min(2*slots, s.cfg.MaxEntriesPerDelta))
	b.cur.Quotas = make([]QuotaEntry, 0, min(quotas, s.cfg.MaxEntriesPerDelta))
	for ks := s.head; ks != nil && ks.own.last() > basis; ks = ks.own.next {
		l := ks.own
		sr := ks.seriesOf(s.own)
		lo, hi := int64(MaxEpoch), int64(0)
		for i := range l.n {
			if c := l.rec(i); c.seq > basis {
				lo, hi = min(lo, c.lo), max(hi, c.hi)
			}
		}
		sr.each(lo, hi, func(e int64, v uint64) { b.add(s.own, ks.key, e, v) })
		if l.qSeq > basis && sr.qSeq > 0 {
			b.addQuota(s.own, ks.key, sr.qEpoch, sr.qSeq, sr.quota)
		}
	}
	if s.relayWith != nil {
		s.addRelayed(b, basis, s.relayWith)
	}
	return b.finish()
}

// RelayFor returns a delta that relays to peer what the store holds of the
// origins in relay, for a peer that says it cannot hear them itself
// (design.md §7, bridges): each origin's state (its asOf and the store's age
// of it, so the peer's estimate of it slides as the store's would), its
// slots and its quota registers. The first relay of an origin to a peer
// carries every slot the store holds of it; later ones the slots from the
// one before its asOf's slot at the previous relay on, which covers every
// slot that may have changed since. Origins the store does not know, its
// own, and the one peer's deltas come from are skipped; nil if none is
// left.
//
// Counts are absolute and merging is a join, so relayed state is safe to
// receive twice, late, or from several relayers. The delta is a normal
// delta whose basis is its own interval (Basis = Seq = the last closed
// interval): it never advances the peer's acknowledgement. Send it after
// the normal delta of the same tick, and call RelaySent once every part
// was handed over; otherwise the next relay starts from the same slots.
func (s *Store) RelayFor(peer string, nowLocal int64, relay []OriginID) []Delta {
	now := s.advance(nowLocal)
	p := s.peer(peer)
	var exclude *origin
	if r := s.recv[peer]; r != nil {
		exclude = s.origins[r.from]
	}
	var b *builder
	clear(p.relayNext)
	for _, id := range relay {
		o := s.origins[id]
		if o == nil || o.self || o == exclude {
			continue
		}
		if b == nil {
			b = s.newBuilder(now, false, s.last)
		}
		from, again := p.relayFrom[id]
		if !again {
			from = 0
		}
		for _, ks := range s.keys {
			sr := ks.seriesOf(o)
			if sr == nil {
				continue
			}
			sr.each(from, math.MaxInt64, func(e int64, v uint64) { b.add(o, ks.key, e, v) })
			if sr.qSeq > 0 && (!again || sr.qEpoch >= from) {
				b.addQuota(o, ks.key, sr.qEpoch, sr.qSeq, sr.quota)
			}
		}
		b.addBare(o)
		if p.relayNext == nil {
			p.relayNext = make(map[OriginID]int64)
		}
		p.relayNext[id] = slotOf(o.asOf) - 1
	}
	if b == nil {
		return nil
	}
	return b.finish()
}

// RelaySent reports that every part of the delta RelayFor last returned
// for peer was handed to the transport: the next relay of those origins
// starts where this one ended. Origins no longer relayed are forgotten, so
// that relaying them again starts over with everything.
func (s *Store) RelaySent(peer string) {
	p := s.peers[peer]
	if p == nil {
		return
	}
	p.relayFrom, p.relayNext = p.relayNext, p.relayFrom
	clear(p.relayNext)
}

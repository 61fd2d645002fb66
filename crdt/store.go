package crdt

import (
	"cmp"
	"fmt"
	"slices"
	"time"
	"unsafe"

	"github.com/quotamesh/quotamesh/limits"
)

// Store is one node's replica of every origin's slot counts, plus the
// bookkeeping of the delta protocol with each peer.
//
// A Store is not safe for concurrent use: it belongs to one goroutine, the
// node's sync loop, which records its own slots, merges peers' deltas, builds
// deltas for peers, reads views and runs GC. It does no I/O, starts no
// goroutine and reads no clock: every method that depends on time takes the
// node's local time in nanoseconds. A local time earlier than one already
// passed in is treated as that later time, so a clock that steps back never
// moves a view backwards.
type Store struct {
	self     OriginID
	cfg      Config
	grace    int64
	own      *origin
	quotaSeq uint64 // the last own quota announcement's number

	origins map[OriginID]*origin
	keys    map[string]*keyState
	now     int64 // highest local time seen

	seqBase uint64  // first interval seq of this store
	last    uint64  // last closed interval; the open one is last+1
	head    *series // own series, most recently changed first

	peers map[string]*peerState
	recv  map[string]*recvState

	scratch []*origin // per-merge origin index, reused
	lastKey *keyState // merge's last key lookup

	// gen counts changes to the own state (slots or asOf); normal deltas
	// built since some basis are cached for as long as neither gen nor
	// last changes, so that peers at the same acknowledgement share one.
	gen       uint64
	cacheLast uint64
	cacheGen  uint64
	cached    []cachedDelta
}

type cachedDelta struct {
	basis uint64
	parts []Delta
}

// origin is what the store knows of one origin.
type origin struct {
	id   OriginID
	self bool
	// asOf is the origin's node time up to which its counts are complete.
	asOf int64
	// heardAt is the local time at which asOf was learned, back-dated by the
	// relayer's age when it came relayed; for the same asOf heard twice,
	// the earlier.
	heardAt int64
	// floor keeps the origin's estimated time from moving back when a late
	// report arrives after its view started to slide.
	floor      int64
	relayed    bool
	lastDirect int64 // local time of the last delta sent by this origin itself
	nseries    int   // keys holding slots of this origin
}

// keyState holds every origin's slots for one key.
type keyState struct {
	key     string
	horizon int
	series  []*series
}

// ownLog records which of the store's own slots changed in which delta
// interval, so that a delta since any acknowledged interval is built from
// the series changed since then only. Ranges are merged when the log is
// full, which can only make a delta re-send a few unchanged slots.
type ownLog struct {
	prev, next *series // the store's change list, most recent first
	last       uint64  // interval of the newest change
	qSeq       uint64  // interval of the newest change to the quota register
	n          int
	chg        [4]change
}

type change struct {
	seq    uint64
	lo, hi int64
}

const (
	seriesSize   = int(unsafe.Sizeof(series{})) + 8 // plus its pointer in keyState.series
	ownLogSize   = int(unsafe.Sizeof(ownLog{}))
	keyStateSize = int(unsafe.Sizeof(keyState{})) + 48 // plus its map entry
	originSize   = int(unsafe.Sizeof(origin{})) + 48
)

// NewStore returns an empty store for the origin self (which must be valid:
// see OriginID.Validate) with cfg (see Config.Validate).
func NewStore(self OriginID, cfg Config) (*Store, error) {
	if err := self.Validate(); err != nil {
		return nil, fmt.Errorf("crdt store: self: %w", err)
	}
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("crdt store: %w", err)
	}
	cfg = cfg.withDefaults()
	own := &origin{id: self, self: true}
	// Sequence numbers start at a point drawn from the incarnation, so that
	// an acknowledgement meant for a previous incarnation of this node falls
	// outside [seqBase, last] and is ignored rather than trusted.
	base := 1 + self.Incarnation>>16
	return &Store{
		self:    self,
		cfg:     cfg,
		grace:   int64(cfg.Grace),
		own:     own,
		origins: map[OriginID]*origin{self: own},
		keys:    make(map[string]*keyState),
		seqBase: base,
		last:    base - 1,
		peers:   make(map[string]*peerState),
		recv:    make(map[string]*recvState),
	}, nil
}

// Self returns the store's own origin.
func (s *Store) Self() OriginID { return s.self }

// advance folds nowLocal into the store's high-water mark of local time and
// returns the time to use.
func (s *Store) advance(nowLocal int64) int64 {
	nowLocal = min(max(nowLocal, 0), MaxTime)
	if nowLocal > s.now {
		s.now = nowLocal
	}
	return s.now
}

func (s *Store) horizonFor(key string) int {
	h := DefaultHorizon
	if s.cfg.Horizon != nil {
		h = s.cfg.Horizon(key)
	}
	return min(max(h, 1), MaxHorizon)
}

// maxCap is the most slots a series of ks may hold.
func (ks *keyState) maxCap() int { return ks.horizon + MaxLeadSlots + 1 }

func (s *Store) keyState(key string, create bool) *keyState {
	if ks := s.lastKey; ks != nil && ks.key == key {
		return ks
	}
	ks := s.keys[key]
	if ks == nil && create {
		ks = &keyState{key: key, horizon: s.horizonFor(key)}
		s.keys[key] = ks
	}
	if ks != nil {
		s.lastKey = ks
	}
	return ks
}

func (ks *keyState) seriesOf(o *origin) *series {
	for _, sr := range ks.series {
		if sr.o == o {
			return sr
		}
	}
	return nil
}

func (s *Store) newSeries(ks *keyState, o *origin) *series {
	sr := &series{o: o, ks: ks, lo: 1, hi: 0}
	if o.self {
		sr.own = &ownLog{}
	}
	ks.series = append(ks.series, sr)
	o.nseries++
	return sr
}

// estimate is T̂, the origin's node time as the store estimates it at local
// time now: its asOf, moved forward by however much of the time since the
// store learned it exceeds the grace, and never below the floor. For a fixed
// origin it never decreases as now grows, whatever is merged in between.
func (s *Store) estimate(o *origin, now int64) int64 {
	if o.self {
		return o.asOf
	}
	t := o.asOf
	if age := now - o.heardAt; age > s.grace {
		t += min(age-s.grace, MaxTime-t) // saturates at MaxTime
	}
	return min(max(t, o.floor), MaxTime)
}

// observe folds what a delta says about origin o into the store.
func (s *Store) observe(o *origin, st OriginState, now int64, direct bool, fresh bool) {
	heard := now - st.Age
	if direct {
		o.lastDirect = now
	}
	switch {
	case fresh:
		o.asOf, o.heardAt, o.relayed = st.AsOf, heard, !direct
	case st.AsOf > o.asOf:
		// A report that lags the estimate the store has been sliding forward
		// must not pull it back: views that slid past slots must not see them
		// again, and GC may have dropped them.
		o.floor = max(o.floor, s.estimate(o, now))
		o.asOf, o.heardAt, o.relayed = st.AsOf, heard, !direct
	case st.AsOf == o.asOf && heard < o.heardAt:
		// The same asOf known earlier elsewhere: the origin was there by then.
		o.heardAt, o.relayed = heard, !direct
	}
}

// SetOwnAsOf records that the store's own counts are complete up to node
// time t: every slot counted up to t has been passed to RecordOwn. The next
// deltas carry it. It only grows; an earlier t is ignored.
func (s *Store) SetOwnAsOf(t int64) {
	t = min(max(t, 0), MaxTime)
	if t > s.own.asOf {
		s.own.asOf = t
		s.gen++
	}
}

// RecordOwn mirrors the local window of key into the store: for each slot,
// the store keeps the maximum of what it held and what is passed, so slots
// may be passed again and again (a whole window each tick, or only the open
// and just-closed slots). Offered is raised to Admitted if below it. Slots
// older than the key's horizon before the own asOf are ignored.
//
// It returns an error, and records nothing, if key is invalid or an epoch is
// outside [1, MaxEpoch]. Call SetOwnAsOf after recording everything counted
// up to the time passed to it: a delta carries the own asOf with the slots,
// and peers reject entries more than MaxLeadSlots ahead of it.
func (s *Store) RecordOwn(key string, slots []SlotCounts) error {
	ks := s.keyState(key, false)
	if ks == nil {
		if err := limits.ValidateKey(key); err != nil {
			return fmt.Errorf("%w: %w", ErrInvalidSlot, err)
		}
	}
	for i := range slots {
		if e := slots[i].Epoch; e < 1 || e > MaxEpoch {
			return fmt.Errorf("%w: key %q: slots[%d] epoch %d out of range [1, %d]", ErrInvalidSlot, clip(key), i, e, MaxEpoch)
		}
	}
	var sr *series
	cur := s.last + 1
	cut := slotOf(s.own.asOf) - int64(s.horizonOrDefault(ks))
	for _, sc := range slots {
		if sc.Admitted == 0 && sc.Offered == 0 || sc.Epoch < cut {
			continue
		}
		if ks == nil {
			ks = s.keyState(key, true)
		}
		if sr == nil {
			if sr = ks.seriesOf(s.own); sr == nil {
				sr = s.newSeries(ks, s.own)
			}
		}
		old, now, held := sr.put(sc.Epoch, pack(sc.Admitted, max(sc.Offered, sc.Admitted)), ks.maxCap())
		if held && now != old {
			s.logChange(sr, sc.Epoch, cur)
			s.gen++
		}
	}
	return nil
}

// RecordOwnQuota records the quota this node holds for key as of slot
// epoch: the cap it put on its own window count, which peers read as held
// by this node (View.Quota). Each call is a new announcement that replaces
// the last one (peers keep the latest); it goes out with the next deltas.
// Errors as for RecordOwn.
func (s *Store) RecordOwnQuota(key string, epoch int64, quota uint32) error {
	ks := s.keyState(key, false)
	if ks == nil {
		if err := limits.ValidateKey(key); err != nil {
			return fmt.Errorf("%w: %w", ErrInvalidSlot, err)
		}
	}
	if epoch < 1 || epoch > MaxEpoch {
		return fmt.Errorf("%w: key %q: quota epoch %d out of range [1, %d]", ErrInvalidSlot, clip(key), epoch, MaxEpoch)
	}
	if ks == nil {
		ks = s.keyState(key, true)
	}
	sr := ks.seriesOf(s.own)
	if sr == nil {
		sr = s.newSeries(ks, s.own)
	}
	s.quotaSeq++
	if sr.putQuota(epoch, s.quotaSeq, quota) {
		cur := s.last + 1
		sr.own.qSeq = cur
		s.logChange(sr, epoch, cur)
		s.gen++
	}
	return nil
}

func (s *Store) horizonOrDefault(ks *keyState) int {
	if ks == nil {
		return MaxHorizon
	}
	return ks.horizon
}

// logChange notes that own slot e of sr changed in interval seq and moves
// sr to the front of the change list.
func (s *Store) logChange(sr *series, e int64, seq uint64) {
	l := sr.own
	switch {
	case l.n > 0 && l.chg[l.n-1].seq == seq:
		c := &l.chg[l.n-1]
		c.lo, c.hi = min(c.lo, e), max(c.hi, e)
	default:
		if l.n == len(l.chg) {
			// Merge the two oldest records: the range covers both, under the
			// newer interval, so a peer that acknowledged only the older one
			// still gets both.
			a, b := l.chg[0], l.chg[1]
			l.chg[0] = change{seq: b.seq, lo: min(a.lo, b.lo), hi: max(a.hi, b.hi)}
			copy(l.chg[1:], l.chg[2:])
			l.n--
		}
		l.chg[l.n] = change{seq: seq, lo: e, hi: e}
		l.n++
	}
	l.last = seq
	if s.head != sr {
		s.unlink(sr)
		l.next = s.head
		if s.head != nil {
			s.head.own.prev = sr
		}
		s.head = sr
	}
}

func (s *Store) unlink(sr *series) {
	l := sr.own
	if l.prev != nil {
		l.prev.own.next = l.next
	} else if s.head == sr {
		s.head = l.next
	}
	if l.next != nil {
		l.next.own.prev = l.prev
	}
	l.prev, l.next = nil, nil
}

// Tick closes the current delta interval and returns its sequence number.
// Deltas built afterwards are complete up to it. Call it once per sync
// interval, after recording own slots and asOf and before building deltas.
func (s *Store) Tick() uint64 {
	s.last++
	return s.last
}

// MergeStats says what a Merge did.
type MergeStats struct {
	// Changed counts entries that raised a stored count.
	Changed int
	// Unchanged counts entries the store already held (re-sends,
	// duplicates, older values).
	Unchanged int
	// Stale counts entries older than their key's horizon, ignored.
	Stale int
	// Self counts entries of the store's own origin, ignored: full states
	// relay them back.
	Self int
	// SelfAhead counts, among those, entries above what the store holds for
	// itself: another process is using this incarnation, or a bug.
	SelfAhead int
	// NewOrigins counts origins the store had not known.
	NewOrigins int
}

// Merge joins delta d into the store at local time nowLocal. It validates
// d first (Delta.Validate, and d must not come from the store's own origin)
// and on error returns it wrapped, having changed nothing. Entries and state
// of the store's own current origin, which full states relay back, are
// ignored and counted in MergeStats.Self. Merging a delta twice, or an old
// delta after a newer one, changes nothing.
func (s *Store) Merge(d Delta, nowLocal int64) (MergeStats, error) {
	var st MergeStats
	if err := d.Validate(); err != nil {
		return st, fmt.Errorf("merge from %v: %w", d.From, err)
	}
	if d.From == s.self {
		return st, fmt.Errorf("merge: %w %v", ErrFromSelf, d.From)
	}
	now := s.advance(nowLocal)

	idx := s.scratch[:0]
	for _, os := range d.Origins {
		if os.ID == s.self {
			idx = append(idx, nil)
			continue
		}
		o, known := s.origins[os.ID]
		if !known {
			o = &origin{id: os.ID}
			s.origins[os.ID] = o
			st.NewOrigins++
		}
		s.observe(o, os, now, os.ID == d.From, !known)
		idx = append(idx, o)
	}
	s.scratch = idx[:0]

	var ks *keyState
	var sr *series
	for i := range d.Entries {
		e := &d.Entries[i]
		o := idx[e.Origin]
		v := pack(e.Admitted, e.Offered)
		if o == nil {
			st.Self++
			if s.selfAhead(e.Key, e.Epoch, v) {
				st.SelfAhead++
			}
			continue
		}
		if v == 0 {
			st.Unchanged++
			continue
		}
		if ks == nil || ks.key != e.Key {
			ks, sr = s.keyState(e.Key, false), nil
		}
		horizon := 0
		if ks != nil {
			horizon = ks.horizon
		} else {
			horizon = s.horizonFor(e.Key)
		}
		if e.Epoch < slotOf(s.estimate(o, now))-int64(horizon) {
			st.Stale++
			continue
		}
		if ks == nil {
			ks = s.keyState(e.Key, true)
		}
		if sr == nil || sr.o != o {
			if sr = ks.seriesOf(o); sr == nil {
				sr = s.newSeries(ks, o)
			}
		}
		old, nv, held := sr.put(e.Epoch, v, ks.maxCap())
		switch {
		case !held:
			st.Stale++
		case nv != old:
			st.Changed++
		default:
			st.Unchanged++
		}
	}
	for i := range d.Quotas {
		q := &d.Quotas[i]
		o := idx[q.Origin]
		if o == nil {
			st.Self++
			continue
		}
		if ks == nil || ks.key != q.Key {
			ks, sr = s.keyState(q.Key, false), nil
		}
		horizon := 0
		if ks != nil {
			horizon = ks.horizon
		} else {
			horizon = s.horizonFor(q.Key)
		}
		if q.Epoch < slotOf(s.estimate(o, now))-int64(horizon) {
			st.Stale++
			continue
		}
		if ks == nil {
			ks = s.keyState(q.Key, true)
		}
		if sr == nil || sr.o != o {
			if sr = ks.seriesOf(o); sr == nil {
				sr = s.newSeries(ks, o)
			}
		}
		if sr.putQuota(q.Epoch, q.Seq, q.Quota) {
			st.Changed++
		} else {
			st.Unchanged++
		}
	}
	s.noteReceived(d)
	return st, nil
}

// selfAhead reports whether a relayed entry of the store's own origin holds
// more than the store itself, within the horizon (older own slots may have
// been collected here and not yet at the relayer).
func (s *Store) selfAhead(key string, epoch int64, v uint64) bool {
	ks := s.keys[key]
	horizon := DefaultHorizon
	if ks != nil {
		horizon = ks.horizon
	}
	if epoch < slotOf(s.own.asOf)-int64(horizon) {
		return false
	}
	var have uint64
	if ks != nil {
		if sr := ks.seriesOf(s.own); sr != nil {
			have = sr.get(epoch)
		}
	}
	return join(have, v) != have
}

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
	// Quota is the origin's quota register if it is from a slot in the
	// window (AsOfSlot-window, AsOfSlot], else 0: a quota the origin has not
	// renewed for a whole window no longer reserves anything.
	Quota int64
}

// Views calls fn once for every origin other than the store's own that
// holds slots of key, with its view at local time nowLocal (design.md
// section 5): the origin's window read in its own slot numbering, ending at
// the slot of T̂ = asOf + max(0, age - grace). window and demandSlots are
// clamped to [1, horizon] and [0, horizon] for the key's horizon. fn must
// not call back into the store.
//
// Views are cached per key and origin: reading the same window again costs
// a few nanoseconds per origin, and a view that moved forward by one slot
// costs two slot reads; merges keep the caches exact.
func (s *Store) Views(key string, window, demandSlots int, nowLocal int64, fn func(OriginInfo, View)) {
	now := s.advance(nowLocal)
	ks := s.keys[key]
	if ks == nil {
		return
	}
	window = min(max(window, 1), ks.horizon)
	demandSlots = min(max(demandSlots, 0), ks.horizon)
	for _, sr := range ks.series {
		o := sr.o
		if o.self {
			continue
		}
		sigma := slotOf(s.estimate(o, now))
		v := View{
			Admitted: sr.windowed(&sr.win, sigma, window, admittedOf),
			Demand:   sr.windowed(&sr.dem, sigma-1, demandSlots, offeredOf),
			AsOfSlot: sigma,
			Age:      time.Duration(max(0, now-o.heardAt)),
		}
		if sr.qSeq > 0 && sr.qEpoch > sigma-int64(window) {
			v.Quota = int64(sr.quota)
		}
		fn(o.info(), v)
	}
}

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

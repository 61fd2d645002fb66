package crdt

import (
	"fmt"
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
	byIdx   []*origin // origins by index (series.oi); nil where free
	freeIdx []uint32
	keys    map[string]*keyState
	now     int64 // highest local time seen

	seqBase uint64 // first interval seq of this store
	last    uint64 // last closed interval; the open one is last+1
	// head and tail are the keys whose own state changed in the last
	// DeltaIntervals intervals, most recently changed first (ownLog).
	head, tail *keyState

	peers map[string]*peerState
	recv  map[string]*recvState

	scratch []*origin // per-merge origin index, reused
	lastKey *keyState // merge's last key lookup
	wheel   gcWheel   // keys GC must look at, by when

	// gen counts changes to the own state (slots or asOf); normal deltas
	// built since some basis are cached for as long as neither gen nor
	// last changes, so that peers at the same acknowledgement share one.
	gen       uint64
	cacheLast uint64
	cacheGen  uint64
	cached    []cachedDelta

	// heardLog holds the origins whose asOf or heardAt changed since the
	// last DrainHeard, each once (origin.heardQueued).
	heardLog    []*origin
	newsScratch []*origin // addRelayed's
	marks       uint64    // the last builder.mark

	relay     relayLog  // what was merged, for relaying deltas (relaylog.go)
	relaySets uint64    // RelaySets made
	relayWith *RelaySet // the set DeltaForRelaying is building with
}

type cachedDelta struct {
	basis uint64
	relay uint64 // RelaySet id; 0: none
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
	lastDirect int64  // local time of the last delta sent by this origin itself
	newsSeq    uint64 // interval in which its asOf last advanced (relaying deltas)
	nseries    int    // keys holding slots of this origin
	idx        uint32 // its index in Store.byIdx
	// heardQueued says it is on Store.heardLog.
	heardQueued bool
	// mark is the stamp of the delta part being built that holds it, at
	// index markAt of the part's origins (builder.mark).
	mark   uint64
	markAt int
}

// keyState holds every origin's slots for one key. Its series are held by
// value: a pointer to one is valid until the next newSeries or GC of the
// key.
type keyState struct {
	key     string
	series  []series
	own     *ownLog // while the own state changed in the last DeltaIntervals intervals
	due     int64   // local time from which GC should look at the key; 0: not queued for GC
	horizon int32
	queued  bool // on the GC wheel
}

// ownLog records which of the store's own slots of a key changed in which
// delta interval, so that a delta since any acknowledged interval is built
// from the keys changed since then only. Ranges are merged when the log is
// full, which can only make a delta re-send a few unchanged slots. A key
// whose own state has not changed for DeltaIntervals intervals needs no
// log (a peer that far behind gets a full state), and Tick frees it.
type ownLog struct {
	prev, next *keyState // the store's change list, most recent first
	qSeq       uint64    // interval of the newest change to the quota register
	n          int       // records
	// The records, oldest first: the first here (most keys change in one
	// interval and then rest), the next ones in more, made for a key that
	// changes again within DeltaIntervals.
	first change
	more  *[logRecords - 1]change
}

// change says that in interval seq, own slots lo to hi changed.
type change struct {
	seq    uint64
	lo, hi int64
}

// logRecords is how many records a log keeps: a peer that acknowledged an
// interval older than the oldest gets the union of the oldest two.
const logRecords = 4

// rec returns record i.
func (l *ownLog) rec(i int) *change {
	if i == 0 {
		return &l.first
	}
	return &l.more[i-1]
}

// last returns the interval of the newest change.
func (l *ownLog) last() uint64 {
	if l.n == 0 {
		return l.qSeq
	}
	return max(l.rec(l.n-1).seq, l.qSeq)
}

const (
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
		byIdx:   []*origin{own},
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
func (ks *keyState) maxCap() int { return int(ks.horizon) + MaxLeadSlots + 1 }

func (s *Store) keyState(key string, create bool) *keyState {
	if ks := s.lastKey; ks != nil && ks.key == key {
		return ks
	}
	ks := s.keys[key]
	if ks == nil && create {
		ks = &keyState{key: key, horizon: int32(s.horizonFor(key))}
		s.keys[key] = ks
	}
	if ks != nil {
		s.lastKey = ks
	}
	return ks
}

func (ks *keyState) seriesOf(o *origin) *series {
	for i := range ks.series {
		if ks.series[i].oi == o.idx {
			return &ks.series[i]
		}
	}
	return nil
}

// originOf returns the origin sr belongs to.
func (s *Store) originOf(sr *series) *origin { return s.byIdx[sr.oi] }

// addOrigin makes a new origin known, giving it an index.
func (s *Store) addOrigin(id OriginID) *origin {
	o := &origin{id: id}
	if n := len(s.freeIdx); n > 0 {
		o.idx, s.freeIdx = s.freeIdx[n-1], s.freeIdx[:n-1]
		s.byIdx[o.idx] = o
	} else {
		o.idx = uint32(len(s.byIdx))
		s.byIdx = append(s.byIdx, o)
	}
	s.origins[id] = o
	return o
}

// forgetOrigin drops an origin that no series holds.
func (s *Store) forgetOrigin(o *origin) {
	delete(s.origins, o.id)
	s.byIdx[o.idx] = nil
	s.freeIdx = append(s.freeIdx, o.idx)
}

// newSeries adds o's series to ks. It moves ks's series: pointers to them
// are no longer valid.
func (s *Store) newSeries(ks *keyState, o *origin) *series {
	// Grow by one: a key has a series per origin that uses it, a handful.
	series := make([]series, len(ks.series)+1)
	copy(series, ks.series)
	series[len(ks.series)].oi = o.idx
	ks.series = series
	o.nseries++
	return &series[len(series)-1]
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
		s.noteNews(o)
		s.noteHeard(o)
	case st.AsOf > o.asOf:
		s.noteHeard(o)
		s.noteNews(o)
		// A report that lags the estimate the store has been sliding forward
		// must not pull it back: views that slid past slots must not see them
		// again, and GC may have dropped them.
		o.floor = max(o.floor, s.estimate(o, now))
		o.asOf, o.heardAt, o.relayed = st.AsOf, heard, !direct
	case st.AsOf == o.asOf && heard < o.heardAt:
		// The same asOf known earlier elsewhere: the origin was there by then.
		o.heardAt, o.relayed = heard, !direct
		s.noteHeard(o)
	}
}

// noteHeard queues o for the next DrainHeard.
func (s *Store) noteHeard(o *origin) {
	if !o.heardQueued {
		o.heardQueued = true
		s.heardLog = append(s.heardLog, o)
	}
}

// DrainHeard calls fn with every origin other than the store's own whose
// asOf or heardAt changed since the last call, once each, in the order
// they first changed, and forgets them. A caller that keeps per-origin
// liveness follows the store this way at a cost per origin merged, instead
// of reading every origin (Origins) on every tick. fn must not call back
// into the store.
func (s *Store) DrainHeard(fn func(OriginInfo)) {
	for i, o := range s.heardLog {
		o.heardQueued = false
		s.heardLog[i] = nil
		if s.byIdx[o.idx] == o { // not forgotten since
			fn(o.info())
		}
	}
	s.heardLog = s.heardLog[:0]
}

// Origin returns what the store knows of origin id, and whether it knows
// it at all.
func (s *Store) Origin(id OriginID) (OriginInfo, bool) {
	o := s.origins[id]
	if o == nil {
		return OriginInfo{}, false
	}
	return o.info(), true
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
			s.logChange(ks, sc.Epoch, cur)
			s.gen++
			s.gcAfterChange(ks)
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
		s.ownLog(ks).qSeq = s.last + 1
		s.gen++
		s.gcAfterChange(ks)
	}
	return nil
}

func (s *Store) horizonOrDefault(ks *keyState) int {
	if ks == nil {
		return MaxHorizon
	}
	return int(ks.horizon)
}

// logChange notes that own slot e of ks changed in interval seq and moves
// ks to the front of the change list.
func (s *Store) logChange(ks *keyState, e int64, seq uint64) {
	l := s.ownLog(ks)
	if l.n > 0 {
		if c := l.rec(l.n - 1); c.seq == seq {
			c.lo, c.hi = min(c.lo, e), max(c.hi, e)
			return
		}
	}
	if l.n == logRecords {
		// Merge the two oldest records: the range covers both, under the
		// newer interval, so a peer that acknowledged only the older one
		// still gets both.
		a, b := l.rec(0), l.rec(1)
		*a = change{seq: b.seq, lo: min(a.lo, b.lo), hi: max(a.hi, b.hi)}
		for i := 1; i < l.n-1; i++ {
			*l.rec(i) = *l.rec(i + 1)
		}
		l.n--
	}
	if l.n == 1 && l.more == nil {
		l.more = new([logRecords - 1]change)
	}
	*l.rec(l.n) = change{seq: seq, lo: e, hi: e}
	l.n++
}

// ownLog returns ks's change log, made if needed, and moves ks to the
// front of the change list.
func (s *Store) ownLog(ks *keyState) *ownLog {
	l := ks.own
	if l == nil {
		l = &ownLog{}
		ks.own = l
	}
	if s.head != ks {
		s.unlink(ks)
		l.next = s.head
		if s.head != nil {
			s.head.own.prev = ks
		} else {
			s.tail = ks
		}
		s.head = ks
	}
	return l
}

// unlink takes ks off the change list and drops its log.
func (s *Store) unlink(ks *keyState) {
	l := ks.own
	if l == nil {
		return
	}
	if l.prev != nil {
		l.prev.own.next = l.next
	} else if s.head == ks {
		s.head = l.next
	}
	if l.next != nil {
		l.next.own.prev = l.prev
	} else if s.tail == ks {
		s.tail = l.prev
	}
	l.prev, l.next = nil, nil
}

// Tick closes the current delta interval and returns its sequence number.
// Deltas built afterwards are complete up to it. Call it once per sync
// interval, after recording own slots and asOf and before building deltas.
func (s *Store) Tick() uint64 {
	s.last++
	s.tickRelay()
	// No delta will be built on an interval older than DeltaIntervals (a
	// peer that far behind gets a full state): logs whose every change is
	// that old are never read again.
	if s.last > uint64(s.cfg.DeltaIntervals) {
		stale := s.last - uint64(s.cfg.DeltaIntervals)
		for ks := s.tail; ks != nil && ks.own.last() <= stale; ks = s.tail {
			s.unlink(ks)
			ks.own = nil
		}
	}
	return s.last
}

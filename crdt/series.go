package crdt

import (
	"math"
	"unsafe"
)

// series holds one origin's slots for one key and its quota register.
//
// Offered counts are read only by the demand views, over the few slots
// before σ (at most MaxDemandSlots), and σ is never more than MaxLeadSlots
// before the newest slot a series holds (an entry leads its origin's asOf
// by at most that much, and σ is at or after asOf's slot). So a series
// keeps offered only for its recentSlots newest epochs; an older slot
// keeps its admitted count, and its offered count reads as that (a slot
// that admitted nothing is then empty). This is a projection of the join,
// the same whatever order slots arrive in, and no view ever reads what it
// drops (design.md §5, "Memory").
//
// Slots take one of two forms, chosen by how many the series holds, so that
// a key far from its limit costs tens of bytes per origin and a hot one
// about a byte per slot:
//
//   - sparse (d == nil): buf holds up to sparseMax (epoch, packed counts)
//     pairs, sorted by epoch;
//   - dense (d != nil): buf holds a ring of d.n admitted counts indexed by
//     epoch modulo d.n, covering the epochs [d.lo, d.hi] (every position
//     outside that range holds zero), then a ring of recentSlots offered
//     counts for the epochs (d.hi−recentSlots, d.hi]. Each ring is as
//     narrow as its largest count allows (8, 16 or 32 bits); a count that
//     does not fit widens it.
//
// In both forms an absent slot counts as zero, the bottom of the join, and
// the series holds no epoch more than maxCap−1 before its newest (maxCap is
// the key's horizon plus MaxLeadSlots plus one): a slot that would stretch
// it further pushes out the oldest, which lie beyond the horizon of every
// view, and a slot that old is not held.
type series struct {
	buf []uint64
	d   *dense // nil while sparse

	// The quota register: the quota the origin announced with sequence
	// number qSeq, in slot qEpoch (qSeq 0: none received yet). A higher
	// sequence number replaces it.
	qEpoch int64
	qSeq   uint64
	quota  uint32

	oi uint32 // the origin, Store.byIdx[oi]: 56 bytes a series
}

// dense is the bookkeeping of a series in ring form, with its view caches.
type dense struct {
	lo    int64 // oldest epoch that may be non-zero; the ring is empty when lo > hi
	hi    int64 // newest non-zero epoch
	n     int32 // admitted ring positions
	abits uint8 // bits per admitted count: 8, 16 or 32
	obits uint8 // bits per offered count

	// View caches: running sums over the last window the views asked for,
	// updated as slots change.
	win sumCache // admitted over [end-k+1, end], end = σ
	dem sumCache // offered over [end-k+1, end], end = σ-1
}

const (
	// sparseMax is the most slots a series holds in sparse form (16 bytes
	// each); one more makes it dense. A dense series that GC finds holding
	// at most sparseMax/2 slots goes back to sparse form.
	sparseMax = 6
	// minRing is the fewest positions a dense ring has.
	minRing = 16
	// recentSlots is how many of its newest epochs a series keeps offered
	// counts for: every slot a demand view may read.
	recentSlots = MaxDemandSlots + MaxLeadSlots + 1

	seriesSize = int(unsafe.Sizeof(series{}))
	denseSize  = int(unsafe.Sizeof(dense{}))
)

// putQuota joins (e, seq, q) into the quota register and reports whether it
// changed. The origin numbers its announcements, so the latest wins: a
// quota may fall, and flickering quotas are not held at their highest.
func (s *series) putQuota(e int64, seq uint64, q uint32) bool {
	if seq <= s.qSeq {
		return false
	}
	s.qEpoch, s.qSeq, s.quota = e, seq, q
	return true
}

// held reports whether the series still holds anything: slots, or a quota
// register that reserves room (a register of zero is a withdrawal).
func (s *series) held() bool { return !s.empty() || s.qSeq > 0 && s.quota > 0 }

// sumCache is a running sum of one count over the k slots ending at end.
type sumCache struct {
	end int64
	sum int64
	k   int32
	ok  bool
}

// covers reports whether epoch e lies in the cached range.
func (c *sumCache) covers(e int64) bool {
	return c.ok && e <= c.end && e > c.end-int64(c.k)
}

func pack(admitted, offered uint32) uint64 { return uint64(admitted)<<32 | uint64(offered) }
func admittedOf(v uint64) int64            { return int64(v >> 32) }
func offeredOf(v uint64) int64             { return int64(uint32(v)) }

// join is the pointwise maximum of two packed slots.
func join(a, b uint64) uint64 {
	return pack(max(uint32(a>>32), uint32(b>>32)), max(uint32(a), uint32(b)))
}

// aged is v as a slot older than the recent ones keeps it: its admitted
// count for both.
func aged(v uint64) uint64 { return v&^math.MaxUint32 | v>>32 }

// bitsFor is the narrowest count width that holds c.
func bitsFor(c uint32) uint8 {
	switch {
	case c <= math.MaxUint8:
		return 8
	case c <= math.MaxUint16:
		return 16
	}
	return 32
}

func (s *series) empty() bool {
	if s.d != nil {
		return s.d.lo > s.d.hi
	}
	return len(s.buf) == 0
}

// span returns the oldest and newest epochs the series may hold non-zero;
// lo > hi when it is empty.
func (s *series) span() (lo, hi int64) {
	if s.d != nil {
		return s.d.lo, s.d.hi
	}
	if len(s.buf) == 0 {
		return 1, 0
	}
	return int64(s.buf[0]), int64(s.buf[len(s.buf)-2])
}

// get returns epoch e's packed counts, zero when not held.
func (s *series) get(e int64) uint64 {
	if s.d == nil {
		for i := 0; i < len(s.buf); i += 2 {
			if int64(s.buf[i]) == e {
				return s.buf[i+1]
			}
		}
		return 0
	}
	if e < s.d.lo || e > s.d.hi {
		return 0
	}
	return s.d.load(s.buf, e)
}

// each calls fn, in epoch order, for every non-zero slot in [from, to].
func (s *series) each(from, to int64, fn func(e int64, v uint64)) {
	if s.d == nil {
		for i := 0; i < len(s.buf); i += 2 {
			if e := int64(s.buf[i]); e >= from && e <= to {
				fn(e, s.buf[i+1])
			}
		}
		return
	}
	for e := max(from, s.d.lo); e <= min(to, s.d.hi); e++ {
		if v := s.d.load(s.buf, e); v != 0 {
			fn(e, v)
		}
	}
}

// count returns how many non-zero slots the series holds.
func (s *series) count() int {
	if s.d == nil {
		return len(s.buf) / 2
	}
	n := 0
	s.each(s.d.lo, s.d.hi, func(int64, uint64) { n++ })
	return n
}

// put joins v into epoch e (v non-zero, 1 <= e). It returns the old and new
// value and whether the slot is held; a slot older than the series can
// reach is not held (it is beyond every view's horizon).
func (s *series) put(e int64, v uint64, maxCap int) (was, now uint64, held bool) {
	if s.d == nil {
		if was, now, held, done := s.putSparse(e, v, maxCap); done {
			return was, now, held
		}
		s.toDense(e, maxCap)
	}
	return s.putDense(e, v, maxCap)
}

// putSparse is put for a sparse series. done is false when the slot would
// be one more than sparseMax: the caller makes the series dense.
func (s *series) putSparse(e int64, v uint64, maxCap int) (was, now uint64, held, done bool) {
	n := len(s.buf) / 2
	hi := e
	if n > 0 {
		hi = max(hi, int64(s.buf[len(s.buf)-2]))
		if hi-e+1 > int64(maxCap) {
			return 0, 0, false, true
		}
	}
	if e <= hi-recentSlots {
		if v = aged(v); v == 0 {
			return 0, 0, true, true // nothing a slot this old keeps
		}
	}
	i := 0
	for i < n && int64(s.buf[2*i]) < e {
		i++
	}
	if i < n && int64(s.buf[2*i]) == e {
		was = s.buf[2*i+1]
		now = join(was, v)
		s.buf[2*i+1] = now
		return was, now, true, true
	}
	// A new slot. A newer one pushes out those it takes out of reach, and
	// makes those it takes out of the recent ones keep admitted only.
	drop := 0
	if i == n {
		for drop < n && int64(s.buf[2*drop]) < e-int64(maxCap)+1 {
			drop++
		}
	}
	if n-drop >= sparseMax {
		return 0, 0, false, false
	}
	if drop > 0 {
		s.buf = append(s.buf[:0], s.buf[2*drop:]...)
		i -= drop
	}
	if i == len(s.buf)/2 {
		s.ageSparse(e)
		i = len(s.buf) / 2
	}
	if len(s.buf) == cap(s.buf) {
		// Grow by one slot at a time: most series stay at one or two.
		nb := make([]uint64, len(s.buf), len(s.buf)+2)
		copy(nb, s.buf)
		s.buf = nb
	}
	s.buf = append(s.buf, 0, 0)
	copy(s.buf[2*i+2:], s.buf[2*i:])
	s.buf[2*i], s.buf[2*i+1] = uint64(e), v
	return 0, v, true, true
}

// ageSparse makes the pairs that a new newest epoch hi takes out of the
// recent ones keep their admitted count only, dropping those left empty.
func (s *series) ageSparse(hi int64) {
	j := 0
	for i := 0; i < len(s.buf); i += 2 {
		e, v := int64(s.buf[i]), s.buf[i+1]
		if e <= hi-recentSlots {
			v = aged(v)
		}
		if v != 0 {
			s.buf[j], s.buf[j+1] = uint64(e), v
			j += 2
		}
	}
	s.buf = s.buf[:j]
}

// toDense turns a sparse series into rings long and wide enough for its
// slots and for a slot at e, which is newer than every slot or within
// reach.
func (s *series) toDense(e int64, maxCap int) {
	lo, hi := min(int64(s.buf[0]), e), max(int64(s.buf[len(s.buf)-2]), e)
	d := &dense{lo: 1, hi: 0, abits: 8, obits: 8}
	for i := 1; i < len(s.buf); i += 2 {
		d.abits = max(d.abits, bitsFor(uint32(s.buf[i]>>32)))
		d.obits = max(d.obits, bitsFor(uint32(s.buf[i])))
	}
	d.n = int32(min(int64(maxCap), max(hi-lo+1, minRing)))
	pairs := s.buf
	s.buf, s.d = make([]uint64, d.words()), d
	for i := 0; i < len(pairs); i += 2 {
		s.putDense(int64(pairs[i]), pairs[i+1], maxCap)
	}
}

// putDense is put for a dense series.
func (s *series) putDense(e int64, v uint64, maxCap int) (was, now uint64, held bool) {
	d := s.d
	switch {
	case d.lo > d.hi:
		d.lo = e
		s.advance(e, true)
	case e > d.hi:
		span := e - d.lo + 1
		if span > int64(d.n) && int(d.n) < maxCap {
			s.resize(int32(min(int64(maxCap), max(2*int64(d.n), span))), d.abits, d.obits)
		}
		if span > int64(d.n) {
			s.dropBelow(e - int64(d.n) + 1)
		}
		emptied := d.lo > d.hi
		if emptied {
			d.lo = e
		}
		s.advance(e, emptied)
	case e < d.lo:
		span := d.hi - e + 1
		if span > int64(d.n) && int(d.n) < maxCap {
			s.resize(int32(min(int64(maxCap), max(2*int64(d.n), span))), d.abits, d.obits)
		}
		if span > int64(d.n) {
			return 0, 0, false
		}
		d.lo = e
	}
	recent := e > d.hi-recentSlots
	if !recent {
		v = aged(v)
	}
	was = d.load(s.buf, e)
	now = join(was, v)
	if now != was {
		if b := bitsFor(uint32(now >> 32)); b > d.abits {
			s.resize(d.n, b, d.obits)
		}
		if b := bitsFor(uint32(now)); recent && b > d.obits {
			s.resize(d.n, d.abits, b)
		}
		d.store(s.buf, e, now, recent)
		if d.win.covers(e) {
			d.win.sum += admittedOf(now) - admittedOf(was)
		}
		if d.dem.covers(e) {
			d.dem.sum += offeredOf(now) - offeredOf(was)
		}
	}
	return was, now, true
}

// advance makes e, newer than every slot held (or the first, if the series
// was empty), the newest epoch: the epochs it takes out of the recent ones
// keep their admitted count only (the demand cache follows), and the
// offered positions of the new recent epochs start at zero.
func (s *series) advance(e int64, wasEmpty bool) {
	d := s.d
	if wasEmpty {
		clear(s.buf[d.admWords():])
		d.hi = e
		return
	}
	for x := max(d.hi-recentSlots+1, d.lo); x <= min(d.hi, e-recentSlots); x++ {
		if d.dem.covers(x) {
			v := d.load(s.buf, x)
			d.dem.sum += admittedOf(v) - offeredOf(v)
		}
	}
	for y := max(d.hi, e-recentSlots) + 1; y <= e; y++ {
		d.storeOff(s.buf, y, 0)
	}
	d.hi = e
}

// words returns how many words the two rings take.
func (d *dense) words() int {
	return d.admWords() + wordsFor(recentSlots, d.obits)
}

func (d *dense) admWords() int { return wordsFor(int(d.n), d.abits) }

func wordsFor(n int, bits uint8) int {
	per := 64 / int(bits)
	return (n + per - 1) / per
}

func field(buf []uint64, p int, bits uint8) uint64 {
	per := 64 / int(bits)
	return buf[p/per] >> (uint(p%per) * uint(bits)) & (uint64(1)<<bits - 1)
}

func setField(buf []uint64, p int, bits uint8, c uint64) {
	per := 64 / int(bits)
	shift := uint(p%per) * uint(bits)
	mask := uint64(1)<<bits - 1
	buf[p/per] = buf[p/per]&^(mask<<shift) | c<<shift
}

// load returns epoch e's counts (e within [lo, hi]).
func (d *dense) load(buf []uint64, e int64) uint64 {
	a := field(buf, int(e%int64(d.n)), d.abits)
	if e <= d.hi-recentSlots {
		return a<<32 | a
	}
	f := field(buf[d.admWords():], int(e%recentSlots), d.obits)
	return a<<32 | f
}

// store sets epoch e's counts to v, which fit the rings' widths; a slot
// that is not recent keeps its admitted count only.
func (d *dense) store(buf []uint64, e int64, v uint64, recent bool) {
	setField(buf, int(e%int64(d.n)), d.abits, v>>32)
	if recent {
		d.storeOff(buf, e, uint64(uint32(v)))
	}
}

func (d *dense) storeOff(buf []uint64, e int64, c uint64) {
	setField(buf[d.admWords():], int(e%recentSlots), d.obits, c)
}

// resize moves the rings to n admitted positions (n >= the span held) and
// the given widths (wide enough for every count held).
func (s *series) resize(n int32, abits, obits uint8) {
	d := s.d
	nd := *d
	nd.n, nd.abits, nd.obits = n, abits, obits
	buf := make([]uint64, nd.words())
	for e := d.lo; e <= d.hi; e++ {
		if v := d.load(s.buf, e); v != 0 {
			nd.store(buf, e, v, e > d.hi-recentSlots)
		}
	}
	*d, s.buf = nd, buf
}

// dropBelow forgets every epoch below cut and returns how many non-zero
// slots it dropped. Caches whose range reaches a dropped epoch are
// invalidated.
func (s *series) dropBelow(cut int64) int {
	if s.d == nil {
		i := 0
		for i < len(s.buf) && int64(s.buf[i]) < cut {
			i += 2
		}
		if i > 0 {
			s.buf = append(s.buf[:0], s.buf[i:]...)
		}
		return i / 2
	}
	d := s.d
	if d.lo > d.hi || cut <= d.lo {
		return 0
	}
	n := 0
	end := min(cut-1, d.hi)
	for e := d.lo; e <= end; e++ {
		if d.load(s.buf, e) != 0 {
			d.store(s.buf, e, 0, e > d.hi-recentSlots)
			n++
		}
	}
	if d.win.ok && end > d.win.end-int64(d.win.k) {
		d.win.ok = false
	}
	if d.dem.ok && end > d.dem.end-int64(d.dem.k) {
		d.dem.ok = false
	}
	d.lo = cut
	return n
}

// fit returns memory the series no longer needs: nothing at all when it is
// empty; a dense series holding at most sparseMax/2 slots goes back to
// sparse form; a ring much longer than what it holds, or than maxCap
// allows, or wider than its counts need, is rebuilt (dropping epochs that
// no longer fit: they are beyond the horizon, since hi is at most
// MaxLeadSlots past the origin's slot).
func (s *series) fit(maxCap int) {
	if s.empty() {
		s.buf, s.d = nil, nil
		return
	}
	d := s.d
	if d == nil {
		if cap(s.buf) > len(s.buf) {
			s.buf = append([]uint64(nil), s.buf...)
		}
		return
	}
	if int(d.n) > maxCap {
		s.dropBelow(d.hi - int64(maxCap) + 1)
	}
	if s.count() <= sparseMax/2 {
		var buf []uint64
		s.each(d.lo, d.hi, func(e int64, v uint64) { buf = append(buf, uint64(e), v) })
		s.buf, s.d = buf, nil
		return
	}
	var abits, obits uint8 = 8, 8
	s.each(d.lo, d.hi, func(_ int64, v uint64) {
		abits, obits = max(abits, bitsFor(uint32(v>>32))), max(obits, bitsFor(uint32(v)))
	})
	n := min(d.n, int32(maxCap))
	if span := d.hi - d.lo + 1; d.n > minRing && span*4 < int64(d.n) {
		n = int32(max(minRing, 2*span))
	}
	if n != d.n || abits != d.abits || obits != d.obits {
		s.resize(n, abits, obits)
	}
}

// sum returns the total of field over epochs [from, to].
func (s *series) sum(from, to int64, field func(uint64) int64) int64 {
	var n int64
	s.each(from, to, func(_ int64, v uint64) { n += field(v) })
	return n
}

// windowed returns admitted, or offered, summed over the k slots ending at
// end. A dense series uses and refreshes its cache for the count: the same
// range costs nothing, a range that moved forward by fewer than k slots
// costs two reads per slot moved, anything else one pass over the slots
// held in range. A sparse series holds a handful of slots and sums them.
func (s *series) windowed(offered bool, end int64, k int) int64 {
	field := admittedOf
	if offered {
		field = offeredOf
	}
	if k <= 0 {
		return 0
	}
	if s.d == nil {
		return s.sum(end-int64(k)+1, end, field)
	}
	c := &s.d.win
	if offered {
		c = &s.d.dem
	}
	if c.ok && int(c.k) == k && end >= c.end && end-c.end < int64(k) {
		for e := c.end + 1; e <= end; e++ {
			c.sum += field(s.get(e)) - field(s.get(e-int64(k)))
		}
		c.end = end
		return c.sum
	}
	*c = sumCache{end: end, k: int32(k), sum: s.sum(end-int64(k)+1, end, field), ok: true}
	return c.sum
}

// bytes is the memory the series holds beyond its place in its key's
// slice, for keyBytes.
func (s *series) bytes() int {
	n := 8 * cap(s.buf)
	if s.d != nil {
		n += denseSize
	}
	return n
}

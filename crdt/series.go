package crdt

import (
	"math"
	"unsafe"
)

// series holds one origin's slots for one key and its quota register.
//
// Slots take one of two forms, chosen by how many the series holds, so that
// a key far from its limit costs tens of bytes per origin and a hot one
// about two bytes per slot (design.md §5, "Memory"):
//
//   - sparse (d == nil): buf holds up to sparseMax (epoch, packed counts)
//     pairs, sorted by epoch;
//   - dense (d != nil): buf is a ring of d.n positions indexed by epoch
//     modulo d.n, covering the epochs [d.lo, d.hi]; every position outside
//     that range holds zero. Each position packs admitted and offered in
//     d.bits bits each (8, 16 or 32), as narrow as the largest count held
//     allows; a count that does not fit widens the whole ring.
//
// In both forms an absent slot counts as zero, the bottom of the join, and
// the series holds no epoch more than maxCap−1 before its newest (maxCap is
// the key's horizon plus MaxLeadSlots plus one): a slot that would stretch
// it further pushes out the oldest, which lie beyond the horizon of every
// view, and a slot that old is not held.
type series struct {
	o   *origin
	buf []uint64
	d   *dense // nil while sparse

	// The quota register: the quota the origin announced with sequence
	// number qSeq, in slot qEpoch (qSeq 0: none received yet). A higher
	// sequence number replaces it.
	qEpoch int64
	qSeq   uint64
	quota  uint32
}

// dense is the bookkeeping of a series in ring form, with its view caches.
type dense struct {
	lo   int64 // oldest epoch that may be non-zero; the ring is empty when lo > hi
	hi   int64 // newest non-zero epoch
	n    int   // ring positions
	bits uint  // bits per count: 8, 16 or 32

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

	seriesSize = int(unsafe.Sizeof(series{})) + 8 // plus its pointer in keyState.series
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
	k   int
	sum int64
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

// bitsFor is the narrowest count width that holds v's two counts.
func bitsFor(v uint64) uint {
	switch m := max(uint32(v>>32), uint32(v)); {
	case m <= math.MaxUint8:
		return 8
	case m <= math.MaxUint16:
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
func (s *series) put(e int64, v uint64, maxCap int) (old, now uint64, held bool) {
	if s.d == nil {
		if old, now, held, done := s.putSparse(e, v, maxCap); done {
			return old, now, held
		}
		s.toDense(e, v, maxCap)
	}
	return s.putDense(e, v, maxCap)
}

// putSparse is put for a sparse series. done is false when the slot would
// be one more than sparseMax: the caller makes the series dense.
func (s *series) putSparse(e int64, v uint64, maxCap int) (old, now uint64, held, done bool) {
	n := len(s.buf) / 2
	if n > 0 {
		hi := int64(s.buf[len(s.buf)-2])
		if e < hi && hi-e+1 > int64(maxCap) {
			return 0, 0, false, true
		}
	}
	i := 0
	for i < n && int64(s.buf[2*i]) < e {
		i++
	}
	if i < n && int64(s.buf[2*i]) == e {
		old = s.buf[2*i+1]
		now = join(old, v)
		s.buf[2*i+1] = now
		return old, now, true, true
	}
	// A new slot. A newer one pushes out those it takes out of reach.
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

// toDense turns a sparse series into a ring wide and long enough for its
// slots and for v at e, which is newer than every slot or within reach.
func (s *series) toDense(e int64, v uint64, maxCap int) {
	lo, hi := min(int64(s.buf[0]), e), max(int64(s.buf[len(s.buf)-2]), e)
	d := &dense{lo: 1, hi: 0, bits: bitsFor(v)}
	for i := 1; i < len(s.buf); i += 2 {
		d.bits = max(d.bits, bitsFor(s.buf[i]))
	}
	d.n = int(min(int64(maxCap), max(hi-lo+1, minRing)))
	old := s.buf
	s.buf, s.d = make([]uint64, d.words(d.n)), d
	for i := 0; i < len(old); i += 2 {
		s.putDense(int64(old[i]), old[i+1], maxCap)
	}
}

// putDense is put for a dense series.
func (s *series) putDense(e int64, v uint64, maxCap int) (old, now uint64, held bool) {
	d := s.d
	switch {
	case d.lo > d.hi:
		d.lo, d.hi = e, e
	case e > d.hi:
		span := e - d.lo + 1
		if span > int64(d.n) && d.n < maxCap {
			s.resize(int(min(int64(maxCap), max(2*int64(d.n), span))), d.bits)
		}
		if span > int64(d.n) {
			s.dropBelow(e - int64(d.n) + 1)
		}
		if d.lo > d.hi {
			d.lo = e
		}
		d.hi = e
	case e < d.lo:
		span := d.hi - e + 1
		if span > int64(d.n) && d.n < maxCap {
			s.resize(int(min(int64(maxCap), max(2*int64(d.n), span))), d.bits)
		}
		if span > int64(d.n) {
			return 0, 0, false
		}
		d.lo = e
	}
	old = d.load(s.buf, e)
	now = join(old, v)
	if now != old {
		if b := bitsFor(now); b > d.bits {
			s.resize(d.n, b)
		}
		d.store(s.buf, e, now)
		if d.win.covers(e) {
			d.win.sum += admittedOf(now) - admittedOf(old)
		}
		if d.dem.covers(e) {
			d.dem.sum += offeredOf(now) - offeredOf(old)
		}
	}
	return old, now, true
}

// words returns how many words a ring of n positions takes.
func (d *dense) words(n int) int {
	per := 32 / int(d.bits)
	return (n + per - 1) / per
}

// load returns epoch e's position, unpacked (e within [lo, hi]).
func (d *dense) load(buf []uint64, e int64) uint64 {
	p := int(e % int64(d.n))
	per := 32 / int(d.bits)
	w := buf[p/per] >> (uint(p%per) * 2 * d.bits)
	mask := uint64(1)<<d.bits - 1
	return (w>>d.bits&mask)<<32 | w&mask
}

// store sets epoch e's position to v, whose counts fit d.bits.
func (d *dense) store(buf []uint64, e int64, v uint64) {
	p := int(e % int64(d.n))
	per := 32 / int(d.bits)
	shift := uint(p%per) * 2 * d.bits
	field := uint64(1)<<(2*d.bits) - 1
	packed := v>>32<<d.bits | v&(uint64(1)<<d.bits-1)
	if d.bits == 32 {
		field, packed = math.MaxUint64, v
	}
	buf[p/per] = buf[p/per]&^(field<<shift) | packed<<shift
}

// resize moves the ring to n positions (n >= the span held) of b bits per
// count (b wide enough for every count held).
func (s *series) resize(n int, b uint) {
	d := s.d
	nd := dense{lo: d.lo, hi: d.hi, n: n, bits: b, win: d.win, dem: d.dem}
	buf := make([]uint64, nd.words(n))
	for e := d.lo; e <= d.hi; e++ {
		if v := d.load(s.buf, e); v != 0 {
			nd.store(buf, e, v)
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
			d.store(s.buf, e, 0)
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
	if d.n > maxCap {
		s.dropBelow(d.hi - int64(maxCap) + 1)
	}
	if s.count() <= sparseMax/2 {
		var buf []uint64
		s.each(d.lo, d.hi, func(e int64, v uint64) { buf = append(buf, uint64(e), v) })
		s.buf, s.d = buf, nil
		return
	}
	b := uint(8)
	s.each(d.lo, d.hi, func(_ int64, v uint64) { b = max(b, bitsFor(v)) })
	n := min(d.n, maxCap)
	if span := d.hi - d.lo + 1; d.n > minRing && span*4 < int64(d.n) {
		n = int(max(minRing, 2*span))
	}
	if n != d.n || b != d.bits {
		s.resize(n, b)
	}
}

// sum returns the total of field over epochs [from, to].
func (s *series) sum(from, to int64, field func(uint64) int64) int64 {
	var n int64
	s.each(from, to, func(_ int64, v uint64) { n += field(v) })
	return n
}

// windowed returns field summed over the k slots ending at end. A dense
// series uses and refreshes its cache for the field: the same range costs
// nothing, a range that moved forward by fewer than k slots costs two reads
// per slot moved, anything else one pass over the slots held in range. A
// sparse series holds a handful of slots and sums them.
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
	if c.ok && c.k == k && end >= c.end && end-c.end < int64(k) {
		for e := c.end + 1; e <= end; e++ {
			c.sum += field(s.get(e)) - field(s.get(e-int64(k)))
		}
		c.end = end
		return c.sum
	}
	*c = sumCache{end: end, k: k, sum: s.sum(end-int64(k)+1, end, field), ok: true}
	return c.sum
}

// bytes is the memory the series holds, for keyBytes.
func (s *series) bytes() int {
	n := seriesSize + 8*cap(s.buf)
	if s.d != nil {
		n += denseSize
	}
	return n
}

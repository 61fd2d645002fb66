package crdt

// series holds one origin's slots for one key. Slots live in a ring indexed
// by epoch modulo its length, covering the epochs [lo, hi]: every position
// outside that range holds zero, and an absent slot counts as zero, which is
// the bottom of the join. The ring grows by doubling up to maxCap (the key's
// horizon plus MaxLeadSlots plus one), so a series never holds more than
// that many slots whatever arrives: a slot that would stretch it further
// pushes out the oldest, which lie beyond the horizon of every view.
type series struct {
	o    *origin
	ks   *keyState
	ring []uint64 // admitted<<32 | offered
	lo   int64    // oldest epoch that may be non-zero; empty when lo > hi
	hi   int64    // newest non-zero epoch

	// View caches (remote origins only): running sums over the last
	// window the views asked for, updated as slots change.
	win sumCache // admitted over [end-k+1, end], end = σ
	dem sumCache // offered over [end-k+1, end], end = σ-1

	own *ownLog // the store's own origin only

	// The quota register: the quota the origin announced with sequence
	// number qSeq, in slot qEpoch (qSeq 0: none received yet). A higher
	// sequence number replaces it.
	qEpoch int64
	qSeq   uint64
	quota  uint32
}

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

func (s *series) empty() bool { return s.lo > s.hi }

func (s *series) pos(e int64) int { return int(e % int64(len(s.ring))) }

// get returns epoch e's packed counts, zero when not held.
func (s *series) get(e int64) uint64 {
	if e < s.lo || e > s.hi {
		return 0
	}
	return s.ring[s.pos(e)]
}

// put joins v into epoch e (v non-zero, 1 <= e). It returns the old and new
// value and whether the slot is held; a slot older than the ring can reach
// is not held (it is beyond every view's horizon).
func (s *series) put(e int64, v uint64, maxCap int) (old, now uint64, held bool) {
	switch {
	case s.empty():
		if len(s.ring) == 0 {
			s.ring = make([]uint64, min(4, maxCap))
		}
		s.lo, s.hi = e, e
	case e > s.hi:
		span := e - s.lo + 1
		if span > int64(len(s.ring)) && len(s.ring) < maxCap {
			s.grow(int(min(int64(maxCap), max(2*int64(len(s.ring)), span))))
		}
		if span > int64(len(s.ring)) {
			s.dropBelow(e - int64(len(s.ring)) + 1)
		}
		if s.empty() {
			s.lo = e
		}
		s.hi = e
	case e < s.lo:
		span := s.hi - e + 1
		if span > int64(len(s.ring)) && len(s.ring) < maxCap {
			s.grow(int(min(int64(maxCap), max(2*int64(len(s.ring)), span))))
		}
		if span > int64(len(s.ring)) {
			return 0, 0, false
		}
		s.lo = e
	}
	p := s.pos(e)
	old = s.ring[p]
	now = join(old, v)
	if now != old {
		s.ring[p] = now
		if s.win.covers(e) {
			s.win.sum += admittedOf(now) - admittedOf(old)
		}
		if s.dem.covers(e) {
			s.dem.sum += offeredOf(now) - offeredOf(old)
		}
	}
	return old, now, true
}

// grow moves the ring to n positions (n >= the span held).
func (s *series) grow(n int) {
	ring := make([]uint64, n)
	if !s.empty() {
		for e := s.lo; e <= s.hi; e++ {
			ring[int(e%int64(n))] = s.ring[s.pos(e)]
		}
	}
	s.ring = ring
}

// dropBelow forgets every epoch below cut and returns how many non-zero
// slots it dropped. Caches whose range reaches a dropped epoch are
// invalidated.
func (s *series) dropBelow(cut int64) int {
	if s.empty() || cut <= s.lo {
		return 0
	}
	n := 0
	end := min(cut-1, s.hi)
	for e := s.lo; e <= end; e++ {
		p := s.pos(e)
		if s.ring[p] != 0 {
			s.ring[p] = 0
			n++
		}
	}
	if s.win.ok && end > s.win.end-int64(s.win.k) {
		s.win.ok = false
	}
	if s.dem.ok && end > s.dem.end-int64(s.dem.k) {
		s.dem.ok = false
	}
	s.lo = cut
	return n
}

// fit shrinks the ring when it is much larger than what it holds or than
// maxCap allows, dropping epochs that no longer fit (they are beyond the
// horizon: hi is at most MaxLeadSlots past the origin's slot).
func (s *series) fit(maxCap int) {
	if s.empty() {
		s.ring = nil
		s.lo, s.hi = 1, 0
		s.win.ok, s.dem.ok = false, false
		return
	}
	if len(s.ring) > maxCap {
		s.dropBelow(s.hi - int64(maxCap) + 1)
		s.grow(maxCap)
		return
	}
	if span := s.hi - s.lo + 1; len(s.ring) > 16 && span*4 < int64(len(s.ring)) {
		s.grow(int(max(8, 2*span)))
	}
}

// sum returns the total of field over epochs [from, to].
func (s *series) sum(from, to int64, field func(uint64) int64) int64 {
	from, to = max(from, s.lo), min(to, s.hi)
	var n int64
	for e := from; e <= to; e++ {
		n += field(s.ring[s.pos(e)])
	}
	return n
}

// windowed returns field summed over the k slots ending at end, using and
// refreshing cache c: the same range costs nothing, a range that moved
// forward by fewer than k slots costs two reads per slot moved, anything
// else one pass over the slots held in range.
func (s *series) windowed(c *sumCache, end int64, k int, field func(uint64) int64) int64 {
	if k <= 0 {
		return 0
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
	n := seriesSize + 8*cap(s.ring)
	if s.own != nil {
		n += ownLogSize
	}
	return n
}

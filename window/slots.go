package window

import (
	"math"
	"sync/atomic"

	"github.com/quotamesh/quotamesh/limits"
)

// A window's closed slots live in one of two forms (design.md §3):
//
//   - sparse: up to sparseSlots words in the window's header, each one
//     non-empty closed slot (its epoch modulo 2^24 and its two counts of up
//     to 20 bits). A key that sees a few requests, the vast majority of a
//     large key space, costs nothing beyond its header. Without a second
//     ring (below) the words also keep the non-empty slots older than the
//     ring but within the last minute, for CurrentQPS.
//   - dense: a ring of r positions, one per epoch modulo r, each packing
//     the slot's two counts at 8, 16 or 32 bits each, as narrow as the
//     largest count held allows (a count that does not fit widens the whole
//     ring). The roller upgrades a window to it when a closing slot finds
//     no free word, or has a count of 2^20 or more, and publishes it with
//     one atomic store, under the roll's sequence counter.
//
// Windows shorter than a minute also keep a second ring of 60 one-second
// buckets for CurrentQPS (minuteRing). It is made when the sparse words can
// no longer hold the last minute's slots (the window becomes dense, or a
// closing slot needs a word that a slot older than the ring holds), from
// the slots they held, so the last minute is exact either way.
//
// Every change is made by the holder of busy with seq odd; readers load
// under read's retry, so they never act on a mix of forms.

const (
	// sparseSlots is how many closed slots a window keeps in sparse form.
	sparseSlots = 6

	sparseCountBits = 20
	sparseCountMax  = 1<<sparseCountBits - 1
	sparseEpochBits = 64 - 2*sparseCountBits
	sparseEpochMask = 1<<sparseEpochBits - 1
)

// rings are the window's rings beyond its header, replaced as a whole when
// one is made or dropped.
type rings struct {
	dense   *ring       // nil while sparse
	seconds *minuteRing // nil while the window keeps no second ring
}

func (w *Window) denseRing() *ring {
	if x := w.rings.Load(); x != nil {
		return x.dense
	}
	return nil
}

func (w *Window) secondsRing() *minuteRing {
	if x := w.rings.Load(); x != nil {
		return x.seconds
	}
	return nil
}

// setDense and setSeconds publish a window's rings. Caller holds busy.
func (w *Window) setDense(g *ring) { w.setRings(g, w.secondsRing()) }

func (w *Window) setSeconds(m *minuteRing) { w.setRings(w.denseRing(), m) }

func (w *Window) setRings(g *ring, m *minuteRing) {
	if g == nil && m == nil {
		w.rings.Store(nil)
		return
	}
	w.rings.Store(&rings{dense: g, seconds: m})
}

// ring is a dense ring of closed slots: position p holds the one epoch in
// (open−r, open) congruent to p modulo r, its counts at bits each.
type ring struct {
	bits  uint // 8, 16 or 32
	words []atomic.Uint64
}

// minuteRing holds second s at s mod 60, for the 60 seconds up to the open
// slot's; each holds the closed slots of its second, packed and saturating
// like slots.
type minuteRing [minuteSeconds]atomic.Uint64

func newRing(r int, bits uint) *ring {
	per := 32 / int(bits)
	return &ring{bits: bits, words: make([]atomic.Uint64, (r+per-1)/per)}
}

// load returns position p's packed counts (admitted<<32 | offered).
func (g *ring) load(p int64) uint64 {
	per := 32 / int64(g.bits)
	w := g.words[p/per].Load() >> (uint(p%per) * 2 * g.bits)
	if g.bits == 32 {
		return w
	}
	mask := uint64(1)<<g.bits - 1
	return (w>>g.bits&mask)<<32 | w&mask
}

// store sets position p to v, whose counts fit g.bits. Writer only.
func (g *ring) store(p int64, v uint64) {
	per := 32 / int64(g.bits)
	i, shift := p/per, uint(p%per)*2*g.bits
	if g.bits == 32 {
		g.words[i].Store(v)
		return
	}
	field := uint64(1)<<(2*g.bits) - 1
	packed := v>>32<<g.bits | v&(uint64(1)<<g.bits-1)
	g.words[i].Store(g.words[i].Load()&^(field<<shift) | packed<<shift)
}

// bitsFor is the narrowest ring width that holds v's two counts.
func bitsFor(v uint64) uint {
	switch m := max(uint32(v>>32), uint32(v)); {
	case m <= math.MaxUint8:
		return 8
	case m <= math.MaxUint16:
		return 16
	}
	return 32
}

// sparseWord packs closed slot x's counts v (each at most sparseCountMax).
func sparseWord(x int64, v uint64) uint64 {
	return uint64(x&sparseEpochMask)<<(2*sparseCountBits) | v>>32<<sparseCountBits | v&sparseCountMax
}

// fitsSparse reports whether v's counts fit a sparse word.
func fitsSparse(v uint64) bool { return v>>32 <= sparseCountMax && uint32(v) <= sparseCountMax }

// sparseSlot unpacks a sparse word, whose epoch lies within 2^24 slots
// before the open epoch o.
func sparseSlot(o int64, s uint64) (x int64, v uint64) {
	x = o - (o-int64(s>>(2*sparseCountBits)))&sparseEpochMask
	return x, (s>>sparseCountBits&sparseCountMax)<<32 | s&sparseCountMax
}

// minuteFrom is the first epoch the second ring would hold at open epoch o:
// the start of the 59th second before o's.
func minuteFrom(o int64) int64 {
	return (floorDiv(o, slotsPerSecond) - minuteSeconds + 1) * slotsPerSecond
}

// keepsMinute reports whether the window keeps the last minute's slots in
// its sparse words: a window shorter than a minute without a second ring.
func (w *Window) keepsMinute() bool {
	return int(w.k) < limits.MaxSlots && w.secondsRing() == nil
}

// closedAt returns the packed counts of closed epoch x, o−r < x < o, at
// open epoch o.
func (w *Window) closedAt(o, x int64) uint64 {
	if g := w.denseRing(); g != nil {
		return g.load(mod(x, int64(w.r)))
	}
	for i := range w.sparse {
		if s := w.sparse[i].Load(); s != 0 {
			if y, v := sparseSlot(o, s); y == x {
				return v
			}
		}
	}
	return 0
}

// sumClosed returns the counts of the closed slots in [lo, hi] that the
// ring covers at open epoch o (within (o−r, o)), each saturated at 32 bits.
func (w *Window) sumClosed(o, lo, hi int64) (adm, off int64) {
	lo, hi = max(lo, o-int64(w.r)+1), min(hi, o-1)
	if lo > hi {
		return 0, 0
	}
	if g := w.denseRing(); g != nil {
		r := int64(w.r)
		for x := lo; x <= hi; x++ {
			v := g.load(mod(x, r))
			adm += int64(v >> 32)
			off += int64(v & uint64(maxUint32))
		}
		return adm, off
	}
	for i := range w.sparse {
		if s := w.sparse[i].Load(); s != 0 {
			if x, v := sparseSlot(o, s); x >= lo && x <= hi {
				adm += int64(v >> 32)
				off += int64(v & uint64(maxUint32))
			}
		}
	}
	return adm, off
}

// eachClosed calls fn, oldest first, for every non-empty closed slot in
// [lo, hi] that the ring covers at open epoch o.
func (w *Window) eachClosed(o, lo, hi int64, fn func(x int64, v uint64)) {
	lo, hi = max(lo, o-int64(w.r)+1), min(hi, o-1)
	if lo > hi {
		return
	}
	if g := w.denseRing(); g != nil {
		r := int64(w.r)
		for x := lo; x <= hi; x++ {
			if v := g.load(mod(x, r)); v != 0 {
				fn(x, v)
			}
		}
		return
	}
	var xs [sparseSlots]int64
	var vs [sparseSlots]uint64
	n := 0
	for i := range w.sparse {
		if s := w.sparse[i].Load(); s != 0 {
			if x, v := sparseSlot(o, s); x >= lo && x <= hi {
				j := n
				for ; j > 0 && xs[j-1] > x; j-- {
					xs[j], vs[j] = xs[j-1], vs[j-1]
				}
				xs[j], vs[j] = x, v
				n++
			}
		}
	}
	for i := range n {
		fn(xs[i], vs[i])
	}
}

// firstAdmitted returns the oldest closed epoch in [lo, o) that the ring
// covers and that admitted something, or o if none.
func (w *Window) firstAdmitted(o, lo int64) int64 {
	lo = max(lo, o-int64(w.r)+1)
	if g := w.denseRing(); g != nil {
		r := int64(w.r)
		for x := lo; x < o; x++ {
			if g.load(mod(x, r))>>32 != 0 {
				return x
			}
		}
		return o
	}
	first := o
	for i := range w.sparse {
		if s := w.sparse[i].Load(); s != 0 {
			if x, v := sparseSlot(o, s); x >= lo && v>>32 != 0 {
				first = min(first, x)
			}
		}
	}
	return first
}

// setClosed sets closed epoch x (o−r < x < o) to v at open epoch o,
// making the window dense if v does not fit a sparse word or no word is
// free. Caller holds busy.
func (w *Window) setClosed(o, x int64, v uint64) {
	if g := w.denseRing(); g != nil {
		if bitsFor(v) > g.bits {
			g = w.widen(bitsFor(v))
		}
		g.store(mod(x, int64(w.r)), v)
		return
	}
	free := -1
	for i := range w.sparse {
		s := w.sparse[i].Load()
		if s == 0 {
			if free < 0 {
				free = i
			}
			continue
		}
		if y, _ := sparseSlot(o, s); y == x {
			if v == 0 {
				w.sparse[i].Store(0)
			} else if fitsSparse(v) {
				w.sparse[i].Store(sparseWord(x, v))
			} else {
				w.toDense(o)
				w.setClosed(o, x, v)
			}
			return
		}
	}
	switch {
	case v == 0:
	case free >= 0 && fitsSparse(v):
		w.sparse[free].Store(sparseWord(x, v))
	default:
		w.toDense(o)
		w.setClosed(o, x, v)
	}
}

// widen republishes the dense ring at bits per count. Caller holds busy.
func (w *Window) widen(bits uint) *ring {
	old := w.denseRing()
	g := newRing(int(w.r), bits)
	for p := range int64(w.r) {
		if v := old.load(p); v != 0 {
			g.store(p, v)
		}
	}
	w.setDense(g)
	return g
}

// toDense moves the sparse slots that the ring covers at open epoch o into
// a dense ring, making the second ring first if the window keeps the last
// minute in its sparse words. Caller holds busy.
func (w *Window) toDense(o int64) {
	if w.keepsMinute() {
		w.makeMinute(o, 0, 0)
	}
	bits := uint(8)
	for i := range w.sparse {
		if s := w.sparse[i].Load(); s != 0 {
			_, v := sparseSlot(o, s)
			bits = max(bits, bitsFor(v))
		}
	}
	g := newRing(int(w.r), bits)
	for i := range w.sparse {
		if s := w.sparse[i].Swap(0); s != 0 {
			if x, v := sparseSlot(o, s); x > o-int64(w.r) {
				g.store(mod(x, int64(w.r)), v)
			}
		}
	}
	w.setDense(g)
}

// makeMinute makes the second ring as of open epoch o from the sparse
// slots and, if v is not zero, closed slot x's counts v (a slot not among
// them), and drops the sparse slots older than the ring. Caller holds busy.
func (w *Window) makeMinute(o, x int64, v uint64) {
	m := new(minuteRing)
	so := floorDiv(o, slotsPerSecond)
	add := func(x int64, v uint64) {
		if sx := floorDiv(x, slotsPerSecond); sx > so-minuteSeconds {
			b := &m[mod(sx, minuteSeconds)]
			b.Store(addPacked(b.Load(), v))
		}
	}
	if v != 0 {
		add(x, v)
	}
	for i := range w.sparse {
		if s := w.sparse[i].Load(); s != 0 {
			y, u := sparseSlot(o, s)
			add(y, u)
			if y <= o-int64(w.r) {
				w.sparse[i].Store(0)
			}
		}
	}
	w.setSeconds(m)
}

// clearSlots empties every closed slot and the second ring, going back to
// sparse form. Caller holds busy.
func (w *Window) clearSlots() {
	for i := range w.sparse {
		w.sparse[i].Store(0)
	}
	w.setRings(nil, nil)
}

// closeSparse is the sparse part of a roll from open epoch o to e > o:
// it drops the slots no longer needed at e and keeps the closing slot o.
// If that takes more words than there are, or counts wider than a word,
// the window keeps the last minute in a second ring instead (made as of e,
// with the closing slot), or becomes dense. Caller holds busy.
func (w *Window) closeSparse(o, e int64, closing uint64) {
	keep := e - int64(w.r) + 1
	if w.keepsMinute() {
		keep = min(keep, minuteFrom(e))
	}
	free := -1
	for i := range w.sparse {
		if s := w.sparse[i].Load(); s != 0 {
			if x, _ := sparseSlot(o, s); x < keep {
				w.sparse[i].Store(0)
			} else {
				continue
			}
		}
		if free < 0 {
			free = i
		}
	}
	if closing == 0 || o < keep {
		return
	}
	if free >= 0 && fitsSparse(closing) {
		w.sparse[free].Store(sparseWord(o, closing))
		return
	}
	// No room: slots older than the ring move to the second ring, which
	// then holds the closing slot too; if that frees no word, dense.
	if o <= e-int64(w.r) {
		// Kept for the minute only: the second ring takes it.
		w.makeMinute(e, o, closing)
		return
	}
	if w.keepsMinute() {
		w.makeMinute(e, o, closing)
		if fitsSparse(closing) {
			for i := range w.sparse {
				if w.sparse[i].Load() == 0 {
					w.sparse[i].Store(sparseWord(o, closing))
					return
				}
			}
		}
	}
	w.toDense(e)
	w.setClosed(e, o, closing)
}

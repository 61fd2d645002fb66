package window

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/quotamesh/quotamesh/limits"
)

// model is the reference the property and fuzz tests hold Window to: a plain
// map from epoch to counts, recomputed from scratch for every question, with
// none of the ring arithmetic, folding or hints of the real thing.
type model struct {
	k, r         int64
	count, quota int64
	open         int64
	slots        map[int64]*[2]int64 // epoch -> admitted, offered (offered unsaturated)
	reserved     int64               // held by reservations not yet settled
}

func newModel(rate limits.Rate, now int64) *model {
	k := int64(rate.Slots())
	return &model{k: k, r: max(k, minRing), count: rate.Count, quota: rate.Count, open: EpochOf(now), slots: map[int64]*[2]int64{}}
}

// roll is what every write does first: the open slot follows the newest time.
func (m *model) roll(now int64) {
	if e := EpochOf(now); e > m.open {
		m.open = e
		for x := range m.slots {
			if x < m.open-700 {
				delete(m.slots, x)
			}
		}
	}
}

func (m *model) slot(x int64) *[2]int64 {
	s := m.slots[x]
	if s == nil {
		s = new([2]int64)
		m.slots[x] = s
	}
	return s
}

func (m *model) get(x int64) (adm, off int64) {
	if s := m.slots[x]; s != nil {
		return s[0], s[1]
	}
	return 0, 0
}

// total is what is admitted in the window as of the open slot, plus what
// reservations hold.
func (m *model) total() int64 {
	t := m.reserved
	for x := m.open - m.k + 1; x <= m.open; x++ {
		a, _ := m.get(x)
		t += a
	}
	return t
}

func (m *model) allowN(now, n int64) bool {
	if n <= 0 {
		return n == 0
	}
	if n > m.count {
		return false
	}
	m.roll(now)
	s := m.slot(m.open)
	s[1] += n
	if m.total()+n > m.quota {
		return false
	}
	s[0] += n
	return true
}

func (m *model) takeUpTo(now, want int64) int64 {
	if want <= 0 {
		return 0
	}
	want = min(want, m.count)
	m.roll(now)
	g := max(0, min(want, m.quota-m.total()))
	s := m.slot(m.open)
	s[0] += g
	s[1] += want
	return g
}

func (m *model) reserve(now, want int64) int64 {
	if want <= 0 {
		return 0
	}
	want = min(want, m.count)
	m.roll(now)
	g := max(0, min(want, m.quota-m.total()))
	m.reserved += g
	return g
}

func (m *model) settle(now, reserved, used int64) {
	if reserved <= 0 {
		return
	}
	m.reserved -= reserved
	if used = min(max(used, 0), reserved); used == 0 {
		return // freeing room writes no slot
	}
	m.roll(now)
	s := m.slot(m.open)
	s[0] += used
	s[1] += used
}

func (m *model) recordOffered(now, n int64) {
	if n <= 0 {
		return
	}
	m.roll(now)
	m.slot(m.open)[1] += min(n, maxUint32)
}

func (m *model) refund(now, grantedAt, n int64) int64 {
	if n <= 0 {
		return 0
	}
	m.roll(now)
	g := EpochOf(grantedAt)
	if g > m.open || g <= m.open-m.k {
		return 0
	}
	s := m.slots[g]
	if s == nil {
		return 0
	}
	r := min(n, s[0])
	s[0] -= r
	return r
}

func (m *model) reset() { clear(m.slots) }

// clearBefore forgets the admissions of the closed slots of the window
// before floor.
func (m *model) clearBefore(now, floor int64) int64 {
	m.roll(now)
	var n int64
	for x := m.open - m.k + 1; x < min(floor, m.open); x++ {
		if s := m.slots[x]; s != nil {
			n += s[0]
			s[0] = 0
		}
	}
	return n
}

func (m *model) setQuota(q int64) { m.quota = min(max(q, 0), limits.MaxCount) }

func (m *model) setCount(c int64) {
	old := m.count
	m.count = c
	if m.quota == old || m.quota > c {
		m.quota = c
	}
}

// ref is the epoch readers read the window at.
func (m *model) ref(now int64) int64 { return max(EpochOf(now), m.open) }

func (m *model) counts(now int64) (adm, off int64) {
	ref := m.ref(now)
	for x := ref - m.k + 1; x <= m.open; x++ {
		a, o := m.get(x)
		adm += int64(sat32(a))
		off += int64(sat32(o))
	}
	return adm, off
}

type slotCount struct {
	epoch         int64
	admitted, off uint32
}

func (m *model) slotList(now, from int64) []slotCount {
	var out []slotCount
	for x := max(m.ref(now)-m.k+1, from); x <= m.open; x++ {
		if a, o := m.get(x); a != 0 || o != 0 {
			out = append(out, slotCount{x, sat32(a), sat32(o)})
		}
	}
	return out
}

// closed sums the d closed slots before ref that the window still remembers.
func (m *model) closed(now, d int64) (adm, off int64) {
	ref := m.ref(now)
	for x := max(ref-d, m.open-m.r+1); x <= min(ref-1, m.open); x++ {
		a, o := m.get(x)
		adm += int64(sat32(a))
		off += int64(sat32(o))
	}
	return adm, off
}

// minute returns the last-minute sums and span, and whether a second's sum
// saturated (where the model does not try to follow the second ring).
func (m *model) minute(now int64) (adm, off, span int64, saturated bool) {
	ref := m.ref(now)
	if m.k >= int64(limits.MaxSlots) {
		a, o := m.closed(now, int64(limits.MaxSlots)-1)
		return a, o, int64(limits.MaxSlots) - 1, false
	}
	from := floorDiv(ref, slotsPerSecond) - minuteSeconds + 1
	for s := from; s <= floorDiv(ref, slotsPerSecond); s++ {
		var sa, so int64
		for x := s * slotsPerSecond; x < (s+1)*slotsPerSecond && x < ref && x <= m.open; x++ {
			a, o := m.get(x)
			sa += int64(sat32(a))
			so += int64(sat32(o))
		}
		if sa >= maxUint32 || so >= maxUint32 {
			saturated = true
		}
		adm += sa
		off += so
	}
	return adm, off, ref - from*slotsPerSecond, saturated
}

// An op is one step of a property or fuzz run.
type op struct {
	kind  opKind
	dt    time.Duration // time moves by dt before the op
	n     int64
	extra int64 // grantedAt offset for refunds, from for slots
}

type opKind uint8

const (
	opAllowN opKind = iota
	opTakeUpTo
	opRefund
	opRecordOffered
	opReset
	opSetQuota
	opSetCount
	opRead
	opReserve
	opSettle
	opClearBefore
	numOps
)

func (o op) String() string {
	names := [...]string{"AllowN", "takeUpTo", "Refund", "RecordOffered", "Reset", "SetQuota", "SetCount", "Read", "Reserve", "Settle", "ClearBefore"}
	return fmt.Sprintf("%s(dt=%v n=%d extra=%d)", names[o.kind%numOps], o.dt, o.n, o.extra)
}

// harness runs ops against a Window and the model side by side.
type harness struct {
	w   *Window
	m   *model
	now int64
	// quick checks readers at now and one window later only (fuzzing
	// prefers more inputs to more checks per input).
	quick bool
	// held are the reservations not yet settled.
	held []int64
	// forms counts the forms the window was seen in.
	forms forms
}

func newHarness(rate limits.Rate, now int64) (*harness, error) {
	w, err := New(rate, now)
	if err != nil {
		return nil, err
	}
	return &harness{w: w, m: newModel(rate, now), now: now}, nil
}

// step applies o to both and returns a description of the first
// disagreement, or "".
func (h *harness) step(o op) string {
	h.now = addSat(h.now, int64(o.dt))
	now := h.now
	switch o.kind % numOps {
	case opAllowN:
		if got, want := h.w.AllowN(now, o.n), h.m.allowN(now, o.n); got != want {
			return fmt.Sprintf("AllowN(%v, %v) = %v, want %v", now, o.n, got, want)
		}
	case opTakeUpTo:
		if got, want := h.w.takeUpTo(now, o.n), h.m.takeUpTo(now, o.n); got != want {
			return fmt.Sprintf("takeUpTo(%v, %v) = %v, want %v", now, o.n, got, want)
		}
	case opRefund:
		// extra is how many slots before now's the tokens were granted.
		at := addSat(slotStart(EpochOf(now)-o.extra), mod(now, slotNs))
		if got, want := h.w.Refund(now, at, o.n), h.m.refund(now, at, o.n); got != want {
			return fmt.Sprintf("Refund(%v, %v, %v) = %v, want %v", now, at, o.n, got, want)
		}
	case opRecordOffered:
		h.w.RecordOffered(now, o.n)
		h.m.recordOffered(now, o.n)
	case opReset:
		h.w.Reset()
		h.m.reset()
	case opSetQuota:
		h.w.SetQuota(o.n)
		h.m.setQuota(o.n)
	case opSetCount:
		c := min(max(o.n, 1), limits.MaxCount)
		r := h.w.Rate()
		r.Count = c
		if err := h.w.SetRate(r); err != nil {
			return fmt.Sprintf("SetRate(%v) = %v, want nil", r, err)
		}
		h.m.setCount(c)
	case opRead:
		// reads only; the checks below do the work
	case opReserve:
		got, want := h.w.Reserve(now, o.n), h.m.reserve(now, o.n)
		if got != want {
			return fmt.Sprintf("Reserve(%v, %v) = %v, want %v", now, o.n, got, want)
		}
		if got > 0 {
			h.held = append(h.held, got)
		}
		if got, want := h.w.Reserved(), h.m.reserved; got != want {
			return fmt.Sprintf("Reserved() = %v, want %v", got, want)
		}
	case opClearBefore:
		// extra is how many slots before now's the floor lies.
		floor := EpochOf(now) - o.extra
		if got, want := h.w.ClearBefore(now, floor), h.m.clearBefore(now, floor); got != want {
			return fmt.Sprintf("ClearBefore(%v, %v) = %v, want %v", now, floor, got, want)
		}
	case opSettle:
		if len(h.held) > 0 {
			i := int(mod(o.extra, int64(len(h.held))))
			r := h.held[i]
			h.held = append(h.held[:i], h.held[i+1:]...)
			h.w.Settle(now, r, o.n)
			h.m.settle(now, r, o.n)
		}
	}
	return h.check(now, h.m.open-mod(o.extra, h.m.k+3)+1)
}

// check compares everything a reader can see, at now and a little later,
// and the form the window holds its slots in.
func (h *harness) check(now, from int64) string {
	if msg := h.checkForm(); msg != "" {
		return msg
	}
	if got, want := h.w.OpenEpoch(), h.m.open; got != want {
		return fmt.Sprintf("OpenEpoch() = %v, want %v", got, want)
	}
	if got, want := h.w.Total(), h.m.total(); got != want {
		return fmt.Sprintf("Total() = %v, want %v", got, want)
	}
	if got, want := h.w.Quota(), h.m.quota; got != want {
		return fmt.Sprintf("Quota() = %v, want %v", got, want)
	}
	if got, want := h.w.Rate().Count, h.m.count; got != want {
		return fmt.Sprintf("Rate().Count = %v, want %v", got, want)
	}
	laters := []int64{0, 3 * slotNs / 2, h.m.k * slotNs / 2, h.m.k * slotNs}
	if h.quick {
		laters = []int64{0, h.m.k * slotNs}
	}
	for _, later := range laters {
		at := addSat(now, later)
		ga, go_ := h.w.Counts(at)
		wa, wo := h.m.counts(at)
		if ga != wa || go_ != wo {
			return fmt.Sprintf("Counts(%v) = %v, %v, want %v, %v", at, ga, go_, wa, wo)
		}
		var got []slotCount
		h.w.Slots(at, from, func(e int64, a, o uint32) { got = append(got, slotCount{e, a, o}) })
		if want := h.m.slotList(at, from); !slices.Equal(got, want) {
			return fmt.Sprintf("Slots(%v, %v) = %v, want %v", at, from, got, want)
		}
		for _, d := range []int64{1, 5, 10, h.m.k, h.m.r + 3} {
			_, wo := h.m.closed(at, d)
			if got := h.w.Demand(at, int(d)); got != wo {
				return fmt.Sprintf("Demand(%v, %v) = %v, want %v", at, d, got, wo)
			}
		}
		q := h.w.CurrentQPS(at)
		sa, so := h.m.closed(at, slotsPerSecond)
		if q.LastSecond != (Throughput{float64(sa), float64(so)}) {
			return fmt.Sprintf("CurrentQPS(%v).LastSecond = %+v, want %v, %v", at, q.LastSecond, sa, so)
		}
		ma, mo, span, saturated := h.m.minute(at)
		secs := float64(span) * limits.Slot.Seconds()
		if want := (Throughput{float64(ma) / secs, float64(mo) / secs}); !saturated && q.LastMinute != want {
			return fmt.Sprintf("CurrentQPS(%v).LastMinute = %+v, want %+v (span %d slots)", at, q.LastMinute, want, span)
		}
	}
	return ""
}

// phase shapes the time steps of a run of ops.
type phase uint8

const (
	// phaseMixed draws every kind of step.
	phaseMixed phase = iota
	// phaseDense takes only steps of up to a second, so that minutes pass
	// slot by slot, the second ring wraps, and a window with requests in
	// most slots goes dense.
	phaseDense
	// phaseSparse takes gaps of one to thirty slots and now and then a
	// burst: a cold key whose few slots sit in sparse words, some older
	// than the ring but within the minute, until a burst needs more words
	// than there are.
	phaseSparse
)

// randomOp draws an op whose time step is one of: a small step inside a
// slot, a step to or just past a slot edge, a jump of about the window or
// the ring, an idle period of minutes to hours, or a step backwards; how
// often each comes depends on the phase.
func randomOp(rng *rand.Rand, k, count int64, ph phase) op {
	var o op
	c := rng.IntN(20)
	switch ph {
	case phaseDense:
		c = []int{0, 1, 2, 3, 7, 8, 15, 19}[rng.IntN(8)]
	case phaseSparse:
		c = []int{0, 18, 20, 20, 20, 20, 21, 21}[rng.IntN(8)]
	}
	switch c {
	case 0, 1, 2, 3, 4, 5, 6:
		o.dt = time.Duration(rng.Int64N(int64(limits.Slot / 3)))
	case 7, 8, 9, 10:
		o.dt = limits.Slot * time.Duration(1+rng.IntN(3))
	case 11:
		o.dt = limits.Slot * time.Duration(k-1+int64(rng.IntN(3)))
	case 12:
		o.dt = limits.Slot * time.Duration(max(k, minRing)-1+int64(rng.IntN(3)))
	case 13:
		o.dt = time.Duration(rng.Int64N(int64(90 * time.Second)))
	case 14:
		o.dt = time.Duration(rng.Int64N(int64(3 * time.Hour)))
	case 15, 16:
		o.dt = -time.Duration(rng.Int64N(int64(3 * limits.Slot)))
	case 17:
		o.dt = -limits.Slot * time.Duration(rng.Int64N(k+2))
	case 18:
		o.dt = 0
	case 19:
		o.dt = time.Duration(rng.Int64N(int64(time.Second)))
	case 20:
		o.dt = limits.Slot * time.Duration(1+rng.IntN(30))
	case 21:
		o.dt = limits.Slot * time.Duration(1+rng.IntN(3)) // a burst of slots
	}
	o.kind = opKind(rng.IntN(int(numOps)))
	if rng.IntN(6) == 0 {
		o.kind = opAllowN
	}
	switch rng.IntN(10) {
	case 0:
		o.n = -rng.Int64N(3)
	case 1:
		o.n = count + rng.Int64N(3)
	case 2:
		o.n = rng.Int64N(limits.MaxCount + 10)
	default:
		o.n = 1 + rng.Int64N(max(1, count/4))
	}
	if o.kind == opSetQuota || o.kind == opSetCount {
		o.n = rng.Int64N(2*count + 2)
	}
	// For refunds: how many slots before now's the tokens were granted,
	// often right at the window's edges. For every op it also picks the
	// from of the Slots check.
	o.extra = []int64{-1, 0, 1, k - 1, k, k + 1, rng.Int64N(k+3) - 1, rng.Int64N(k+3) - 1}[rng.IntN(8)]
	return o
}

// forms counts the forms a harness saw its window in, after each step.
type forms struct {
	sparse, dense, minute, sparseMinute, widened, backToSparse int
	wasDense                                                   bool
}

// checkForm checks the invariants of the window's form (slots.go) against
// the model, and counts it: sparse words hold non-empty slots of the ring,
// or of the last minute while there is no second ring, each once; a dense
// ring's counts fit its width; a window shorter than a minute that is dense
// has a second ring.
func (h *harness) checkForm() string {
	w, o := h.w, h.w.open.Load()
	g, sec := w.denseRing(), w.secondsRing()
	f := &h.forms
	switch {
	case g != nil:
		f.dense++
		if g.bits > 8 {
			f.widened++
		}
		f.wasDense = true
		if int(w.k) < limits.MaxSlots && sec == nil {
			return "dense window shorter than a minute without a second ring"
		}
		for p := range int64(w.r) {
			if v := g.load(p); bitsFor(v) > g.bits {
				return fmt.Sprintf("dense position %d holds %x in %d bits", p, v, g.bits)
			}
		}
		for i := range w.sparse {
			if w.sparse[i].Load() != 0 {
				return "dense window with sparse words in use"
			}
		}
	default:
		f.sparse++
		if f.wasDense {
			f.backToSparse++
			f.wasDense = false
		}
		if sec != nil {
			f.sparseMinute++
		}
		seen := map[int64]bool{}
		lo := o - int64(w.r) + 1
		if w.keepsMinute() {
			lo = min(lo, minuteFrom(o))
		}
		for i := range w.sparse {
			s := w.sparse[i].Load()
			if s == 0 {
				continue
			}
			x, v := sparseSlot(o, s)
			if x >= o || x < lo || seen[x] {
				return fmt.Sprintf("sparse word %d holds epoch %d (open %d, keeps from %d, twice %v)", i, x, o, lo, seen[x])
			}
			seen[x] = true
			a, f := h.m.get(x)
			if v != pack(a, f) && !(x <= o-int64(w.r)) {
				return fmt.Sprintf("sparse word for epoch %d holds %x, the model (%d, %d)", x, v, a, f)
			}
		}
	}
	if sec != nil {
		f.minute++
	}
	return ""
}

func addSat(a, b int64) int64 {
	s := a + b
	if (b > 0 && s < a) || (b < 0 && s > a) {
		if b > 0 {
			return 1<<63 - 1
		}
		return -1 << 63
	}
	return s
}

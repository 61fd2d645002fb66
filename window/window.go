package window

import (
	"fmt"
	"math"
	"runtime"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/quotamesh/quotamesh/internal/procid"
	"github.com/quotamesh/quotamesh/limits"
)

const (
	slotNs = int64(limits.Slot)

	// minRing is the fewest ring positions a window keeps, so that every
	// window remembers at least the ten closed slots of the last full second
	// (CurrentQPS) and the five of the demand estimate (Demand).
	minRing = 11
	// slotsPerSecond and minuteSeconds shape the second ring that windows
	// shorter than a minute keep for CurrentQPS.
	slotsPerSecond = int64(time.Second / limits.Slot)
	minuteSeconds  = 60

	// maxShards caps the per-P counters of a hot window.
	maxShards = 16
	// inflateAt is the number of requests offered in one slot from which a
	// window gets per-P counters. Below it a window counts into one pair of
	// counters in its header: cold keys, the vast majority, stay small.
	inflateAt = 128
	// cacheLine is the padding unit that keeps shards off each other's lines.
	cacheLine = 64

	maxUint32 = int64(math.MaxUint32)
)

// Never is the RetryAfter of a decision that no amount of waiting can turn
// into an admission: n larger than the limit, or n negative.
const Never = time.Duration(math.MaxInt64)

// Window is one key's sliding window of 100 ms slots (limits.Slot): at most
// Quota() tokens admitted in the open slot and the K−1 closed slots before
// it, where K is the rate's window in slots.
//
// A Window is pure: time is passed in as node time in nanoseconds since the
// Unix epoch, and a Window starts no goroutine and holds no timer. All
// methods are safe for concurrent use. AllowN, Allow, Decide, Grant and
// RecordOffered are lock-free: they never wait for another goroutine.
// Refund and Reset may wait for a slot roll in progress (a few hundred
// nanoseconds); readers (Counts, Slots, Demand, CurrentQPS) retry if a roll
// overlaps their read.
//
// The zero Window is not usable; create one with New.
type Window struct {
	open  atomic.Int64 // epoch of the open slot
	total atomic.Int64 // admitted in the window as of open (plus admissions in flight)
	quota atomic.Int64 // cap on total
	// quotaUntil is the last epoch the quota is valid for (SetQuotaUntil);
	// math.MaxInt64 means forever.
	quotaUntil atomic.Int64
	count      atomic.Int64 // the rate's count

	// The open slot's counters: base, plus per-P shards once the window is
	// hot (inflateAt). Folded into the ring by each roll.
	shards atomic.Pointer[shardSet]
	base   counters

	// Counts of callers whose epoch was ahead of open while another caller
	// held busy. They are moved into the open slot (rolling to their epoch
	// first if needed) by whoever holds busy next; see settleLocked.
	ahead struct {
		epoch atomic.Int64 // the largest epoch any such caller had
		counters
	}

	expire atomic.Int64  // epoch at whose start the oldest admitted slot leaves the window
	seq    atomic.Uint32 // odd while a roll, refund or reset changes the ring
	busy   atomic.Uint32 // try-flag held by the one goroutine changing the ring

	k int32 // slots in the window
	r int32 // ring positions: max(k, minRing)

	// buf holds the ring of closed slots (r words), then, for windows
	// shorter than a minute, the second ring (60 words). Each word packs
	// admitted in the high 32 bits and offered in the low 32 bits.
	buf []atomic.Uint64
}

type counters struct {
	admitted atomic.Int64
	offered  atomic.Int64
}

type shard struct {
	counters
	_ [cacheLine - unsafe.Sizeof(counters{})]byte
}

// shardSet is read by every call of a hot window; padded to a cache line of
// its own so that no neighbouring allocation that is written often shares
// its line (seen as a bimodal 5 ns / 11 ns in BenchmarkAllowParallel).
type shardSet struct {
	mask int
	s    []shard
	_    [cacheLine - 32]byte
}

// EpochOf returns the slot (epoch) that node time now falls in: now divided
// by limits.Slot, rounded down (also for negative times).
func EpochOf(now int64) int64 {
	e := now / slotNs
	if now%slotNs < 0 {
		e--
	}
	return e
}

// New returns an empty window for rate whose open slot is the one holding
// now. Its quota is the rate's count. The error, which wraps
// limits.ErrInvalidRate, reports a rate that does not validate.
func New(rate limits.Rate, now int64) (*Window, error) {
	if err := rate.Validate(); err != nil {
		return nil, err
	}
	k := rate.Slots()
	r := max(k, minRing)
	words := r
	if k < limits.MaxSlots {
		words += minuteSeconds
	}
	w := &Window{k: int32(k), r: int32(r), buf: make([]atomic.Uint64, words)}
	e := EpochOf(now)
	w.open.Store(e)
	w.count.Store(rate.Count)
	w.quota.Store(rate.Count)
	w.quotaUntil.Store(math.MaxInt64)
	w.ahead.epoch.Store(math.MinInt64)
	w.expire.Store(e + int64(k))
	return w, nil
}

// Rate returns the window's current rate.
func (w *Window) Rate() limits.Rate {
	return limits.Rate{Count: w.count.Load(), Window: time.Duration(w.k) * limits.Slot}
}

// SetRate changes the rate's count in place; counts already in the window
// stay. The window's length cannot change: a rate with another window
// returns ErrWindowChanged (replace the window instead), an invalid rate an
// error wrapping limits.ErrInvalidRate. If the quota equalled the old count
// it follows the new count; a quota above the new count is lowered to it.
func (w *Window) SetRate(rate limits.Rate) error {
	if err := rate.Validate(); err != nil {
		return err
	}
	if rate.Slots() != int(w.k) {
		return fmt.Errorf("%w: rate %v has a %v window, this window is %v; create a new window", ErrWindowChanged, rate, rate.Window, time.Duration(w.k)*limits.Slot)
	}
	old := w.count.Swap(rate.Count)
	for {
		q := w.quota.Load()
		nq := q
		if q == old || q > rate.Count {
			nq = rate.Count
		}
		if nq == q || w.quota.CompareAndSwap(q, nq) {
			return nil
		}
	}
}

// Quota returns the cap on the tokens the window admits.
func (w *Window) Quota() int64 { return w.quota.Load() }

// SetQuota sets the cap on the tokens admitted in the window, clamped to
// [0, limits.MaxCount]. A lone node leaves it at the rate's count; in a
// cluster the node sets its share here. Lowering it below what the window
// already holds denies until enough slots expire.
func (w *Window) SetQuota(q int64) { w.SetQuotaUntil(q, math.MaxInt64) }

// SetQuotaUntil is SetQuota for a quota valid through epoch until only: a
// request in a later slot is denied (and counted as offered) until the quota
// is set again. A node gives its quotas a short validity, so that a process
// that was paused, or a sync loop that stalled, never admits under a quota
// the cluster may since have given to someone else.
func (w *Window) SetQuotaUntil(q, until int64) {
	w.quota.Store(min(max(q, 0), limits.MaxCount))
	w.quotaUntil.Store(until)
}

// Total returns the tokens admitted in the window as of the open slot (see
// OpenEpoch), including admissions still being recorded: the value the quota
// caps. It is one atomic load; Counts gives the window as of a given time.
func (w *Window) Total() int64 { return w.total.Load() }

// OpenEpoch returns the epoch of the open slot: the newest epoch any write
// (AllowN, Grant, RecordOffered, Refund) has brought the window to.
// Readers never move it to a time of their own (at most they finish a move
// a concurrent write started), so it also tells when the window was last
// used.
func (w *Window) OpenEpoch() int64 { return w.open.Load() }

// Allow is AllowN(now, 1).
func (w *Window) Allow(now int64) bool { return w.AllowN(now, 1) }

// AllowN reports whether n tokens may be admitted at node time now, and
// records them (admitted and offered) if so, or records n offered if not.
// It is the hot path: lock-free, no allocation.
//
// n == 0 is allowed and counts nothing; n < 0 is denied and counts nothing;
// n above the rate's count can never be admitted and is denied without being
// counted as demand. A time before the open slot (a clock stepping back, or
// a caller that read the clock a while ago) counts into the open slot.
func (w *Window) AllowN(now, n int64) bool {
	if n <= 0 {
		return n == 0
	}
	if n > w.count.Load() {
		return false
	}
	return w.admit(EpochOf(now), n, false) > 0
}

// Decide is AllowN with the details a caller needs to answer a client: the
// room left, when to retry, and the limit. RetryAfter is set only for
// denials: the time until the oldest admitted slot in the window expires, a
// lower bound when n needs more than that slot frees (or the next slot edge
// if nothing is due to expire, when only the quota stands in the way); Never
// when n is negative or above the limit. Lock-free and allocation-free.
func (w *Window) Decide(now, n int64) (d Decision) {
	// The checks come first and the decision's fields last: shaped so, it
	// measured 14 ns for a denial instead of 21.
	switch {
	case n > 0 && n <= w.count.Load():
		if w.admit(EpochOf(now), n, false) > 0 {
			d.Allowed = true
		} else {
			d.RetryAfter = w.retryAfter(now)
		}
	case n == 0:
		d.Allowed = true
	default:
		d.RetryAfter = Never
	}
	d.Limit = limits.Rate{Count: w.count.Load(), Window: time.Duration(w.k) * limits.Slot}
	d.Remaining = max(0, w.quota.Load()-w.total.Load())
	return d
}

// takeUpTo admits as many tokens as there is room for, up to n, and returns
// how many, counting n as offered whatever it grants: Grant for a caller
// that reports no demand of its own. n above the rate's count is treated as
// the count; n <= 0 takes and counts nothing. Lock-free.
func (w *Window) takeUpTo(now, n int64) int64 {
	if n <= 0 {
		return 0
	}
	return w.admit(EpochOf(now), min(n, w.count.Load()), true)
}

// Grant admits as many tokens as there is room for, up to want, and returns
// how many: a partial grant, for leases. It counts offered (not want) as
// demand, for a lease whose holder reports the calls it saw separately; the
// slot's offered count may so stay below its admitted count until those
// reports arrive. want above the rate's count is treated as the count;
// want <= 0 grants nothing but still counts offered (if positive).
// Lock-free.
func (w *Window) Grant(now, want, offered int64) int64 {
	offered = max(offered, 0)
	if want <= 0 {
		if offered > 0 {
			w.RecordOffered(now, offered)
		}
		return 0
	}
	want = min(want, w.count.Load())
	return w.admitCounting(EpochOf(now), want, offered, true)
}

// RecordOffered counts n tokens of demand that were decided elsewhere (for
// example denials an SDK made from its lease) into the slot of now, without
// admitting anything. n <= 0 counts nothing. Lock-free.
func (w *Window) RecordOffered(now, n int64) {
	if n <= 0 {
		return
	}
	n = min(n, maxUint32)
	e := EpochOf(now)
	if e > w.open.Load() && !w.advance(e) {
		w.countAhead(e, 0, n)
		return
	}
	w.addOpen(0, n)
}

// Refund returns up to n tokens admitted at node time grantedAt that were
// not used, if grantedAt's slot is still in the window at now: it lowers
// that slot's admitted count and the window's total by the same amount,
// never below zero, and returns the amount. Offered counts are left alone.
// Refund may wait for a roll in progress.
func (w *Window) Refund(now, grantedAt, n int64) int64 {
	if n <= 0 {
		return 0
	}
	e, g := EpochOf(now), EpochOf(grantedAt)
	w.lock()
	if e > w.open.Load() {
		w.rollLocked(e)
	}
	w.settleLocked()
	o, k := w.open.Load(), int64(w.k)
	var m int64
	switch {
	case g == o:
		a, _ := w.openRunning()
		if m = min(n, a); m > 0 {
			w.base.admitted.Add(-m)
		}
	case g < o && g > o-k:
		i := w.pos(g)
		v := w.buf[i].Load()
		if m = min(n, int64(v>>32)); m > 0 {
			w.buf[i].Store(v - uint64(m)<<32)
			w.minuteRefund(o, g, m)
		}
	}
	if m > 0 {
		w.total.Add(-m)
	}
	w.unlock()
	return m
}

// Reset empties the window: every slot, the open slot's counters and the
// total. The open epoch, rate and quota stay. Reset may wait for a roll in
// progress, and it is not atomic with concurrent AllowN: an admission that
// is being recorded while Reset runs lands in the emptied window (and stays
// counted in its total).
func (w *Window) Reset() {
	w.lock()
	w.settleLocked()
	o, k := w.open.Load(), int64(w.k)
	adm, _ := w.foldOpen()
	for x := o - k + 1; x < o; x++ {
		adm += int64(w.buf[w.pos(x)].Load() >> 32)
	}
	for i := range w.buf {
		w.buf[i].Store(0)
	}
	w.total.Add(-adm)
	w.expire.Store(o + k)
	w.unlock()
}

// sizeBytes returns the memory the window holds: its header, its rings and,
// once hot, its per-P counters. Allocator rounding is not included.
func (w *Window) sizeBytes() int {
	n := int(unsafe.Sizeof(Window{})) + len(w.buf)*8
	if s := w.shards.Load(); s != nil {
		n += int(unsafe.Sizeof(shardSet{})) + len(s.s)*int(unsafe.Sizeof(shard{}))
	}
	return n
}

// admit gates want tokens at epoch e (all of them, or as many as fit if
// partial), counts want as offered, and returns the tokens granted.
func (w *Window) admit(e, want int64, partial bool) int64 {
	return w.admitCounting(e, want, want, partial)
}

// admitCounting is admit with the offered count given separately. A quota
// that expired before epoch e admits nothing.
func (w *Window) admitCounting(e, want, offered int64, partial bool) int64 {
	if e > w.open.Load() && !w.advance(e) {
		g := w.gateAt(e, want, partial)
		w.countAhead(e, g, offered)
		return g
	}
	g := w.gateAt(e, want, partial)
	w.addOpen(g, offered)
	return g
}

func (w *Window) gateAt(e, want int64, partial bool) int64 {
	if e > w.quotaUntil.Load() {
		return 0
	}
	return w.gate(want, partial)
}

// gate reserves tokens in total. The check and the reservation are one CAS,
// so total never exceeds the quota because of concurrent callers.
func (w *Window) gate(want int64, partial bool) int64 {
	for {
		t := w.total.Load()
		room := w.quota.Load() - t
		g := want
		if g > room {
			if !partial || room <= 0 {
				return 0
			}
			g = room
		}
		if w.total.CompareAndSwap(t, t+g) {
			return g
		}
	}
}

// addOpen counts into the open slot, on this P's shard once the window is
// hot. A denial so writes only this P's cache line.
func (w *Window) addOpen(adm, off int64) {
	c := &w.base
	if s := w.shards.Load(); s != nil {
		c = &s.s[procid.ID()&s.mask].counters
	}
	if adm != 0 {
		c.admitted.Add(adm)
	}
	c.offered.Add(off)
}

// countAhead records counts of a caller whose epoch e is ahead of the open
// slot while another goroutine holds busy. Counting them into the open slot
// could attribute them to the slot being closed, earlier than their own
// epoch, and let them expire early; instead they wait in ahead, which is
// only ever moved into a slot at or after e. The epoch is published before
// the counts, so whoever takes the counts sees an epoch at least theirs.
func (w *Window) countAhead(e, adm, off int64) {
	for a := w.ahead.epoch.Load(); a < e && !w.ahead.epoch.CompareAndSwap(a, e); a = w.ahead.epoch.Load() {
	}
	if adm != 0 {
		w.ahead.admitted.Add(adm)
	}
	w.ahead.offered.Add(off)
	w.settle()
}

func (w *Window) aheadPending() bool {
	return w.ahead.admitted.Load() != 0 || w.ahead.offered.Load() != 0
}

// advance tries to roll the window to epoch e. It reports whether the open
// slot is now at or after e, so that the caller may count into it; false
// means another goroutine holds busy and the caller must count ahead.
func (w *Window) advance(e int64) bool {
	if !w.busy.CompareAndSwap(0, 1) {
		return e <= w.open.Load()
	}
	w.seq.Add(1)
	if e > w.open.Load() {
		w.rollLocked(e)
	}
	w.settleLocked()
	w.unlock()
	return true
}

// settle moves pending ahead counts into the window if nobody holds busy;
// if somebody does, they will on unlock.
func (w *Window) settle() {
	if w.busy.Load() != 0 || !w.busy.CompareAndSwap(0, 1) {
		return
	}
	w.seq.Add(1)
	w.settleLocked()
	w.unlock()
}

// lock takes busy, waiting for a roll in progress, and makes seq odd.
func (w *Window) lock() {
	for i := 0; !w.busy.CompareAndSwap(0, 1); i++ {
		if i >= 4 {
			runtime.Gosched()
		}
	}
	w.seq.Add(1)
}

// unlock makes seq even and releases busy, then settles ahead counts that
// arrived meanwhile. Paired with countAhead (add counts, then look at busy),
// releasing and then looking at the counts guarantees one of the two sees
// the other: no count is left behind once callers stop.
func (w *Window) unlock() {
	for {
		w.seq.Add(1)
		w.busy.Store(0)
		if !w.aheadPending() || !w.busy.CompareAndSwap(0, 1) {
			return
		}
		w.seq.Add(1)
		w.settleLocked()
	}
}

// settleLocked moves the ahead counts into the open slot, rolling first to
// the largest epoch they may come from. Caller holds busy.
func (w *Window) settleLocked() {
	for w.aheadPending() {
		adm, off := w.ahead.admitted.Swap(0), w.ahead.offered.Swap(0)
		// Read after the swap: every count taken was published with an
		// epoch no larger than this.
		if a := w.ahead.epoch.Load(); a > w.open.Load() {
			w.rollLocked(a)
		}
		w.base.admitted.Add(adm)
		w.base.offered.Add(off)
	}
}

// foldOpen takes the open slot's counters, leaving them at zero.
func (w *Window) foldOpen() (adm, off int64) {
	adm, off = w.base.admitted.Swap(0), w.base.offered.Swap(0)
	if s := w.shards.Load(); s != nil {
		for i := range s.s {
			adm += s.s[i].admitted.Swap(0)
			off += s.s[i].offered.Swap(0)
		}
	}
	return adm, off
}

// openRunning reads the open slot's counters without taking them.
func (w *Window) openRunning() (adm, off int64) {
	adm, off = w.base.admitted.Load(), w.base.offered.Load()
	if s := w.shards.Load(); s != nil {
		for i := range s.s {
			adm += s.s[i].admitted.Load()
			off += s.s[i].offered.Load()
		}
	}
	return adm, off
}

// rollLocked closes the open slot and opens epoch e > open. Caller holds
// busy with seq odd. In order: fold the open counters into the closing
// slot; subtract from total what leaves the window; move the expiry hint;
// write the closing slot and clear the positions of skipped epochs, so that
// position p always holds the one epoch in (open−r, open) congruent to p;
// update the second ring; publish the new open epoch last, so that a caller
// who sees it counts into counters that fold into it or a later slot.
func (w *Window) rollLocked(e int64) {
	o := w.open.Load()
	k, r := int64(w.k), int64(w.r)
	adm, off := w.foldOpen()
	closing := pack(adm, off)
	closingAdm := int64(closing >> 32)
	excess := adm - closingAdm // > 0 only if the slot saturated; keep total equal to what the ring records

	var expired int64
	for x := o - k + 1; x <= min(e-k, o); x++ {
		if x == o {
			expired += closingAdm
		} else {
			expired += int64(w.buf[w.pos(x)].Load() >> 32)
		}
	}

	// The expiry hint: every closed slot in the window before c is empty.
	c, next := w.expire.Load()-k, e
	for x := max(c, e-k+1); x <= o; x++ {
		v := closing
		if x != o {
			v = w.buf[w.pos(x)].Load()
		}
		if v>>32 != 0 {
			next = x
			break
		}
	}
	w.expire.Store(next + k)

	if e-o >= r {
		for i := range r {
			w.buf[i].Store(0)
		}
	} else {
		w.buf[w.pos(o)].Store(closing)
		for x := o + 1; x <= e; x++ {
			w.buf[w.pos(x)].Store(0)
		}
	}
	if k < int64(limits.MaxSlots) {
		w.rollMinute(o, e, closing)
	}
	if d := expired + excess; d != 0 {
		w.total.Add(-d)
	}
	w.open.Store(e)
	if off >= inflateAt && w.shards.Load() == nil {
		w.inflate()
	}
}

// rollMinute advances the second ring from open epoch o to e and adds the
// closed slot o to its second. Position s mod 60 holds second s for the 60
// seconds up to the open slot's; each holds the closed slots of its second.
func (w *Window) rollMinute(o, e int64, closing uint64) {
	sec := w.buf[w.r:]
	so, se := floorDiv(o, slotsPerSecond), floorDiv(e, slotsPerSecond)
	if se-so >= minuteSeconds {
		for i := range sec {
			sec[i].Store(0)
		}
	} else {
		for s := so + 1; s <= se; s++ {
			sec[mod(s, minuteSeconds)].Store(0)
		}
	}
	if closing != 0 && so > se-minuteSeconds {
		b := &sec[mod(so, minuteSeconds)]
		b.Store(addPacked(b.Load(), closing))
	}
}

// minuteRefund lowers the admitted count of closed slot g's second.
func (w *Window) minuteRefund(o, g, m int64) {
	if int(w.k) >= limits.MaxSlots {
		return
	}
	sg, so := floorDiv(g, slotsPerSecond), floorDiv(o, slotsPerSecond)
	if sg <= so-minuteSeconds {
		return
	}
	b := &w.buf[int64(w.r)+mod(sg, minuteSeconds)]
	v := b.Load()
	if a := int64(v >> 32); a < maxUint32 { // a saturated bucket stays saturated
		b.Store(uint64(max(a-m, 0))<<32 | v&uint64(maxUint32))
	}
}

// inflate gives a hot window per-P counters.
func (w *Window) inflate() {
	n := 1
	for n < runtime.GOMAXPROCS(0) && n < maxShards {
		n *= 2
	}
	if n > 1 {
		w.shards.Store(&shardSet{mask: n - 1, s: make([]shard, n)})
	}
}

// retryAfter is the time from now until the oldest admitted slot leaves the
// window; the next slot edge if that is already due or nothing is admitted.
func (w *Window) retryAfter(now int64) time.Duration {
	e := EpochOf(now)
	x := w.expire.Load()
	if x <= e || w.total.Load() <= 0 {
		x = e + 1
	}
	// Count in slots first: x−e is small, x·Slot may not fit in an int64.
	if x-e > math.MaxInt64/slotNs {
		return Never
	}
	// now − e·Slot is now mod Slot (e is the floor), without a division.
	return time.Duration((x-e)*slotNs - (now - e*slotNs))
}

func (w *Window) pos(epoch int64) int64 { return mod(epoch, int64(w.r)) }

// read runs f until it ran over a state that no roll, refund or reset
// changed meanwhile. Pending ahead counts are settled first, so that what f
// sees of the open slot is where those counts will stay.
func (w *Window) read(f func()) {
	for i := 0; ; i++ {
		if w.aheadPending() {
			w.settle()
		}
		if s := w.seq.Load(); s&1 == 0 {
			f()
			if w.seq.Load() == s && !w.aheadPending() {
				return
			}
		}
		if i >= 4 {
			runtime.Gosched()
		}
	}
}

func pack(adm, off int64) uint64 { return uint64(sat32(adm))<<32 | uint64(sat32(off)) }

func sat32(v int64) uint32 { return uint32(min(max(v, 0), maxUint32)) }

// addPacked adds two packed pairs, each half saturating.
func addPacked(a, b uint64) uint64 {
	return pack(int64(a>>32)+int64(b>>32), int64(a&uint64(maxUint32))+int64(b&uint64(maxUint32)))
}

func floorDiv(a, b int64) int64 {
	q := a / b
	if a%b < 0 {
		q--
	}
	return q
}

func mod(a, b int64) int64 {
	m := a % b
	if m < 0 {
		m += b
	}
	return m
}

package window

import (
	"github.com/quotamesh/quotamesh"

	"github.com/quotamesh/quotamesh/limits"
)

// Decision is the answer to one request: the root package's Decision, so a
// node hands the registry's answer to its callers without converting it.
// For a window, Remaining is the room left in the window after the decision
// (the quota minus the tokens admitted, never negative), another node's share
// of the limit not included; RetryAfter is set on denials (how long until the
// oldest admitted slot leaves the window, a lower bound when more than one
// slot must expire, or Never when waiting cannot help); Limit is the rate
// that governed the decision, zero for unlimited keys; Unlimited reports a
// decision taken without a window (the key matched no rule, or the registry
// was full: see Config).
type Decision = quotamesh.Decision

// QPS is a window's throughput in requests (tokens) per second.
type QPS struct {
	// LastSecond covers the last full second: the ten closed slots before
	// the open one.
	LastSecond Throughput
	// LastMinute covers the closed slots of the last minute: for windows
	// shorter than 60 s those of the current second and the 59 before it
	// (59.0 to 59.9 s); for 60 s windows the 599 closed slots before the
	// open one. Rates divide by the span covered. A window shorter than a
	// minute reads it from a second ring of 60 one-second buckets, which it
	// makes only once more than six of its slots in a minute hold counts;
	// until then its sparse slots hold every non-empty slot of the minute,
	// and the figure is the same, exact either way.
	LastMinute Throughput
}

// Throughput is admitted and offered tokens per second.
type Throughput struct {
	Admitted float64
	Offered  float64
}

// Counts returns the tokens admitted and offered in the window at node time
// now: the slots in (E−K, E] where E is now's epoch, or the open epoch if
// now is before it. Each slot's values saturate at 2^32−1 (admitted never
// reaches it). Counts does not move the window; it costs O(K).
func (w *Window) Counts(now int64) (admitted, offered int64) {
	e := EpochOf(now)
	w.read(func() {
		o := w.open.Load()
		lo := max(e, o) - int64(w.k) + 1
		admitted, offered = w.sumClosed(o, lo, o-1)
		if o >= lo {
			a, f := w.openRunning()
			admitted += int64(sat32(a))
			offered += int64(sat32(f))
		}
	})
	return admitted, offered
}

// Slots calls fn, oldest first, for every slot with epoch >= from that is in
// the window at node time now (as Counts defines it) and holds a count; the
// open slot comes with its running values. Empty slots are skipped: a slot
// not reported is zero. The values come from one consistent read (retried
// if a roll overlapped it); fn runs after the read, so it may call back into
// the window. It does not allocate.
func (w *Window) Slots(now, from int64, fn func(epoch int64, admitted, offered uint32)) {
	var epochs [limits.MaxSlots]int64
	var vals [limits.MaxSlots]uint64
	var n int
	e := EpochOf(now)
	w.read(func() {
		o := w.open.Load()
		first := max(max(e, o)-int64(w.k)+1, from)
		n = 0
		w.eachClosed(o, first, o-1, func(x int64, v uint64) {
			epochs[n], vals[n] = x, v
			n++
		})
		if o >= first {
			if v := pack(w.openRunning()); v != 0 {
				epochs[n], vals[n] = o, v
				n++
			}
		}
	})
	for i := range n {
		fn(epochs[i], uint32(vals[i]>>32), uint32(vals[i]))
	}
}

// Demand returns the tokens offered in the last slots closed slots before
// the slot of now (or before the open slot, if now is before it): the
// demand estimate the cluster shares headroom by. A window remembers
// max(K−1, 10) closed slots; older ones count as zero.
func (w *Window) Demand(now int64, slots int) int64 {
	if slots <= 0 {
		return 0
	}
	_, off := w.closed(EpochOf(now), min(int64(slots), 1<<32))
	return off
}

// CurrentQPS returns admitted and offered tokens per second over the last
// full second and the last minute at node time now (see QPS).
func (w *Window) CurrentQPS(now int64) QPS {
	e := EpochOf(now)
	var q QPS
	a, f := w.closed(e, slotsPerSecond)
	q.LastSecond = Throughput{Admitted: float64(a), Offered: float64(f)}

	var span int64
	if int(w.k) >= limits.MaxSlots {
		span = int64(limits.MaxSlots) - 1
		a, f = w.closed(e, span)
	} else {
		a, f, span = w.minute(e)
	}
	secs := float64(span) * limits.Slot.Seconds()
	q.LastMinute = Throughput{Admitted: float64(a) / secs, Offered: float64(f) / secs}
	return q
}

// closed sums the d closed slots before max(e, open).
func (w *Window) closed(e, d int64) (adm, off int64) {
	w.read(func() {
		o := w.open.Load()
		ref := max(e, o)
		lo := ref - d
		adm, off = w.sumClosed(o, lo, o-1)
		if ref > o && o >= lo {
			a, f := w.openRunning()
			adm += int64(sat32(a))
			off += int64(sat32(f))
		}
	})
	return adm, off
}

// minute sums the closed slots of the current second and the 59 before it
// from the second ring, or from the sparse words while they keep the last
// minute, and returns how many slots that span covers.
func (w *Window) minute(e int64) (adm, off, span int64) {
	w.read(func() {
		adm, off = 0, 0
		o := w.open.Load()
		ref := max(e, o)
		from := floorDiv(ref, slotsPerSecond) - minuteSeconds + 1
		span = ref - from*slotsPerSecond
		so := floorDiv(o, slotsPerSecond)
		first := max(from, so-minuteSeconds+1)
		if sec := w.secondsRing(); sec != nil {
			for s := first; s <= so; s++ {
				v := sec[mod(s, minuteSeconds)].Load()
				adm += int64(v >> 32)
				off += int64(v & uint64(maxUint32))
			}
		} else {
			for i := range w.sparse {
				if s := w.sparse[i].Load(); s != 0 {
					if x, v := sparseSlot(o, s); floorDiv(x, slotsPerSecond) >= first {
						adm += int64(v >> 32)
						off += int64(v & uint64(maxUint32))
					}
				}
			}
		}
		if ref > o && so >= from {
			a, f := w.openRunning()
			adm += int64(sat32(a))
			off += int64(sat32(f))
		}
	})
	return adm, off, span
}

// Clock alignment (design.md §2): the filter of the peers' clock offsets
// and the correction that moves this node's slot edges to the cluster's.

package engine

import (
	"slices"
	"time"
)

// Correction is how much the caller must add to its clock to read node
// time: the engine moves it to align this node's slot edges with the
// cluster's (design.md §2). It changes at ticks, rarely once aligned; the
// times passed to the engine must include it.
func (e *Engine) Correction() time.Duration { return time.Duration(e.correction.Load()) }

// alignLocked moves the correction to the median of the clock offsets
// measured to the members this node hears (itself counting as offset zero),
// when that median is beyond the deadband. Each offset is half the difference
// of this node's estimate of the peer and the peer's estimate of this node,
// so symmetric delays cancel (NTP's exchange); using one side alone would
// read every delay as the peer being late, and the whole cluster would walk
// backwards. A single member with a wrong clock is outvoted; two nodes meet
// halfway. After a correction every sample is dropped and alignment waits
// alignHoldOff, so that both sides measure against the new clock.
func (e *Engine) alignLocked(now int64) {
	if e.cfg.AlignDeadband < 0 || now < e.alignHold {
		return
	}
	offs := e.alignScratch[:0]
	offs = append(offs, 0)
	// Only members heard directly give samples: over the sync overlay the
	// neighbours, not every member. The order does not matter (a median).
	direct := e.direct[:0]
	for _, m := range e.direct {
		if now-m.direct > int64(e.cfg.DeadAfter) {
			m.inDirect = false // back on its next frame
			continue
		}
		direct = append(direct, m)
	}
	clear(e.direct[len(direct):])
	e.direct = direct
	for _, m := range direct {
		if !m.reachable {
			continue
		}
		o, ok := m.offsets.estimate(now)
		if !ok || m.echo == 0 {
			// Wait for every member this node hears: a median of part of
			// them (or a mean of two of three) would follow an outlier.
			e.alignScratch = offs
			return
		}
		offs = append(offs, (o-m.echo)/2)
	}
	e.alignScratch = offs
	if len(offs) < 2 {
		return
	}
	slices.Sort(offs)
	mid := len(offs) / 2
	median := offs[mid]
	if len(offs)%2 == 0 {
		median = (offs[mid-1] + offs[mid]) / 2
	}
	if median > int64(e.cfg.AlignDeadband) || median < -int64(e.cfg.AlignDeadband) {
		e.correction.Add(median)
		e.counters.Realigned++
		e.alignHold = now + median + int64(alignHoldOff)
		for _, m := range e.members {
			m.offsets, m.echo = offsetFilter{}, 0
		}
	}
}

// alignHoldOff is how long alignment waits after a correction: long enough
// for both sides' filters to refill with samples of the new clock.
const alignHoldOff = 500 * time.Millisecond

// sampleSpan is how far back an offset estimate looks: less than
// alignHoldOff, so that a peer's estimate no longer holds samples from
// before this node's last correction when alignment resumes, whatever the
// rate of its frames (a frame every tick under load, a heartbeat every
// Heartbeat when idle).
const sampleSpan = 400 * time.Millisecond

// offsetFilter keeps the last few samples of a peer's clock offset as seen
// through its frames: asOf − local now, which is the offset minus the
// frame's delay. Their maximum is the sample with the least delay, the best
// estimate of the offset itself.
type offsetFilter struct {
	samples [8]int64
	at      [8]int64 // local time of each sample
	n       int
	next    int
}

func (f *offsetFilter) add(d, now int64) {
	f.samples[f.next], f.at[f.next] = d, now
	f.next = (f.next + 1) % len(f.samples)
	f.n = min(f.n+1, len(f.samples))
}

// estimateAsOfLast returns the estimate as it stood when the newest sample
// came in: for a frame that waited out a stall, whose samples since are
// none or stale.
func (f *offsetFilter) estimateAsOfLast() (int64, bool) {
	if f.n == 0 {
		return 0, false
	}
	return f.estimate(f.at[(f.next+len(f.at)-1)%len(f.at)])
}

// estimate returns the offset at local time now once enough samples of
// the last sampleSpan are in.
func (f *offsetFilter) estimate(now int64) (int64, bool) {
	var best int64
	k := 0
	for i := range f.n {
		if now-f.at[i] > int64(sampleSpan) {
			continue
		}
		if k == 0 || f.samples[i] > best {
			best = f.samples[i]
		}
		k++
	}
	return best, k >= 3
}

// Resets (design.md §8, "Resets"): a key reset from floor slot F counts
// only what was admitted in F and later slots, in the node's own window and
// in every view of the others.

package engine

import (
	"github.com/quotamesh/quotamesh/limits"
	"github.com/quotamesh/quotamesh/window"
)

// floorKeepSlots is how long the engine keeps a key's floor after it took
// effect: past it no window or view can still reach a slot before it (the
// longest window, the demand period and a margin, twice over for views of
// origins that lag).
const floorKeepSlots = int64(2 * (limits.MaxSlots + HorizonMargin))

// applyResetsLocked records the floors of the resets in t that the engine
// has not seen yet for every key it tracks that they match: each key's
// window forgets its slots before the floor at the first tick in the
// floor's slot or later (at once if that has begun), and its views count
// from the floor on.
func (e *Engine) applyResetsLocked(t *limits.Table, now int64) {
	rs := t.Resets()
	seen := make(map[limits.Reset]bool, len(rs))
	defer func() { e.resetsSeen = seen }()
	for _, r := range rs {
		seen[r] = true
		if e.resetsSeen[r] {
			continue
		}
		if r.Floor+floorKeepSlots < window.EpochOf(now) {
			continue // from a log replayed at start: long expired
		}
		p, err := limits.ParsePattern(r.Pattern)
		if err != nil {
			continue // tables hold valid resets
		}
		for _, ks := range e.keyList {
			if p.Match(ks.key) {
				e.setFloorLocked(ks, r.Floor)
			}
		}
	}
}

// setFloorLocked raises ks's floor to f (a floor never moves back) and
// queues the clearing of its window.
func (e *Engine) setFloorLocked(ks *keyState, f int64) {
	if f <= e.floors[ks] {
		return
	}
	if e.floors == nil {
		e.floors = make(map[*keyState]int64)
	}
	e.floors[ks] = f
	e.pendingFloors = append(e.pendingFloors, ks)
}

// clearDueFloorsLocked clears the windows whose floor's slot has begun at
// now, and has their quotas recomputed.
func (e *Engine) clearDueFloorsLocked(now int64) {
	if len(e.pendingFloors) == 0 {
		return
	}
	cur := window.EpochOf(now)
	kept := e.pendingFloors[:0]
	for _, ks := range e.pendingFloors {
		f, ok := e.floors[ks]
		switch {
		case !ok || ks.gone:
		case f > cur:
			kept = append(kept, ks)
		default:
			if ks.w != nil {
				ks.w.ClearBefore(now, f)
			}
			e.markDirtyLocked(ks)
		}
	}
	clear(e.pendingFloors[len(kept):])
	e.pendingFloors = kept
}

// ApplyResets clears at once the windows whose reset has taken effect at
// now, as the next tick would, so that a caller that reset a key admits
// again without waiting for the tick. Their quotas follow at the next tick.
func (e *Engine) ApplyResets(now int64) {
	e.seeTime(now)
	e.mu.Lock()
	defer e.mu.Unlock()
	e.clearDueFloorsLocked(now)
}

// floorLocked returns the floor views of ks read from at now: its reset's
// floor once that slot has begun, else 0 (before it, everything counts).
func (e *Engine) floorLocked(ks *keyState, now int64) int64 {
	if len(e.floors) == 0 || ks == nil {
		return 0
	}
	if f := e.floors[ks]; f <= window.EpochOf(now) {
		return f
	}
	return 0
}

// pruneFloorsLocked forgets floors no window or view can reach any more.
func (e *Engine) pruneFloorsLocked(now int64) {
	cur := window.EpochOf(now)
	for ks, f := range e.floors {
		if ks.gone || f+floorKeepSlots < cur {
			delete(e.floors, ks)
		}
	}
}

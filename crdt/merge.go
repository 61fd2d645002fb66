package crdt

import "fmt"

// MergeStats says what a Merge did.
type MergeStats struct {
	// Changed counts entries that raised a stored count.
	Changed int
	// Unchanged counts entries the store already held (re-sends,
	// duplicates, older values).
	Unchanged int
	// Stale counts entries older than their key's horizon, ignored.
	Stale int
	// Self counts entries of the store's own origin, ignored: full states
	// relay them back.
	Self int
	// SelfAhead counts, among those, entries above what the store holds for
	// itself: another process is using this incarnation, or a bug.
	SelfAhead int
	// NewOrigins counts origins the store had not known.
	NewOrigins int
}

// Merge joins delta d into the store at local time nowLocal. It validates
// d first (Delta.Validate, and d must not come from the store's own origin)
// and on error returns it wrapped, having changed nothing. Entries and state
// of the store's own current origin, which full states relay back, are
// ignored and counted in MergeStats.Self. Merging a delta twice, or an old
// delta after a newer one, changes nothing.
func (s *Store) Merge(d Delta, nowLocal int64) (MergeStats, error) {
	var st MergeStats
	if err := d.Validate(); err != nil {
		return st, fmt.Errorf("merge from %v: %w", d.From, err)
	}
	if d.From == s.self {
		return st, fmt.Errorf("merge: %w %v", ErrFromSelf, d.From)
	}
	now := s.advance(nowLocal)

	idx := s.scratch[:0]
	for _, os := range d.Origins {
		if os.ID == s.self {
			idx = append(idx, nil)
			continue
		}
		o, known := s.origins[os.ID]
		if !known {
			o = s.addOrigin(os.ID)
			st.NewOrigins++
		}
		s.observe(o, os, now, os.ID == d.From, !known)
		idx = append(idx, o)
	}
	s.scratch = idx[:0]

	var ks *keyState
	var sr *series
	for i := range d.Entries {
		e := &d.Entries[i]
		o := idx[e.Origin]
		v := pack(e.Admitted, e.Offered)
		if o == nil {
			st.Self++
			if s.selfAhead(e.Key, e.Epoch, v) {
				st.SelfAhead++
			}
			continue
		}
		if v == 0 {
			st.Unchanged++
			continue
		}
		if ks == nil || ks.key != e.Key {
			ks, sr = s.keyState(e.Key, false), nil
		}
		horizon := 0
		if ks != nil {
			horizon = int(ks.horizon)
		} else {
			horizon = s.horizonFor(e.Key)
		}
		if e.Epoch < slotOf(s.estimate(o, now))-int64(horizon) {
			st.Stale++
			continue
		}
		if ks == nil {
			ks = s.keyState(e.Key, true)
		}
		if sr == nil || sr.oi != o.idx {
			if sr = ks.seriesOf(o); sr == nil {
				sr = s.newSeries(ks, o)
			}
		}
		old, nv, held := sr.put(e.Epoch, v, ks.maxCap())
		switch {
		case !held:
			st.Stale++
		case nv != old:
			st.Changed++
			s.gcAfterChange(ks)
			s.logMerged(ks, o, e.Epoch, false)
		default:
			st.Unchanged++
		}
	}
	for i := range d.Quotas {
		q := &d.Quotas[i]
		o := idx[q.Origin]
		if o == nil {
			st.Self++
			continue
		}
		if ks == nil || ks.key != q.Key {
			ks, sr = s.keyState(q.Key, false), nil
		}
		// A register holds until its origin replaces it, however old its
		// slot: unlike counts, it does not expire (View.Quota).
		if ks == nil {
			ks = s.keyState(q.Key, true)
		}
		if sr == nil || sr.oi != o.idx {
			if sr = ks.seriesOf(o); sr == nil {
				sr = s.newSeries(ks, o)
			}
		}
		if sr.putQuota(q.Epoch, q.Seq, q.Quota) {
			st.Changed++
			s.gcAfterChange(ks)
			s.logMerged(ks, o, 0, true)
		} else {
			st.Unchanged++
		}
	}
	s.noteReceived(d)
	return st, nil
}

// selfAhead reports whether a relayed entry of the store's own origin holds
// more than the store itself, within the horizon (older own slots may have
// been collected here and not yet at the relayer).
func (s *Store) selfAhead(key string, epoch int64, v uint64) bool {
	ks := s.keys[key]
	horizon := DefaultHorizon
	if ks != nil {
		horizon = int(ks.horizon)
	}
	if epoch < slotOf(s.own.asOf)-int64(horizon) {
		return false
	}
	var have uint64
	if ks != nil {
		if sr := ks.seriesOf(s.own); sr != nil {
			have = sr.get(epoch)
		}
	}
	return join(have, v) != have
}

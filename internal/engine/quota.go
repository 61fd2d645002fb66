// The quota of a key (design.md §7).

package engine

import (
	"github.com/quotamesh/quotamesh/crdt"
	"github.com/quotamesh/quotamesh/internal/route"
	"github.com/quotamesh/quotamesh/internal/share"
	"github.com/quotamesh/quotamesh/limits"
	"github.com/quotamesh/quotamesh/window"
)

// quotaInput is share.Compute's input for one key, gathered from the views,
// and what the caller needs besides.
type quotaInput struct {
	in        share.Input
	shared    bool  // a reachable member uses the key
	member    bool  // a current member has a view of the key
	unknown   int   // reachable members with no view of the key
	reachable int64 // reachable members, this node included
}

// quotaInputLocked gathers the input of ks's quota at now from the window
// and the views, into the engine's scratch origins (valid until the next
// call). It changes nothing but members' stamps.
func (e *Engine) quotaInputLocked(now int64, ks *keyState) quotaInput {
	rate := ks.w.Rate()
	admitted, _ := ks.w.Counts(now)
	q := quotaInput{reachable: 1}
	q.in = share.Input{
		Limit:    rate.Count,
		Admitted: admitted,
		Demand:   ks.w.Demand(now, e.cfg.DemandSlots),
		Members:  e.nMembers,
		Policy:   e.cfg.Policy,
		Fenced:   e.fenced,
		Prior:    e.cfg.Prior,
	}
	origins := e.origins[:0]
	e.stamp++
	e.store.ViewsFrom(ks.key, rate.Slots(), e.cfg.DemandSlots, e.floorLocked(ks, now), now, func(info crdt.OriginInfo, v crdt.View) {
		o := share.Origin{Node: info.ID.Node, Admitted: v.Admitted, Demand: v.Demand, Quota: v.Quota, Announced: v.Announced}
		if m, ok := e.members[info.ID.Node]; ok && m.incarnation == info.ID.Incarnation {
			o.Member, o.Reachable, o.Reclaimed = true, m.reachable, m.reclaimed
			o.Fresh = m.reachable && v.Age <= e.cfg.Store.Grace
			m.seen = e.stamp
			q.member = true
			q.shared = q.shared || (m.reachable && (v.Admitted > 0 || v.Demand > 0 || v.Quota > 0))
		} else if m, ok := e.departed[info.ID.Node]; ok && m.incarnation == info.ID.Incarnation {
			o.Member = true // unreachable, reserved (members.go)
			m.seen = e.stamp
			q.member = true
		}
		origins = append(origins, o)
	})
	q.reachable += int64(e.nReachable)
	for _, m := range e.memberList {
		if m.seen != e.stamp {
			origins = append(origins, share.Origin{Node: m.id, Member: true, Reachable: m.reachable, Reclaimed: m.reclaimed})
			if m.reachable {
				q.unknown++
			}
		}
	}
	for _, id := range e.departedIDs {
		if e.departed[id].seen != e.stamp {
			origins = append(origins, share.Origin{Node: id, Member: true})
		}
	}
	q.in.Origins = origins
	e.origins = origins[:0]
	return q
}

// computeQuotaLocked sets ks's window quota from the views (design.md §7).
func (e *Engine) computeQuotaLocked(now int64, ks *keyState) {
	if ks.w == nil {
		return
	}
	q := e.quotaInputLocked(now, ks)
	q.in.Uniform = e.rng.Float64()
	if q.member && ks.sh == nil {
		// A member's view of the key: from now on its shares are
		// remembered. Until then a State would have remembered only this
		// node's own, which nothing reads: a scratch one gives the same
		// quota.
		ks.sh = &sharedKey{}
	}
	var out share.Output
	if sh := ks.sh; sh != nil {
		out = share.Compute(e.cfg.Node, q.in, &sh.share)
		sh.lastShare, sh.lastOthers, sh.lastReserved = float32(out.Share), sat32(out.Others), sat32(out.Reserved)
	} else {
		var alone share.State
		out = share.Compute(e.cfg.Node, q.in, &alone)
	}
	e.setShared(ks, q.shared)
	count := q.in.Limit
	// A key this node has just begun to track, while reachable members have
	// not shown a view of it: a flood on a new key reaches every node at
	// once, and each would see itself as the only one asking and take all
	// the headroom (N× the limit in the key's first second). Until a view
	// could have arrived (one grace period), take at most a split of the
	// limit that every node computes alike and that sums to it: the key's
	// home (among the reachable members) takes half and what the others'
	// even parts of the other half leave, every other node an even part of
	// that half. SDKs and the decision APIs send a new key to its home, so
	// the home is where its first requests are: an even split left it 2 of
	// a 10/s limit with 5 nodes (1 with 10) in the key's first 90 ms, while
	// an embedded node deciding a key homed elsewhere still gets a part
	// whenever the limit is at least twice the other members.
	if q.unknown > 0 && ks.young && now-e.young[ks] < int64(e.cfg.Store.Grace) {
		half := count / 2
		part := int64(0)
		if q.reachable > 1 {
			part = half / (q.reachable - 1)
		}
		if home, _ := e.reachableRouteLocked().Home(ks.key); home == e.cfg.Node {
			part = count - (q.reachable-1)*part
		}
		if out.Quota > part {
			out.Quota = part
			// Recompute at every tick until the grace has passed, whether
			// or not anything is written, so the cap does not outlive it.
			e.capped = append(e.capped, ks)
		}
	}
	if e.cfg.UnsafeIgnoreShare {
		out.Quota = count // the broken node of the fault suite
	}
	ks.w.SetQuota(out.Quota)
	// Announce the quota when it changes: peers count it as held by this
	// node (design.md §7) until it changes again. A node alone with a key
	// announces too: its quota is then the whole limit, which changes
	// only with the rule, so that costs one register for the key's life
	// (and a zero when it is forgotten), and a peer that starts deciding
	// the key (a decision API cut off from the key's home, a caller that
	// does not route) counts the room as held from its first decision,
	// even while its view of this node has gone stale.
	quota := uint32(min(max(out.Quota, 0), limits.MaxCount)) // as SetQuota clamps it
	if quota != ks.announced {
		if err := e.store.RecordOwnQuota(ks.key, window.EpochOf(now), quota); err == nil {
			ks.announced = quota
		}
	}
}

// reachableRouteLocked returns the rendezvous table of this node and the
// members it counts as reachable, rebuilt when reachability changed.
func (e *Engine) reachableRouteLocked() *route.Table {
	if e.reachRoute != nil && e.reachRouteGen == e.reachGen {
		return e.reachRoute
	}
	ids := []string{e.cfg.Node}
	for _, m := range e.memberList {
		if m.reachable {
			ids = append(ids, m.id)
		}
	}
	e.reachRoute, e.reachRouteGen = route.New(ids...), e.reachGen
	return e.reachRoute
}

// statusShareLocked returns ks's share, others and reserved room for
// status: those of the last tick for a key another member has a view of;
// for a key decided alone, which keeps none, computed now (without
// remembering anything or drawing a random number), as the next tick would.
func (e *Engine) statusShareLocked(now int64, ks *keyState) (shareOf float64, others, reserved int64) {
	if sh := ks.sh; sh != nil {
		return float64(sh.lastShare), int64(sh.lastOthers), int64(sh.lastReserved)
	}
	var alone share.State
	out := share.Compute(e.cfg.Node, e.quotaInputLocked(now, ks).in, &alone)
	return out.Share, out.Others, out.Reserved
}

// sat32 clamps v to [0, 2^32−1].
func sat32(v int64) uint32 { return uint32(min(max(v, 0), limits.MaxCount)) }

// The quota of a key (design.md §7).

package engine

import (
	"github.com/quotamesh/quotamesh/crdt"
	"github.com/quotamesh/quotamesh/internal/route"
	"github.com/quotamesh/quotamesh/internal/share"
	"github.com/quotamesh/quotamesh/limits"
	"github.com/quotamesh/quotamesh/window"
)

// computeQuotaLocked sets ks's window quota from the views (design.md §7).
func (e *Engine) computeQuotaLocked(now int64, ks *keyState) {
	if ks.w == nil {
		return
	}
	rate := ks.rule.Rate
	slots := rate.Slots()
	admitted, _ := ks.w.Counts(now)
	in := share.Input{
		Limit:    rate.Count,
		Admitted: admitted,
		Demand:   ks.w.Demand(now, e.cfg.DemandSlots),
		Members:  e.nMembers,
		Policy:   e.cfg.Policy,
		Fenced:   e.fenced,
		Prior:    e.cfg.Prior,
		Uniform:  e.rng.Float64(),
	}
	origins := e.origins[:0]
	e.stamp++
	shared := false
	e.store.Views(ks.key, slots, e.cfg.DemandSlots, now, func(info crdt.OriginInfo, v crdt.View) {
		o := share.Origin{Node: info.ID.Node, Admitted: v.Admitted, Demand: v.Demand, Quota: v.Quota, Announced: v.Announced}
		if m, ok := e.members[info.ID.Node]; ok && m.incarnation == info.ID.Incarnation {
			o.Member, o.Reachable, o.Reclaimed = true, m.reachable, m.reclaimed
			o.Fresh = m.reachable && v.Age <= e.cfg.Store.Grace
			m.seen = e.stamp
			shared = shared || (m.reachable && (v.Admitted > 0 || v.Demand > 0 || v.Quota > 0))
		}
		origins = append(origins, o)
	})
	e.setShared(ks, shared)
	reachable, unknown := int64(1), 0 // this node, and reachable members with no view of the key
	for _, id := range e.memberIDs {
		m := e.members[id]
		if m.reachable {
			reachable++
		}
		if m.seen != e.stamp {
			origins = append(origins, share.Origin{Node: id, Member: true, Reachable: m.reachable, Reclaimed: m.reclaimed})
			if m.reachable {
				unknown++
			}
		}
	}
	in.Origins = origins
	ks.last = share.Compute(e.cfg.Node, in, &ks.share)
	// A key this node has just begun to track, while reachable members have
	// not shown a view of it: a flood on a new key reaches every node at
	// once, and each would see itself as the only one asking and take all
	// the headroom (N× the limit in the key's first second). Until a view
	// could have arrived (one grace period), take at most a split of the
	// limit that every node computes alike and that sums to it: the key's
	// home (among the reachable members) takes what the others' even parts
	// leave, which is the whole limit when it is below the number of nodes,
	// so the node SDKs send the key to is never left with nothing.
	if unknown > 0 && now-ks.created < int64(e.cfg.Store.Grace) {
		part := rate.Count / reachable
		if home, _ := e.reachableRouteLocked().Home(ks.key); home == e.cfg.Node {
			part = rate.Count - (reachable-1)*part
		}
		if ks.last.Quota > part {
			ks.last.Quota = part
			// Recompute at every tick until the grace has passed, whether
			// or not anything is written, so the cap does not outlive it.
			e.capped = append(e.capped, ks)
		}
	}
	if e.cfg.UnsafeIgnoreShare {
		ks.last.Quota = rate.Count // the broken node of the fault suite
	}
	ks.w.SetQuota(ks.last.Quota)
	e.origins = origins[:0]
	// Announce the quota when it changes: peers count it as held by this
	// node (design.md §7) until it changes again. A node alone with a key
	// announces nothing (nobody else decides it, and a key's single
	// decider is the common case: SDKs send a key to its home); once
	// another member uses the key, every change goes out, so that what
	// each holds is known before anyone hands out the same room.
	if (shared || ks.announcedAny) && ks.last.Quota != ks.announced {
		if err := e.store.RecordOwnQuota(ks.key, window.EpochOf(now), uint32(min(ks.last.Quota, limits.MaxCount))); err == nil {
			ks.announced, ks.announcedAny = ks.last.Quota, true
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
	for _, id := range e.memberIDs {
		if e.members[id].reachable {
			ids = append(ids, id)
		}
	}
	e.reachRoute, e.reachRouteGen = route.New(ids...), e.reachGen
	return e.reachRoute
}

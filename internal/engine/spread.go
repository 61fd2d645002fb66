// How thin a key's demand is spread over the members (design.md §7, "Thin
// demand per node"): what a caller that can send a decision to the key's
// home asks before it decides here instead.

package engine

import (
	"github.com/quotamesh/quotamesh/crdt"
)

// ThickPerMember is the requests per slot per member from which a key
// spread evenly over the members is decided well by every node on its
// own: room a node's slot edge frees is then taken by its own next request
// within a tick or two, as it would be by the cluster's. Below it, room
// handed to a node waits for that node's next request, and nodes that
// decide alone admit less than the limit (the simulator, Poisson arrivals
// at twice the limit: 2 requests per member per slot lose 6–7 %, 6.7 lose
// about 1 %, 10 none measurable), so such a key is best decided at its
// home.
const ThickPerMember = 10

// Demand returns key's offered requests per slot over the last DemandSlots
// full slots, this node's and every other origin's as this node's views
// see them, and the reachable members (this node included) they are spread
// over. It takes the engine's lock for a pass over the key's origins and
// creates nothing: a key nobody has used reads zero.
func (e *Engine) Demand(now int64, key string) (perSlot float64, members int) {
	e.seeTime(now)
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.demandLocked(now, key)
}

func (e *Engine) demandLocked(now int64, key string) (perSlot float64, members int) {
	var offered int64
	if w, _, ok := e.reg.Lookup(key); ok {
		offered = w.Demand(now, e.cfg.DemandSlots)
	}
	e.store.Recent(key, e.cfg.DemandSlots, 0, now, func(_ crdt.OriginInfo, r crdt.Recent) {
		offered += r.Offered
	})
	members = 1 + e.nReachable
	return float64(offered) / float64(e.cfg.DemandSlots), members
}

// Thin reports whether key is one a node should send to its home rather
// than decide itself, when it can: a key with a rule whose limit, spread
// evenly over the reachable members, gives each fewer than ThickPerMember
// requests per slot, and whose demand (Demand) does too. The loss of
// deciding where requests land appears only when a key's demand reaches
// its limit, so a key whose limit is thick is never thin (a demand at its
// limit is then thick too), and it is decided where it lands from its
// first request, with no move from its home to every node once its demand
// shows (that move cost a new hot key a third of a second of its limit,
// while the home's share still held the demand it had been sent). A key
// with a thin limit and thick demand (one user far over a per-user limit)
// is decided where it lands too: room is then taken as soon as it frees,
// and its load does not all fall on one node. A key no rule governs is
// never thin (nothing to decide), and a key nobody has used has no demand.
//
// A node that is not live (no tick within QuotaValidity), or that resumed
// from a stall less than DeadAfter ago, reads every key as thick: its
// views are stale or being rebuilt, and the requests that waited for it
// are decided here, as without routing (denied until it has ticked, then
// within the share it rejoins with), rather than sent on at once as a
// burst for a peer to admit at the start of a slot.
func (e *Engine) Thin(now int64, key string) bool {
	if !e.live(now) {
		return false
	}
	rule, ok := e.reg.Table().Lookup(key)
	if !ok {
		return false
	}
	e.seeTime(now)
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.wokeAt != 0 && now-e.wokeAt < int64(e.cfg.DeadAfter) {
		return false
	}
	perSlot, members := e.demandLocked(now, key)
	thick := ThickPerMember * float64(members)
	limitPerSlot := float64(rule.Rate.Count) / float64(rule.Rate.Slots())
	return limitPerSlot < thick && perSlot < thick
}

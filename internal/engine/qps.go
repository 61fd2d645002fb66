// CurrentQPS: one key's usage as this node sees it, on demand.

package engine

import (
	"cmp"
	"slices"
	"time"

	"github.com/quotamesh/quotamesh"
	"github.com/quotamesh/quotamesh/crdt"
	"github.com/quotamesh/quotamesh/limits"
	"github.com/quotamesh/quotamesh/window"
)

// rateSlots is the span of the rates KeyStats reports: the last full
// second.
const rateSlots = int(time.Second / limits.Slot)

// KeyStats returns key's usage at node time now: its rule, this node's
// rates and window, every other origin's rates and window count as this
// node's views see them, and the room left in the cluster's window (see
// quotamesh.KeyStats). It takes the engine's lock and costs a pass over the
// key's origins; it creates nothing, so asking about a key this node has
// never seen costs no memory. Key validity is the caller's to check.
func (e *Engine) KeyStats(now int64, key string) quotamesh.KeyStats {
	e.seeTime(now)
	st := quotamesh.KeyStats{Key: key, Node: e.cfg.Node, At: time.Unix(0, now).UTC()}
	rule, ok := e.reg.Table().Lookup(key)
	if !ok {
		st.Unlimited = true
	} else {
		st.Rule, st.Limit, st.Shadow = rule.Pattern, rule.Rate, rule.Shadow
	}
	slots := limits.MaxSlots
	if ok {
		slots = rule.Rate.Slots()
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	floor := e.floorLocked(e.keys[key], now)
	if _, has := e.keys[key]; !has {
		if f := e.reg.Table().ResetFloor(key); f <= window.EpochOf(now) {
			floor = f
		}
	}
	if floor > 0 {
		st.ResetAt = time.Unix(0, floor*int64(limits.Slot)).UTC()
	}
	self := quotamesh.NodeRates{Node: e.cfg.Node, Incarnation: e.self.Incarnation, Self: true, Member: true}
	if w, _, found := e.reg.Lookup(key); found {
		q := w.CurrentQPS(now).LastSecond
		self.Admitted, self.Offered = q.Admitted, q.Offered
		self.InWindow, _ = w.Counts(now)
		st.Quota = w.Quota()
		st.LocalRemaining = max(0, st.Quota-w.Total())
	}
	st.Nodes = append(st.Nodes, self)
	others := len(st.Nodes)
	e.store.Recent(key, rateSlots, floor, now, func(info crdt.OriginInfo, r crdt.Recent) {
		st.Nodes = append(st.Nodes, quotamesh.NodeRates{
			Node: info.ID.Node, Incarnation: info.ID.Incarnation, Member: e.isMemberLocked(info.ID),
			Rates: quotamesh.Rates{Admitted: perSecond(r.Admitted), Offered: perSecond(r.Offered)},
			Age:   r.Age,
		})
	})
	e.store.ViewsFrom(key, slots, 0, floor, now, func(info crdt.OriginInfo, v crdt.View) {
		for i := others; i < len(st.Nodes); i++ {
			if n := &st.Nodes[i]; n.Node == info.ID.Node && n.Incarnation == info.ID.Incarnation {
				n.InWindow = v.Admitted
			}
		}
	})
	slices.SortFunc(st.Nodes[others:], func(a, b quotamesh.NodeRates) int {
		return cmp.Or(cmp.Compare(a.Node, b.Node), cmp.Compare(a.Incarnation, b.Incarnation))
	})
	for _, n := range st.Nodes {
		st.Cluster.Admitted += n.Admitted
		st.Cluster.Offered += n.Offered
		st.Admitted += n.InWindow
		if n.Member {
			st.OldestView = max(st.OldestView, n.Age)
		}
	}
	st.Local = st.Nodes[0].Rates
	if ok {
		st.Remaining = max(0, rule.Rate.Count-st.Admitted)
	}
	return st
}

// isMemberLocked reports whether id is this node or the current
// incarnation of a member as far as this node knows.
func (e *Engine) isMemberLocked(id crdt.OriginID) bool {
	if id == e.self {
		return true
	}
	m, ok := e.members[id.Node]
	return ok && m.incarnation == id.Incarnation
}

// perSecond turns a count over rateSlots slots into a rate.
func perSecond(n int64) float64 { return float64(n) / (float64(rateSlots) * limits.Slot.Seconds()) }

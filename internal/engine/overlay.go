// The sync overlay (design.md §7, "Sync overlay"): in a cluster of more
// than FullMeshUpTo reachable nodes, a node sends frames to a few peers
// only, and every origin's changes reach every node through at most
// SyncHops of them.

package engine

import (
	"math"
	"slices"
	"strings"

	"github.com/quotamesh/quotamesh/crdt"
)

// overlay is this node's place in the sync overlay: the peers it sends
// frames to, and for each the origins it relays to it.
//
// The reachable members and this node, sorted by ID, are laid out on a
// grid of d dimensions (d = SyncHops) whose sides are about N^(1/d): node
// i sits at position i, and, when the grid has more positions P than
// nodes, also at position N+i < P, so that every position is held. A
// node's neighbours are the holders of the positions that differ from one
// of its own in one coordinate. To a neighbour along dimension k it sends
// its own changes and relays those of the origins whose positions differ
// from its own only in dimensions below k: an origin's change goes along
// dimension 0 first, then 1, and so on, and reaches every node in at most
// d hops, each node once (twice for the few holding two positions).
// Neighbours per node: the sum of the sides less d, about d·(N^(1/d)−1).
type overlay struct {
	built bool
	gen   uint64 // reachGen it was built for
	on    bool   // more than FullMeshUpTo nodes: frames go to neighbours only
	peers map[string]*relayTo
	ids   []string // the keys of peers, sorted
}

// relayTo is one neighbour's part of the overlay.
type relayTo struct {
	set *crdt.RelaySet // origins relayed to it; nil: only this node's own
	key string         // the set's IDs, joined: peers with the same key share the set
}

// overlayLocked returns the overlay for the current reachability,
// rebuilding it when that changed.
func (e *Engine) overlayLocked() *overlay {
	ov := &e.ov
	if ov.built && ov.gen == e.reachGen {
		return ov
	}
	ov.built, ov.gen = true, e.reachGen
	nodes := []string{e.cfg.Node}
	for _, m := range e.memberList {
		if m.reachable {
			nodes = append(nodes, m.id)
		}
	}
	prev := ov.peers
	ov.peers, ov.ids = nil, nil
	ov.on = len(nodes) > e.cfg.FullMeshUpTo
	if !ov.on {
		return ov
	}
	slices.Sort(nodes)
	sets := gridRelays(nodes, slices.Index(nodes, e.cfg.Node), e.cfg.SyncHops)
	e.store.EnableRelaying()
	byKey := make(map[string]*crdt.RelaySet)
	ov.peers = make(map[string]*relayTo, len(sets))
	for peer, origins := range sets {
		key := strings.Join(origins, "\x00")
		rs := byKey[key]
		if rs == nil && len(origins) > 0 {
			if old := prev[peer]; old != nil && old.key == key {
				rs = old.set // unchanged: keep its deltas' cache and acknowledgements
			} else {
				rs = e.store.NewRelaySet(origins)
			}
			byKey[key] = rs
		}
		ov.peers[peer] = &relayTo{set: rs, key: key}
		ov.ids = append(ov.ids, peer)
		if old := prev[peer]; old == nil || old.key != key {
			// It may lack what was merged of its new origins before: a
			// full state first.
			e.store.Resend(peer)
		}
	}
	slices.Sort(ov.ids)
	return ov
}

// gridRelays lays nodes (sorted) out on a grid of hops dimensions and
// returns, for each neighbour of nodes[self], the origins (sorted) it
// relays to that neighbour besides its own; see overlay.
func gridRelays(nodes []string, self, hops int) map[string][]string {
	n := len(nodes)
	d := max(1, hops)
	side := 2
	for {
		side = max(2, int(math.Ceil(math.Pow(float64(n), 1/float64(d))-1e-9)))
		// Positions beyond the nodes (fewer than side^(d−1)) are held by
		// nodes that hold one already: at most one each.
		if d == 1 || pow(side, d-1) <= n {
			break
		}
		d-- // fewer nodes than a grid of d dimensions needs
	}
	radix := make([]int, d)
	stride := make([]int, d+1)
	stride[0] = 1
	for k := range d {
		radix[k] = side
		if k == d-1 {
			radix[k] = max(2, (n+stride[k]-1)/stride[k])
		}
		stride[k+1] = stride[k] * radix[k]
	}
	total := stride[d]
	holder := func(p int) int {
		if p < n {
			return p
		}
		return p - n
	}
	sets := make(map[int]map[int]bool)
	for _, p := range []int{self, self + n} {
		if p >= total || (p >= n && holder(p) != self) {
			continue
		}
		for k := range d {
			c := (p / stride[k]) % radix[k]
			block := p - p%stride[k] // positions agreeing with p on dimensions k and above
			for v := range radix[k] {
				if v == c {
					continue
				}
				q := p + (v-c)*stride[k]
				if q >= total {
					continue
				}
				t := holder(q)
				if t == self {
					continue
				}
				set := sets[t]
				if set == nil {
					set = make(map[int]bool)
					sets[t] = set
				}
				for o := block; o < block+stride[k] && o < total; o++ {
					if h := holder(o); h != self && h != t {
						set[h] = true
					}
				}
			}
		}
	}
	out := make(map[string][]string, len(sets))
	for t, set := range sets {
		ids := make([]string, 0, len(set))
		for o := range set {
			ids = append(ids, nodes[o])
		}
		slices.Sort(ids)
		out[nodes[t]] = ids
	}
	return out
}

// pow returns b^e for small e.
func pow(b, e int) int {
	r := 1
	for range e {
		r *= b
	}
	return r
}

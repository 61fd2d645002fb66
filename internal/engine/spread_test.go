package engine

import (
	"testing"
)

// TestThinFollowsTheClusterDemand: a key is thin until the offered rate
// the views show, this node's and its peers', reaches ThickPerMember per
// member per slot, wherever the requests arrive; a node that has never
// seen the key reads it as thin and creates nothing for it.
func TestThinFollowsTheClusterDemand(t *testing.T) {
	for _, tc := range []struct {
		name    string
		perTick map[string]int // requests per 20 ms tick, per node
		thin    bool
	}{
		{"nobody", map[string]int{}, true},
		{"spread below", map[string]int{"a": 1, "b": 1, "c": 1}, true},  // 15 per slot: 5 per member
		{"one node below", map[string]int{"b": 5}, true},                // 25 per slot
		{"spread above", map[string]int{"a": 3, "b": 3, "c": 3}, false}, // 45 per slot
		{"one node above", map[string]int{"c": 8}, false},               // 40 per slot
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := newNet(t, table(t, "k", "100000/s"), Config{}, "a", "b", "c")
			n.deliver(t0)
			var at int64
			for step := int64(0); step < 100; step++ { // 2 s in 20 ms ticks
				at = t0 + step*20*ms
				n.tick(at)
				for id, k := range tc.perTick {
					for range k {
						n.engines[id].AllowN(n.now(id, at), "k", 1)
					}
				}
			}
			n.tick(at + 20*ms)
			a := n.engines["a"]
			perSlot, members := a.Demand(n.now("a", at+20*ms), "k")
			if got := a.Thin(n.now("a", at+20*ms), "k"); got != tc.thin || members != 3 {
				t.Errorf("Thin = %v with %.1f per slot over %d members, want %v over 3", got, perSlot, members, tc.thin)
			}
			if _, _, ok := a.Registry().Lookup("k"); ok != (tc.perTick["a"] > 0) {
				t.Errorf("a holds a window for k: %v, want only if it decided it", ok)
			}
		})
	}
}

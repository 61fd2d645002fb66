package engine

import (
	"testing"
)

// TestThinFollowsTheClusterDemand: a key whose limit is thin (under
// ThickPerMember per member per slot) is thin until the offered rate the
// views show, this node's and its peers', reaches ThickPerMember per
// member per slot too, wherever the requests arrive; a node that has never
// seen the key reads it as thin and creates nothing for it. A key whose
// limit is thick, and a key no rule governs, are never thin.
func TestThinFollowsTheClusterDemand(t *testing.T) {
	for _, tc := range []struct {
		name    string
		limit   string         // of "k"; 250/s is 25 per slot, under 3 × 10
		key     string         // asked about; default "k"
		perTick map[string]int // requests for "k" per 20 ms tick, per node
		thin    bool
	}{
		{"nobody", "250/s", "", map[string]int{}, true},
		{"spread below", "250/s", "", map[string]int{"a": 1, "b": 1, "c": 1}, true},  // 15 per slot: 5 per member
		{"one node below", "250/s", "", map[string]int{"b": 5}, true},                // 25 per slot
		{"spread above", "250/s", "", map[string]int{"a": 3, "b": 3, "c": 3}, false}, // 45 per slot
		{"one node above", "250/s", "", map[string]int{"c": 8}, false},               // 40 per slot
		{"thick limit, nobody", "300/s", "", map[string]int{}, false},                // 30 per slot
		{"thick limit, spread below", "1000/s", "", map[string]int{"a": 1, "b": 1, "c": 1}, false},
		{"no rule", "250/s", "other", map[string]int{}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			key := tc.key
			if key == "" {
				key = "k"
			}
			n := newNet(t, table(t, "k", tc.limit), Config{}, "a", "b", "c")
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
			perSlot, members := a.Demand(n.now("a", at+20*ms), key)
			if got := a.Thin(n.now("a", at+20*ms), key); got != tc.thin || members != 3 {
				t.Errorf("Thin = %v with %.1f per slot over %d members, want %v over 3", got, perSlot, members, tc.thin)
			}
			if _, _, ok := a.Registry().Lookup("k"); ok != (tc.perTick["a"] > 0) {
				t.Errorf("a holds a window for k: %v, want only if it decided it", ok)
			}
		})
	}
}

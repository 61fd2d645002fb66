package engine

import (
	"fmt"
	"slices"
	"testing"
)

// TestOverlayReachesEveryNode: over the grid of the sync overlay, every
// origin's changes reach every node within SyncHops hops, each node sends
// frames to about hops·(N^(1/hops)−1) peers, and peers are symmetric (a
// node sends to those that send to it, so acknowledgements flow).
func TestOverlayReachesEveryNode(t *testing.T) {
	for _, n := range []int{2, 13, 30, 64, 100, 101, 257} {
		for _, hops := range []int{1, 2, 3, 4} {
			if n > 300 && hops == 1 {
				continue
			}
			nodes := make([]string, n)
			for i := range nodes {
				nodes[i] = fmt.Sprintf("n%04d", i)
			}
			relays := make([]map[string][]string, n)
			index := make(map[string]int, n)
			most := 0
			for i := range nodes {
				relays[i] = gridRelays(nodes, i, hops)
				index[nodes[i]] = i
				most = max(most, len(relays[i]))
			}
			for i := range nodes {
				for peer := range relays[i] {
					if _, ok := relays[index[peer]][nodes[i]]; !ok {
						t.Fatalf("n=%d hops=%d: %s sends to %s but not back", n, hops, nodes[i], peer)
					}
				}
			}
			for o := range nodes {
				knows := make([]bool, n)
				knows[o] = true
				for range hops {
					next := slices.Clone(knows)
					for x := range nodes {
						if !knows[x] {
							continue
						}
						for peer, set := range relays[x] {
							if x == o || slices.Contains(set, nodes[o]) {
								next[index[peer]] = true
							}
						}
					}
					knows = next
				}
				if i := slices.Index(knows, false); i >= 0 {
					t.Fatalf("n=%d hops=%d: %s's changes do not reach %s in %d hops", n, hops, nodes[o], nodes[i], hops)
				}
			}
			// Each node holds one or two positions of a grid whose sides
			// are about N^(1/hops).
			side := 2
			for pow(side, hops) < n {
				side++
			}
			if bound := 2 * hops * (side - 1); most > bound {
				t.Errorf("n=%d hops=%d: a node sends to %d peers, want at most %d", n, hops, most, bound)
			}
		}
	}
}

package sim

import (
	"fmt"
	"testing"
	"time"

	"github.com/quotamesh/quotamesh/internal/pattern"
	"github.com/quotamesh/quotamesh/limits"
)

// TestBridgePartitions: a partition that is not transitive (a bridge node
// hears both sides, the sides cannot hear each other) must keep the
// conservative bound, and the cluster available. Before relays, each side
// heard a strict majority through the bridge, reclaimed the other side's
// share after ReclaimAfter, and both spent it: 1400/s of 1000/s with three
// nodes at uniform load; before the reclaim both sides reserved each other's
// share and admitted 760/s. With reachability gossip and relays
// (design.md §7, bridges) every member stays reachable through the bridge.
func TestBridgePartitions(t *testing.T) {
	const from, to = 3 * time.Second, 12 * time.Second
	cut := func(a, b []int) Cut { return Cut{Start: from, End: to, A: a, B: b} }
	cases := map[string]struct {
		nodes int
		cuts  []Cut
	}{
		"3, 1 bridges 0 and 2": {3, []Cut{cut([]int{0}, []int{2})}},
		"3, 0 bridges 1 and 2": {3, []Cut{cut([]int{1}, []int{2})}},
		"5, 2 bridges halves":  {5, []Cut{cut([]int{0, 1}, []int{3, 4})}},
		"5 in a line":          {5, []Cut{cut([]int{0}, []int{2, 3, 4}), cut([]int{1}, []int{3, 4}), cut([]int{2}, []int{4})}},
	}
	for name, c := range cases {
		for _, p := range []pattern.Name{pattern.Uniform, pattern.Skew90} {
			t.Run(name+"/"+string(p), func(t *testing.T) {
				// Three nodes go through the wire codec too: relays and misses
				// must survive it.
				r := run(t, Config{Nodes: c.nodes, Pattern: p, Duration: 16 * time.Second, Cuts: c.cuts, Encode: c.nodes == 3})
				for s := int(from / time.Second); s < int(to/time.Second); s++ {
					if got := r.PerSecond[s]; got < 990 || got > 1010 {
						t.Errorf("second %d, during the cut, admitted %d, want 1000±10 (seconds %v)", s, got, r.PerSecond)
					}
				}
				if m := r.MaxWindow(from, to+2*time.Second, time.Second); m > 1030 {
					t.Errorf("a 1 s window during the cut admitted %d, want <= 1030 as without faults (seconds %v)", m, r.PerSecond)
				}
				if got := r.PerSecond[14]; got < 990 || got > 1010 {
					t.Errorf("second 14, after the heal, admitted %d, want 1000±10", got)
				}
			})
		}
	}
}

// TestRejoinStaysWithinBound: a node that comes back after a partition or
// a pause (SIGSTOP) must not bring a burst with it, even when its first
// sync frames take a while after the hellos (FirstFrame): before the fix a
// hello alone made a peer reachable, and the rejoining node, unfenced with
// views that had slid empty, took almost the whole limit until the counts
// came. After the heal every 1 s window stays within the bound of a demand
// shift (1.05× here, the rotate pattern's without faults), and from 2 s
// after it every second is back at the limit.
func TestRejoinStaysWithinBound(t *testing.T) {
	type fault struct {
		at, heal time.Duration
		cfg      Config
	}
	var faults []fault
	for _, node := range []int{0, 1} {
		for _, d := range []time.Duration{1500 * time.Millisecond, 4 * time.Second, 9 * time.Second} {
			faults = append(faults, fault{3 * time.Second, 3*time.Second + d, Config{
				Partitions: []Partition{{Start: 3 * time.Second, End: 3*time.Second + d, Groups: [][]int{{node}}}}}})
		}
		for _, d := range []time.Duration{300 * time.Millisecond, 1500 * time.Millisecond, 4 * time.Second, 7 * time.Second} {
			faults = append(faults, fault{3 * time.Second, 3*time.Second + d, Config{
				Pauses: []Pause{{At: 3 * time.Second, For: d, Node: node}}}})
		}
	}
	for _, f := range faults {
		for _, p := range []pattern.Name{pattern.Uniform, pattern.Skew90} {
			c := f.cfg
			name := fmt.Sprintf("%v%v/%v/%s", c.Partitions, c.Pauses, f.heal, p)
			t.Run(name, func(t *testing.T) {
				c.Nodes, c.Pattern, c.Duration = 3, p, f.heal+6*time.Second
				c.FirstFrame = 200 * time.Millisecond
				r := run(t, c)
				if m := r.MaxWindow(f.heal-time.Second, f.heal+3*time.Second, time.Second); m > 1050 {
					t.Errorf("a 1 s window around the heal at %v admitted %d, want <= 1050 (seconds %v)", f.heal, m, r.PerSecond)
				}
				first := int((f.heal+time.Second-1)/time.Second) + 2
				for s := first; s < len(r.PerSecond); s++ {
					if got := r.PerSecond[s]; got < 990 || got > 1010 {
						t.Errorf("second %d, 2 s after the heal at %v, admitted %d, want 1000±10 (seconds %v)", s, f.heal, got, r.PerSecond)
					}
				}
			})
		}
	}
}

// TestFaultSuitePause replays the fault suite's pause (cluster_test: 300/s,
// twice that offered evenly through one SDK client per node, each talking
// to its own node, strict or with leases; one node stopped 8 s, 12 s into
// the load) and holds it to the suite's 1 s bound, 1.06× the limit, from a
// second before the pause to 2 s after it. Before the engine dropped the
// frames that wait out a pause in the socket (Pause says how the streams
// behave), this run admitted up to 1.34× (strict) and 1.42× (leases) on
// 3 nodes, 1.20× and 1.12× on 5: the resumed node took its peers for
// reachable and holding nothing. On real processes the suite measured
// 1.51–1.66× (strict) and 1.35× (leases) on 3 nodes.
func TestFaultSuitePause(t *testing.T) {
	const at, d = 12 * time.Second, 8 * time.Second
	for _, nodes := range []int{3, 5} {
		for _, strict := range []bool{true, false} {
			t.Run(fmt.Sprintf("%d/strict=%v", nodes, strict), func(t *testing.T) {
				r := run(t, Config{Nodes: nodes, Pattern: pattern.Uniform, Limit: limits.MustParseRate("300/s"), Duration: at + d + 8*time.Second,
					Clients: 1, Client: ClientConfig{Strict: strict, Nearest: true},
					Pauses: []Pause{{At: at, For: d, Node: 1}}})
				if m := r.MaxWindow(at-time.Second, at+d+2*time.Second, time.Second); float64(m) > 1.06*300 {
					t.Errorf("a 1 s window from 1 s before the pause to 2 s after it admitted %d, want <= 1.06 × 300 (seconds %v)", m, r.PerSecond)
				}
			})
		}
	}
}

package sim

import (
	"fmt"
	"testing"
	"time"

	"github.com/quotamesh/quotamesh/internal/pattern"
)

// The bounds of a reset (design.md §8, "Resets"), for the 1000/s limit:
// from its floor on the cluster counts afresh, so it admits again at once
// (here: the demand of the first half second, which the full window before
// it would have refused), any window that straddles the floor holds at most
// the old window's admissions and a fresh limit (2L, with the usual excess
// of each), and every window after the floor at most L, whether the nodes
// applied the reset before the floor, after it, or only after a partition
// or a restart.

func TestResetHoldsTheBound(t *testing.T) {
	const at = 4 * time.Second
	// Every node up and connected at the floor: the whole offered load
	// meets the fresh window.
	atOnce := map[string]bool{"applied before the floor": true, "one node applies late": true}
	cases := map[string]Config{
		"applied before the floor": {Resets: []Reset{{At: at, Lead: 150 * time.Millisecond,
			Apply: map[int]time.Duration{0: 0, 1: 50 * time.Millisecond, 2: 120 * time.Millisecond}}}},
		"one node applies late": {Resets: []Reset{{At: at, Lead: 50 * time.Millisecond,
			Apply: map[int]time.Duration{2: 600 * time.Millisecond}}}},
		"node partitioned across the reset": {
			Partitions: []Partition{{Start: 3 * time.Second, End: 5500 * time.Millisecond, Groups: [][]int{{2}}}},
			Resets: []Reset{{At: at, Lead: 150 * time.Millisecond,
				Apply: map[int]time.Duration{2: 1700 * time.Millisecond}}}}, // Raft catches it up after the heal
		"node killed across the reset": {
			Restarts: []Restart{{At: 3500 * time.Millisecond, Down: time.Second, Node: 1}},
			Resets:   []Reset{{At: at, Lead: 150 * time.Millisecond}}},
	}
	for name, c := range cases {
		for _, p := range []pattern.Name{pattern.Uniform, pattern.Skew90} {
			t.Run(fmt.Sprintf("%s/%s", name, p), func(t *testing.T) {
				c.Nodes, c.Pattern, c.Duration = 3, p, 10*time.Second
				r := run(t, c)
				if len(r.ResetFloors) != 1 {
					t.Fatalf("reset floors %v, want one", r.ResetFloors)
				}
				f := r.ResetFloors[0]
				if f < at || f > at+300*time.Millisecond {
					t.Fatalf("floor at %v, want within 300 ms after the reset at %v", f, at)
				}
				// Offered 2000/s: the half second after the floor offers
				// 1000, and a fresh window admits it all. Without the reset
				// a full window admits about half of it.
				if got := r.count(f, f+500*time.Millisecond); atOnce[name] && got < 900 {
					t.Errorf("admitted %d in the half second after the floor, want about 1000 (seconds %v)", got, r.PerSecond)
				}
				straddle, after := r.MaxWindow(f-time.Second, f+time.Second, time.Second), r.MaxWindow(f, c.Duration, time.Second)
				t.Logf("floor %v: half second after it %d, largest 1 s window straddling it %d, after it %d", f, r.count(f, f+500*time.Millisecond), straddle, after)
				if got := straddle; got > 2*1100 {
					t.Errorf("a 1 s window straddling the floor admitted %d, want <= 2200: the old window and a fresh limit", got)
				}
				if got := after; got > 1100 {
					t.Errorf("a 1 s window after the floor admitted %d, want <= 1100 as without a reset (seconds %v)", got, r.PerSecond)
				}
				for s := 7; s < 10; s++ {
					if got := r.PerSecond[s]; got < 950 || got > 1050 {
						t.Errorf("second %d admitted %d, want 1000±50 (seconds %v)", s, got, r.PerSecond)
					}
				}
			})
		}
	}
}

// count returns the admissions in [from, to).
func (r Result) count(from, to time.Duration) int64 {
	var n int64
	for _, t := range r.admits {
		if t >= from && t < to {
			n++
		}
	}
	return n
}

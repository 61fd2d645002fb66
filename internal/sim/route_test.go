package sim

import (
	"fmt"
	"testing"
	"time"

	"github.com/quotamesh/quotamesh/internal/route"
	"github.com/quotamesh/quotamesh/internal/workload"
	"github.com/quotamesh/quotamesh/limits"
)

// Thin keys spread over the nodes, decided where each request lands,
// lose room to waiting (design.md §7, "Thin demand per node"); sent to
// their home while thin (Route Thin, the decision APIs' default) they are
// decided as by one limiter. Hot keys are decided where they land under
// both routes, and as accurately.
func TestThinKeysAreDecidedAtTheirHome(t *testing.T) {
	poisson := func(w *workload.Spec) { w.Arrivals = workload.Poisson }
	for _, tc := range []struct {
		name      string
		nodes     int
		work      *workload.Spec
		localLoss float64 // Route Local loses at least this much
	}{
		{"one key 10/s", 3, &workload.Spec{Rule: "k", Limit: limits.MustParseRate("10/s"), Arrivals: workload.Poisson}, 0.10},
		{"one key 1/s", 3, &workload.Spec{Rule: "k", Limit: limits.MustParseRate("1/s"), Arrivals: workload.Poisson}, 0.10},
		{"200 keys 10/s", 3, manyKeys(200, "10/s", poisson), 0.10},
		{"one key 100/s, 10 nodes", 10, &workload.Spec{Rule: "k", Limit: limits.MustParseRate("100/s"), Arrivals: workload.Poisson}, 0.03},
		{"one key 1000/s (thick)", 3, &workload.Spec{Rule: "k", Limit: limits.MustParseRate("1000/s"), Arrivals: workload.Poisson}, -1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := simLength(30 * time.Second)
			local := run(t, Config{Nodes: tc.nodes, Route: RouteLocal, Workload: tc.work, Duration: d})
			thin := run(t, Config{Nodes: tc.nodes, Workload: tc.work, Duration: d})
			loss := func(r Result) float64 { return float64(r.Ideal-r.Admitted) / float64(r.Ideal) }
			t.Logf("local %d, thin %d of ideal %d", local.Admitted, thin.Admitted, thin.Ideal)
			if tc.localLoss >= 0 && loss(local) < tc.localLoss {
				t.Errorf("local route lost %.1f %%, expected at least %.0f %% (the thin-demand loss this route is for)", 100*loss(local), 100*tc.localLoss)
			}
			if e := loss(thin); e > 0.01 || e < -0.01 {
				t.Errorf("thin route: admitted %d of ideal %d (%+.2f %%), want within 1 %%", thin.Admitted, thin.Ideal, -100*e)
			}
			if tc.work.Keys > 1 && thin.PerKey.Within < 0.97 {
				t.Errorf("thin route: %.1f %% of keys within 1 %% or 2 requests, want 97 %% (worst %+v)", 100*thin.PerKey.Within, thin.PerKey.Worst)
			}
			if r := thin.PerKey.MaxAlignedRatio; r > 1.05 {
				t.Errorf("thin route: an aligned second of one key held %.3f× its limit, want ≤ 1.05", r)
			}
		})
	}
}

// A partition cuts a node off from a key's home: the node decides the key
// itself (its share, design.md §7), so neither side stops admitting, and
// after the heal the key goes home again.
func TestThinRouteAcrossAPartition(t *testing.T) {
	w := &workload.Spec{Rule: "k", Limit: limits.MustParseRate("10/s"), Arrivals: workload.Poisson}
	id, _ := route.New("n000", "n001", "n002").Home("k")
	var home int
	fmt.Sscanf(id, "n%d", &home)
	other := (home + 1) % 3
	r := run(t, Config{Nodes: 3, Workload: w, Duration: 20 * time.Second,
		Partitions: []Partition{{Start: 5 * time.Second, End: 10 * time.Second, Groups: [][]int{{other}}}}})
	for s, n := range r.PerSecond {
		if n > 11 {
			t.Errorf("second %d admitted %d, want ≤ 11 (10/s)", s, n)
		}
	}
	if r.Admitted < 180 {
		t.Errorf("admitted %d in 20 s at 10/s, want ≥ 180", r.Admitted)
	}
}

package sim

import (
	"fmt"
	"math"
	"testing"
	"time"

	"github.com/quotamesh/quotamesh/internal/workload"
	"github.com/quotamesh/quotamesh/limits"
)

func manyKeys(keys int, limit string, mod func(*workload.Spec)) *workload.Spec {
	w := &workload.Spec{Rule: "user:*", Keys: keys, Limit: limits.MustParseRate(limit)}
	if mod != nil {
		mod(w)
	}
	return w
}

// SDK clients: the same config gives the same run, every call gets a
// decision, and the counts add up.
func TestClientsDeterministic(t *testing.T) {
	c := Config{Nodes: 3, Duration: 5 * time.Second, Clients: 2, Workload: manyKeys(50, "20/s", nil)}
	a, b := run(t, c), run(t, c)
	if a.Admitted != b.Admitted || a.ClientRequests != b.ClientRequests || a.PerKey != b.PerKey {
		t.Errorf("two runs of one config differ: admitted %d and %d, requests %d and %d", a.Admitted, b.Admitted, a.ClientRequests, b.ClientRequests)
	}
	if a.Failed != 0 || a.Offered == 0 || a.PerKey.Offered != 50 || a.ClientRequests == 0 {
		t.Errorf("offered %d, failed %d, keys offered %d, client requests %d; want every call decided, 50 keys", a.Offered, a.Failed, a.PerKey.Offered, a.ClientRequests)
	}
}

// Strict clients routing keys to their home decide as one limiter does:
// every key within 1 % or 2 requests of its ideal.
func TestStrictClientsAreExact(t *testing.T) {
	r := run(t, Config{Nodes: 3, Duration: 10 * time.Second, Clients: 1, Client: ClientConfig{Strict: true},
		Workload: manyKeys(100, "10/s", nil)})
	if r.PerKey.Within < 0.99 || r.Error > 0.005 {
		t.Errorf("strict: %.1f %% of keys within 1 %% or 2 requests, error %.4f; want all, within 0.5 %% (worst %+v)",
			100*r.PerKey.Within, r.Error, r.PerKey.Worst)
	}
	if r.LocalDecisions != 0 || r.LeaseRequests != 0 {
		t.Errorf("strict: %d local decisions, %d lease requests; want none", r.LocalDecisions, r.LeaseRequests)
	}
}

// Leases on a hot key: most calls are decided in the SDK, and no aligned
// window ever holds more than the limit (leases are held at grant).
func TestLeasesHoldTheWindow(t *testing.T) {
	for _, p := range []workload.Placement{workload.Spread, workload.Hot} {
		r := run(t, Config{Nodes: 3, Duration: 10 * time.Second, Clients: 1,
			Workload: &workload.Spec{Rule: "k", Limit: limits.MustParseRate("1000/s"), Placement: p, Period: time.Second}})
		if r.LocalDecisions < r.Offered/2 {
			t.Errorf("%v: %d of %d calls decided in the SDK, want most", p, r.LocalDecisions, r.Offered)
		}
		if r.PerKey.MaxAlignedRatio > 1.0 {
			t.Errorf("%v: an aligned second held %.3f× the limit, want at most 1", p, r.PerKey.MaxAlignedRatio)
		}
	}
}

// Routing thin keys to their home beats sending them to the nearest node:
// one node decides each key, as a lone node does.
func TestHomeRoutingBeatsNearest(t *testing.T) {
	w := manyKeys(30, "10/s", func(w *workload.Spec) { w.Arrivals = workload.Poisson })
	home := run(t, Config{Nodes: 3, Duration: 10 * time.Second, Clients: 1, Workload: w})
	near := run(t, Config{Nodes: 3, Duration: 10 * time.Second, Clients: 1, Workload: w, Client: ClientConfig{Nearest: true}})
	if home.Error >= near.Error || home.PerKey.Within <= near.PerKey.Within {
		t.Errorf("home: error %.4f, %.2f within; nearest: error %.4f, %.2f within; want home closer", home.Error, home.PerKey.Within, near.Error, near.PerKey.Within)
	}
}

func TestClientConfigValidate(t *testing.T) {
	for i, c := range []Config{
		{Nodes: 3, Clients: -1},
		{Nodes: 3, Clients: 1, Client: ClientConfig{Loss: 1}},
		{Nodes: 3, Clients: 1, Client: ClientConfig{RTT: -time.Second}},
		{Nodes: 3, Workload: manyKeys(10, "10/s", func(w *workload.Spec) { w.Rule = "k" })},
	} {
		if _, err := Run(c); err == nil {
			t.Errorf("step %d: Run(%+v) = nil error, want a refusal", i, c)
		}
	}
}

// TestLeasesKeepASaturatedKeyWithinOnePercent: SDK clients deciding one hot
// key from leases at their default TTL and horizon admit within 1 % of a
// perfect limiter on every demand shape, at 3 and 5 nodes, the hot node
// moving every 200 ms included. A lease's tokens are counted in the slot
// its settlement reaches the node in; with a TTL of a whole slot and leases
// sized for it, most settlements crossed a slot edge and 3-8 % of the room
// sat idle (design.md §10); leases sized for a whole 50 ms TTL held a
// client's calls idle after its demand moved on (-2.5 to -3 % with the
// hot node moving every 200 ms). The 100 ms row pins that this test sees
// the first effect, and the rotate200/horizon=50ms row the second.
func TestLeasesKeepASaturatedKeyWithinOnePercent(t *testing.T) {
	for _, nodes := range []int{3, 5} {
		for _, p := range []string{"uniform", "ramp", "rotate", "rotate200", "flash"} {
			for _, ttl := range []time.Duration{0, 50 * time.Millisecond, 100 * time.Millisecond} {
				name := fmt.Sprintf("%d/%s/ttl=horizon=%v", nodes, p, ttl)
				t.Run(name, func(t *testing.T) {
					switch {
					case ttl == 100*time.Millisecond && (nodes != 3 || p != "uniform"):
						t.Skip("the whole-slot TTL is shown once")
					case ttl == 50*time.Millisecond && (nodes != 3 || p != "rotate200"):
						t.Skip("leases sized for their whole TTL are shown once")
					}
					f := workload.DefaultFlags("hot")
					f.Pattern = p
					if p == "rotate200" {
						f.Pattern, f.Period = "rotate", 200*time.Millisecond
					}
					length := simLength(30 * time.Second)
					if ttl != 0 {
						// The effects take the whole run to show (a
						// third of it, under the race detector, put the
						// whole-TTL lease at -1.0 %).
						length = 30 * time.Second
					}
					w, err := f.Spec(nodes, length, 1)
					if err != nil {
						t.Fatal(err)
					}
					c := Config{Nodes: nodes, Duration: w.Duration, Clients: 1, Workload: &w}
					c.Client.Lease.TTL, c.Client.Lease.Horizon = ttl, ttl
					r := run(t, c)
					switch {
					case ttl == 0 && math.Abs(r.Error) > 0.01:
						t.Errorf("error %+.2f %% (admitted %d, ideal %d), want within 1 %%", 100*r.Error, r.Admitted, r.Ideal)
					case ttl != 0 && math.Abs(r.Error) <= 0.01:
						// The effect must break the bound the default holds.
						t.Errorf("leases sized for a TTL of %v: error %+.2f %%; the effect this test guards against is gone, revisit the default", ttl, 100*r.Error)
					}
					if r.MaxWindowRatio > 1.05 {
						t.Errorf("largest window %.3f of the limit, want <= 1.05", r.MaxWindowRatio)
					}
				})
			}
		}
	}
}

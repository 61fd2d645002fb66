package share

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
)

func TestComputeSteps(t *testing.T) {
	reach := func(node string, admitted, demand int64) Origin {
		return Origin{Node: node, Admitted: admitted, Demand: demand, Member: true, Reachable: true, Fresh: true, Announced: true}
	}
	away := func(node string, admitted int64) Origin {
		return Origin{Node: node, Admitted: admitted, Member: true}
	}
	tests := []struct {
		name   string
		in     Input
		frozen map[string]float64
		want   int64 // quota
	}{
		{"lone node takes the whole limit", Input{Limit: 1000, Members: 1}, nil, 1000},
		{"lone node with a full window admits nothing", Input{Limit: 1000, Admitted: 1000, Members: 1}, nil, 1000},
		{"lone node over the limit keeps its count", Input{Limit: 1000, Admitted: 1200, Members: 1}, nil, 1200},
		{"two equal nodes split the headroom", Input{Limit: 1000, Demand: 99, Members: 2, Origins: []Origin{reach("b", 0, 99)}}, nil, 500},
		{"demand-proportional split (9:1)", Input{Limit: 1000, Demand: 899, Members: 2, Origins: []Origin{reach("b", 0, 99)}}, nil, 900},
		{"headroom after others' counts", Input{Limit: 1000, Admitted: 100, Demand: 99, Members: 2, Origins: []Origin{reach("b", 500, 99)}}, nil, 100 + 200},
		{"others over the limit: nothing new", Input{Limit: 1000, Admitted: 10, Demand: 1, Members: 2, Origins: []Origin{reach("b", 1200, 99)}}, nil, 10},
		{"retired incarnation counts but gets no share", Input{Limit: 1000, Members: 1, Origins: []Origin{{Node: "a", Admitted: 300}}}, nil, 700},
		{"never-heard member reserves 1/N; a member without use takes no share", Input{Limit: 900, Members: 3, Origins: []Origin{reach("b", 0, 0), away("c", 0)}}, nil, 600},
		{"an active member takes its share", Input{Limit: 900, Members: 3, Origins: []Origin{reach("b", 0, 1), away("c", 0)}}, nil, 200},
		{"alone with a key's demand: the whole limit, not a prior's part", Input{Limit: 60, Demand: 1, Members: 3, Origins: []Origin{reach("b", 0, 0), reach("c", 0, 0)}}, nil, 60},
		{"unreachable member keeps its frozen share", Input{Limit: 1000, Demand: 1, Members: 2, Origins: []Origin{away("b", 100)}}, map[string]float64{"b": 0.4}, 600},
		{"reservation never below what it was seen to admit", Input{Limit: 1000, Demand: 1, Members: 2, Origins: []Origin{away("b", 700)}}, map[string]float64{"b": 0.4}, 300},
		{"reclaimed member counts only its view", Input{Limit: 1000, Members: 2, Origins: []Origin{{Node: "b", Admitted: 100, Member: true, Reclaimed: true}}}, map[string]float64{"b": 0.4}, 900},
		{"available policy ignores the unreachable", Input{Limit: 1000, Members: 2, Policy: Available, Origins: []Origin{away("b", 100)}}, map[string]float64{"b": 0.4}, 900},
		{"fenced node admits nothing, not even into expired room", Input{Limit: 1000, Admitted: 40, Members: 3, Fenced: true}, nil, 0},
		{"a reachable member's announced quota is held in full", Input{Limit: 1000, Demand: 99, Members: 2, Origins: []Origin{{Node: "b", Admitted: 100, Quota: 600, Demand: 99, Member: true, Reachable: true, Announced: true}}}, nil, 200},
		{"a member using the key unannounced holds its demand's part", Input{Limit: 1000, Demand: 99, Members: 2, Origins: []Origin{{Node: "b", Admitted: 100, Demand: 299, Member: true, Reachable: true}}}, nil, 63},
		{"until its register arrives", Input{Limit: 1000, Demand: 99, Members: 2, Origins: []Origin{{Node: "b", Admitted: 100, Quota: 300, Demand: 299, Member: true, Reachable: true, Announced: true}}}, nil, 175},
		{"an unreachable member holds the most of use, quota, share", Input{Limit: 1000, Members: 2, Origins: []Origin{{Node: "b", Admitted: 100, Quota: 700, Member: true}}}, map[string]float64{"b": 0.4}, 300},
		{"a retired incarnation's quota is not held", Input{Limit: 1000, Members: 1, Origins: []Origin{{Node: "a", Admitted: 100, Quota: 900}}}, nil, 900},
	}
	for i, tt := range tests {
		st := &State{}
		for n, f := range tt.frozen {
			st.remember(n, f, tt.in.Members)
		}
		got := Compute("a", tt.in, st)
		if got.Quota != tt.want {
			t.Errorf("step %d (%s): Compute().Quota = %d, want %d (output %+v)", i, tt.name, got.Quota, tt.want, got)
		}
	}
}

func TestComputeRemembersShares(t *testing.T) {
	st := &State{}
	in := Input{Limit: 1000, Demand: 299, Members: 3, Origins: []Origin{
		{Node: "b", Demand: 599, Member: true, Reachable: true, Fresh: true, Announced: true},
		{Node: "c", Member: true, Reachable: true, Fresh: true, Demand: 99, Announced: true},
	}}
	Compute("a", in, st)
	if got, ok := st.Own(); !ok || math.Abs(got-0.3) > 1e-9 {
		t.Errorf("Own() = %v, %v; want 0.3", got, ok)
	}
	for node, want := range map[string]float64{"b": 0.6, "c": 0.1} {
		if got, ok := st.Frozen(node); !ok || math.Abs(got-want) > 1e-9 {
			t.Errorf("Frozen(%q) = %v, %v; want %v", node, got, ok, want)
		}
	}
	// c becomes unreachable: a and b split the headroom 3:6, and their
	// remembered shares of the whole limit split 1-0.1 the same way.
	in.Origins[1].Reachable = false
	out := Compute("a", in, st)
	if math.Abs(out.Share-1.0/3) > 1e-9 {
		t.Errorf("Share with c away = %v, want 1/3", out.Share)
	}
	if got, _ := st.Own(); math.Abs(got-0.3) > 1e-9 {
		t.Errorf("Own() with c away = %v, want 0.3", got)
	}
	if f, _ := st.Frozen("c"); math.Abs(f-0.1) > 1e-9 {
		t.Errorf("c's frozen share moved to %v while it was away, want 0.1", f)
	}
	// b goes silent: still reachable, but its view is no longer fresh and
	// its demand fades; its remembered share must not follow.
	in.Origins[0].Fresh, in.Origins[0].Demand = false, 0
	Compute("a", in, st)
	if f, _ := st.Frozen("b"); math.Abs(f-0.6) > 1e-9 {
		t.Errorf("b's frozen share moved to %v while its view was stale, want 0.6", f)
	}
	st.Forget("c")
	if _, ok := st.Frozen("c"); ok {
		t.Error("Forget(c) kept c")
	}
}

func TestRoundStochasticIsUnbiased(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for _, x := range []float64{0, 0.2, 0.5, 1, 2.75, 10.01} {
		var sum int64
		const n = 200000
		for range n {
			sum += roundStochastic(x, rng.Float64())
		}
		if mean := float64(sum) / n; math.Abs(mean-x) > 0.01 {
			t.Errorf("mean roundStochastic(%v) = %v, want %v", x, mean, x)
		}
	}
}

// cluster is a set of nodes that all see the same counts (perfect views).
type cluster struct {
	limit            int64
	admitted, demand []int64
	reach            [][]bool // reach[i][j]: i hears j
	states           []*State
}

func (c *cluster) quota(i int, policy Policy, reclaim bool) int64 {
	n := len(c.admitted)
	in := Input{Limit: c.limit, Admitted: c.admitted[i], Demand: c.demand[i], Members: n, Policy: policy, Uniform: 0.999999}
	for j := range n {
		if j == i {
			continue
		}
		in.Origins = append(in.Origins, Origin{
			Node: fmt.Sprint(j), Admitted: c.admitted[j], Demand: c.demand[j],
			Member: true, Reachable: c.reach[i][j], Fresh: c.reach[i][j], Reclaimed: reclaim && !c.reach[i][j], Announced: true,
		})
	}
	return Compute(fmt.Sprint(i), in, c.states[i]).Quota
}

func randomCluster(rng *rand.Rand) *cluster {
	n := 1 + rng.IntN(12)
	c := &cluster{limit: 1 + rng.Int64N(100000), admitted: make([]int64, n), demand: make([]int64, n), reach: make([][]bool, n), states: make([]*State, n)}
	for i := range n {
		c.admitted[i] = rng.Int64N(c.limit/int64(n) + 1)
		c.demand[i] = rng.Int64N(5000)
		c.reach[i] = make([]bool, n)
		for j := range n {
			c.reach[i][j] = true
		}
		c.states[i] = &State{}
	}
	return c
}

// TestNoOvershootWithConsistentViews: nodes that see the same numbers hand
// out at most the headroom between them (plus one per node for rounding up).
func TestNoOvershootWithConsistentViews(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	for iter := range 5000 {
		c := randomCluster(rng)
		var used, extra int64
		for i := range c.admitted {
			used += c.admitted[i]
		}
		headroom := max(0, c.limit-used)
		for i := range c.admitted {
			extra += c.quota(i, Conservative, false) - c.admitted[i]
		}
		if extra > headroom+int64(len(c.admitted)) {
			t.Fatalf("iter %d: %d nodes handed out %d over a headroom of %d", iter, len(c.admitted), extra, headroom)
		}
	}
}

// TestPartitionStaysWithinLimit: shares agreed before a partition; afterwards
// each side only hears itself. Under the conservative policy the quotas of
// both sides sum to at most the limit; under the available policy each side
// may use the whole limit.
func TestPartitionStaysWithinLimit(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	for iter := range 3000 {
		c := randomCluster(rng)
		n := len(c.admitted)
		for i := range n { // agree on shares while connected
			c.quota(i, Conservative, false)
		}
		side := make([]int, n)
		for i := range side {
			side[i] = rng.IntN(2)
		}
		for i := range n {
			for j := range n {
				c.reach[i][j] = side[i] == side[j]
			}
		}
		var total int64
		for i := range n {
			total += c.quota(i, Conservative, false)
		}
		if total > c.limit+int64(2*n) {
			t.Fatalf("iter %d: conservative quotas of %d nodes in a partition sum to %d > limit %d", iter, n, total, c.limit)
		}
		var sideTotals [2]int64
		for i := range n {
			sideTotals[side[i]] += c.quota(i, Available, false)
		}
		for s, tot := range sideTotals {
			if tot > c.limit+int64(n) {
				t.Fatalf("iter %d: available side %d quotas sum to %d > limit %d", iter, s, tot, c.limit)
			}
		}
	}
}

func TestParsePolicy(t *testing.T) {
	for _, p := range []Policy{Conservative, Available} {
		got, err := ParsePolicy(p.String())
		if err != nil || got != p {
			t.Errorf("ParsePolicy(%q) = %v, %v", p.String(), got, err)
		}
	}
	if _, err := ParsePolicy("yolo"); !errors.Is(err, ErrInvalidPolicy) {
		t.Errorf("ParsePolicy(yolo) = %v, want ErrInvalidPolicy", err)
	}
}

func BenchmarkCompute(b *testing.B) {
	st := &State{}
	in := Input{Limit: 1000, Demand: 50, Members: 5}
	for j := range 4 {
		in.Origins = append(in.Origins, Origin{Node: fmt.Sprint("n", j), Admitted: 100, Demand: 50, Member: true, Reachable: true, Fresh: true, Announced: true})
	}
	b.ReportAllocs()
	for b.Loop() {
		Compute("self", in, st)
	}
}

// TestDriftIsUndone: with the window full there is no headroom, so each
// node would only refill what its own slots free and keep whatever split it
// drifted to. A node far above its demand's part takes nothing new until it
// is back near it (1.25× its part), so its freed room goes to the others;
// nodes near their part are left alone.
func TestDriftIsUndone(t *testing.T) {
	in := func(admitted int64, others ...Origin) Input {
		return Input{Limit: 1000, Admitted: admitted, Demand: 600, Members: 3, Origins: others, Uniform: 0.5}
	}
	peer := func(name string, admitted int64) Origin {
		return Origin{Node: name, Admitted: admitted, Demand: 600, Quota: admitted, Member: true, Reachable: true, Fresh: true, Announced: true}
	}
	// Equal demand, 630 / 250 / 120 admitted of a full window.
	var st State
	if out := Compute("a", in(630, peer("b", 250), peer("c", 120)), &st); out.Quota != 417 {
		t.Errorf("drifted node: quota %d, want 417 (⌈1.25 × 1000 / 3⌉): %+v", out.Quota, out)
	}
	// The starved nodes are not capped: they refill what frees up.
	if out := Compute("c", in(120, peer("a", 630), peer("b", 250)), &st); out.Quota != 120 {
		t.Errorf("starved node: quota %d, want its own 120 (no headroom yet)", out.Quota)
	}
	// Near its part a node keeps what it has and its share of the headroom.
	if out := Compute("a", in(350, peer("b", 320), peer("c", 300)), &st); out.Quota != 360 {
		t.Errorf("balanced node: quota %d, want 350 + 30/3 = 360", out.Quota)
	}
}

// TestStateAllocatesOnlyForOthers checks the memory promise of State: a key
// this node decides alone remembers its own share without allocating, and
// a key shared with others allocates once, for all of them.
func TestStateAllocatesOnlyForOthers(t *testing.T) {
	var alone State
	in := Input{Limit: 100, Demand: 3, Members: 3, Origins: []Origin{
		{Node: "c", Member: true, Reachable: true},
		{Node: "b", Member: true, Reachable: true},
	}}
	if n := testing.AllocsPerRun(100, func() { Compute("a", in, &alone) }); n != 0 {
		t.Errorf("Compute for a key decided alone: %v allocations, want 0", n)
	}
	if got, ok := alone.Own(); !ok || got != 1 {
		t.Errorf("Own() = %v, %v; want 1, true", got, ok)
	}
	if alone.others != nil {
		t.Errorf("others = %v for a key decided alone, want nil", alone.others)
	}
	var shared State
	in.Origins[0].Fresh, in.Origins[1].Fresh = true, true
	in.Origins[0].Demand, in.Origins[1].Demand = 1, 5
	Compute("a", in, &shared)
	if n := testing.AllocsPerRun(100, func() { Compute("a", in, &shared) }); n != 0 {
		t.Errorf("Compute for a shared key once its members are known: %v allocations, want 0", n)
	}
	if got, ok := shared.Own(); !ok || math.Abs(got-4.0/12) > 1e-9 {
		t.Errorf("Own() = %v, %v; want %v", got, ok, 4.0/12)
	}
	for node, want := range map[string]float64{"b": 6.0 / 12, "c": 2.0 / 12} {
		if got, ok := shared.Frozen(node); !ok || math.Abs(got-want) > 1e-9 {
			t.Errorf("Frozen(%q) = %v, %v; want %v", node, got, ok, want)
		}
	}
	if got, want := cap(shared.others), 2; got != want {
		t.Errorf("cap(others) = %d, want %d (one per other member)", got, want)
	}
	c := shared.Clone()
	in.Origins[1].Demand = 0
	Compute("a", in, &c)
	if got, _ := shared.Frozen("b"); math.Abs(got-6.0/12) > 1e-9 {
		t.Errorf("Compute on a clone changed the original: Frozen(b) = %v, want %v", got, 6.0/12)
	}
	if got, _ := c.Frozen("b"); got != 0 {
		t.Errorf("clone's Frozen(b) = %v, want 0", got)
	}
	shared.Forget("b")
	if _, ok := shared.Frozen("b"); ok {
		t.Error("Forget(b) kept b")
	}
	if got, ok := shared.Frozen("c"); !ok || math.Abs(got-2.0/12) > 1e-9 {
		t.Errorf("Frozen(c) after forgetting the others = %v, %v", got, ok)
	}
}

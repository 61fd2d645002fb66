package engine

import (
	"testing"

	"github.com/quotamesh/quotamesh/internal/wire"
)

// demand offers each engine perTick requests of key, spread over the tick
// that starts at at, and returns how many were admitted.
func (n *net) demand(at int64, key string, perTick map[string]int) int {
	admitted := 0
	for id, k := range perTick {
		for r := range k {
			if d, _ := n.engines[id].AllowN(n.now(id, at+int64(r)*20*ms/int64(k)), key, 1); d.Allowed {
				admitted++
			}
		}
	}
	return admitted
}

// split cuts every link between a and the others (both ways) and tells
// both ends their streams are gone; heal brings them back with a new
// stream each way that starts with a hello.
func (n *net) split(a string) {
	if n.cut == nil {
		n.cut = map[[2]string]bool{}
	}
	for id := range n.engines {
		if id != a {
			n.cut[[2]string{a, id}], n.cut[[2]string{id, a}] = true, true
			n.engines[a].PeerDown(id)
			n.engines[id].PeerDown(a)
		}
	}
}

func (n *net) heal(a string) {
	for id := range n.engines {
		if id == a {
			continue
		}
		delete(n.cut, [2]string{a, id})
		delete(n.cut, [2]string{id, a})
		for _, p := range [][2]string{{a, id}, {id, a}} {
			n.engines[p[0]].PeerUp(p[1])
			self := n.engines[p[0]].Self()
			n.queue = append(n.queue, frame{p[0], p[1], &wire.Hello{ClusterID: "quotamesh", Node: self.Node, Incarnation: self.Incarnation, Addr: "x"}})
		}
	}
}

func quotaOf(e *Engine, now int64, key string) int64 {
	w, _, ok := e.Registry().Lookup(key)
	if !ok {
		return 0
	}
	_ = now
	return w.Quota()
}

// TestRejoinWaitsForCounts: a node isolated long enough to be fenced and
// reclaimed, then healed, must not take its peers for reachable on their
// hello alone. A hello carries no counts and no quotas: taking the peers for
// reachable then (as the first version did) gave the rejoining node almost
// the whole limit (the peers' views had slid empty and their quota registers
// expired) until their first sync frame arrived, and gave the peers the
// rejoiner's reservation back before they knew its quota.
func TestRejoinWaitsForCounts(t *testing.T) {
	const key = "k"
	n := newNet(t, table(t, key, "1000/s"), Config{}, "a", "b", "c")
	n.deliver(t0)
	each := map[string]int{"a": 14, "b": 14, "c": 14} // 700/s each
	step := int64(0)
	run := func(ticks int64) {
		for end := step + ticks; step < end; step++ {
			at := t0 + step*20*ms
			n.tick(at)
			n.demand(at, key, each)
		}
	}
	run(100) // 2 s
	n.split("a")
	run(300) // 6 s: a fenced after 3 s, reclaimed after 5 s
	if !n.engines["a"].Fenced() {
		t.Fatal("a was not fenced after 6 s alone")
	}
	at := t0 + step*20*ms
	bBefore := quotaOf(n.engines["b"], at, key)
	n.heal("a")
	n.deliver(at) // the hellos only: no sync frame yet
	// Every engine ticks once with the hellos in; their frames are held.
	held := n.cut
	n.cut = map[[2]string]bool{}
	for _, id := range []string{"a", "b", "c"} {
		for _, o := range []string{"a", "b", "c"} {
			if o != id {
				n.cut[[2]string{id, o}] = true
			}
		}
	}
	for _, id := range []string{"a", "b", "c"} {
		tickWith(n.engines[id], n.now(id, at+ms), func(string, *wire.Sync) error { return nil })
	}
	n.cut = held
	if q := quotaOf(n.engines["a"], at, key); q > 400 {
		t.Errorf("a's quota after the peers' hellos, before their counts: %d, want at most its share (400)", q)
	}
	if q := quotaOf(n.engines["b"], at, key); q > bBefore+20 {
		t.Errorf("b's quota after a's hello, before a's counts: %d, was %d before the heal", q, bBefore)
	}
}

// TestFloodOnANewKey: a key no node has seen is flooded on every node at
// once (40× its limit). At the first tick after the key appears each node
// sees its own demand and no view of the key from its peers, which are
// flooded just as much; taking all the headroom then (as the first version
// did) admitted up to N× the limit in the key's first second. Until a view
// of the key could have arrived from every reachable peer, a new key takes
// no more than an even split of the limit.
func TestFloodOnANewKey(t *testing.T) {
	n := newNet(t, table(t, "k", "300/s"), Config{}, "a", "b", "c")
	n.deliver(t0)
	at := t0
	for range 25 { // 500 ms of syncing with no traffic: everyone reachable
		n.tick(at)
		at += 20 * ms
	}
	admitted, at := floodOneSecond(n, at)
	if admitted > 300*102/100 {
		t.Errorf("admitted %d in the key's first second, limit 300/s", admitted)
	}
	if admitted < 300*90/100 {
		t.Errorf("admitted %d in the key's first second: the even split starved it (limit 300/s)", admitted)
	}
	t.Logf("admitted %d in the first second at 40x the limit of 300/s", admitted)
}

// A known key whose demand steps on every node at once (design.md §7): the
// key has been in use at a trickle, so every node has its views, then all
// three nodes are flooded in the same instant. Without damping each node
// took most of the limit before the others' demand reached it.
func TestDemandStepOnAKnownKey(t *testing.T) {
	n := newNet(t, table(t, "k", "300/s"), Config{}, "a", "b", "c")
	n.deliver(t0)
	at := t0
	for range 100 { // 2 s at a trickle on every node: views everywhere
		n.demand(at, "k", map[string]int{"a": 1, "b": 1, "c": 1})
		n.tick(at + 20*ms - 1)
		at += 20 * ms
	}
	for range 100 { // 2 s idle: the trickle leaves the window
		n.tick(at)
		at += 20 * ms
	}
	admitted, at := floodOneSecond(n, at)
	if admitted > 300*105/100 {
		t.Errorf("admitted %d in the first second of the step, limit 300/s", admitted)
	}
	if admitted < 300*90/100 {
		t.Errorf("admitted %d in the first second of the step: damping starved it (limit 300/s)", admitted)
	}
	t.Logf("admitted %d in the first second at 40x the limit of 300/s", admitted)
	// A demand that really is alone gets the whole limit after the step.
	for range 100 {
		n.tick(at)
		at += 20 * ms
	}
	admitted = 0
	for range 50 {
		admitted += n.demand(at, "k", map[string]int{"a": 80})
		n.tick(at + 20*ms - 1)
		at += 20 * ms
	}
	if admitted < 300*95/100 || admitted > 300*105/100 {
		t.Errorf("one node alone admitted %d in a second at 13x the limit of 300/s, want about 300", admitted)
	}
}

// floodOneSecond offers key k 4,000 requests per second on each of a, b
// and c for one second from at, ticking every 20 ms, and returns how many
// were admitted and the time after.
func floodOneSecond(n *net, at int64) (int, int64) {
	admitted := 0
	for range 50 {
		admitted += n.demand(at, "k", map[string]int{"a": 80, "b": 80, "c": 80})
		n.tick(at + 20*ms - 1)
		at += 20 * ms
	}
	return admitted, at
}

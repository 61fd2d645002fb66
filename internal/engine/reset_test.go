package engine

import (
	"testing"
	"time"

	"github.com/quotamesh/quotamesh/limits"
	"github.com/quotamesh/quotamesh/window"
)

// admitLog counts admissions per slot of true time.
type admitLog map[int64]int

// run offers every node in perTick requests of key each tick for ticks
// ticks from at (the tick of true time at+20ms-1 after each), logging the
// admissions by slot, and returns the time after.
func (n *net) run(at int64, ticks int, key string, perTick map[string]int, log admitLog, each func(at int64)) int64 {
	for range ticks {
		if each != nil {
			each(at)
		}
		for id, k := range perTick {
			for r := range k {
				t := at + int64(r)*20*ms/int64(k)
				if d, _ := n.engines[id].AllowN(n.now(id, t), key, 1); d.Allowed {
					log[window.EpochOf(t)]++
				}
			}
		}
		n.tick(at + 20*ms - 1)
		at += 20 * ms
	}
	return at
}

// maxWindow is the most admissions in any k consecutive slots from lo to hi.
func (l admitLog) maxWindow(lo, hi int64, k int) (int, int64) {
	best, at := 0, lo
	for s := lo; s+int64(k)-1 <= hi; s++ {
		sum := 0
		for x := s; x < s+int64(k); x++ {
			sum += l[x]
		}
		if sum > best {
			best, at = sum, s
		}
	}
	return best, at
}

func (l admitLog) sum(lo, hi int64) int {
	n := 0
	for x := lo; x <= hi; x++ {
		n += l[x]
	}
	return n
}

// TestResetOnThreeNodes: three nodes keep a key's window full; a reset is
// applied by each at a different time, one only after the floor's slot
// began (a follower whose Raft apply came late). From the floor on the key
// admits again at once, every window that straddles the floor holds at
// most two limits (the old window's and the new one's), and every window
// after it at most the limit.
func TestResetOnThreeNodes(t *testing.T) {
	tb := table(t, "k", "300/s")
	n := newNet(t, tb, Config{}, "a", "b", "c")
	n.deliver(t0)
	log := admitLog{}
	demand := map[string]int{"a": 6, "b": 6, "c": 6} // 900/s: 3x the limit
	at := n.run(t0, 100, "k", demand, log, nil)
	// Under steady demand at 3x the limit the window refills in lumps: the
	// room a slot frees when it expires is taken within a slot or two.
	// Reset in a gap between lumps, while the window is full, so that an
	// admission after the floor can only be the reset's.
	for cur := window.EpochOf(at); !(log[cur-1] == 0 && log[cur-2] > 0); cur = window.EpochOf(at) {
		at = n.run(at, 1, "k", demand, log, nil)
	}
	floor := window.EpochOf(at) + 2
	reset, err := tb.WithReset(limits.Reset{Pattern: "k", Floor: floor})
	if err != nil {
		t.Fatal(err)
	}
	applyAt := map[string]int64{"a": at, "b": at + 60*ms, "c": floor*int64(limits.Slot) + 70*ms}
	at = n.run(at, 150, "k", demand, log, func(now int64) {
		for id, when := range applyAt {
			if now >= when {
				n.engines[id].SetTable(reset)
				delete(applyAt, id)
			}
		}
	})
	last := window.EpochOf(at) - 1
	if got := log.sum(floor, floor); got == 0 {
		t.Errorf("no admission in the floor's slot: the reset did not take effect at once (slots %v)", log.around(floor))
	}
	if got := log.sum(floor, floor+9); got < 300*90/100 {
		t.Errorf("%d admitted in the second after the floor, want about the limit of 300 (slots %v)", got, log.around(floor))
	}
	if got := log.sum(floor-3, floor-1); got != 0 {
		t.Errorf("%d admitted in the gap before the floor: the reset took effect early (slots %v)", got, log.around(floor))
	}
	if got, s := log.maxWindow(floor-9, floor+9, 10); got > 2*300*103/100 {
		t.Errorf("%d admitted in the window from slot floor%+d, straddling the reset: want at most two limits", got, s-floor)
	}
	if got, s := log.maxWindow(floor, last, 10); got > 300*103/100 {
		t.Errorf("%d admitted in the window from slot floor%+d, after the reset: want at most the limit of 300", got, s-floor)
	}
	st := n.engines["b"].KeyStats(n.now("b", at), "k")
	if st.ResetAt.IsZero() || st.Admitted > 300*103/100 || st.Remaining < 0 {
		t.Errorf("KeyStats after the reset = %+v", st)
	}
}

func (l admitLog) around(f int64) []int {
	var out []int
	for x := f - 5; x < f+10; x++ {
		out = append(out, l[x])
	}
	return out
}

// TestResetReachesAPartitionedNode: c is cut off when the key is reset and
// learns of the reset only after it rejoins (Raft catches it up then).
// Until then it counts more than the others (its slots before the floor),
// never less; once it applies the reset it forgets exactly what the others
// forgot, and the cluster's windows hold the limit throughout.
func TestResetReachesAPartitionedNode(t *testing.T) {
	tb := table(t, "k", "300/s")
	n := newNet(t, tb, Config{}, "a", "b", "c")
	n.deliver(t0)
	log := admitLog{}
	demand := map[string]int{"a": 6, "b": 6, "c": 6}
	at := n.run(t0, 100, "k", demand, log, nil)
	n.split("c")
	at = n.run(at, 25, "k", demand, log, nil) // half a second cut off, not yet fenced
	floor := window.EpochOf(at) + 2
	reset, err := tb.WithReset(limits.Reset{Pattern: "k", Floor: floor})
	if err != nil {
		t.Fatal(err)
	}
	n.engines["a"].SetTable(reset)
	n.engines["b"].SetTable(reset)
	at = n.run(at, 25, "k", demand, log, nil)
	cBefore := n.engines["c"].KeyStats(n.now("c", at), "k")
	if !cBefore.ResetAt.IsZero() {
		t.Fatalf("c applied a reset it never got: %+v", cBefore)
	}
	n.heal("c")
	n.deliver(at)
	at = n.run(at, 10, "k", demand, log, nil)
	n.engines["c"].SetTable(reset) // Raft's entry reaches c after the heal
	at = n.run(at, 150, "k", demand, log, nil)
	last := window.EpochOf(at) - 1
	if got, s := log.maxWindow(floor, last, 10); got > 300*103/100 {
		t.Errorf("%d admitted in the window from slot floor%+d, after the reset: want at most the limit of 300", got, s-floor)
	}
	if got := log.sum(last-9, last); got < 300*95/100 {
		t.Errorf("%d admitted in the last second, want about the limit of 300", got)
	}
	a := n.engines["a"].KeyStats(n.now("a", at), "k")
	c := n.engines["c"].KeyStats(n.now("c", at), "k")
	if c.ResetAt != a.ResetAt || c.ResetAt.IsZero() {
		t.Errorf("c's reset %v, a's %v: want the same floor", c.ResetAt, a.ResetAt)
	}
	if d := c.Admitted - a.Admitted; d < -20 || d > 20 {
		t.Errorf("c sees %d admitted in the window, a %d: they should agree within a tick's admissions", c.Admitted, a.Admitted)
	}
}

// TestKeyStats: rates, window counts and remaining room of a key used on
// two nodes, read on both and on a third that never used it.
func TestKeyStats(t *testing.T) {
	tb := table(t, "k", "600/s", "other:*", "5/s")
	n := newNet(t, tb, Config{}, "a", "b", "c")
	n.deliver(t0)
	log := admitLog{}
	// 150/s on a, 100/s on b: under the limit, all admitted.
	at := n.run(t0, 150, "k", map[string]int{"a": 3, "b": 2}, log, nil)
	for _, id := range []string{"a", "b", "c"} {
		st := n.engines[id].KeyStats(n.now(id, at), "k")
		if st.Rule != "k" || st.Limit != limits.MustParseRate("600/s") || st.Unlimited || st.Node != id {
			t.Errorf("%s: rule %q limit %v unlimited %v node %q", id, st.Rule, st.Limit, st.Unlimited, st.Node)
		}
		if got := st.Cluster.Admitted; got < 250*0.97 || got > 250*1.03 {
			t.Errorf("%s: cluster admitted %.1f/s, want 250/s", id, got)
		}
		// The window is 9 closed slots and the open one, partly filled.
		if got := st.Admitted; got < 220 || got > 258 || st.Remaining != 600-st.Admitted {
			t.Errorf("%s: %d admitted in the window, remaining %d; want 225 to 250 and 600 minus it", id, got, st.Remaining)
		}
		if st.Nodes[0].Node != id || !st.Nodes[0].Self {
			t.Errorf("%s: first node %+v, want itself", id, st.Nodes[0])
		}
		if st.OldestView > 100*time.Millisecond {
			t.Errorf("%s: oldest view %v, want within a few ticks", id, st.OldestView)
		}
		want := map[string]float64{"a": 150, "b": 100, "c": 0}
		for _, nr := range st.Nodes {
			if w := want[nr.Node]; nr.Admitted < w*0.95 || nr.Admitted > w*1.05 || nr.Offered < nr.Admitted || !nr.Member {
				t.Errorf("%s: %s's rates %+v, want admitted %.0f/s", id, nr.Node, nr, w)
			}
		}
	}
	if a := n.engines["a"].KeyStats(n.now("a", at), "k"); a.Local.Admitted < 150*0.95 || a.Local.Admitted > 150*1.05 || a.Quota <= 0 {
		t.Errorf("a: local %+v quota %d, want 150/s admitted and a quota", a.Local, a.Quota)
	}
	u := n.engines["a"].KeyStats(n.now("a", at), "nobody")
	if !u.Unlimited || u.Rule != "" || len(u.Nodes) != 1 || u.Admitted != 0 {
		t.Errorf("an unknown key: %+v", u)
	}
	if got := n.engines["a"].Registry().Len(); got != 1 {
		t.Errorf("%d keys held after KeyStats of unknown keys, want 1: asking must create nothing", got)
	}
}

// TestResetFreesThePeersCounts: after a reset the others' counts before
// the floor no longer hold room. Three nodes kept the window full; after
// the reset only a has demand, and it gets most of the limit within half a
// second instead of waiting for b's and c's old admissions to expire.
func TestResetFreesThePeersCounts(t *testing.T) {
	tb := table(t, "k", "300/s")
	n := newNet(t, tb, Config{}, "a", "b", "c")
	n.deliver(t0)
	log := admitLog{}
	at := n.run(t0, 100, "k", map[string]int{"a": 6, "b": 6, "c": 6}, log, nil)
	for cur := window.EpochOf(at); !(log[cur-1] == 0 && log[cur-2] > 0); cur = window.EpochOf(at) {
		at = n.run(at, 1, "k", map[string]int{"a": 6, "b": 6, "c": 6}, log, nil)
	}
	floor := window.EpochOf(at) + 1
	reset, err := tb.WithReset(limits.Reset{Pattern: "k", Floor: floor})
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range n.engines {
		e.SetTable(reset)
	}
	log = admitLog{}
	n.run(at, 30, "k", map[string]int{"a": 18}, log, nil)
	if got := log.sum(floor, floor+4); got < 300*80/100 {
		t.Errorf("a alone admitted %d in the half second after the reset, want most of the limit of 300 (slots %v)", got, log.around(floor))
	}
}

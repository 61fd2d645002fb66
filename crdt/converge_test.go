package crdt

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"
)

// replica is one simulated node: a store, its clock skew and the ground
// truth of what it counted.
type replica struct {
	s     *Store
	id    OriginID
	skew  int64
	truth map[string]map[int64]uint64 // key -> epoch -> packed counts
}

func (r *replica) local(sim int64) int64 { return sim + r.skew }

// frame is one message on the simulated network.
type frame struct {
	from, to int
	d        Delta
	ack      uint64
}

type network struct {
	r                     *rand.Rand
	queue                 []frame
	loss, dup, reorder    float64
	sent, lost, delivered int
}

func (n *network) send(f frame) {
	n.sent++
	if n.r.Float64() < n.loss {
		n.lost++
		return
	}
	n.queue = append(n.queue, f)
	if n.r.Float64() < n.dup {
		n.queue = append(n.queue, f)
	}
}

// take removes and returns the frames to deliver now, in delivery order:
// mostly in order, some swapped, some held back for later.
func (n *network) take() []frame {
	var now, later []frame
	for _, f := range n.queue {
		if n.r.Float64() < n.reorder/2 {
			later = append(later, f)
		} else {
			now = append(now, f)
		}
	}
	for i := range now {
		if n.r.Float64() < n.reorder {
			j := n.r.IntN(len(now))
			now[i], now[j] = now[j], now[i]
		}
	}
	n.queue = later
	return now
}

type cluster struct {
	t    *testing.T
	r    *rand.Rand
	reps []*replica
	net  *network
	sim  int64
	keys []string
}

func newCluster(t *testing.T, seed uint64, n int, cfg Config) *cluster {
	r := rand.New(rand.NewPCG(seed, 99))
	c := &cluster{t: t, r: r, net: &network{r: r}, sim: t0, keys: []string{"k1", "k2", "k3", "user:7"}}
	for i := range n {
		id := OriginID{Node: fmt.Sprintf("n%d", i), Incarnation: r.Uint64() | 1}
		c.reps = append(c.reps, &replica{
			s: mustStore(t, id, cfg), id: id,
			skew:  r.Int64N(4*sec) - 2*sec,
			truth: map[string]map[int64]uint64{},
		})
	}
	return c
}

// count makes replica i admit and be offered some requests on key now.
func (c *cluster) count(i int, key string, admitted, offered uint32) {
	rep := c.reps[i]
	e := slotOf(rep.local(c.sim))
	if rep.truth[key] == nil {
		rep.truth[key] = map[int64]uint64{}
	}
	v := rep.truth[key][e]
	rep.truth[key][e] = pack(uint32(v>>32)+admitted, uint32(v)+offered)
}

// mirror records the open and just-closed slot of every key of replica i,
// as the node's sync loop does, then its asOf.
func (c *cluster) mirror(i int) {
	rep := c.reps[i]
	now := rep.local(c.sim)
	e := slotOf(now)
	for key, slots := range rep.truth {
		var sc []SlotCounts
		for _, ep := range []int64{e - 1, e} {
			if v := slots[ep]; v != 0 {
				sc = append(sc, SlotCounts{Epoch: ep, Admitted: uint32(v >> 32), Offered: uint32(v)})
			}
		}
		if err := rep.s.RecordOwn(key, sc); err != nil {
			c.t.Fatalf("RecordOwn: %v", err)
		}
	}
	rep.s.SetOwnAsOf(now)
}

// tick runs one sync interval of every replica: mirror, close the
// interval, send deltas to every peer.
func (c *cluster) tick() {
	for i, rep := range c.reps {
		c.mirror(i)
		rep.s.Tick()
		for j, peer := range c.reps {
			if i == j {
				continue
			}
			parts := rep.s.DeltaFor(peer.id.Node, rep.local(c.sim))
			for _, d := range parts {
				if err := d.Validate(); err != nil {
					c.t.Fatalf("DeltaFor built an invalid delta: %v", err)
				}
				c.net.send(frame{from: i, to: j, d: d, ack: rep.s.AckFor(peer.id.Node)})
			}
			rep.s.Sent(peer.id.Node, len(parts))
		}
	}
}

func (c *cluster) deliver() {
	for _, f := range c.net.take() {
		to := c.reps[f.to]
		if _, err := to.s.Merge(f.d, to.local(c.sim)); err != nil {
			c.t.Fatalf("Merge of %v's delta at %v: %v", c.reps[f.from].id, to.id, err)
		}
		to.s.Ack(c.reps[f.from].id.Node, f.ack)
		c.net.delivered++
	}
}

// check verifies that every replica's view of every other replica equals
// that replica's ground truth, read at the slot of its last asOf.
func (c *cluster) check(what string, window, demand int) {
	c.t.Helper()
	for _, rep := range c.reps {
		for _, key := range c.keys {
			views := viewsOf(rep.s, key, window, demand, rep.local(c.sim))
			for _, o := range c.reps {
				if o == rep {
					continue
				}
				sigma := slotOf(o.s.own.asOf)
				var want View
				for e, v := range o.truth[key] {
					if e > sigma-int64(window) && e <= sigma {
						want.Admitted += admittedOf(v)
					}
					if e >= sigma-int64(demand) && e < sigma {
						want.Demand += offeredOf(v)
					}
				}
				got := views[o.id]
				if got.Admitted != want.Admitted || got.Demand != want.Demand || (got != View{} && got.AsOfSlot != sigma) {
					c.t.Fatalf("%s: %v's view of %v/%s = %+v; want admitted %d, demand %d at slot %d",
						what, rep.id, o.id, key, got, want.Admitted, want.Demand, sigma)
				}
			}
		}
	}
}

// TestReplicasConverge runs 3 to 5 replicas that count requests and
// exchange deltas over a network that loses, duplicates and reorders
// frames, with small parts so that deltas split, and GC running. After one
// final stretch of lossless, in-order sync, every view of every origin on
// every replica equals that origin's own counts.
func TestReplicasConverge(t *testing.T) {
	for seed := uint64(1); seed <= uint64(seeds(40)); seed++ {
		cfg := Config{
			Horizon:            func(string) int { return 30 },
			DeltaIntervals:     8,
			MaxEntriesPerDelta: 1 + int(seed%9),
		}
		c := newCluster(t, seed, 3+int(seed%3), cfg)
		c.net.loss, c.net.dup, c.net.reorder = 0.2*c.r.Float64(), 0.2*c.r.Float64(), 0.3*c.r.Float64()
		for step := 0; step < 300; step++ {
			c.sim += 20 * ms
			for i := range c.reps {
				if c.r.IntN(3) > 0 {
					a := uint32(c.r.IntN(20))
					c.count(i, c.keys[c.r.IntN(len(c.keys))], a, a+uint32(c.r.IntN(5)))
				}
			}
			c.tick()
			c.deliver()
			if step%25 == 0 {
				for _, rep := range c.reps {
					rep.s.GC(rep.local(c.sim))
				}
			}
		}
		// Lossless, in order, until every delta interval that could be
		// unacknowledged has been resent.
		c.net.loss, c.net.dup, c.net.reorder = 0, 0, 0
		c.deliver()
		for range cfg.DeltaIntervals + 6 {
			c.sim += 20 * ms
			c.tick()
			c.deliver()
		}
		for _, w := range []int{1, 10, 30} {
			c.check(fmt.Sprintf("seed %d (%d replicas, loss %.2f, dup %.2f, reorder %.2f, %d/%d frames lost)",
				seed, len(c.reps), c.net.loss, c.net.dup, c.net.reorder, c.net.lost, c.net.sent), w, 5)
		}
	}
}

// TestRestartCountsPreviousIncarnation is the restart requirement: node a
// admits requests and syncs them to b and c, then is killed (its store is
// lost) and starts again as a new incarnation. b's full state gives the new
// incarnation its previous life's slots as another origin: nothing lost,
// nothing counted twice, and they expire like any silent origin's.
func TestRestartCountsPreviousIncarnation(t *testing.T) {
	c := newCluster(t, 7, 3, Config{})
	for step := 0; step < 30; step++ { // 600 ms of traffic on a, b, c
		c.sim += 20 * ms
		c.count(0, "k1", 10, 12)
		c.count(1, "k1", 3, 3)
		c.count(2, "k1", 1, 1)
		c.tick()
		c.deliver()
	}
	c.sim += 20 * ms
	c.tick()
	c.deliver()
	total := func(rep *replica) int64 {
		var n int64
		for _, v := range rep.truth["k1"] {
			n += admittedOf(v)
		}
		return n
	}
	old := c.reps[0]
	before := total(old)
	if before != 300 {
		t.Fatalf("a admitted %d before the crash, want 300", before)
	}

	// kill -9: a's store and counts are gone; a new incarnation starts.
	newID := OriginID{Node: old.id.Node, Incarnation: old.id.Incarnation + 1}
	fresh := &replica{s: mustStore(t, newID, Config{}), id: newID, skew: old.skew, truth: map[string]map[int64]uint64{}}
	c.reps[0] = fresh
	for _, rep := range c.reps[1:] {
		rep.s.ResetPeer(newID.Node) // the connection was re-established
	}
	c.sim += 20 * ms
	c.tick()
	c.deliver()
	c.count(0, "k1", 4, 4) // the new incarnation admits from zero
	c.sim += 20 * ms
	c.tick()
	c.deliver()

	// The new incarnation sees its previous life as another origin, with
	// exactly what it admitted, plus b and c; nothing of it is its own.
	views := viewsOf(fresh.s, "k1", 600, 5, fresh.local(c.sim))
	if got := views[old.id].Admitted; got != before {
		t.Errorf("new incarnation's view of the old one = %d admitted, want %d", got, before)
	}
	var sum int64
	for _, v := range views {
		sum += v.Admitted
	}
	own := total(fresh)
	want := before + total(c.reps[1]) + total(c.reps[2])
	if sum != want {
		t.Errorf("new incarnation sees %d admitted by others, want %d (old incarnation %d + b + c)", sum, want, before)
	}
	// b counts both incarnations separately: old slots once, new ones once.
	bv := viewsOf(c.reps[1].s, "k1", 600, 5, c.reps[1].local(c.sim))
	if bv[old.id].Admitted != before || bv[newID].Admitted != own {
		t.Errorf("b's views: old incarnation %d, new %d; want %d and %d", bv[old.id].Admitted, bv[newID].Admitted, before, own)
	}
	// The old incarnation is silent: its view slides after the grace and
	// empties within a window (10 slots here), then GC forgets it.
	later := fresh.local(c.sim) + int64(DefaultGrace) + 2*sec
	if v := viewsOf(fresh.s, "k1", 10, 5, later)[old.id]; v.Admitted != 0 {
		t.Errorf("old incarnation's 1 s view 2 s after it fell silent = %d, want 0", v.Admitted)
	}
	muchLater := later + int64(DefaultForgetAfter) + int64(DefaultHorizon)*slot
	fresh.s.GC(muchLater)
	for _, o := range fresh.s.Origins() {
		if o.ID == old.id {
			t.Errorf("old incarnation still known after GC at +%v: %+v", time.Duration(muchLater-fresh.local(c.sim)), o)
		}
	}
}

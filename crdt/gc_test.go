package crdt

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"
)

// honestWorld plays origins that report their own clocks (with skew), fall
// silent and come back, and relayers that pass on what they heard with
// honest ages (never younger than the truth).
type honestWorld struct {
	r      *rand.Rand
	ids    []OriginID
	skew   []int64
	alive  []bool
	lastAt []int64 // local time of the origin's last report
	asOf   []int64
	truth  []map[string]map[int64]uint64
	keys   []string
}

func newHonestWorld(seed uint64) *honestWorld {
	r := rand.New(rand.NewPCG(seed, 5))
	w := &honestWorld{r: r, keys: []string{"k1", "k2", "k3"}}
	for i := range 5 {
		w.ids = append(w.ids, OriginID{Node: fmt.Sprintf("o%d", i), Incarnation: uint64(i + 1)})
		w.skew = append(w.skew, r.Int64N(10*sec)-5*sec)
		w.alive = append(w.alive, true)
		w.lastAt = append(w.lastAt, 0)
		w.asOf = append(w.asOf, 0)
		w.truth = append(w.truth, map[string]map[int64]uint64{})
	}
	return w
}

// report makes origin i count and report at local time now, delivered after
// a small delay.
func (w *honestWorld) report(i int, now int64) Delta {
	sent := now - w.r.Int64N(30*ms)
	asOf := max(sent+w.skew[i], w.asOf[i])
	e := slotOf(asOf)
	key := w.keys[w.r.IntN(len(w.keys))]
	if w.truth[i][key] == nil {
		w.truth[i][key] = map[int64]uint64{}
	}
	v := w.truth[i][key][e]
	a := uint32(w.r.IntN(9))
	w.truth[i][key][e] = pack(uint32(v>>32)+a, uint32(v)+a+uint32(w.r.IntN(3)))
	w.asOf[i], w.lastAt[i] = asOf, sent
	d := Delta{From: w.ids[i], Seq: 1, Basis: 1, Parts: 1, Origins: []OriginState{{ID: w.ids[i], AsOf: asOf}}}
	for key, slots := range w.truth[i] {
		for _, ep := range []int64{e - 1, e} {
			if v := slots[ep]; v != 0 {
				d.Entries = append(d.Entries, Entry{Key: key, Epoch: ep, Admitted: uint32(v >> 32), Offered: uint32(v)})
			}
		}
	}
	return d
}

// relay is a full state from live origin i, passing on other origins'
// last reports with their slots, aged honestly.
func (w *honestWorld) relay(i int, now int64) Delta {
	d := w.report(i, now)
	d.Full, d.Basis = true, 0
	for j := range w.ids {
		if j == i || w.lastAt[j] == 0 || w.r.IntN(2) == 0 {
			continue
		}
		// The relayer heard j's report some time after j sent it.
		heard := min(w.lastAt[j]+w.r.Int64N(50*ms), now)
		d.Origins = append(d.Origins, OriginState{ID: w.ids[j], AsOf: w.asOf[j], Age: now - heard})
		oi := len(d.Origins) - 1
		for key, slots := range w.truth[j] {
			for ep, v := range slots {
				if ep > slotOf(w.asOf[j])-25 {
					d.Entries = append(d.Entries, Entry{Origin: oi, Key: key, Epoch: ep, Admitted: uint32(v >> 32), Offered: uint32(v)})
				}
			}
		}
	}
	return d
}

// TestGCNeverLowersLiveViews feeds two stores the same deltas and runs GC
// on one of them at random moments: every view within the horizon stays
// equal to the other store's after every step, while origins report, fall
// silent for longer than ForgetAfter, come back, and are relayed.
func TestGCNeverLowersLiveViews(t *testing.T) {
	const horizon = 20
	cfg := Config{Horizon: func(string) int { return horizon }, ForgetAfter: 4 * time.Second}
	for seed := uint64(1); seed <= uint64(seeds(60)); seed++ {
		w := newHonestWorld(seed)
		gced, kept := mustStore(t, idA, cfg), mustStore(t, idA, cfg)
		now := t0
		collected := GCStats{}
		for step := 0; step < 600; step++ {
			now += w.r.Int64N(200 * ms)
			i := w.r.IntN(len(w.ids))
			switch op := w.r.IntN(20); {
			case op == 0:
				w.alive[i] = !w.alive[i] // dies or comes back
			case op < 4 && w.alive[i]:
				d := w.relay(i, now)
				mustMerge(t, gced, d, now)
				mustMerge(t, kept, d, now)
			case op < 16 && w.alive[i]:
				d := w.report(i, now)
				mustMerge(t, gced, d, now)
				mustMerge(t, kept, d, now)
			case op >= 16:
				st := gced.GC(now)
				collected.Slots += st.Slots
				collected.Origins += st.Origins
				collected.Keys += st.Keys
			}
			window, demand := 1+w.r.IntN(horizon), w.r.IntN(horizon+1)
			for _, key := range w.keys {
				got, want := viewsOf(gced, key, window, demand, now), viewsOf(kept, key, window, demand, now)
				for id, v := range want {
					g := got[id]
					if v.Admitted == 0 && v.Demand == 0 && g.Admitted == 0 && g.Demand == 0 {
						continue
					}
					if g.Admitted != v.Admitted || g.Demand != v.Demand || g.AsOfSlot != v.AsOfSlot {
						t.Fatalf("seed %d step %d: %v/%s window %d demand %d: with GC %+v, without %+v", seed, step, id, key, window, demand, g, v)
					}
				}
				for id, g := range got {
					if _, ok := want[id]; !ok {
						t.Fatalf("seed %d step %d: %v/%s: view %+v only in the collected store", seed, step, id, key, g)
					}
				}
			}
		}
		if seed == 1 && (collected.Slots == 0 || collected.Origins == 0 || collected.Keys == 0) {
			t.Errorf("seed 1: GC collected %+v; the test should exercise slots, keys and origins", collected)
		}
	}
}

// TestKeyBytesBounded: whatever slots arrive for a key (every slot over ten
// horizons, from several origins, far behind and ahead), the memory a key
// holds stays within origins × (horizon + MaxLeadSlots + 1) slots of at most
// 8 bytes (or sparseMax slots of 16) plus a fixed overhead per origin,
// before and after GC; with counts under 256, a dense slot takes 2 bytes.
func TestKeyBytesBounded(t *testing.T) {
	for _, horizon := range []int{1, 15, DefaultHorizon} {
		s := mustStore(t, idA, Config{Horizon: func(string) int { return horizon }})
		ids := []OriginID{idB, idC, idD}
		perSeries := seriesSize + max(16*sparseMax, denseSize+8*(horizon+MaxLeadSlots+1))
		bound := len(ids)*perSeries + keyStateSize + len("k")
		now := t0
		for step := range 10 * (horizon + MaxLeadSlots) {
			now += slot
			for _, id := range ids {
				e := slotOf(now)
				d := normal(id, now, ent("k", e, 1, 1), ent("k", e-int64(step%(horizon+1)), 2, 2), ent("k", e+MaxLeadSlots, 3, 3))
				mustMerge(t, s, d, now)
			}
			if got := s.keyBytes("k"); got > bound {
				t.Fatalf("horizon %d step %d: keyBytes = %d, bound %d", horizon, step, got, bound)
			}
		}
		s.GC(now)
		if got := s.keyBytes("k"); got > bound || got == 0 {
			t.Fatalf("horizon %d: keyBytes after GC = %d, want (0, %d]", horizon, got, bound)
		}
		if horizon == DefaultHorizon {
			per := s.keyBytes("k") / len(ids)
			t.Logf("a key active on %d origins for a full 60 s window: %d bytes per origin (%d slots + %d overhead)",
				len(ids), per, horizon+MaxLeadSlots+1, seriesSize+denseSize)
			if want := 2*(horizon+MaxLeadSlots+1) + 8 + seriesSize + denseSize + (keyStateSize+len("k"))/len(ids); per > want {
				t.Errorf("a 60 s key with counts under 256 holds %d bytes per origin, want at most %d (2 bytes a slot)", per, want)
			}
		}
		// Long after everyone fell silent, GC frees the key.
		s.GC(now + int64(DefaultForgetAfter) + int64(horizon+MaxLeadSlots)*slot + sec)
		if got := s.keyBytes("k"); got != 0 {
			t.Errorf("horizon %d: keyBytes long after silence = %d, want 0", horizon, got)
		}
		if s.Bytes() <= 0 {
			t.Errorf("Bytes = %d", s.Bytes())
		}
	}
}

// TestForgottenOriginsIndexReused: an origin GC forgot gives its index to
// the next new origin, whose series and views are its own; the own
// origin's index is never reused.
func TestForgottenOriginsIndexReused(t *testing.T) {
	s := mustStore(t, idA, Config{Horizon: func(string) int { return 10 }, ForgetAfter: time.Second})
	mustMerge(t, s, normal(idB, t0, ent("k", slotOf(t0), 3, 4)), t0)
	idxB := s.origins[idB].idx
	later := t0 + 10*sec
	s.GC(later)
	if _, ok := s.origins[idB]; ok {
		t.Fatalf("origin %v still known after GC long after its last word", idB)
	}
	mustMerge(t, s, normal(idC, later, ent("k", slotOf(later), 5, 6)), later)
	if got := s.origins[idC].idx; got != idxB {
		t.Errorf("new origin %v has index %d, want the freed %d", idC, got, idxB)
	}
	views := viewsOf(s, "k", 10, 5, later)
	if _, ok := views[idB]; ok || len(views) != 1 || views[idC].Admitted != 5 {
		t.Errorf("views after the reuse = %v, want only %v with 5 admitted", views, idC)
	}
	if s.originOf(&series{oi: 0}) != s.own {
		t.Error("index 0 is not the own origin")
	}
}

package crdt

import (
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"
)

// snapshot renders everything a merge may change, to check that a rejected
// delta changed nothing.
func snapshot(s *Store) string {
	var b strings.Builder
	for _, o := range s.Origins() {
		fmt.Fprintf(&b, "%+v\n", o)
	}
	p := project(s)
	fmt.Fprintf(&b, "%v\n%v\n%d keys\n", p.asOf, p.slots, len(s.keys))
	for _, name := range slices.Sorted(maps.Keys(s.recv)) {
		fmt.Fprintf(&b, "recv %s %+v\n", name, *s.recv[name])
	}
	return b.String()
}

func TestMergeRejectsBadDeltas(t *testing.T) {
	e0 := slotOf(t0)
	valid := func() Delta {
		return Delta{From: idB, Seq: 7, Full: true, Parts: 1,
			Origins: []OriginState{{ID: idB, AsOf: t0}, {ID: idC, AsOf: t0 - sec, Age: 5 * ms}},
			Entries: []Entry{
				{Origin: 0, Key: "k", Epoch: e0, Admitted: 1, Offered: 2},
				{Origin: 1, Key: "k", Epoch: e0 - 10, Admitted: 3, Offered: 3},
				{Origin: 1, Key: "j", Epoch: e0 - 11, Admitted: 0, Offered: 4},
			}}
	}
	tests := []struct {
		name     string
		mutate   func(d *Delta)
		wantErr  error
		mentions string
	}{
		{"from self", func(d *Delta) { d.Origins[0].ID, d.From = idA, idA }, ErrFromSelf, "own origin"},
		{"normal delta from self", func(d *Delta) {
			d.Full, d.Basis, d.From, d.Origins, d.Entries = false, 1, idA, []OriginState{{ID: idA, AsOf: t0}}, []Entry{{Key: "k", Epoch: e0, Admitted: 1, Offered: 1}}
		}, ErrFromSelf, "own origin"},
		{"epoch zero", func(d *Delta) { d.Entries[1].Epoch = 0 }, ErrInvalidDelta, "epoch 0 out of range"},
		{"epoch negative", func(d *Delta) { d.Entries[2].Epoch = -5 }, ErrInvalidDelta, "epoch -5"},
		{"epoch beyond MaxEpoch", func(d *Delta) { d.Entries[0].Epoch = MaxEpoch + 1 }, ErrInvalidDelta, "out of range"},
		{"epoch ahead of asOf", func(d *Delta) { d.Entries[0].Epoch = e0 + MaxLeadSlots + 1 }, ErrInvalidDelta, "ahead of its origin's asOf"},
		{"origin index negative", func(d *Delta) { d.Entries[1].Origin = -1 }, ErrInvalidDelta, "origin index -1"},
		{"origin index past the end", func(d *Delta) { d.Entries[2].Origin = 2 }, ErrInvalidDelta, "origin index 2"},
		{"admitted above offered", func(d *Delta) { d.Entries[0].Admitted = 3 }, ErrInvalidDelta, "admitted 3 exceeds offered 2"},
		{"empty key", func(d *Delta) { d.Entries[1].Key = "" }, ErrInvalidDelta, "empty"},
		{"key with space", func(d *Delta) { d.Entries[2].Key = "a b" }, ErrInvalidDelta, "0x20"},
		{"key too long", func(d *Delta) { d.Entries[2].Key = strings.Repeat("x", 257) }, ErrInvalidDelta, "257 bytes"},
		{"asOf negative", func(d *Delta) { d.Origins[1].AsOf = -1 }, ErrInvalidDelta, "asOf -1"},
		{"asOf beyond MaxTime", func(d *Delta) { d.Origins[0].AsOf = MaxTime + 1 }, ErrInvalidDelta, "asOf"},
		{"age negative", func(d *Delta) { d.Origins[1].Age = -1 }, ErrInvalidDelta, "age -1"},
		{"age beyond MaxAge", func(d *Delta) { d.Origins[1].Age = MaxAge + 1 }, ErrInvalidDelta, "age"},
		{"sender's own state aged", func(d *Delta) { d.Origins[0].Age = 1 }, ErrInvalidDelta, "must be 0"},
		{"sender missing", func(d *Delta) { d.From = idD }, ErrInvalidDelta, "not among"},
		{"origin twice", func(d *Delta) { d.Origins[1].ID = idB }, ErrInvalidDelta, "twice"},
		{"incarnation zero", func(d *Delta) { d.Origins[1].ID.Incarnation = 0 }, ErrInvalidOrigin, "incarnation 0"},
		{"bad node ID", func(d *Delta) { d.Origins[1].ID.Node = "c\n" }, ErrInvalidOrigin, "node ID"},
		{"node ID too long", func(d *Delta) { d.Origins[1].ID.Node = strings.Repeat("n", 65) }, ErrInvalidOrigin, "65 bytes"},
		{"full state with a basis", func(d *Delta) { d.Basis = 1 }, ErrInvalidDelta, "basis 1"},
		{"normal delta without basis", func(d *Delta) { d.Full, d.Origins, d.Entries = false, d.Origins[:1], d.Entries[:1] }, ErrInvalidDelta, "basis 0"},
		{"basis past seq", func(d *Delta) { d.Full, d.Basis, d.Origins, d.Entries = false, 8, d.Origins[:1], d.Entries[:1] }, ErrInvalidDelta, "basis 8"},
		{"no origins", func(d *Delta) { d.Origins = nil; d.Entries = nil }, ErrInvalidDelta, "0 origins"},
		{"parts zero", func(d *Delta) { d.Parts = 0 }, ErrInvalidDelta, "parts 0"},
		{"part past parts", func(d *Delta) { d.Part = 1 }, ErrInvalidDelta, "part 1"},
		{"too many entries", func(d *Delta) {
			for len(d.Entries) <= MaxDeltaEntries {
				d.Entries = append(d.Entries, d.Entries[0])
			}
		}, ErrInvalidDelta, "entries"},
	}
	// Start from a store that already holds something, so "unchanged" is
	// not trivially true.
	s := mustStore(t, idA, Config{})
	mustMerge(t, s, normal(idB, t0-2*sec, ent("k", e0-20, 5, 5)), t0-2*sec)
	mustMerge(t, s, normal(idD, t0-sec, ent("k", e0-10, 1, 9)), t0-sec)
	d := valid()
	if err := d.Validate(); err != nil {
		t.Fatalf("the valid delta does not validate: %v", err)
	}
	for i, tt := range tests {
		before := snapshot(s)
		d := valid()
		tt.mutate(&d)
		_, err := s.Merge(d, t0)
		if err == nil {
			t.Errorf("step %d (%s): Merge = nil error, want %v", i, tt.name, tt.wantErr)
			continue
		}
		if !errors.Is(err, tt.wantErr) || !strings.Contains(err.Error(), tt.mentions) {
			t.Errorf("step %d (%s): Merge error %q, want %v mentioning %q", i, tt.name, err, tt.wantErr, tt.mentions)
		}
		if after := snapshot(s); after != before {
			t.Errorf("step %d (%s): rejected delta changed the store:\n%s\nwant\n%s", i, tt.name, after, before)
		}
	}
	// The valid delta is accepted.
	if _, err := s.Merge(valid(), t0); err != nil {
		t.Fatalf("Merge(valid) = %v", err)
	}
}

// TestMergeIgnoresOwnOriginInFullState: a peer's full state relays the
// receiver's own slots back; they are skipped and counted, and counted as
// ahead only if they exceed what the store holds.
func TestMergeIgnoresOwnOriginInFullState(t *testing.T) {
	e0 := slotOf(t0)
	s := mustStore(t, idA, Config{})
	s.SetOwnAsOf(t0)
	if err := s.RecordOwn("k", []SlotCounts{{Epoch: e0, Admitted: 5, Offered: 5}}); err != nil {
		t.Fatal(err)
	}
	d := Delta{From: idB, Seq: 1, Full: true, Parts: 1,
		Origins: []OriginState{{ID: idB, AsOf: t0}, {ID: idA, AsOf: t0 + sec, Age: 0}},
		Entries: []Entry{
			{Origin: 1, Key: "k", Epoch: e0, Admitted: 5, Offered: 5},
			{Origin: 1, Key: "k", Epoch: e0 + 1, Admitted: 1, Offered: 1},
			{Origin: 0, Key: "k", Epoch: e0, Admitted: 2, Offered: 2},
		}}
	st := mustMerge(t, s, d, t0)
	if st.Self != 2 || st.SelfAhead != 1 || st.Changed != 1 {
		t.Errorf("MergeStats = %+v, want Self 2, SelfAhead 1, Changed 1", st)
	}
	if got := s.own.asOf; got != t0 {
		t.Errorf("own asOf = %d after a relayed own state, want %d (unchanged)", got, t0)
	}
	if got := s.keys["k"].seriesOf(s.own).get(e0 + 1); got != 0 {
		t.Errorf("own slot e0+1 = %s, want nothing: relayed own entries are never accepted", fmtPacked(got))
	}
}

// genWorld makes random deltas from a few origins with skewed clocks, all
// honest: an origin's asOf follows its clock, its entries lie at most one
// slot past its asOf (now and then MaxLeadSlots, the most allowed), relayers pass on other origins' states with ages no
// larger than the grace, so that every merge order yields the same σ.
type genWorld struct {
	r      *rand.Rand
	ids    []OriginID
	skew   []int64
	keys   []string
	grace  int64
	relays bool
}

func (g *genWorld) delta(now int64) Delta {
	i := g.r.IntN(len(g.ids))
	// The report was made some time before now, by the origin's clock.
	asOf := func(j int) int64 { return now - int64(g.r.IntN(30))*sec/10 + g.skew[j] }
	d := Delta{From: g.ids[i], Seq: 1, Basis: 1, Parts: 1, Origins: []OriginState{{ID: g.ids[i], AsOf: asOf(i)}}}
	if g.relays && g.r.IntN(3) == 0 {
		d.Full, d.Basis = true, 0
		for j := range g.ids {
			if j != i && g.r.IntN(2) == 0 {
				d.Origins = append(d.Origins, OriginState{ID: g.ids[j], AsOf: asOf(j), Age: g.r.Int64N(g.grace + 1)})
			}
		}
	}
	for n := g.r.IntN(12); n > 0; n-- {
		oi := g.r.IntN(len(d.Origins))
		top := slotOf(d.Origins[oi].AsOf) + 1
		if g.r.IntN(8) == 0 {
			top += MaxLeadSlots - 1 // as far ahead as a delta may be
		}
		a := uint32(g.r.IntN(50))
		if g.r.IntN(10) == 0 {
			a = uint32(g.r.IntN(100_000)) // wider than a byte, or two
		}
		d.Entries = append(d.Entries, Entry{
			Origin: oi, Key: g.keys[g.r.IntN(len(g.keys))], Epoch: top - int64(g.r.IntN(40)),
			Admitted: a, Offered: a + uint32(g.r.IntN(20)),
		})
	}
	for n := g.r.IntN(4); n > 0; n-- {
		oi := g.r.IntN(len(d.Origins))
		top := slotOf(d.Origins[oi].AsOf) + 1
		// An origin numbers its announcements in time order: a later
		// epoch has a higher number, and one number has one value.
		e, q := top-int64(g.r.IntN(40)), uint32(g.r.IntN(100))
		d.Quotas = append(d.Quotas, QuotaEntry{
			Origin: oi, Key: g.keys[g.r.IntN(len(g.keys))], Epoch: e, Seq: uint64(e)*128 + uint64(q), Quota: q,
		})
	}
	return d
}

func newWorld(seed uint64) *genWorld {
	r := rand.New(rand.NewPCG(seed, 1))
	return &genWorld{
		r:      r,
		ids:    []OriginID{idB, idC, idD, {"e", 0xe1}},
		skew:   []int64{0, 3 * sec, -7 * sec, 250 * ms},
		keys:   []string{"k1", "k2", "user:42"},
		grace:  int64(DefaultGrace),
		relays: true,
	}
}

const algebraHorizon = 20

var algebraConfig = Config{Horizon: func(string) int { return algebraHorizon }}

func storeOf(t *testing.T, self OriginID, deltas []Delta, now int64) *Store {
	t.Helper()
	s := mustStore(t, self, algebraConfig)
	for _, d := range deltas {
		mustMerge(t, s, d, now)
	}
	return s
}

// checkSame compares two stores' projections, origin clocks and views.
func checkSame(t *testing.T, what string, got, want *Store, now int64) {
	t.Helper()
	if p, q := project(got), project(want); !p.equal(q) {
		t.Fatalf("%s: projections differ:%s", what, p.diff(q))
	}
	for _, key := range []string{"k1", "k2", "user:42"} {
		for _, w := range []int{1, 7, algebraHorizon} {
			gv, wv := viewsOf(got, key, w, 5, now), viewsOf(want, key, w, 5, now)
			for id, v := range wv {
				if v.Admitted == 0 && v.Demand == 0 {
					continue
				}
				if gv[id] != v {
					t.Fatalf("%s: view of %v/%s window %d = %+v, want %+v", what, id, key, w, gv[id], v)
				}
			}
		}
	}
}

// TestMergeAlgebra: merging is idempotent, commutative and associative on
// the replicated projection (every origin's asOf and its slots within the
// horizon), and views agree, over many random sets of deltas.
func TestMergeAlgebra(t *testing.T) {
	iterations := seeds(300)
	now := t0 + 40*sec
	for seed := uint64(1); seed <= uint64(iterations); seed++ {
		g := newWorld(seed)
		deltas := make([]Delta, 1+g.r.IntN(25))
		for i := range deltas {
			deltas[i] = g.delta(now)
		}
		base := storeOf(t, idA, deltas, now)

		// Idempotent: everything merged twice more.
		twice := storeOf(t, idA, deltas, now)
		for _, d := range deltas {
			mustMerge(t, twice, d, now)
		}
		checkSame(t, fmt.Sprintf("seed %d: idempotence", seed), twice, base, now)

		// Commutative: any order, with duplicates interleaved.
		perm := append([]Delta(nil), deltas...)
		g.r.Shuffle(len(perm), func(i, j int) { perm[i], perm[j] = perm[j], perm[i] })
		for i := g.r.IntN(5); i > 0; i-- {
			perm = append(perm, deltas[g.r.IntN(len(deltas))])
		}
		checkSame(t, fmt.Sprintf("seed %d: commutativity", seed), storeOf(t, idA, perm, now), base, now)

		// Associative: (X ⊔ Y) ⊔ W = X ⊔ (Y ⊔ W), joining stores through
		// their full states.
		i, j := g.r.IntN(len(deltas)+1), g.r.IntN(len(deltas)+1)
		i, j = min(i, j), max(i, j)
		x := storeOf(t, OriginID{"x", 1}, deltas[:i], now)
		y := storeOf(t, OriginID{"y", 1}, deltas[i:j], now)
		w := storeOf(t, OriginID{"w", 1}, deltas[j:], now)
		left := joinStores(t, OriginID{"l", 1}, now, joinStores(t, OriginID{"xy", 1}, now, x, y), w)
		right := joinStores(t, OriginID{"r", 1}, now, x, joinStores(t, OriginID{"yw", 1}, now, y, w))
		checkSame(t, fmt.Sprintf("seed %d: associativity", seed), left, right, now)
		checkSame(t, fmt.Sprintf("seed %d: join of parts", seed), left, base, now)
	}
}

// joinStores returns a new store holding the join of the given stores,
// each shipped as a full state.
func joinStores(t *testing.T, self OriginID, now int64, stores ...*Store) *Store {
	t.Helper()
	z := mustStore(t, self, algebraConfig)
	for _, s := range stores {
		for _, d := range s.DeltaFor(self.Node, now) {
			mustMerge(t, z, d, now)
		}
	}
	return z
}

// TestMergeKeepsViewCachesExact interleaves merges and view reads at
// advancing times and checks every cached view against one computed from
// scratch by a fresh store.
func TestMergeKeepsViewCachesExact(t *testing.T) {
	for seed := uint64(1); seed <= 50; seed++ {
		g := newWorld(seed)
		s := mustStore(t, idA, algebraConfig)
		var all []Delta
		now := t0
		for step := 0; step < 200; step++ {
			now += int64(g.r.IntN(60)) * ms
			d := g.delta(now)
			all = append(all, d)
			mustMerge(t, s, d, now)
			key := g.keys[g.r.IntN(len(g.keys))]
			window, demand := 1+g.r.IntN(algebraHorizon), g.r.IntN(6)
			got := viewsOf(s, key, window, demand, now)
			for id, v := range got {
				sr := s.keys[key].seriesOf(s.origins[id])
				want := View{
					Admitted: sr.sum(v.AsOfSlot-int64(window)+1, v.AsOfSlot, admittedOf),
					Demand:   sr.sum(v.AsOfSlot-int64(demand), v.AsOfSlot-1, offeredOf),
					AsOfSlot: v.AsOfSlot, Age: v.Age,
				}
				if sr.qSeq > 0 {
					want.Quota, want.Announced = int64(sr.quota), true
				}
				if v != want {
					t.Fatalf("seed %d step %d: cached view of %v/%s = %+v, fresh sum %+v", seed, step, id, key, v, want)
				}
				// The demand read lies among the slots that keep their
				// offered counts: what a series forgets, no view reads.
				if _, hi := sr.span(); !sr.empty() && demand > 0 && v.AsOfSlot-int64(demand) <= hi-recentSlots {
					t.Fatalf("seed %d step %d: view of %v/%s reads demand from slot %d, newest %d keeps offered from %d", seed, step, id, key, v.AsOfSlot-int64(demand), hi, hi-recentSlots+1)
				}
			}
		}
		_ = time.Second
	}
}

package crdt

import (
	"testing"
	"time"
)

// TestViewSteps walks one store through reports of origin b (whose clock is
// 5 s ahead of the store's: skew never matters, views read b's slots in b's
// numbering) and of origin c relayed by b, checking views at fixed instants.
// Window 10 slots, demand 5 slots, grace 90 ms.
func TestViewSteps(t *testing.T) {
	const skew = 5 * sec
	b0 := slotOf(t0 + skew) // b's slot at local t0; t0+skew is on a slot edge
	c0 := b0 + 1000         // c's slot numbering is far from both
	at := func(msec int64) int64 { return t0 + msec*ms }
	full := func(now int64, from OriginID, states []OriginState, entries ...Entry) Delta {
		return Delta{From: from, Seq: 1, Full: true, Parts: 1, Origins: states, Entries: entries}
	}
	type want struct {
		adm, dem, slot int64
		age            time.Duration
	}
	steps := []struct {
		name  string
		now   int64
		merge *Delta
		view  map[OriginID]want // nil: no view check
	}{
		{name: "first report", now: at(0), merge: ptr(normal(idB, t0+skew,
			ent("k", b0-10, 7, 9), // just outside the window (b0-10, b0]
			ent("k", b0-9, 1, 2),
			ent("k", b0-1, 3, 10),
			ent("k", b0, 4, 4))),
			view: map[OriginID]want{idB: {adm: 1 + 3 + 4, dem: 10, slot: b0}}},
		{name: "frozen within grace", now: at(50), view: map[OriginID]want{idB: {8, 10, b0, 50 * time.Millisecond}}},
		{name: "frozen at grace", now: at(90), view: map[OriginID]want{idB: {8, 10, b0, 90 * time.Millisecond}}},
		{name: "sliding, same slot", now: at(189), view: map[OriginID]want{idB: {8, 10, b0, 189 * time.Millisecond}}},
		{name: "slid one slot: b0-9 leaves, b0 enters demand", now: at(190), view: map[OriginID]want{idB: {3 + 4, 10 + 4, b0 + 1, 190 * time.Millisecond}}},
		{name: "clock stepped back reads as the latest time", now: at(100), view: map[OriginID]want{idB: {7, 14, b0 + 1, 190 * time.Millisecond}}},
		{name: "late report does not pull the view back", now: at(190), merge: ptr(normal(idB, t0+skew+80*ms, ent("k", b0, 5, 6))),
			view: map[OriginID]want{idB: {3 + 5, 10 + 6, b0 + 1, 0}}},
		{name: "report of a newer slot", now: at(200), merge: ptr(normal(idB, t0+skew+180*ms, ent("k", b0+1, 2, 3))),
			view: map[OriginID]want{idB: {3 + 5 + 2, 10 + 6, b0 + 1, 0}}},
		{name: "reporting every 20 ms keeps the view at the report", now: at(220), merge: ptr(normal(idB, t0+skew+200*ms)),
			view: map[OriginID]want{idB: {10, 10 + 6 + 3, b0 + 2, 0}}},
		{name: "duplicate of an old report changes nothing", now: at(230), merge: ptr(normal(idB, t0+skew+180*ms, ent("k", b0+1, 2, 3))),
			view: map[OriginID]want{idB: {10, 19, b0 + 2, 10 * time.Millisecond}}},
		{name: "relayed origin c, heard 500 ms ago by b", now: at(240), merge: ptr(full(at(240), idB,
			[]OriginState{{ID: idB, AsOf: t0 + skew + 220*ms}, {ID: idC, AsOf: c0 * slot, Age: 500 * ms}},
			Entry{Origin: 1, Key: "k", Epoch: c0 - 6, Admitted: 100, Offered: 100},
			Entry{Origin: 1, Key: "k", Epoch: c0 - 5, Admitted: 20, Offered: 30},
			Entry{Origin: 1, Key: "k", Epoch: c0, Admitted: 1, Offered: 1})),
			// c: T̂ = asOf + 500-90 ms = slot c0+4: window (c0-6, c0+4]; demand [c0-1, c0+3].
			view: map[OriginID]want{idB: {10, 19, b0 + 2, 0}, idC: {21, 1, c0 + 4, 500 * time.Millisecond}}},
		{name: "b falls silent: slides after grace", now: at(240 + 90 + 800), view: map[OriginID]want{
			// b: asOf b0*slot+220ms heard at 240: T̂ = +800ms → slot b0+10: window (b0, b0+10].
			// c: heard at 240-500 ms: T̂ = asOf + 1390-90 ms → slot c0+13.
			idB: {2, 0, b0 + 10, 890 * time.Millisecond},
			idC: {0, 0, c0 + 13, 1390 * time.Millisecond}}},
		{name: "b's window empties", now: at(240 + 90 + 900), view: map[OriginID]want{
			idB: {0, 0, b0 + 11, 990 * time.Millisecond},
			idC: {0, 0, c0 + 14, 1490 * time.Millisecond}}},
	}
	s := mustStore(t, idA, Config{Grace: 90 * time.Millisecond})
	for i, st := range steps {
		if st.merge != nil {
			if _, err := s.Merge(*st.merge, st.now); err != nil {
				t.Fatalf("step %d (%s): Merge: %v", i, st.name, err)
			}
		}
		if st.view == nil {
			continue
		}
		got := viewsOf(s, "k", 10, 5, st.now)
		for id, w := range st.view {
			v, ok := got[id]
			if !ok {
				t.Errorf("step %d (%s): no view of %v", i, st.name, id)
				continue
			}
			if v.Admitted != w.adm || v.Demand != w.dem || v.AsOfSlot != w.slot || (w.age != 0 && v.Age != w.age) {
				t.Errorf("step %d (%s): view of %v = {adm %d, dem %d, slot %+d, age %v}, want {adm %d, dem %d, slot %+d, age %v}",
					i, st.name, id, v.Admitted, v.Demand, v.AsOfSlot-b0, v.Age, w.adm, w.dem, w.slot-b0, w.age)
			}
		}
		if len(got) != len(st.view) {
			t.Errorf("step %d (%s): views of %d origins, want %d", i, st.name, len(got), len(st.view))
		}
	}
}

func ptr[T any](v T) *T { return &v }

// TestViewWindows checks window and demand edges against a direct sum for
// every window and demand length (demand reads at most MaxDemandSlots), on
// a series with a count in every slot.
func TestViewWindows(t *testing.T) {
	s := mustStore(t, idA, Config{Horizon: func(string) int { return 30 }})
	top := slotOf(t0)
	var entries []Entry
	for e := top - 40; e <= top; e++ {
		entries = append(entries, ent("k", e, uint32(e-top+100), uint32(2*(e-top+100))))
	}
	mustMerge(t, s, normal(idB, t0, entries...), t0)
	for window := 0; window <= 35; window++ {
		for demand := 0; demand <= 35; demand++ {
			got := viewsOf(s, "k", window, demand, t0)[idB]
			w, d := min(max(window, 1), 30), min(demand, 30, MaxDemandSlots)
			var wantAdm, wantDem int64
			for e := top - int64(w) + 1; e <= top; e++ {
				wantAdm += e - top + 100
			}
			for e := top - int64(d); e <= top-1; e++ {
				wantDem += 2 * (e - top + 100)
			}
			if got.Admitted != wantAdm || got.Demand != wantDem {
				t.Fatalf("Views(window %d, demand %d) = adm %d, dem %d; want %d, %d", window, demand, got.Admitted, got.Demand, wantAdm, wantDem)
			}
		}
	}
}

// TestViewsSkipSelfAndUnknown: the own origin never appears in Views, and an
// unknown key calls nothing.
func TestViewsSkipSelfAndUnknown(t *testing.T) {
	s := mustStore(t, idA, Config{})
	s.SetOwnAsOf(t0)
	if err := s.RecordOwn("k", []SlotCounts{{Epoch: slotOf(t0), Admitted: 1, Offered: 1}}); err != nil {
		t.Fatal(err)
	}
	if got := viewsOf(s, "k", 10, 5, t0); len(got) != 0 {
		t.Errorf("Views of own key = %v, want none", got)
	}
	if got := viewsOf(s, "nope", 10, 5, t0); len(got) != 0 {
		t.Errorf("Views of unknown key = %v, want none", got)
	}
}

// TestEstimateSaturates: extreme but valid times never overflow the
// estimate: a view at the end of time reads the last slots.
func TestEstimateSaturates(t *testing.T) {
	s := mustStore(t, idA, Config{})
	d := Delta{From: idB, Seq: 1, Full: true, Parts: 1, Origins: []OriginState{
		{ID: idB, AsOf: 0},
		{ID: idC, AsOf: MaxTime, Age: MaxAge},
	}, Entries: []Entry{{Origin: 1, Key: "k", Epoch: MaxEpoch, Admitted: 1, Offered: 1}}}
	mustMerge(t, s, d, 0)
	v := viewsOf(s, "k", 10, 5, MaxTime)[idC]
	if v.AsOfSlot != MaxEpoch || v.Admitted != 1 {
		t.Errorf("view at the end of time = %+v, want slot MaxEpoch with the last slot counted", v)
	}
}

// TestViewsFrom checks a floor against a direct sum for every floor around
// and inside the window, dense series included, and that the cached view
// is exact again once the floor has left the window.
func TestViewsFrom(t *testing.T) {
	s := mustStore(t, idA, Config{Horizon: func(string) int { return 30 }})
	top := slotOf(t0)
	var entries []Entry
	for e := top - 40; e <= top; e++ {
		entries = append(entries, ent("k", e, uint32(e-top+100), uint32(2*(e-top+100))))
	}
	mustMerge(t, s, normal(idB, t0, entries...), t0)
	const window = 20
	for floor := top - 25; floor <= top+2; floor++ {
		var got View
		s.ViewsFrom("k", window, 5, floor, t0, func(_ OriginInfo, v View) { got = v })
		var want int64
		for e := max(top-window+1, floor); e <= top; e++ {
			want += e - top + 100
		}
		if got.Admitted != want {
			t.Errorf("ViewsFrom(floor top%+d) admitted %d, want %d", floor-top, got.Admitted, want)
		}
		if full := viewsOf(s, "k", window, 5, t0)[idB]; got.Demand != full.Demand {
			t.Errorf("ViewsFrom(floor top%+d) demand %d, want %d as without a floor", floor-top, got.Demand, full.Demand)
		}
	}
}

// TestRecent: the last n full slots before the view's slot, admitted from
// the floor on.
func TestRecent(t *testing.T) {
	s := mustStore(t, idA, Config{})
	top := slotOf(t0)
	var entries []Entry
	for e := top - 12; e <= top; e++ {
		entries = append(entries, ent("k", e, uint32(e-top+20), uint32(3*(e-top+20))))
	}
	mustMerge(t, s, normal(idB, t0, entries...), t0)
	for _, c := range []struct {
		n          int
		floor      int64
		adm, offer int64
	}{
		{10, 0, 145, 3 * 145}, // slots top-10..top-1 hold 10..19
		{5, 0, 85, 3 * 85},
		{10, top - 3, 17 + 18 + 19, 3 * 145},
		{10, top, 0, 3 * 145},
		{99, 0, 145, 3 * 145}, // clamped to MaxDemandSlots
	} {
		var got Recent
		s.Recent("k", c.n, c.floor, t0, func(_ OriginInfo, r Recent) { got = r })
		if got.Admitted != c.adm || got.Offered != c.offer || got.AsOfSlot != top {
			t.Errorf("Recent(n %d, floor top%+d) = %+v, want admitted %d, offered %d at slot top", c.n, c.floor-top, got, c.adm, c.offer)
		}
	}
}

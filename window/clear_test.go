package window

import (
	"fmt"
	"testing"
)

func TestClearBefore(t *testing.T) {
	e0 := EpochOf(t0)
	steps := []struct {
		name                string
		admits              []allow // before the clear
		now, floor, cleared int64
		after               []allow // after it
		admitted            int64   // Counts(after's last time) admitted
	}{
		{"every slot before the floor", []allow{{t0, 4, true}, {t3, 6, true}, {t4, 1, false}},
			t5, e0 + 5, 10, []allow{{t5, 10, true}, {t5, 1, false}}, 10},
		{"the floor's slot stays", []allow{{t0, 4, true}, {t5, 6, true}},
			t5, e0 + 5, 4, []allow{{t5, 4, true}, {t5, 1, false}}, 10},
		{"later slots stay when applied late", []allow{{t0, 4, true}, {t3, 3, true}, {t5, 3, true}},
			t5, e0 + 3, 4, []allow{{t5, 4, true}, {t5 + d, 1, false}}, 10},
		{"a floor in the future clears closed slots only", []allow{{t0, 4, true}, {t3, 6, true}},
			t3, e0 + 9, 4, []allow{{t3, 4, true}, {t3, 1, false}}, 10},
		{"nothing before the floor", []allow{{t5, 2, true}},
			t5, e0 + 2, 0, []allow{{t5, 8, true}, {t5, 1, false}}, 10},
		{"a slot that left the window is not counted twice", []allow{{t0, 5, true}, {t5, 5, true}},
			t0 + 12*d, e0 + 12, 5, []allow{{t0 + 12*d, 10, true}, {t0 + 12*d, 1, false}}, 10},
	}
	for i, s := range steps {
		w := mustNew(t, "10/s", t0)
		run(t, w, s.admits)
		if got := w.ClearBefore(s.now, s.floor); got != s.cleared {
			t.Errorf("step %d (%s): ClearBefore(%v, e0+%d) = %d, want %d", i, s.name, ts(s.now), s.floor-e0, got, s.cleared)
		}
		t.Run(fmt.Sprint(i), func(t *testing.T) { run(t, w, s.after) })
		last := s.after[len(s.after)-1].t
		if adm, _ := w.Counts(last); adm != s.admitted || w.Total() != s.admitted {
			t.Errorf("step %d (%s): after, Counts admitted %d, Total %d; want %d", i, s.name, adm, w.Total(), s.admitted)
		}
	}
}

// TestClearBeforeKeepsHistory: offered counts (the demand estimate and
// offered rates) are history a reset does not rewrite; the admitted rate
// reads what the window still counts.
func TestClearBeforeKeepsHistory(t *testing.T) {
	w := mustNew(t, "100/s", t0)
	for x := range int64(10) {
		w.AllowN(t0+x*d, 5)
	}
	now := t0 + 10*d
	before := w.CurrentQPS(now)
	demand := w.Demand(now, 5)
	if got := w.ClearBefore(now, EpochOf(now)); got != 45 { // slot 0 has left the 1 s window
		t.Errorf("ClearBefore cleared %d, want 45", got)
	}
	after := w.CurrentQPS(now)
	if after.LastSecond.Offered != before.LastSecond.Offered || after.LastSecond.Admitted != 5 {
		t.Errorf("CurrentQPS after the clear = %+v, want offered %v as before and admitted 5 (slot 0, outside the window)", after, before.LastSecond.Offered)
	}
	if got := w.Demand(now, 5); got != demand {
		t.Errorf("Demand after the clear = %d, want %d", got, demand)
	}
}

// TestClearBeforeDense: a window in its dense form clears the same.
func TestClearBeforeDense(t *testing.T) {
	w := mustNew(t, "1000/10s", t0)
	for x := range int64(40) {
		if !w.AllowN(t0+x*d, 20) {
			t.Fatalf("slot %d denied", x)
		}
	}
	now := t0 + 40*d
	if got := w.ClearBefore(now, EpochOf(now)-10); got != 30*20 {
		t.Errorf("ClearBefore cleared %d, want %d", got, 30*20)
	}
	if adm, _ := w.Counts(now); adm != 10*20 || w.Total() != 10*20 {
		t.Errorf("after: Counts %d, Total %d; want %d", adm, w.Total(), 10*20)
	}
	// The cleared slots leave the window later without lowering the total.
	for x := int64(40); x < 140; x++ {
		w.AllowN(t0+x*d, 1)
	}
	if adm, _ := w.Counts(t0 + 139*d); adm != w.Total() || adm != 100 {
		t.Errorf("a window later: Counts %d, Total %d; want 100 both", adm, w.Total())
	}
}

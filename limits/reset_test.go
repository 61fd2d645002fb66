package limits

import (
	"errors"
	"fmt"
	"slices"
	"testing"
)

func TestResetFloorSteps(t *testing.T) {
	tbl, err := NewTable(rule("user:*", "10/s"), rule("orders.create", "100/s"))
	if err != nil {
		t.Fatal(err)
	}
	steps := []struct {
		add   Reset
		key   string
		floor int64
	}{
		{Reset{"user:42", 100}, "user:42", 100},
		{Reset{"user:42", 100}, "user:7", 0},
		{Reset{"user:*", 90}, "user:42", 100},  // an older floor for all users does not lower it
		{Reset{"user:*", 90}, "user:7", 90},    // but counts for the others
		{Reset{"user:*", 150}, "user:42", 150}, // a newer one raises both
		{Reset{"user:42", 120}, "user:42", 150},
		{Reset{"orders.*", 160}, "orders.create", 160},
		{Reset{"orders.*", 160}, "user:42", 150},
	}
	for i, s := range steps {
		if tbl, err = tbl.WithReset(s.add); err != nil {
			t.Fatalf("step %d: WithReset(%v): %v", i, s.add, err)
		}
		if got := tbl.ResetFloor(s.key); got != s.floor {
			t.Errorf("step %d: after %v, ResetFloor(%q) = %d, want %d (resets %v)", i, s.add, s.key, got, s.floor, tbl.Resets())
		}
		if r, ok := tbl.Lookup("user:1"); !ok || r.Rate != MustParseRate("10/s") {
			t.Errorf("step %d: the rules changed: Lookup(user:1) = %v, %v", i, r, ok)
		}
	}
}

func TestResetsSurviveRuleChanges(t *testing.T) {
	tbl, _ := NewTable(rule("a", "1/s"))
	tbl, err := tbl.WithReset(Reset{"a", 10})
	if err != nil {
		t.Fatal(err)
	}
	u, err := tbl.With(rule("b", "2/s"))
	if err != nil {
		t.Fatal(err)
	}
	if got := u.ResetFloor("a"); got != 10 {
		t.Errorf("after With, ResetFloor(a) = %d, want 10", got)
	}
	if u, err = u.Without("b"); err != nil || u.ResetFloor("a") != 10 {
		t.Errorf("after Without: %v, ResetFloor(a) = %d, want 10", err, u.ResetFloor("a"))
	}
	if !u.Equal(tbl) {
		t.Errorf("tables with the same rules and resets are not Equal")
	}
	if same, _ := NewTable(rule("a", "1/s")); same.Equal(tbl) {
		t.Errorf("a table without the reset is Equal to one with it")
	}
}

func TestResetsAreBounded(t *testing.T) {
	tbl, _ := NewTable()
	var err error
	for i := range MaxResets + 10 {
		if tbl, err = tbl.WithReset(Reset{fmt.Sprintf("k%d", i), int64(1000 + i)}); err != nil {
			t.Fatal(err)
		}
	}
	rs := tbl.Resets()
	if len(rs) != MaxResets || rs[0].Pattern != "k10" {
		t.Errorf("%d resets kept, oldest %v; want %d, oldest k10", len(rs), rs[0], MaxResets)
	}
	// A reset far newer than the others drops every one it outlived.
	if tbl, err = tbl.WithReset(Reset{"late", 1000 + MaxResets + ResetKeepSlots + 20}); err != nil {
		t.Fatal(err)
	}
	if rs := tbl.Resets(); len(rs) != 1 || rs[0].Pattern != "late" {
		t.Errorf("after a much newer reset, resets %v; want only late", rs)
	}
	if !slices.IsSortedFunc(rs, func(a, b Reset) int { return int(a.Floor - b.Floor) }) {
		t.Errorf("resets not sorted by floor: %v", rs)
	}
}

func TestResetValidate(t *testing.T) {
	tbl, _ := NewTable()
	for _, r := range []Reset{{"", 1}, {"a b", 1}, {"a", 0}, {"a", -5}, {"a", MaxFloor + 1}} {
		_, err := tbl.WithReset(r)
		if err == nil {
			t.Errorf("WithReset(%+v) accepted", r)
			continue
		}
		if !errors.Is(err, ErrInvalidReset) && !errors.Is(err, ErrInvalidPattern) {
			t.Errorf("WithReset(%+v) = %v, want ErrInvalidReset or ErrInvalidPattern", r, err)
		}
	}
	if _, err := tbl.WithResets(make([]Reset, MaxResets+1)); !errors.Is(err, ErrInvalidReset) {
		t.Errorf("WithResets of %d = %v, want ErrInvalidReset", MaxResets+1, err)
	}
}

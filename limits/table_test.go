package limits

import (
	"errors"
	"fmt"
	"testing"
	"time"
)

func rule(p, r string) Rule { return Rule{Pattern: p, Rate: MustParseRate(r)} }

func TestTableLookupPrecedence(t *testing.T) {
	tbl, err := NewTable(
		rule("orders.create", "1000/s"),
		rule("user:*", "10/s"),
		rule("user:vip:*", "100/s"),
		rule("user:*:x", "5/s"),
		rule("*", "1/s"),
		rule("user:vip:1", "7/s"),
	)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		key, wantPattern string
		found            bool
	}{
		{"orders.create", "orders.create", true},
		{"user:42", "user:*", true},
		{"user:vip:9", "user:vip:*", true},
		{"user:vip:1", "user:vip:1", true},
		{"user:abc:x", "user:*:x", true},
		{"other", "*", true},
	}
	for i, tt := range tests {
		got, ok := tbl.Lookup(tt.key)
		if ok != tt.found || got.Pattern != tt.wantPattern {
			t.Errorf("step %d: Lookup(%q) = %v, %v; want %q, %v", i, tt.key, got, ok, tt.wantPattern, tt.found)
		}
	}
	if got, want := tbl.LongestWindow(), time.Second; got != want {
		t.Errorf("LongestWindow() = %v, want %v", got, want)
	}
}

func TestTableNoMatchAndNil(t *testing.T) {
	tbl, _ := NewTable(rule("a", "1/s"))
	if r, ok := tbl.Lookup("b"); ok {
		t.Errorf("Lookup(b) = %v, true; want no rule", r)
	}
	var nilTable *Table
	if _, ok := nilTable.Lookup("a"); ok || nilTable.Len() != 0 || nilTable.Rules() != nil || nilTable.LongestWindow() != 0 {
		t.Error("nil table is not empty")
	}
}

func TestTableWithWithout(t *testing.T) {
	t0, _ := NewTable()
	t1, err := t0.With(rule("a", "1/s"))
	if err != nil {
		t.Fatal(err)
	}
	t2, _ := t1.With(rule("a", "5/min"))
	t3, _ := t2.With(rule("b:*", "2/s"))
	if t0.Len() != 0 || t1.Len() != 1 || t2.Len() != 1 || t3.Len() != 2 {
		t.Fatalf("lengths %d %d %d %d, want 0 1 1 2 (tables must be immutable)", t0.Len(), t1.Len(), t2.Len(), t3.Len())
	}
	if r, _ := t2.Get("a"); r.Rate != MustParseRate("5/min") {
		t.Errorf("after With, Get(a) = %v, want 5/min", r)
	}
	if got, want := t3.LongestWindow(), time.Minute; got != want {
		t.Errorf("LongestWindow() = %v, want %v", got, want)
	}
	t4, err := t3.Without("a")
	if err != nil || t4.Len() != 1 || t3.Len() != 2 {
		t.Fatalf("Without(a) = %v, %v", t4, err)
	}
	if _, err := t4.Without("a"); !errors.Is(err, ErrNoRule) {
		t.Errorf("Without(missing) = %v, want ErrNoRule", err)
	}
	if !t3.Equal(t3) || t3.Equal(t4) {
		t.Error("Equal is wrong")
	}
	if _, err := t0.With(rule("a", "1/s").withCount(0)); !errors.Is(err, ErrInvalidRate) {
		t.Errorf("With(bad rate) = %v, want ErrInvalidRate", err)
	}
}

func (r Rule) withCount(c int64) Rule { r.Rate.Count = c; return r }

func TestNewTableErrors(t *testing.T) {
	if _, err := NewTable(rule("a", "1/s"), rule("a", "2/s")); !errors.Is(err, ErrDuplicateRule) {
		t.Errorf("duplicate = %v, want ErrDuplicateRule", err)
	}
	if _, err := NewTable(Rule{Pattern: "a b", Rate: MustParseRate("1/s")}); !errors.Is(err, ErrInvalidPattern) {
		t.Errorf("bad pattern = %v, want ErrInvalidPattern", err)
	}
	many := make([]Rule, MaxRules+1)
	for i := range many {
		many[i] = rule(fmt.Sprint("k", i), "1/s")
	}
	if _, err := NewTable(many...); !errors.Is(err, ErrTooManyRules) {
		t.Errorf("too many = %v, want ErrTooManyRules", err)
	}
}

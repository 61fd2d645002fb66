package route

import (
	"fmt"
	"math"
	"slices"
	"testing"
)

// The hash is part of the protocol: these homes must never change.
func TestHomesAreStable(t *testing.T) {
	tb := New("n1", "n2", "n3")
	for _, c := range []struct{ key, home string }{
		{"orders.create", "n1"},
		{"user:1", "n2"},
		{"user:2", "n1"},
		{"user:42", "n2"},
		{"ip:10.0.0.1", "n3"},
		{"tenant:acme", "n3"},
	} {
		if got, _ := tb.Home(c.key); got != c.home {
			t.Errorf("Home(%q) = %q, want %q", c.key, got, c.home)
		}
	}
	// Pinned values of the hash itself.
	if got, want := Hash(""), uint64(14695981039346656037); got != want {
		t.Errorf("Hash(\"\") = %d, want %d", got, want)
	}
	if got, want := Hash("a"), uint64(0xaf63dc4c8601ec8c); got != want {
		t.Errorf("Hash(\"a\") = %#x, want %#x", got, want)
	}
	if got, want := Score(Hash("user:1"), fnv1a("n1")), uint64(0x342b407b195b436c); got != want {
		t.Errorf("Score(user:1, n1) = %#x, want %#x", got, want)
	}
}

func TestEmptyRoutesNowhere(t *testing.T) {
	for _, tb := range []*Table{nil, New()} {
		if h, ok := tb.Home("k"); ok || h != "" {
			t.Errorf("Home on an empty table = %q, %v, want \"\", false", h, ok)
		}
		if tb.Len() != 0 || tb.Order("k") != nil && len(tb.Order("k")) != 0 {
			t.Errorf("empty table: Len %d, Order %v", tb.Len(), tb.Order("k"))
		}
	}
}

func TestOrderStartsWithHomeAndHoldsEveryNode(t *testing.T) {
	tb := New("c", "a", "b", "a")
	if got := tb.Nodes(); !slices.Equal(got, []string{"a", "b", "c"}) {
		t.Fatalf("Nodes() = %v, want [a b c]", got)
	}
	for i := range 200 {
		key := fmt.Sprintf("user:%d", i)
		o := tb.Order(key)
		h, _ := tb.Home(key)
		if len(o) != 3 || o[0] != h {
			t.Fatalf("Order(%q) = %v, Home %q", key, o, h)
		}
		// Skipping the home gives the second in the order.
		second, _ := tb.HomeOf(Hash(key), func(id string) bool { return id == h })
		if second != o[1] {
			t.Fatalf("HomeOf(%q) without %q = %q, want %q", key, h, second, o[1])
		}
	}
}

// A node leaving moves only its own keys; a node joining takes only keys
// it now wins, from every other node alike.
func TestMinimalMovement(t *testing.T) {
	before := New("n1", "n2", "n3", "n4")
	after := New("n1", "n2", "n4") // n3 left
	joined := New("n1", "n2", "n3", "n4", "n5")
	moved, taken := 0, 0
	for i := range 20000 {
		key := fmt.Sprintf("ip:10.0.%d.%d", i/256, i%256)
		b, _ := before.Home(key)
		a, _ := after.Home(key)
		if b != "n3" && a != b {
			t.Fatalf("key %q moved from %q to %q although n3 left", key, b, a)
		}
		if b == "n3" {
			moved++
			if o := before.Order(key); a != o[1] {
				t.Fatalf("key %q of n3 went to %q, want its second %q", key, a, o[1])
			}
		}
		j, _ := joined.Home(key)
		if j != b {
			if j != "n5" {
				t.Fatalf("key %q moved from %q to %q when n5 joined", key, b, j)
			}
			taken++
		}
	}
	if moved == 0 || taken == 0 {
		t.Fatalf("moved %d, taken %d: expected some of each", moved, taken)
	}
}

// Keys spread evenly: with 100,000 keys over 10 nodes every node's part is
// within 5 % of a tenth (the binomial's standard deviation is about 1 %).
func TestBalance(t *testing.T) {
	ids := make([]string, 10)
	for i := range ids {
		ids[i] = fmt.Sprintf("node-%d", i)
	}
	tb := New(ids...)
	count := map[string]int{}
	const keys = 100000
	for i := range keys {
		h, _ := tb.Home(fmt.Sprintf("user:%d", i))
		count[h]++
	}
	for _, id := range ids {
		if dev := math.Abs(float64(count[id])/keys*10 - 1); dev > 0.05 {
			t.Errorf("node %s homes %d of %d keys (%.1f %% off a tenth)", id, count[id], keys, 100*dev)
		}
	}
}

func BenchmarkHome(b *testing.B) {
	for _, n := range []int{3, 10, 100} {
		ids := make([]string, n)
		for i := range ids {
			ids[i] = fmt.Sprintf("node-%d", i)
		}
		tb := New(ids...)
		b.Run(fmt.Sprintf("nodes=%d", n), func(b *testing.B) {
			for i := 0; b.Loop(); i++ {
				tb.Home("user:123456")
			}
		})
	}
}

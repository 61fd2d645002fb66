package window

import (
	"slices"
	"sync"
	"testing"

	"github.com/quotamesh/quotamesh/limits"
)

func drained(r *Registry) []string {
	var keys []string
	r.Drain(func(k string) { keys = append(keys, k) })
	slices.Sort(keys)
	return keys
}

func TestDrainReturnsEachWrittenKeyOnce(t *testing.T) {
	tbl, _ := limits.NewTable(limits.Rule{Pattern: "k:*", Rate: limits.MustParseRate("1000/s")})
	r, err := NewRegistry(Config{}, tbl)
	if err != nil {
		t.Fatal(err)
	}
	now := int64(1e18)
	steps := []struct {
		writes []string
		touch  []string
		want   []string
	}{
		{writes: []string{"k:a", "k:b", "k:a", "k:a"}, want: []string{"k:a", "k:b"}},
		{want: nil},
		{writes: []string{"k:b", "nomatch"}, touch: []string{"k:c", "k:a"}, want: []string{"k:a", "k:b"}},
	}
	for i, st := range steps {
		for _, k := range st.writes {
			if _, err := r.AllowN(now, k, 1); err != nil {
				t.Fatalf("step %d: AllowN(%q) = %v", i, k, err)
			}
		}
		for _, k := range st.touch {
			r.Touch(k)
		}
		if got := drained(r); !slices.Equal(got, st.want) {
			t.Errorf("step %d: Drain() = %v, want %v", i, got, st.want)
		}
	}
}

// TestDrainNeverMissesAWrite: writers and a drainer race; every key written
// is drained at least once after its last write.
func TestDrainNeverMissesAWrite(t *testing.T) {
	tbl, _ := limits.NewTable(limits.Rule{Pattern: "k:*", Rate: limits.MustParseRate("4294967295/s")})
	r, _ := NewRegistry(Config{}, tbl)
	now := int64(1e18)
	keys := []string{"k:0", "k:1", "k:2", "k:3"}
	const writes = 20000
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for i := range writes {
				r.AllowN(now, keys[(g+i)%len(keys)], 1)
			}
		})
	}
	seen := make(map[string]int64) // admitted total when last drained
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	drain := func() {
		r.Drain(func(k string) {
			w, _, _ := r.Lookup(k)
			seen[k] = w.Total()
		})
	}
	for {
		select {
		case <-done:
			drain()
			var sum int64
			for _, k := range keys {
				sum += seen[k]
			}
			if sum != 4*writes {
				t.Fatalf("drained totals sum to %d, want %d: a write was not followed by a drain", sum, 4*writes)
			}
			return
		default:
			drain()
		}
	}
}

func BenchmarkRegistryAllowTouched(b *testing.B) {
	tbl, _ := limits.NewTable(limits.Rule{Pattern: "k:*", Rate: limits.MustParseRate("1000/s")})
	r, _ := NewRegistry(Config{}, tbl)
	now := int64(1e18)
	r.AllowN(now, "k:x", 1)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			r.AllowN(now, "k:x", 1)
		}
	})
}

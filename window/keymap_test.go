package window

import (
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
)

// TestKeyMapMatchesMap is a property test against a plain map over random
// stores, replacements and deletions, through several growths.
func TestKeyMapMatchesMap(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	m := newKeyMap()
	ref := map[string]*entry{}
	for i := range 50000 {
		key := fmt.Sprint("k", rng.IntN(3000))
		switch rng.IntN(4) {
		case 0, 1:
			en := &entry{key: key}
			m.store(en)
			ref[key] = en
		case 2:
			want := ref[key]
			if got := m.compareAndDelete(key, want); got != (want != nil) {
				t.Fatalf("op %d: compareAndDelete(%s) = %v, want %v", i, key, got, want != nil)
			}
			delete(ref, key)
		case 3:
			if m.compareAndDelete(key, &entry{}) {
				t.Fatalf("op %d: compareAndDelete with another entry deleted %s", i, key)
			}
		}
		if got, ok := m.load(key); got != ref[key] || ok != (ref[key] != nil) {
			t.Fatalf("op %d: load(%s) = %p, %v; want %p", i, key, got, ok, ref[key])
		}
	}
	seen := 0
	m.rangeAll(func(k string, en *entry) bool {
		if ref[k] != en {
			t.Fatalf("rangeAll gave %s = %p, want %p", k, en, ref[k])
		}
		seen++
		return true
	})
	if seen != len(ref) || m.n != len(ref) {
		t.Fatalf("rangeAll saw %d, n = %d, want %d", seen, m.n, len(ref))
	}
}

// TestKeyMapConcurrentReaders: readers never see a key that was never
// stored, and always find keys stored before they started, while a writer
// stores, replaces, deletes and grows the table.
func TestKeyMapConcurrentReaders(t *testing.T) {
	m := newKeyMap()
	stable := make([]*entry, 100)
	for i := range stable {
		stable[i] = &entry{key: fmt.Sprint("stable", i)}
		m.store(stable[i])
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 3 {
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				en := stable[i%len(stable)]
				if got, ok := m.load(en.key); !ok || got != en {
					t.Errorf("load(%s) = %p, %v during writes; want %p", en.key, got, ok, en)
					return
				}
				if _, ok := m.load("never"); ok {
					t.Error("load(never) found something")
					return
				}
			}
		})
	}
	for i := range 20000 {
		k := fmt.Sprint("churn", i%5000)
		m.store(&entry{key: k})
		if i%3 == 0 {
			en, _ := m.load(k)
			m.compareAndDelete(k, en)
		}
	}
	close(stop)
	wg.Wait()
}

func BenchmarkKeyMapLoad(b *testing.B) {
	m := newKeyMap()
	keys := make([]string, 1024)
	for i := range keys {
		keys[i] = fmt.Sprint("user:", i*7919)
		m.store(&entry{key: keys[i]})
	}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			if _, ok := m.load(keys[i&1023]); !ok {
				b.Fatal("missing")
			}
			i++
		}
	})
}

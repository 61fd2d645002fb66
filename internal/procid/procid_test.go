package procid

import (
	"runtime"
	"sync"
	"testing"
)

func TestIDInRange(t *testing.T) {
	procs := runtime.GOMAXPROCS(0)
	var wg sync.WaitGroup
	errs := make(chan int, 64)
	for range 4 * procs {
		wg.Go(func() {
			for range 1000 {
				if id := ID(); id < 0 || id >= procs {
					select {
					case errs <- id:
					default:
					}
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for id := range errs {
		t.Errorf("ID() = %d, want a value in [0, %d)", id, procs)
	}
}

func TestIDSingleP(t *testing.T) {
	old := runtime.GOMAXPROCS(1)
	defer runtime.GOMAXPROCS(old)
	for i := range 100 {
		if got := ID(); got != 0 {
			t.Fatalf("step %d: ID() = %d with GOMAXPROCS 1, want 0", i, got)
		}
	}
}

func TestIDDoesNotAllocate(t *testing.T) {
	if got := testing.AllocsPerRun(1000, func() { _ = ID() }); got != 0 {
		t.Errorf("ID() allocates %v times per call, want 0", got)
	}
}

func BenchmarkID(b *testing.B) {
	b.RunParallel(func(pb *testing.PB) {
		sum := 0
		for pb.Next() {
			sum += ID()
		}
		_ = sum
	})
}

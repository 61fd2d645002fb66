package window

import (
	"fmt"
	"math/rand/v2"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
)

// These tests run many goroutines against one window on a shared fake clock
// that the goroutines themselves advance, so slot edges, rolls and callers
// holding stale times all happen at once. They assert invariants, never
// timings; run them with -race.

// morePs raises GOMAXPROCS so that goroutines interleave and windows grow
// per-P shards even on a small machine; it returns the function to undo it.
func morePs() func() {
	old := runtime.GOMAXPROCS(max(4, runtime.GOMAXPROCS(0)))
	return func() { runtime.GOMAXPROCS(old) }
}

// TestConcurrentExactGate: within one 60 s window nothing expires, so the
// window must admit exactly its quota, never one more, and account for
// every token admitted and offered.
func TestConcurrentExactGate(t *testing.T) {
	defer morePs()()
	const quota = 1000
	w := mustNew(t, "1000/min", t0)
	var clock atomic.Int64
	clock.Store(t0)
	end := t0 + 590*d
	var admitted, offered atomic.Int64
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(g), 1))
			var adm, off int64
			for i := 0; ; i++ {
				now := clock.Load()
				if now >= end {
					break
				}
				if rng.IntN(4) == 0 {
					now = clock.Add(rng.Int64N(2 * d / 100))
				}
				n := 1 + rng.Int64N(3)
				if w.AllowN(now, n) {
					adm += n
				}
				off += n
				if i%64 == 0 {
					if tot := w.Total(); tot < 0 || tot > quota {
						t.Errorf("Total() = %v, want within [0, %v]", tot, quota)
						return
					}
				}
			}
			admitted.Add(adm)
			offered.Add(off)
		})
	}
	wg.Wait()
	adm, off := admitted.Load(), offered.Load()
	if adm > quota || adm < quota-2 {
		t.Errorf("admitted %v in one window, want %v (or up to 2 less: requests take 1 to 3)", adm, quota)
	}
	if got := w.Total(); got != adm {
		t.Errorf("Total() = %v, want the %v the callers were granted", got, adm)
	}
	checkCounts(t, w, clock.Load(), adm, off)
	var sumA, sumO int64
	w.Slots(clock.Load(), 0, func(_ int64, a, o uint32) { sumA += int64(a); sumO += int64(o) })
	if sumA != adm || sumO != off {
		t.Errorf("slots sum to %v admitted, %v offered; want %v, %v", sumA, sumO, adm, off)
	}
}

// TestConcurrentNeverEarly: with a 1 s window that slides over 40 s of fake
// time, the slots must account for every admission, no K consecutive slots
// may hold more than the quota, and no admission may be attributed to a
// slot before its caller's epoch: for every epoch y, what the slots up to y
// hold is at most what callers admitted with times up to y.
func TestConcurrentNeverEarly(t *testing.T) {
	defer morePs()()
	const quota, k, slots = 50, 10, 400
	w := mustNew(t, "50/s", t0)
	var clock atomic.Int64
	clock.Store(t0)
	end := t0 + slots*d
	var stop atomic.Bool

	observed := map[int64]int64{} // epoch -> admitted, the largest value seen
	observe := func(now int64) {
		w.Slots(now, 0, func(e int64, a, _ uint32) { observed[e] = max(observed[e], int64(a)) })
	}
	var wg sync.WaitGroup
	perWorker := make([]map[int64]int64, 6) // epoch of the caller's time -> admitted
	for g := range perWorker {
		perWorker[g] = map[int64]int64{}
		wg.Go(func() {
			for i := 0; !stop.Load(); i++ {
				now := clock.Load()
				if g == 0 && i%4 == 0 {
					// Worker 0 is also the clock: 1 ms steps, observing
					// the slots at each, paced by its own requests.
					if now = clock.Add(d / 100); now >= end {
						stop.Store(true)
					}
					observe(now)
				}
				if g != 0 && i%32 == 0 {
					runtime.Gosched() // let the clock run on a busy machine
				}
				if w.Allow(now) {
					perWorker[g][EpochOf(now)]++
				}
				if tot := w.Total(); tot < 0 {
					t.Errorf("Total() = %v, want >= 0", tot)
					return
				}
			}
		})
	}
	wg.Wait()
	observe(clock.Load())

	byCaller := map[int64]int64{}
	var total int64
	for _, m := range perWorker {
		for e, n := range m {
			byCaller[e] += n
			total += n
		}
	}
	var sum int64
	for _, n := range observed {
		sum += n
	}
	if sum != total {
		t.Fatalf("slots hold %v admissions, callers were granted %v", sum, total)
	}
	if total < quota*slots/k/2 {
		t.Errorf("only %v admitted over %v windows of %v; the test did not exercise the window", total, slots/k, quota)
	}
	e0, eEnd := EpochOf(t0), EpochOf(clock.Load())
	var prefixSlots, prefixCallers, span int64
	for y := e0; y <= eEnd; y++ {
		prefixSlots += observed[y]
		prefixCallers += byCaller[y]
		if prefixSlots > prefixCallers {
			t.Fatalf("slots up to epoch %v hold %v admissions, callers up to it were granted only %v: a count was attributed early", y-e0, prefixSlots, prefixCallers)
		}
		span += observed[y] - observed[y-k]
		if span > quota {
			t.Fatalf("slots %v..%v hold %v admissions, more than the quota %v", y-e0-k+1, y-e0, span, quota)
		}
	}
}

// TestConcurrentMixed runs every operation at once: admissions, partial
// grants, refunds of them, recorded demand, quota changes and readers.
// Nothing expires (one 30 s window), so the books must balance exactly.
func TestConcurrentMixed(t *testing.T) {
	defer morePs()()
	const q1, q2 = 3000, 5000
	w := mustNew(t, "5000/30s", t0)
	var clock atomic.Int64
	clock.Store(t0)
	end := t0 + 290*d
	var admitted, refunded, offered atomic.Int64
	var wg sync.WaitGroup
	for g := range 6 {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(g), 2))
			type grant struct{ at, n int64 }
			var grants []grant
			for {
				now := clock.Load()
				if now >= end {
					return
				}
				if rng.IntN(8) == 0 {
					now = clock.Add(rng.Int64N(d / 10))
				}
				switch rng.IntN(10) {
				case 0, 1, 2:
					if w.AllowN(now, 2) {
						admitted.Add(2)
						grants = append(grants, grant{now, 2})
					}
					offered.Add(2)
				case 3, 4:
					n := w.takeUpTo(now, 5)
					admitted.Add(n)
					offered.Add(5)
					if n > 0 {
						grants = append(grants, grant{now, n})
					}
				case 5:
					if len(grants) > 0 {
						i := rng.IntN(len(grants))
						refunded.Add(w.Refund(now, grants[i].at, 1+rng.Int64N(grants[i].n)))
						grants = append(grants[:i], grants[i+1:]...)
					}
				case 6:
					w.RecordOffered(now, 3)
					offered.Add(3)
				case 7:
					w.SetQuota([]int64{q1, q2}[rng.IntN(2)])
				case 8:
					if rng.IntN(8) == 0 { // readers cost O(K)
						w.Counts(now)
						w.Demand(now, 5)
						w.CurrentQPS(now)
					}
				case 9:
					w.Slots(now, 0, func(int64, uint32, uint32) {})
					if tot := w.Total(); tot < 0 || tot > q2 {
						t.Errorf("Total() = %v, want within [0, %v]", tot, q2)
						return
					}
				}
			}
		})
	}
	wg.Wait()
	adm := admitted.Load() - refunded.Load()
	if got := w.Total(); got != adm {
		t.Errorf("Total() = %v, want %v admitted - %v refunded = %v", got, admitted.Load(), refunded.Load(), adm)
	}
	checkCounts(t, w, clock.Load(), adm, offered.Load())
}

// TestConcurrentReset: Reset while callers admit across slot edges. The
// total must never go negative and must end equal to what the slots hold.
func TestConcurrentReset(t *testing.T) {
	defer morePs()()
	w := mustNew(t, "200/s", t0)
	var clock atomic.Int64
	clock.Store(t0)
	end := t0 + 100*d
	var wg sync.WaitGroup
	wg.Go(func() {
		for clock.Load() < end {
			w.Reset()
		}
	})
	for g := range 4 {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(g), 3))
			for {
				now := clock.Load()
				if now >= end {
					return
				}
				if rng.IntN(16) == 0 {
					now = clock.Add(rng.Int64N(d / 5))
				}
				w.AllowN(now, 1+rng.Int64N(4))
				if tot := w.Total(); tot < 0 {
					t.Errorf("Total() = %v, want >= 0", tot)
					return
				}
			}
		})
	}
	wg.Wait()
	now := clock.Load()
	w.AllowN(now, 0)
	if a, _ := w.Counts(now); a != w.Total() {
		t.Errorf("after the run: Counts(now) admitted = %v, Total() = %v; want equal", a, w.Total())
	}
	w.Reset()
	checkCounts(t, w, now, 0, 0)
	if got := w.Total(); got != 0 {
		t.Errorf("Total() after a quiet Reset = %v, want 0", got)
	}
}

// TestCallerAheadOfRoll pins down, step by step, the race the ahead counts
// exist for: a caller whose epoch is newer than the open slot while another
// goroutine holds the roll flag and has not folded the open slot yet. If it
// counted into the open slot, the fold would attribute it to the slot being
// closed, before its own epoch, and it would expire early.
func TestCallerAheadOfRoll(t *testing.T) {
	w := mustNew(t, "10/s", t0)
	run(t, w, []allow{{t0, 1, true}})
	// Another caller saw slot 1 and took the flag; it is about to fold.
	w.busy.Store(1)
	w.seq.Add(1)
	run(t, w, []allow{{t2, 2, true}}) // a caller at slot 2 cannot roll
	w.RecordOffered(t2, 3)
	// The roller goes on: it folds the open slot into slot 0, opens slot 1,
	// and on its way out moves the ahead counts into slot 2.
	w.rollLocked(EpochOf(t1))
	w.settleLocked()
	w.unlock()

	type slot struct {
		epoch    int64
		adm, off uint32
	}
	var got []slot
	w.Slots(t2, 0, func(e int64, a, o uint32) { got = append(got, slot{e - EpochOf(t0), a, o}) })
	if want := []slot{{0, 1, 1}, {2, 2, 5}}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("Slots(t2) = %v (epochs from t0), want %v", got, want)
	}
	if got := w.OpenEpoch() - EpochOf(t0); got != 2 {
		t.Errorf("OpenEpoch() = t0's + %v, want + 2: the ahead counts' epoch", got)
	}
	if got := w.Total(); got != 3 {
		t.Errorf("Total() = %v, want 3", got)
	}
	// The slot-2 admissions must last until slot 12, not leave at slot 10.
	run(t, w, []allow{{t0 + 10*d, 8, true}, {t0 + 11*d, 1, false}, {t0 + 12*d, 2, true}})
}

// TestConcurrentReserveSettle: leases reserved and settled from many
// goroutines within one 60 s window never hold more than the quota, and
// once every reservation is settled the window counts exactly the tokens
// reported used, in its slots and its total.
func TestConcurrentReserveSettle(t *testing.T) {
	defer morePs()()
	const quota = 500
	w := mustNew(t, "500/min", t0)
	var clock atomic.Int64
	clock.Store(t0)
	var used atomic.Int64
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(g), 7))
			for range 2000 {
				now := clock.Add(rng.Int64N(d / 50))
				got := w.Reserve(now, 1+rng.Int64N(5))
				if tot := w.Total(); tot > quota {
					t.Errorf("total %d above the quota %d with reservations held", tot, quota)
					return
				}
				if got == 0 {
					continue
				}
				u := rng.Int64N(got + 1)
				w.Settle(clock.Add(rng.Int64N(d/50)), got, u)
				used.Add(u)
			}
		})
	}
	wg.Wait()
	now := clock.Load()
	if now >= t0+590*d {
		t.Fatalf("the fake clock ran past the window (%d slots); lower the step", (now-t0)/d)
	}
	adm, _ := w.Counts(now)
	if r := w.Reserved(); r != 0 {
		t.Errorf("Reserved() = %d after every settlement, want 0", r)
	}
	if adm != used.Load() || w.Total() != used.Load() {
		t.Errorf("counted %d in slots, total %d, want both %d (the tokens reported used)", adm, w.Total(), used.Load())
	}
}

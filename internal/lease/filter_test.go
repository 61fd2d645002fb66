package lease

import (
	"math"
	"math/bits"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestFilterGivesStateOnceCallsFillALease(t *testing.T) {
	// TTL 50 ms, WarmTokens 4, RateWindow 200 ms: 16 calls in a period.
	f := NewFilter(Config{}, 0)
	const h = 0x1234_5678_9abc_def0
	period := int64(DefaultRateWindow)
	steps := []struct {
		at   int64
		n    int64
		want bool
	}{
		{0, 14, false},
		{ms, 1, false},
		{199 * ms, 1, true}, // the 16th call in one period
		{199 * ms, 1, true},
		{period, 1, false}, // a new period counts afresh
		{period + ms, 14, false},
		{period + 2*ms, 1, true},
		{3 * period, 0, false}, // n ≤ 0 counts nothing
		{3 * period, 16, true}, // AllowN(16) at once
		{-1, 16, true},         // clock before the epoch: still one period
	}
	for i, s := range steps {
		if got := f.Note(s.at, h, s.n); got != s.want {
			t.Fatalf("step %d: Note(%d, n=%d) = %v, want %v", i, s.at, s.n, got, s.want)
		}
	}
}

// TestFilterColdKeysStayWithoutState offers the filter many keys each far
// below a lease's worth of calls, spread in time, as 100,000 users would
// be at one SDK: almost none is given state; a hot key among them is,
// within its first period's worth of calls.
func TestFilterColdKeysStayWithoutState(t *testing.T) {
	for _, tc := range []struct {
		keys      int
		perPeriod int // calls of all cold keys in one TTL
	}{
		{100_000, 1_000}, // 20,000 calls/s over 100k keys, 0.2/s each
		{1_000, 1_000},   // 1k keys at 20/s: one call per TTL each
		{10_000, 5_000},  // 100,000 calls/s over 10k keys
	} {
		f := NewFilter(Config{}, 0)
		rng := rand.New(rand.NewPCG(1, 2))
		hashes := make([]uint64, tc.keys)
		for i := range hashes {
			hashes[i] = rng.Uint64()
		}
		hot := rng.Uint64()
		promoted, hotAt := 0, -1
		period := int64(DefaultTTL)
		calls := 20 * tc.perPeriod
		for i := range calls {
			now := int64(i) * period / int64(tc.perPeriod)
			if f.Note(now, hashes[rng.IntN(tc.keys)], 1) {
				promoted++
			}
			if i%(tc.perPeriod/8) == 0 && f.Note(now, hot, 1) && hotAt < 0 {
				hotAt = i
			}
		}
		// Each cold key sees perPeriod/keys calls per TTL on average (at
		// most 1 here, a quarter of WarmTokens).
		if frac := float64(promoted) / float64(calls); frac > 0.001 {
			t.Errorf("%d keys, %d calls per TTL: %.3f %% of cold calls gave state, want < 0.1 %%", tc.keys, tc.perPeriod, 100*frac)
		}
		// The hot key: 8 calls per TTL, twice WarmTokens; within two rate
		// windows (8 TTLs).
		if hotAt < 0 || hotAt > 8*tc.perPeriod {
			t.Errorf("%d keys: hot key (8 calls per TTL) given state at call %d, want within two rate windows (%d calls)", tc.keys, hotAt, 8*tc.perPeriod)
		}
	}
}

// TestFilterIsExactUnderConcurrency: concurrent calls lose no count, and
// once every call has been counted the key reports warm. (Which call first
// sees both of its cells at the threshold depends on the interleaving.)
func TestFilterIsExactUnderConcurrency(t *testing.T) {
	f := NewFilter(Config{WarmTokens: 1000, ColdTokens: 1, RateWindow: DefaultTTL}, 64)
	const h = 42
	var wg sync.WaitGroup
	var hits atomic.Int64
	for range 8 {
		wg.Go(func() {
			for range 250 {
				if f.Note(0, h, 1) {
					hits.Add(1)
				}
			}
		})
	}
	wg.Wait()
	i1, i2 := uint64(h)&f.mask, (bits.RotateLeft64(h, 32)*0x9e3779b97f4a7c15)>>32&f.mask
	for _, i := range []uint64{i1, i2} {
		want := uint64(2000)
		if i1 == i2 {
			want = 4000 // both of the key's cells are one
		}
		if got := f.cells[i].Load() & math.MaxUint32; got != want {
			t.Errorf("cell %d counts %d, want %d (counts lost or doubled)", i, got, want)
		}
	}
	// 2000 calls in one period against a threshold of 1000: about the
	// second half of them reports warm.
	if n := hits.Load(); n < 900 || n > 1001 {
		t.Errorf("%d of 2000 calls reported warm, want about 1000", n)
	}
	if !f.Note(0, h, 1) {
		t.Errorf("the key is not warm after 2000 calls in one period")
	}
}

func TestNewFilterSize(t *testing.T) {
	for _, tc := range []struct{ in, want int }{{0, DefaultFilterCells}, {-5, DefaultFilterCells}, {1, 1}, {3, 4}, {1000, 1024}, {1024, 1024}} {
		if got := len(NewFilter(Config{}, tc.in).cells); got != tc.want {
			t.Errorf("NewFilter(cells=%d) has %d cells, want %d", tc.in, got, tc.want)
		}
	}
}

func TestWarmKeyAsksForALeaseOnItsFirstCall(t *testing.T) {
	k := NewWarmKey(Config{}, 0)
	r := k.Decide(0, 1, "n1")
	if r.Want < DefaultWarmTokens {
		t.Fatalf("first decision of a warm key = %+v, want a lease of at least %d alongside", r, DefaultWarmTokens)
	}
}

// TestColdKeyWithCallsIsForgotten: a key with state whose calls stay below
// a lease's worth loses its state after ForgetAfter cold, although calls
// keep coming (they are decisions by the node with or without state); a
// warm one keeps it.
func TestColdKeyWithCallsIsForgotten(t *testing.T) {
	k := NewWarmKey(Config{}, 0)
	now := int64(0)
	forgotAt := int64(-1)
	for ; now < int64(10*time.Second); now += int64(time.Second) { // 1 call/s
		r := k.Decide(now, 1, "n1")
		k.Apply(now+ms, now, r, &Reply{Node: "n1", Allowed: true, Limit: rate})
		if _, forget := k.Plan(now+2*ms, "n1"); forget {
			forgotAt = now
			break
		}
	}
	if forgotAt < int64(DefaultForgetAfter) || forgotAt > int64(DefaultForgetAfter)+int64(2*time.Second) {
		t.Fatalf("cold key at 1 call/s forgotten at %v, want about %v after it went cold", time.Duration(forgotAt), DefaultForgetAfter)
	}

	w := NewKey(Config{}, 0)
	now = warmUp(t, w, 0)
	for end := now + int64(10*time.Second); now < end; now += int64(5 * time.Millisecond) { // 200/s
		r := w.Decide(now, 1, "n1")
		w.Apply(now+ms, now, r, &Reply{Node: "n1", Allowed: true, Limit: rate})
		if _, forget := w.Plan(now+2*ms, "n1"); forget {
			t.Fatalf("warm key forgotten at %v", time.Duration(now))
		}
	}
}

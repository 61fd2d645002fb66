package transport

import (
	"context"
	"testing"
	"testing/synctest"
	"time"
)

func TestBackoffDelay(t *testing.T) {
	const lo, hi = 50 * time.Millisecond, 2 * time.Second
	steps := []struct {
		n    int
		u    float64
		want time.Duration
	}{
		{0, 0, 50 * time.Millisecond}, // 25 ms clamped up to the minimum
		{0, 0.5, 50 * time.Millisecond},
		{0, 0.999, 74950 * time.Microsecond},
		{1, 0, 50 * time.Millisecond},
		{1, 0.5, 100 * time.Millisecond},
		{2, 0.5, 200 * time.Millisecond},
		{3, 0.25, 300 * time.Millisecond},
		{5, 0.5, 1600 * time.Millisecond},
		{6, 0.5, 2 * time.Second}, // 3.2 s clamped to the cap
		{6, 0, time.Second},       // jitter stays on at the cap
		{100, 0.2, 1400 * time.Millisecond},
	}
	for i, s := range steps {
		if got := backoffDelay(lo, hi, s.n, s.u); got != s.want {
			t.Errorf("step %d: backoffDelay(%v, %v, %d, %v) = %v, want %v", i, lo, hi, s.n, s.u, got, s.want)
		}
	}
	for n := range 70 {
		for _, u := range []float64{0, 0.3, 0.999999} {
			if d := backoffDelay(lo, hi, n, u); d < lo || d > hi {
				t.Fatalf("backoffDelay(n=%d, u=%v) = %v outside [%v, %v]", n, u, d, lo, hi)
			}
		}
	}
}

// TestBackoffWaits checks, on synctest's fake clock, that successive waits
// take the drawn delays, grow to the cap, restart from the minimum after
// reset, and end at once when the context does.
func TestBackoffWaits(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const lo, hi = 50 * time.Millisecond, 2 * time.Second
		b := newBackoff(lo, hi, 42)
		ref := newBackoff(lo, hi, 42) // same seed: the same draws
		ctx := context.Background()
		var waited []time.Duration
		for i := range 10 {
			want := ref.next()
			start := time.Now()
			if !b.wait(ctx) {
				t.Fatalf("wait %d: ended early", i)
			}
			got := time.Since(start)
			if got != want {
				t.Fatalf("wait %d took %v, want %v", i, got, want)
			}
			waited = append(waited, got)
		}
		if waited[0] > 75*time.Millisecond || waited[9] < time.Second {
			t.Errorf("waits %v: want the first within 75ms and the tenth at the cap", waited)
		}
		b.reset()
		ref.reset()
		start := time.Now()
		b.wait(ctx)
		if got := time.Since(start); got > 75*time.Millisecond {
			t.Errorf("first wait after reset took %v", got)
		}
		if d := b.yieldDelay(); d < hi/2 || d > hi {
			t.Errorf("yieldDelay() = %v, want within [%v, %v]", d, hi/2, hi)
		}

		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan bool)
		go func() { done <- b.wait(ctx) }()
		time.Sleep(10 * time.Millisecond)
		cancel()
		start = time.Now()
		if <-done {
			t.Errorf("wait reported a full sleep after cancel")
		}
		if got := time.Since(start); got != 0 {
			t.Errorf("wait returned %v after cancel, want at once", got)
		}
	})
}

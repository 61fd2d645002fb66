package transport

import (
	"context"
	"math/rand/v2"
	"time"
)

// backoffDelay is the wait before redial attempt n (0 for the first retry):
// base = min·2^n capped at max, scaled by a jitter factor 0.5+u for u in
// [0, 1), and clamped to [min, max]. u is a uniform random number; passing it
// in keeps this function pure for tests. Jitter stays on at the cap, so
// peers that lost a node at the same moment do not redial in lockstep.
func backoffDelay(minDelay, maxDelay time.Duration, n int, u float64) time.Duration {
	base := minDelay
	for i := 0; i < n && base < maxDelay; i++ {
		base *= 2
	}
	base = min(base, maxDelay)
	d := time.Duration(float64(base) * (0.5 + u))
	return max(minDelay, min(d, maxDelay))
}

// backoff counts failed attempts and draws jittered delays. It is used by one
// goroutine at a time.
type backoff struct {
	min, max time.Duration
	attempt  int
	rng      *rand.Rand
}

func newBackoff(minDelay, maxDelay time.Duration, seed uint64) *backoff {
	return &backoff{min: minDelay, max: maxDelay, rng: rand.New(rand.NewPCG(seed, seed>>1|1))}
}

// next returns the delay before the next attempt and counts one more.
func (b *backoff) next() time.Duration {
	d := backoffDelay(b.min, b.max, b.attempt, b.rng.Float64())
	if b.attempt < 62 {
		b.attempt++
	}
	return d
}

// yieldDelay is a jittered delay at the cap, DialBackoffMax/2 to
// DialBackoffMax; it does not count as an attempt.
func (b *backoff) yieldDelay() time.Duration {
	return backoffDelay(b.min, b.max, 62, b.rng.Float64())
}

// wait sleeps for the next delay; false if ctx ended first.
func (b *backoff) wait(ctx context.Context) bool { return sleepCtx(ctx, b.next()) }

// sleepCtx sleeps for d; false if ctx ended first.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-timer.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// reset starts again from the minimum.
func (b *backoff) reset() { b.attempt = 0 }

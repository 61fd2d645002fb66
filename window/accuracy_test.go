package window

import (
	"math"
	"math/rand/v2"
	"testing"
	"time"
)

// TestAccuracySingleNode offers one window twice its limit (1000/s) for 60 s
// of simulated time with several arrival patterns and checks the error
// |admitted − limit·60| / (limit·60), the mission's accuracy measure.
//
// On/off demand needs care. With 100 ms on / 100 ms off every 1 s window
// holds the same demand, and the window admits its limit. With 200 ms on /
// 200 ms off (a 400 ms period that does not divide the 1 s window) no exact
// sliding window can: every 1 s window that starts with an on-phase holds
// three on-phases, so if each admits a, 3a ≤ 1000 and the long-run rate is
// at most 1000/1.2 s, 5/6 of the limit. That pattern is held to that
// optimum instead, and its error against the limit is logged.
func TestAccuracySingleNode(t *testing.T) {
	const (
		limit   = 1000
		seconds = 60
		span    = seconds * int64(time.Second)
		gap     = int64(time.Second) / (2 * limit) // mean time between arrivals at 2× the limit
	)
	onOff := func(on int64) func(*rand.Rand) []int64 {
		return func(*rand.Rand) []int64 {
			var ts []int64
			for t := int64(0); t < span; t += gap / 2 { // 4× the limit while on
				if t%(2*on) < on {
					ts = append(ts, t)
				}
			}
			return ts
		}
	}
	patterns := []struct {
		name     string
		arrivals func(*rand.Rand) []int64
		optimum  float64 // the best any exact sliding window can admit, as a fraction of the limit
	}{
		{"uniform", func(*rand.Rand) []int64 {
			var ts []int64
			for t := int64(0); t < span; t += gap {
				ts = append(ts, t)
			}
			return ts
		}, 1},
		{"poisson", func(rng *rand.Rand) []int64 {
			var ts []int64
			for t := int64(rng.ExpFloat64() * float64(gap)); t < span; t += int64(rng.ExpFloat64() * float64(gap)) {
				ts = append(ts, t)
			}
			return ts
		}, 1},
		{"on/off 100 ms", onOff(100 * int64(time.Millisecond)), 1},
		{"on/off 200 ms", onOff(200 * int64(time.Millisecond)), 5.0 / 6},
	}
	for _, p := range patterns {
		t.Run(p.name, func(t *testing.T) {
			w := mustNew(t, "1000/s", t0)
			arrivals := p.arrivals(rand.New(rand.NewPCG(42, 7)))
			var admitted []int64
			perSlot := map[int64]int64{}
			for _, at := range arrivals {
				if w.Allow(t0 + at) {
					admitted = append(admitted, at)
					perSlot[EpochOf(t0+at)]++
				}
			}
			n := int64(len(admitted))
			want := float64(limit * seconds)
			errLimit := math.Abs(float64(n)-want) / want
			errOptimum := math.Abs(float64(n)-want*p.optimum) / (want * p.optimum)

			// The largest count in any 10 consecutive slots (the window's
			// promise) and in any 1 s interval of continuous time.
			var maxSlots, run int64
			for e := EpochOf(t0); e < EpochOf(t0+span); e++ {
				run += perSlot[e] - perSlot[e-10]
				maxSlots = max(maxSlots, run)
			}
			var maxSecond int
			for i, j := 0, 0; j < len(admitted); j++ {
				for admitted[j]-admitted[i] >= int64(time.Second) {
					i++
				}
				maxSecond = max(maxSecond, j-i+1)
			}
			t.Logf("%-14s offered %6d admitted %6d error vs limit %6.3f %%, vs best exact window %6.3f %%; max in 10 slots %d, max in any 1 s %d (%.3f× the limit)",
				p.name, len(arrivals), n, 100*errLimit, 100*errOptimum, maxSlots, maxSecond, float64(maxSecond)/limit)
			if errOptimum > 0.005 {
				t.Errorf("admitted %d in %d s, error %.3f %% against the best an exact sliding window can do (%.0f), want at most 0.5 %%", n, seconds, 100*errOptimum, want*p.optimum)
			}
			if maxSlots > limit {
				t.Errorf("%d admitted in 10 consecutive slots, want at most %d", maxSlots, limit)
			}
		})
	}
}

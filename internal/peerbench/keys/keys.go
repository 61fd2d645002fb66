// Package keys draws which key each request of a many-key load names: n
// keys of equal popularity (uniform) or with key i's popularity
// proportional to 1/(i+1)^s (Zipf), as a precomputed, seeded sequence that
// a recording limiter walks through (score.Recorder).
//
// It is the peer benchmark's own small generator. The repository's
// internal/workload describes many-key loads for the simulator and
// `quotamesh bench` (placement, shapes, arrivals); once it is on main,
// this package should give way to it, so that every harness draws keys the
// same way.
package keys

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
)

// Dist is a key popularity distribution.
type Dist string

// The distributions.
const (
	Uniform Dist = "uniform"
	Zipf    Dist = "zipf"
)

// ErrInvalid reports a bad distribution or parameter.
var ErrInvalid = errors.New("peerbench/keys: invalid key distribution")

// MaxKeys is the most keys a distribution may name.
const MaxKeys = 10_000_000

// ParseDist reads a distribution name.
func ParseDist(s string) (Dist, error) {
	switch Dist(s) {
	case Uniform, Zipf:
		return Dist(s), nil
	}
	return "", fmt.Errorf("%w %q: use uniform or zipf", ErrInvalid, s)
}

// Spec is a key popularity: N keys drawn by Dist, with exponent S for Zipf.
type Spec struct {
	N    int
	Dist Dist
	S    float64
}

// Validate names the first bad field.
func (s Spec) Validate() error {
	if _, err := ParseDist(string(s.Dist)); err != nil {
		return err
	}
	switch {
	case s.N < 1 || s.N > MaxKeys:
		return fmt.Errorf("%w: %d keys, want 1 to %d", ErrInvalid, s.N, MaxKeys)
	case s.Dist == Zipf && !(s.S > 0 && s.S <= 10):
		return fmt.Errorf("%w: zipf exponent %v, want more than 0 and at most 10", ErrInvalid, s.S)
	}
	return nil
}

// Sequence returns length key indices (each in [0, N)) drawn from s with
// seed. s must be valid.
func Sequence(s Spec, length int, seed uint64) []uint32 {
	rng := rand.New(rand.NewPCG(seed, 0x6b657973))
	out := make([]uint32, length)
	if s.Dist != Zipf || s.N == 1 {
		for i := range out {
			out[i] = uint32(rng.IntN(s.N))
		}
		return out
	}
	cdf := zipfCDF(s.N, s.S)
	total := cdf[len(cdf)-1]
	for i := range out {
		u := rng.Float64() * total
		k, _ := slices.BinarySearch(cdf, u)
		out[i] = uint32(min(k, s.N-1))
	}
	return out
}

// zipfCDF is the running sum of (i+1)^-s for i in [0, n).
func zipfCDF(n int, s float64) []float64 {
	cdf := make([]float64, n)
	sum := 0.0
	for i := range cdf {
		sum += math.Pow(float64(i+1), -s)
		cdf[i] = sum
	}
	return cdf
}

// Share is the expected share of requests that name key i under s (s
// valid, 0 ≤ i < N).
func Share(s Spec, i int) float64 {
	if s.Dist != Zipf {
		return 1 / float64(s.N)
	}
	cdf := zipfCDF(s.N, s.S)
	return math.Pow(float64(i+1), -s.S) / cdf[len(cdf)-1]
}

package keys

import (
	"errors"
	"math"
	"testing"
)

func TestSequenceFollowsTheDistribution(t *testing.T) {
	const n = 50
	const length = 200_000
	for _, spec := range []Spec{{N: n, Dist: Uniform}, {N: n, Dist: Zipf, S: 1}, {N: n, Dist: Zipf, S: 1.5}} {
		seq := Sequence(spec, length, 7)
		counts := make([]int, n)
		for _, k := range seq {
			if int(k) >= n {
				t.Fatalf("%+v: key %d out of [0, %d)", spec, k, n)
			}
			counts[k]++
		}
		for _, i := range []int{0, 1, 9, n - 1} {
			want := Share(spec, i) * length
			// Five standard deviations of a binomial count.
			tol := 5 * math.Sqrt(want*(1-want/length))
			if got := float64(counts[i]); math.Abs(got-want) > tol {
				t.Errorf("%+v: key %d drawn %v times, want %.0f ± %.0f", spec, i, got, want, tol)
			}
		}
	}
}

func TestSequenceIsSeeded(t *testing.T) {
	spec := Spec{N: 1000, Dist: Zipf, S: 1}
	a, b, c := Sequence(spec, 100, 1), Sequence(spec, 100, 1), Sequence(spec, 100, 2)
	same, diff := true, false
	for i := range a {
		same = same && a[i] == b[i]
		diff = diff || a[i] != c[i]
	}
	if !same || !diff {
		t.Fatalf("same seed same sequence: %v, other seed other sequence: %v; want both", same, diff)
	}
}

func TestZipfSharesSumToOne(t *testing.T) {
	spec := Spec{N: 1000, Dist: Zipf, S: 1}
	sum := 0.0
	for i := range spec.N {
		sum += Share(spec, i)
	}
	if math.Abs(sum-1) > 1e-9 {
		t.Fatalf("shares sum to %v, want 1", sum)
	}
	// Harmonic number H(1000) ≈ 7.4855: the top key has 1/H of the load.
	if got, want := Share(spec, 0), 1/7.485470860550345; math.Abs(got-want) > 1e-9 {
		t.Fatalf("top key's share %v, want %v", got, want)
	}
}

func TestValidate(t *testing.T) {
	for _, s := range []Spec{{N: 0, Dist: Uniform}, {N: 10, Dist: "pareto"}, {N: 10, Dist: Zipf}, {N: MaxKeys + 1, Dist: Uniform}} {
		if err := s.Validate(); !errors.Is(err, ErrInvalid) {
			t.Errorf("Validate(%+v) = %v, want ErrInvalid", s, err)
		}
	}
	if err := (Spec{N: 1, Dist: Uniform}).Validate(); err != nil {
		t.Errorf("one uniform key: %v", err)
	}
}

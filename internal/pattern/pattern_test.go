package pattern

import (
	"errors"
	"math"
	"testing"
	"time"
)

func TestParse(t *testing.T) {
	for _, n := range Names {
		if got, err := Parse(string(n)); err != nil || got != n {
			t.Errorf("Parse(%q) = %v, %v", n, got, err)
		}
	}
	if _, err := Parse("zigzag"); !errors.Is(err, ErrInvalid) {
		t.Errorf("Parse(zigzag) = %v, want ErrInvalid", err)
	}
	if _, err := ParseArrival("bursty"); !errors.Is(err, ErrInvalid) {
		t.Errorf("ParseArrival(bursty) = %v, want ErrInvalid", err)
	}
}

func TestRates(t *testing.T) {
	base := Load{Nodes: 3, Limit: 1000, Duration: 60 * time.Second}.WithDefaults()
	tests := []struct {
		pattern Name
		node    int
		at      time.Duration
		want    float64
	}{
		{Uniform, 0, 0, 2000.0 / 3},
		{Skew90, 0, 10 * time.Second, 1800},
		{Skew90, 2, 10 * time.Second, 100},
		{Burst, 1, 50 * time.Millisecond, 4000.0 / 3},
		{Burst, 1, 250 * time.Millisecond, 0},
		{Rotate, 0, 4 * time.Second, 1800},
		{Rotate, 1, 6 * time.Second, 1800},
		{Rotate, 0, 6 * time.Second, 100},
		{Rotate, 0, 16 * time.Second, 1800},
		{Ramp, 0, 0, 0},
		{Ramp, 0, 30 * time.Second, 4000.0 / 3},
		{Ramp, 0, 45 * time.Second, 2000.0 / 3},
	}
	for i, tt := range tests {
		l := base
		l.Pattern = tt.pattern
		if got := l.Rate(tt.node, tt.at); math.Abs(got-tt.want) > 1e-9 {
			t.Errorf("step %d: %s Rate(%d, %v) = %v, want %v", i, tt.pattern, tt.node, tt.at, got, tt.want)
		}
	}
}

// TestArrivalsMatchRates: over a run, each pattern offers 2× the limit on
// average, and the arrivals of every node add up to the integral of its rate.
func TestArrivalsMatchRates(t *testing.T) {
	for _, kind := range []Arrival{Even, Poisson} {
		for _, name := range Names {
			l := Load{Pattern: name, Nodes: 3, Limit: 1000, Duration: 20 * time.Second}.WithDefaults()
			if err := l.Validate(); err != nil {
				t.Fatal(err)
			}
			total := 0
			for node := range l.Nodes {
				a := NewArrivals(l, node, kind, 42)
				prev := time.Duration(-1)
				for {
					at, ok := a.Next()
					if !ok {
						break
					}
					if at < prev || at >= l.Duration {
						t.Fatalf("%s/%s node %d: arrival %v after %v (duration %v)", name, kind, node, at, prev, l.Duration)
					}
					prev = at
					total++
				}
			}
			want := 2 * 1000 * 20.0
			tol := 0.002
			if kind == Poisson {
				tol = 0.02
			}
			if math.Abs(float64(total)-want)/want > tol {
				t.Errorf("%s/%s: %d arrivals in 20 s, want %v (±%v%%)", name, kind, total, want, tol*100)
			}
		}
	}
}

func TestValidateNamesField(t *testing.T) {
	bad := []Load{
		{Pattern: "nope", Nodes: 1, Limit: 1, Duration: time.Second},
		{Pattern: Uniform, Nodes: 0, Limit: 1, Duration: time.Second},
		{Pattern: Uniform, Nodes: 1, Limit: 0, Duration: time.Second},
		{Pattern: Uniform, Nodes: 1, Limit: 1, Duration: 0},
	}
	for i, l := range bad {
		if err := l.WithDefaults().Validate(); !errors.Is(err, ErrInvalid) {
			t.Errorf("step %d: Validate(%+v) = %v, want ErrInvalid", i, l, err)
		}
	}
}

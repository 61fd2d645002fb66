package accuracy

import (
	"math"
	"testing"
	"time"
)

func ms(v ...int) []time.Duration {
	out := make([]time.Duration, len(v))
	for i, x := range v {
		out[i] = time.Duration(x) * time.Millisecond
	}
	return out
}

func TestMaxWindow(t *testing.T) {
	tests := []struct {
		times []time.Duration
		want  int
	}{
		{nil, 0},
		{ms(0), 1},
		{ms(0, 999), 2},
		{ms(0, 1000), 1},            // half-open: 1000 is the next window
		{ms(500, 0, 1499, 1500), 2}, // unsorted input
		{ms(0, 10, 20, 1005, 1015, 1025), 3},
	}
	for i, tt := range tests {
		if got := MaxWindow(tt.times, time.Second); got != tt.want {
			t.Errorf("step %d: MaxWindow(%v) = %d, want %d", i, tt.times, got, tt.want)
		}
	}
}

func TestFill(t *testing.T) {
	r := Report{Ideal: 100, PerNode: []NodeReport{{Node: "a", Offered: 150, Admitted: 60}, {Node: "b", Offered: 50, Admitted: 45}}}
	r.Fill(ms(0, 1, 2, 3), 2, time.Second)
	if r.Offered != 200 || r.Admitted != 105 || math.Abs(r.Error-0.05) > 1e-12 || r.MaxWindowRatio != 2 {
		t.Errorf("Fill = %+v, want offered 200, admitted 105, error 0.05, ratio 2", r)
	}
	if Error(0, 0) != 0 || !math.IsInf(Error(1, 0), 1) {
		t.Error("Error edge cases wrong")
	}
}

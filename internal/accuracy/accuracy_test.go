package accuracy

import (
	"math"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/quotamesh/quotamesh/limits"
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

// Ideal with a limit of 2 per second (slots of 100 ms, on the wall clock
// from base): steps of intended times and what one perfect window admits.
func TestIdeal(t *testing.T) {
	rate := limits.Rate{Count: 2, Window: time.Second}
	const base = int64(1_700_000_000) * int64(time.Second) // a slot edge
	tests := []struct {
		base     int64
		intended []time.Duration
		want     []time.Duration
	}{
		{base, nil, nil},
		{base, ms(0), ms(0)},
		{base, ms(0, 10, 20), ms(0, 10)}, // the third is over the limit
		{base, ms(20, 0, 10), ms(0, 10)}, // sorted first
		{base, ms(0, 10, 999, 1000, 1001, 1002), ms(0, 10, 1000, 1001)},               // the window slides by slots
		{base, ms(0, 950, 1000, 1050), ms(0, 950, 1000)},                              // 950 ms is in the slot of 900, still in the window at 1.0 s
		{base + 50*int64(time.Millisecond), ms(0, 10, 950, 960), ms(0, 10, 950, 960)}, // slot edges on the wall clock
	}
	for i, tt := range tests {
		n, got := Ideal(slices.Clone(tt.intended), rate, tt.base)
		if n != int64(len(got)) || !slices.Equal(got, tt.want) {
			t.Errorf("step %d: Ideal(%v) = %d, %v, want %v", i, tt.intended, n, got, tt.want)
		}
	}
}

func TestMaxSlotWindow(t *testing.T) {
	tests := []struct {
		counts []int64
		k      int
		want   int64
	}{
		{nil, 10, 0},
		{[]int64{3}, 10, 3},
		{[]int64{1, 2, 3}, 10, 6}, // fewer slots than a window
		{[]int64{1, 2, 3}, 1, 3},
		{[]int64{5, 0, 0, 1, 1}, 3, 5},
		{[]int64{5, 0, 0, 1, 1}, 2, 5},
		{[]int64{1, 0, 4, 4, 0, 1}, 2, 8},
		{[]int64{1, 0, 4, 4, 0, 1}, 4, 9},
	}
	for i, tt := range tests {
		if got := MaxSlotWindow(tt.counts, tt.k); got != tt.want {
			t.Errorf("step %d: MaxSlotWindow(%v, %d) = %d, want %d", i, tt.counts, tt.k, got, tt.want)
		}
	}
}

func TestTarget(t *testing.T) {
	tests := []struct {
		perSecond float64
		d         time.Duration
		want      int64
	}{
		{1000, 0, 0},
		{1000, 2 * time.Second, 2000},
		{1000, 1500 * time.Millisecond, 1500},
		{3, 500 * time.Millisecond, 2}, // 1.5 rounds up
		{3, 100 * time.Millisecond, 0}, // 0.3 rounds down
		{0.5, 3 * time.Second, 2},
	}
	for i, tt := range tests {
		if got := Target(tt.perSecond, tt.d); got != tt.want {
			t.Errorf("step %d: Target(%v, %v) = %d, want %d", i, tt.perSecond, tt.d, got, tt.want)
		}
	}
}

func TestWriteTable(t *testing.T) {
	r := Report{Offered: 150, Admitted: 60, PerNode: []NodeReport{{Node: "n1", Offered: 100, Admitted: 50}, {Node: "n2", Offered: 50, Admitted: 10}}}
	var b strings.Builder
	if err := r.WriteTable(&b); err != nil {
		t.Fatal(err)
	}
	want := "     node  offered  admitted\n       n1      100        50\n       n2       50        10\n  cluster      150        60\n"
	if b.String() != want {
		t.Errorf("WriteTable wrote\n%q, want\n%q", b.String(), want)
	}
}

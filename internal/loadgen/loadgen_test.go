package loadgen

import (
	"context"
	"errors"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/quotamesh/quotamesh"
	"github.com/quotamesh/quotamesh/internal/pattern"
	"github.com/quotamesh/quotamesh/limits"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// everyOther admits every other call and fails every fifth with err.
type everyOther struct {
	calls atomic.Int64
	err   error
}

func (l *everyOther) Allow(ctx context.Context, key string) (quotamesh.Decision, error) {
	return l.AllowN(ctx, key, 1)
}

func (l *everyOther) AllowN(context.Context, string, int64) (quotamesh.Decision, error) {
	n := l.calls.Add(1)
	if l.err != nil && n%5 == 0 {
		return quotamesh.Decision{}, l.err
	}
	return quotamesh.Decision{Allowed: n%2 == 1}, nil
}

func (*everyOther) Close() error { return nil }

func spec(workers int, batch bool) Spec {
	return Spec{
		Load:     pattern.Load{Pattern: pattern.Uniform, Nodes: 2, Limit: 100, Multiplier: 2, Duration: time.Second}.WithDefaults(),
		Arrivals: pattern.Even, Seed: 1, Key: "k", Limit: limits.Rate{Count: 100, Window: time.Second},
		Workers: workers, MaxLag: DefaultMaxLag, Tick: 20 * time.Microsecond, Batch: batch,
	}
}

// A one-second load of 200/s on two nodes, in each way of making the
// calls: every arrival is offered and answered, per node and in all, and
// the figures agree with each other.
func TestRun(t *testing.T) {
	for _, tc := range []struct {
		name    string
		workers int
		batch   bool
	}{{"inline", 0, true}, {"batched workers", 4, true}, {"one call per worker", 8, false}} {
		t.Run(tc.name, func(t *testing.T) {
			lims := []quotamesh.Limiter{&everyOther{}, &everyOther{}}
			r := Run(context.Background(), lims, []string{"a", "b"}, spec(tc.workers, tc.batch))
			if r.Offered < 198 || r.Offered > 202 || r.Answered != r.Offered || r.Errors != 0 || r.Unsent != 0 {
				t.Fatalf("offered %d, answered %d, errors %d, unsent %d; want about 200 offered, all answered", r.Offered, r.Answered, r.Errors, r.Unsent)
			}
			if len(r.PerNode) != 2 || r.PerNode[0].Node != "a" || r.PerNode[1].Node != "b" {
				t.Fatalf("per node %+v, want a and b", r.PerNode)
			}
			for _, n := range r.PerNode {
				if want := (n.Offered + 1) / 2; n.Admitted != want {
					t.Errorf("%s admitted %d of %d, want every other (%d)", n.Node, n.Admitted, n.Offered, want)
				}
			}
			var perSec int64
			for _, v := range r.PerSecond {
				perSec += v
			}
			if len(r.PerSecond) != 1 || perSec > r.Admitted {
				t.Errorf("per second %v, want one second holding at most the %d admitted", r.PerSecond, r.Admitted)
			}
			// The ideal admits the limit (100) of 200 evenly spaced, and
			// more as the slots of the load's first 100 ms leave the window
			// before the second ends: its slot edges are the wall clock's,
			// not the load's start.
			if r.Ideal < 100 || r.Ideal > 125 || r.IdealMaxWindowRatio <= 0 || r.IdealMaxWindowRatio > 2 {
				t.Errorf("ideal %d (max window ratio %v), want about 100", r.Ideal, r.IdealMaxWindowRatio)
			}
			if r.P50us <= 0 || r.P99us < r.P50us || r.MaxUs < r.P99us || r.GenP50us <= 0 || r.AchievedRPS <= 0 || r.Elapsed == "" {
				t.Errorf("latencies p50 %v p99 %v max %v, generator p50 %v, %v/s over %s: want positive and ordered",
					r.P50us, r.P99us, r.MaxUs, r.GenP50us, r.AchievedRPS, r.Elapsed)
			}
			if r.Pattern != "uniform" || r.Nodes != 2 || r.Limit != "100/s" || r.Duration != "1s" {
				t.Errorf("report header %+v", r.Report)
			}
		})
	}
}

// Errors are counted, not answered, and the first is named with its node.
func TestRunErrors(t *testing.T) {
	boom := errors.New("boom")
	r := Run(context.Background(), []quotamesh.Limiter{&everyOther{err: boom}}, []string{"a"}, spec(0, true))
	if r.Errors == 0 || r.Answered+r.Errors != r.Offered || r.FirstError != "a: boom" {
		t.Errorf("errors %d, answered %d of %d, first %q; want every fifth an error, named", r.Errors, r.Answered, r.Offered, r.FirstError)
	}
}

// A cancelled context ends the run early with what was measured.
func TestRunCancelled(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	s := spec(2, true)
	s.Load.Duration = time.Minute
	start := time.Now()
	r := Run(ctx, []quotamesh.Limiter{&everyOther{}, &everyOther{}}, []string{"a", "b"}, s)
	if took := time.Since(start); took > 10*time.Second {
		t.Errorf("Run took %v after its context ended", took)
	}
	if r.Offered == 0 || r.Offered > 1000 {
		t.Errorf("offered %d before the cancel, want some (about 40)", r.Offered)
	}
}

func TestPerSecond(t *testing.T) {
	s := time.Second
	tests := []struct {
		admits []time.Duration
		d      time.Duration
		want   []int64
	}{
		{nil, 2 * s, []int64{0, 0}},
		{[]time.Duration{0, s / 2, s, 2*s - 1}, 2 * s, []int64{2, 2}},
		{[]time.Duration{0, 2 * s, -s - 1}, 2 * s, []int64{1, 0}}, // outside the load: left out
		{[]time.Duration{s}, 1500 * time.Millisecond, []int64{0, 1}},
	}
	for i, tt := range tests {
		if got := perSecond(tt.admits, tt.d); !slices.Equal(got, tt.want) {
			t.Errorf("step %d: perSecond(%v, %v) = %v, want %v", i, tt.admits, tt.d, got, tt.want)
		}
	}
}

func TestExpectedArrivals(t *testing.T) {
	l := pattern.Load{Pattern: pattern.Uniform, Nodes: 2, Limit: 1000, Multiplier: 2, Duration: 10 * time.Second}.WithDefaults()
	if got := expectedArrivals(l, 0); got < 10_000 || got > 11_000 {
		t.Errorf("expectedArrivals(1000/s for 10 s) = %d, want 10000 and a little room", got)
	}
	l.Limit, l.Duration = 1e9, time.Hour
	if got := expectedArrivals(l, 0); got != 1e7 {
		t.Errorf("expectedArrivals of a huge load = %d, want the cap 1e7", got)
	}
}

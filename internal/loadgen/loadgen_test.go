package loadgen

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/quotamesh/quotamesh"
	"github.com/quotamesh/quotamesh/internal/workload"
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
		Workload: workload.Spec{Nodes: 2, Rule: "k", Limit: limits.Rate{Count: 100, Window: time.Second}, Duration: time.Second, Seed: 1},
		Name:     "uniform", Workers: workers, MaxLag: DefaultMaxLag, Tick: 20 * time.Microsecond, Batch: batch,
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

// Calls answered "overloaded" (the SDK's overload policy) are neither
// decisions nor errors: they are counted apart, with their own latency,
// for the workers and for calls the generator makes.
func TestRunOverloaded(t *testing.T) {
	overloaded := fmt.Errorf("client: node answered: %w", quotamesh.ErrOverloaded)
	for _, workers := range []int{0, 4} {
		r := Run(context.Background(), []quotamesh.Limiter{&everyOther{err: overloaded}}, []string{"a"}, spec(workers, false))
		if r.Overloaded == 0 || r.Errors != 0 || r.Answered+r.Overloaded != r.Offered || r.FirstError != "" {
			t.Errorf("workers %d: overloaded %d, errors %d (%q), answered %d of %d; want every fifth overloaded, no error",
				workers, r.Overloaded, r.Errors, r.FirstError, r.Answered, r.Offered)
		}
		if want := r.Offered / 5; r.Overloaded < want-1 || r.Overloaded > want+1 {
			t.Errorf("workers %d: overloaded %d of %d, want every fifth", workers, r.Overloaded, r.Offered)
		}
		if r.OverloadedP50us <= 0 || r.OverloadedP99us < r.OverloadedP50us {
			t.Errorf("workers %d: overloaded latency p50 %v, p99 %v; want positive and ordered", workers, r.OverloadedP50us, r.OverloadedP99us)
		}
	}
}

// A cancelled context ends the run early with what was measured.
func TestRunCancelled(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	s := spec(2, true)
	s.Workload.Duration = time.Minute
	start := time.Now()
	r := Run(ctx, []quotamesh.Limiter{&everyOther{}, &everyOther{}}, []string{"a", "b"}, s)
	if took := time.Since(start); took > 10*time.Second {
		t.Errorf("Run took %v after its context ended", took)
	}
	if r.Offered == 0 || r.Offered > 1000 {
		t.Errorf("offered %d before the cancel, want some (about 40)", r.Offered)
	}
}

// Many keys: every request is offered for a key of the workload, and each
// key's figures come back (the limiter admits every other call, whatever
// the key: about half of each key's requests).
func TestRunManyKeys(t *testing.T) {
	s := spec(2, true)
	s.Workload.Rule, s.Workload.Keys, s.Workload.Limit = "user:*", 50, limits.Rate{Count: 10, Window: time.Second}
	seen := &keysSeen{}
	r := Run(context.Background(), []quotamesh.Limiter{seen, seen}, []string{"a", "b"}, s)
	if r.Offered < 990 || r.Offered > 1010 || r.Answered != r.Offered {
		t.Fatalf("offered %d, answered %d; want about 1000 (50 keys × 2 × 10/s), all answered", r.Offered, r.Answered)
	}
	if r.PerKey.Keys != 50 || r.PerKey.Offered != 50 || r.PerKey.Worst.Key == "" || r.Workload == "" {
		t.Errorf("per key %+v, workload %q; want 50 keys offered and a worst key", r.PerKey, r.Workload)
	}
	seen.mu.Lock()
	defer seen.mu.Unlock()
	if len(seen.keys) != 50 {
		t.Errorf("the limiter saw %d keys, want 50", len(seen.keys))
	}
	for k := range seen.keys {
		if !strings.HasPrefix(k, "user:") {
			t.Errorf("key %q is not under user:*", k)
		}
	}
}

type keysSeen struct {
	everyOther
	mu   sync.Mutex
	keys map[string]bool
}

func (l *keysSeen) Allow(ctx context.Context, key string) (quotamesh.Decision, error) {
	l.mu.Lock()
	if l.keys == nil {
		l.keys = map[string]bool{}
	}
	l.keys[key] = true
	l.mu.Unlock()
	return l.everyOther.AllowN(ctx, key, 1)
}

// An admission is timed by whoever decided it: the node's clock when the
// decision carries it, else the harness's clock at the answer. Both are on
// the run's scale (since start, whose wall clock reading is the base), so
// a node's decision just before a second's edge stays in that second
// though its answer arrives in the next.
func TestDecidedAt(t *testing.T) {
	start := time.Unix(1_700_000_000, 0) // a whole second
	ms := func(v int) time.Duration { return time.Duration(v) * time.Millisecond }
	for i, tc := range []struct {
		decided time.Time
		done    time.Duration
		want    time.Duration
	}{
		{time.Time{}, ms(1003), ms(1003)},                                       // a lease's admission: the SDK's clock at the call
		{start.Add(ms(998)), ms(1003), ms(998)},                                 // the node's time, in second 0
		{start.Add(ms(1001)), ms(1003), ms(1001)},                               // in second 1
		{start.Add(-ms(2)), ms(1), -ms(2)},                                      // before the run's start, by the node's clock
		{start.Add(ms(1010)), ms(1003), ms(1010)},                               // a node clock ahead of the harness's: its own time
		{time.Unix(0, start.UnixNano()+5), ms(9), 5},                            // no monotonic reading on either side needed
		{start.Add(ms(500)).Round(0), ms(700), ms(500)},                         // a decision time stripped of its monotonic reading
		{start.Add(ms(1500)).In(time.FixedZone("x", 3600)), ms(1501), ms(1500)}, // any location
	} {
		d := quotamesh.Decision{Allowed: true, Decided: tc.decided}
		if got := decidedAt(d, start, tc.done); got != tc.want {
			t.Errorf("step %d: decidedAt(Decided %v, done %v) = %v; want %v", i, tc.decided, tc.done, got, tc.want)
		}
	}
}

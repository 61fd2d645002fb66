package score

import (
	"context"
	"errors"
	"math"
	"testing"
	"time"

	"github.com/quotamesh/quotamesh"
	"github.com/quotamesh/quotamesh/limits"
)

// base is a whole second of the wall clock, so aligned windows start at
// the records' 0, 1 s, 2 s, ...
const base = int64(1_800_000_000) * int64(time.Second)

var tenPerSecond = limits.MustParseRate("10/s")

// evenly makes n records of key, every gap from start, admitted for the
// first admitted of them and denied after (Done = Start).
func evenly(key uint32, n, admitted int, start, gap time.Duration) []Record {
	var out []Record
	for i := range n {
		t := int64(start + time.Duration(i)*gap)
		o := Denied
		if i < admitted {
			o = Admitted
		}
		out = append(out, Record{Intended: t, Start: t, Done: t, Key: key, Outcome: o})
	}
	return out
}

func TestEvaluateSteps(t *testing.T) {
	ms := time.Millisecond
	failedOne := evenly(0, 5, 4, 0, 100*ms)
	failedOne[4].Outcome = Failed
	steps := []struct {
		name                                   string
		recs                                   []Record
		nkeys                                  int
		ideal                                  int64
		under, over, maxAligned                float64
		underLimit, falseDenials, failed, keys int64
	}{
		{"2x the limit, exact", evenly(0, 20, 10, 0, 50*ms), 1, 10, 0, 0, 1, 10, 0, 0, 1},
		{"2x the limit, 2 too many", evenly(0, 20, 12, 0, 50*ms), 1, 10, 0, 0.2, 1.2, 10, 0, 0, 1},
		{"half the limit, one denied", evenly(0, 5, 4, 0, 100*ms), 1, 5, 0.2, 0, 0.4, 5, 1, 0, 1},
		{"a failed call is neither admitted nor denied", failedOne, 1, 5, 0.2, 0, 0.4, 5, 0, 1, 1},
		{"two keys: errors add over the sum of ideals", append(evenly(0, 20, 10, 0, 50*ms), evenly(3, 5, 4, 0, 100*ms)...), 4,
			15, 1.0 / 15, 0, 1, 15, 1, 0, 2},
		{"a burst each side of a second edge: aligned windows hold 10 each",
			append(evenly(0, 10, 10, 900*ms, ms), evenly(0, 10, 10, 1050*ms, ms)...), 1, 10, 0, 1, 1, 10, 0, 0, 1},
	}
	for i, st := range steps {
		got := Evaluate(st.recs, st.nkeys, tenPerSecond, base)
		if got.Ideal != st.ideal || !near(got.Under, st.under) || !near(got.Over, st.over) || !near(got.Error, st.under+st.over) ||
			!near(got.MaxAligned, st.maxAligned) || got.UnderLimit != st.underLimit || got.FalseDenials != st.falseDenials ||
			got.Failed != st.failed || int64(got.Keys) != st.keys {
			t.Errorf("step %d (%s): Evaluate = ideal %d, under %.4f, over %.4f, error %.4f, max aligned %.2f, under limit %d, false denials %d, failed %d, keys %d;\n"+
				"want ideal %d, under %.4f, over %.4f, max aligned %.2f, under limit %d, false denials %d, failed %d, keys %d",
				i, st.name, got.Ideal, got.Under, got.Over, got.Error, got.MaxAligned, got.UnderLimit, got.FalseDenials, got.Failed, got.Keys,
				st.ideal, st.under, st.over, st.maxAligned, st.underLimit, st.falseDenials, st.failed, st.keys)
		}
		if got.IdealMaxAligned > 1 {
			t.Errorf("step %d (%s): the ideal's largest aligned window is %.2f of the limit, want at most 1", i, st.name, got.IdealMaxAligned)
		}
		if got.Offered != int64(len(st.recs)) || got.Admitted+got.Denied+got.Failed+got.Pending != got.Offered {
			t.Errorf("step %d (%s): offered %d = admitted %d + denied %d + failed %d + pending %d, want %d offered",
				i, st.name, got.Offered, got.Admitted, got.Denied, got.Failed, got.Pending, len(st.recs))
		}
	}
}

func TestMaxAlignedFollowsTheWallClock(t *testing.T) {
	ms := time.Millisecond
	times := []time.Duration{100 * ms, 600 * ms, 700 * ms, 1200 * ms}
	// From a whole second: [0,1 s) holds 3.
	if got := MaxAligned(append([]time.Duration(nil), times...), time.Second, base); got != 3 {
		t.Errorf("base on a second: %d, want 3", got)
	}
	// From half a second in: the times fall at 0.6, 1.1, 1.2, 1.7 s of the
	// clock, so [1 s, 2 s) holds 3 again, [0 s, 1 s) one.
	if got := MaxAligned(append([]time.Duration(nil), times...), time.Second, base+int64(500*ms)); got != 3 {
		t.Errorf("base half a second in: %d, want 3", got)
	}
	if got := MaxAligned(nil, time.Second, base); got != 0 {
		t.Errorf("no times: %d, want 0", got)
	}
	// Before the epoch: windows round down.
	if got := MaxAligned([]time.Duration{0, 200 * ms}, time.Second, -int64(100*ms)); got != 1 {
		t.Errorf("across 0 of the clock from −100 ms: %d, want 1", got)
	}
}

// allowFirst admits its first n calls and fails calls for the key "bad".
type allowFirst struct {
	n    int
	keys []string
}

func (a *allowFirst) Allow(ctx context.Context, key string) (quotamesh.Decision, error) {
	return a.AllowN(ctx, key, 1)
}

func (a *allowFirst) AllowN(_ context.Context, key string, _ int64) (quotamesh.Decision, error) {
	a.keys = append(a.keys, key)
	if key == "bad" {
		return quotamesh.Decision{}, quotamesh.ErrUnavailable
	}
	a.n--
	return quotamesh.Decision{Allowed: a.n >= 0}, nil
}

func (a *allowFirst) Close() error { return nil }

func TestRecorder(t *testing.T) {
	inner := &allowFirst{n: 3}
	names := []string{"a", "b", "bad"}
	ms := time.Millisecond
	arrivals := []time.Duration{0, 10 * ms, 20 * ms, 30 * ms, 40 * ms}
	base := time.Now()
	r := NewRecorder(inner, names, []uint32{0, 1, 2, 1}, arrivals, base)
	if err := r.Prime(context.Background()); err != nil {
		t.Fatalf("Prime: %v", err)
	}
	r.StartLoad(base.Add(time.Second))
	for range 6 {
		_, err := r.Allow(context.Background(), "ignored")
		if err != nil && !errors.Is(err, quotamesh.ErrUnavailable) {
			t.Fatalf("Allow: %v", err)
		}
	}
	if got, want := inner.keys, []string{"a", "a", "b", "bad", "b", "a", "b"}; !equal(got, want) {
		t.Fatalf("keys called %q, want %q", got, want)
	}
	recs := r.Records()
	want := []struct {
		key      uint32
		o        Outcome
		intended time.Duration
	}{{0, Admitted, -1}, {0, Admitted, time.Second}, {1, Admitted, time.Second + 10*ms}, {2, Failed, time.Second + 20*ms},
		{1, Denied, time.Second + 30*ms}, {0, Denied, time.Second + 40*ms}}
	if len(recs) != len(want) || r.Dropped() != 1 {
		t.Fatalf("%d records, %d dropped; want %d and 1", len(recs), r.Dropped(), len(want))
	}
	for i, w := range want {
		rec := recs[i]
		if w.intended < 0 { // the prime call: intended when it began
			w.intended = time.Duration(rec.Start)
		}
		if rec.Key != w.key || rec.Outcome != w.o || rec.Intended != int64(w.intended) || rec.Done < rec.Start {
			t.Errorf("record %d = %+v, want key %d, outcome %d, intended %v, done after start", i, rec, w.key, w.o, w.intended)
		}
	}
}

func near(a, b float64) bool { return math.Abs(a-b) < 1e-9 }

func equal(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

package check

import (
	"context"
	"fmt"
	"maps"
	"math"
	"slices"
	"sort"
	"testing"
	"time"

	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/tsdb/chunkenc"
	"github.com/prometheus/prometheus/tsdb/chunks"
	"github.com/prometheus/prometheus/util/annotations"
)

// memStore is a storage.Queryable of float samples held in memory, for
// Prometheus' PromQL engine: what these checks need of a TSDB, without
// building one. Like the TSDB's head it takes each series' samples in time
// order, ignores a sample repeated at the same time with the same value and
// refuses one with another value, or out of order.
type memStore struct {
	series map[string]*memSeries // by labels.Labels.String()
}

type memSeries struct {
	lset    labels.Labels
	samples []chunks.Sample
}

// fSample is a float sample (chunks.Sample).
type fSample struct {
	t int64
	f float64
}

func (s fSample) T() int64                      { return s.t }
func (s fSample) ST() int64                     { return 0 }
func (s fSample) F() float64                    { return s.f }
func (s fSample) H() *histogram.Histogram       { return nil }
func (s fSample) FH() *histogram.FloatHistogram { return nil }
func (s fSample) Type() chunkenc.ValueType      { return chunkenc.ValFloat }
func (s fSample) Copy() chunks.Sample           { return s }

func newMemStore() *memStore { return &memStore{series: map[string]*memSeries{}} }

// Append adds the sample v at t (milliseconds) to the series lset.
func (m *memStore) Append(lset labels.Labels, t int64, v float64) error {
	key := lset.String()
	s, ok := m.series[key]
	if !ok {
		s = &memSeries{lset: lset}
		m.series[key] = s
	}
	if n := len(s.samples); n > 0 {
		last := s.samples[n-1]
		switch {
		case t == last.T() && v == last.F():
			return nil
		case t == last.T():
			return fmt.Errorf("%s at %d: %w", key, t, storage.ErrDuplicateSampleForTimestamp)
		case t < last.T():
			return fmt.Errorf("%s at %d: %w", key, t, storage.ErrOutOfOrderSample)
		}
	}
	s.samples = append(s.samples, fSample{t: t, f: v})
	return nil
}

func (m *memStore) Querier(mint, maxt int64) (storage.Querier, error) {
	return &memQuerier{m: m, mint: mint, maxt: maxt}, nil
}

type memQuerier struct {
	m          *memStore
	mint, maxt int64
}

func (q *memQuerier) matching(ms []*labels.Matcher) []*memSeries {
	var out []*memSeries
	for _, s := range q.m.series {
		if !slices.ContainsFunc(ms, func(m *labels.Matcher) bool { return !m.Matches(s.lset.Get(m.Name)) }) {
			out = append(out, s)
		}
	}
	sort.Slice(out, func(i, j int) bool { return labels.Compare(out[i].lset, out[j].lset) < 0 })
	return out
}

func (q *memQuerier) Select(_ context.Context, _ bool, _ *storage.SelectHints, ms ...*labels.Matcher) storage.SeriesSet {
	var set memSeriesSet
	for _, s := range q.matching(ms) {
		var in []chunks.Sample
		for _, x := range s.samples {
			if x.T() >= q.mint && x.T() <= q.maxt {
				in = append(in, x)
			}
		}
		if len(in) > 0 {
			set.series = append(set.series, storage.NewListSeries(s.lset, in))
		}
	}
	set.i = -1
	return &set
}

func (q *memQuerier) LabelValues(_ context.Context, name string, _ *storage.LabelHints, ms ...*labels.Matcher) ([]string, annotations.Annotations, error) {
	var vs []string
	for _, s := range q.matching(ms) {
		if v := s.lset.Get(name); v != "" && !slices.Contains(vs, v) {
			vs = append(vs, v)
		}
	}
	slices.Sort(vs)
	return vs, nil, nil
}

func (q *memQuerier) LabelNames(_ context.Context, _ *storage.LabelHints, ms ...*labels.Matcher) ([]string, annotations.Annotations, error) {
	var ns []string
	for _, s := range q.matching(ms) {
		s.lset.Range(func(l labels.Label) {
			if !slices.Contains(ns, l.Name) {
				ns = append(ns, l.Name)
			}
		})
	}
	slices.Sort(ns)
	return ns, nil, nil
}

func (q *memQuerier) Close() error { return nil }

type memSeriesSet struct {
	series []storage.Series
	i      int
}

func (s *memSeriesSet) Next() bool                        { s.i++; return s.i < len(s.series) }
func (s *memSeriesSet) At() storage.Series                { return s.series[s.i] }
func (s *memSeriesSet) Err() error                        { return nil }
func (s *memSeriesSet) Warnings() annotations.Annotations { return nil }

// TestMemStore: the store answers the PromQL engine as a TSDB would: the
// series a selector matches, their samples within the query's range, and
// what the head appender refuses.
func TestMemStore(t *testing.T) {
	db := newMemStore()
	base := time.Unix(1_700_000_000, 0)
	for i := range 5 {
		ms := base.Add(time.Duration(i) * 15 * time.Second).UnixMilli()
		for _, inst := range []string{"n1", "n2"} {
			for _, res := range []string{"allowed", "denied"} {
				lset := labels.FromStrings(labels.MetricName, "decisions_total", "instance", inst, "result", res)
				v := float64(i * 30)
				if res == "denied" {
					v = float64(i * 15)
				}
				if err := db.Append(lset, ms, v); err != nil {
					t.Fatal(err)
				}
				if err := db.Append(lset, ms, v); err != nil {
					t.Fatalf("the same sample again: %v", err)
				}
			}
		}
	}
	lset := labels.FromStrings(labels.MetricName, "decisions_total", "instance", "n1", "result", "allowed")
	if err := db.Append(lset, base.UnixMilli()+60_000, 1); err == nil {
		t.Error("another value at the same time: accepted")
	}
	if err := db.Append(lset, base.UnixMilli(), 0); err == nil {
		t.Error("a sample out of order: accepted")
	}

	eng := promql.NewEngine(promql.EngineOpts{MaxSamples: 10_000, Timeout: time.Minute, LookbackDelta: 5 * time.Minute})
	at := base.Add(time.Minute)
	for _, tc := range []struct {
		expr string
		want map[string]float64 // by the result's labels
	}{
		{`sum by (result) (rate(decisions_total[1m]))`, map[string]float64{`{result="allowed"}`: 4, `{result="denied"}`: 2}},
		{`decisions_total{instance="n2",result=~"den.*"}`, map[string]float64{`{__name__="decisions_total", instance="n2", result="denied"}`: 60}},
		{`decisions_total{instance="n3"}`, map[string]float64{}},
		{`count(decisions_total offset 2m)`, map[string]float64{}}, // before the first sample
	} {
		q, err := eng.NewInstantQuery(context.Background(), db, nil, tc.expr, at)
		if err != nil {
			t.Fatalf("%s: %v", tc.expr, err)
		}
		res := q.Exec(context.Background())
		if res.Err != nil {
			t.Fatalf("%s: %v", tc.expr, res.Err)
		}
		vec, err := res.Vector()
		if err != nil {
			t.Fatalf("%s: %v", tc.expr, err)
		}
		got := map[string]float64{}
		for _, s := range vec {
			got[s.Metric.String()] = s.F
		}
		q.Close()
		if len(got) != len(tc.want) || slices.ContainsFunc(slices.Collect(maps.Keys(tc.want)), func(k string) bool {
			g, ok := got[k]
			return !ok || math.Abs(g-tc.want[k]) > 1e-9
		}) {
			t.Errorf("%s = %v, want %v", tc.expr, got, tc.want)
		}
	}
}

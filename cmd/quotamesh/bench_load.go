package main

import (
	"context"
	"fmt"
	"math"
	"runtime"
	"slices"
	"sync"
	"time"

	hdrhistogram "github.com/HdrHistogram/hdrhistogram-go"

	"github.com/quotamesh/quotamesh"
	"github.com/quotamesh/quotamesh/internal/accuracy"
	"github.com/quotamesh/quotamesh/limits"
	"github.com/quotamesh/quotamesh/pattern"
	"github.com/quotamesh/quotamesh/window"
)

// benchReport is what `quotamesh bench --json` prints: the accuracy fields
// of `quotamesh sim --json` plus what only real processes show.
type benchReport struct {
	accuracy.Report
	// PerSecond is the cluster's admitted count in each whole second of the
	// load, as the SDKs decided it.
	PerSecond []int64 `json:"per_second"`
	// Mode is "lease" (the SDK decides from leases) or "strict" (a round
	// trip per decision).
	Mode string `json:"mode"`
	// Rate is the constant offered rate asked for with --rate (0: the
	// pattern's multiplier × limit).
	Rate float64 `json:"rate"`
	// AchievedRPS is decisions answered (admitted or denied) per second of
	// wall time, from the start of the load to the last answer.
	AchievedRPS float64 `json:"achieved_rps"`
	// Latencies, in microseconds, from each request's intended send time
	// (so a late generator or a stalled call counts: no coordinated
	// omission) to its answer.
	P50us  float64 `json:"p50_us"`
	P99us  float64 `json:"p99_us"`
	P999us float64 `json:"p999_us"`
	MaxUs  float64 `json:"max_us"`
	// P99usPerSecond is the P99 latency of the requests due in each whole
	// second of the load: where in the run the slow ones were.
	P99usPerSecond []int64 `json:"p99_us_per_second"`
	// ServiceP50us and ServiceP99us time only the call itself (from when a
	// worker picked the request up): the difference to P50us/P99us is the
	// time requests waited for the generator or a free worker.
	ServiceP50us float64 `json:"service_p50_us"`
	ServiceP99us float64 `json:"service_p99_us"`
	// Errors counts calls that returned an error (no decision).
	Errors int64 `json:"errors"`
	// FirstError is the first error a call returned, if any.
	FirstError string `json:"first_error,omitempty"`
	// Unsent counts arrivals the generator dropped because it fell more
	// than maxLag behind the schedule; they are not in Offered.
	Unsent int64 `json:"unsent"`
	// Elapsed is the wall time of the load, to the last answer.
	Elapsed string `json:"elapsed"`
}

// loadSpec is one load run against a set of per-node clients.
type loadSpec struct {
	load     pattern.Load
	arrivals pattern.Arrival
	seed     uint64
	key      string
	limit    limits.Rate
	workers  int // per node
	maxLag   time.Duration
	spin     time.Duration
}

// maxLagDefault is how far behind its schedule the generator may fall
// before it gives up on the arrivals left (counted as unsent): it bounds a
// run's length when the cluster cannot keep up.
const maxLagDefault = 10 * time.Second

// recordBatch is how many latencies a worker keeps before it moves them into
// its node's histograms under the node's lock.
const recordBatch = 512

// histMaxUs is the largest latency the histograms hold (60 s).
const histMaxUs = 60_000_000

// nodeLoad collects one node's results; workers add to it under mu, in
// batches.
type nodeLoad struct {
	name     string
	mu       sync.Mutex
	latency  *hdrhistogram.Histogram
	perSec   []*hdrhistogram.Histogram // latency by the second the request was due in
	service  *hdrhistogram.Histogram
	admits   []time.Duration // when each admitted call returned, from the load's start
	errors   int64
	firstErr error
	answered int64
	last     time.Duration // latest answer
	offered  int64
	unsent   int64
	intended []time.Duration // dispatched arrivals, in order (the generator's)
}

func newHist() *hdrhistogram.Histogram { return hdrhistogram.New(1, histMaxUs, 3) }

// runLoad offers spec's load to the nodes behind limiters (one SDK client
// per node, in the pattern's node order), open loop: one generator per node
// sends each arrival at its intended time to a bounded pool of workers,
// whatever happened to earlier requests, and every latency is measured
// from the intended time. It returns when every arrival was answered, or
// when ctx ends (with what was measured so far).
func runLoad(ctx context.Context, limiters []quotamesh.Limiter, names []string, spec loadSpec) benchReport {
	nodes := make([]*nodeLoad, len(limiters))
	for i := range limiters {
		nodes[i] = &nodeLoad{name: names[i], latency: newHist(), service: newHist()}
	}
	start := time.Now()
	var wg sync.WaitGroup
	for i, lim := range limiters {
		// The channel holds one batch of late arrivals per worker, so a
		// generator catching up does not stop at every hand-off; when it
		// is full, the generator waits and the wait shows in latencies.
		ch := make(chan time.Duration, spec.workers)
		nl := nodes[i]
		for range spec.workers {
			wg.Go(func() { work(ctx, lim, spec.key, start, ch, nl) })
		}
		arr := pattern.NewArrivals(spec.load, i, spec.arrivals, spec.seed+uint64(i))
		wg.Go(func() {
			defer close(ch)
			generate(ctx, arr, start, spec.maxLag, spec.spin, ch, nl)
		})
	}
	wg.Wait()
	return summarize(nodes, spec)
}

// generate sends each arrival to ch at its intended time (its offset from
// start), until the arrivals end, ctx ends, or it is more than maxLag late.
// It waits for an arrival due within spin by yielding in a loop, and for
// later ones on a timer: a Go timer of less than a millisecond may fire up
// to a millisecond late (the runtime polls with millisecond timeouts), which
// would show in every latency at high rates.
func generate(ctx context.Context, arr *pattern.Arrivals, start time.Time, maxLag, spin time.Duration, ch chan<- time.Duration, nl *nodeLoad) {
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		at, ok := arr.Next()
		if !ok {
			return
		}
		now := time.Since(start)
		if wait := at - now; wait > 0 && wait <= spin {
			for time.Since(start) < at {
				if ctx.Err() != nil {
					return
				}
				runtime.Gosched()
			}
		} else if wait > 0 {
			timer.Reset(wait)
			select {
			case <-timer.C:
			case <-ctx.Done():
				return
			}
		} else if -wait > maxLag {
			for ok {
				nl.unsent++
				_, ok = arr.Next()
			}
			return
		}
		select {
		case ch <- at:
			nl.offered++
			nl.intended = append(nl.intended, at)
		case <-ctx.Done():
			return
		}
	}
}

// work answers arrivals from ch until it is closed.
func work(ctx context.Context, lim quotamesh.Limiter, key string, start time.Time, ch <-chan time.Duration, nl *nodeLoad) {
	var (
		lat, svc       = make([]int64, 0, recordBatch), make([]int64, 0, recordBatch)
		due            = make([]int, 0, recordBatch) // the second each request was due in
		admits         []time.Duration
		errs, answered int64
		firstErr       error
		last           time.Duration
	)
	flush := func() {
		nl.mu.Lock()
		for i := range lat {
			_ = nl.latency.RecordValue(min(lat[i], histMaxUs))
			for len(nl.perSec) <= due[i] {
				nl.perSec = append(nl.perSec, hdrhistogram.New(1, histMaxUs, 2))
			}
			_ = nl.perSec[due[i]].RecordValue(min(lat[i], histMaxUs))
			_ = nl.service.RecordValue(min(svc[i], histMaxUs))
		}
		nl.admits = append(nl.admits, admits...)
		nl.errors += errs
		if nl.firstErr == nil {
			nl.firstErr = firstErr
		}
		nl.answered += answered
		nl.last = max(nl.last, last)
		nl.mu.Unlock()
		lat, svc, due, admits, errs, answered = lat[:0], svc[:0], due[:0], admits[:0], 0, 0
	}
	for at := range ch {
		picked := time.Since(start)
		d, err := lim.Allow(ctx, key)
		done := time.Since(start)
		switch {
		case err != nil:
			errs++
			if firstErr == nil {
				firstErr = err
			}
		case d.Allowed:
			admits = append(admits, done)
			answered++
		default:
			answered++
		}
		last = max(last, done)
		lat = append(lat, max(1, (done-at).Microseconds()))
		svc = append(svc, max(1, (done-picked).Microseconds()))
		due = append(due, int(at/time.Second))
		if len(lat) == recordBatch {
			flush()
		}
	}
	flush()
}

// summarize merges the nodes' results into a report.
func summarize(nodes []*nodeLoad, spec loadSpec) benchReport {
	r := benchReport{Report: accuracy.Report{
		Pattern: string(spec.load.Pattern), Nodes: len(nodes), Limit: spec.limit.String(),
		Duration: spec.load.Duration.String(),
	}}
	latency, service := newHist(), newHist()
	var perSec []*hdrhistogram.Histogram
	var admits, intended []time.Duration
	var answered int64
	var last time.Duration
	for _, n := range nodes {
		r.PerNode = append(r.PerNode, accuracy.NodeReport{Node: n.name, Offered: n.offered, Admitted: int64(len(n.admits))})
		latency.Merge(n.latency)
		for len(perSec) < len(n.perSec) {
			perSec = append(perSec, hdrhistogram.New(1, histMaxUs, 2))
		}
		for i, h := range n.perSec {
			perSec[i].Merge(h)
		}
		service.Merge(n.service)
		admits = append(admits, n.admits...)
		intended = append(intended, n.intended...)
		r.Errors += n.errors
		if n.firstErr != nil && r.FirstError == "" {
			r.FirstError = n.name + ": " + n.firstErr.Error()
		}
		r.Unsent += n.unsent
		answered += n.answered
		last = max(last, n.last)
	}
	r.Ideal = idealAdmits(intended, spec.limit)
	secs := int(math.Ceil(spec.load.Duration.Seconds()))
	r.PerSecond = make([]int64, secs)
	for _, t := range admits {
		if s := int(t / time.Second); s >= 0 && s < secs {
			r.PerSecond[s]++
		}
	}
	r.Fill(admits, spec.limit.Count, spec.limit.Window)
	if last > 0 {
		r.AchievedRPS = float64(answered) / last.Seconds()
	}
	r.Elapsed = last.Round(time.Millisecond).String()
	r.P50us = float64(latency.ValueAtQuantile(50))
	r.P99us = float64(latency.ValueAtQuantile(99))
	r.P999us = float64(latency.ValueAtQuantile(99.9))
	r.MaxUs = float64(latency.Max())
	for _, h := range perSec {
		r.P99usPerSecond = append(r.P99usPerSecond, h.ValueAtQuantile(99))
	}
	r.ServiceP50us = float64(service.ValueAtQuantile(50))
	r.ServiceP99us = float64(service.ValueAtQuantile(99))
	return r
}

// idealAdmits is what one perfect limiter with the same sliding window
// would admit seeing every offered request at its intended time, in order
// (what `quotamesh sim` computes as its ideal).
func idealAdmits(intended []time.Duration, rate limits.Rate) int64 {
	slices.Sort(intended)
	const base = int64(1_767_225_600) * int64(time.Second) // 2026-01-01, on a slot edge
	w, err := window.New(rate, base)
	if err != nil {
		panic(fmt.Sprintf("bench: a validated rate %v was refused: %v", rate, err))
	}
	var n int64
	for _, t := range intended {
		if w.AllowN(base+int64(t), 1) {
			n++
		}
	}
	return n
}

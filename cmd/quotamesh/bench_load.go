package main

import (
	"context"
	"fmt"
	"math"
	"slices"
	"sync"
	"time"

	hdrhistogram "github.com/HdrHistogram/hdrhistogram-go"

	"github.com/quotamesh/quotamesh"
	"github.com/quotamesh/quotamesh/internal/accuracy"
	"github.com/quotamesh/quotamesh/internal/pattern"
	"github.com/quotamesh/quotamesh/limits"
	"github.com/quotamesh/quotamesh/window"
)

// benchReport is what `quotamesh bench --json` prints: the accuracy fields
// of `quotamesh sim --json` plus what only real processes show.
type benchReport struct {
	accuracy.Report
	// IdealMaxWindowRatio is max_window_ratio of the ideal's admissions:
	// far above the limit a sliding window of slots admits a window's room
	// as soon as a slot opens, so any real 1 s interval straddling a slot
	// edge can hold up to twice the limit, in the ideal as in the cluster.
	IdealMaxWindowRatio float64 `json:"ideal_max_window_ratio"`
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
	// GenP50us, GenP99us and GenMaxUs are the generator's own lateness:
	// from each request's intended time to when the generator handed it to
	// a worker. It is part of every latency above.
	GenP50us float64 `json:"gen_p50_us"`
	GenP99us float64 `json:"gen_p99_us"`
	GenMaxUs float64 `json:"gen_max_us"`
	// CPU time used during the load, in seconds per 100,000 decisions
	// answered: by this process (the SDK clients and the generator) and,
	// with --local-cluster on Linux, by the node processes (0 otherwise:
	// not measured).
	ClientCPUPer100k float64 `json:"client_cpu_s_per_100k"`
	NodesCPUPer100k  float64 `json:"nodes_cpu_s_per_100k,omitempty"`
	// Answered counts decisions (admitted or denied).
	Answered int64 `json:"answered"`
	// Errors counts calls that returned an error (no decision).
	Errors int64 `json:"errors"`
	// FirstError is the first error a call returned, if any.
	FirstError string `json:"first_error,omitempty"`
	// Unsent counts arrivals the generator dropped because it fell more
	// than maxLag behind the schedule; they are not in Offered.
	Unsent int64 `json:"unsent"`
	// TCPBaseline is the same load against plain pipelined TCP
	// request/response on loopback, measured in the same run
	// (--tcp-baseline).
	TCPBaseline *benchReport `json:"tcp_baseline,omitempty"`
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
	tick     time.Duration
	// batch hands a node's arrivals of one tick to one worker, which
	// makes the calls one after the other (lease decisions, which rarely
	// wait); otherwise each arrival goes to its own worker (strict
	// decisions, which wait a round trip each).
	batch bool
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
	// Written by the generator only.
	offered  int64
	unsent   int64
	intended []time.Duration // dispatched arrivals, in order
}

func newHist() *hdrhistogram.Histogram { return hdrhistogram.New(1, histMaxUs, 3) }

// runLoad offers spec's load to the nodes behind limiters (one SDK client
// per node, in the pattern's node order), open loop: one generator sends
// each arrival at its intended time to its node's bounded pool of workers,
// whatever happened to earlier requests, and every latency is measured
// from the intended time. It returns when every arrival was answered, or
// when ctx ends (with what was measured so far).
func runLoad(ctx context.Context, limiters []quotamesh.Limiter, names []string, spec loadSpec) benchReport {
	nodes := make([]*nodeLoad, len(limiters))
	chans := make([]chan []time.Duration, len(limiters))
	arrs := make([]*pattern.Arrivals, len(limiters))
	inline := make([]*worker, len(limiters)) // with no workers: the generator calls
	start := time.Now()
	var wg sync.WaitGroup
	for i, lim := range limiters {
		// Room for every arrival up front: the generator should not
		// make the garbage collector run in a process it measures.
		nodes[i] = &nodeLoad{name: names[i], latency: newHist(), service: newHist(),
			intended: make([]time.Duration, 0, expectedArrivals(spec.load, i))}
		// One waiting hand-off per worker, so a generator catching up
		// does not stop at every one; when the channel is full, the
		// generator waits and the wait shows in latencies.
		chans[i] = make(chan []time.Duration, spec.workers)
		for range spec.workers {
			wg.Go(func() { newWorker(ctx, lim, spec.key, start, nodes[i]).work(chans[i]) })
		}
		if spec.workers == 0 {
			inline[i] = newWorker(ctx, lim, spec.key, start, nodes[i])
		}
		arrs[i] = pattern.NewArrivals(spec.load, i, spec.arrivals, spec.seed+uint64(i))
	}
	lateness := newHist()
	wg.Go(func() {
		defer func() {
			for _, ch := range chans {
				close(ch)
			}
		}()
		generate(ctx, arrs, start, spec, chans, nodes, inline, lateness)
		for _, w := range inline {
			if w != nil {
				w.flush()
			}
		}
	})
	wg.Wait()
	r := summarize(nodes, spec, start)
	r.GenP50us = float64(lateness.ValueAtQuantile(50))
	r.GenP99us = float64(lateness.ValueAtQuantile(99))
	r.GenMaxUs = float64(lateness.Max())
	return r
}

// generate is the run's one generator. It wakes at the earliest arrival
// due, or a tick after its last wake if that is later, takes every arrival
// now due from each node's stream, and hands them to that node's workers
// (see loadSpec.batch). It sleeps on a pacer, not a Go timer: the runtime
// fires timers up to a millisecond late, which every latency would show at
// high rates, and spinning instead would take a core the nodes need. How
// late each arrival was handed over (from its intended time) goes into
// lateness: the generator's own share of the latencies. It returns when
// the streams end, ctx ends, or a node's stream is more than maxLag late
// (the rest of that stream is counted unsent).
func generate(ctx context.Context, arrs []*pattern.Arrivals, start time.Time, spec loadSpec,
	chans []chan []time.Duration, nodes []*nodeLoad, inline []*worker, lateness *hdrhistogram.Histogram) {
	p := newPacer()
	defer p.close()
	next := make([]time.Duration, len(arrs)) // each stream's first arrival not handed over
	live := make([]bool, len(arrs))
	bufs := make([][]time.Duration, len(arrs))
	for i, a := range arrs {
		next[i], live[i] = a.Next()
	}
	send := func(i int, batch []time.Duration) bool {
		if inline[i] != nil {
			nodes[i].offered += int64(len(batch))
			nodes[i].intended = append(nodes[i].intended, batch...)
			inline[i].call(batch)
			return ctx.Err() == nil
		}
		select {
		case chans[i] <- batch:
			nodes[i].offered += int64(len(batch))
			nodes[i].intended = append(nodes[i].intended, batch...)
			return true
		case <-ctx.Done():
			return false
		}
	}
	for {
		now := time.Since(start)
		for i, a := range arrs {
			if !live[i] || next[i] > now {
				continue
			}
			if now-next[i] > spec.maxLag {
				for live[i] {
					nodes[i].unsent++
					_, live[i] = a.Next()
				}
				continue
			}
			var batch []time.Duration
			if inline[i] != nil {
				batch = bufs[i][:0] // the call is over before the next wake
			}
			for live[i] && next[i] <= now {
				_ = lateness.RecordValue(max(1, min((now-next[i]).Microseconds(), histMaxUs)))
				if !spec.batch {
					if !send(i, []time.Duration{next[i]}) {
						return
					}
				} else {
					batch = append(batch, next[i])
				}
				next[i], live[i] = a.Next()
			}
			if len(batch) > 0 && !send(i, batch) {
				return
			}
			if inline[i] != nil {
				bufs[i] = batch
			}
		}
		earliest, any := time.Duration(math.MaxInt64), false
		for i := range arrs {
			if live[i] {
				earliest, any = min(earliest, next[i]), true
			}
		}
		if !any || ctx.Err() != nil {
			return
		}
		if wait := earliest - time.Since(start); wait > 0 {
			p.sleep(max(wait, spec.tick))
		}
	}
}

// expectedArrivals is about how many arrivals node i has in load (at most
// 10^7: a hint for a slice's capacity).
func expectedArrivals(load pattern.Load, i int) int {
	const step = 100 * time.Millisecond
	n := 0.0
	for t := time.Duration(0); t < load.Duration; t += step {
		n += load.Rate(i, t) * step.Seconds()
	}
	return int(min(n*1.05+64, 1e7))
}

// worker makes calls for one node and keeps their results until flush
// moves them into the node's (under its lock).
type worker struct {
	ctx      context.Context
	lim      quotamesh.Limiter
	key      string
	start    time.Time
	nl       *nodeLoad
	lat, svc []int64
	due      []int // the second each request was due in
	admits   []time.Duration
	errs     int64
	answered int64
	firstErr error
	last     time.Duration
}

func newWorker(ctx context.Context, lim quotamesh.Limiter, key string, start time.Time, nl *nodeLoad) *worker {
	return &worker{ctx: ctx, lim: lim, key: key, start: start, nl: nl,
		lat: make([]int64, 0, recordBatch), svc: make([]int64, 0, recordBatch), due: make([]int, 0, recordBatch)}
}

// work answers batches from ch until it is closed.
func (w *worker) work(ch <-chan []time.Duration) {
	for batch := range ch {
		w.call(batch)
	}
	w.flush()
}

// call makes one call per arrival of batch, one after the other.
func (w *worker) call(batch []time.Duration) {
	picked := time.Since(w.start)
	for _, at := range batch {
		d, err := w.lim.Allow(w.ctx, w.key)
		done := time.Since(w.start)
		switch {
		case err != nil:
			w.errs++
			if w.firstErr == nil {
				w.firstErr = err
			}
		case d.Allowed:
			w.admits = append(w.admits, done)
			w.answered++
		default:
			w.answered++
		}
		w.last = max(w.last, done)
		w.lat = append(w.lat, max(1, (done-at).Microseconds()))
		w.svc = append(w.svc, max(1, (done-picked).Microseconds()))
		w.due = append(w.due, int(at/time.Second))
		if len(w.lat) == recordBatch {
			w.flush()
		}
		picked = done
	}
}

func (w *worker) flush() {
	nl := w.nl
	nl.mu.Lock()
	for i := range w.lat {
		_ = nl.latency.RecordValue(min(w.lat[i], histMaxUs))
		for len(nl.perSec) <= w.due[i] {
			nl.perSec = append(nl.perSec, hdrhistogram.New(1, histMaxUs, 2))
		}
		_ = nl.perSec[w.due[i]].RecordValue(min(w.lat[i], histMaxUs))
		_ = nl.service.RecordValue(min(w.svc[i], histMaxUs))
	}
	nl.admits = append(nl.admits, w.admits...)
	nl.errors += w.errs
	if nl.firstErr == nil {
		nl.firstErr = w.firstErr
	}
	nl.answered += w.answered
	nl.last = max(nl.last, w.last)
	nl.mu.Unlock()
	w.lat, w.svc, w.due, w.admits, w.errs, w.answered = w.lat[:0], w.svc[:0], w.due[:0], w.admits[:0], 0, 0
}

// summarize merges the nodes' results into a report.
func summarize(nodes []*nodeLoad, spec loadSpec, start time.Time) benchReport {
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
	var idealTimes []time.Duration
	r.Ideal, idealTimes = idealAdmits(intended, spec.limit, start.UnixNano())
	r.IdealMaxWindowRatio = float64(accuracy.MaxWindow(idealTimes, spec.limit.Window)) / float64(spec.limit.Count)
	secs := int(math.Ceil(spec.load.Duration.Seconds()))
	r.PerSecond = make([]int64, secs)
	for _, t := range admits {
		if s := int(t / time.Second); s >= 0 && s < secs {
			r.PerSecond[s]++
		}
	}
	r.Fill(admits, spec.limit.Count, spec.limit.Window)
	r.Answered = answered
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
// (what `quotamesh sim` computes as its ideal). base is the wall time of
// the load's start (Unix ns): the ideal's slots then have the nodes' slot
// edges, which follow the wall clock. With slots of its own, the ideal
// would differ from any correct cluster by up to a whole limit per run:
// far above the limit a window's room is spent in the first slot that
// opens, so the run holds one more or one fewer burst depending on where
// the slot edges fall in it.
// It returns the count and the times of the ideal's admissions.
func idealAdmits(intended []time.Duration, rate limits.Rate, base int64) (int64, []time.Duration) {
	slices.Sort(intended)
	w, err := window.New(rate, base)
	if err != nil {
		panic(fmt.Sprintf("bench: a validated rate %v was refused: %v", rate, err))
	}
	var times []time.Duration
	for _, t := range intended {
		if w.AllowN(base+int64(t), 1) {
			times = append(times, t)
		}
	}
	return int64(len(times)), times
}

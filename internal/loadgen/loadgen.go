// Package loadgen offers an open-loop load to a set of limiters, one per
// node, and measures what they decided and how long each decision took.
//
// What it promises:
//
//   - One generator sends every arrival of the pattern at its intended time,
//     whatever happened to earlier requests (open loop), to its node's pool
//     of workers, or makes the calls itself with no workers; every latency is
//     measured from the intended time, so a stalled call or a late generator
//     counts (no coordinated omission).
//   - The generator sleeps on a pacer (nanosleep on its own thread with 1 ns
//     timer slack on Linux), not a Go timer, which fires up to a millisecond
//     late; its own lateness is reported beside the latencies.
//   - Admissions are counted where they are decided, as each call returns;
//     the ideal is one perfect sliding window fed every offered request at
//     its intended time, with its slot edges on the wall clock as the
//     nodes' are (accuracy.Ideal).
//   - Run returns when every arrival was answered, or when ctx ends, with
//     what was measured so far; every goroutine it starts has returned.
package loadgen

import (
	"context"
	"math"
	"sync"
	"time"

	hdrhistogram "github.com/HdrHistogram/hdrhistogram-go"

	"github.com/quotamesh/quotamesh"
	"github.com/quotamesh/quotamesh/internal/pattern"
	"github.com/quotamesh/quotamesh/limits"
)

// Spec is one load run against a set of per-node limiters.
type Spec struct {
	Load     pattern.Load
	Arrivals pattern.Arrival
	// Seed seeds node i's arrivals with Seed+i.
	Seed  uint64
	Key   string
	Limit limits.Rate
	// Workers is the goroutines calling each node's limiter; 0: the
	// generator makes the calls itself, one after another.
	Workers int
	// MaxLag is how far behind its schedule the generator may fall before
	// it gives up on a node's arrivals left (counted unsent).
	MaxLag time.Duration
	// Tick is the least time the generator sleeps between two wakes.
	Tick time.Duration
	// Batch hands a node's arrivals of one tick to one worker, which
	// makes the calls one after the other (lease decisions, which rarely
	// wait); otherwise each arrival goes to its own worker (strict
	// decisions, which wait a round trip each).
	Batch bool
}

// DefaultMaxLag is the MaxLag the bench uses: it bounds a run's length
// when the cluster cannot keep up.
const DefaultMaxLag = 10 * time.Second

// histMaxUs is the largest latency the histograms hold (60 s).
const histMaxUs = 60_000_000

func newHist() *hdrhistogram.Histogram { return hdrhistogram.New(1, histMaxUs, 3) }

// Run offers spec's load to the nodes behind limiters (one per node, in
// the pattern's node order; names name them in the report), open loop: one
// generator sends each arrival at its intended time to its node's bounded
// pool of workers, whatever happened to earlier requests, and every latency
// is measured from the intended time. It returns when every arrival was
// answered, or when ctx ends (with what was measured so far).
func Run(ctx context.Context, limiters []quotamesh.Limiter, names []string, spec Spec) Report {
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
			intended: make([]time.Duration, 0, expectedArrivals(spec.Load, i))}
		// One waiting hand-off per worker, so a generator catching up
		// does not stop at every one; when the channel is full, the
		// generator waits and the wait shows in latencies.
		chans[i] = make(chan []time.Duration, spec.Workers)
		for range spec.Workers {
			wg.Go(func() { newWorker(ctx, lim, spec.Key, start, nodes[i]).work(chans[i]) })
		}
		if spec.Workers == 0 {
			inline[i] = newWorker(ctx, lim, spec.Key, start, nodes[i])
		}
		arrs[i] = pattern.NewArrivals(spec.Load, i, spec.Arrivals, spec.Seed+uint64(i))
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
// (see Spec.Batch). It sleeps on a pacer, not a Go timer: the runtime
// fires timers up to a millisecond late, which every latency would show at
// high rates, and spinning instead would take a core the nodes need. How
// late each arrival was handed over (from its intended time) goes into
// lateness: the generator's own share of the latencies. It returns when
// the streams end, ctx ends, or a node's stream is more than MaxLag late
// (the rest of that stream is counted unsent).
func generate(ctx context.Context, arrs []*pattern.Arrivals, start time.Time, spec Spec,
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
			if now-next[i] > spec.MaxLag {
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
				if !spec.Batch {
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
			p.sleep(max(wait, spec.Tick))
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

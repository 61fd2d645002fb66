// Package loadgen offers an open-loop load to a set of limiters, one per
// node, and measures what they decided and how long each decision took.
//
// What it promises:
//
//   - One generator sends every arrival of the workload (package workload:
//     one key or a million, placed on nodes) at its intended time, whatever
//     happened to earlier requests (open loop), to its node's pool of
//     workers, or makes the calls itself with no workers; every latency is
//     measured from the intended time, so a stalled call or a late generator
//     counts (no coordinated omission).
//   - The generator sleeps on a pacer (nanosleep on its own thread with 1 ns
//     timer slack on Linux), not a Go timer, which fires up to a millisecond
//     late; its own lateness is reported beside the latencies.
//   - Every request goes into an accuracy.Log, and its outcome is filled in
//     where it is decided, as each call returns, with the time it was
//     decided: the node's clock when a node decided it (the SDK's
//     quotamesh.Decision.Decided), the harness's when the SDK decided alone
//     from a lease. accuracy.Evaluate then compares every key with its own
//     perfect sliding window, fed the key's requests at their intended
//     times, with its slot edges on the wall clock as the nodes' are, and
//     counts each admission in the windows of its decision time. Memory
//     follows requests, not keys.
//   - Run returns when every arrival was answered, or when ctx ends, with
//     what was measured so far; every goroutine it starts has returned.
package loadgen

import (
	"context"
	"sync"
	"time"

	hdrhistogram "github.com/HdrHistogram/hdrhistogram-go"

	"github.com/quotamesh/quotamesh"
	"github.com/quotamesh/quotamesh/internal/accuracy"
	"github.com/quotamesh/quotamesh/internal/workload"
)

// Spec is one load run against a set of per-node limiters.
type Spec struct {
	// Workload is the offered load; its Nodes must be the number of
	// limiters.
	Workload workload.Spec
	// Name names the load in the report (its "pattern"); empty: the
	// workload's shape.
	Name string
	// Workers is the goroutines calling each node's limiter; 0: the
	// generator makes the calls itself, one after another.
	Workers int
	// MaxLag is how far behind its schedule the generator may fall before
	// it gives up on the arrivals left (counted unsent).
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

// nameCache is how many keys' names are made once, before the run; the
// names of further keys are made at each call.
const nameCache = 1 << 17

func newHist() *hdrhistogram.Histogram { return hdrhistogram.New(1, histMaxUs, 3) }

// keyNames names a workload's keys for the calls.
type keyNames struct {
	spec  workload.Spec
	names []string
}

func newKeyNames(s workload.Spec) *keyNames {
	k := &keyNames{spec: s}
	for i := range min(s.Keys, nameCache) {
		k.names = append(k.names, s.KeyName(i))
	}
	return k
}

func (k *keyNames) name(i int) string {
	if i < len(k.names) {
		return k.names[i]
	}
	return k.spec.KeyName(i)
}

// Run offers spec's load to the nodes behind limiters (one per node, in
// the workload's node order; names name them in the report), open loop:
// one generator sends each arrival at its intended time to its node's
// bounded pool of workers, whatever happened to earlier requests, and every
// latency is measured from the intended time. It returns when every
// arrival was answered, or when ctx ends (with what was measured so far).
// spec.Workload must be valid.
func Run(ctx context.Context, limiters []quotamesh.Limiter, names []string, spec Spec) Report {
	ws := spec.Workload.WithDefaults()
	ws.Nodes = len(limiters)
	gen, err := workload.NewGenerator(ws)
	if err != nil {
		return Report{FirstError: err.Error()}
	}
	log := accuracy.NewLog()
	keys := newKeyNames(ws)
	nodes := make([]*nodeLoad, len(limiters))
	chans := make([]chan []int32, len(limiters))
	inline := make([]*worker, len(limiters)) // with no workers: the generator calls
	start := time.Now()
	var wg sync.WaitGroup
	for i, lim := range limiters {
		nodes[i] = &nodeLoad{name: names[i], latency: newHist(), service: newHist(), shedLat: newHist()}
		// One waiting hand-off per worker, so a generator catching up
		// does not stop at every one; when the channel is full, the
		// generator waits and the wait shows in latencies.
		chans[i] = make(chan []int32, spec.Workers)
		for range spec.Workers {
			wg.Go(func() { newWorker(ctx, lim, keys, log, start, nodes[i]).work(chans[i]) })
		}
		if spec.Workers == 0 {
			inline[i] = newWorker(ctx, lim, keys, log, start, nodes[i])
		}
	}
	lateness := newHist()
	var unsent int64
	wg.Go(func() {
		defer func() {
			for _, ch := range chans {
				close(ch)
			}
		}()
		unsent = generate(ctx, gen, log, start, spec, chans, inline, lateness)
		for _, w := range inline {
			if w != nil {
				w.flush()
			}
		}
	})
	wg.Wait()
	r := summarize(nodes, log, ws, spec, start)
	r.Unsent = unsent
	r.GenP50us = float64(lateness.ValueAtQuantile(50))
	r.GenP99us = float64(lateness.ValueAtQuantile(99))
	r.GenMaxUs = float64(lateness.Max())
	return r
}

// generate is the run's one generator. It wakes at the earliest arrival
// due, or a tick after its last wake if that is later, takes every arrival
// now due, logs it, and hands each node's to that node's workers (see
// Spec.Batch). It sleeps on a pacer, not a Go timer: the runtime fires
// timers up to a millisecond late, which every latency would show at high
// rates, and spinning instead would take a core the nodes need. How late
// each arrival was handed over (from its intended time) goes into
// lateness: the generator's own share of the latencies. It returns when
// the arrivals end or ctx ends, or once an arrival is more than MaxLag
// late: then it returns how many arrivals were left (unsent).
func generate(ctx context.Context, gen *workload.Generator, log *accuracy.Log, start time.Time, spec Spec,
	chans []chan []int32, inline []*worker, lateness *hdrhistogram.Histogram) (unsent int64) {
	p := newPacer()
	defer p.close()
	batches := make([][]int32, len(chans))
	next, live := gen.Next()
	send := func(i int, batch []int32) bool {
		if inline[i] != nil {
			inline[i].call(batch)
			return ctx.Err() == nil
		}
		select {
		case chans[i] <- batch:
			return true
		case <-ctx.Done():
			return false
		}
	}
	for live {
		now := time.Since(start)
		if now-next.At > spec.MaxLag {
			for ; live; next, live = gen.Next() {
				unsent++
			}
			return unsent
		}
		for live && next.At <= now {
			_ = lateness.RecordValue(max(1, min((now-next.At).Microseconds(), histMaxUs)))
			idx := log.Append(accuracy.Request{At: next.At, Key: uint32(next.Key), Node: uint16(next.Node)})
			if idx < 0 {
				return 0 // a billion requests: the log is full
			}
			batches[next.Node] = append(batches[next.Node], int32(idx))
			next, live = gen.Next()
		}
		for i, batch := range batches {
			if len(batch) == 0 {
				continue
			}
			switch {
			case inline[i] != nil:
				if !send(i, batch) { // the call is over before the next wake
					return 0
				}
				batches[i] = batch[:0]
			case spec.Batch:
				if !send(i, batch) {
					return 0
				}
				batches[i] = nil
			default:
				for _, idx := range batch {
					if !send(i, []int32{idx}) {
						return 0
					}
				}
				batches[i] = batch[:0]
			}
		}
		if !live || ctx.Err() != nil {
			return 0
		}
		if wait := next.At - time.Since(start); wait > 0 {
			p.sleep(max(wait, spec.Tick))
		}
	}
	return 0
}

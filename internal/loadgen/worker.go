package loadgen

import (
	"context"
	"sync"
	"time"

	hdrhistogram "github.com/HdrHistogram/hdrhistogram-go"

	"github.com/quotamesh/quotamesh"
)

// recordBatch is how many latencies a worker keeps before it moves them into
// its node's histograms under the node's lock.
const recordBatch = 512

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

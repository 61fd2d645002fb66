package loadgen

import (
	"context"
	"errors"
	"sync"
	"time"

	hdrhistogram "github.com/HdrHistogram/hdrhistogram-go"

	"github.com/quotamesh/quotamesh"
	"github.com/quotamesh/quotamesh/internal/accuracy"
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
	errors   int64
	firstErr error
	answered int64
	last     time.Duration // latest answer
	// overloaded counts calls the limiter answered "overloaded"
	// (quotamesh.ErrOverloaded) and shedLat their latency from intended
	// time: not decisions, so not in latency.
	overloaded int64
	shedLat    *hdrhistogram.Histogram
}

// worker makes calls for one node and keeps their results until flush
// moves them into the node's (under its lock).
type worker struct {
	ctx      context.Context
	lim      quotamesh.Limiter
	keys     *keyNames
	log      *accuracy.Log
	start    time.Time
	nl       *nodeLoad
	lat, svc []int64
	due      []int // the second each request was due in
	shed     []int64
	errs     int64
	answered int64
	firstErr error
	last     time.Duration
}

func newWorker(ctx context.Context, lim quotamesh.Limiter, keys *keyNames, log *accuracy.Log, start time.Time, nl *nodeLoad) *worker {
	return &worker{ctx: ctx, lim: lim, keys: keys, log: log, start: start, nl: nl,
		lat: make([]int64, 0, recordBatch), svc: make([]int64, 0, recordBatch), due: make([]int, 0, recordBatch),
		shed: make([]int64, 0, recordBatch)}
}

// work answers batches from ch until it is closed.
func (w *worker) work(ch <-chan []int32) {
	for batch := range ch {
		w.call(batch)
	}
	w.flush()
}

// call makes one call per request of batch (indices into the log), one
// after the other, and writes each outcome into the log. A call answered
// "overloaded" (quotamesh.ErrOverloaded) is neither a decision nor an
// error: it is counted apart, its latency kept apart, and its outcome is
// what the overload policy answered (the service admitted or denied it).
func (w *worker) call(batch []int32) {
	picked := time.Since(w.start)
	for _, i := range batch {
		r := w.log.At(int(i))
		at := r.At
		d, err := w.lim.Allow(w.ctx, w.keys.name(int(r.Key)))
		done := time.Since(w.start)
		r.Done = done
		r.Decided = decidedAt(d, w.start, done)
		w.last = max(w.last, done)
		overloaded := err != nil && errors.Is(err, quotamesh.ErrOverloaded)
		switch {
		case overloaded && d.Allowed:
			r.Outcome = accuracy.Admitted
		case overloaded:
			r.Outcome = accuracy.Denied
		case err != nil:
			r.Outcome = accuracy.Failed
			w.errs++
			if w.firstErr == nil {
				w.firstErr = err
			}
		case d.Allowed:
			r.Outcome = accuracy.Admitted
			w.answered++
		default:
			r.Outcome = accuracy.Denied
			w.answered++
		}
		if overloaded {
			w.shed = append(w.shed, max(1, (done-at).Microseconds()))
		} else {
			w.lat = append(w.lat, max(1, (done-at).Microseconds()))
			w.svc = append(w.svc, max(1, (done-picked).Microseconds()))
			w.due = append(w.due, int(at/time.Second))
		}
		if len(w.lat) == recordBatch || len(w.shed) == recordBatch {
			w.flush()
		}
		picked = done
	}
}

// decidedAt is when d was decided, since start: the node's time when a
// node decided it and said when (d.Decided), else done, the harness's
// clock at the answer (the SDK decided alone from a lease, at once).
// start's wall clock reading is the run's base (accuracy.Run.Base), so a
// node's time and the harness's share one scale.
func decidedAt(d quotamesh.Decision, start time.Time, done time.Duration) time.Duration {
	if d.Decided.IsZero() {
		return done
	}
	return time.Duration(d.Decided.UnixNano() - start.UnixNano())
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
	for _, v := range w.shed {
		_ = nl.shedLat.RecordValue(min(v, histMaxUs))
	}
	nl.overloaded += int64(len(w.shed))
	nl.errors += w.errs
	if nl.firstErr == nil {
		nl.firstErr = w.firstErr
	}
	nl.answered += w.answered
	nl.last = max(nl.last, w.last)
	nl.mu.Unlock()
	w.lat, w.svc, w.due, w.shed, w.errs, w.answered = w.lat[:0], w.svc[:0], w.due[:0], w.shed[:0], 0, 0
}

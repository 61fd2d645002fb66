// Package score records what a limiter decided for every request of a run
// and compares it, key by key, with a perfect limiter: the figures of the
// peer benchmark's table that loadgen does not give for many keys (error
// against each key's own ideal, requests denied while their key was within
// its limit, the largest wall-clock-aligned window of one key).
//
// The ideal is internal/accuracy's (one exact sliding window of the
// limit's slots per key, its slot edges on the wall clock as the nodes'
// are), fed each request at its intended time. internal/loadgen scores
// every key too (accuracy.Evaluate), but its error is |Σ admitted − Σ
// ideal| over the keys, with no split into admitted below and above each
// key's ideal, and it cannot see the calls made before the load (Prime);
// the table needs both, so the benchmark keeps this scoring.
package score

import (
	"context"
	"sync/atomic"
	"time"

	"github.com/quotamesh/quotamesh"
	"github.com/quotamesh/quotamesh/internal/accuracy"
)

// Outcome is what became of one request: the bench's and the simulator's
// outcomes (accuracy.Outcome), so one vocabulary serves all three.
type Outcome = accuracy.Outcome

// The outcomes. Pending: never decided (the run ended first).
const (
	Pending  = accuracy.Pending
	Admitted = accuracy.Admitted
	Denied   = accuracy.Denied
	Failed   = accuracy.Failed
)

// Record is one request as the Recorder saw it. Times are nanoseconds
// since the recorder's base time: Intended is when the load generator
// meant to send it, Start when its call began, Done when it returned.
type Record struct {
	Intended, Start, Done int64
	Key                   uint32
	Outcome               Outcome
}

// Recorder is a quotamesh.Limiter that sends each call, under the key
// the next entry of its key sequence names (the key it is called with is
// ignored), to another limiter, and records what became of it. It is safe
// for concurrent use; Records may be read once no call is in progress.
//
// Its i-th call is taken for the i-th arrival of the load it is given:
// internal/loadgen hands a node's arrivals to its workers in order, and a
// call begins only after its arrival was handed over, so when i calls have
// begun, i arrivals were due. Calls that begin in another order than their
// arrivals (two workers woken together, or one held up in the middle of a
// batch) swap intended times among themselves; each key's requests and the
// ideal's admissions are then the same, and the latencies are loadgen's.
type Recorder struct {
	inner    quotamesh.Limiter
	names    []string
	seq      []uint32
	arrivals []time.Duration
	base     time.Time
	loadAt   time.Duration // the load's start, from base
	next     atomic.Uint64
	recs     []Record
	primes   []Record
	dropped  atomic.Int64
}

// NewRecorder records calls to inner for the load whose arrivals (from
// its start, in order) are given: the i-th call is made under
// names[seq[i mod len(seq)]] and recorded as arrivals[i]; calls beyond the
// arrivals are counted as dropped. Times are from base. Every entry of
// seq must index names.
func NewRecorder(inner quotamesh.Limiter, names []string, seq []uint32, arrivals []time.Duration, base time.Time) *Recorder {
	return &Recorder{inner: inner, names: names, seq: seq, arrivals: arrivals, base: base,
		recs: make([]Record, len(arrivals))}
}

// StartLoad says when the load started (its arrivals are from then). It
// must be called before the load's first call, from the goroutine that
// starts the load.
func (r *Recorder) StartLoad(at time.Time) { r.loadAt = at.Sub(r.base) }

// Prime makes one call under the sequence's first key, outside the load
// (not taken for an arrival), and records it with its start as its
// intended time. Prime calls must not overlap the load's.
func (r *Recorder) Prime(ctx context.Context) error {
	k := r.seq[0]
	start := time.Since(r.base)
	d, err := r.inner.Allow(ctx, r.names[k])
	r.primes = append(r.primes, Record{Intended: int64(start), Start: int64(start), Done: int64(time.Since(r.base)), Key: k,
		Outcome: outcome(d, err)})
	return err
}

// outcome is what a call's answer means.
func outcome(d quotamesh.Decision, err error) Outcome {
	switch {
	case err != nil:
		return Failed
	case d.Allowed:
		return Admitted
	}
	return Denied
}

// Allow is AllowN(ctx, key, 1).
func (r *Recorder) Allow(ctx context.Context, key string) (quotamesh.Decision, error) {
	return r.AllowN(ctx, key, 1)
}

// AllowN asks inner for n under the next key of the sequence (not key)
// and records the outcome.
func (r *Recorder) AllowN(ctx context.Context, _ string, n int64) (quotamesh.Decision, error) {
	i := r.next.Add(1) - 1
	k := r.seq[i%uint64(len(r.seq))]
	start := time.Since(r.base)
	d, err := r.inner.AllowN(ctx, r.names[k], n)
	if i < uint64(len(r.recs)) {
		r.recs[i] = Record{Intended: int64(r.loadAt + r.arrivals[i]), Start: int64(start), Done: int64(time.Since(r.base)),
			Key: k, Outcome: outcome(d, err)}
	} else {
		r.dropped.Add(1)
	}
	return d, err
}

// Close does nothing: the recorder does not own the limiter it calls.
func (r *Recorder) Close() error { return nil }

// Records are the calls recorded: the prime calls, then the load's in
// the order they began.
func (r *Recorder) Records() []Record {
	return append(append([]Record(nil), r.primes...), r.recs[:min(r.next.Load(), uint64(len(r.recs)))]...)
}

// Dropped counts the load's calls beyond its arrivals, not recorded.
func (r *Recorder) Dropped() int64 { return r.dropped.Load() }

// Base is the recorder's base time: every Record's times are from it.
func (r *Recorder) Base() time.Time { return r.base }

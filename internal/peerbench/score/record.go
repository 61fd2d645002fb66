// Package score records what a limiter decided for every request of a run
// and compares it, key by key, with a perfect limiter: the figures of the
// peer benchmark's table that loadgen does not give for many keys (error
// against each key's own ideal, requests denied while their key was within
// its limit, the largest wall-clock-aligned window of one key).
//
// The ideal is internal/accuracy's (one exact sliding window of the
// limit's slots per key, its slot edges on the wall clock as the nodes'
// are), fed each request at the time its call began. The repository's
// internal/accuracy is growing a per-key evaluation of its own; once it is
// on main this package should keep only the Recorder and use it.
package score

import (
	"context"
	"sync/atomic"
	"time"

	"github.com/quotamesh/quotamesh"
)

// Outcome is what became of one request.
type Outcome uint8

// The outcomes. Pending: never decided (the run ended first).
const (
	Pending Outcome = iota
	Admitted
	Denied
	Failed
)

// Record is one request as the Recorder saw it. Start and Done are
// nanoseconds since the recorder's base time.
type Record struct {
	Start, Done int64
	Key         uint32
	Outcome     Outcome
}

// Recorder is a quotamesh.Limiter that sends each call, under the key
// the next entry of its key sequence names (the key it is called with is
// ignored), to another limiter, and records what became of it. It is safe
// for concurrent use; Records may be read once no call is in progress.
type Recorder struct {
	inner   quotamesh.Limiter
	names   []string
	seq     []uint32
	base    time.Time
	next    atomic.Uint64
	recs    []Record
	dropped atomic.Int64
}

// NewRecorder records up to capacity calls to inner, made under
// names[seq[i mod len(seq)]] for the i-th call, with times from base.
// Every entry of seq must index names.
func NewRecorder(inner quotamesh.Limiter, names []string, seq []uint32, base time.Time, capacity int) *Recorder {
	return &Recorder{inner: inner, names: names, seq: seq, base: base, recs: make([]Record, capacity)}
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
	rec := Record{Start: int64(start), Done: int64(time.Since(r.base)), Key: k}
	switch {
	case err != nil:
		rec.Outcome = Failed
	case d.Allowed:
		rec.Outcome = Admitted
	default:
		rec.Outcome = Denied
	}
	if i < uint64(len(r.recs)) {
		r.recs[i] = rec
	} else {
		r.dropped.Add(1)
	}
	return d, err
}

// Close does nothing: the recorder does not own the limiter it calls.
func (r *Recorder) Close() error { return nil }

// Records are the calls recorded, in the order they began; Dropped counts
// those beyond the capacity, not recorded.
func (r *Recorder) Records() []Record {
	return r.recs[:min(r.next.Load(), uint64(len(r.recs)))]
}

// Dropped counts calls made beyond the recorder's capacity.
func (r *Recorder) Dropped() int64 { return r.dropped.Load() }

// Base is the recorder's base time: every Record's times are from it.
func (r *Recorder) Base() time.Time { return r.base }

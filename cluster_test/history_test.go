//go:build fault

package cluster_test

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// bucketWidth is the width of a decision bucket: one node slot (design.md
// §2), aligned to the Unix epoch as node slots are.
const bucketWidth = 100 * time.Millisecond

// maxBuckets bounds a run's length (2 hours of 100 ms buckets).
const maxBuckets = 72_000

// Op is one entry of the history. Times are nanoseconds since the run's
// zero (History.zero).
type Op struct {
	Type     string `json:"type"` // set, get, event, fault
	Process  int    `json:"process,omitempty"`
	Node     string `json:"node,omitempty"`
	Key      string `json:"key,omitempty"`
	Value    int64  `json:"value,omitempty"`  // set: the count written; get: the count read (0: no rule)
	Result   string `json:"result,omitempty"` // ok, fail (did not happen), info (unknown)
	Error    string `json:"error,omitempty"`
	Invoke   int64  `json:"invoke"`
	Complete int64  `json:"complete,omitempty"`
	Index    uint64 `json:"index,omitempty"` // set: Raft index
	Name     string `json:"name,omitempty"`  // event and fault
	Detail   string `json:"detail,omitempty"`
}

// decisionCounts are one node's decisions in one bucket, by invoke time;
// exact counts the admissions that also completed in the bucket.
type decisionCounts struct {
	admitted, denied, failed, exact atomic.Int64
}

// span is an admission whose invoke and completion fell in different
// buckets: it happened somewhere in buckets [from, to].
type span struct{ from, to int }

// History records a run: register operations and events as Ops, and
// decisions as per-node counts per 100 ms bucket. A strict decision is
// taken by the node somewhere between its invoke and its completion, so an
// admission is only known to lie in a window if both do: the bound checker
// counts exact admissions (both in one bucket) and spans (both in the
// window), which never over-counts, whatever the test process' scheduling.
type History struct {
	zero      time.Time
	zeroEpoch int64 // Unix epoch of the bucket holding zero
	nodes     []string

	mu  sync.Mutex
	ops []Op

	counts [][]decisionCounts // [node][bucket]
	spanMu sync.Mutex
	spans  []span
	shed   atomic.Int64 // requests the generator could not place
	last   atomic.Int64 // highest bucket touched
}

func newHistory(nodes []string) *History {
	h := &History{zero: time.Now(), nodes: nodes}
	h.zeroEpoch = h.zero.UnixNano() / int64(bucketWidth)
	h.counts = make([][]decisionCounts, len(nodes))
	for i := range h.counts {
		h.counts[i] = make([]decisionCounts, maxBuckets)
	}
	return h
}

// now is the run time.
func (h *History) now() int64 { return int64(time.Since(h.zero)) }

// bucket returns the bucket of run time t.
func (h *History) bucket(t time.Time) int {
	b := int(t.UnixNano()/int64(bucketWidth) - h.zeroEpoch)
	return min(max(b, 0), maxBuckets-1)
}

// bucketStart is the run time at which bucket b starts.
func (h *History) bucketStart(b int) time.Duration {
	return time.Duration((h.zeroEpoch+int64(b))*int64(bucketWidth) - h.zero.UnixNano())
}

func (h *History) decided(node int, invoke, complete time.Time, admitted bool, err error) {
	b := h.bucket(invoke)
	c := &h.counts[node][b]
	switch {
	case err != nil:
		c.failed.Add(1)
	case admitted:
		c.admitted.Add(1)
		if e := h.bucket(complete); e == b {
			c.exact.Add(1)
		} else {
			h.spanMu.Lock()
			h.spans = append(h.spans, span{b, e})
			h.spanMu.Unlock()
		}
	default:
		c.denied.Add(1)
	}
	for {
		l := h.last.Load()
		if int64(b) <= l || h.last.CompareAndSwap(l, int64(b)) {
			return
		}
	}
}

func (h *History) add(op Op) {
	h.mu.Lock()
	h.ops = append(h.ops, op)
	h.mu.Unlock()
}

// event records something that happened at one instant.
func (h *History) event(name, node, detail string) {
	h.add(Op{Type: "event", Name: name, Node: node, Detail: detail, Invoke: h.now()})
}

// Ops returns a copy of the operations so far.
func (h *History) Ops() []Op {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]Op(nil), h.ops...)
}

// admittedSeries returns per node the admitted count of every bucket up to
// the last one touched.
func (h *History) admittedSeries() [][]int64 {
	n := int(h.last.Load()) + 1
	out := make([][]int64, len(h.nodes))
	for i := range out {
		out[i] = make([]int64, n)
		for b := range n {
			out[i][b] = h.counts[i][b].admitted.Load()
		}
	}
	return out
}

// exactTotals returns the cluster's exact admissions per bucket and the
// spans, up to the last bucket touched.
func (h *History) exactTotals() ([]int64, []span) {
	n := int(h.last.Load()) + 1
	out := make([]int64, n)
	for i := range h.nodes {
		for b := range n {
			out[b] += h.counts[i][b].exact.Load()
		}
	}
	h.spanMu.Lock()
	defer h.spanMu.Unlock()
	return out, append([]span(nil), h.spans...)
}

// failedTotal is how many decisions ended in an error (unknown outcome).
func (h *History) failedTotal() int64 {
	var s int64
	for i := range h.nodes {
		for b := range int(h.last.Load()) + 1 {
			s += h.counts[i][b].failed.Load()
		}
	}
	return s
}

// write stores the history as JSON lines: every Op, then one decisions
// line per node and bucket that saw any.
func (h *History) write(path string) error {
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("history: %w", err)
	}
	w := bufio.NewWriter(f)
	enc := json.NewEncoder(w)
	for _, op := range h.Ops() {
		if err := enc.Encode(op); err != nil {
			f.Close()
			return fmt.Errorf("history: %w", err)
		}
	}
	type decisions struct {
		Type     string `json:"type"`
		Node     string `json:"node"`
		Start    int64  `json:"start"` // run time of the bucket's start
		Admitted int64  `json:"admitted"`
		Denied   int64  `json:"denied"`
		Failed   int64  `json:"failed"`
	}
	last := int(h.last.Load())
	for b := 0; b <= last; b++ {
		for i, id := range h.nodes {
			c := &h.counts[i][b]
			d := decisions{"decisions", id, int64(h.bucketStart(b)), c.admitted.Load(), c.denied.Load(), c.failed.Load()}
			if d.Admitted+d.Denied+d.Failed == 0 {
				continue
			}
			if err := enc.Encode(d); err != nil {
				f.Close()
				return fmt.Errorf("history: %w", err)
			}
		}
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return fmt.Errorf("history: %w", err)
	}
	return f.Close()
}

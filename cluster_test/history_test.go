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
	// Floor is a reset's floor in run time (ns): the slot edge from which
	// every node counts the pattern's admissions again (ResetResult.At).
	Floor int64 `json:"floor,omitempty"`
}

// decisionCounts are one node's decisions in one bucket, by invoke time;
// exact counts the admissions that also completed in the bucket.
type decisionCounts struct {
	admitted, denied, failed, exact atomic.Int64
}

// span is an admission whose invoke and completion fell in different
// buckets: it happened somewhere in buckets [from, to], on node (the
// index of the node whose client made the call).
type span struct{ node, from, to int }

// History records a run: register operations and events as Ops, and each
// load's decisions (a decisionLog per decision mode) as per-node counts per
// 100 ms bucket.
type History struct {
	zero      time.Time
	zeroEpoch int64 // Unix epoch of the bucket holding zero
	nodes     []string

	mu   sync.Mutex
	ops  []Op
	logs []*decisionLog
}

// decisionLog is one load's decisions (one key, one decision mode), per node
// and 100 ms bucket. Each admission is placed where the call that got it
// was decided, which lies between the call's invoke and its completion in
// both modes: in strict mode the node decides during the round trip; in
// lease mode the SDK takes a token of a lease during the call (the node
// reserved it at grant, before, and counts it at settlement, after: the
// promise is about uses, design.md §10), or, without a usable lease, the
// node decides during the round trip. So an admission is only known to lie
// in a window if both its invoke and its completion do: the bound checker
// counts exact admissions (both in one bucket) and spans (both in the
// window), which never over-counts, whatever the test process' scheduling.
type decisionLog struct {
	h    *History
	mode string // strict or lease
	key  string

	counts [][]decisionCounts // [node][bucket]
	spanMu sync.Mutex
	spans  []span
	shed   atomic.Int64 // requests the generator could not place
	last   atomic.Int64 // highest bucket touched
}

func newHistory(nodes []string) *History {
	h := &History{zero: time.Now(), nodes: nodes}
	h.zeroEpoch = h.zero.UnixNano() / int64(bucketWidth)
	return h
}

// newLog adds the decision log of one load.
func (h *History) newLog(mode, key string) *decisionLog {
	d := &decisionLog{h: h, mode: mode, key: key}
	d.counts = make([][]decisionCounts, len(h.nodes))
	for i := range d.counts {
		d.counts[i] = make([]decisionCounts, maxBuckets)
	}
	h.mu.Lock()
	h.logs = append(h.logs, d)
	h.mu.Unlock()
	return d
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

func (d *decisionLog) decided(node int, invoke, complete time.Time, admitted bool, err error) {
	b := d.h.bucket(invoke)
	c := &d.counts[node][b]
	switch {
	case err != nil:
		c.failed.Add(1)
	case admitted:
		c.admitted.Add(1)
		if e := d.h.bucket(complete); e == b {
			c.exact.Add(1)
		} else {
			d.spanMu.Lock()
			d.spans = append(d.spans, span{node, b, e})
			d.spanMu.Unlock()
		}
	default:
		c.denied.Add(1)
	}
	for {
		l := d.last.Load()
		if int64(b) <= l || d.last.CompareAndSwap(l, int64(b)) {
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
func (d *decisionLog) admittedSeries() [][]int64 {
	n := int(d.last.Load()) + 1
	out := make([][]int64, len(d.counts))
	for i := range out {
		out[i] = make([]int64, n)
		for b := range n {
			out[i][b] = d.counts[i][b].admitted.Load()
		}
	}
	return out
}

// exactTotals returns the cluster's exact admissions per bucket and the
// spans, up to the last bucket touched.
func (d *decisionLog) exactTotals() ([]int64, []span) {
	n := int(d.last.Load()) + 1
	out := make([]int64, n)
	for i := range d.counts {
		for b := range n {
			out[b] += d.counts[i][b].exact.Load()
		}
	}
	d.spanMu.Lock()
	defer d.spanMu.Unlock()
	return out, append([]span(nil), d.spans...)
}

// failedTotal is how many decisions ended in an error (unknown outcome).
func (d *decisionLog) failedTotal() int64 {
	var s int64
	for i := range d.counts {
		for b := range int(d.last.Load()) + 1 {
			s += d.counts[i][b].failed.Load()
		}
	}
	return s
}

// write stores the history as JSON lines: every Op, then one decisions
// line per load, node and bucket that saw any.
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
		Mode     string `json:"mode"`
		Key      string `json:"key"`
		Node     string `json:"node"`
		Start    int64  `json:"start"` // run time of the bucket's start
		Admitted int64  `json:"admitted"`
		Denied   int64  `json:"denied"`
		Failed   int64  `json:"failed"`
	}
	h.mu.Lock()
	logs := append([]*decisionLog(nil), h.logs...)
	h.mu.Unlock()
	for _, dl := range logs {
		last := int(dl.last.Load())
		for b := 0; b <= last; b++ {
			for i, id := range h.nodes {
				c := &dl.counts[i][b]
				d := decisions{"decisions", dl.mode, dl.key, id, int64(h.bucketStart(b)), c.admitted.Load(), c.denied.Load(), c.failed.Load()}
				if d.Admitted+d.Denied+d.Failed == 0 {
					continue
				}
				if err := enc.Encode(d); err != nil {
					f.Close()
					return fmt.Errorf("history: %w", err)
				}
			}
		}
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return fmt.Errorf("history: %w", err)
	}
	return f.Close()
}

// Package accuracy turns what a cluster admitted into the figures QuotaMesh
// reports everywhere (the simulator, the real-process harness, the fault
// suite): total admitted, the ideal, the error, and the largest admitted
// count in any sliding window relative to the limit; and, from a Log of
// every request and its outcome (Evaluate), the same per key: each key
// against its own perfect limiter, the distribution of their errors, the
// worst key, requests denied while their key was within its limit, and the
// largest aligned window of one key.
//
// The ideal is what one perfect limiter would have admitted seeing every
// request of the run in order: for a sustained 2× load it equals
// limit × duration / window (within a request or two), and for loads that
// dip below the limit (ramp) it is correspondingly lower, so the error keeps
// meaning "how far from a perfect global limiter" for every pattern.
package accuracy

import (
	"fmt"
	"io"
	"math"
	"slices"
	"text/tabwriter"
	"time"

	"github.com/quotamesh/quotamesh/limits"
	"github.com/quotamesh/quotamesh/window"
)

// NodeReport is one node's part of a run.
type NodeReport struct {
	Node     string `json:"node"`
	Offered  int64  `json:"offered"`
	Admitted int64  `json:"admitted"`
}

// Report is the outcome of one run. Its JSON form is what `quotamesh sim
// --json` and `quotamesh bench --json` print.
type Report struct {
	Pattern  string `json:"pattern"`
	Nodes    int    `json:"nodes"`
	Limit    string `json:"limit"`
	Duration string `json:"duration"`
	Offered  int64  `json:"offered"`
	Admitted int64  `json:"admitted"`
	Ideal    int64  `json:"ideal"`
	// Error is |admitted − ideal| / ideal.
	Error float64 `json:"error"`
	// MaxWindowRatio is the largest admitted count in any sliding window of
	// the limit's length (1 s for a per-second limit), over the limit.
	MaxWindowRatio float64      `json:"max_window_ratio"`
	PerNode        []NodeReport `json:"per_node"`
	// PerKey is every key's own accuracy (Evaluate).
	PerKey KeyReport `json:"per_key"`
}

// WriteTable writes what each node and the cluster were offered and
// admitted as a right-aligned table, the form `quotamesh sim` and `bench`
// print.
func (r *Report) WriteTable(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "node\toffered\tadmitted\t")
	for _, n := range r.PerNode {
		fmt.Fprintf(tw, "%s\t%d\t%d\t\n", n.Node, n.Offered, n.Admitted)
	}
	fmt.Fprintf(tw, "cluster\t%d\t%d\t\n", r.Offered, r.Admitted)
	return tw.Flush()
}

// Error returns |admitted − ideal| / ideal (0 when both are 0).
func Error(admitted, ideal int64) float64 {
	if ideal == 0 {
		if admitted == 0 {
			return 0
		}
		return math.Inf(1)
	}
	return math.Abs(float64(admitted-ideal)) / float64(ideal)
}

// MaxWindow returns the largest number of admission times that fall in any
// half-open interval [t, t+window). times need not be sorted; it is sorted
// in place.
func MaxWindow(times []time.Duration, window time.Duration) int {
	slices.Sort(times)
	best, lo := 0, 0
	for hi, t := range times {
		for t-times[lo] >= window {
			lo++
		}
		best = max(best, hi-lo+1)
	}
	return best
}

// Fill computes Admitted, Error and MaxWindowRatio from the per-node reports,
// every admission time of the run (all nodes together), the limit count per
// window and the window.
func (r *Report) Fill(admitTimes []time.Duration, limitCount int64, window time.Duration) {
	r.Offered, r.Admitted = 0, 0
	for _, n := range r.PerNode {
		r.Offered += n.Offered
		r.Admitted += n.Admitted
	}
	r.Error = Error(r.Admitted, r.Ideal)
	if limitCount > 0 {
		r.MaxWindowRatio = float64(MaxWindow(admitTimes, window)) / float64(limitCount)
	}
}

// Ideal is what one perfect limiter with rate's sliding window would admit
// seeing every request at its intended time (from the run's start), in
// order: the count and the times of its admissions. intended is sorted in
// place. base is the wall time of the run's start (Unix ns): the ideal's
// slots then have the nodes' slot edges, which follow the wall clock. With
// slots of its own, the ideal would differ from any correct cluster by up
// to a whole limit per run: far above the limit a window's room is spent in
// the first slot that opens, so the run holds one more or one fewer burst
// depending on where the slot edges fall in it. rate must be valid
// (limits.ParseRate's); Ideal panics otherwise.
func Ideal(intended []time.Duration, rate limits.Rate, base int64) (int64, []time.Duration) {
	slices.Sort(intended)
	w, err := window.New(rate, base)
	if err != nil {
		panic(fmt.Sprintf("accuracy: a validated rate %v was refused: %v", rate, err))
	}
	var times []time.Duration
	for _, t := range intended {
		if w.AllowN(base+int64(t), 1) {
			times = append(times, t)
		}
	}
	return int64(len(times)), times
}

// MaxSlotWindow is the largest sum of k consecutive counts (counts per
// slot, in order), or of all of them when there are fewer than k.
func MaxSlotWindow(counts []int64, k int) int64 {
	var best, sum int64
	for s, c := range counts {
		sum += c
		if s >= k {
			sum -= counts[s-k]
		}
		best = max(best, sum)
	}
	return best
}

// Target is what a perfect limiter of perSecond admits in d under a load
// above the limit, rounded to the nearest request.
func Target(perSecond float64, d time.Duration) int64 {
	return int64(perSecond*d.Seconds() + 0.5)
}

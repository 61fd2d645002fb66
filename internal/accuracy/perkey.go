package accuracy

import (
	"fmt"
	"io"
	"math"
	"slices"
	"time"

	"github.com/quotamesh/quotamesh/limits"
	"github.com/quotamesh/quotamesh/window"
)

// KeyCounts is one key's part of a run.
type KeyCounts struct {
	Key      string `json:"key"`
	Offered  int64  `json:"offered"`
	Admitted int64  `json:"admitted"`
	Ideal    int64  `json:"ideal"`
	// Error is (admitted − ideal) / ideal, signed: below zero the key was
	// admitted less than a perfect limiter would have.
	Error float64 `json:"error"`
}

// KeyReport is how close every key came to its own perfect limiter.
type KeyReport struct {
	// Keys is how many keys the workload names; Offered how many were
	// offered at least one request (the others are not in the figures).
	Keys    int `json:"keys"`
	Offered int `json:"keys_offered"`
	// AbsErrorP50, P90 and Max are |admitted − ideal| of the offered keys,
	// in requests.
	AbsErrorP50 int64 `json:"abs_error_p50"`
	AbsErrorP90 int64 `json:"abs_error_p90"`
	AbsErrorMax int64 `json:"abs_error_max"`
	// Within is the share of offered keys within 1 % or 2 requests of
	// their ideal, whichever is more.
	Within float64 `json:"within_share"`
	// Worst is the key farthest from its ideal relative to that tolerance.
	Worst KeyCounts `json:"worst_key"`
	// UnderLimit counts requests offered while their key's offered demand
	// in the window up to them (a continuous window of the limit's length,
	// the request included) was within the limit: requests a perfect
	// limiter admits whatever it admitted before. FalseDenials counts those
	// the cluster denied, and FalseDenialShare is their share.
	UnderLimit       int64   `json:"offered_under_limit"`
	FalseDenials     int64   `json:"false_denials"`
	FalseDenialShare float64 `json:"false_denial_share"`
	// MaxAlignedRatio is the largest count of one key's admissions in a
	// window of the limit's length aligned on the wall clock (whole seconds
	// for a per-second limit), over the limit, each admission at the time
	// it was decided (Request.DecidedAt: the node's clock for a node's
	// decision); MaxAlignedKey and MaxAlignedAt (since the run's start;
	// negative when the window began before it) say where. A perfect
	// limiter's slots are aligned on the same clock, so its figure,
	// IdealMaxAlignedRatio, is at most 1.
	MaxAlignedRatio      float64 `json:"max_aligned_window_ratio"`
	MaxAlignedKey        string  `json:"max_aligned_window_key,omitempty"`
	MaxAlignedAt         string  `json:"max_aligned_window_at,omitempty"`
	IdealMaxAlignedRatio float64 `json:"ideal_max_aligned_window_ratio"`
	// MaxAlignedAnswerRatio is MaxAlignedRatio with each admission at the
	// time its answer reached the harness (Request.Done) instead: what a
	// caller timing its own calls sees, up to a round trip after the
	// node counted the admission, so admissions just before a second's
	// end move into the next.
	MaxAlignedAnswerRatio float64 `json:"max_aligned_window_ratio_at_answer"`
}

// Run is what Evaluate needs to know of a run besides its requests.
type Run struct {
	// Keys is how many keys the workload names; every request's Key is
	// below it.
	Keys int
	// Nodes names the nodes; every request's Node indexes it.
	Nodes []string
	// Rate is every key's limit (valid).
	Rate limits.Rate
	// Base is the wall time of the run's start (Unix ns): the ideal's slots
	// and the aligned windows follow the wall clock, as the nodes' do.
	Base int64
	// Duration is the run's length: PerSecond has one entry per whole or
	// started second of it.
	Duration time.Duration
	// KeyName names key i in the report.
	KeyName func(i int) string
	// Resets are the floors of resets of every key, as times since the
	// start, in order: at each the ideal forgets what it admitted before
	// it, as the cluster does (design.md §8, "Resets").
	Resets []time.Duration
}

// Result is Evaluate's answer.
type Result struct {
	// Report: the totals, the error against the sum of the keys' ideals and
	// the largest admitted count of one key in any sliding window of the
	// limit's length, over the limit (MaxWindowRatio).
	Report
	// IdealMaxWindowRatio is MaxWindowRatio of the ideal's admissions.
	IdealMaxWindowRatio float64
	// PerSecond is the admitted count, all keys, in each second of the run.
	PerSecond []int64
	// Failed counts requests whose call returned an error; Pending those
	// never decided.
	Failed, Pending int64
}

// Evaluate compares the decisions in log with a perfect sliding-window
// limiter per key (the ideal: each key's requests fed at their intended
// times, in order, to one window with the nodes' slots). Its work and
// memory follow the requests, plus a few bytes per key of the workload.
func Evaluate(log *Log, run Run) Result {
	res := Result{}
	res.PerKey.Keys = run.Keys
	res.Nodes = len(run.Nodes)
	res.Limit = run.Rate.String()
	per := make([]NodeReport, len(run.Nodes))
	for i, n := range run.Nodes {
		per[i].Node = n
	}
	secs := int(math.Ceil(run.Duration.Seconds()))
	res.PerSecond = make([]int64, max(secs, 1))
	order := byKey(log, run.Keys)
	var (
		scratch              keyScratch
		absErrs              []int64
		within               int
		worstScore           = -1.0
		maxWin, idealMaxWin  int64
		maxAlign, idealAlign int64
		maxAlignAnswer       int64
		alignKey             int
		alignAt              int64
	)
	w := run.Rate.Window
	for key, lo := 0, 0; lo < len(order); key++ {
		hi := lo
		for hi < len(order) && int(log.At(int(order[hi])).Key) == key {
			hi++
		}
		if hi == lo {
			continue
		}
		k := scratch.evaluate(log, order[lo:hi], run)
		lo = hi
		res.PerKey.Offered++
		res.Ideal += k.ideal
		res.Failed += k.failed
		res.Pending += k.pending
		res.PerKey.UnderLimit += k.under
		res.PerKey.FalseDenials += k.falseDenials
		abs := k.admitted - k.ideal
		abs = max(abs, -abs)
		absErrs = append(absErrs, abs)
		tol := max(0.01*float64(k.ideal), 2)
		if score := float64(abs) / tol; score > worstScore {
			worstScore = score
			res.PerKey.Worst = KeyCounts{Key: run.KeyName(key), Offered: k.offered, Admitted: k.admitted, Ideal: k.ideal,
				Error: signedError(k.admitted, k.ideal)}
		}
		if float64(abs) <= tol {
			within++
		}
		maxWin, idealMaxWin = max(maxWin, k.maxWindow), max(idealMaxWin, k.idealMaxWindow)
		idealAlign = max(idealAlign, k.idealMaxAligned)
		maxAlignAnswer = max(maxAlignAnswer, k.maxAlignedAnswer)
		if k.maxAligned > maxAlign {
			maxAlign, alignKey, alignAt = k.maxAligned, key, k.maxAlignedAt
		}
	}
	for i := range log.Len() {
		r := log.At(i)
		if int(r.Node) < len(per) {
			per[r.Node].Offered++
			if r.Outcome == Admitted {
				per[r.Node].Admitted++
			}
		}
		if r.Outcome == Admitted {
			if s := int(r.DecidedAt() / time.Second); s >= 0 && s < len(res.PerSecond) {
				res.PerSecond[s]++
			}
		}
	}
	res.PerNode = per
	res.Fill(nil, 0, w)
	limit := float64(run.Rate.Count)
	res.MaxWindowRatio = float64(maxWin) / limit
	res.IdealMaxWindowRatio = float64(idealMaxWin) / limit
	pk := &res.PerKey
	if pk.Offered > 0 {
		slices.Sort(absErrs)
		pk.AbsErrorP50 = absErrs[(len(absErrs)-1)/2]
		pk.AbsErrorP90 = absErrs[(len(absErrs)-1)*9/10]
		pk.AbsErrorMax = absErrs[len(absErrs)-1]
		pk.Within = float64(within) / float64(pk.Offered)
	}
	if pk.UnderLimit > 0 {
		pk.FalseDenialShare = float64(pk.FalseDenials) / float64(pk.UnderLimit)
	}
	pk.MaxAlignedRatio = float64(maxAlign) / limit
	pk.IdealMaxAlignedRatio = float64(idealAlign) / limit
	pk.MaxAlignedAnswerRatio = float64(maxAlignAnswer) / limit
	if maxAlign > 0 {
		pk.MaxAlignedKey = run.KeyName(alignKey)
		pk.MaxAlignedAt = time.Duration(alignAt*int64(w) - run.Base).Round(time.Millisecond).String()
	}
	return res
}

// signedError is (admitted − ideal) / ideal, 0 when both are 0.
func signedError(admitted, ideal int64) float64 {
	if ideal == 0 {
		if admitted == 0 {
			return 0
		}
		return math.Inf(1)
	}
	return float64(admitted-ideal) / float64(ideal)
}

// byKey returns the log's indices grouped by key, each key's in log order
// (a counting sort: linear in requests plus keys).
func byKey(log *Log, keys int) []int32 {
	n := log.Len()
	order := make([]int32, n)
	if keys <= 1 {
		for i := range order {
			order[i] = int32(i)
		}
		return order
	}
	start := make([]int32, keys+1)
	for i := range n {
		start[log.At(i).Key+1]++
	}
	for k := 1; k <= keys; k++ {
		start[k] += start[k-1]
	}
	for i := range n {
		k := log.At(i).Key
		order[start[k]] = int32(i)
		start[k]++
	}
	return order
}

// keyFigures are one key's figures.
type keyFigures struct {
	offered, admitted, ideal, failed, pending int64
	under, falseDenials                       int64
	maxWindow, idealMaxWindow                 int64
	maxAligned, idealMaxAligned               int64
	maxAlignedAt                              int64 // the aligned window's index
	maxAlignedAnswer                          int64 // admissions at their answer
}

// keyScratch holds buffers reused from key to key.
type keyScratch struct {
	admits, answers, ideal []time.Duration
}

// evaluate computes the figures of one key from its requests idx (in log
// order, so by intended time).
func (s *keyScratch) evaluate(log *Log, idx []int32, run Run) keyFigures {
	var f keyFigures
	w := run.Rate.Window
	iw, err := window.New(run.Rate, run.Base)
	if err != nil {
		panic(fmt.Sprintf("accuracy: a validated rate %v was refused: %v", run.Rate, err))
	}
	s.admits, s.answers, s.ideal = s.admits[:0], s.answers[:0], s.ideal[:0]
	tail := 0 // the oldest request within w of the current one
	resets := run.Resets
	for i, j := range idx {
		r := log.At(int(j))
		f.offered++
		for len(resets) > 0 && resets[0] <= r.At {
			at := run.Base + int64(resets[0])
			iw.ClearBefore(at, window.EpochOf(at))
			resets = resets[1:]
		}
		if iw.AllowN(run.Base+int64(r.At), 1) {
			f.ideal++
			s.ideal = append(s.ideal, r.At)
		}
		for log.At(int(idx[tail])).At <= r.At-w {
			tail++
		}
		under := int64(i-tail+1) <= run.Rate.Count
		if under {
			f.under++
		}
		switch r.Outcome {
		case Admitted:
			f.admitted++
			s.admits = append(s.admits, r.DecidedAt())
			s.answers = append(s.answers, r.Done)
		case Denied:
			if under {
				f.falseDenials++
			}
		case Failed:
			f.failed++
		case Pending:
			f.pending++
		}
	}
	slices.Sort(s.admits)
	f.maxWindow = int64(MaxWindow(s.admits, w))
	f.idealMaxWindow = int64(MaxWindow(s.ideal, w))
	f.maxAligned, f.maxAlignedAt = maxAligned(s.admits, w, run.Base)
	f.idealMaxAligned, _ = maxAligned(s.ideal, w, run.Base)
	slices.Sort(s.answers)
	f.maxAlignedAnswer, _ = maxAligned(s.answers, w, run.Base)
	return f
}

// maxAligned returns the largest count of sorted times (since base) in one
// window of length w aligned on the wall clock, and that window's index.
func maxAligned(times []time.Duration, w time.Duration, base int64) (best, at int64) {
	var cur, curAt int64 = 0, math.MinInt64
	for _, t := range times {
		i := floorDiv(base+int64(t), int64(w))
		if i != curAt {
			cur, curAt = 0, i
		}
		cur++
		if cur > best {
			best, at = cur, i
		}
	}
	return best, at
}

func floorDiv(a, b int64) int64 {
	q := a / b
	if a%b < 0 {
		q--
	}
	return q
}

// WriteText writes the per-key figures as `quotamesh sim` and `bench`
// print them.
func (k *KeyReport) WriteText(w io.Writer) {
	fmt.Fprintf(w, "per key (%d keys, %d offered): |admitted − ideal| p50 %d, p90 %d, max %d requests; within 1 %% or 2 requests of the ideal: %.1f %% of keys\n",
		k.Keys, k.Offered, k.AbsErrorP50, k.AbsErrorP90, k.AbsErrorMax, 100*k.Within)
	if k.Offered > 0 {
		fmt.Fprintf(w, "worst key %s: offered %d, admitted %d, ideal %d (%+.2f %%)\n",
			k.Worst.Key, k.Worst.Offered, k.Worst.Admitted, k.Worst.Ideal, 100*k.Worst.Error)
	}
	fmt.Fprintf(w, "denied while the key's demand was within its limit: %d of %d requests (%.3f %%)\n",
		k.FalseDenials, k.UnderLimit, 100*k.FalseDenialShare)
	fmt.Fprintf(w, "largest aligned window of one key / limit, at decision times: %.3f", k.MaxAlignedRatio)
	if k.MaxAlignedKey != "" {
		fmt.Fprintf(w, " (%s, window from %s)", k.MaxAlignedKey, k.MaxAlignedAt)
	}
	fmt.Fprintf(w, "; at answer times: %.3f; the ideal's: %.3f\n", k.MaxAlignedAnswerRatio, k.IdealMaxAlignedRatio)
}

package score

import (
	"cmp"
	"slices"
	"time"

	"github.com/quotamesh/quotamesh/internal/accuracy"
	"github.com/quotamesh/quotamesh/limits"
)

// Result is how close a run's decisions came to a perfect limiter per key.
type Result struct {
	// Offered counts every request; Admitted, Denied and Failed (the call
	// returned an error) what became of them; Pending those never decided.
	Offered, Admitted, Denied, Failed, Pending int64
	// Keys is how many keys were offered at least one request.
	Keys int
	// Ideal is the sum over keys of what a perfect limiter of the rate,
	// fed that key's requests, would have admitted.
	Ideal int64
	// Under and Over are the sums over keys of what was admitted below
	// and above each key's ideal, over Ideal; Error is their sum,
	// Σ|admitted − ideal| / Σ ideal (for one key, |admitted − ideal| /
	// ideal, internal/accuracy's error).
	Under, Over, Error float64
	// MaxAligned is the largest count of one key's admissions in a window
	// of the rate's length aligned on the wall clock (whole seconds for a
	// per-second rate), over the rate's count; IdealMaxAligned the same for
	// the ideal's admissions (at most 1: its slots follow the wall clock).
	MaxAligned, IdealMaxAligned float64
	// UnderLimit counts requests offered while their key's offered demand
	// in the window of the rate's length up to them (themselves included)
	// was within the limit: requests a perfect limiter admits whatever
	// happened before. FalseDenials counts those that were denied.
	UnderLimit, FalseDenials int64
}

// FalseDenialShare is FalseDenials over UnderLimit (0 when none were).
func (r Result) FalseDenialShare() float64 {
	if r.UnderLimit == 0 {
		return 0
	}
	return float64(r.FalseDenials) / float64(r.UnderLimit)
}

// Evaluate scores recs (of every node, keys below nkeys) against a
// perfect limiter of rate per key; base is the wall time (Unix ns) the
// records' times are counted from. rate must be valid.
func Evaluate(recs []Record, nkeys int, rate limits.Rate, base int64) Result {
	var res Result
	// Counting sort by key: the records of key k are order[off[k]:off[k+1]].
	off := make([]int, nkeys+1)
	for _, r := range recs {
		off[r.Key+1]++
	}
	for k := range nkeys {
		off[k+1] += off[k]
	}
	order := make([]Record, len(recs))
	fill := slices.Clone(off[:nkeys])
	for _, r := range recs {
		order[fill[r.Key]] = r
		fill[r.Key]++
	}
	var ks keyScratch
	var under, over, maxAl, idealMaxAl int64
	for k := range nkeys {
		kr := order[off[k]:off[k+1]]
		if len(kr) == 0 {
			continue
		}
		res.Keys++
		s := ks.score(kr, rate, base)
		res.Offered += int64(len(kr))
		res.Admitted += s.admitted
		res.Denied += s.denied
		res.Failed += s.failed
		res.Pending += s.pending
		res.Ideal += s.ideal
		res.UnderLimit += s.underLimit
		res.FalseDenials += s.falseDenials
		if d := s.admitted - s.ideal; d > 0 {
			over += d
		} else {
			under -= d
		}
		maxAl = max(maxAl, s.maxAligned)
		idealMaxAl = max(idealMaxAl, s.idealMaxAligned)
	}
	if res.Ideal > 0 {
		res.Under = float64(under) / float64(res.Ideal)
		res.Over = float64(over) / float64(res.Ideal)
		res.Error = res.Under + res.Over
	} else {
		res.Error = accuracy.Error(res.Admitted, 0)
	}
	res.MaxAligned = float64(maxAl) / float64(rate.Count)
	res.IdealMaxAligned = float64(idealMaxAl) / float64(rate.Count)
	return res
}

// keyScore is one key's figures.
type keyScore struct {
	admitted, denied, failed, pending, ideal int64
	underLimit, falseDenials                 int64
	maxAligned, idealMaxAligned              int64
}

// keyScratch holds buffers reused from key to key.
type keyScratch struct {
	starts, admits []time.Duration
}

// score computes one key's figures from its records (modified: sorted by
// intended time).
func (ks *keyScratch) score(kr []Record, rate limits.Rate, base int64) keyScore {
	var s keyScore
	slices.SortFunc(kr, func(a, b Record) int { return cmp.Compare(a.Intended, b.Intended) })
	ks.starts, ks.admits = ks.starts[:0], ks.admits[:0]
	w := int64(rate.Window)
	lo := 0
	for i, r := range kr {
		ks.starts = append(ks.starts, time.Duration(r.Intended))
		switch r.Outcome {
		case Admitted:
			s.admitted++
			ks.admits = append(ks.admits, time.Duration(r.Done))
		case Denied:
			s.denied++
		case Failed:
			s.failed++
		default:
			s.pending++
		}
		// Offered in (intended − window, intended], this request
		// included.
		for kr[lo].Intended <= r.Intended-w {
			lo++
		}
		if int64(i-lo+1) <= rate.Count {
			s.underLimit++
			if r.Outcome == Denied {
				s.falseDenials++
			}
		}
	}
	var idealTimes []time.Duration
	s.ideal, idealTimes = accuracy.Ideal(ks.starts, rate, base)
	s.maxAligned = MaxAligned(ks.admits, rate.Window, base)
	s.idealMaxAligned = MaxAligned(idealTimes, rate.Window, base)
	return s
}

// MaxAligned is the largest number of times (from base, Unix ns) that
// fall in one window [j·window, (j+1)·window) of the wall clock. times is
// sorted in place.
func MaxAligned(times []time.Duration, window time.Duration, base int64) int64 {
	slices.Sort(times)
	var best, run int64
	cur := int64(0)
	for i, t := range times {
		j := floorDiv(base+int64(t), int64(window))
		if i == 0 || j != cur {
			cur, run = j, 0
		}
		run++
		best = max(best, run)
	}
	return best
}

// floorDiv is ⌊a / b⌋ for b > 0, rounding down for negative a too.
func floorDiv(a, b int64) int64 {
	q := a / b
	if a%b != 0 && (a < 0) != (b < 0) {
		q--
	}
	return q
}

package runner

import (
	"context"
	"fmt"
	"time"

	"github.com/quotamesh/quotamesh"
	"github.com/quotamesh/quotamesh/internal/cputime"
	"github.com/quotamesh/quotamesh/internal/loadgen"
	"github.com/quotamesh/quotamesh/internal/pattern"
	"github.com/quotamesh/quotamesh/internal/peerbench/keys"
	"github.com/quotamesh/quotamesh/internal/peerbench/score"
	"github.com/quotamesh/quotamesh/limits"
)

// tick is the least time the generator sleeps between two wakes
// (`quotamesh bench`'s default).
const tick = 20 * time.Microsecond

// runSlack bounds a run beyond its load's length and the generator's
// largest lag.
const runSlack = 30 * time.Second

// workers is how many workers per node a load takes, and whether each
// hands a tick's arrivals to one worker (see the constants).
func workers(system string, fixedRate bool) (int, bool) {
	if system == QuotaMeshLeases && fixedRate {
		return LeaseRateWorkers, true
	}
	return Workers, false
}

// measure offers spec to t's limiters (lims: t's, or recs over them)
// and returns the report with the CPU time of this process and of t's
// processes during it, in seconds per 100k decisions answered.
func measure(ctx context.Context, t target, lims []quotamesh.Limiter, spec loadgen.Spec, recs []*score.Recorder) (loadgen.Report, error) {
	ctx, cancel := context.WithTimeout(ctx, spec.Load.Duration+spec.MaxLag+runSlack)
	defer cancel()
	pids := t.pids()
	c0 := cputime.Read(pids)
	// loadgen.Run takes its start a few allocations after this: the
	// recorders' intended times are that much early (well under a
	// millisecond; a slot is 100 ms).
	now := time.Now()
	for _, r := range recs {
		r.StartLoad(now)
	}
	rep := loadgen.Run(ctx, lims, t.names, spec)
	d := cputime.Read(pids).Since(c0)
	if err := t.died(); err != nil {
		return rep, fmt.Errorf("peerbench: %s: %w", t.system, err)
	}
	if err := ctx.Err(); err != nil {
		return rep, fmt.Errorf("peerbench: %s: %s load stopped after %s: %w", t.system, spec.Load.Pattern, rep.Elapsed, context.Cause(ctx))
	}
	rep.ClientCPUPer100k, rep.NodesCPUPer100k = -1, -1
	if rep.Answered > 0 {
		per := float64(rep.Answered) / 100_000
		rep.ClientCPUPer100k = d.Self.Seconds() / per
		if d.OthersOK {
			rep.NodesCPUPer100k = d.Others.Seconds() / per
		}
	}
	return rep, nil
}

// rowFrom fills a row's load figures from a report.
func rowFrom(t target, rep loadgen.Report, d time.Duration) Row {
	return Row{System: t.system, Offered: float64(rep.Offered+rep.Unsent) / d.Seconds(), Decided: rep.AchievedRPS,
		P50us: rep.P50us, P99us: rep.P99us, ServersCPU: rep.NodesCPUPer100k, ClientsCPU: rep.ClientCPUPer100k,
		Failed: rep.Errors, Unsent: rep.Unsent}
}

// expected is about how many arrivals node i has in load, with room to
// spare: a recorder's capacity.
func expected(load pattern.Load, i int) int {
	const step = 100 * time.Millisecond
	n := 0.0
	for t := time.Duration(0); t < load.Duration; t += step {
		n += load.Rate(i, t) * step.Seconds()
	}
	return int(n*1.2) + 1024
}

// recorders wraps each of t's limiters in a recorder of the keys names,
// node i drawing them in the order seqs[i] gives, for the arrivals
// loadgen will offer it (the same seeds).
func recorders(t target, spec loadgen.Spec, names []string, seqs [][]uint32) ([]*score.Recorder, []quotamesh.Limiter) {
	recs := make([]*score.Recorder, len(t.lims))
	lims := make([]quotamesh.Limiter, len(t.lims))
	base := time.Now()
	for i, l := range t.lims {
		recs[i] = score.NewRecorder(l, names, seqs[i], arrivals(spec, i), base)
		lims[i] = recs[i]
	}
	return recs, lims
}

// arrivals are node i's arrivals under spec, as loadgen.Run draws them.
func arrivals(spec loadgen.Spec, i int) []time.Duration {
	a := pattern.NewArrivals(spec.Load, i, spec.Arrivals, spec.Seed+uint64(i))
	out := make([]time.Duration, 0, expected(spec.Load, i))
	for t, ok := a.Next(); ok; t, ok = a.Next() {
		out = append(out, t)
	}
	return out
}

// evaluate scores every recorder's records together.
func evaluate(recs []*score.Recorder, nkeys int, rate limits.Rate) (*score.Result, error) {
	var all []score.Record
	for i, r := range recs {
		if r.Dropped() > 0 {
			return nil, fmt.Errorf("peerbench: node %d made %d calls beyond its recorder's room", i, r.Dropped())
		}
		all = append(all, r.Records()...)
	}
	res := score.Evaluate(all, nkeys, rate, recs[0].Base().UnixNano())
	return &res, nil
}

// accuracyRun offers pat at Multiplier × limit on one key of its own.
func accuracyRun(ctx context.Context, p Plan, t target, pat pattern.Name, seq int) (Row, error) {
	if err := settle(ctx, p.Settle); err != nil {
		return Row{}, err
	}
	key := fmt.Sprintf("one:%s-%s-%d", pat, t.system, seq)
	load := pattern.Load{Pattern: pat, Nodes: len(t.lims), Limit: p.limit.PerSecond(), Multiplier: p.Multiplier,
		Duration: p.Duration}.WithDefaults()
	seqs := make([][]uint32, len(t.lims))
	for i := range seqs {
		seqs[i] = []uint32{0}
	}
	n, batch := workers(t.system, false)
	spec := loadgen.Spec{Load: load, Arrivals: p.arrivals, Seed: p.Seed, Key: key, Limit: p.limit, Workers: n,
		MaxLag: loadgen.DefaultMaxLag, Tick: tick, Batch: batch}
	recs, lims := recorders(t, spec, []string{key}, seqs)
	// The first calls go through the recorders: the ideal sees them too.
	if err := primeRecorders(ctx, recs); err != nil {
		return Row{}, err
	}
	rep, err := measure(ctx, t, lims, spec, recs)
	if err != nil {
		return Row{}, err
	}
	r := rowFrom(t, rep, load.Duration)
	r.Case = fmt.Sprintf("%s, 1 key, %gx %s", pat, p.Multiplier, p.limit)
	r.Kind = KindAccuracy
	if r.Score, err = evaluate(recs, 1, p.limit); err != nil {
		return Row{}, err
	}
	return r, nil
}

// keysRun offers KeysRate requests per second over n keys of dist, each
// under the per-key rule, split evenly over the nodes.
func keysRun(ctx context.Context, p Plan, t target, dist keys.Dist, n, seq int) (Row, error) {
	if err := settle(ctx, p.Settle); err != nil {
		return Row{}, err
	}
	names := make([]string, n)
	for i := range names {
		names[i] = fmt.Sprintf("user:r%dk%d", seq, i)
	}
	load := pattern.Load{Pattern: pattern.Uniform, Nodes: len(t.lims), Limit: p.KeysRate, Multiplier: 1,
		Duration: p.KeysDuration}.WithDefaults()
	spec := keys.Spec{N: n, Dist: dist, S: p.ZipfExponent}
	seqs := make([][]uint32, len(t.lims))
	for i := range seqs {
		// The same draws for every system.
		seqs[i] = keys.Sequence(spec, min(expected(load, i), 1<<20), p.Seed*1000+uint64(i))
	}
	w, batch := workers(t.system, false)
	ls := loadgen.Spec{Load: load, Arrivals: p.arrivals, Seed: p.Seed, Key: names[0], Limit: p.keysLimit, Workers: w,
		MaxLag: loadgen.DefaultMaxLag, Tick: tick, Batch: batch}
	recs, lims := recorders(t, ls, names, seqs)
	rep, err := measure(ctx, t, lims, ls, recs)
	if err != nil {
		return Row{}, err
	}
	r := rowFrom(t, rep, load.Duration)
	desc := string(dist)
	if dist == keys.Zipf {
		desc = fmt.Sprintf("zipf %g", p.ZipfExponent)
	}
	r.Case = fmt.Sprintf("%s keys (%s), %s/s, %s each", count(float64(n)), desc, count(p.KeysRate), p.keysLimit)
	r.Kind = KindKeys
	if r.Score, err = evaluate(recs, n, p.keysLimit); err != nil {
		return Row{}, err
	}
	return r, nil
}

// rateRun offers rate requests per second for d, split evenly over the
// nodes, on one key of the fast rule (every request admitted).
func rateRun(ctx context.Context, p Plan, t target, rate float64, d time.Duration, tag string) (Row, loadgen.Report, error) {
	if err := settle(ctx, p.Settle); err != nil {
		return Row{}, loadgen.Report{}, err
	}
	key := fmt.Sprintf("fast:%s-%s", tag, t.system)
	if err := prime(ctx, t.lims, key); err != nil {
		return Row{}, loadgen.Report{}, err
	}
	load := pattern.Load{Pattern: pattern.Uniform, Nodes: len(t.lims), Limit: rate, Multiplier: 1, Duration: d}.WithDefaults()
	n, batch := workers(t.system, true)
	spec := loadgen.Spec{Load: load, Arrivals: p.arrivals, Seed: p.Seed, Key: key, Limit: p.fastLimit, Workers: n,
		MaxLag: loadgen.DefaultMaxLag, Tick: tick, Batch: batch}
	rep, err := measure(ctx, t, t.lims, spec, nil)
	if err != nil {
		return Row{}, rep, err
	}
	return rowFrom(t, rep, d), rep, nil
}

// Step is one rate of the saturation ladder.
type Step struct {
	Rate     float64
	Achieved float64
	P99us    float64
	Failed   int64
	Unsent   int64
}

// KeptUp reports whether the step was answered in full: no failed call,
// nothing left unsent, and at least 95 % of the rate answered per second.
func (s Step) KeptUp() bool {
	return s.Failed == 0 && s.Unsent == 0 && s.Achieved >= 0.95*s.Rate
}

// Passed reports whether the step kept up with P99 within target.
func (s Step) Passed(target time.Duration) bool {
	return s.KeptUp() && s.P99us <= float64(target.Microseconds())
}

// Saturated picks, among steps, the highest achieved rate that passed
// within target and the highest that kept up (-1 where none did).
func Saturated(steps []Step, target time.Duration) (withinTarget, keptUp int) {
	withinTarget, keptUp = -1, -1
	for i, s := range steps {
		if s.Passed(target) && (withinTarget < 0 || s.Achieved > steps[withinTarget].Achieved) {
			withinTarget = i
		}
		if s.KeptUp() && (keptUp < 0 || s.Achieved > steps[keptUp].Achieved) {
			keptUp = i
		}
	}
	return withinTarget, keptUp
}

// saturation steps the rate up from SatStart by SatStep until a step
// does not keep up (Step.KeptUp) or SatSteps were run, and reports two
// rows: the highest rate answered with P99 within the target, and the
// highest answered at all.
func saturation(ctx context.Context, p Plan, t target, tag string) ([]Row, error) {
	var steps []Step
	var rows []Row
	rate := p.SatStart
	for i := range p.SatSteps {
		r, rep, err := rateRun(ctx, p, t, rate, p.SatDuration, fmt.Sprintf("%s-%d", tag, i))
		if err != nil {
			return nil, err
		}
		steps = append(steps, Step{Rate: rate, Achieved: rep.AchievedRPS, P99us: rep.P99us, Failed: rep.Errors, Unsent: rep.Unsent})
		rows = append(rows, r)
		if !steps[i].KeptUp() {
			break
		}
		rate *= p.SatStep
	}
	within, kept := Saturated(steps, p.P99Target)
	pick := func(i int, what string) Row {
		var r Row
		if i >= 0 {
			r = rows[i]
		} else {
			r = Row{System: t.system, P50us: -1, P99us: -1, ServersCPU: -1, ClientsCPU: -1}
		}
		r.Case, r.Kind = what, KindSaturation
		last := steps[len(steps)-1]
		switch {
		case i < 0:
			r.Note = fmt.Sprintf("none of %d steps from %s/s", len(steps), count(steps[0].Rate))
		case !last.KeptUp():
			r.Note = fmt.Sprintf("at %s/s: %s/s answered, P99 %s, %d failed, %d unsent", count(last.Rate), count(last.Achieved),
				micros(last.P99us), last.Failed, last.Unsent)
		case i == len(steps)-1:
			r.Note = fmt.Sprintf("kept up at every step: the ladder ended after %d before the system did", len(steps))
		default:
			r.Note = fmt.Sprintf("at %s/s: P99 %s", count(steps[i+1].Rate), micros(steps[i+1].P99us))
		}
		return r
	}
	return []Row{
		pick(within, fmt.Sprintf("saturation: decisions/s with P99 <= %v, 1 key, all admitted", p.P99Target)),
		pick(kept, "saturation: decisions/s answered in full (P99 unbounded), 1 key, all admitted"),
	}, nil
}

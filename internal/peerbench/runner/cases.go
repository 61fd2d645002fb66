package runner

import (
	"context"
	"fmt"
	"time"

	"github.com/quotamesh/quotamesh"
	"github.com/quotamesh/quotamesh/internal/cputime"
	"github.com/quotamesh/quotamesh/internal/loadgen"
	"github.com/quotamesh/quotamesh/internal/peerbench/score"
	"github.com/quotamesh/quotamesh/internal/workload"
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
	if err := spec.Workload.Validate(); err != nil {
		return loadgen.Report{}, fmt.Errorf("peerbench: %s: %s load: %w", t.system, spec.Name, err)
	}
	ctx, cancel := context.WithTimeout(ctx, spec.Workload.Duration+spec.MaxLag+runSlack)
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
		return rep, fmt.Errorf("peerbench: %s: %s load stopped after %s: %w", t.system, spec.Name, rep.Elapsed, context.Cause(ctx))
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

// recorders wraps each of t's limiters in a recorder of the workload's
// keys, for the arrivals loadgen will offer it: node i's, drawn from the
// same workload (and seed) as loadgen draws them, with their keys in
// their order.
func recorders(t target, spec loadgen.Spec) ([]*score.Recorder, []quotamesh.Limiter, error) {
	ws := spec.Workload.WithDefaults()
	ws.Nodes = len(t.lims)
	gen, err := workload.NewGenerator(ws)
	if err != nil {
		return nil, nil, fmt.Errorf("peerbench: %s: %s load: %w", t.system, spec.Name, err)
	}
	arrivals := make([][]time.Duration, len(t.lims))
	seqs := make([][]uint32, len(t.lims))
	for a, ok := gen.Next(); ok; a, ok = gen.Next() {
		arrivals[a.Node] = append(arrivals[a.Node], a.At)
		seqs[a.Node] = append(seqs[a.Node], uint32(a.Key))
	}
	names := make([]string, ws.Keys)
	for i := range names {
		names[i] = ws.KeyName(i)
	}
	recs := make([]*score.Recorder, len(t.lims))
	lims := make([]quotamesh.Limiter, len(t.lims))
	base := time.Now()
	for i, l := range t.lims {
		if len(seqs[i]) == 0 {
			seqs[i] = []uint32{0} // no arrivals: only a prime call names a key
		}
		recs[i] = score.NewRecorder(l, names, seqs[i], arrivals[i], base)
		lims[i] = recs[i]
	}
	return recs, lims, nil
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
func accuracyRun(ctx context.Context, p Plan, t target, pat workload.Pattern, seq int) (Row, error) {
	if err := settle(ctx, p.Settle); err != nil {
		return Row{}, err
	}
	key := fmt.Sprintf("one:%s-%s-%d", pat.Name, t.system, seq)
	ws := workload.Spec{Nodes: len(t.lims), Rule: key, Limit: p.limit, Multiplier: p.Multiplier,
		Arrivals: p.arrivals, Duration: p.Duration, Seed: p.Seed}
	pat.Apply(&ws, 0)
	n, batch := workers(t.system, false)
	spec := loadgen.Spec{Workload: ws.WithDefaults(), Name: pat.Name, Workers: n,
		MaxLag: loadgen.DefaultMaxLag, Tick: tick, Batch: batch}
	recs, lims, err := recorders(t, spec)
	if err != nil {
		return Row{}, err
	}
	// The first calls go through the recorders: the ideal sees them too.
	if err := primeRecorders(ctx, recs); err != nil {
		return Row{}, err
	}
	rep, err := measure(ctx, t, lims, spec, recs)
	if err != nil {
		return Row{}, err
	}
	r := rowFrom(t, rep, p.Duration)
	r.Case = fmt.Sprintf("%s, 1 key, %gx %s", pat.Name, p.Multiplier, p.limit)
	r.Kind = KindAccuracy
	if r.Score, err = evaluate(recs, 1, p.limit); err != nil {
		return Row{}, err
	}
	return r, nil
}

// keysRun offers KeysRate requests per second over n keys of dist, each
// under the per-key rule, split evenly over the nodes.
func keysRun(ctx context.Context, p Plan, t target, dist string, n, seq int) (Row, error) {
	if err := settle(ctx, p.Settle); err != nil {
		return Row{}, err
	}
	// Keys user:r<seq>k0 to user:r<seq>k<n-1>, drawn the same for every
	// system (the same seed).
	ws := workload.Spec{Nodes: len(t.lims), Rule: fmt.Sprintf("user:r%dk*", seq), Keys: n, Limit: p.keysLimit,
		Zipf: dist == distZipf, ZipfExponent: p.ZipfExponent, Rate: p.KeysRate, Arrivals: p.arrivals,
		Duration: p.KeysDuration, Seed: p.Seed}
	w, batch := workers(t.system, false)
	ls := loadgen.Spec{Workload: ws.WithDefaults(), Name: "uniform", Workers: w,
		MaxLag: loadgen.DefaultMaxLag, Tick: tick, Batch: batch}
	recs, lims, err := recorders(t, ls)
	if err != nil {
		return Row{}, err
	}
	rep, err := measure(ctx, t, lims, ls, recs)
	if err != nil {
		return Row{}, err
	}
	r := rowFrom(t, rep, p.KeysDuration)
	desc := dist
	if dist == distZipf {
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
	ws := workload.Spec{Nodes: len(t.lims), Rule: key, Limit: p.fastLimit, Rate: rate, Arrivals: p.arrivals,
		Duration: d, Seed: p.Seed}
	n, batch := workers(t.system, true)
	spec := loadgen.Spec{Workload: ws.WithDefaults(), Name: "uniform", Workers: n,
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

// Package runner is the peer benchmark: it starts each system (package
// peer), offers every load of the plan to it through internal/loadgen
// (open loop, latencies from each request's intended time), scores what
// it decided (package score), reads the CPU time of every process involved
// (internal/cputime), and prints one table.
//
// What it promises: Run stops every process and client it started, on
// success, on error and when ctx ends; a process that dies during a run
// ends the run with an error naming it, because the figures would mean
// nothing.
package runner

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/quotamesh/quotamesh"
	"github.com/quotamesh/quotamesh/internal/peerbench/peer"
	"github.com/quotamesh/quotamesh/internal/peerbench/score"
	"github.com/quotamesh/quotamesh/limits"
)

// Rule patterns: one key per accuracy run, per-user keys, and keys whose
// limit is never reached (latency and saturation).
const (
	onePattern  = "one:*"
	userPattern = "user:*"
	fastPattern = "fast:*"
)

// target is one system in one mode, ready for load.
type target struct {
	system string
	lims   []quotamesh.Limiter
	names  []string
	pids   func() []int
	died   func() error
}

// rules are the limits every system runs under.
func (p Plan) rules() []limits.Rule {
	return []limits.Rule{{Pattern: onePattern, Rate: p.limit}, {Pattern: userPattern, Rate: p.keysLimit},
		{Pattern: fastPattern, Rate: p.fastLimit}}
}

// Run measures every system of p, printing progress to stderr and the
// table to stdout.
func Run(ctx context.Context, p Plan, stdout, stderr io.Writer) error {
	env, rows, err := Measure(ctx, p, stderr)
	if len(rows) > 0 {
		if werr := WriteTable(stdout, env, rows, p.Markdown); werr != nil {
			return errors.Join(err, werr)
		}
	}
	return err
}

// Measure measures every system of p, printing a line per row to stderr
// as it is measured, and returns the rows and where and when they were
// measured. On error it returns what was measured before, and the
// error.
func Measure(ctx context.Context, p Plan, stderr io.Writer) (*Env, []Row, error) {
	env := startEnv(p)
	var rows []Row
	progress := func(r Row) {
		rows = append(rows, r)
		fmt.Fprintln(stderr, r.progress())
	}
	// A system that fails (a process died, a start timed out) ends its
	// own runs, not the other system's: the rows measured so far are kept
	// and the error is returned with them.
	var errs []error
	if p.has(QuotaMeshLeases, QuotaMeshStrict) {
		if err := runQuotaMesh(ctx, p, env, progress, stderr); err != nil {
			fmt.Fprintf(stderr, "peerbench: quotamesh: %v\n", err)
			errs = append(errs, err)
		}
	}
	if p.has(Gubernator) && ctx.Err() == nil {
		if err := runGubernator(ctx, p, progress, stderr); err != nil {
			fmt.Fprintf(stderr, "peerbench: gubernator: %v\n", err)
			errs = append(errs, err)
		}
	}
	env.finish()
	return env, rows, errors.Join(errs...)
}

func runQuotaMesh(ctx context.Context, p Plan, env *Env, progress func(Row), stderr io.Writer) (err error) {
	bin := p.Binary
	if bin == "" {
		dir, err := os.MkdirTemp("", "peerbench-bin-")
		if err != nil {
			return fmt.Errorf("peerbench: %w", err)
		}
		defer os.RemoveAll(dir)
		fmt.Fprintf(stderr, "building quotamesh in %s\n", p.Repo)
		if bin, err = peer.BuildQuotaMesh(ctx, p.Repo, dir); err != nil {
			return err
		}
	}
	env.Commit = commitOf(p.Repo)
	fmt.Fprintln(stderr, "starting 3 quotamesh serve processes on 127.0.0.40-42")
	q, err := peer.StartQuotaMesh(ctx, peer.QuotaMeshConfig{Binary: bin, Rules: p.rules()})
	if err != nil {
		return err
	}
	defer func() {
		if serr := q.Stop(); serr != nil {
			fmt.Fprintf(stderr, "peerbench: stop quotamesh: %v\n", serr)
		}
	}()
	for _, sys := range []string{QuotaMeshLeases, QuotaMeshStrict} {
		if !p.has(sys) {
			continue
		}
		lims, names, err := q.Dial(ctx, sys == QuotaMeshStrict, 2*Workers)
		if err != nil {
			return err
		}
		t := target{system: sys, lims: lims, names: names, pids: q.Pids, died: q.Died}
		err = runCases(ctx, p, t, progress)
		for _, l := range lims {
			_ = l.Close()
		}
		if err != nil {
			return err
		}
	}
	return nil
}

func runGubernator(ctx context.Context, p Plan, progress func(Row), stderr io.Writer) error {
	exe := p.Exe
	if exe == "" {
		var err error
		if exe, err = os.Executable(); err != nil {
			return fmt.Errorf("peerbench: this program's path, to run the Gubernator daemons: %w", err)
		}
	}
	table, err := limits.NewTable(p.rules()...)
	if err != nil {
		return fmt.Errorf("peerbench: %w", err)
	}
	fmt.Fprintln(stderr, "starting 3 Gubernator daemon processes on 127.0.0.50-52")
	g, err := peer.StartGubernator(ctx, peer.GubernatorConfig{Exe: exe, SyncWait: p.GuberSyncWait, CacheSize: p.GuberCacheSize})
	if err != nil {
		return err
	}
	defer func() {
		if serr := g.Stop(); serr != nil {
			fmt.Fprintf(stderr, "peerbench: stop gubernator: %v\n", serr)
		}
	}()
	gl, names, err := g.Dial(peer.GuberClientConfig{Rules: table, InFlight: p.GuberInFlight, MaxBatch: p.GuberBatch})
	if err != nil {
		return err
	}
	defer func() {
		for _, l := range gl {
			_ = l.Close()
		}
	}()
	lims := make([]quotamesh.Limiter, len(gl))
	for i, l := range gl {
		lims[i] = l
	}
	return runCases(ctx, p, target{system: Gubernator, lims: lims, names: names, pids: g.Pids, died: g.Died}, progress)
}

// runCases runs every load of p against t, in the table's order.
func runCases(ctx context.Context, p Plan, t target, progress func(Row)) error {
	seq := 0
	next := func() int { seq++; return seq }
	for _, pat := range p.patterns {
		r, err := accuracyRun(ctx, p, t, pat, next())
		if err != nil {
			return err
		}
		progress(r)
	}
	for _, d := range p.dists {
		for _, n := range p.Keys {
			r, err := keysRun(ctx, p, t, d, n, next())
			if err != nil {
				return err
			}
			progress(r)
		}
	}
	for _, rate := range p.Rates {
		r, _, err := rateRun(ctx, p, t, rate, p.RateDuration, fmt.Sprintf("lat%d", next()))
		if err != nil {
			return err
		}
		r.Case, r.Kind = fmt.Sprintf("latency at %s/s, 1 key, all admitted", count(rate)), KindLatency
		progress(r)
	}
	if p.SatSteps > 0 {
		rs, err := saturation(ctx, p, t, fmt.Sprintf("sat%d", next()))
		if err != nil {
			return err
		}
		for _, r := range rs {
			progress(r)
		}
	}
	return nil
}

// settle waits between runs, so one run's tail does not fall into the
// next.
func settle(ctx context.Context, d time.Duration) error {
	select {
	case <-time.After(d):
		return nil
	case <-ctx.Done():
		return context.Cause(ctx)
	}
}

// primeRecorders makes one call through each recorder, recorded outside
// the load; a call the cluster could not answer in time is tried again
// for up to 10 s.
func primeRecorders(ctx context.Context, recs []*score.Recorder) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	for i, r := range recs {
		for {
			err := r.Prime(ctx)
			if err == nil {
				break
			}
			if !errors.Is(err, quotamesh.ErrUnavailable) || ctx.Err() != nil {
				return fmt.Errorf("peerbench: first call through node %d: %w", i, err)
			}
		}
	}
	return nil
}

// prime makes one call through each limiter, so that each holds its
// connection (and, with leases, a lease) when the load starts; a call the
// cluster could not answer in time is tried again for up to 10 s.
func prime(ctx context.Context, lims []quotamesh.Limiter, key string) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	for i, l := range lims {
		for {
			_, err := l.Allow(ctx, key)
			if err == nil {
				break
			}
			if !errors.Is(err, quotamesh.ErrUnavailable) || ctx.Err() != nil {
				return fmt.Errorf("peerbench: first call through node %d: %w", i, err)
			}
		}
	}
	return nil
}

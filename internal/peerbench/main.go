// Command peerbench runs QuotaMesh and Gubernator side by side on this
// machine, under the same open-loop load generator and the same loads, and
// prints one table: error against a perfect limiter, the largest
// wall-clock-aligned window, requests denied while their key was within
// its limit, decisions per second at saturation, latency at fixed rates,
// and CPU per 100k decisions of every process involved.
//
//	cd internal/peerbench && go run . --duration 20s
//	cd internal/peerbench && go run . --quick
//
// It is a module of its own, so that Gubernator's dependencies never enter
// the product's go.mod. Run again as `peerbench guberd ...` it is one
// Gubernator daemon (the benchmark starts three).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"

	"github.com/quotamesh/quotamesh/internal/peerbench/peer"
	"github.com/quotamesh/quotamesh/internal/peerbench/runner"
)

func main() {
	ctx, stop := signalContext()
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil && !errors.Is(err, flag.ErrHelp) {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

// signalContext ends on SIGINT or SIGTERM.
func signalContext() (context.Context, context.CancelFunc) {
	return signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
}

// run is the program: a Gubernator daemon when args start with
// peer.DaemonCommand, the benchmark otherwise.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 && args[0] == peer.DaemonCommand {
		return peer.RunDaemon(ctx, args[1:], stderr)
	}
	o, err := parseFlags(args, stderr)
	if err != nil {
		return err
	}
	p, err := o.Validate()
	if err != nil {
		return err
	}
	return runner.Run(ctx, p, stdout, stderr)
}

// parseFlags reads the benchmark's flags into options. With --quick the
// defaults are the quick form's, and other flags still apply on top.
func parseFlags(args []string, stderr io.Writer) (runner.Options, error) {
	o := runner.DefaultOptions()
	if quickAsked(args) {
		o = o.Quick()
	}
	fs := flag.NewFlagSet("peerbench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Bool("quick", false, "the short form CI runs (under a minute): one pattern, one many-key load, one rate, two saturation steps, 1-2 s each")
	fs.Var(strList{&o.Systems}, "systems", "systems to measure, comma-separated: "+strings.Join(runner.Systems, ", "))

	fs.Var(strList{&o.Patterns}, "patterns", "one-key demand patterns (uniform, skew90, burst, rotate, ramp); empty: none")
	fs.StringVar(&o.Arrivals, "arrivals", o.Arrivals, "arrival process at each node: uniform (evenly spaced) or poisson")
	fs.StringVar(&o.Limit, "limit", o.Limit, "the one key's limit in the pattern runs (QuotaMesh rule one:*; Gubernator token bucket)")
	fs.Float64Var(&o.Multiplier, "multiplier", o.Multiplier, "offered load in the pattern runs, as a multiple of --limit")
	fs.DurationVar(&o.Duration, "duration", o.Duration, "length of each pattern run (at most 20s)")

	fs.Var(intList{&o.Keys}, "keys", "key counts of the many-key runs, comma-separated; empty: none")
	fs.Var(strList{&o.KeyDists}, "key-dists", "key popularity of the many-key runs: uniform, zipf")
	fs.Float64Var(&o.ZipfExponent, "zipf", o.ZipfExponent, "Zipf exponent: key i drawn in proportion to 1/(i+1)^s")
	fs.Float64Var(&o.KeysRate, "keys-rate", o.KeysRate, "requests per second of the many-key runs, all nodes together")
	fs.StringVar(&o.KeysLimit, "keys-limit", o.KeysLimit, "every key's limit in the many-key runs (QuotaMesh rule user:*)")
	fs.DurationVar(&o.KeysDuration, "keys-duration", o.KeysDuration, "length of each many-key run (at most 20s)")

	fs.Var(floatList{&o.Rates}, "rates", "fixed rates (per second, all nodes) for the latency runs; empty: none")
	fs.DurationVar(&o.RateDuration, "rate-duration", o.RateDuration, "length of each latency run")
	fs.StringVar(&o.FastLimit, "fast-limit", o.FastLimit, "limit of the latency and saturation runs' key (high: every request admitted)")

	fs.Float64Var(&o.SatStart, "sat-start", o.SatStart, "first rate of the saturation ladder")
	fs.Float64Var(&o.SatStep, "sat-step", o.SatStep, "factor between two rates of the ladder")
	fs.IntVar(&o.SatSteps, "sat-steps", o.SatSteps, "most rates the ladder tries (0: no saturation run)")
	fs.DurationVar(&o.SatDuration, "sat-duration", o.SatDuration, "length of each step of the ladder")
	fs.DurationVar(&o.P99Target, "p99-target", o.P99Target, "a step passes with P99 from intended time within this, no failure and 95 % answered")

	fs.DurationVar(&o.Settle, "settle", o.Settle, "pause between two runs")
	fs.Uint64Var(&o.Seed, "seed", o.Seed, "seed of the arrivals and key draws (the same for every system)")
	fs.StringVar(&o.Binary, "quotamesh-binary", o.Binary, "a built quotamesh binary (default: go build ./cmd/quotamesh in --repo)")
	fs.StringVar(&o.Repo, "repo", o.Repo, "the QuotaMesh repository to build from")
	fs.BoolVar(&o.Markdown, "markdown", o.Markdown, "print the table as Markdown")

	fs.DurationVar(&o.GuberSyncWait, "guber-sync-wait", o.GuberSyncWait, "Gubernator GLOBAL sync interval (0: its default, 100ms)")
	fs.IntVar(&o.GuberCacheSize, "guber-cache-size", o.GuberCacheSize, "Gubernator cache size per daemon (0: its default, 50000)")
	fs.IntVar(&o.GuberInFlight, "guber-in-flight", o.GuberInFlight, "GetRateLimits calls in flight per daemon (0: 8)")
	fs.IntVar(&o.GuberBatch, "guber-batch", o.GuberBatch, "most checks per GetRateLimits (0: Gubernator's maximum, 1000; 1: no batching)")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("%w: unexpected arguments %q", runner.ErrInvalid, fs.Args())
	}
	return o, nil
}

// quickAsked reports whether args hold --quick (or -quick, =true).
func quickAsked(args []string) bool {
	for _, a := range args {
		if a == "--" {
			return false
		}
		switch strings.TrimLeft(a, "-") {
		case "quick", "quick=true", "quick=1":
			return strings.HasPrefix(a, "-")
		}
	}
	return false
}

// strList, intList and floatList are comma-separated flag values; an
// empty value is an empty list.
type strList struct{ p *[]string }

func (l strList) String() string {
	if l.p == nil {
		return ""
	}
	return strings.Join(*l.p, ",")
}

func (l strList) Set(s string) error {
	*l.p = nil
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			*l.p = append(*l.p, f)
		}
	}
	return nil
}

type intList struct{ p *[]int }

func (l intList) String() string {
	if l.p == nil {
		return ""
	}
	var out []string
	for _, v := range *l.p {
		out = append(out, strconv.Itoa(v))
	}
	return strings.Join(out, ",")
}

func (l intList) Set(s string) error {
	*l.p = nil
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		v, err := strconv.Atoi(strings.ReplaceAll(f, "_", ""))
		if err != nil {
			return fmt.Errorf("%q is not a whole number", f)
		}
		*l.p = append(*l.p, v)
	}
	return nil
}

type floatList struct{ p *[]float64 }

func (l floatList) String() string {
	if l.p == nil {
		return ""
	}
	var out []string
	for _, v := range *l.p {
		out = append(out, strconv.FormatFloat(v, 'g', -1, 64))
	}
	return strings.Join(out, ",")
}

func (l floatList) Set(s string) error {
	*l.p = nil
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		v, err := strconv.ParseFloat(strings.ReplaceAll(f, "_", ""), 64)
		if err != nil {
			return fmt.Errorf("%q is not a number", f)
		}
		*l.p = append(*l.p, v)
	}
	return nil
}

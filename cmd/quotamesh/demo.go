package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"
	"github.com/spf13/cobra"

	"github.com/quotamesh/quotamesh/internal/accuracy"
	"github.com/quotamesh/quotamesh/internal/pattern"
	"github.com/quotamesh/quotamesh/limits"
	"github.com/quotamesh/quotamesh/node"
)

// Bounds of the demo: it drives the load from this process, one goroutine
// per node, and keeps a counter per 100 ms of the run.
const (
	demoMinNodes      = 3
	demoMaxNodes      = 5
	demoMaxOffered    = 200_000 // requests/s in all
	demoMaxDuration   = time.Hour
	demoReadyTimeout  = 30 * time.Second
	demoSlot          = limits.Slot
	demoDefaultKey    = "demo.orders"
	demoDefaultLimit  = "1000/s"
	demoDefaultWarmup = 2 * time.Second
)

type demoOptions struct {
	duration, warmup time.Duration
	limit, key, pat  string
	nodes            int
	multiplier       float64
	seed             uint64
}

func newDemoCmd() *cobra.Command {
	var o demoOptions
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Run a local cluster under skewed load and watch it hold a global limit",
		Long: `demo starts a cluster of in-process nodes on 127.0.0.1 (a development CA and
Raft data in a temporary directory), waits until it is ready, sets a limit
on one key through Raft, and offers each node its part of an open-loop load
of --multiplier times the limit (skew90: 90% on n1, the rest split). Every
second it prints what each node was offered and admitted, what the cluster
admitted against the limit, and the error so far:

  |admitted - limit x time| / (limit x time)

counted from the end of the warm-up, at whole seconds of the load (where a
perfect sliding window admits exactly the limit). The first window admits
its whole limit as soon as load arrives, which the warm-up leaves out.

The run stops after --duration, or on Ctrl-C; either way the nodes are
closed and the temporary directory removed. Node logs (warnings and errors
only) go to stderr. While it runs, 'quotamesh status' and 'quotamesh limit'
work against it with the --addr and --certs it prints.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			rate, pat, err := o.validate()
			if err != nil {
				return err
			}
			return runDemo(cmd.Context(), o, rate, pat, cmd.OutOrStdout(), cmd.ErrOrStderr())
		},
	}
	f := cmd.Flags()
	f.DurationVar(&o.duration, "duration", 20*time.Second, "how long the load runs (warm-up included)")
	f.DurationVar(&o.warmup, "warmup", demoDefaultWarmup, "time at the start of the load left out of the error")
	f.StringVar(&o.limit, "limit", demoDefaultLimit, "the key's limit, COUNT/WINDOW")
	f.StringVar(&o.key, "key", demoDefaultKey, "the key the load asks for")
	f.IntVar(&o.nodes, "nodes", 3, fmt.Sprintf("number of nodes (%d to %d)", demoMinNodes, demoMaxNodes))
	f.StringVar(&o.pat, "pattern", string(pattern.Skew90), "demand pattern: "+patternNames())
	f.Float64Var(&o.multiplier, "multiplier", 2, "offered load over the limit, on average")
	f.Uint64Var(&o.seed, "seed", 1, "random seed of the arrivals' phases")
	return cmd
}

func patternNames() string {
	s := make([]string, len(pattern.Names))
	for i, n := range pattern.Names {
		s[i] = string(n)
	}
	return strings.Join(s, ", ")
}

// validate checks the flags and returns the parsed limit and pattern.
func (o demoOptions) validate() (limits.Rate, pattern.Name, error) {
	rate, err := limits.ParseRate(o.limit)
	if err != nil {
		return rate, "", usagef("--limit: %v", err)
	}
	pat, err := pattern.Parse(o.pat)
	if err != nil {
		return rate, "", usagef("--pattern: %v", err)
	}
	if err := limits.ValidateKey(o.key); err != nil {
		return rate, "", usagef("--key: %v", err)
	}
	switch {
	case o.nodes < demoMinNodes || o.nodes > demoMaxNodes:
		return rate, "", usagef("--nodes %d: use %d to %d", o.nodes, demoMinNodes, demoMaxNodes)
	case o.duration <= 0 || o.duration > demoMaxDuration:
		return rate, "", usagef("--duration %v: use a positive duration up to %v", o.duration, demoMaxDuration)
	case o.warmup < 0 || o.warmup >= o.duration:
		return rate, "", usagef("--warmup %v: use 0 or more, less than --duration %v", o.warmup, o.duration)
	case !(o.multiplier > 0):
		return rate, "", usagef("--multiplier %v: use a positive number", o.multiplier)
	case rate.PerSecond()*o.multiplier > demoMaxOffered:
		return rate, "", usagef("--limit %s at --multiplier %v offers %.0f requests/s: the demo drives the load from this process, keep it at most %d/s",
			rate, o.multiplier, rate.PerSecond()*o.multiplier, demoMaxOffered)
	}
	return rate, pat, nil
}

// runDemo runs the whole demo; it always closes the nodes and removes the
// temporary directory before it returns.
func runDemo(ctx context.Context, o demoOptions, rate limits.Rate, pat pattern.Name, out, errw io.Writer) (err error) {
	dir, err := os.MkdirTemp("", "quotamesh-demo-")
	if err != nil {
		return fmt.Errorf("creating a temporary directory: %w", err)
	}
	defer func() {
		if rerr := os.RemoveAll(dir); rerr != nil {
			err = errors.Join(err, fmt.Errorf("removing %s: %w", dir, rerr))
			return
		}
		fmt.Fprintf(out, "removed %s\n", dir)
	}()
	// Peers going away while the cluster stops are expected: the log goes
	// quiet before the nodes close.
	// So are the warnings of Raft's first election: until the cluster is
	// ready only errors are shown.
	logw := &quietWriter{w: errw}
	gate := &levelGate{w: zerolog.ConsoleWriter{Out: logw, TimeFormat: "15:04:05.000"}}
	gate.min.Store(int32(zerolog.ErrorLevel))
	log := zerolog.New(gate).Level(zerolog.WarnLevel).With().Timestamp().Logger()

	fmt.Fprintf(out, "starting %d nodes on 127.0.0.1 (data and certificates in %s)\n", o.nodes, dir)
	lc, err := startInprocCluster(ctx, dir, o.nodes, log)
	if err != nil {
		return interrupted(ctx, out, err)
	}
	defer func() {
		logw.quiet.Store(true)
		if cerr := lc.close(); cerr != nil {
			err = errors.Join(err, cerr)
			return
		}
		fmt.Fprintf(out, "stopped %d nodes\n", o.nodes)
	}()
	for _, n := range lc.nodes {
		fmt.Fprintf(out, "  %s  quic %s  admin http://%s\n", n.ID(), n.Addr(), n.AdminAddr())
	}
	rctx, cancel := context.WithTimeout(ctx, demoReadyTimeout)
	defer cancel()
	start := time.Now()
	if err := lc.waitReady(rctx); err != nil {
		return interrupted(ctx, out, err)
	}
	rule := limits.Rule{Pattern: o.key, Rate: rate}
	idx, err := lc.setLimit(rctx, rule)
	if err != nil {
		return interrupted(ctx, out, err)
	}
	gate.min.Store(int32(zerolog.WarnLevel))
	leader := lc.nodes[0].Status(0).Raft.Leader
	fmt.Fprintf(out, "cluster ready in %v (Raft leader %s); limit %s set through Raft at index %d and applied on every node\n",
		time.Since(start).Round(time.Millisecond), leader, rule, idx)
	fmt.Fprintf(out, "try, in another terminal: quotamesh status --addr %s --certs %s\n", lc.nodes[0].Addr(), lc.certDir)

	load := pattern.Load{Pattern: pat, Nodes: o.nodes, Limit: rate.PerSecond(), Multiplier: o.multiplier, Duration: o.duration}.WithDefaults()
	if err := load.Validate(); err != nil {
		return usageError{err}
	}
	hot := ""
	if h := load.Hot(0); h >= 0 {
		hot = fmt.Sprintf(", %.0f%% on %s at first", 100*load.HotFraction, lc.nodes[h].ID())
	}
	fmt.Fprintf(out, "offering %.0f requests/s (%.1fx the limit, %s%s) for %v; error counted after a %v warm-up\n\n",
		load.Multiplier*load.Limit, load.Multiplier, pat, hot, o.duration, o.warmup)

	d := newDemoRun(lc.nodes, o, rate)
	d.run(ctx, load, out)
	return nil
}

// levelGate drops log events below min, which can change while the nodes
// run (a logger's own level cannot).
type levelGate struct {
	w   io.Writer
	min atomic.Int32
}

func (g *levelGate) Write(p []byte) (int, error) { return g.w.Write(p) }

// WriteLevel implements zerolog.LevelWriter.
func (g *levelGate) WriteLevel(l zerolog.Level, p []byte) (int, error) {
	if int32(l) < g.min.Load() {
		return len(p), nil
	}
	return g.w.Write(p)
}

// quietWriter passes writes through until quiet is set, then drops them.
type quietWriter struct {
	w     io.Writer
	mu    sync.Mutex // the nodes log from many goroutines
	quiet atomic.Bool
}

func (q *quietWriter) Write(p []byte) (int, error) {
	if q.quiet.Load() {
		return len(p), nil
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.w.Write(p)
}

// interrupted turns a setup error into a clean stop when ctx was cancelled
// (Ctrl-C), and returns it otherwise.
func interrupted(ctx context.Context, out io.Writer, err error) error {
	if ctx.Err() != nil {
		fmt.Fprintln(out, "interrupted")
		return nil
	}
	return err
}

// demoRun is one run of the load: counters the drivers add to and the
// table reads.
type demoRun struct {
	nodes    []*node.Node
	o        demoOptions
	rate     limits.Rate
	start    time.Time
	offered  []atomic.Int64 // per node
	admitted []atomic.Int64 // per node
	errs     atomic.Int64
	firstErr atomic.Value   // string
	slots    []atomic.Int64 // cluster admissions per 100 ms of the run
}

func newDemoRun(nodes []*node.Node, o demoOptions, rate limits.Rate) *demoRun {
	return &demoRun{
		nodes: nodes, o: o, rate: rate,
		offered:  make([]atomic.Int64, len(nodes)),
		admitted: make([]atomic.Int64, len(nodes)),
		slots:    make([]atomic.Int64, int(o.duration/demoSlot)+1),
	}
}

// run drives the load until its duration or ctx ends, printing a row every
// second and a summary at the end.
func (d *demoRun) run(ctx context.Context, load pattern.Load, out io.Writer) {
	d.header(out)
	lctx, stop := context.WithCancel(ctx)
	defer stop()
	d.start = time.Now()
	var wg sync.WaitGroup
	for i, n := range d.nodes {
		arr := pattern.NewArrivals(load, i, pattern.Even, d.o.seed)
		wg.Add(1)
		go func() {
			defer wg.Done()
			d.drive(lctx, i, n, arr)
		}()
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()

	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	prev := make([][2]int64, len(d.nodes))
	lastAt, secs := d.start, 0
loop:
	for {
		select {
		case <-done:
			break loop
		case now := <-tick.C:
			// A starved process misses ticks: label rows by the clock.
			s := int(now.Sub(d.start) / time.Second)
			if s <= secs {
				continue
			}
			secs = s
			d.row(out, time.Duration(secs)*time.Second, now.Sub(lastAt), prev)
			lastAt = now
		}
	}
	end := time.Since(d.start)
	interrupted := ctx.Err() != nil
	if !interrupted {
		end = d.o.duration
		if end > time.Duration(secs)*time.Second {
			d.row(out, end, time.Since(lastAt), prev)
		}
	}
	d.summary(out, end, interrupted)
}

// drive offers node i its arrivals, open loop: a request is made at its
// arrival time whatever happened to the ones before it.
func (d *demoRun) drive(ctx context.Context, i int, n *node.Node, arr *pattern.Arrivals) {
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		at, ok := arr.Next()
		if !ok {
			return
		}
		if wait := at - time.Since(d.start); wait > 0 {
			timer.Reset(wait)
			select {
			case <-ctx.Done():
				return
			case <-timer.C:
			}
		} else if ctx.Err() != nil {
			return
		}
		d.offered[i].Add(1)
		dec, err := n.Allow(ctx, d.o.key)
		if err != nil {
			if d.errs.Add(1) == 1 {
				d.firstErr.Store(fmt.Sprintf("%s: %v", n.ID(), err))
			}
			continue
		}
		if dec.Allowed {
			d.admitted[i].Add(1)
			s := min(int(time.Since(d.start)/demoSlot), len(d.slots)-1)
			d.slots[s].Add(1)
		}
	}
}

// admittedBetween sums the cluster's admissions in [from, to).
func (d *demoRun) admittedBetween(from, to time.Duration) int64 {
	var sum int64
	for s := int(from / demoSlot); s < int(to/demoSlot) && s < len(d.slots); s++ {
		sum += d.slots[s].Load()
	}
	return sum
}

// target is what a perfect limiter admits in [warm-up, t) under a load
// above the limit.
func (d *demoRun) target(t time.Duration) int64 {
	return int64(d.rate.PerSecond()*(t-d.o.warmup).Seconds() + 0.5)
}

const demoCol = "%10s"

func (d *demoRun) header(out io.Writer) {
	var b strings.Builder
	fmt.Fprintf(&b, "%6s", "time")
	for _, n := range d.nodes {
		fmt.Fprintf(&b, demoCol+demoCol, n.ID()+" off/s", n.ID()+" adm/s")
	}
	fmt.Fprintf(&b, demoCol+demoCol+demoCol+demoCol+"%9s", "all adm/s", "limit/s", "admitted", "target", "error")
	fmt.Fprintln(out, b.String())
}

// row prints the second ending at t: each node's offered and admitted rate
// over the last interval, the cluster's, and the error so far.
func (d *demoRun) row(out io.Writer, t, interval time.Duration, prev [][2]int64) {
	var b strings.Builder
	fmt.Fprintf(&b, "%6s", t.Round(100*time.Millisecond))
	per := func(v int64) string { return fmt.Sprintf("%.0f", float64(v)/interval.Seconds()) }
	var all int64
	for i := range d.nodes {
		off, adm := d.offered[i].Load(), d.admitted[i].Load()
		fmt.Fprintf(&b, demoCol+demoCol, per(off-prev[i][0]), per(adm-prev[i][1]))
		all += adm - prev[i][1]
		prev[i] = [2]int64{off, adm}
	}
	fmt.Fprintf(&b, demoCol+demoCol, per(all), fmt.Sprintf("%.0f", d.rate.PerSecond()))
	if t <= d.o.warmup {
		fmt.Fprintf(&b, demoCol+demoCol+"%9s", "-", "-", "warm-up")
	} else {
		adm, want := d.admittedBetween(d.o.warmup, t), d.target(t)
		fmt.Fprintf(&b, "%10d%10d%8.2f%%", adm, want, 100*accuracy.Error(adm, want))
	}
	fmt.Fprintln(out, b.String())
}

// summary prints the totals and the error over [warm-up, end).
func (d *demoRun) summary(out io.Writer, end time.Duration, interrupted bool) {
	var off, adm int64
	for i := range d.nodes {
		off += d.offered[i].Load()
		adm += d.admitted[i].Load()
	}
	fmt.Fprintln(out)
	if interrupted {
		fmt.Fprintf(out, "interrupted after %v\n", end.Round(100*time.Millisecond))
		end = end.Truncate(time.Second) // measure to the last whole second
	}
	if n := d.errs.Load(); n > 0 {
		fmt.Fprintf(out, "%d decisions failed (first: %v)\n", n, d.firstErr.Load())
	}
	fmt.Fprintf(out, "offered %d, admitted %d in all; largest admitted count in any %v: %.3fx the limit\n",
		off, adm, d.rate.Window, d.maxWindowRatio(end))
	if end <= d.o.warmup {
		fmt.Fprintf(out, "summary: stopped within the %v warm-up: no error figure\n", d.o.warmup)
		return
	}
	got, want := d.admittedBetween(d.o.warmup, end), d.target(end)
	fmt.Fprintf(out, "summary: %d nodes, %s load at %.1fx of %s: admitted %d from %v to %v, limit x time %d, error %.2f %%\n",
		len(d.nodes), d.o.pat, d.o.multiplier, d.rate, got, d.o.warmup, end.Round(100*time.Millisecond), want, 100*accuracy.Error(got, want))
}

// maxWindowRatio is the largest count admitted in any window of the
// limit's length (to 100 ms resolution) up to end, over the limit's count.
func (d *demoRun) maxWindowRatio(end time.Duration) float64 {
	w := int(d.rate.Window / demoSlot)
	n := min(int(end/demoSlot), len(d.slots))
	var best, sum int64
	for s := range n {
		sum += d.slots[s].Load()
		if s >= w {
			sum -= d.slots[s-w].Load()
		}
		best = max(best, sum)
	}
	return float64(best) / float64(d.rate.Count)
}

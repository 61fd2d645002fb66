// Package demo is `quotamesh demo`: a local cluster of in-process nodes
// (localcluster.InProcess) under an open-loop load that this process
// offers each node through its embedded Allow, with a table every second of
// what each node was offered and admitted, what the cluster admitted
// against the limit, and the error so far.
//
// The nodes run in this process, not as child processes: the demo shows
// the embedded mode (a decision is a lock-free call into the node, at up
// to MaxOffered requests per second from one process), starts in about a
// second, and needs no binary beside itself, so `go run ./cmd/quotamesh
// demo` works as is. Run returns only after every node was closed and the
// temporary directory removed, on Ctrl-C too.
package demo

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

	"github.com/quotamesh/quotamesh/internal/accuracy"
	"github.com/quotamesh/quotamesh/internal/localcluster"
	"github.com/quotamesh/quotamesh/internal/pattern"
	"github.com/quotamesh/quotamesh/limits"
	"github.com/quotamesh/quotamesh/node"
)

// Bounds of the demo: it drives the load from this process, one goroutine
// per node, and keeps a counter per 100 ms of the run.
const (
	MinNodes      = 3
	MaxNodes      = 5
	MaxOffered    = 200_000 // requests/s in all
	maxDuration   = time.Hour
	readyTimeout  = 30 * time.Second
	slot          = limits.Slot
	defaultKey    = "demo.orders"
	defaultLimit  = "1000/s"
	defaultWarmup = 2 * time.Second
)

// Options is everything `quotamesh demo` can be told; the field comments
// are in the command's flags.
type Options struct {
	Duration, Warmup    time.Duration
	Limit, Key, Pattern string
	Nodes               int
	Multiplier          float64
	Seed                uint64
}

// DefaultOptions are the flags' defaults.
func DefaultOptions() Options {
	return Options{Duration: 20 * time.Second, Warmup: defaultWarmup, Limit: defaultLimit, Key: defaultKey,
		Nodes: 3, Pattern: string(pattern.Skew90), Multiplier: 2, Seed: 1}
}

// PatternNames lists the demand patterns, for the flag's help.
func PatternNames() string {
	s := make([]string, len(pattern.Names))
	for i, n := range pattern.Names {
		s[i] = string(n)
	}
	return strings.Join(s, ", ")
}

// Plan is a validated demo: the options and their parsed forms.
type Plan struct {
	Options
	rate limits.Rate
	load pattern.Load
}

// Validate checks the options and parses them; errors name the flag and
// the bad value.
func (o Options) Validate() (Plan, error) {
	p := Plan{Options: o}
	rate, err := limits.ParseRate(o.Limit)
	if err != nil {
		return p, fmt.Errorf("--limit: %v", err)
	}
	pat, err := pattern.Parse(o.Pattern)
	if err != nil {
		return p, fmt.Errorf("--pattern: %v", err)
	}
	if err := limits.ValidateKey(o.Key); err != nil {
		return p, fmt.Errorf("--key: %v", err)
	}
	switch {
	case o.Nodes < MinNodes || o.Nodes > MaxNodes:
		return p, fmt.Errorf("--nodes %d: use %d to %d", o.Nodes, MinNodes, MaxNodes)
	case o.Duration <= 0 || o.Duration > maxDuration:
		return p, fmt.Errorf("--duration %v: use a positive duration up to %v", o.Duration, maxDuration)
	case o.Warmup < 0 || o.Warmup >= o.Duration:
		return p, fmt.Errorf("--warmup %v: use 0 or more, less than --duration %v", o.Warmup, o.Duration)
	case !(o.Multiplier > 0):
		return p, fmt.Errorf("--multiplier %v: use a positive number", o.Multiplier)
	case rate.PerSecond()*o.Multiplier > MaxOffered:
		return p, fmt.Errorf("--limit %s at --multiplier %v offers %.0f requests/s: the demo drives the load from this process, keep it at most %d/s",
			rate, o.Multiplier, rate.PerSecond()*o.Multiplier, MaxOffered)
	}
	p.rate = rate
	p.load = pattern.Load{Pattern: pat, Nodes: o.Nodes, Limit: rate.PerSecond(), Multiplier: o.Multiplier, Duration: o.Duration}.WithDefaults()
	if err := p.load.Validate(); err != nil {
		return p, err
	}
	return p, nil
}

// Run runs the whole demo; it always closes the nodes and removes the
// temporary directory before it returns. Ctrl-C (ctx ending) during setup
// is a clean stop, not an error.
func Run(ctx context.Context, p Plan, out, errw io.Writer) (err error) {
	o, rate, load := p.Options, p.rate, p.load
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

	fmt.Fprintf(out, "starting %d nodes on 127.0.0.1 (data and certificates in %s)\n", o.Nodes, dir)
	lc, err := localcluster.StartInProcess(ctx, dir, o.Nodes, log)
	if err != nil {
		return interrupted(ctx, out, err)
	}
	defer func() {
		logw.quiet.Store(true)
		if cerr := lc.Close(); cerr != nil {
			err = errors.Join(err, cerr)
			return
		}
		fmt.Fprintf(out, "stopped %d nodes\n", o.Nodes)
	}()
	for _, n := range lc.Nodes {
		fmt.Fprintf(out, "  %s  quic %s  admin http://%s\n", n.ID(), n.Addr(), n.AdminAddr())
	}
	rctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	start := time.Now()
	if err := lc.WaitReady(rctx); err != nil {
		return interrupted(ctx, out, err)
	}
	rule := limits.Rule{Pattern: o.Key, Rate: rate}
	idx, err := lc.SetLimit(rctx, rule)
	if err != nil {
		return interrupted(ctx, out, err)
	}
	gate.min.Store(int32(zerolog.WarnLevel))
	leader := lc.Nodes[0].Status(0).Raft.Leader
	fmt.Fprintf(out, "cluster ready in %v (Raft leader %s); limit %s set through Raft at index %d and applied on every node\n",
		time.Since(start).Round(time.Millisecond), leader, rule, idx)
	fmt.Fprintf(out, "try, in another terminal: quotamesh status --addr %s --certs %s\n", lc.Nodes[0].Addr(), lc.CertDir)

	hot := ""
	if h := load.Hot(0); h >= 0 {
		hot = fmt.Sprintf(", %.0f%% on %s at first", 100*load.HotFraction, lc.Nodes[h].ID())
	}
	fmt.Fprintf(out, "offering %.0f requests/s (%.1fx the limit, %s%s) for %v; error counted after a %v warm-up\n\n",
		load.Multiplier*load.Limit, load.Multiplier, load.Pattern, hot, o.Duration, o.Warmup)

	d := newLoadRun(lc.Nodes, o, rate)
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

// loadRun is one run of the load: counters the drivers add to and the
// table reads.
type loadRun struct {
	nodes    []*node.Node
	o        Options
	rate     limits.Rate
	start    time.Time
	offered  []atomic.Int64 // per node
	admitted []atomic.Int64 // per node
	errs     atomic.Int64
	firstErr atomic.Value   // string
	slots    []atomic.Int64 // cluster admissions per 100 ms of the run
}

func newLoadRun(nodes []*node.Node, o Options, rate limits.Rate) *loadRun {
	return &loadRun{
		nodes: nodes, o: o, rate: rate,
		offered:  make([]atomic.Int64, len(nodes)),
		admitted: make([]atomic.Int64, len(nodes)),
		slots:    make([]atomic.Int64, int(o.Duration/slot)+1),
	}
}

// run drives the load until its duration or ctx ends, printing a row every
// second and a summary at the end.
func (d *loadRun) run(ctx context.Context, load pattern.Load, out io.Writer) {
	d.header(out)
	lctx, stop := context.WithCancel(ctx)
	defer stop()
	d.start = time.Now()
	var wg sync.WaitGroup
	for i, n := range d.nodes {
		arr := pattern.NewArrivals(load, i, pattern.Even, d.o.Seed)
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
		end = d.o.Duration
		if end > time.Duration(secs)*time.Second {
			d.row(out, end, time.Since(lastAt), prev)
		}
	}
	d.summary(out, end, interrupted)
}

// drive offers node i its arrivals, open loop: a request is made at its
// arrival time whatever happened to the ones before it.
func (d *loadRun) drive(ctx context.Context, i int, n *node.Node, arr *pattern.Arrivals) {
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
		dec, err := n.Allow(ctx, d.o.Key)
		if err != nil {
			if d.errs.Add(1) == 1 {
				d.firstErr.Store(fmt.Sprintf("%s: %v", n.ID(), err))
			}
			continue
		}
		if dec.Allowed {
			d.admitted[i].Add(1)
			s := min(int(time.Since(d.start)/slot), len(d.slots)-1)
			d.slots[s].Add(1)
		}
	}
}

// admittedBetween sums the cluster's admissions in [from, to).
func (d *loadRun) admittedBetween(from, to time.Duration) int64 {
	var sum int64
	for s := int(from / slot); s < int(to/slot) && s < len(d.slots); s++ {
		sum += d.slots[s].Load()
	}
	return sum
}

// target is what a perfect limiter admits in [warm-up, t) under a load
// above the limit.
func (d *loadRun) target(t time.Duration) int64 {
	return accuracy.Target(d.rate.PerSecond(), t-d.o.Warmup)
}

const col = "%10s"

func (d *loadRun) header(out io.Writer) {
	var b strings.Builder
	fmt.Fprintf(&b, "%6s", "time")
	for _, n := range d.nodes {
		fmt.Fprintf(&b, col+col, n.ID()+" off/s", n.ID()+" adm/s")
	}
	fmt.Fprintf(&b, col+col+col+col+"%9s", "all adm/s", "limit/s", "admitted", "target", "error")
	fmt.Fprintln(out, b.String())
}

// row prints the second ending at t: each node's offered and admitted rate
// over the last interval, the cluster's, and the error so far.
func (d *loadRun) row(out io.Writer, t, interval time.Duration, prev [][2]int64) {
	var b strings.Builder
	fmt.Fprintf(&b, "%6s", t.Round(100*time.Millisecond))
	per := func(v int64) string { return fmt.Sprintf("%.0f", float64(v)/interval.Seconds()) }
	var all int64
	for i := range d.nodes {
		off, adm := d.offered[i].Load(), d.admitted[i].Load()
		fmt.Fprintf(&b, col+col, per(off-prev[i][0]), per(adm-prev[i][1]))
		all += adm - prev[i][1]
		prev[i] = [2]int64{off, adm}
	}
	fmt.Fprintf(&b, col+col, per(all), fmt.Sprintf("%.0f", d.rate.PerSecond()))
	if t <= d.o.Warmup {
		fmt.Fprintf(&b, col+col+"%9s", "-", "-", "warm-up")
	} else {
		adm, want := d.admittedBetween(d.o.Warmup, t), d.target(t)
		fmt.Fprintf(&b, "%10d%10d%8.2f%%", adm, want, 100*accuracy.Error(adm, want))
	}
	fmt.Fprintln(out, b.String())
}

// summary prints the totals and the error over [warm-up, end).
func (d *loadRun) summary(out io.Writer, end time.Duration, interrupted bool) {
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
	if end <= d.o.Warmup {
		fmt.Fprintf(out, "summary: stopped within the %v warm-up: no error figure\n", d.o.Warmup)
		return
	}
	got, want := d.admittedBetween(d.o.Warmup, end), d.target(end)
	fmt.Fprintf(out, "summary: %d nodes, %s load at %.1fx of %s: admitted %d from %v to %v, limit x time %d, error %.2f %%\n",
		len(d.nodes), d.o.Pattern, d.o.Multiplier, d.rate, got, d.o.Warmup, end.Round(100*time.Millisecond), want, 100*accuracy.Error(got, want))
}

// maxWindowRatio is the largest count admitted in any window of the
// limit's length (to 100 ms resolution) up to end, over the limit's count.
func (d *loadRun) maxWindowRatio(end time.Duration) float64 {
	counts := make([]int64, min(int(end/slot), len(d.slots)))
	for s := range counts {
		counts[s] = d.slots[s].Load()
	}
	return float64(accuracy.MaxSlotWindow(counts, int(d.rate.Window/slot))) / float64(d.rate.Count)
}

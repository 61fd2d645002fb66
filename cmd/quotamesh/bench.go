package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/quotamesh/quotamesh"
	"github.com/quotamesh/quotamesh/client"
	"github.com/quotamesh/quotamesh/internal/certs"
	"github.com/quotamesh/quotamesh/internal/pattern"
	"github.com/quotamesh/quotamesh/limits"
)

// benchClientName is the client certificate the bench uses: the admin one
// `quotamesh certs init` makes, which may change limits.
const benchClientName = "admin"

// defaultTick is --tick's default: the generator sleeps at least this long
// between two wakes. At 100k requests/s a wake hands over about two
// arrivals per node, and the generator takes a few percent of a core.
const defaultTick = 20 * time.Microsecond

// dialTimeout bounds connecting to one node: longer than the SDK's default,
// for a loaded machine.
const dialTimeout = 10 * time.Second

// Workers per node by default. A lease decision rarely waits. With --rate
// (a latency run) the generator makes the calls itself (0 workers), one
// after the other, as a service's request goroutine would: handing each to
// another goroutine adds a wake-up per hand-off that no service pays (at
// 100k/s on 2 cores it doubled P99 here). Without --rate (an accuracy run)
// each node has a pool: a call that waits for a lease then holds up only
// its own worker, as in a service with many request goroutines, where the
// single generator would hold up every node's requests and let the other
// SDKs' leases age unused (uniform on 3 nodes, 30 s: 14 % under the ideal
// with 0 workers, 3.8 % with 8). A strict decision waits a round trip, so
// it takes many in flight.
const (
	leaseWorkers     = 8
	leaseRateWorkers = 0
	strictWorkers    = 64
)

// benchOptions is everything `quotamesh bench` can be told.
type benchOptions struct {
	LocalCluster int
	Addrs        []string
	Certs        string
	ClientName   string
	ServeFlags   []string
	LogDir       string

	Pattern    string
	Arrivals   string
	Limit      string
	Multiplier float64
	Duration   time.Duration
	Warmup     time.Duration
	Key        string
	Seed       uint64

	Rate         float64
	Strict       bool
	Workers      int
	Prime        bool
	Tick         time.Duration
	TCPBaseline  bool
	LeaseTTL     time.Duration
	ReqTimeout   time.Duration
	FindMax      bool
	P99Target    time.Duration
	FindMaxStep  float64
	FindMaxSteps int

	ReadyTimeout time.Duration
	JSON         bool
}

func defaultBenchOptions() benchOptions {
	return benchOptions{
		ClientName: benchClientName, Pattern: "uniform", Arrivals: "uniform", Limit: "1000/s",
		Multiplier: 2, Duration: 60 * time.Second, Warmup: time.Second, Key: "bench", Seed: 1,
		Workers: leaseWorkers, Prime: true, LeaseTTL: client.DefaultLeaseTTL, ReqTimeout: client.DefaultRequestTimeout, P99Target: 200 * time.Microsecond,
		FindMaxStep: 1.25, FindMaxSteps: 10, ReadyTimeout: 60 * time.Second, Tick: defaultTick,
	}
}

// benchRun is a validated bench: the parsed forms of the options.
type benchRun struct {
	benchOptions
	pattern  pattern.Name
	arrivals pattern.Arrival
	limit    limits.Rate
}

// validate checks the options and parses them; errors name the flag and
// the bad value.
func (o benchOptions) validate() (benchRun, error) {
	r := benchRun{benchOptions: o}
	var err error
	switch {
	case o.LocalCluster == 0 && len(o.Addrs) == 0:
		return r, fmt.Errorf("give --local-cluster N to start N nodes, or --addrs to drive a running cluster")
	case o.LocalCluster != 0 && len(o.Addrs) != 0:
		return r, fmt.Errorf("--local-cluster %d and --addrs %s: give one of them, not both", o.LocalCluster, strings.Join(o.Addrs, ","))
	case o.LocalCluster < 0 || o.LocalCluster > maxLocalNodes:
		return r, fmt.Errorf("--local-cluster %d: want 1 to %d nodes", o.LocalCluster, maxLocalNodes)
	case len(o.Addrs) != 0 && o.Certs == "":
		return r, fmt.Errorf("--addrs needs --certs, the cluster's certificates directory (ca.crt, clients/%s.crt and .key)", o.ClientName)
	case o.LocalCluster != 0 && o.Certs != "":
		return r, fmt.Errorf("--certs %q: only with --addrs; --local-cluster makes its own certificates", o.Certs)
	case o.LocalCluster == 0 && o.LogDir != "":
		return r, fmt.Errorf("--log-dir %q: only with --local-cluster", o.LogDir)
	case o.LocalCluster == 0 && len(o.ServeFlags) != 0:
		return r, fmt.Errorf("--serve-flag %q: only with --local-cluster", o.ServeFlags)
	}
	for _, a := range o.Addrs {
		if _, _, err := net.SplitHostPort(a); err != nil {
			return r, fmt.Errorf("--addrs: %q: want host:port: %v", a, err)
		}
	}
	if r.pattern, err = pattern.Parse(o.Pattern); err != nil {
		return r, fmt.Errorf("--pattern: %w", err)
	}
	if r.arrivals, err = pattern.ParseArrival(o.Arrivals); err != nil {
		return r, fmt.Errorf("--arrivals: %w", err)
	}
	if r.limit, err = limits.ParseRate(o.Limit); err != nil {
		return r, fmt.Errorf("--limit: %w", err)
	}
	if err := limits.ValidateKey(o.Key); err != nil {
		return r, fmt.Errorf("--key: %w", err)
	}
	switch {
	case o.Duration <= 0 || o.Duration > 24*time.Hour:
		return r, fmt.Errorf("--duration %v: want more than 0 and at most 24h", o.Duration)
	case o.Warmup < 0:
		return r, fmt.Errorf("--warmup %v: want 0 or more", o.Warmup)
	case !(o.Multiplier > 0) || math.IsInf(o.Multiplier, 0):
		return r, fmt.Errorf("--multiplier %v: want a positive number", o.Multiplier)
	case !(o.Rate >= 0) || math.IsInf(o.Rate, 0):
		return r, fmt.Errorf("--rate %v: want 0 (pattern load) or a positive rate per second", o.Rate)
	case o.Workers < 0 || o.Workers > 100_000:
		return r, fmt.Errorf("--workers %d: want 0 to 100000 per node", o.Workers)
	case o.LeaseTTL < time.Millisecond || o.LeaseTTL > 10*time.Second:
		return r, fmt.Errorf("--lease-ttl %v: want 1ms to 10s", o.LeaseTTL)
	case o.TCPBaseline && !o.Strict:
		return r, fmt.Errorf("--tcp-baseline: only with --strict (the baseline is a round trip per decision)")
	case o.TCPBaseline && o.FindMax:
		return r, fmt.Errorf("--tcp-baseline: not with --find-max")
	case o.Tick < time.Microsecond || o.Tick > 10*time.Millisecond:
		return r, fmt.Errorf("--tick %v: want 1µs to 10ms", o.Tick)
	case o.ReqTimeout <= 0:
		return r, fmt.Errorf("--request-timeout %v: want a positive duration", o.ReqTimeout)
	case o.ReadyTimeout <= 0:
		return r, fmt.Errorf("--ready-timeout %v: want a positive duration", o.ReadyTimeout)
	case o.FindMax && o.Rate == 0:
		return r, fmt.Errorf("--find-max needs --rate, the first rate to try")
	case o.FindMax && o.P99Target <= 0:
		return r, fmt.Errorf("--p99-target %v: want a positive duration", o.P99Target)
	case o.FindMax && !(o.FindMaxStep > 1):
		return r, fmt.Errorf("--find-max-step %v: want a factor above 1", o.FindMaxStep)
	case o.FindMax && (o.FindMaxSteps < 1 || o.FindMaxSteps > 100):
		return r, fmt.Errorf("--find-max-steps %d: want 1 to 100", o.FindMaxSteps)
	}
	if err := r.loadAt(o.Rate).WithDefaults().Validate(); err != nil {
		return r, fmt.Errorf("load (--pattern %s, --rate %v, --multiplier %v, --duration %v): %w", o.Pattern, o.Rate, o.Multiplier, o.Duration, err)
	}
	return r, nil
}

// loadAt is the offered load: the pattern at rate requests per second in
// total, or at multiplier × limit when rate is 0.
func (r benchRun) loadAt(rate float64) pattern.Load {
	l := pattern.Load{Pattern: r.pattern, Nodes: r.nodes(), Limit: r.limit.PerSecond(), Multiplier: r.Multiplier, Duration: r.Duration}
	if rate > 0 {
		l.Limit, l.Multiplier = rate, 1
	}
	return l
}

func (r benchRun) nodes() int {
	if r.LocalCluster > 0 {
		return r.LocalCluster
	}
	return len(r.Addrs)
}

func newBenchCmd() *cobra.Command {
	o := defaultBenchOptions()
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Measure accuracy and latency on real node processes through the SDK",
		Long: `bench offers load to a real cluster through the client SDK (over QUIC, one
SDK client per node) and reports how close the cluster came to one perfect
global limiter, with the same figures as 'quotamesh sim --json', and the
latency of every decision.

--local-cluster N starts N 'quotamesh serve' processes of this binary on
127.0.0.10, 127.0.0.11, ... with development certificates and data in a
temporary directory, waits until each is ready (/readyz), and stops and
removes them all at the end, on error and on Ctrl-C. --addrs drives a running
cluster instead, with the certificates in --certs (the client certificate
clients/<--client-name> must be an admin's: the bench sets the limit).

The bench sets --limit on --key through Raft, waits until every node applied
it, waits --warmup, then offers the load open loop: one generator wakes at
each request's intended time (at most every --tick, sleeping precisely in
between) and hands every request then due to its node's pool of --workers,
or, with --workers 0 (the default with leases and --rate), makes the calls
itself one after another, whatever happened to earlier requests. Without --rate the load is --pattern at
--multiplier × the limit (uniform, skew90, burst, rotate, ramp: see
'quotamesh sim --help'); with --rate it is the pattern at that many requests
per second in total. Latencies run from each request's intended send time to
its answer, so a stalled call or a late generator counts (no coordinated
omission), and are kept in an HDR histogram; the generator's own lateness,
part of every latency, and the CPU time used per 100k decisions (this
process; with --local-cluster on Linux, the nodes too) are reported beside.
--tcp-baseline (with --strict) then offers the same load to plain pipelined
TCP request/response servers on loopback, one process per node, and reports
it beside: what a round trip costs on this machine without QUIC or a node.

Decisions are made in the SDK from leases (the default), or one round trip
each with --strict. With --prime (the default) each SDK client makes one
call just before the load, not counted, so the first lease is not waited for
inside the measured run. Admissions are counted where they are decided, in the
SDKs; the ideal is what one perfect sliding window would admit seeing every
offered request at its intended time.

--find-max repeats the run from --rate upwards, --find-max-step times higher
each time, until P99 exceeds --p99-target, calls fail or requests are
dropped, and reports every step.

Examples:

  quotamesh bench --local-cluster 3 --pattern skew90 --limit 1000/s --duration 60s
  quotamesh bench --local-cluster 3 --rate 100000 --duration 10s --json
  quotamesh bench --local-cluster 3 --strict --rate 25000 --duration 10s --tcp-baseline
  quotamesh bench --addrs 10.0.0.1:7946,10.0.0.2:7946 --certs certs --pattern burst`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if !cmd.Flags().Changed("workers") {
				switch {
				case o.Strict:
					o.Workers = strictWorkers
				case o.Rate > 0:
					o.Workers = leaseRateWorkers
				}
			}
			r, err := o.validate()
			if err != nil {
				return usageError{err}
			}
			return bench(cmd.Context(), r, cmd.OutOrStdout(), cmd.ErrOrStderr())
		},
	}
	f := cmd.Flags()
	f.IntVar(&o.LocalCluster, "local-cluster", o.LocalCluster, fmt.Sprintf("start this many node processes on 127.0.0.10 and up, 1 to %d (default 0: use --addrs)", maxLocalNodes))
	f.StringSliceVar(&o.Addrs, "addrs", o.Addrs, "UDP host:port of every node of a running cluster to drive, one SDK client each (default none: use --local-cluster)")
	f.StringVar(&o.Certs, "certs", o.Certs, "with --addrs: the cluster's certificates directory, as 'quotamesh certs init' writes it (default none)")
	f.StringVar(&o.ClientName, "client-name", o.ClientName, "with --addrs: the client certificate to use, clients/<name>.crt and .key in --certs")
	f.StringArrayVar(&o.ServeFlags, "serve-flag", o.ServeFlags, "with --local-cluster: a flag passed to every node's serve, e.g. --serve-flag=--sync-interval=10ms (repeatable; default none)")
	f.StringVar(&o.LogDir, "log-dir", o.LogDir, "with --local-cluster: keep the nodes' logs here as <id>.log (default none: removed with the temporary directory)")
	f.StringVar(&o.Pattern, "pattern", o.Pattern, "demand pattern: uniform, skew90, burst, rotate, ramp")
	f.StringVar(&o.Arrivals, "arrivals", o.Arrivals, "arrival process: uniform (evenly spaced) or poisson")
	f.StringVar(&o.Limit, "limit", o.Limit, "the limit set on --key through Raft")
	f.Float64Var(&o.Multiplier, "multiplier", o.Multiplier, "offered load over the limit, on average (without --rate)")
	f.DurationVar(&o.Duration, "duration", o.Duration, "length of the load (of each step with --find-max)")
	f.DurationVar(&o.Warmup, "warmup", o.Warmup, "wait after the limit is in force on every node, before the load")
	f.StringVar(&o.Key, "key", o.Key, "the key every request is for")
	f.Uint64Var(&o.Seed, "seed", o.Seed, "random seed of the arrivals (node i uses seed+i)")
	f.Float64Var(&o.Rate, "rate", o.Rate, "constant offered rate, requests per second over all nodes (default 0: --multiplier × --limit)")
	f.BoolVar(&o.Strict, "strict", o.Strict, "one round trip to the node per decision instead of leases (default false)")
	f.BoolVar(&o.Prime, "prime", o.Prime, "make one call per SDK client just before the load (not counted), so that the first lease's round trip is not in the figures")
	f.IntVar(&o.Workers, "workers", o.Workers, fmt.Sprintf("goroutines calling the SDK, per node: the most requests in flight per node; 0: the generator makes the calls itself, one after another (%d with --rate, %d with --strict)", leaseRateWorkers, strictWorkers))
	f.BoolVar(&o.TCPBaseline, "tcp-baseline", o.TCPBaseline, "with --strict: then offer the same load to plain pipelined TCP request/response servers on loopback (one process per node), and report it beside (default false)")
	f.DurationVar(&o.Tick, "tick", o.Tick, "the least time the generator sleeps between two wakes (each wake hands over every arrival then due)")
	f.DurationVar(&o.LeaseTTL, "lease-ttl", o.LeaseTTL, "the SDK's lease TTL (the node's applies when shorter)")
	f.DurationVar(&o.ReqTimeout, "request-timeout", o.ReqTimeout, "the SDK's bound on one round trip (a strict decision, a lease); a call past it is an error")
	f.BoolVar(&o.FindMax, "find-max", o.FindMax, "step the rate up from --rate until P99 exceeds --p99-target (default false)")
	f.DurationVar(&o.P99Target, "p99-target", o.P99Target, "with --find-max: the P99 latency a rate must keep")
	f.Float64Var(&o.FindMaxStep, "find-max-step", o.FindMaxStep, "with --find-max: factor between one rate and the next")
	f.IntVar(&o.FindMaxSteps, "find-max-steps", o.FindMaxSteps, "with --find-max: most rates tried")
	f.DurationVar(&o.ReadyTimeout, "ready-timeout", o.ReadyTimeout, "how long nodes may take to become ready, and the limit to apply")
	f.BoolVar(&o.JSON, "json", o.JSON, "print one JSON object (with --find-max: an array, one per step) (default false)")
	return cmd
}

// bench runs r: starts or reaches the cluster, sets the limit, offers the
// load, prints the report, and stops what it started whatever happens.
func bench(ctx context.Context, r benchRun, stdout, stderr io.Writer) (err error) {
	addrs, certDir := r.Addrs, r.Certs
	var lc *localCluster
	if r.LocalCluster > 0 {
		if !r.JSON {
			fmt.Fprintf(stdout, "starting %d nodes on 127.0.0.%d and up\n", r.LocalCluster, firstNodeIP)
		}
		if lc, err = startLocalCluster(r.LocalCluster, r.ServeFlags, r.LogDir, stderr); err != nil {
			return err
		}
		defer lc.stop(stderr)
		rctx, cancel := context.WithTimeout(ctx, r.ReadyTimeout)
		err = lc.waitReady(rctx)
		cancel()
		if err != nil {
			return err
		}
		addrs, certDir = lc.addrs(), lc.certs
	}
	tlsCert, pool, err := loadClientCerts(certDir, r.ClientName)
	if err != nil {
		return err
	}
	// The load must not outlive a dead node: stop it when one dies.
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	stopWatch := watchNodes(lc, cancel)
	defer stopWatch()

	clients, names, err := dialNodes(ctx, addrs, r, tlsCert, pool)
	defer func() {
		for _, c := range clients {
			c.Close()
		}
	}()
	if err != nil {
		return orDied(lc, err)
	}
	if err := setLimit(ctx, clients, r); err != nil {
		return orDied(lc, err)
	}
	if r.Warmup > 0 {
		select {
		case <-time.After(r.Warmup):
		case <-ctx.Done():
			return orDied(lc, context.Cause(ctx))
		}
	}
	if r.Prime {
		if err := prime(ctx, clients, names, r); err != nil {
			return orDied(lc, err)
		}
	}
	limiters := make([]quotamesh.Limiter, len(clients))
	for i, c := range clients {
		limiters[i] = c
	}
	var reports []benchReport
	rate := r.Rate
	for step := 0; ; step++ {
		spec := loadSpec{load: r.loadAt(rate).WithDefaults(), arrivals: r.arrivals, seed: r.Seed, key: r.Key,
			limit: r.limit, workers: r.Workers, maxLag: maxLagDefault, tick: r.Tick, batch: !r.Strict}
		cpu0 := readCPU(lc)
		rep := runLoad(ctx, limiters, names, spec)
		readCPU(lc).since(cpu0).report(&rep)
		if err := ctx.Err(); err != nil {
			return orDied(lc, fmt.Errorf("bench: load stopped after %s: %w", rep.Elapsed, context.Cause(ctx)))
		}
		rep.Rate, rep.Mode = rate, "lease"
		if r.Strict {
			rep.Mode = "strict"
		}
		if rep.Offered == 0 {
			return fmt.Errorf("bench: no request was offered (rate %v, duration %v)", spec.load.Total(0), r.Duration)
		}
		if r.TCPBaseline {
			base, err := tcpBaseline(ctx, len(limiters), spec, r, stderr)
			if err != nil {
				return orDied(lc, err)
			}
			base.Rate = rate
			rep.TCPBaseline = &base
		}
		reports = append(reports, rep)
		if !r.JSON {
			printBench(stdout, r, rep)
			if rep.TCPBaseline != nil {
				fmt.Fprintf(stdout, "TCP baseline, same load and workers, in the same run:\n")
				printBench(stdout, r, *rep.TCPBaseline)
			}
		}
		if !r.FindMax || step+1 >= r.FindMaxSteps ||
			rep.P99us > float64(r.P99Target.Microseconds()) || rep.Errors > 0 || rep.Unsent > 0 {
			break
		}
		rate *= r.FindMaxStep
	}
	if err := orDied(lc, nil); err != nil {
		return err // a node died during the run: its figures mean nothing
	}
	if r.JSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if r.FindMax {
			return enc.Encode(reports)
		}
		return enc.Encode(reports[0])
	}
	if r.FindMax {
		printFindMax(stdout, r, reports)
	}
	return nil
}

// cpuReading is the CPU time used so far by this process and by the nodes
// of a local cluster; nodesOK is false when they could not all be read (no
// local cluster, not Linux, a node gone).
type cpuReading struct {
	self, nodes time.Duration
	nodesOK     bool
}

func readCPU(lc *localCluster) cpuReading {
	var c cpuReading
	c.self, _ = selfCPU()
	if lc == nil {
		return c
	}
	for _, n := range lc.nodes {
		t, err := procCPU(n.cmd.Process.Pid)
		if err != nil {
			return cpuReading{self: c.self}
		}
		c.nodes += t
	}
	c.nodesOK = true
	return c
}

// since is the CPU time used from c0 to c.
func (c cpuReading) since(c0 cpuReading) cpuReading {
	d := cpuReading{self: c.self - c0.self, nodesOK: c.nodesOK && c0.nodesOK}
	if d.nodesOK {
		d.nodes = c.nodes - c0.nodes
	}
	return d
}

// report writes d, CPU used during a load, into rep per 100k decisions.
func (d cpuReading) report(rep *benchReport) {
	if rep.Answered == 0 {
		return
	}
	per := float64(rep.Answered) / 100_000
	rep.ClientCPUPer100k = d.self.Seconds() / per
	rep.NodesCPUPer100k = d.nodes.Seconds() / per
}

// orDied returns the death of a node, which explains err better, or err.
func orDied(lc *localCluster, err error) error {
	if d := lc.died(); d != nil {
		return d
	}
	return err
}

// watchNodes cancels the run when a node of lc dies, until the returned
// function is called (which waits for the watcher).
func watchNodes(lc *localCluster, cancel context.CancelCauseFunc) (stop func()) {
	if lc == nil {
		return func() {}
	}
	done, finished := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(finished)
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-done:
				return
			case <-tick.C:
				if err := lc.died(); err != nil {
					cancel(err)
					return
				}
			}
		}
	}()
	return func() { close(done); <-finished }
}

// loadClientCerts reads the CA and the named client's certificate from dir.
func loadClientCerts(dir, name string) (tls.Certificate, *x509.CertPool, error) {
	set, err := certs.LoadDir(dir)
	if err != nil {
		return tls.Certificate{}, nil, fmt.Errorf("bench: --certs %s: %w", dir, err)
	}
	b, ok := set.Clients[name]
	if !ok {
		return tls.Certificate{}, nil, fmt.Errorf("bench: no client certificate %q in %s (want %s)", name, dir,
			filepath.Join(dir, certs.ClientsDir, name+".crt"))
	}
	return b.TLSCertificate(), set.CA.Pool(), nil
}

// dialNodes connects one SDK client to each address; names are the nodes'
// IDs as the clients see them. Clients made before an error are returned
// too, for the caller to close.
func dialNodes(ctx context.Context, addrs []string, r benchRun, cert tls.Certificate, pool *x509.CertPool) ([]*client.Client, []string, error) {
	opts := []client.Option{client.WithCA(pool), client.WithCertificate(cert), client.WithLeaseTTL(r.LeaseTTL),
		client.WithRequestTimeout(r.ReqTimeout), client.WithDialTimeout(dialTimeout),
		client.WithMaxInFlight(max(client.DefaultMaxInFlight, 2*r.Workers))}
	if r.Strict {
		opts = append(opts, client.WithStrict())
	}
	var out []*client.Client
	var names []string
	for _, a := range addrs {
		c, err := client.Dial(ctx, []string{a}, opts...)
		if err != nil {
			return out, nil, fmt.Errorf("bench: connect to %s: %w", a, err)
		}
		out = append(out, c)
		names = append(names, c.Node())
	}
	return out, names, nil
}

// setLimit sets the limit through Raft and waits until every node applied
// it (its Raft applied index reached the change's), within --ready-timeout.
func setLimit(ctx context.Context, clients []*client.Client, r benchRun) error {
	ctx, cancel := context.WithTimeout(ctx, r.ReadyTimeout)
	defer cancel()
	rule := limits.Rule{Pattern: r.Key, Rate: r.limit}
	var index uint64
	var err error
	for {
		// Right after an election a node may answer that it knows no
		// leader yet: try again until the timeout.
		if index, err = clients[0].SetLimit(ctx, rule); err == nil {
			break
		}
		if errors.Is(err, client.ErrForbidden) || ctx.Err() != nil {
			return fmt.Errorf("bench: set limit %s: %w", rule, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	for i, c := range clients {
		for {
			applied, err := appliedIndex(ctx, c)
			if err == nil && applied >= index {
				break
			}
			if ctx.Err() != nil {
				return fmt.Errorf("bench: node %d (%s) did not apply limit %s (index %d; applied %d, %v): %w",
					i, c.Node(), rule, index, applied, err, context.Cause(ctx))
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	return nil
}

// prime makes one call for key through each client, so that each holds
// a lease (or, in strict mode, has made a round trip) when the load starts.
// A call that gets no answer in time is tried again within --ready-timeout:
// a loaded machine can hold a first lease back longer than the SDK's
// request timeout.
func prime(ctx context.Context, clients []*client.Client, names []string, r benchRun) error {
	ctx, cancel := context.WithTimeout(ctx, r.ReadyTimeout)
	defer cancel()
	for i, c := range clients {
		for {
			_, err := c.Allow(ctx, r.Key)
			if err == nil {
				break
			}
			if !errors.Is(err, quotamesh.ErrUnavailable) || ctx.Err() != nil {
				return fmt.Errorf("bench: first call through %s: %w", names[i], err)
			}
		}
	}
	return nil
}

// appliedIndex reads the Raft applied index from a node's status.
func appliedIndex(ctx context.Context, c *client.Client) (uint64, error) {
	raw, err := c.Status(ctx)
	if err != nil {
		return 0, err
	}
	var st struct {
		Raft struct {
			AppliedIndex uint64 `json:"applied_index"`
		} `json:"raft"`
	}
	if err := json.Unmarshal(raw, &st); err != nil {
		return 0, fmt.Errorf("status of %s: %w", c.Node(), err)
	}
	return st.Raft.AppliedIndex, nil
}

func printBench(w io.Writer, r benchRun, rep benchReport) {
	load := fmt.Sprintf("%s load (%s arrivals) at %.1fx of %s", r.pattern, r.arrivals, r.Multiplier, r.limit)
	if rep.Rate > 0 {
		load = fmt.Sprintf("%s load (%s arrivals) at %.0f/s against %s", r.pattern, r.arrivals, rep.Rate, r.limit)
	}
	nodes, workers := "nodes", fmt.Sprintf("%d workers per node", r.Workers)
	if rep.Mode == "tcp" {
		nodes = "TCP servers"
	}
	if r.Workers == 0 {
		workers = "calls made by the generator"
	}
	fmt.Fprintf(w, "%d %s, %s for %v; %s mode, %s\n\n", rep.Nodes, nodes, load, r.Duration, rep.Mode, workers)
	if rep.Mode != "tcp" {
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, "node\toffered\tadmitted\t")
		for _, n := range rep.PerNode {
			fmt.Fprintf(tw, "%s\t%d\t%d\t\n", n.Node, n.Offered, n.Admitted)
		}
		fmt.Fprintf(tw, "cluster\t%d\t%d\t\n", rep.Offered, rep.Admitted)
		tw.Flush()
		fmt.Fprintf(w, "\nideal (a perfect limiter, same window, same requests): %d\n", rep.Ideal)
		fmt.Fprintf(w, "error against the ideal:  %.3f %%\n", 100*rep.Error)
		fmt.Fprintf(w, "largest window / limit:   %.3f (the ideal's: %.3f)\n", rep.MaxWindowRatio, rep.IdealMaxWindowRatio)
	}
	fmt.Fprintf(w, "answered %.0f/s; latency from intended send: p50 %.0f µs, p99 %.0f µs, p99.9 %.0f µs, max %.0f µs (call alone: p50 %.0f µs, p99 %.0f µs)\n",
		rep.AchievedRPS, rep.P50us, rep.P99us, rep.P999us, rep.MaxUs, rep.ServiceP50us, rep.ServiceP99us)
	fmt.Fprintf(w, "generator lateness (part of the latency): p50 %.0f µs, p99 %.0f µs, max %.0f µs\n", rep.GenP50us, rep.GenP99us, rep.GenMaxUs)
	fmt.Fprintf(w, "CPU per 100k decisions: %.3f s in this process (SDK and generator)", rep.ClientCPUPer100k)
	if rep.NodesCPUPer100k > 0 {
		fmt.Fprintf(w, ", %.3f s in the %s", rep.NodesCPUPer100k, nodes)
	}
	fmt.Fprintf(w, "\nerrors %d, unsent %d, elapsed %s\n\n", rep.Errors, rep.Unsent, rep.Elapsed)
}

func printFindMax(w io.Writer, r benchRun, reps []benchReport) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "rate\tachieved/s\tp50 µs\tp99 µs\tp99.9 µs\terrors\tunsent\t")
	best := 0.0
	for _, rep := range reps {
		fmt.Fprintf(tw, "%.0f\t%.0f\t%.0f\t%.0f\t%.0f\t%d\t%d\t\n", rep.Rate, rep.AchievedRPS, rep.P50us, rep.P99us, rep.P999us, rep.Errors, rep.Unsent)
		if rep.P99us <= float64(r.P99Target.Microseconds()) && rep.Errors == 0 && rep.Unsent == 0 {
			best = max(best, rep.AchievedRPS)
		}
	}
	tw.Flush()
	if best > 0 {
		fmt.Fprintf(w, "\nhighest rate within P99 %v: %.0f/s\n", r.P99Target, best)
	} else {
		fmt.Fprintf(w, "\nno rate tried kept P99 within %v\n", r.P99Target)
	}
}

package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/quotamesh/quotamesh/internal/bench"
	"github.com/quotamesh/quotamesh/internal/tcpecho"
)

// newBenchCmd binds `quotamesh bench`'s flags to bench.Options; the
// harness itself is internal/bench.
func newBenchCmd() *cobra.Command {
	o := bench.DefaultOptions()
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
itself one after another, whatever happened to earlier requests. The load is
the workload 'quotamesh sim --help' describes, with the same flags and the
same arrivals: one key (--key) or --keys N keys under a pattern rule (--key
'user:*', on which the limit is set), offered --multiplier × --limit per key,
--key-rate per key or --rate in total, shaped by --pattern, placed on the
nodes' SDK clients by --placement. Latencies run from each request's intended send time to
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
inside the measured run (one key only). Admissions are counted per key where
they are decided, in the SDK callers, at the time they were decided (the
node's clock for a node's decision, the SDK's for one from a lease); each
key's ideal is what one perfect sliding window would admit seeing the key's
requests at their intended times. The report gives the summed error, every
key's (p50, p90, max, the worst key, the share within 1 % or 2 requests),
requests denied while their key's demand was within its limit, and the
largest aligned window of one key, at decision times and at answer times.
--nearest makes each SDK client send every key to its own node.

--find-max repeats the run from --rate upwards, --find-max-step times higher
each time, until P99 exceeds --p99-target, calls fail or requests are
dropped, and reports every step.

Examples:

  quotamesh bench --local-cluster 3 --pattern skew90 --limit 1000/s --duration 60s
  quotamesh bench --local-cluster 3 --key 'user:*' --keys 200 --limit 10/s --duration 20s
  quotamesh bench --local-cluster 3 --key 'user:*' --keys 1000000 --popularity zipf --rate 3000 --strict
  quotamesh bench --local-cluster 3 --rate 100000 --duration 10s --json
  quotamesh bench --local-cluster 3 --strict --rate 25000 --duration 10s --tcp-baseline
  quotamesh bench --addrs 10.0.0.1:7946,10.0.0.2:7946 --certs certs --pattern burst`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if !cmd.Flags().Changed("workers") {
				switch {
				case o.Strict, o.Workload.Keys > 1:
					o.Workers = bench.StrictWorkers
				case o.Workload.Rate > 0:
					o.Workers = bench.LeaseRateWorkers
				}
			}
			plan, err := o.Validate()
			if err != nil {
				return usageError{err}
			}
			if o.LocalCluster > 0 || o.TCPBaseline {
				if plan.Binary, err = os.Executable(); err != nil {
					return fmt.Errorf("bench: find this program to start nodes: %w", err)
				}
			}
			return bench.Run(cmd.Context(), plan, cmd.OutOrStdout(), cmd.ErrOrStderr())
		},
	}
	f := cmd.Flags()
	f.IntVar(&o.LocalCluster, "local-cluster", o.LocalCluster, fmt.Sprintf("start this many node processes on 127.0.0.10 and up, 1 to %d (default 0: use --addrs)", bench.MaxLocalNodes))
	f.StringSliceVar(&o.Addrs, "addrs", o.Addrs, "UDP host:port of every node of a running cluster to drive, one SDK client each (default none: use --local-cluster)")
	f.StringVar(&o.Certs, "certs", o.Certs, "with --addrs: the cluster's certificates directory, as 'quotamesh certs init' writes it (default none)")
	f.StringVar(&o.ClientName, "client-name", o.ClientName, "with --addrs: the client certificate to use, clients/<name>.crt and .key in --certs")
	f.StringArrayVar(&o.ServeFlags, "serve-flag", o.ServeFlags, "with --local-cluster: a flag passed to every node's serve, e.g. --serve-flag=--sync-interval=10ms (repeatable; default none)")
	f.StringVar(&o.LogDir, "log-dir", o.LogDir, "with --local-cluster: keep the nodes' logs here as <id>.log (default none: removed with the temporary directory)")
	o.Workload.Register(f)
	f.DurationVar(&o.Duration, "duration", o.Duration, "length of the load (of each step with --find-max)")
	f.DurationVar(&o.Warmup, "warmup", o.Warmup, "wait after the limit is in force on every node, before the load")
	f.Uint64Var(&o.Seed, "seed", o.Seed, "random seed of the arrivals and key picks (node i draws from a stream of seed and i)")
	f.BoolVar(&o.Strict, "strict", o.Strict, "one round trip to the node per decision instead of leases (default false)")
	f.BoolVar(&o.Nearest, "nearest", o.Nearest, "every SDK client sends every key to its own node (client.WithNearest) instead of the key's home node (default false)")
	f.BoolVar(&o.Prime, "prime", o.Prime, "make one call per SDK client just before the load (not counted), so that the first lease's round trip is not in the figures")
	f.IntVar(&o.Workers, "workers", o.Workers, fmt.Sprintf("goroutines calling the SDK, per node: the most requests in flight per node; 0: the generator makes the calls itself, one after another (%d with --rate, %d with --strict or --keys above 1)", bench.LeaseRateWorkers, bench.StrictWorkers))
	f.IntVar(&o.MaxInFlight, "max-in-flight", o.MaxInFlight, "the SDK's bound on requests in flight per client (client.WithMaxInFlight); past it a call waits the overload wait, then is answered \"overloaded\" (default 0: the SDK's default, raised to twice --workers)")
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

// newBenchEchoCmd is the TCP baseline's server (internal/tcpecho), a
// hidden command that `bench --tcp-baseline` starts as separate processes,
// as it starts nodes.
func newBenchEchoCmd() *cobra.Command {
	var listen string
	cmd := &cobra.Command{
		Use:    "bench-echo",
		Hidden: true,
		Short:  "The TCP request/response server of 'bench --tcp-baseline' (internal)",
		Args:   cobra.NoArgs,
		RunE:   func(cmd *cobra.Command, _ []string) error { return tcpecho.Serve(cmd.Context(), listen) },
	}
	cmd.Flags().StringVar(&listen, "listen", "", "TCP host:port to answer on")
	return cmd
}

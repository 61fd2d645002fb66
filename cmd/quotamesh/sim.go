package main

import (
	"encoding/json"
	"fmt"
	"os"
	"runtime/pprof"
	"time"

	"github.com/spf13/cobra"

	"github.com/quotamesh/quotamesh/internal/pattern"
	"github.com/quotamesh/quotamesh/internal/share"
	"github.com/quotamesh/quotamesh/internal/sim"
	"github.com/quotamesh/quotamesh/internal/workload"
)

func newSimCmd() *cobra.Command {
	var (
		c                         sim.Config
		wf                        = workload.DefaultFlags("sim.key")
		pol                       string
		asJSON                    bool
		partition, pause, restart string
		cpuProfile                string
	)
	cmd := &cobra.Command{
		Use:   "sim",
		Short: "Simulate a cluster on simulated time and report its accuracy",
		Long: `sim runs N real QuotaMesh engines (the same window, CRDT and admission code
a node runs) on simulated time, joined by simulated links, under a workload,
and reports how close the cluster came to a perfect limiter per key. No
sockets, no wall clock: the same flags give the same result.

The workload (the same flags and arrivals as 'quotamesh bench'):
  --key K              one key; with --keys N, a pattern with one '*' that the
                       key's number replaces (--key 'user:*' --keys 200), on
                       which the --limit is set
  --popularity         uniform, zipf or zipf:EXPONENT (key i ~ 1/(i+1)^EXPONENT)
  --multiplier M       each key offered M × the limit on average (default 2);
                       or --key-rate R per key, or --rate R in total
  --pattern            uniform (steady), skew90 (90% on a hot node), rotate
                       (the hot node moves every 5 s or --period), burst[:ON[/OFF]]
                       (on/off phases, default 200ms/200ms, averaging the
                       base load), ramp (0 to 2x the base load at mid-run and
                       back), flash[:FROM:TO[:AT]] (FROM x the base load, then
                       TO x from AT; default 0.25:2.5 at mid-run, i.e. 0.5x to
                       5x the limit at the default multiplier)
  --placement          spread (each request to a random node), sticky (key i
                       always on node i mod N), hot[:FRACTION] (FRACTION, 0.9 by
                       default, on the hot node, moving every --period)
  --arrivals           uniform (evenly spaced) or poisson

By default the nodes decide every request themselves, as embedded nodes do.
--clients K puts K SDK clients beside each node, each with its own link to
the nodes (--client-rtt, --client-jitter, --client-loss) and its share of
the node's arrivals, running the SDK's lease logic as the real client does
(cold keys decided by a round trip, warm keys from leases riding on
decisions, renewal and settlement by a housekeeper every quarter lease TTL),
sending each key to its home node, or with --nearest to the client's own
node; --strict makes every call a round trip.

Faults: --partition START:END:GROUPS isolates groups of nodes (GROUPS is
nodes joined by '+', groups by '/', e.g. 5s:12s:0 or 5s:12s:0+1/2); --pause
AT:FOR:NODE stops a node; --restart AT:DOWN:NODE kills and restarts one.

--json prints one object with error, admitted, ideal, max_window_ratio,
per_node and per_key (and more), as 'quotamesh bench --json' does.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var err error
			if c.Nodes < 1 || c.Nodes > workload.MaxNodes {
				return usagef("--nodes %d: use 1 to %d", c.Nodes, workload.MaxNodes)
			}
			w, err := wf.Spec(c.Nodes, c.Duration, c.Seed)
			if err != nil {
				return usageError{err}
			}
			c.Workload, c.Limit, c.Pattern = &w, w.Limit, pattern.Name(wf.Pattern)
			if c.Policy, err = share.ParsePolicy(pol); err != nil {
				return usagef("--policy: %v", err)
			}
			if partition != "" {
				p, err := sim.ParsePartition(partition)
				if err != nil {
					return usagef("--partition %q: %v", partition, err)
				}
				c.Partitions = append(c.Partitions, p)
			}
			if pause != "" {
				at, d, n, err := sim.ParseNodeEvent(pause)
				if err != nil {
					return usagef("--pause %q: %v", pause, err)
				}
				c.Pauses = append(c.Pauses, sim.Pause{At: at, For: d, Node: n})
			}
			if restart != "" {
				at, d, n, err := sim.ParseNodeEvent(restart)
				if err != nil {
					return usagef("--restart %q: %v", restart, err)
				}
				c.Restarts = append(c.Restarts, sim.Restart{At: at, Down: d, Node: n})
			}
			if err := c.Validate(); err != nil {
				return usageError{err}
			}
			if cpuProfile != "" {
				f, err := os.Create(cpuProfile)
				if err != nil {
					return fmt.Errorf("--cpuprofile: %w", err)
				}
				defer f.Close()
				if err := pprof.StartCPUProfile(f); err != nil {
					return fmt.Errorf("--cpuprofile: %w", err)
				}
				defer pprof.StopCPUProfile()
			}
			start := time.Now()
			r, err := sim.Run(c)
			if err != nil {
				return err
			}
			if asJSON {
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				return enc.Encode(r)
			}
			r.WriteText(cmd.OutOrStdout(), c, time.Since(start))
			return nil
		},
	}
	f := cmd.Flags()
	f.IntVar(&c.Nodes, "nodes", 3, "number of nodes (1 to 1000)")
	wf.Register(f)
	c.RegisterFlags(f)
	f.StringVar(&pol, "policy", "conservative", "partition policy: conservative or available")
	f.StringVar(&partition, "partition", "", "a partition START:END:GROUPS, e.g. 5s:12s:0 (node 0 isolated)")
	f.StringVar(&pause, "pause", "", "a pause AT:FOR:NODE, e.g. 10s:3s:0")
	f.StringVar(&restart, "restart", "", "a kill -9 and restart AT:DOWN:NODE, e.g. 10s:2s:1")
	f.BoolVar(&asJSON, "json", false, "print one JSON object")
	f.StringVar(&cpuProfile, "cpuprofile", "", "write a CPU profile of the run to this file (go tool pprof)")
	return cmd
}

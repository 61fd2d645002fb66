package main

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/quotamesh/quotamesh/internal/pattern"
	"github.com/quotamesh/quotamesh/internal/share"
	"github.com/quotamesh/quotamesh/internal/sim"
	"github.com/quotamesh/quotamesh/limits"
)

func newSimCmd() *cobra.Command {
	var (
		c                         sim.Config
		pat, arrivals, lim, pol   string
		asJSON                    bool
		partition, pause, restart string
	)
	cmd := &cobra.Command{
		Use:   "sim",
		Short: "Simulate a cluster on simulated time and report its accuracy",
		Long: `sim runs N real QuotaMesh engines (the same window, CRDT and admission code
a node runs) on simulated time, joined by simulated links, under a demand
pattern, and reports how close the cluster came to a perfect global limiter.
No sockets, no wall clock: the same flags give the same result.

Patterns: uniform (every node the same), skew90 (90% on one node), burst
(on/off 200 ms, averaging the multiplier), rotate (the 90% node changes every
5 s), ramp (0 to 2x the multiplier and back).

Faults: --partition START:END:GROUPS isolates groups of nodes (GROUPS is
nodes joined by '+', groups by '/', e.g. 5s:12s:0 or 5s:12s:0+1/2); --pause
AT:FOR:NODE stops a node; --restart AT:DOWN:NODE kills and restarts one.

--json prints one object with error, admitted, ideal, max_window_ratio and
per_node (and more).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var err error
			if c.Pattern, err = pattern.Parse(pat); err != nil {
				return usagef("--pattern: %v", err)
			}
			if c.Arrivals, err = pattern.ParseArrival(arrivals); err != nil {
				return usagef("--arrivals: %v", err)
			}
			if c.Limit, err = limits.ParseRate(lim); err != nil {
				return usagef("--limit: %v", err)
			}
			if c.Policy, err = share.ParsePolicy(pol); err != nil {
				return usagef("--policy: %v", err)
			}
			if partition != "" {
				p, err := parsePartition(partition)
				if err != nil {
					return usagef("--partition %q: %v", partition, err)
				}
				c.Partitions = append(c.Partitions, p)
			}
			if pause != "" {
				at, d, n, err := parseNodeEvent(pause)
				if err != nil {
					return usagef("--pause %q: %v", pause, err)
				}
				c.Pauses = append(c.Pauses, sim.Pause{At: at, For: d, Node: n})
			}
			if restart != "" {
				at, d, n, err := parseNodeEvent(restart)
				if err != nil {
					return usagef("--restart %q: %v", restart, err)
				}
				c.Restarts = append(c.Restarts, sim.Restart{At: at, Down: d, Node: n})
			}
			if err := c.Validate(); err != nil {
				return usageError{err}
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
			printSim(cmd, c, r, time.Since(start))
			return nil
		},
	}
	f := cmd.Flags()
	f.IntVar(&c.Nodes, "nodes", 3, "number of nodes (1 to 1000)")
	f.StringVar(&pat, "pattern", "uniform", "demand pattern: uniform, skew90, burst, rotate, ramp")
	f.StringVar(&arrivals, "arrivals", "uniform", "arrival process: uniform (evenly spaced) or poisson")
	f.StringVar(&lim, "limit", "1000/s", "the key's limit")
	f.Float64Var(&c.Multiplier, "multiplier", 2, "offered load over the limit, on average")
	f.DurationVar(&c.Duration, "duration", 60*time.Second, "simulated length of the load")
	f.DurationVar(&c.Warmup, "warmup", time.Second, "simulated time the nodes sync before the load starts")
	f.DurationVar(&c.Sync, "sync", 20*time.Millisecond, "sync interval")
	f.DurationVar(&c.RTT, "rtt", 2*time.Millisecond, "round-trip time of every link")
	f.DurationVar(&c.Jitter, "jitter", 0, "extra random delay per frame, uniform in [0, jitter)")
	f.Float64Var(&c.Loss, "loss", 0, "probability that a frame needs a retransmission (QUIC: delay, not loss)")
	f.DurationVar(&c.RTO, "rto", 0, "delay one loss adds, doubling for each further loss of the same frame (default 3×rtt+1ms; about 30ms for quic-go on one machine)")
	f.DurationVar(&c.FirstFrame, "first-frame", 0, "delay of a new stream's first sync frame after its hello")
	f.DurationVar(&c.Skew, "skew", 0, "clock offsets spread evenly over [-skew, +skew]")
	f.StringVar(&pol, "policy", "conservative", "partition policy: conservative or available")
	f.StringVar(&partition, "partition", "", "a partition START:END:GROUPS, e.g. 5s:12s:0 (node 0 isolated)")
	f.StringVar(&pause, "pause", "", "a pause AT:FOR:NODE, e.g. 10s:3s:0")
	f.StringVar(&restart, "restart", "", "a kill -9 and restart AT:DOWN:NODE, e.g. 10s:2s:1")
	f.Uint64Var(&c.Seed, "seed", 1, "random seed")
	f.IntVar(&c.Engine.FullMeshUpTo, "full-mesh-up-to", 0, "largest cluster that syncs as a full mesh; larger ones use the overlay (0: the default, 12; negative: always the overlay)")
	f.IntVar(&c.Engine.SyncHops, "sync-hops", 0, "hops of the sync overlay (0: the default, 3)")
	f.DurationVar(&c.Engine.Heartbeat, "heartbeat", 0, "how often a peer with nothing new still gets a frame (0: the default, 100ms)")
	f.BoolVar(&c.Encode, "encode", false, "send every frame through the wire codec and count bytes")
	f.BoolVar(&asJSON, "json", false, "print one JSON object")
	return cmd
}

func parseNodeEvent(s string) (at, d time.Duration, node int, err error) {
	parts := strings.Split(s, ":")
	if len(parts) != 3 {
		return 0, 0, 0, fmt.Errorf("want AT:DURATION:NODE, e.g. 10s:2s:0")
	}
	if at, err = time.ParseDuration(parts[0]); err != nil {
		return 0, 0, 0, fmt.Errorf("time %q: %v", parts[0], err)
	}
	if d, err = time.ParseDuration(parts[1]); err != nil {
		return 0, 0, 0, fmt.Errorf("duration %q: %v", parts[1], err)
	}
	if _, err = fmt.Sscan(parts[2], &node); err != nil {
		return 0, 0, 0, fmt.Errorf("node %q: not a number", parts[2])
	}
	return at, d, node, nil
}

func parsePartition(s string) (sim.Partition, error) {
	parts := strings.Split(s, ":")
	if len(parts) != 3 {
		return sim.Partition{}, fmt.Errorf("want START:END:GROUPS, e.g. 5s:12s:0+1/2")
	}
	var p sim.Partition
	var err error
	if p.Start, err = time.ParseDuration(parts[0]); err != nil {
		return p, fmt.Errorf("start %q: %v", parts[0], err)
	}
	if p.End, err = time.ParseDuration(parts[1]); err != nil {
		return p, fmt.Errorf("end %q: %v", parts[1], err)
	}
	for _, g := range strings.Split(parts[2], "/") {
		var group []int
		for _, n := range strings.Split(g, "+") {
			var i int
			if _, err := fmt.Sscan(n, &i); err != nil {
				return p, fmt.Errorf("node %q in groups %q: not a number", n, parts[2])
			}
			group = append(group, i)
		}
		p.Groups = append(p.Groups, group)
	}
	return p, nil
}

func printSim(cmd *cobra.Command, c sim.Config, r sim.Result, took time.Duration) {
	out := cmd.OutOrStdout()
	fmt.Fprintf(out, "%d nodes, %s load (%s arrivals) at %.1fx of %s for %v; sync %v, rtt %v, policy %s\n\n",
		c.Nodes, c.Pattern, c.Arrivals, c.Multiplier, c.Limit, c.Duration, c.Sync, c.RTT, c.Policy)
	_ = r.WriteTable(out)
	limitT := float64(c.Limit.Count) * float64(c.Duration) / float64(c.Limit.Window)
	fmt.Fprintf(out, "\nideal (a perfect limiter, same window, same requests): %d\n", r.Ideal)
	fmt.Fprintf(out, "error against the ideal:       %.3f %%\n", 100*r.Error)
	fmt.Fprintf(out, "error against limit x time:    %.3f %% (%.0f)\n", 100*(float64(r.Admitted)-limitT)/limitT, limitT)
	fmt.Fprintf(out, "largest window / limit:        %.3f\n", r.MaxWindowRatio)
	fmt.Fprintf(out, "frames %d, rejected %d; simulated in %v\n", r.Frames, r.Rejected, took.Round(time.Millisecond))
}

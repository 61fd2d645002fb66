package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/quotamesh/quotamesh/internal/demo"
)

// newDemoCmd binds `quotamesh demo`'s flags to demo.Options; the runner
// itself is internal/demo.
func newDemoCmd() *cobra.Command {
	o := demo.DefaultOptions()
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
			plan, err := o.Validate()
			if err != nil {
				return usageError{err}
			}
			return demo.Run(cmd.Context(), plan, cmd.OutOrStdout(), cmd.ErrOrStderr())
		},
	}
	f := cmd.Flags()
	f.DurationVar(&o.Duration, "duration", o.Duration, "how long the load runs (warm-up included)")
	f.DurationVar(&o.Warmup, "warmup", o.Warmup, "time at the start of the load left out of the error")
	f.StringVar(&o.Limit, "limit", o.Limit, "the key's limit, COUNT/WINDOW")
	f.StringVar(&o.Key, "key", o.Key, "the key the load asks for")
	f.IntVar(&o.Nodes, "nodes", o.Nodes, fmt.Sprintf("number of nodes (%d to %d)", demo.MinNodes, demo.MaxNodes))
	f.StringVar(&o.Pattern, "pattern", o.Pattern, "demand pattern: "+demo.PatternNames())
	f.Float64Var(&o.Multiplier, "multiplier", o.Multiplier, "offered load over the limit, on average")
	f.Uint64Var(&o.Seed, "seed", o.Seed, "random seed of the arrivals' phases")
	return cmd
}

package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/quotamesh/quotamesh"
	"github.com/quotamesh/quotamesh/client"
	"github.com/quotamesh/quotamesh/internal/statusview"
	"github.com/quotamesh/quotamesh/limits"
)

func newKeyCmd() *cobra.Command {
	var a adminFlags
	cmd := &cobra.Command{
		Use:   "key",
		Short: "Show how fast a key uses its limit, and reset keys",
		Long: `key inspects and resets single keys (or every key of a pattern).

  quotamesh key show user:42 --addr 10.0.0.1:7946
  quotamesh key show orders.create --watch
  quotamesh key reset user:42
  quotamesh key reset 'user:*'

show asks the --addr node: the rule governing the key, that node's admitted
and offered rate, every node's as that node's views see them (with their
age), the cluster's sum, and the room left in the current window. It needs a
client certificate of any role.

reset starts the key's limit afresh on every node, through Raft: from the
slot edge it names (a few hundred milliseconds ahead), no node counts the
admissions made before it. A node cut off at the time applies it when it
rejoins. It needs a client certificate with role admin.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	a.bind(cmd.PersistentFlags())
	cmd.AddCommand(newKeyShowCmd(&a), newKeyResetCmd(&a))
	return cmd
}

func newKeyShowCmd(a *adminFlags) *cobra.Command {
	var (
		watch    bool
		interval time.Duration
		count    int
	)
	cmd := &cobra.Command{
		Use:   "show KEY",
		Short: "Show a key's rule, rates per node and cluster-wide, and the room left in its window",
		Long: `show prints a key's usage as the --addr node sees it. Rates are per second
over the last full second; AGE is how old that node's view of each other
node is. With --watch it refreshes every --interval until interrupted.

--json prints the node's document (the same as GET /keys/KEY on the node's
admin listener; durations in ns), one per refresh.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			key := args[0]
			if watch && interval < 100*time.Millisecond {
				return usagef("--interval %v: use 100ms or more", interval)
			}
			if count < 0 {
				return usagef("--count %d: use 0 (until interrupted) or more", count)
			}
			c, err := a.dial(cmd.Context())
			if err != nil {
				return err
			}
			defer c.Close()
			out := cmd.OutOrStdout()
			clearScreen := watch && !a.json && isTerminal(out)
			for i := 0; ; i++ {
				st, err := a.keyStats(cmd.Context(), c, key)
				if err != nil {
					return err
				}
				if clearScreen {
					fmt.Fprint(out, "\x1b[H\x1b[2J")
				}
				if a.json {
					err = printJSON(out, st)
				} else {
					if watch && !clearScreen && i > 0 {
						fmt.Fprintln(out)
					}
					err = statusview.KeyStats(out, st)
				}
				if err != nil || !watch || count > 0 && i+1 >= count {
					return err
				}
				select {
				case <-cmd.Context().Done():
					return nil
				case <-time.After(interval):
				}
			}
		},
	}
	cmd.Flags().BoolVarP(&watch, "watch", "w", false, "refresh until interrupted")
	cmd.Flags().DurationVar(&interval, "interval", time.Second, "refresh interval with --watch")
	cmd.Flags().IntVar(&count, "count", 0, "with --watch, stop after this many refreshes (0: until interrupted)")
	return cmd
}

// keyStats asks for key's stats within the timeout.
func (a *adminFlags) keyStats(ctx context.Context, c *client.Client, key string) (quotamesh.KeyStats, error) {
	ctx, cancel := context.WithTimeout(ctx, a.timeout)
	defer cancel()
	st, err := c.CurrentQPS(ctx, key)
	if err != nil {
		if errors.Is(err, limits.ErrInvalidKey) {
			return st, usageError{err}
		}
		return st, a.explain(err, fmt.Sprintf("key show %q", key))
	}
	return st, nil
}

func newKeyResetCmd(a *adminFlags) *cobra.Command {
	var allKeys bool
	cmd := &cobra.Command{
		Use:   "reset KEY|PATTERN",
		Short: "Start the limit of a key, or of every key of a pattern, afresh on every node (admin)",
		Long: `reset starts a key's limit afresh across the cluster, through Raft from any
node: from the slot edge it prints (a few hundred milliseconds ahead), every
node counts only admissions made from then on, so a key whose window is
full admits again at once, and the windows after it hold the limit. A
pattern resets every key it matches ('user:*'). A node that is cut off or
down applies the reset when it comes back, forgetting exactly the same
admissions. It is not retried on failure: a reset whose answer was lost may
have taken effect.

A pattern made of '*' alone resets every key: it is refused unless
--all-keys says so.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			pattern := args[0]
			if err := parsePatternArg(pattern); err != nil {
				return err
			}
			if strings.Trim(pattern, "*") == "" && !allKeys {
				return usagef("pattern %q matches every key: pass --all-keys if you mean to reset them all", pattern)
			}
			return a.withClient(cmd, false, func(ctx context.Context, c *client.Client) error {
				res, err := c.Reset(ctx, pattern)
				if err != nil {
					return a.explain(err, fmt.Sprintf("key reset %q", pattern))
				}
				if a.json {
					return printJSON(cmd.OutOrStdout(), res)
				}
				fmt.Fprintf(cmd.OutOrStdout(), "%s reset: counted afresh from %s (Raft index %d)\n", pattern, res.At.Format("15:04:05.000 MST"), res.Index)
				if len(res.Pending) > 0 {
					fmt.Fprintf(cmd.OutOrStdout(), "not yet applied by %s (cut off or down?): each applies it when it catches up\n", strings.Join(res.Pending, ", "))
				}
				return nil
			})
		},
	}
	cmd.Flags().BoolVar(&allKeys, "all-keys", false, "confirm a pattern that matches every key ('*')")
	return cmd
}

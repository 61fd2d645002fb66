package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/quotamesh/quotamesh"
	"github.com/quotamesh/quotamesh/client"
	"github.com/quotamesh/quotamesh/limits"
)

func newLimitCmd() *cobra.Command {
	var a adminFlags
	cmd := &cobra.Command{
		Use:   "limit",
		Short: "Set, show and delete limits, through Raft from any node",
		Long: `limit changes the cluster's limit table from any node: a change goes
through Raft and is applied on every node, usually within 100 ms. A rule
binds a key or a pattern with '*' wildcards ('user:*': each user key gets
its own limit) to a rate COUNT/WINDOW: 1000/s, 50000/min, 10/100ms, 300/5s.

  quotamesh limit set orders.create 1000/s --addr 10.0.0.1:7946 --certs certs
  quotamesh limit set 'user:*' 10/s
  quotamesh limit get orders.create
  quotamesh limit list --json
  quotamesh limit delete 'user:*'

The node is reached over QUIC with the cluster CA (<certs>/ca.crt) and, if
present, the client certificate <certs>/clients/<client>.crt, which nodes
that require client certificates need for admin operations.`,
		// Runnable, so that an unknown subcommand is a usage error.
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	a.bind(cmd.PersistentFlags())
	cmd.AddCommand(newLimitSetCmd(&a), newLimitGetCmd(&a), newLimitListCmd(&a), newLimitDeleteCmd(&a))
	cmd.AddCommand(newLimitApplyCmd(&a), newLimitExportCmd(&a)) // limitapply.go
	return cmd
}

// withClient dials, runs fn with the client and a context bounded by the
// timeout, and closes the client. With retry, fn runs again while it fails
// with quotamesh.ErrUnavailable (a node still starting, a leader election,
// a connection lost) and the timeout allows: for operations whose repeat
// reaches the same state (reads, setting a rule to a rate, join, leave;
// delete says when it found the rule gone on a retry).
func (a *adminFlags) withClient(cmd *cobra.Command, retry bool, fn func(ctx context.Context, c *client.Client) error) error {
	c, err := a.dial(cmd.Context())
	if err != nil {
		return err
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(cmd.Context(), a.timeout)
	defer cancel()
	for {
		err := fn(ctx, c)
		if !retry || !errors.Is(err, quotamesh.ErrUnavailable) {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// ruleJSON is a rule as the limit commands print it.
type ruleJSON struct {
	Pattern   string      `json:"pattern"`
	Rate      limits.Rate `json:"rate"`
	PerSecond float64     `json:"per_second"`
	Index     uint64      `json:"index,omitempty"`
	// Key is the key asked for when the rule is a pattern it matches.
	Key string `json:"key,omitempty"`
}

func toJSON(r limits.Rule) ruleJSON {
	return ruleJSON{Pattern: r.Pattern, Rate: r.Rate, PerSecond: r.Rate.PerSecond()}
}

func parsePatternArg(s string) error {
	if _, err := limits.ParsePattern(s); err != nil {
		return usageError{err}
	}
	return nil
}

func newLimitSetCmd(a *adminFlags) *cobra.Command {
	var allKeys bool
	cmd := &cobra.Command{
		Use:   "set KEY|PATTERN RATE",
		Short: "Set the limit of a key or pattern (RATE: 1000/s, 50000/min, 10/100ms)",
		Long: `set binds a key or a pattern to a rate COUNT/WINDOW, through Raft.

RATE is COUNT/WINDOW: COUNT from 1 to 4294967295, WINDOW a multiple of 100ms
from 100ms to 60s written as a Go duration (100ms, 5s, 1m) or a unit word:
s, m, and their documented aliases sec, second, min, minute (printed back as
s and m). Units are lower case and a rate has no spaces.

A pattern made of '*' alone matches every key, including those of services
that never asked for a limit: it is refused unless --all-keys says so.`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := parsePatternArg(args[0]); err != nil {
				return err
			}
			if strings.Trim(args[0], "*") == "" && !allKeys {
				return usagef("pattern %q matches every key (each key gets its own limit, also keys of services that never asked for one): pass --all-keys if that is what you want", args[0])
			}
			rate, err := limits.ParseRate(args[1])
			if err != nil {
				return usageError{err}
			}
			rule := limits.Rule{Pattern: args[0], Rate: rate}
			if err := rule.Validate(); err != nil {
				return usageError{err}
			}
			return a.withClient(cmd, true, func(ctx context.Context, c *client.Client) error {
				idx, err := c.SetLimit(ctx, rule)
				if err != nil {
					return a.explain(err, "limit set "+rule.String())
				}
				if a.json {
					r := toJSON(rule)
					r.Index = idx
					return printJSON(cmd.OutOrStdout(), r)
				}
				fmt.Fprintf(cmd.OutOrStdout(), "%s set (Raft index %d)\n", rule, idx)
				return nil
			})
		},
	}
	cmd.Flags().BoolVar(&allKeys, "all-keys", false, "confirm a pattern that matches every key ('*')")
	// "limit set k -5/s": pflag reads -5/s as shorthand flags; say what is
	// wrong with the rate instead.
	cmd.SetFlagErrorFunc(func(_ *cobra.Command, err error) error {
		var ne *pflag.NotExistError
		if errors.As(err, &ne) && ne.GetSpecifiedShortnames() != "" && strings.ContainsAny(ne.GetSpecifiedShortnames()[:1], "0123456789") {
			arg := "-" + ne.GetSpecifiedShortnames()
			if _, rerr := limits.ParseRate(arg); rerr != nil {
				return usageError{rerr}
			}
		}
		return usageError{err}
	})
	return cmd
}

func newLimitGetCmd(a *adminFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "get KEY|PATTERN",
		Short: "Show the rule for a pattern, or the rule a key matches",
		Long: `get shows the rule with exactly this pattern; for a key that has no rule of
its own it shows the rule whose pattern matches it (the most specific), as
every node would apply it. Keys no rule matches are answered by each node's
unknown_keys setting (allow by default).`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			key := args[0]
			if err := parsePatternArg(key); err != nil {
				return err
			}
			return a.withClient(cmd, true, func(ctx context.Context, c *client.Client) error {
				r, err := c.GetLimit(ctx, key)
				matched := ""
				if errors.Is(err, limits.ErrNoRule) {
					// No rule of its own: the rule it matches, if any.
					rules, lerr := c.ListLimits(ctx)
					if lerr != nil {
						return a.explain(lerr, "limit list")
					}
					t, terr := limits.NewTable(rules...)
					if terr != nil {
						return fmt.Errorf("the node's limit table: %w", terr)
					}
					if m, ok := t.Lookup(key); ok && limits.ValidateKey(key) == nil {
						r, err, matched = m, nil, key
					}
				}
				if err != nil {
					return a.explain(err, fmt.Sprintf("limit get %q", key))
				}
				if a.json {
					j := toJSON(r)
					j.Key = matched
					return printJSON(cmd.OutOrStdout(), j)
				}
				if matched != "" {
					fmt.Fprintf(cmd.OutOrStdout(), "%s (key %s matches this rule)\n", r, matched)
					return nil
				}
				fmt.Fprintln(cmd.OutOrStdout(), r)
				return nil
			})
		},
	}
}

func newLimitListCmd(a *adminFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "list",
		Short: "List every rule",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return a.withClient(cmd, true, func(ctx context.Context, c *client.Client) error {
				rules, err := c.ListLimits(ctx)
				if err != nil {
					return a.explain(err, "limit list")
				}
				if a.json {
					out := make([]ruleJSON, len(rules))
					for i, r := range rules {
						out[i] = toJSON(r)
					}
					return printJSON(cmd.OutOrStdout(), out)
				}
				if len(rules) == 0 {
					fmt.Fprintln(cmd.OutOrStdout(), "no limits set")
					return nil
				}
				tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "PATTERN\tRATE\tPER SECOND")
				for _, r := range rules {
					fmt.Fprintf(tw, "%s\t%s\t%.6g\n", r.Pattern, r.Rate, r.Rate.PerSecond())
				}
				return tw.Flush()
			})
		},
	}
}

func newLimitDeleteCmd(a *adminFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "delete KEY|PATTERN",
		Short: "Delete the rule with exactly this pattern",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := parsePatternArg(args[0]); err != nil {
				return err
			}
			// Retried like the others; a rule found gone on a retry may
			// have been deleted by the attempt whose answer was lost, and
			// either way the goal holds: it is said so.
			attempts := 0
			return a.withClient(cmd, true, func(ctx context.Context, c *client.Client) error {
				attempts++
				idx, err := c.DeleteLimit(ctx, args[0])
				if attempts > 1 && errors.Is(err, limits.ErrNoRule) {
					fmt.Fprintf(cmd.OutOrStdout(), "%s is gone (found so on a retry: an earlier attempt, whose answer was lost, may have deleted it)\n", args[0])
					return nil
				}
				if err != nil {
					return a.explain(err, fmt.Sprintf("limit delete %q", args[0]))
				}
				if a.json {
					return printJSON(cmd.OutOrStdout(), map[string]any{"pattern": args[0], "deleted": true, "index": idx})
				}
				fmt.Fprintf(cmd.OutOrStdout(), "%s deleted (Raft index %d)\n", args[0], idx)
				return nil
			})
		},
	}
}

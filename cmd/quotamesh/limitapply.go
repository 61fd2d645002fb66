package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/quotamesh/quotamesh/client"
	"github.com/quotamesh/quotamesh/internal/limitfile"
	"github.com/quotamesh/quotamesh/limits"
)

func newLimitApplyCmd(a *adminFlags) *cobra.Command {
	var (
		file          string
		prune, dryRun bool
	)
	cmd := &cobra.Command{
		Use:   "apply -f FILE",
		Short: "Make the cluster's limits what a file says (limits as code)",
		Long: `apply reads a limits file (the format 'limit export' writes), shows how it
differs from the cluster's table, and applies the difference through Raft:
every added or changed rule is set, and with --prune every rule the file
does not list is deleted. --dry-run shows the difference and changes
nothing.

  limits:
    - pattern: orders.create
      rate: 1000/s
    - pattern: "user:*"
      rate: 10/s
      shadow: true     # observe only: decides and counts, never denies

The whole file is checked before anything is applied: an error names the
file, the line and the key, and nothing changes. Each rule is one Raft
change: an apply cut short (a lost quorum, --timeout) has applied a prefix
of the changes, and running it again finishes it.

Output: '+' added, '~' changed (old -> new), '-' deleted.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if file == "" {
				return usagef("-f FILE is required ('-' reads standard input)")
			}
			want, err := limitfile.Read(file, cmd.InOrStdin())
			if err != nil {
				return usageError{err}
			}
			out := cmd.OutOrStdout()
			return a.withClient(cmd, true, func(ctx context.Context, c *client.Client) error {
				live, err := listLimits(ctx, a, c)
				if err != nil {
					return err
				}
				d := limitfile.Compare(live, want)
				d.Print(out, prune)
				if d.Empty(prune) {
					fmt.Fprintf(out, "no changes: the cluster's %d rules match %s\n", len(live), file)
					return nil
				}
				if dryRun {
					fmt.Fprintf(out, "dry run: %d to add, %d to change, %d to delete; nothing applied\n", len(d.Add), len(d.Change), deletions(d, prune))
					return nil
				}
				return applyDiff(ctx, out, a, c, d, prune)
			})
		},
	}
	cmd.Flags().StringVarP(&file, "file", "f", "", "limits file ('-': standard input)")
	cmd.Flags().BoolVar(&prune, "prune", false, "delete the rules the file does not list")
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "show the difference, change nothing")
	return cmd
}

// listLimits reads the cluster's table (linearizable).
func listLimits(ctx context.Context, a *adminFlags, c *client.Client) ([]limits.Rule, error) {
	rules, err := c.ListLimits(ctx)
	if err != nil {
		return nil, a.explain(err, "limit list")
	}
	return rules, nil
}

func deletions(d limitfile.Diff, prune bool) int {
	if !prune {
		return 0
	}
	return len(d.Remove)
}

// applyDiff sets the added and changed rules, then deletes the removed
// ones if prune. Setting a rule to a rate is idempotent and a delete that
// finds the rule gone has reached its goal, so withClient may retry the
// whole apply.
func applyDiff(ctx context.Context, out io.Writer, a *adminFlags, c *client.Client, d limitfile.Diff, prune bool) error {
	var last uint64
	set := append(append([]limits.Rule(nil), d.Add...), changed(d)...)
	for _, r := range set {
		idx, err := c.SetLimit(ctx, r)
		if err != nil {
			return a.explain(err, "limit set "+r.String())
		}
		last = idx
	}
	deleted := 0
	if prune {
		for _, r := range d.Remove {
			idx, err := c.DeleteLimit(ctx, r.Pattern)
			if err != nil && !errors.Is(err, limits.ErrNoRule) {
				return a.explain(err, fmt.Sprintf("limit delete %q", r.Pattern))
			}
			if err == nil {
				last = idx
			}
			deleted++
		}
	}
	fmt.Fprintf(out, "applied: %d added, %d changed, %d deleted (Raft index %d)\n", len(d.Add), len(d.Change), deleted, last)
	return nil
}

func changed(d limitfile.Diff) []limits.Rule {
	out := make([]limits.Rule, len(d.Change))
	for i, c := range d.Change {
		out[i] = c[1]
	}
	return out
}

func newLimitExportCmd(a *adminFlags) *cobra.Command {
	var file string
	cmd := &cobra.Command{
		Use:   "export",
		Short: "Write the cluster's limits as a file 'limit apply' reads",
		Long: `export writes every rule of the cluster's table (a linearizable read
through Raft) in the format of 'limit apply', sorted by pattern: to stdout,
or with -o to a file (replaced whole).

  quotamesh limit export > limits.yaml
  quotamesh limit apply -f limits.yaml --dry-run   # no changes`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return a.withClient(cmd, true, func(ctx context.Context, c *client.Client) error {
				rules, err := listLimits(ctx, a, c)
				if err != nil {
					return err
				}
				header := fmt.Sprintf("QuotaMesh limits, exported %s from %v\napply with: quotamesh limit apply -f FILE [--prune] [--dry-run]",
					time.Now().UTC().Format(time.RFC3339), a.addrs)
				if file == "" {
					return limitfile.Write(cmd.OutOrStdout(), rules, header)
				}
				tmp := file + ".tmp"
				f, err := os.Create(tmp)
				if err != nil {
					return err
				}
				if err := limitfile.Write(f, rules, header); err != nil {
					f.Close()
					return err
				}
				if err := f.Close(); err != nil {
					return err
				}
				if err := os.Rename(tmp, file); err != nil {
					return err
				}
				fmt.Fprintf(cmd.ErrOrStderr(), "%d rules written to %s\n", len(rules), file)
				return nil
			})
		},
	}
	cmd.Flags().StringVarP(&file, "output", "o", "", "file to write (default: stdout)")
	return cmd
}

package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/quotamesh/quotamesh/internal/serveconfig"
	"github.com/quotamesh/quotamesh/internal/tcpecho"
)

// usageError marks errors in how a command was called (exit code 2).
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

func usagef(format string, args ...any) error { return usageError{fmt.Errorf(format, args...)} }

func isUsage(err error) bool {
	var u usageError
	return errors.As(err, &u) || errors.Is(err, tcpecho.ErrAddr) || strings.HasPrefix(err.Error(), "unknown command") ||
		strings.HasPrefix(err.Error(), "unknown flag") || strings.HasPrefix(err.Error(), "unknown shorthand") ||
		strings.Contains(err.Error(), "invalid argument") || strings.Contains(err.Error(), "flag needs an argument") ||
		strings.HasPrefix(err.Error(), "accepts ") || strings.HasPrefix(err.Error(), "requires ")
}

func newRoot(stdout, stderr io.Writer) *cobra.Command {
	root := &cobra.Command{
		Use:   "quotamesh",
		Short: "QuotaMesh: a distributed rate limiter with no central store",
		Long: `QuotaMesh runs a cluster of nodes that each decide alone, share their
counts as CRDT deltas over QUIC with mutual TLS, and agree on limits with Raft.

Every flag can also be set with an environment variable: QUOTAMESH_ followed
by the flag name in upper case with dashes as underscores (--sync-interval:
QUOTAMESH_SYNC_INTERVAL). A flag on the command line wins over the
environment, which wins over a config file.`,
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			return applyEnv(cmd.Flags())
		},
	}
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	// Every command, in one place; `quotamesh help` lists them sorted.
	root.AddCommand(
		newServeCmd(),
		newLimitCmd(),
		newKeyCmd(),
		newStatusCmd(),
		newJoinCmd(),
		newLeaveCmd(),
		newCertsCmd(),
		newDemoCmd(),
		newSimCmd(),
		newBenchCmd(),
		newBenchEchoCmd(),
		newVersionCmd(),
	)
	return root
}

// applyEnv sets every flag not given on the command line from its
// QUOTAMESH_ environment variable, if set; the error names the variable.
func applyEnv(flags *pflag.FlagSet) error {
	var err error
	flags.VisitAll(func(f *pflag.Flag) {
		if err != nil || f.Changed {
			return
		}
		name := serveconfig.EnvPrefix + strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_"))
		if v, ok := os.LookupEnv(name); ok {
			if e := flags.Set(f.Name, v); e != nil {
				err = usagef("environment variable %s=%q: %v", name, v, e)
			}
		}
	})
	return err
}

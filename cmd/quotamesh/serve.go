package main

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/rs/zerolog"
	"github.com/spf13/cobra"

	"github.com/quotamesh/quotamesh/node"
)

// shutdownTimeout bounds a graceful shutdown on SIGTERM.
const shutdownTimeout = 15 * time.Second

func newServeCmd() *cobra.Command {
	flagged := defaultServeOptions()
	var (
		configPath string
		printCfg   bool
		withFault  func(context.Context) context.Context // the fault build's flags (fault.go)
	)
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run a QuotaMesh node",
		Long: `serve runs one node until SIGINT or SIGTERM, then shuts down gracefully:
it stops taking new clients, answers what it has read, sends a last delta to
every peer, hands over Raft leadership, and leaves the cluster only with
--leave-on-shutdown.

Options come from, in increasing precedence: defaults, the YAML file given
with --config (keys are the flag names with underscores: sync_interval), the
environment (QUOTAMESH_SYNC_INTERVAL), and flags. An error names the file,
line and key, or the flag or variable, with the bad value.

SIGHUP re-reads the file and applies what may change at run time (log level,
admin clients, leave on shutdown); anything else that changed is reported and
needs a restart, which the cluster survives like any other.

A first cluster of three, on three hosts:

  quotamesh certs init --dir certs --nodes n1,n2,n3 --hosts 10.0.0.1,10.0.0.2,10.0.0.3
  quotamesh serve --id n1 --listen 10.0.0.1:7946 --certs certs --data-dir /var/lib/quotamesh \
      --bootstrap n1=10.0.0.1:7946,n2=10.0.0.2:7946,n3=10.0.0.3:7946   # the same on n2, n3

A node joining later: --join 10.0.0.1:7946 instead of --bootstrap.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if printCfg {
				return writeConfigReference(cmd.OutOrStdout())
			}
			cfg, logFormat, err := resolveServe(configPath, &flagged, cmd)
			if err != nil {
				return usageError{err}
			}
			cfg.Logger = newLogger(cmd.ErrOrStderr(), logFormat)
			return serve(withFault(cmd.Context()), cfg, cmd, func() (node.Config, error) {
				c, _, err := resolveServe(configPath, &flagged, cmd)
				return c, err
			})
		},
	}
	cmd.Flags().StringVar(&configPath, "config", "", "YAML configuration file")
	cmd.Flags().BoolVar(&printCfg, "print-config", false, "print a configuration file with every key at its default, and exit")
	flagged.bindFlags(cmd.Flags())
	withFault = bindFaultFlags(cmd.Flags())
	return cmd
}

// resolveServe merges defaults, the file and the set flags into a node
// configuration.
func resolveServe(path string, flagged *serveOptions, cmd *cobra.Command) (node.Config, string, error) {
	opts := defaultServeOptions()
	var cf *configFile
	if path != "" {
		var err error
		if cf, err = loadFile(path, &opts); err != nil {
			return node.Config{}, "", err
		}
	}
	opts.overlay(flagged, cmd.Flags())
	cfg, err := opts.toNode(cf, cmd.Flags())
	return cfg, opts.LogFormat, err
}

func newLogger(w io.Writer, format string) zerolog.Logger {
	if format == "console" {
		w = zerolog.ConsoleWriter{Out: w, TimeFormat: "15:04:05.000"}
	}
	return zerolog.New(w).With().Timestamp().Logger()
}

// serve runs a node until ctx ends, reloading on SIGHUP.
func serve(ctx context.Context, cfg node.Config, cmd *cobra.Command, reread func() (node.Config, error)) error {
	n, err := node.Start(ctx, cfg)
	if err != nil {
		return err
	}
	fmt.Fprintf(cmd.OutOrStdout(), "quotamesh node %s serving on %s (advertised %s), admin on %s\n", n.ID(), n.Addr(), n.Advertise(), n.AdminAddr())
	printGateways(cmd.OutOrStdout(), n)
	hup := reloads(ctx)
	for {
		select {
		case <-ctx.Done():
			sctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
			defer cancel()
			if err := n.Shutdown(sctx); err != nil {
				return fmt.Errorf("shutdown: %w", err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "quotamesh node %s stopped\n", n.ID())
			return nil
		case <-hup:
			next, err := reread()
			if err == nil {
				next.Logger = cfg.Logger
				err = n.Reload(next)
			}
			if err != nil {
				fmt.Fprintf(cmd.ErrOrStderr(), "quotamesh: reload: %v\n", err)
				continue
			}
			fmt.Fprintln(cmd.OutOrStdout(), "quotamesh: configuration reloaded")
		}
	}
}

package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/quotamesh/quotamesh/internal/serveconfig"
	"github.com/quotamesh/quotamesh/node"
)

// shutdownTimeout bounds a graceful shutdown on SIGTERM.
const shutdownTimeout = 15 * time.Second

func newServeCmd() *cobra.Command {
	flagged := serveconfig.Defaults()
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

SIGHUP re-reads the file and the certificates and applies everything that
may change at run time (log level, leave on shutdown, the client policy:
anonymous clients, max client connections, the handshake rate; the node's
certificate and CA); each other key that changed is named in the log as
needing a restart, which the cluster survives like any other.

Clients must present a certificate signed by the cluster CA; its role
(admin or decide, chosen at 'quotamesh certs init' or 'certs issue') says
what they may do. --listen defaults to 127.0.0.1:7946: give the address
peers and clients reach the node at to serve them from other hosts.

A first cluster of three, on three hosts:

  quotamesh certs init --dir certs --nodes n1,n2,n3 --hosts 10.0.0.1,10.0.0.2,10.0.0.3
  quotamesh serve --id n1 --listen 10.0.0.1:7946 --certs certs --data-dir /var/lib/quotamesh \
      --bootstrap n1=10.0.0.1:7946,n2=10.0.0.2:7946,n3=10.0.0.3:7946   # the same on n2, n3

A node joining later: --join 10.0.0.1:7946 instead of --bootstrap.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if printCfg {
				return serveconfig.WriteReference(cmd.OutOrStdout())
			}
			cfg, logFormat, err := serveconfig.Resolve(configPath, &flagged, cmd.Flags())
			if err != nil {
				return usageError{err}
			}
			cfg.Logger = newLogger(cmd.ErrOrStderr(), logFormat)
			return serve(withFault(cmd.Context()), cfg, cmd, func() (node.Config, error) {
				c, _, err := serveconfig.Resolve(configPath, &flagged, cmd.Flags())
				return c, err
			})
		},
	}
	cmd.Flags().StringVar(&configPath, "config", "", "YAML configuration file")
	cmd.Flags().BoolVar(&printCfg, "print-config", false, "print a configuration file with every key at its default, and exit")
	flagged.BindFlags(cmd.Flags())
	withFault = bindFaultFlags(cmd.Flags())
	return cmd
}

// serve runs a node until ctx ends, reloading on SIGHUP. A signal during
// start-up (waiting for the data directory, opening Raft) stops it there.
func serve(ctx context.Context, cfg node.Config, cmd *cobra.Command, reread func() (node.Config, error)) error {
	log := cfg.Logger.With().Str("node", cfg.ID).Str("component", "serve").Logger()
	n, err := node.Start(ctx, cfg)
	if err != nil {
		if ctx.Err() != nil && errors.Is(err, context.Canceled) {
			log.Info().Msg("stopped during start-up")
			return nil
		}
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
			// The node logs what it applied; what it could not apply, or a
			// file that does not read, is logged here (nothing is applied
			// from a file with an error).
			next, err := reread()
			if err != nil {
				log.Error().Err(err).Msg("SIGHUP: configuration not reloaded: the file or flags have an error")
				continue
			}
			next.Logger = cfg.Logger
			if err := n.Reload(next); err != nil {
				log.Warn().Err(err).Msg("SIGHUP: configuration reloaded in part")
			}
		}
	}
}

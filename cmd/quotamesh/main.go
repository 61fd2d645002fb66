// Command quotamesh runs and operates QuotaMesh, a distributed rate limiter
// that needs no central store: `quotamesh serve` runs a node, `limit`
// changes limits through Raft from any node, `status` shows the cluster,
// `certs init` makes a development CA and certificates, `demo` starts a
// local 3-node cluster under load, `sim` simulates a cluster on simulated
// time, and `bench` measures accuracy and latency on real processes.
//
// main only wires signals and the exit code; every command is a function of
// its arguments and streams (run), so tests call it directly.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

// Signals are handled here only: SIGINT and SIGTERM cancel the context
// (serve then shuts down gracefully, demo cleans up), SIGHUP asks serve to
// reload its configuration.
func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	code := run(withReload(ctx, hup), os.Args[1:], os.Stdout, os.Stderr)
	signal.Stop(hup)
	stop()
	os.Exit(code)
}

type reloadKey struct{}

// withReload passes the SIGHUP channel to the commands.
func withReload(ctx context.Context, ch <-chan os.Signal) context.Context {
	return context.WithValue(ctx, reloadKey{}, ch)
}

// reloads returns the channel SIGHUP arrives on (nil in tests: never).
func reloads(ctx context.Context) <-chan os.Signal {
	ch, _ := ctx.Value(reloadKey{}).(<-chan os.Signal)
	return ch
}

// run executes the command line args and returns the process exit code:
// 0 on success, 1 on failure, 2 on bad usage.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	root := newRoot(stdout, stderr)
	root.SetArgs(args)
	if err := root.ExecuteContext(ctx); err != nil {
		fmt.Fprintf(stderr, "quotamesh: %v\n", err)
		if isUsage(err) {
			return 2
		}
		return 1
	}
	return 0
}

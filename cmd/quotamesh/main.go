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

func main() { os.Exit(runMain(os.Args[1:])) }

// runMain is main but for the exit: the tests' child processes run it as
// the binary would. Signals are handled here only: SIGINT and SIGTERM
// cancel the context (serve then shuts down gracefully, or stops where its
// start-up is; demo cleans up), SIGHUP asks serve to reload its
// configuration.
func runMain(args []string) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	return run(withReload(ctx, hup), args, os.Stdout, os.Stderr)
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

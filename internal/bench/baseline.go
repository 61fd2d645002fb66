package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"path/filepath"

	"github.com/quotamesh/quotamesh"
	"github.com/quotamesh/quotamesh/internal/accuracy"
	"github.com/quotamesh/quotamesh/internal/loadgen"
	"github.com/quotamesh/quotamesh/internal/localcluster"
	"github.com/quotamesh/quotamesh/internal/tcpecho"
)

// errNoBaseline is returned when the baseline cannot run.
var errNoBaseline = errors.New("TCP baseline")

// tcpBaseline runs spec against n TCP echo server processes (the hidden
// `bench-echo` command of r.Binary), one pipelined connection each, and
// returns its report (mode "tcp").
func tcpBaseline(ctx context.Context, n int, spec loadgen.Spec, r Plan, stderr io.Writer) (loadgen.Report, error) {
	g, addrs, err := startEchoServers(r.Binary, n)
	if err != nil {
		return loadgen.Report{}, fmt.Errorf("%w: %w", errNoBaseline, err)
	}
	defer stop(g, stderr)
	dctx, cancel := context.WithTimeout(ctx, r.ReadyTimeout)
	defer cancel()
	var lims []quotamesh.Limiter
	var names []string
	defer func() {
		for _, l := range lims {
			l.Close()
		}
	}()
	for i, p := range g.Procs {
		c, err := tcpecho.Dial(dctx, addrs[i])
		if err != nil {
			return loadgen.Report{}, fmt.Errorf("%w: %w", errNoBaseline, orDied(g, err))
		}
		lims = append(lims, c)
		names = append(names, p.Name())
	}
	rep := measure(ctx, lims, names, spec, g)
	if err := orDied(g, ctx.Err()); err != nil {
		return rep, fmt.Errorf("%w: %w", errNoBaseline, err)
	}
	// Every answer is "allowed": the accuracy fields would mean nothing.
	rep.Report = accuracy.Report{Pattern: rep.Pattern, Nodes: rep.Nodes, Duration: rep.Duration, Offered: rep.Offered}
	rep.PerSecond, rep.IdealMaxWindowRatio, rep.Mode = nil, 0, "tcp"
	return rep, nil
}

// startEchoServers starts n `bench-echo` processes of binary on
// 127.0.0.(FirstIP+i), with their logs in a temporary directory, and
// returns them with their addresses. On error what started is stopped.
func startEchoServers(binary string, n int) (_ *localcluster.Group, _ []string, err error) {
	g, err := localcluster.NewGroup("", "quotamesh-bench-tcp-", false)
	if err != nil {
		return nil, nil, fmt.Errorf("bench: %w", err)
	}
	defer func() {
		if err != nil {
			_ = g.Kill()
		}
	}()
	var addrs []string
	for i, ip := range localcluster.Loopback(FirstIP, n) {
		addr, err := localcluster.FreePort("tcp", ip)
		if err != nil {
			return nil, nil, fmt.Errorf("bench: %w", err)
		}
		name := fmt.Sprintf("tcp%d", i+1)
		if _, err := g.Start(localcluster.ProcSpec{Name: name, Addr: addr, Argv: []string{binary, "bench-echo", "--listen", addr},
			LogPath: filepath.Join(g.Dir, name+".log"), KillWithParent: true}); err != nil {
			return nil, nil, fmt.Errorf("bench: %w", err)
		}
		addrs = append(addrs, addr)
	}
	return g, addrs, nil
}

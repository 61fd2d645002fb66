// Package bench is `quotamesh bench`: it starts a local cluster of real
// node processes (or reaches a running one), sets a limit through Raft,
// offers an open-loop load through one SDK client per node (loadgen), and
// reports how close the cluster came to one perfect global limiter and how
// long every decision took, beside what the same load costs over plain TCP
// (tcpecho) when asked.
//
// What it promises: Run stops and removes everything it started, on
// success, on error and when ctx ends; a node that dies during the run
// ends it with an error naming the node and the tail of its log, because
// the figures would mean nothing.
package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"github.com/quotamesh/quotamesh"
	"github.com/quotamesh/quotamesh/client"
	"github.com/quotamesh/quotamesh/internal/cputime"
	"github.com/quotamesh/quotamesh/internal/loadgen"
	"github.com/quotamesh/quotamesh/internal/localcluster"
)

// stopTimeout bounds a child process's graceful shutdown before it is
// killed.
const stopTimeout = 10 * time.Second

// Run runs r: starts or reaches the cluster, sets the limit, offers the
// load, prints the report to stdout, and stops what it started whatever
// happens (problems stopping go to stderr).
func Run(ctx context.Context, r Plan, stdout, stderr io.Writer) (err error) {
	addrs, certDir := r.Addrs, r.Certs
	var lc *localcluster.Cluster
	if r.LocalCluster > 0 {
		if !r.JSON {
			fmt.Fprintf(stdout, "starting %d nodes on 127.0.0.%d and up\n", r.LocalCluster, FirstIP)
		}
		if lc, err = startNodes(r); err != nil {
			return err
		}
		defer stop(lc.Group, stderr)
		rctx, cancel := context.WithTimeout(ctx, r.ReadyTimeout)
		err = lc.WaitReady(rctx)
		cancel()
		if err != nil {
			return fmt.Errorf("bench: %w", err)
		}
		addrs, certDir = lc.Addrs(), lc.CertDir
	}
	var nodes *localcluster.Group
	if lc != nil {
		nodes = lc.Group
	}
	tlsCert, pool, err := loadClientCerts(certDir, r.ClientName)
	if err != nil {
		return err
	}
	// The load must not outlive a dead node: stop it when one dies.
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	stopWatch := watchNodes(nodes, cancel)
	defer stopWatch()

	clients, names, err := dialNodes(ctx, addrs, r, tlsCert, pool)
	defer func() {
		for _, c := range clients {
			c.Close()
		}
	}()
	if err != nil {
		return orDied(nodes, err)
	}
	if err := setLimit(ctx, clients, r); err != nil {
		return orDied(nodes, err)
	}
	if r.Warmup > 0 {
		select {
		case <-time.After(r.Warmup):
		case <-ctx.Done():
			return orDied(nodes, context.Cause(ctx))
		}
	}
	if r.Prime {
		if err := prime(ctx, clients, names, r); err != nil {
			return orDied(nodes, err)
		}
	}
	limiters := make([]quotamesh.Limiter, len(clients))
	for i, c := range clients {
		limiters[i] = c
	}
	var reports []loadgen.Report
	rate := r.Workload.Rate
	for step := 0; ; step++ {
		spec := loadgen.Spec{Workload: r.loadAt(rate), Name: r.Workload.Pattern, Workers: r.Workers,
			MaxLag: loadgen.DefaultMaxLag, Tick: r.Tick, Batch: !r.Strict && r.work.Keys == 1}
		rep := measure(ctx, limiters, names, spec, nodes)
		if err := ctx.Err(); err != nil {
			return orDied(nodes, fmt.Errorf("bench: load stopped after %s: %w", rep.Elapsed, context.Cause(ctx)))
		}
		rep.Rate, rep.Mode = rate, "lease"
		if r.Strict {
			rep.Mode = "strict"
		}
		if rep.Offered == 0 {
			return fmt.Errorf("bench: no request was offered (%s, duration %v)", spec.Workload, r.Duration)
		}
		if r.TCPBaseline {
			base, err := tcpBaseline(ctx, len(limiters), spec, r, stderr)
			if err != nil {
				return orDied(nodes, err)
			}
			base.Rate = rate
			rep.TCPBaseline = &base
		}
		reports = append(reports, rep)
		if !r.JSON {
			printBench(stdout, r, rep)
			if rep.TCPBaseline != nil {
				fmt.Fprintf(stdout, "TCP baseline, same load and workers, in the same run:\n")
				printBench(stdout, r, *rep.TCPBaseline)
			}
		}
		if !r.FindMax || step+1 >= r.FindMaxSteps ||
			rep.P99us > float64(r.P99Target.Microseconds()) || rep.Errors > 0 || rep.Unsent > 0 {
			break
		}
		rate *= r.FindMaxStep
	}
	if err := orDied(nodes, nil); err != nil {
		return err // a node died during the run: its figures mean nothing
	}
	if r.JSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if r.FindMax {
			return enc.Encode(reports)
		}
		return enc.Encode(reports[0])
	}
	if r.FindMax {
		printFindMax(stdout, r, reports)
	}
	return nil
}

// startNodes starts r.LocalCluster node processes of r.Binary on
// 127.0.0.(FirstIP+i), with certificates, data and (without --log-dir)
// logs in a temporary directory.
func startNodes(r Plan) (*localcluster.Cluster, error) {
	if r.LogDir != "" {
		if err := os.MkdirAll(r.LogDir, 0o755); err != nil {
			return nil, fmt.Errorf("bench: --log-dir: %w", err)
		}
	}
	lc, err := localcluster.Start(localcluster.Config{
		Binary: r.Binary, IPs: localcluster.Loopback(FirstIP, r.LocalCluster), TempPrefix: "quotamesh-bench-",
		LogDir: r.LogDir, ClusterID: "bench", Flags: r.ServeFlags, KillWithParent: true,
	})
	if err != nil {
		return nil, fmt.Errorf("bench: %w", err)
	}
	return lc, nil
}

// stop stops g's processes and removes its directory, reporting problems
// to w without failing: the run's result does not depend on them.
func stop(g *localcluster.Group, w io.Writer) {
	if err := g.Stop(stopTimeout); err != nil {
		fmt.Fprintf(w, "quotamesh: bench: %v\n", err)
	}
}

// measure runs one load and fills in the CPU time used during it by this
// process and by nodes' processes (per 100k decisions answered).
func measure(ctx context.Context, limiters []quotamesh.Limiter, names []string, spec loadgen.Spec, nodes *localcluster.Group) loadgen.Report {
	var pids []int
	if nodes != nil {
		pids = nodes.Pids()
	}
	st0 := sdkStats(limiters)
	cpu0 := cputime.Read(pids)
	rep := loadgen.Run(ctx, limiters, names, spec)
	d := cputime.Read(pids).Since(cpu0)
	st := sdkStats(limiters)
	if rep.Answered > 0 {
		per := float64(rep.Answered) / 100_000
		rep.ClientCPUPer100k = d.Self.Seconds() / per
		rep.NodesCPUPer100k = d.Others.Seconds() / per
		rep.SDK = &loadgen.SDKTraffic{
			RequestsPerDecision:      float64(st.Requests-st0.Requests) / float64(rep.Answered),
			LeaseRequestsPerDecision: float64(st.LeasesAsked-st0.LeasesAsked) / float64(rep.Answered),
			NodeDecisionsPerDecision: float64(st.NodeDecisions-st0.NodeDecisions) / float64(rep.Answered),
			KeysWithState:            st.Keys,
			Overloads:                st.Overloads - st0.Overloads,
			NodeOverloads:            st.NodeOverloads - st0.NodeOverloads,
		}
	}
	return rep
}

// sdkStats sums the counters of the limiters that are SDK clients.
func sdkStats(limiters []quotamesh.Limiter) client.Stats {
	var sum client.Stats
	for _, l := range limiters {
		if c, ok := l.(*client.Client); ok {
			st := c.Stats()
			sum.Requests += st.Requests
			sum.LeasesAsked += st.LeasesAsked
			sum.NodeDecisions += st.NodeDecisions
			sum.Keys += st.Keys
			sum.Overloads += st.Overloads
			sum.NodeOverloads += st.NodeOverloads
		}
	}
	return sum
}

// orDied returns the death of a process of g, which explains err better,
// or err.
func orDied(g *localcluster.Group, err error) error {
	if d := g.Died(); d != nil {
		return fmt.Errorf("bench: %w", d)
	}
	return err
}

// watchNodes cancels the run with the death of a process of g as soon as
// one exits, until the returned function is called (which waits for the
// watchers).
func watchNodes(g *localcluster.Group, cancel context.CancelCauseFunc) (stop func()) {
	if g == nil {
		return func() {}
	}
	done := make(chan struct{})
	var wg sync.WaitGroup
	for _, p := range g.Procs {
		exited := p.Exited()
		wg.Go(func() {
			select {
			case <-exited:
				cancel(orDied(g, nil))
			case <-done:
			}
		})
	}
	return func() { close(done); wg.Wait() }
}

package bench

import (
	"fmt"
	"io"
	"text/tabwriter"

	"github.com/quotamesh/quotamesh/internal/loadgen"
)

// printBench writes one run's report as text.
func printBench(w io.Writer, r Plan, rep loadgen.Report) {
	load := r.loadAt(rep.Rate).String()
	nodes, workers := "nodes", fmt.Sprintf("%d workers per node", r.Workers)
	if rep.Mode == "tcp" {
		nodes = "TCP servers"
	}
	if r.Workers == 0 {
		workers = "calls made by the generator"
	}
	route := ", keys to their home node"
	switch {
	case rep.Mode == "tcp":
		route = ""
	case r.Nearest:
		route = ", every key to the client's nearest node"
	}
	fmt.Fprintf(w, "%d %s, %s for %v; %s mode%s, %s\n\n", rep.Nodes, nodes, load, r.Duration, rep.Mode, route, workers)
	if rep.Mode != "tcp" {
		_ = rep.WriteTable(w)
		fmt.Fprintf(w, "\nideal (a perfect limiter, same window, same requests): %d\n", rep.Ideal)
		fmt.Fprintf(w, "error against the ideal:  %.3f %%\n", 100*rep.Error)
		fmt.Fprintf(w, "largest window / limit:   %.3f (the ideal's: %.3f)\n", rep.MaxWindowRatio, rep.IdealMaxWindowRatio)
		rep.PerKey.WriteText(w)
	}
	fmt.Fprintf(w, "answered %.0f/s; latency from intended send: p50 %.0f µs, p99 %.0f µs, p99.9 %.0f µs, max %.0f µs (call alone: p50 %.0f µs, p99 %.0f µs)\n",
		rep.AchievedRPS, rep.P50us, rep.P99us, rep.P999us, rep.MaxUs, rep.ServiceP50us, rep.ServiceP99us)
	fmt.Fprintf(w, "generator lateness (part of the latency): p50 %.0f µs, p99 %.0f µs, max %.0f µs\n", rep.GenP50us, rep.GenP99us, rep.GenMaxUs)
	fmt.Fprintf(w, "CPU per 100k decisions: %.3f s in this process (SDK and generator)", rep.ClientCPUPer100k)
	if rep.NodesCPUPer100k > 0 {
		fmt.Fprintf(w, ", %.3f s in the %s", rep.NodesCPUPer100k, nodes)
	}
	if rep.SDK != nil {
		fmt.Fprintf(w, "\nSDK requests per decision: %.3f, of which asking for a lease: %.3f; decided by a node: %.3f; keys with lease state at the end: %d",
			rep.SDK.RequestsPerDecision, rep.SDK.LeaseRequestsPerDecision, rep.SDK.NodeDecisionsPerDecision, rep.SDK.KeysWithState)
	}
	if rep.Overloaded > 0 {
		fmt.Fprintf(w, "\nanswered \"overloaded\" (not decided, not errors): %d, latency from intended send: p50 %.0f µs, p99 %.0f µs",
			rep.Overloaded, rep.OverloadedP50us, rep.OverloadedP99us)
		if s := rep.SDK; s != nil {
			fmt.Fprintf(w, "; no place in flight %d, answered so by a node %d", s.Overloads-s.NodeOverloads, s.NodeOverloads)
		}
	}
	fmt.Fprintf(w, "\nerrors %d, unsent %d, elapsed %s\n\n", rep.Errors, rep.Unsent, rep.Elapsed)
}

// printFindMax writes the table of a --find-max run, one row per rate
// tried, and the highest rate that kept P99 within the target.
func printFindMax(w io.Writer, r Plan, reps []loadgen.Report) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "rate\tachieved/s\tp50 µs\tp99 µs\tp99.9 µs\terrors\tunsent\t")
	best := 0.0
	for _, rep := range reps {
		fmt.Fprintf(tw, "%.0f\t%.0f\t%.0f\t%.0f\t%.0f\t%d\t%d\t\n", rep.Rate, rep.AchievedRPS, rep.P50us, rep.P99us, rep.P999us, rep.Errors, rep.Unsent)
		if rep.P99us <= float64(r.P99Target.Microseconds()) && rep.Errors == 0 && rep.Unsent == 0 {
			best = max(best, rep.AchievedRPS)
		}
	}
	tw.Flush()
	if best > 0 {
		fmt.Fprintf(w, "\nhighest rate within P99 %v: %.0f/s\n", r.P99Target, best)
	} else {
		fmt.Fprintf(w, "\nno rate tried kept P99 within %v\n", r.P99Target)
	}
}

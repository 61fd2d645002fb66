package sim

import (
	"fmt"
	"io"
	"time"

	"github.com/quotamesh/quotamesh/internal/workload"
)

// WriteText writes r, the result of running c, for people, as the sim
// command prints it; took is how long the run took.
func (r Result) WriteText(out io.Writer, c Config, took time.Duration) {
	route := c.Route
	if route == "" {
		route = RouteThin
	}
	who := fmt.Sprintf("decided by the nodes (route %s: %s)", route, map[Route]string{
		RouteLocal: "each decides what lands on it, as an embedded node",
		RouteHome:  "every key at its home, one link away",
		RouteThin:  "thin keys at their home, as the decision APIs by default",
	}[route])
	if c.Clients > 0 {
		mode, to := "leases", "keys to their home node"
		if c.Client.Strict {
			mode = "strict"
		}
		if c.Client.Nearest {
			to = "keys to the client's own node"
		}
		who = fmt.Sprintf("%d SDK clients per node (%s, %s, rtt %v)", c.Clients, mode, to, c.Client.RTT)
	}
	fmt.Fprintf(out, "%d nodes, %s for %v; %s; sync %v, rtt %v, policy %s\n\n",
		c.Nodes, r.Workload, c.Duration, who, c.Sync, c.RTT, c.Policy)
	_ = r.WriteTable(out)
	fmt.Fprintf(out, "\nideal (a perfect limiter per key, same window, same requests): %d\n", r.Ideal)
	fmt.Fprintf(out, "error against the ideal:       %.3f %%\n", 100*r.Error)
	if c.Workload != nil && c.Workload.Keys == 1 && c.Workload.Shape == workload.Steady {
		limitT := float64(c.Limit.Count) * float64(c.Duration) / float64(c.Limit.Window)
		fmt.Fprintf(out, "error against limit x time:    %.3f %% (%.0f)\n", 100*(float64(r.Admitted)-limitT)/limitT, limitT)
	}
	fmt.Fprintf(out, "largest window / limit:        %.3f (the ideal's: %.3f)\n", r.MaxWindowRatio, r.IdealMaxWindowRatio)
	r.PerKey.WriteText(out)
	if c.Clients == 0 && route != RouteLocal {
		fmt.Fprintf(out, "requests sent to their key's home: %d\n", r.Routed)
	}
	if c.Clients > 0 {
		fmt.Fprintf(out, "client requests %d (lease requests %d), calls decided in the SDK %d, failed %d\n",
			r.ClientRequests, r.LeaseRequests, r.LocalDecisions, r.Failed)
	}
	fmt.Fprintf(out, "frames %d, rejected %d; simulated in %v\n", r.Frames, r.Rejected, took.Round(time.Millisecond))
}

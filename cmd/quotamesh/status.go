package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/quotamesh/quotamesh/client"
	"github.com/quotamesh/quotamesh/node"
)

// memberTimeout bounds asking another member for its own status.
const memberTimeout = 3 * time.Second

func newStatusCmd() *cobra.Command {
	var (
		a   adminFlags
		all bool
	)
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show the cluster: members, leader, per-node rates and shares, sync lag, health, top keys",
		Long: `status asks the nearest --addr node for its status document and prints it
as tables: the members as that node sees them (role, connection, sync lag,
round-trip time), and the keys it admits most with every node's admitted
rate per second and this node's share of the limit.

With --all (the default) it also asks every other member, at the address
the member advertises, for its own view: its health (ready, fenced, the
reasons it is not ready), the rate it admits and is offered, and its share
of each top key. A member this machine cannot reach shows '-'.

--json prints the status document of the node answering, unchanged (the
document of /status on the node's admin listener; durations in ns).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := a.dial(cmd.Context())
			if err != nil {
				return err
			}
			defer c.Close()
			ctx, cancel := context.WithTimeout(cmd.Context(), a.timeout)
			defer cancel()
			raw, err := c.Status(ctx)
			if err != nil {
				return a.explain(err, "status")
			}
			if a.json {
				_, err := cmd.OutOrStdout().Write(append(raw, '\n'))
				return err
			}
			var st node.Status
			if err := json.Unmarshal(raw, &st); err != nil {
				return fmt.Errorf("status: decoding the node's document: %w", err)
			}
			views := map[string]*node.Status{st.Node: &st}
			if all {
				for id, v := range a.memberViews(ctx, cmd, &st) {
					views[id] = v
				}
			}
			printStatus(cmd.OutOrStdout(), &st, views, all)
			return nil
		},
	}
	a.bind(cmd.Flags())
	cmd.Flags().BoolVar(&all, "all", true, "also ask every other member for its own status")
	return cmd
}

// memberViews asks every other member of st for its status, at once; the
// members that do not answer within memberTimeout are left out.
func (a *adminFlags) memberViews(ctx context.Context, cmd *cobra.Command, st *node.Status) map[string]*node.Status {
	opts, err := a.options()
	if err != nil {
		return nil
	}
	var (
		mu  sync.Mutex
		out = map[string]*node.Status{}
		wg  sync.WaitGroup
	)
	for _, m := range st.Members {
		if m.Self || m.Addr == "" {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			mctx, cancel := context.WithTimeout(ctx, min(memberTimeout, a.timeout))
			defer cancel()
			c, err := client.Dial(mctx, []string{m.Addr}, slices.Concat(opts, []client.Option{client.WithNodeID(m.ID)})...)
			if err != nil {
				return
			}
			defer c.Close()
			raw, err := c.Status(mctx)
			if err != nil {
				return
			}
			var v node.Status
			if json.Unmarshal(raw, &v) != nil {
				return
			}
			mu.Lock()
			out[m.ID] = &v
			mu.Unlock()
		}()
	}
	wg.Wait()
	return out
}

func dur(d time.Duration) string {
	switch {
	case d < 0:
		return "never"
	case d == 0:
		return "0"
	case d < time.Millisecond:
		return d.Round(time.Microsecond).String()
	case d < time.Minute:
		return d.Round(time.Millisecond).String()
	}
	return d.Round(time.Second).String()
}

func plural(n int, what string) string {
	if n == 1 {
		return "1 " + what
	}
	return fmt.Sprintf("%d %ss", n, what)
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

// health is a member's health from its own status.
func health(v *node.Status) string {
	switch {
	case v == nil:
		return "-"
	case v.Fenced:
		return "fenced"
	case v.Ready:
		return "ready"
	}
	return "not ready: " + strings.Join(v.NotReady, "; ")
}

func printStatus(out io.Writer, st *node.Status, views map[string]*node.Status, all bool) {
	leader := st.Raft.Leader
	if leader == "" {
		leader = "none known"
	}
	fmt.Fprintf(out, "cluster %s: %s, Raft leader %s (term %d), %s, policy %s\n",
		st.ClusterID, plural(len(st.Members), "member"), leader, st.Raft.Term, plural(st.Raft.Rules, "limit rule"), st.Policy)
	fmt.Fprintf(out, "answered by %s at %s: %s, Raft %s, commit %d, applied %d, up %s\n",
		st.Node, st.Advertise, health(st), st.Raft.State, st.Raft.CommitIndex, st.Raft.AppliedIndex, dur(st.Uptime))
	for _, id := range slices.Sorted(maps.Keys(views)) {
		if v := views[id]; v.Clients.AllowAnonymous {
			fmt.Fprintf(out, "INSECURE: %s serves clients without a certificate (allow_anonymous_clients): anyone who reaches it can spend any limit\n", id)
		}
	}
	fmt.Fprintln(out)

	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "NODE\tADDRESS\tROLE\tHEALTH\tADMITTED/S\tOFFERED/S\tKEYS\tCONNECTED\tREACHABLE\tSYNC LAG\tRTT\n")
	for _, m := range st.Members {
		role := "non-voter"
		if m.Voter {
			role = "voter"
		}
		if m.Leader {
			role += ",leader"
		}
		v := views[m.ID]
		adm, off, keys := "-", "-", "-"
		if v != nil {
			adm, off, keys = fmt.Sprintf("%.0f", v.AdmittedPerSec), fmt.Sprintf("%.0f", v.OfferedPerSec), fmt.Sprint(v.Keys)
		}
		id, conn, rtt := m.ID, yesNo(m.Connected), dur(m.RTT)
		if m.Self {
			id, conn, rtt = m.ID+" *", "self", "-"
		}
		if m.Reclaimed {
			role += ",reclaimed"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n",
			id, m.Addr, role, health(v), adm, off, keys, conn, yesNo(m.Reachable), dur(m.SyncLag), rtt)
	}
	_ = tw.Flush()
	fmt.Fprintf(out, "(* answered; CONNECTED, REACHABLE, SYNC LAG and RTT are %s's view", st.Node)
	if all && len(views) < len(st.Members) {
		fmt.Fprintf(out, "; '-': the member did not answer from here within %v", memberTimeout)
	}
	fmt.Fprintln(out, ")")
	printShadow(out, st, views)

	if len(st.TopKeys) == 0 {
		fmt.Fprintf(out, "\nno keys admitted on %s in the last window\n", st.Node)
		return
	}
	ids := make([]string, 0, len(st.Members))
	for _, m := range st.Members {
		ids = append(ids, m.ID)
	}
	fmt.Fprintf(out, "\nTOP KEYS on %s: admitted per second by node, and each node's share of the limit\n", st.Node)
	tw = tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "KEY\tLIMIT\tADMITTED/S BY NODE\tSHARES\tQUOTA HERE\n")
	for _, k := range st.TopKeys {
		var rates, shares []string
		for _, id := range ids {
			if r, ok := k.PerNodePerSec[id]; ok {
				rates = append(rates, fmt.Sprintf("%s %.0f", id, r))
			}
			if v := views[id]; v != nil {
				if i := slices.IndexFunc(v.TopKeys, func(o node.KeyStatus) bool { return o.Key == k.Key }); i >= 0 {
					shares = append(shares, fmt.Sprintf("%s %.2f", id, v.TopKeys[i].Share))
				}
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\n", k.Key, k.Limit, strings.Join(rates, ", "), strings.Join(shares, ", "), k.Quota)
	}
	_ = tw.Flush()
}

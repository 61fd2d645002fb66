// Package statusview renders a node's status document (node.Status) as the
// tables of `quotamesh status`.
package statusview

import (
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/quotamesh/quotamesh"
	"github.com/quotamesh/quotamesh/node"
)

// Dur writes a duration as status shows it: "never" when negative, rounded
// to what matters at its size.
func Dur(d time.Duration) string {
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

// Print writes st, the status of the node that answered, as tables: the
// members with each one's own view where views has it (keyed by node ID;
// with all, members missing from views did not answer within timeout),
// the shadow rules, and the top keys.
func Print(out io.Writer, st *node.Status, views map[string]*node.Status, all bool, timeout time.Duration) {
	leader := st.Raft.Leader
	if leader == "" {
		leader = "none known"
	}
	fmt.Fprintf(out, "cluster %s: %s, Raft leader %s (term %d), %s, policy %s\n",
		st.ClusterID, plural(len(st.Members), "member"), leader, st.Raft.Term, plural(st.Raft.Rules, "limit rule"), st.Policy)
	fmt.Fprintf(out, "answered by %s at %s: %s, Raft %s, commit %d, applied %d, up %s\n",
		st.Node, st.Advertise, health(st), st.Raft.State, st.Raft.CommitIndex, st.Raft.AppliedIndex, Dur(st.Uptime))
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
		id, conn, rtt := m.ID, yesNo(m.Connected), Dur(m.RTT)
		if m.Self {
			id, conn, rtt = m.ID+" *", "self", "-"
		}
		if m.Reclaimed {
			role += ",reclaimed"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n",
			id, m.Addr, role, health(v), adm, off, keys, conn, yesNo(m.Reachable), Dur(m.SyncLag), rtt)
	}
	_ = tw.Flush()
	fmt.Fprintf(out, "(* answered; CONNECTED, REACHABLE, SYNC LAG and RTT are %s's view", st.Node)
	if all && len(views) < len(st.Members) {
		fmt.Fprintf(out, "; '-': the member did not answer from here within %v", timeout)
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

// printShadow lists the shadow rules with what each would have denied on
// every node that answered: they admit everything, so this is where an
// operator sees what enforcing them would do.
func printShadow(out io.Writer, st *node.Status, views map[string]*node.Status) {
	if len(st.Shadow) == 0 {
		return
	}
	fmt.Fprintf(out, "\nSHADOW RULES: never deny; tokens each would have denied, by node, since it became a shadow rule there\n")
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "PATTERN\tRATE\tWOULD HAVE DENIED\n")
	for _, r := range st.Shadow {
		var by []string
		for _, m := range st.Members {
			v := views[m.ID]
			if m.Self {
				v = st
			}
			if v == nil {
				continue
			}
			for _, o := range v.Shadow {
				if o.Pattern == r.Pattern {
					by = append(by, fmt.Sprintf("%s %d", m.ID, o.WouldDeny))
				}
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\n", r.Pattern, r.Rate, strings.Join(by, ", "))
	}
	_ = tw.Flush()
}

// KeyStats writes a key's stats (quotamesh key show) as a few lines and a
// table.
func KeyStats(w io.Writer, st quotamesh.KeyStats) error {
	rule := "no rule (unlimited: the node's unknown_keys setting decides)"
	if !st.Unlimited {
		rule = "rule " + st.Rule + " " + st.Limit.String()
		if st.Shadow {
			rule += " (shadow)"
		}
	}
	fmt.Fprintf(w, "key %s  %s  as node %s sees it at %s\n", st.Key, rule, st.Node, st.At.Format("15:04:05.000"))
	if !st.Unlimited {
		fmt.Fprintf(w, "window: %d admitted of %d, %d left; node %s's quota %d, %d left\n",
			st.Admitted, st.Limit.Count, st.Remaining, st.Node, st.Quota, st.LocalRemaining)
	}
	if !st.ResetAt.IsZero() {
		fmt.Fprintf(w, "reset: counted afresh from %s\n", st.ResetAt.Format("15:04:05.000 MST"))
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tADMITTED/S\tOFFERED/S\tIN WINDOW\tAGE")
	for _, n := range st.Nodes {
		name, age := n.Node, fmt.Sprint(n.Age.Round(time.Millisecond))
		switch {
		case n.Self:
			name, age = name+" (this node)", "-"
		case !n.Member:
			name += fmt.Sprintf(" (#%x, gone)", n.Incarnation)
		}
		fmt.Fprintf(tw, "%s\t%.1f\t%.1f\t%d\t%s\n", name, n.Admitted, n.Offered, n.InWindow, age)
	}
	fmt.Fprintf(tw, "cluster\t%.1f\t%.1f\t%d\toldest %s\n", st.Cluster.Admitted, st.Cluster.Offered, st.Admitted, st.OldestView.Round(time.Millisecond))
	return tw.Flush()
}

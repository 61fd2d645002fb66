package main

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/quotamesh/quotamesh/node"
)

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

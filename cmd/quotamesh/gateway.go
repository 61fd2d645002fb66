package main

import (
	"fmt"
	"io"

	"github.com/quotamesh/quotamesh/node"
)

// printGateways says where the decision APIs listen, if they do.
func printGateways(w io.Writer, n *node.Node) {
	if a := n.RLSAddr(); a != "" {
		fmt.Fprintf(w, "Envoy rate limit service (gRPC) on %s\n", a)
	}
	if a := n.HTTPAddr(); a != "" {
		fmt.Fprintf(w, "HTTP decision API on https://%s/v1/allow\n", a)
	}
}

package main

import (
	"fmt"
	"io"

	"github.com/spf13/pflag"

	"github.com/quotamesh/quotamesh/node"
)

// gatewayOptions sets the decision APIs' part of c from o.
func (o *serveOptions) gatewayOptions(c *node.Config, cf *configFile, fs *pflag.FlagSet) error {
	c.Gateway.RLSListen, c.Gateway.HTTPListen = o.RLSListen, o.HTTPListen
	switch o.RLSUnmatched {
	case "ok":
	case "over_limit":
		c.Gateway.RLSUnmatchedOverLimit = true
	default:
		return fmt.Errorf("%w: %s: %q: use ok or over_limit", errConfig, cf.at("rls_unmatched", fs, "rls-unmatched"), o.RLSUnmatched)
	}
	switch o.RLSLimitOverride {
	case "ignore":
	case "refuse":
		c.Gateway.RLSRefuseOverride = true
	default:
		return fmt.Errorf("%w: %s: %q: use ignore or refuse", errConfig, cf.at("rls_limit_override", fs, "rls-limit-override"), o.RLSLimitOverride)
	}
	return nil
}

// printGateways says where the decision APIs listen, if they do.
func printGateways(w io.Writer, n *node.Node) {
	if a := n.RLSAddr(); a != "" {
		fmt.Fprintf(w, "Envoy rate limit service (gRPC) on %s\n", a)
	}
	if a := n.HTTPAddr(); a != "" {
		fmt.Fprintf(w, "HTTP decision API on https://%s/v1/allow\n", a)
	}
}

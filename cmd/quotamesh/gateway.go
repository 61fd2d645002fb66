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
	var err error
	if c.Gateway.RLSUnmatchedOverLimit, err = either(o.RLSUnmatched, "ok", "over_limit", cf.at("rls_unmatched", fs, "rls-unmatched")); err != nil {
		return err
	}
	if c.Gateway.RLSRefuseOverride, err = either(o.RLSLimitOverride, "ignore", "refuse", cf.at("rls_limit_override", fs, "rls-limit-override")); err != nil {
		return err
	}
	c.Gateway.RouteHome, err = either(o.GatewayRoute, "local", "home", cf.at("gateway_route", fs, "gateway-route"))
	return err
}

// either reads a two-valued option: false for no, true for yes; where
// names the option's source for the error.
func either(v, no, yes, where string) (bool, error) {
	switch v {
	case no:
		return false, nil
	case yes:
		return true, nil
	}
	return false, fmt.Errorf("%w: %s: %q: use %s or %s", errConfig, where, v, no, yes)
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

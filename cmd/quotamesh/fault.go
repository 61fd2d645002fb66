//go:build fault

package main

import (
	"context"

	"github.com/spf13/pflag"

	"github.com/quotamesh/quotamesh/internal/faultctl"
	"github.com/quotamesh/quotamesh/internal/nodehook"
)

// bindFaultFlags defines the flags the fault suite starts nodes with; they
// exist only in the fault build (go build -tags fault ./cmd/quotamesh,
// docs/faults.md). Like every serve flag they may come from QUOTAMESH_*
// variables too, but not from the configuration file. The returned function
// puts what they ask for in the context node.Start reads.
func bindFaultFlags(fs *pflag.FlagSet) func(context.Context) context.Context {
	var control, ignoreShare bool
	fs.BoolVar(&control, "fault-control", false, "TEST ONLY: serve /debug/fault/clock and /debug/fault/net on the admin listener")
	fs.BoolVar(&ignoreShare, "unsafe-ignore-share", false, "TEST ONLY: admit up to the whole limit as if alone (a broken node for the fault suite)")
	return func(ctx context.Context) context.Context {
		o := nodehook.Options{UnsafeIgnoreShare: ignoreShare}
		if control {
			o.Fault = faultctl.Attach
		}
		return nodehook.With(ctx, o)
	}
}

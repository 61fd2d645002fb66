//go:build !fault

package main

import (
	"context"

	"github.com/spf13/pflag"
)

// bindFaultFlags defines nothing: a normal build has no fault layer, so
// neither its flags nor its endpoints (fault.go, built with -tags fault,
// has them).
func bindFaultFlags(*pflag.FlagSet) func(context.Context) context.Context {
	return func(ctx context.Context) context.Context { return ctx }
}

package main

import (
	"bytes"
	"context"
	"os"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// TestMain runs the command line instead of the tests in a child the bench
// tests start (benchChildEnv), as the quotamesh binary would.
func TestMain(m *testing.M) {
	if os.Getenv(benchChildEnv) == "1" {
		os.Exit(runMain(os.Args[1:]))
	}
	goleak.VerifyTestMain(m)
}

// runCmd runs the command line args within bound and returns the exit code,
// stdout and stderr.
func runCmd(t *testing.T, bound time.Duration, args ...string) (int, string, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), bound)
	defer cancel()
	var out, errb bytes.Buffer
	code := run(ctx, args, &out, &errb)
	return code, out.String(), errb.String()
}

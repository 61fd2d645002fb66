package main

import (
	"strings"
	"testing"
	"time"
)

func TestDemoBadFlags(t *testing.T) {
	for _, args := range [][]string{
		{"demo", "--nodes", "7"},
		{"demo", "--limit", "fast"},
		{"demo", "--pattern", "zigzag"},
		{"demo", "--duration", "2s", "--warmup", "2s"},
	} {
		code, _, errs := runCmd(t, 10*time.Second, args...)
		if code != 2 || !strings.Contains(errs, args[len(args)-2]) {
			t.Errorf("%v: exit %d, stderr %q; want 2 and a message naming %s", args, code, errs, args[len(args)-2])
		}
	}
}

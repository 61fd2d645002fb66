package main

import (
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestDemo runs the demo for 3 s and checks that it printed a row per
// second, held the limit within a generous bound (the machine is shared;
// the demo itself reports the real error), and removed its directory.
func TestDemo(t *testing.T) {
	code, out, errs := runCmd(t, 2*time.Minute, "demo", "--duration", "3s", "--warmup", "1s", "--limit", "500/s")
	t.Logf("stdout:\n%s", out)
	if code != 0 {
		t.Fatalf("exit code %d; stderr:\n%s", code, errs)
	}
	// A row a second, labelled by the clock (a starved process may skip
	// one), and the last at 3 s.
	rows := regexp.MustCompile(`(?m)^ +([0-9.]+)s +\d+ +\d+ `).FindAllStringSubmatch(out, -1)
	if len(rows) < 2 || rows[len(rows)-1][1] != "3" {
		t.Errorf("table rows %v; want at least two, the last at 3s", rows)
	}
	m := regexp.MustCompile(`data and certificates in (\S+)\)`).FindStringSubmatch(out)
	if m == nil {
		t.Fatal("the demo did not say where its data is")
	}
	if _, err := os.Stat(m[1]); !os.IsNotExist(err) {
		t.Errorf("stat %s after the demo: %v; want it removed", m[1], err)
	}
	s := regexp.MustCompile(`admitted (\d+) from 1s to 3s, limit x time (\d+), error`).FindStringSubmatch(out)
	if s == nil {
		t.Fatal("no summary line")
	}
	got, _ := strconv.Atoi(s[1])
	want, _ := strconv.Atoi(s[2])
	if want != 1000 {
		t.Errorf("limit x time %d; want 1000 for 500/s over 2 s", want)
	}
	// The limit bounds what is admitted. No floor: on a starved machine
	// (-race, other builds) peers fall silent for longer than dead_after,
	// and the conservative policy then admits less, down to nothing while
	// fenced; the demo reports that as error.
	if hi := want * 13 / 10; got < 0 || got > hi {
		t.Errorf("admitted %d after the warm-up; want at most %d", got, hi)
	}
	a := regexp.MustCompile(`offered (\d+), admitted (\d+) in all`).FindStringSubmatch(out)
	if a == nil {
		t.Fatal("no totals line")
	}
	offered, _ := strconv.Atoi(a[1])
	all, _ := strconv.Atoi(a[2])
	// 3 s at 2x of 500/s; at most the first window's burst plus 3 s' worth.
	if offered < 2990 || offered > 3000 || all > 500*4*11/10 {
		t.Errorf("offered %d, admitted %d in all; want 3000 offered and at most %d admitted", offered, all, 500*4*11/10)
	}
}

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

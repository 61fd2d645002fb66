package main

import (
	"bytes"
	"context"
	"errors"
	"math"
	"os"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/quotamesh/quotamesh/internal/peerbench/peer"
	"github.com/quotamesh/quotamesh/internal/peerbench/runner"
)

// TestMain runs a Gubernator daemon when the benchmark under test starts
// this test binary as one (its own path is the daemons' program).
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == peer.DaemonCommand {
		ctx, stop := signalContext()
		err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
		stop()
		if err != nil {
			os.Stderr.WriteString(err.Error() + "\n")
			os.Exit(1)
		}
		os.Exit(0)
	}
	goleak.VerifyTestMain(m)
}

func TestParseFlags(t *testing.T) {
	o, err := parseFlags([]string{"--quick", "--patterns", "burst,ramp", "--keys", "10,1_000", "--rates=", "--systems", "gubernator"}, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	q := runner.DefaultOptions().Quick()
	if strings.Join(o.Patterns, ",") != "burst,ramp" || len(o.Keys) != 2 || o.Keys[1] != 1000 || len(o.Rates) != 0 ||
		strings.Join(o.Systems, ",") != "gubernator" {
		t.Errorf("flags given: patterns %v, keys %v, rates %v, systems %v; want burst,ramp / 10,1000 / none / gubernator",
			o.Patterns, o.Keys, o.Rates, o.Systems)
	}
	if o.Duration != q.Duration || o.SatSteps != q.SatSteps || o.KeysDuration != q.KeysDuration {
		t.Errorf("--quick: duration %v, sat steps %d, keys duration %v; want the quick form's %v, %d, %v",
			o.Duration, o.SatSteps, o.KeysDuration, q.Duration, q.SatSteps, q.KeysDuration)
	}
	o, err = parseFlags([]string{"--duration", "5s"}, &bytes.Buffer{})
	if err != nil || o.Duration != 5*time.Second || len(o.Patterns) != 5 {
		t.Errorf("without --quick: duration %v, %d patterns, %v; want 5s and every pattern", o.Duration, len(o.Patterns), err)
	}
	if _, err := parseFlags([]string{"--keys", "ten"}, &bytes.Buffer{}); err == nil || !strings.Contains(err.Error(), "keys") {
		t.Errorf("--keys ten: %v, want an error naming the flag", err)
	}
	if _, err := parseFlags([]string{"extra"}, &bytes.Buffer{}); !errors.Is(err, runner.ErrInvalid) {
		t.Errorf("an argument: %v, want ErrInvalid", err)
	}
}

func TestQuickAsked(t *testing.T) {
	for args, want := range map[string]bool{"--quick": true, "-quick": true, "--quick=true": true, "--quick=false": false,
		"": false, "quick": false, "-- --quick": false, "--duration 1s --quick": true} {
		if got := quickAsked(strings.Fields(args)); got != want {
			t.Errorf("quickAsked(%q) = %v, want %v", args, got, want)
		}
	}
}

// TestQuickRunBothSystems runs a shorter quick form against real node
// processes of both systems and checks that every row is there and sane;
// it asserts no timing.
func TestQuickRunBothSystems(t *testing.T) {
	if testing.Short() {
		t.Skip("starts six server processes")
	}
	o := runner.DefaultOptions().Quick()
	o.Duration, o.KeysDuration, o.Keys = time.Second, time.Second, []int{200}
	o.Rates, o.RateDuration = []float64{500}, time.Second
	o.SatStart, o.SatSteps, o.SatDuration, o.P99Target = 500, 1, time.Second, time.Hour
	p, err := o.Validate()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	var progress bytes.Buffer
	env, rows, err := runner.Measure(ctx, p, &progress)
	if err != nil {
		t.Fatalf("Measure: %v\nprogress:\n%s", err, progress.String())
	}
	kinds := map[runner.Kind]string{runner.KindAccuracy: "accuracy", runner.KindKeys: "many keys", runner.KindLatency: "latency",
		runner.KindSaturation: "saturation"}
	for _, sys := range runner.Systems {
		for kind, name := range kinds {
			n := 0
			for _, r := range rows {
				if r.System == sys && r.Kind == kind {
					n++
					checkRow(t, r)
				}
			}
			want := 1
			if kind == runner.KindSaturation {
				want = 2 // within the P99 target, and answered in full
			}
			if n != want {
				t.Errorf("%s: %d %s rows, want %d", sys, n, name, want)
			}
		}
	}
	if env.LoadStart == "" || env.End.Before(env.Start) {
		t.Errorf("env %+v: want a load average and an end after the start", env)
	}
	var out bytes.Buffer
	if err := runner.WriteTable(&out, env, rows, true); err != nil {
		t.Fatal(err)
	}
	t.Logf("\n%s", out.String())
}

// checkRow checks what any honest run shows: decisions were answered, at
// most what was offered was admitted, the error is a share, latencies are
// ordered, CPU was measured for every process.
func checkRow(t *testing.T, r runner.Row) {
	t.Helper()
	name := r.System + ": " + r.Case
	if !(r.Decided > 0) {
		t.Errorf("%s: %v decisions/s, want some", name, r.Decided)
	}
	if !(r.P50us > 0 && r.P50us <= r.P99us) {
		t.Errorf("%s: P50 %v µs, P99 %v µs; want 0 < P50 <= P99", name, r.P50us, r.P99us)
	}
	if !(r.ServersCPU > 0 && r.ClientsCPU > 0) {
		t.Errorf("%s: CPU per 100k: servers %v, clients %v; want both measured", name, r.ServersCPU, r.ClientsCPU)
	}
	if r.Failed+r.Unsent > int64(0.05*r.Decided) {
		t.Errorf("%s: %d failed and %d unsent of %v/s", name, r.Failed, r.Unsent, r.Decided)
	}
	s := r.Score
	if r.Kind == runner.KindLatency || r.Kind == runner.KindSaturation {
		if s != nil {
			t.Errorf("%s: a score where every request is admitted", name)
		}
		return
	}
	if s == nil {
		t.Fatalf("%s: no score", name)
	}
	if s.Offered == 0 || s.Admitted == 0 || s.Admitted > s.Offered || s.Ideal == 0 || s.Ideal > s.Offered {
		t.Errorf("%s: offered %d, admitted %d, ideal %d; want 0 < admitted, ideal <= offered", name, s.Offered, s.Admitted, s.Ideal)
	}
	if math.IsNaN(s.Error) || s.Error < 0 || s.Error > 1 || math.Abs(s.Error-s.Under-s.Over) > 1e-9 {
		t.Errorf("%s: error %v (under %v, over %v), want a share that is their sum", name, s.Error, s.Under, s.Over)
	}
	if !(s.MaxAligned > 0) || s.IdealMaxAligned > 1 {
		t.Errorf("%s: largest aligned window %v of the limit (ideal %v); want above 0, the ideal at most 1", name, s.MaxAligned, s.IdealMaxAligned)
	}
	if s.FalseDenials > s.UnderLimit || s.FalseDenials > s.Denied {
		t.Errorf("%s: %d denied within the limit, of %d within it and %d denied", name, s.FalseDenials, s.UnderLimit, s.Denied)
	}
}

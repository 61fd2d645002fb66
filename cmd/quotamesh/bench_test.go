package main

import (
	"encoding/json"
	"math"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/quotamesh/quotamesh/internal/loadgen"
)

// benchChildEnv makes this test binary act as the quotamesh binary: bench
// starts os.Executable() with "serve ...", which in a test is the test
// binary, so a child started with the variable set runs the command line
// and exits before any test runs (see TestMain).
const benchChildEnv = "QM_BENCH_TEST_CHILD"

// benchChild makes the processes the bench starts run the command line
// (benchChildEnv), checks that no goroutine outlives the test, and returns
// the temporary directory the bench puts its certificates, data and logs
// in, to check it cleaned up.
func benchChild(t *testing.T) string {
	t.Helper()
	t.Cleanup(func() { goleak.VerifyNone(t) })
	t.Setenv(benchChildEnv, "1")
	tmp := t.TempDir()
	t.Setenv("TMPDIR", tmp)
	return tmp
}

// checkCleanedUp fails t if the bench left anything in tmp.
func checkCleanedUp(t *testing.T, tmp string) {
	t.Helper()
	if left, _ := filepath.Glob(filepath.Join(tmp, "quotamesh-bench-*")); len(left) != 0 {
		t.Errorf("bench left %v behind", left)
	}
}

// runBench runs `quotamesh bench args...` with benchChild, fails t unless
// it exits with 0 and leaves nothing behind, decodes its JSON output into
// v, and returns the output.
func runBench(t *testing.T, v any, args ...string) string {
	t.Helper()
	tmp := benchChild(t)
	code, out, errOut := runCmd(t, 90*time.Second, append([]string{"bench"}, args...)...)
	if code != 0 {
		t.Fatalf("bench exit code %d, want 0; stderr:\n%s", code, errOut)
	}
	if err := json.Unmarshal([]byte(out), v); err != nil {
		t.Fatalf("output is not one JSON object: %v\n%s", err, out)
	}
	checkCleanedUp(t, tmp)
	return out
}

func TestBenchLocalCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("starts 3 node processes")
	}
	var raw map[string]json.RawMessage
	out := runBench(t, &raw, "--local-cluster", "3", "--duration", "3s", "--warmup", "500ms", "--json",
		"--request-timeout", "10s") // a loaded machine can take more than the default 500 ms
	for _, f := range []string{"pattern", "nodes", "limit", "duration", "offered", "admitted", "ideal", "error",
		"max_window_ratio", "per_node", "per_second", "achieved_rps", "p50_us", "p99_us", "p999_us", "max_us", "errors",
		"gen_p50_us", "gen_p99_us", "client_cpu_s_per_100k", "answered"} {
		if _, ok := raw[f]; !ok {
			t.Errorf("field %q missing from the JSON output:\n%s", f, out)
		}
	}
	var rep loadgen.Report
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatal(err)
	}
	// 2x of 1000/s for 3 s, evenly spaced: 6000 requests, give or take one
	// per node at the edges.
	if rep.Offered < 5990 || rep.Offered > 6010 {
		t.Errorf("offered %d, want about 6000 (2x of 1000/s for 3s)", rep.Offered)
	}
	if rep.Ideal < 2900 || rep.Ideal > 3100 {
		t.Errorf("ideal %d, want about 3000", rep.Ideal)
	}
	if rep.Admitted <= 0 || rep.Admitted > rep.Offered {
		t.Errorf("admitted %d, want between 1 and offered %d", rep.Admitted, rep.Offered)
	}
	// Loose on purpose: the machine is shared and 3 s is short; the figures
	// that matter are measured with 60 s runs (docs/accuracy.md).
	if math.IsNaN(rep.Error) || math.IsInf(rep.Error, 0) || rep.Error > 0.5 {
		t.Errorf("error %v, want a finite value at most 0.5 (admitted %d, ideal %d)", rep.Error, rep.Admitted, rep.Ideal)
	}
	if rep.MaxWindowRatio <= 0 || rep.MaxWindowRatio > 3 {
		t.Errorf("max_window_ratio %v, want in (0, 3]", rep.MaxWindowRatio)
	}
	if len(rep.PerNode) != 3 {
		t.Fatalf("per_node has %d entries, want 3: %+v", len(rep.PerNode), rep.PerNode)
	}
	var admitted int64
	for _, n := range rep.PerNode {
		if n.Node == "" || n.Offered < 1990 || n.Offered > 2010 {
			t.Errorf("per_node %+v: want a node name and about 2000 offered", n)
		}
		admitted += n.Admitted
	}
	if admitted != rep.Admitted {
		t.Errorf("per_node admitted sum to %d, want admitted %d", admitted, rep.Admitted)
	}
	if rep.Errors != 0 || rep.Unsent != 0 {
		t.Errorf("errors %d (first: %s), unsent %d, want 0", rep.Errors, rep.FirstError, rep.Unsent)
	}
	if rep.AchievedRPS <= 0 || rep.P50us <= 0 || rep.P99us < rep.P50us || rep.P999us < rep.P99us || rep.MaxUs < rep.P999us {
		t.Errorf("latencies p50 %v p99 %v p99.9 %v max %v, achieved %v/s: want positive and ordered", rep.P50us, rep.P99us, rep.P999us, rep.MaxUs, rep.AchievedRPS)
	}
	if rep.Answered != rep.Offered || rep.GenP50us <= 0 || rep.GenP99us < rep.GenP50us {
		t.Errorf("answered %d of %d; generator lateness p50 %v p99 %v: want every request answered and positive, ordered lateness",
			rep.Answered, rep.Offered, rep.GenP50us, rep.GenP99us)
	}
	if runtime.GOOS == "linux" && (rep.ClientCPUPer100k <= 0 || rep.NodesCPUPer100k <= 0) {
		t.Errorf("CPU per 100k decisions: client %v s, nodes %v s; want both measured on Linux", rep.ClientCPUPer100k, rep.NodesCPUPer100k)
	}
}

// Strict mode with the TCP baseline: both loads run, every request of the
// baseline is answered, and its servers are gone afterwards.
func TestBenchStrictTCPBaseline(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a node process")
	}
	var rep loadgen.Report
	out := runBench(t, &rep, "--local-cluster", "1", "--strict", "--rate", "2000", "--duration", "2s",
		"--warmup", "0s", "--tcp-baseline", "--json", "--request-timeout", "10s")
	if rep.Mode != "strict" || rep.Errors != 0 || rep.Answered != rep.Offered {
		t.Errorf("strict run: mode %q, errors %d (%s), answered %d of %d", rep.Mode, rep.Errors, rep.FirstError, rep.Answered, rep.Offered)
	}
	b := rep.TCPBaseline
	if b == nil {
		t.Fatalf("no tcp_baseline in the output:\n%s", out)
	}
	if b.Mode != "tcp" || b.Offered != rep.Offered || b.Answered != b.Offered || b.Errors != 0 || b.Rate != 2000 {
		t.Errorf("baseline: mode %q, offered %d (strict run: %d), answered %d, errors %d (%s), rate %v",
			b.Mode, b.Offered, rep.Offered, b.Answered, b.Errors, b.FirstError, b.Rate)
	}
	if b.Admitted != 0 || b.Error != 0 || b.PerSecond != nil {
		t.Errorf("baseline reports accuracy (admitted %d, error %v): its answers mean nothing", b.Admitted, b.Error)
	}
	if b.P50us <= 0 || b.P99us < b.P50us {
		t.Errorf("baseline latencies p50 %v p99 %v: want positive and ordered", b.P50us, b.P99us)
	}
}

// A node that cannot start is named, with the tail of its log, and the
// others are stopped.
func TestBenchNodeDiesEarly(t *testing.T) {
	tmp := benchChild(t)
	code, _, errOut := runCmd(t, 60*time.Second, "bench", "--local-cluster", "2", "--duration", "1s", "--serve-flag=--no-such-flag")
	if code != 1 {
		t.Errorf("exit code %d, want 1; stderr:\n%s", code, errOut)
	}
	for _, want := range []string{"node process exited early: n", ".log:", "no-such-flag"} {
		if !strings.Contains(errOut, want) {
			t.Errorf("stderr does not mention %q:\n%s", want, errOut)
		}
	}
	checkCleanedUp(t, tmp)
}

func TestBenchBadFlags(t *testing.T) {
	certDir := t.TempDir()
	for _, tc := range []struct {
		args []string
		want string
	}{
		{nil, "give --local-cluster N"},
		{[]string{"--local-cluster", "3", "--addrs", "127.0.0.1:7946"}, "give one of them"},
		{[]string{"--local-cluster", "300"}, "--local-cluster 300: want 1 to 245"},
		{[]string{"--local-cluster", "-1"}, "--local-cluster -1"},
		{[]string{"--addrs", "127.0.0.1:7946"}, "--addrs needs --certs"},
		{[]string{"--addrs", "nohost", "--certs", certDir}, `--addrs: "nohost"`},
		{[]string{"--local-cluster", "3", "--certs", certDir}, "only with --addrs"},
		{[]string{"--addrs", "127.0.0.1:7946", "--certs", certDir, "--serve-flag", "--x"}, "only with --local-cluster"},
		{[]string{"--addrs", "127.0.0.1:7946", "--certs", certDir, "--log-dir", certDir}, "--log-dir"},
		{[]string{"--local-cluster", "3", "--pattern", "zigzag"}, "--pattern"},
		{[]string{"--local-cluster", "3", "--arrivals", "bursty"}, "--arrivals"},
		{[]string{"--local-cluster", "3", "--limit", "fast"}, "--limit"},
		{[]string{"--local-cluster", "3", "--key", "a b"}, "--key"},
		{[]string{"--local-cluster", "3", "--duration", "0s"}, "--duration 0s"},
		{[]string{"--local-cluster", "3", "--warmup", "-1s"}, "--warmup -1s"},
		{[]string{"--local-cluster", "3", "--multiplier", "0"}, "--multiplier 0"},
		{[]string{"--local-cluster", "3", "--rate", "-5"}, "--rate -5"},
		{[]string{"--local-cluster", "3", "--workers", "-1"}, "--workers -1"},
		{[]string{"--local-cluster", "3", "--tick", "0s"}, "--tick 0s"},
		{[]string{"--local-cluster", "3", "--tick", "1s"}, "--tick 1s"},
		{[]string{"--local-cluster", "3", "--tcp-baseline"}, "--tcp-baseline: only with --strict"},
		{[]string{"--local-cluster", "3", "--strict", "--rate", "1000", "--find-max", "--tcp-baseline"}, "--tcp-baseline: not with --find-max"},
		{[]string{"--local-cluster", "3", "--lease-ttl", "0s"}, "--lease-ttl 0s"},
		{[]string{"--local-cluster", "3", "--request-timeout", "0s"}, "--request-timeout 0s"},
		{[]string{"--local-cluster", "3", "--find-max"}, "--find-max needs --rate"},
		{[]string{"--local-cluster", "3", "--rate", "1000", "--find-max", "--find-max-step", "1"}, "--find-max-step 1"},
		{[]string{"--local-cluster", "three"}, "invalid argument"},
		{[]string{"--local-cluster", "3", "extra"}, "unknown command"},
	} {
		code, _, errOut := runCmd(t, 10*time.Second, append([]string{"bench"}, tc.args...)...)
		if code != 2 || !strings.Contains(errOut, tc.want) {
			t.Errorf("bench %s: exit code %d, stderr %q; want 2 and a message with %q", strings.Join(tc.args, " "), code, errOut, tc.want)
		}
	}
	// A certificates directory without certificates: a clear error, not a
	// usage one.
	code, _, errOut := runCmd(t, 10*time.Second, "bench", "--addrs", "127.0.0.1:7946", "--certs", certDir, "--duration", "1s")
	if code != 1 || !strings.Contains(errOut, "--certs "+certDir) {
		t.Errorf("bench with an empty --certs: exit code %d, stderr %q; want 1 and a message naming --certs", code, errOut)
	}
}

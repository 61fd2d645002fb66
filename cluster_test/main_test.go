//go:build fault

// Package cluster_test is QuotaMesh's Jepsen-style fault suite: it runs real
// `quotamesh serve` processes as separate hosts (see Backend), drives load
// and limit changes through the SDK while nemeses partition, kill, pause,
// skew and degrade them, records every operation, and checks the promises of
// docs/design.md against the history. docs/faults.md says how to run it.
//
//	go test -tags fault ./cluster_test/...                  # short form
//	go test -tags fault -timeout 60m ./cluster_test/ -long  # long form
package cluster_test

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"
)

var (
	flagBackend = flag.String("backend", envOr("QUOTAMESH_FAULT_BACKEND", "auto"), "hosts: auto, process, netns or docker (env QUOTAMESH_FAULT_BACKEND)")
	flagLong    = flag.Bool("long", false, "run the long form: every nemesis, 3 and 5 nodes, several rounds")
	flagRounds  = flag.Int("rounds", 2, "rounds of the nemesis schedule in the long form")
	flagReports = flag.String("reports", "", "directory for run reports (default cluster_test/reports)")
	flagKeep    = flag.Bool("keep", false, "keep node data directories after the run")
	flagMode    = flag.String("mode", "both", "SDK decision mode of the load: strict, lease, or both (two loads at once, each on its own key)")
	flagNemeses = flag.String("nemeses", "", "comma-separated nemeses to run instead of the form's schedule (e.g. pause or bridge,flapping-link)")
	flagNodes   = flag.String("nodes", "3,5", "comma-separated cluster sizes of the long form")
)

// flagModes returns the decision modes -mode names.
func flagModes() []string {
	if *flagMode == "both" {
		return []string{modeStrict, modeLease}
	}
	return []string{*flagMode}
}

// checkFlags reports a flag value the suite cannot run.
func checkFlags() error {
	switch *flagMode {
	case modeStrict, modeLease, "both":
	default:
		return fmt.Errorf("-mode %q: use strict, lease or both", *flagMode)
	}
	all := allNemeses(time.Second)
	for _, name := range splitList(*flagNemeses) {
		if _, ok := all[name]; !ok {
			return fmt.Errorf("-nemeses: no nemesis %q (have %s)", name, strings.Join(nemesisNames(all), ", "))
		}
	}
	for _, n := range splitList(*flagNodes) {
		if v, err := strconv.Atoi(n); err != nil || v < 1 || v > 9 {
			return fmt.Errorf("-nodes: %q is not a cluster size from 1 to 9", n)
		}
	}
	return nil
}

// splitList splits a comma-separated flag value, dropping empty items.
func splitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

// schedule returns the nemeses named by -nemeses, or those of def, from
// all, in order.
func schedule(all map[string]nemesis, def []string) []nemesis {
	names := splitList(*flagNemeses)
	if len(names) == 0 {
		names = def
	}
	out := make([]nemesis, 0, len(names))
	for _, n := range names {
		out = append(out, all[n])
	}
	return out
}

// suite holds what TestMain prepares once: the binary.
var suite struct {
	bin     string // path of the quotamesh binary
	workDir string // temporary directory for the binary
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

func TestMain(m *testing.M) {
	flag.Parse()
	if err := checkFlags(); err != nil {
		fmt.Fprintln(os.Stderr, "cluster_test:", err)
		os.Exit(2)
	}
	code, err := prepare()
	if err != nil {
		fmt.Fprintln(os.Stderr, "cluster_test:", err)
		os.Exit(2)
	}
	code = m.Run()
	_ = os.RemoveAll(suite.workDir)
	os.Exit(code)
}

// prepare builds the quotamesh binary (CGO_ENABLED=0, static, so that it
// runs in a FROM scratch image too).
func prepare() (int, error) {
	dir, err := os.MkdirTemp("", "quotamesh-fault-")
	if err != nil {
		return 0, fmt.Errorf("temporary directory: %w", err)
	}
	suite.workDir = dir
	suite.bin = filepath.Join(dir, "quotamesh")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", "build", "-tags", "fault", "-o", suite.bin, "./cmd/quotamesh") // the fault layer: --fault-control, --unsafe-ignore-share
	cmd.Dir = repoRoot()
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return 0, fmt.Errorf("go build ./cmd/quotamesh: %w\n%s", err, out)
	}
	return 0, nil
}

// repoRoot is the module root: the parent of this package's directory.
func repoRoot() string {
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		wd, _ := os.Getwd()
		return filepath.Dir(wd)
	}
	return filepath.Dir(filepath.Dir(file))
}

// reportsDir is where run reports go.
func reportsDir() string {
	if *flagReports != "" {
		return *flagReports
	}
	return filepath.Join(repoRoot(), "cluster_test", "reports")
}

// runName names a run's report directory: the time, the test and the
// backend.
func runName(t *testing.T, backend string, nodes int) string {
	name := strings.NewReplacer("/", "-", " ", "_").Replace(t.Name())
	return fmt.Sprintf("%s-%s-%s-%dn", time.Now().UTC().Format("20060102T150405"), name, backend, nodes)
}

//go:build fault

package cluster_test

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/quotamesh/quotamesh/client"
	"github.com/quotamesh/quotamesh/limits"
)

// scenario is one run: a cluster, a load and a nemesis schedule.
type scenario struct {
	Nodes   int
	Limit   int64 // per second, on each load's key
	Extra   map[int][]string
	Nemeses []nemesis     // in order, each applied once per round
	Rounds  int           // rounds of the schedule (at least 1)
	Settle  time.Duration // load before the first fault
	Recover time.Duration // after each heal before the next fault
	Seed    uint64
	// FillMinute keeps the load going after a schedule shorter than a
	// minute until a whole minute of it is checked (runs of nemeses chosen
	// with -nemeses), so that the 1-minute verdicts have a window.
	FillMinute bool
	// Modes are the SDK decision modes whose loads run, at the same time,
	// each on its own key with the limit (default: the -mode flag's).
	Modes []string
	// Docker lets -backend auto choose docker (the long form).
	Docker bool
}

// warmup is how long the load runs before the checked history starts.
const warmup = 8 * time.Second

// minRun is the least checked load of a run: a minute and a bucket.
const minRun = time.Minute + bucketWidth

// runResult is what a run produced.
type runResult struct {
	Dir      string
	Backend  string
	Verdicts []Verdict
}

func (r runResult) failed(checker string) []Verdict {
	var out []Verdict
	for _, v := range r.Verdicts {
		if !v.Pass && (checker == "" || v.Checker == checker) {
			out = append(out, v)
		}
	}
	return out
}

// run executes sc and writes its report; it fails t only for harness
// errors, leaving verdicts to the caller.
func run(t *testing.T, sc scenario) runResult {
	t.Helper()
	be, err := chooseBackend(*flagBackend, sc.Docker)
	if err != nil {
		t.Fatalf("backend: %v", err)
	}
	dir := filepath.Join(reportsDir(), runName(t, be.Name(), sc.Nodes))
	t.Logf("backend %s, report in %s", be.Name(), dir)
	var ids []string
	for i := range sc.Nodes {
		ids = append(ids, fmt.Sprintf("n%d", i+1))
	}
	h := newHistory(ids)
	c := newCluster(t, be, clusterSpec{Nodes: sc.Nodes, Extra: sc.Extra}, dir, h)
	if err := c.waitReady(90 * time.Second); err != nil {
		t.Fatalf("cluster: %v", err)
	}
	modes := sc.Modes
	if len(modes) == 0 {
		modes = flagModes()
	}
	var loads []*load
	for _, mode := range modes {
		ld := &load{mode: mode, key: loadKeys[mode], clients: make([]*client.Client, sc.Nodes), log: h.newLog(mode, loadKeys[mode])}
		for i := range ld.clients {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			ld.clients[i], err = c.dial(ctx, i, mode)
			cancel()
			if err != nil {
				t.Fatalf("dial %s (%s): %v", ids[i], mode, err)
			}
			cl := ld.clients[i]
			t.Cleanup(func() { _ = cl.Close() }) // before the cluster stops (LIFO)
		}
		loads = append(loads, ld)
		c.keys = append(c.keys, ld.key)
	}
	for _, ld := range loads {
		rule := limits.Rule{Pattern: ld.key, Rate: limits.Rate{Count: sc.Limit, Window: time.Second}}
		if err := c.setLimitEverywhere(ld.clients, rule, 60*time.Second); err != nil {
			t.Fatalf("limit: %v", err)
		}
	}
	offered := 2 * float64(sc.Limit)
	l := startLoader(h, loads, offered/float64(sc.Nodes))
	loaderStopped := false
	stopLoader := func() {
		if !loaderStopped {
			loaderStopped = true
			l.close()
		}
	}
	t.Cleanup(stopLoader)
	for _, ld := range loads {
		h.event("load", "", fmt.Sprintf("%s: %.0f/s offered against %d/s on %s, %.0f/s per node", ld.mode, offered, sc.Limit, ld.key, offered/float64(sc.Nodes)))
	}

	// The load's start is a demand shift of 2L/s on every node at once,
	// which design.md §7 bounds only transiently (ε_W ≤ ρτ(1−1/N)): the
	// bounds are checked from warmup on.
	time.Sleep(warmup)
	from := h.bucket(time.Now()) + 1
	before := map[string]runtimeFigures{}
	for i, n := range c.nodes {
		if f, err := c.runtimeFigures(i); err == nil {
			before[n.ID] = f
		} else {
			t.Logf("runtime figures: %v", err)
		}
	}

	rng := rand.New(rand.NewPCG(sc.Seed, sc.Seed^0x9e3779b97f4a7c15))
	var faults []faultWindow
	var verdicts []Verdict
	time.Sleep(sc.Settle)
	for round := range max(sc.Rounds, 1) {
		for _, nem := range sc.Nemeses {
			if nem.minNodes > sc.Nodes {
				continue
			}
			name := nem.name
			if sc.Rounds > 1 {
				name = fmt.Sprintf("%s#%d", nem.name, round+1)
			}
			fw := faultWindow{Name: name, Bound: nem.bound, Start: time.Duration(h.now())}
			detail, heal, err := nem.start(c, nem.target, rng)
			fw.Detail = detail
			if err == nil {
				t.Logf("%v %s: %s", fw.Start.Round(time.Millisecond), name, detail)
				time.Sleep(nem.duration)
				err = heal()
			}
			fw.End = time.Duration(h.now())
			if err != nil {
				fw.Err = err.Error()
				t.Logf("%s: %v", name, err)
				// Leave the cluster as whole as we can for what follows.
				_ = c.healNet()
				for _, n := range c.nodes {
					if !n.Running() {
						if rerr := n.Restart(); rerr != nil {
							t.Logf("restart %s: %v", n.ID, rerr)
						}
					}
				}
			}
			h.add(Op{Type: "fault", Name: name, Detail: detail, Invoke: int64(fw.Start), Complete: int64(fw.End), Error: fw.Err})
			faults = append(faults, fw)
			healed := time.Now()
			took, cerr := c.converge(loads, float64(sc.Limit), convergeWithin)
			cv := Verdict{Checker: "converge", Fault: name, Promise: fmt.Sprintf("after heal every node serves, unfenced, hears every member and has the same estimate (±%.0f%% of L) within %v", convergeTol*100, convergeWithin)}
			if fw.Err != "" {
				cv.Detail = "nemesis failed: " + fw.Err
			} else if cerr != nil {
				cv.Detail = cerr.Error()
			} else {
				cv.Pass, cv.Detail = true, fmt.Sprintf("converged %v after heal", took.Round(10*time.Millisecond))
			}
			verdicts = append(verdicts, cv)
			// The resets the nemesis took, once the node that missed them
			// has reported their floor (or the watch gave up), for the
			// checkers; faults is the fault windows' only copy.
			faults[len(faults)-1].Resets = c.takeResets()
			verdicts = append(verdicts, rejoinVerdicts(faults[len(faults)-1])...)
			if rest := sc.Recover - time.Since(healed); rest > 0 {
				time.Sleep(rest)
			}
		}
	}
	// A schedule shorter than a minute (one nemesis chosen with -nemeses)
	// goes on under load until a whole minute of it can be checked, so
	// that the 1-minute verdicts have a window that overlaps each fault.
	tail := 24 * time.Hour // when the load went on only to fill a minute
	if rest := h.bucketStart(from) + minRun - time.Duration(h.now()); sc.FillMinute && rest > 0 {
		tail = time.Duration(h.now())
		t.Logf("load goes on %v, for a whole minute of checked load", rest.Round(time.Second))
		time.Sleep(rest)
	}
	to := h.bucket(time.Now())
	end := time.Duration(h.now())
	stopLoader()

	// Final reads: every node, every register key.
	_ = c.healNet()
	if err := c.waitReady(30 * time.Second); err != nil {
		t.Logf("before final reads: %v", err)
	}
	for i := range sc.Nodes {
		for _, key := range registerKeys {
			l.get(finalProcess+i, i, key)
		}
	}

	// Crashes and leaks.
	crash := Verdict{Checker: "no-crash", Promise: "every process alive unless the nemesis killed it"}
	dead := c.crashed()
	for _, n := range c.nodes {
		if !n.Running() {
			dead = append(dead, n.ID+" not running at the end")
		}
	}
	crash.Pass = len(dead) == 0
	crash.Detail = "all alive"
	if !crash.Pass {
		crash.Detail = strings.Join(dead, "; ")
	}
	verdicts = append(verdicts, crash)
	leak := Verdict{Checker: "bounded-resources", Promise: "per node: goroutines ≤ 1.5×before+50, heap in use ≤ 2×before+64 MiB (go_goroutines, go_memstats_heap_inuse_bytes)", Pass: true}
	var figs []string
	for i, n := range c.nodes {
		b, ok := before[n.ID]
		if !ok || !n.Running() {
			continue
		}
		a, err := c.runtimeFigures(i)
		if err != nil {
			leak.Pass = false
			figs = append(figs, err.Error())
			continue
		}
		ok = a.Goroutines <= 1.5*b.Goroutines+50 && a.HeapInuse <= 2*b.HeapInuse+64<<20
		leak.Pass = leak.Pass && ok
		figs = append(figs, fmt.Sprintf("%s goroutines %.0f→%.0f heap %.1f→%.1f MiB", n.ID, b.Goroutines, a.Goroutines, b.HeapInuse/(1<<20), a.HeapInuse/(1<<20)))
	}
	if len(figs) == 0 {
		leak.Pass = false
		figs = append(figs, "no figures")
	}
	leak.Detail = strings.Join(figs, "; ")
	verdicts = append(verdicts, leak)

	// Bounds (per load), linearizability, lost changes.
	p := boundParams{Limit: float64(sc.Limit), Window: time.Second, Nodes: sc.Nodes}
	for _, ld := range loads {
		bc := newBoundChecker(ld.log, p, faults, from, to)
		bc.tail = tail
		verdicts = append(verdicts, bc.baseline(), bc.minute())
		verdicts = append(verdicts, bc.perFault(end)...)
	}
	ops := h.Ops()
	verdicts = append(verdicts, checkLinearizable(ops, filepath.Join(dir, "linearizability.html")), checkNoLostChange(ops))

	res := runResult{Dir: dir, Backend: be.Name(), Verdicts: verdicts}
	if err := writeReport(dir, h, sc, res, faults, p, from, to); err != nil {
		t.Errorf("report: %v", err)
	}
	for _, v := range verdicts {
		t.Log(v.String())
	}
	return res
}

// converge waits until every running node serves unfenced, hears every
// member, and the nodes' estimates of each load key's window count (the sum
// of their per-node views) agree within convergeTol of the limit.
func (c *Cluster) converge(loads []*load, limit float64, within time.Duration) (time.Duration, error) {
	start := time.Now()
	var why string
	for time.Since(start) < within {
		why = ""
		lo, hi := make([]float64, len(loads)), make([]float64, len(loads))
		for k := range loads {
			lo[k], hi[k] = math.Inf(1), math.Inf(-1)
		}
		for i, n := range c.nodes {
			if !n.Running() {
				why = n.ID + " not running"
				break
			}
			st, err := c.status(i)
			if err != nil {
				why = err.Error()
				break
			}
			if !st.Serving || st.Fenced {
				why = fmt.Sprintf("%s serving=%v fenced=%v", n.ID, st.Serving, st.Fenced)
				break
			}
			for _, m := range st.Members {
				if !m.Reachable {
					why = fmt.Sprintf("%s does not hear %s", n.ID, m.ID)
				}
			}
			for k, ld := range loads {
				var est float64
				found := false
				for _, tk := range st.TopKeys {
					if tk.Key == ld.key {
						found = true
						for _, v := range tk.PerNode {
							est += float64(v)
						}
					}
				}
				if !found {
					why = fmt.Sprintf("%s does not list %s", n.ID, ld.key)
				}
				lo[k], hi[k] = math.Min(lo[k], est), math.Max(hi[k], est)
			}
		}
		for k, ld := range loads {
			if why == "" && hi[k]-lo[k] > convergeTol*limit {
				why = fmt.Sprintf("estimates of %s differ: %.0f to %.0f", ld.key, lo[k], hi[k])
			}
		}
		if why == "" {
			return time.Since(start), nil
		}
		time.Sleep(250 * time.Millisecond)
	}
	return 0, fmt.Errorf("not converged %v after heal: %s", within, why)
}

// writeReport writes history.jsonl, verdicts.json, verdicts.txt and a
// timeline-<mode>.svg per load into dir.
func writeReport(dir string, h *History, sc scenario, res runResult, faults []faultWindow, p boundParams, from, to int) error {
	if err := h.write(filepath.Join(dir, "history.jsonl")); err != nil {
		return err
	}
	type loadDoc struct {
		Mode   string `json:"mode"`
		Key    string `json:"key"`
		Shed   int64  `json:"shed"`
		Failed int64  `json:"failed_decisions"`
	}
	var loads []loadDoc
	for _, d := range h.logs {
		loads = append(loads, loadDoc{d.mode, d.key, d.shed.Load(), d.failedTotal()})
	}
	doc := map[string]any{
		"backend": res.Backend, "nodes": sc.Nodes, "limit_per_sec": sc.Limit, "offered_per_sec": 2 * sc.Limit,
		"seed": sc.Seed, "loads": loads, "faults": faults, "verdicts": res.Verdicts,
		"bound_1s_normal": p.factor(boundNormal), "bound_1s_clock": p.factor(boundClock),
	}
	b, err := json.MarshalIndent(doc, "", "  ")
	if err != nil {
		return fmt.Errorf("verdicts: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "verdicts.json"), b, 0o644); err != nil {
		return fmt.Errorf("verdicts: %w", err)
	}
	var txt strings.Builder
	fmt.Fprintf(&txt, "backend %s, %d nodes, limit %d/s, offered %d/s per load, seed %d\n", res.Backend, sc.Nodes, sc.Limit, 2*sc.Limit, sc.Seed)
	for _, l := range loads {
		fmt.Fprintf(&txt, "load %-6s on %s: %d requests shed by the generator, %d decisions failed (unknown outcome, not counted)\n", l.Mode, l.Key, l.Shed, l.Failed)
	}
	for _, f := range faults {
		fmt.Fprintf(&txt, "fault %-20s %8v–%-8v %s %s\n", f.Name, f.Start.Round(time.Millisecond), f.End.Round(time.Millisecond), f.Detail, f.Err)
		for _, r := range f.Resets {
			fmt.Fprintf(&txt, "      %s\n", r)
		}
	}
	for _, v := range res.Verdicts {
		fmt.Fprintln(&txt, v.String())
	}
	if err := os.WriteFile(filepath.Join(dir, "verdicts.txt"), []byte(txt.String()), 0o644); err != nil {
		return fmt.Errorf("verdicts: %w", err)
	}
	for _, d := range h.logs {
		svg := timelineSVG(d, faults, float64(sc.Limit), p, from, to)
		if err := os.WriteFile(filepath.Join(dir, "timeline-"+d.mode+".svg"), []byte(svg), 0o644); err != nil {
			return fmt.Errorf("timeline: %w", err)
		}
	}
	return nil
}

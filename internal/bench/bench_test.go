package bench

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/quotamesh/quotamesh/internal/accuracy"
	"github.com/quotamesh/quotamesh/internal/loadgen"
	"github.com/quotamesh/quotamesh/internal/localcluster"
)

func plan(t *testing.T, change func(*Options)) Plan {
	t.Helper()
	o := DefaultOptions()
	o.LocalCluster = 3
	change(&o)
	p, err := o.Validate()
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// The offered load: multiplier × limit without a rate, the rate itself
// with one, on as many nodes as the cluster has.
func TestLoadAt(t *testing.T) {
	p := plan(t, func(o *Options) { o.Workload.Limit, o.Workload.Multiplier = "500/s", 3 })
	for i, tc := range []struct {
		rate float64
		all  float64
	}{
		{0, 1500},
		{2000, 2000},
	} {
		l := p.loadAt(tc.rate)
		if l.Nodes != 3 || l.BaseRate() != tc.all || l.Limit.PerSecond() != 500 {
			t.Errorf("step %d: loadAt(%v) = %v/s on %d nodes, limit %v; want %v/s on 3, limit 500/s",
				i, tc.rate, l.BaseRate(), l.Nodes, l.Limit, tc.all)
		}
	}
	many := plan(t, func(o *Options) { o.Workload.Rule, o.Workload.Keys, o.Workload.Limit = "user:*", 200, "10/s" })
	if l := many.loadAt(0); l.BaseRate() != 200*10*2 || l.Keys != 200 {
		t.Errorf("200 keys at 2x of 10/s: loadAt(0) = %v/s over %d keys, want 4000/s over 200", l.BaseRate(), l.Keys)
	}
	if n := plan(t, func(o *Options) { o.LocalCluster, o.Addrs, o.Certs = 0, []string{"a:1", "b:1"}, "certs" }).nodes(); n != 2 {
		t.Errorf("nodes() with two --addrs = %d, want 2", n)
	}
}

func TestValidate(t *testing.T) {
	for i, tc := range []struct {
		change func(*Options)
		want   string
	}{
		{func(o *Options) { o.LocalCluster = 0 }, "give --local-cluster N"},
		{func(o *Options) { o.LocalCluster = MaxLocalNodes + 1 }, "want 1 to 245 nodes"},
		{func(o *Options) { o.Tick = 0 }, "--tick 0s"},
		{func(o *Options) { o.FindMax, o.Workload.Rate, o.FindMaxSteps = true, 100, 0 }, "--find-max-steps 0"},
		{func(o *Options) { o.FindMax, o.Workload.Rate, o.P99Target = true, 100, 0 }, "--p99-target 0s"},
		{func(o *Options) { o.Duration = 25 * time.Hour }, "--duration 25h0m0s"},
		{func(o *Options) { o.Workload.Keys = 10 }, "--keys 10"},
		{func(o *Options) { o.Workload.Pattern = "flash:x" }, "--pattern"},
	} {
		o := DefaultOptions()
		o.LocalCluster = 3
		tc.change(&o)
		if _, err := o.Validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("step %d: Validate() = %v, want an error with %q", i, err, tc.want)
		}
	}
}

func TestParseAppliedIndex(t *testing.T) {
	if got, err := parseAppliedIndex("n1", []byte(`{"node":"n1","raft":{"applied_index":42,"leader":"n2"}}`)); got != 42 || err != nil {
		t.Errorf("parseAppliedIndex = %d, %v; want 42", got, err)
	}
	if _, err := parseAppliedIndex("n1", []byte(`{"raft":`)); err == nil || !strings.Contains(err.Error(), "status of n1") {
		t.Errorf("parseAppliedIndex of a broken document = %v, want an error naming n1", err)
	}
}

// orDied prefers a dead process's story to the error it caused.
func TestOrDied(t *testing.T) {
	boom := errors.New("boom")
	if err := orDied(nil, boom); err != boom {
		t.Errorf("orDied(no cluster, boom) = %v, want boom", err)
	}
	g, err := localcluster.NewGroup(t.TempDir(), "", true)
	if err != nil {
		t.Fatal(err)
	}
	if err := orDied(g, boom); err != boom {
		t.Errorf("orDied(live group, boom) = %v, want boom", err)
	}
}

// The text report: the table and every figure, as `quotamesh bench`
// prints it.
func TestPrint(t *testing.T) {
	p := plan(t, func(o *Options) { o.Duration = 10 * time.Second })
	rep := loadgen.Report{Report: accuracy.Report{Nodes: 2, Offered: 30, Admitted: 12, Ideal: 10, Error: 0.2, MaxWindowRatio: 1.5,
		PerNode: []accuracy.NodeReport{{Node: "n1", Offered: 20, Admitted: 8}, {Node: "n2", Offered: 10, Admitted: 4}},
		PerKey: accuracy.KeyReport{Keys: 1, Offered: 1, AbsErrorP50: 2, AbsErrorP90: 2, AbsErrorMax: 2, Within: 1,
			Worst: accuracy.KeyCounts{Key: "bench", Offered: 30, Admitted: 12, Ideal: 10, Error: 0.2}, UnderLimit: 10, FalseDenials: 1,
			FalseDenialShare: 0.1, MaxAlignedRatio: 1.2, MaxAlignedKey: "bench", MaxAlignedAt: "3s", IdealMaxAlignedRatio: 1,
			MaxAlignedAnswerRatio: 1.3}},
		IdealMaxWindowRatio: 1.25, Mode: "lease", AchievedRPS: 3, P50us: 10, P99us: 20, P999us: 30, MaxUs: 40,
		ServiceP50us: 1, ServiceP99us: 2, GenP50us: 5, GenP99us: 6, GenMaxUs: 7, ClientCPUPer100k: 0.5, NodesCPUPer100k: 0.25,
		Errors: 1, Unsent: 2, Elapsed: "10s"}
	var b strings.Builder
	printBench(&b, p, rep)
	want := `2 nodes, key bench at 1000/s, 2x, steady, spread, uniform arrivals for 10s; lease mode, keys to their home node, 8 workers per node

     node  offered  admitted
       n1       20         8
       n2       10         4
  cluster       30        12

ideal (a perfect limiter, same window, same requests): 10
error against the ideal:  20.000 %
largest window / limit:   1.500 (the ideal's: 1.250)
per key (1 keys, 1 offered): |admitted − ideal| p50 2, p90 2, max 2 requests; within 1 % or 2 requests of the ideal: 100.0 % of keys
worst key bench: offered 30, admitted 12, ideal 10 (+20.00 %)
denied while the key's demand was within its limit: 1 of 10 requests (10.000 %)
largest aligned window of one key / limit, at decision times: 1.200 (bench, window from 3s); at answer times: 1.300; the ideal's: 1.000
answered 3/s; latency from intended send: p50 10 µs, p99 20 µs, p99.9 30 µs, max 40 µs (call alone: p50 1 µs, p99 2 µs)
generator lateness (part of the latency): p50 5 µs, p99 6 µs, max 7 µs
CPU per 100k decisions: 0.500 s in this process (SDK and generator), 0.250 s in the nodes
errors 1, unsent 2, elapsed 10s

`
	if b.String() != want {
		t.Errorf("printBench:\n%s\nwant:\n%s", b.String(), want)
	}

	b.Reset()
	rep.Mode, rep.Rate, rep.NodesCPUPer100k = "tcp", 500, 0
	p.Workers = 0
	printBench(&b, p, rep)
	if first, _, _ := strings.Cut(b.String(), "\n"); first != "2 TCP servers, key bench at 1000/s, 500/s in all, steady, spread, uniform arrivals for 10s; tcp mode, calls made by the generator" ||
		strings.Contains(b.String(), "ideal") || !strings.Contains(b.String(), "(SDK and generator)\n") {
		t.Errorf("printBench of a TCP baseline:\n%s", b.String())
	}

	b.Reset()
	p.P99Target = 25 * time.Microsecond
	printFindMax(&b, p, []loadgen.Report{
		{Rate: 100, AchievedRPS: 100, P50us: 5, P99us: 10, P999us: 12},
		{Rate: 200, AchievedRPS: 199, P50us: 6, P99us: 20, P999us: 22},
		{Rate: 400, AchievedRPS: 350, P50us: 9, P99us: 90, P999us: 99},
	})
	want = `  rate  achieved/s  p50 µs  p99 µs  p99.9 µs  errors  unsent
   100         100       5      10        12       0       0
   200         199       6      20        22       0       0
   400         350       9      90        99       0       0

highest rate within P99 25µs: 199/s
`
	if b.String() != want {
		t.Errorf("printFindMax:\n%s\nwant:\n%s", b.String(), want)
	}
}

package runner

import (
	"bytes"
	"errors"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/quotamesh/quotamesh/internal/peerbench/score"
)

func TestSaturatedSteps(t *testing.T) {
	target := 5 * time.Millisecond
	ok := func(rate float64) Step { return Step{Rate: rate, Achieved: rate, P99us: 1000} }
	slow := func(rate float64) Step { return Step{Rate: rate, Achieved: rate, P99us: 6000} }
	behind := func(rate float64) Step { return Step{Rate: rate, Achieved: 0.9 * rate, P99us: 1000} }
	failing := func(rate float64) Step { return Step{Rate: rate, Achieved: rate, P99us: 1000, Failed: 1} }
	unsent := func(rate float64) Step { return Step{Rate: rate, Achieved: rate, P99us: 1000, Unsent: 3} }
	steps := []struct {
		steps          []Step
		within, keptUp int
	}{
		{[]Step{ok(1000), ok(1500), slow(2250), behind(3375)}, 1, 2},
		{[]Step{ok(1000), ok(1500)}, 1, 1},
		{[]Step{slow(1000)}, -1, 0},
		{[]Step{behind(1000)}, -1, -1},
		{[]Step{ok(1000), behind(1500)}, 0, 0},
		{[]Step{ok(1000), failing(1500)}, 0, 0},
		{[]Step{ok(1000), unsent(1500)}, 0, 0},
		// A step at exactly the target passes; 95 % answered keeps up.
		{[]Step{{Rate: 1000, Achieved: 950, P99us: 5000}}, 0, 0},
		// The best is the highest achieved, not the last step.
		{[]Step{{Rate: 1000, Achieved: 1000, P99us: 100}, {Rate: 1500, Achieved: 1450, P99us: 100}, {Rate: 2250, Achieved: 2140, P99us: 100}}, 2, 2},
		{[]Step{slow(1000), ok(1500)}, 1, 1},
		{nil, -1, -1},
	}
	for i, st := range steps {
		within, kept := Saturated(st.steps, target)
		if within != st.within || kept != st.keptUp {
			t.Errorf("step %d: Saturated(%+v) = %d, %d, want %d, %d", i, st.steps, within, kept, st.within, st.keptUp)
		}
	}
}

func TestCells(t *testing.T) {
	r := Row{Case: "uniform", System: Gubernator, Offered: 2000, Decided: 1999.6,
		Score: &score.Result{Error: 0.0212, Under: 0.0012, Over: 0.02, MaxAligned: 1.184, UnderLimit: 1000, FalseDenials: 3},
		P50us: 186, P99us: 2345, ServersCPU: 0.1, ClientsCPU: 0.25, Failed: 2, Unsent: 5}
	got := r.cells()
	want := []string{"uniform", Gubernator, "2,000", "2,000", "2.12 % (−0.12 %/+2.00 %)", "1.18", "0.30 % (3 of 1000)",
		"186 µs", "2.3 ms", "0.35 (0.10 + 0.25)", "2 (+5 unsent)", ""}
	if len(got) != len(columns) {
		t.Fatalf("%d cells for %d columns", len(got), len(columns))
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("cell %d (%s) = %q, want %q", i, columns[i], got[i], want[i])
		}
	}
	lat := Row{Case: "latency", System: QuotaMeshLeases, Decided: 1e6, P50us: 20, P99us: 1.5e6, ServersCPU: -1, ClientsCPU: 0.4}
	got = lat.cells()
	for i, w := range map[int]string{2: "–", 3: "1,000,000", 4: "–", 5: "–", 6: "–", 8: "1.50 s", 9: "–", 10: "0"} {
		if got[i] != w {
			t.Errorf("latency row: cell %d (%s) = %q, want %q", i, columns[i], got[i], w)
		}
	}
}

func TestCPU(t *testing.T) {
	for _, st := range []struct{ srv, cli, want float64 }{{0.2, 0.3, 0.5}, {-1, 0.3, -1}, {0.2, -1, -1}, {0, 0, 0}} {
		if got := (Row{ServersCPU: st.srv, ClientsCPU: st.cli}).CPU(); math.Abs(got-st.want) > 1e-12 {
			t.Errorf("CPU of servers %v + clients %v = %v, want %v", st.srv, st.cli, got, st.want)
		}
	}
}

func TestFormats(t *testing.T) {
	for _, st := range []struct {
		x    float64
		want string
	}{{0, "0"}, {999, "999"}, {1000, "1,000"}, {123456.4, "123,456"}, {1234567, "1,234,567"}, {-1, "–"}, {math.NaN(), "–"}} {
		if got := count(st.x); got != st.want {
			t.Errorf("count(%v) = %q, want %q", st.x, got, st.want)
		}
	}
	for _, st := range []struct {
		us   float64
		want string
	}{{12, "12 µs"}, {999.4, "999 µs"}, {1000, "1.0 ms"}, {12_345, "12.3 ms"}, {2_500_000, "2.50 s"}, {-1, "–"}} {
		if got := micros(st.us); got != st.want {
			t.Errorf("micros(%v) = %q, want %q", st.us, got, st.want)
		}
	}
	if got := pct(math.Inf(1)); got != "∞" {
		t.Errorf("pct(+Inf) = %q, want ∞", got)
	}
}

func TestOrderedGroupsByLoadThenSystem(t *testing.T) {
	rows := []Row{{Case: "a", System: "x"}, {Case: "b", System: "x"}, {Case: "a", System: "y"}, {Case: "b", System: "y"},
		{Case: "a", System: "z"}, {Case: "c", System: "z"}}
	var got []string
	for _, r := range Ordered(rows) {
		got = append(got, r.Case+r.System)
	}
	if want := "ax ay az bx by cz"; strings.Join(got, " ") != want {
		t.Fatalf("Ordered = %s, want %s", strings.Join(got, " "), want)
	}
	if rows[1].Case != "b" {
		t.Fatalf("Ordered changed its argument")
	}
}

func TestWriteTable(t *testing.T) {
	env := &Env{Start: time.Date(2026, 12, 7, 16, 0, 0, 0, time.UTC), End: time.Date(2026, 12, 7, 16, 12, 0, 0, time.UTC),
		LoadStart: "1.00 2.00 3.00", LoadEnd: "4.00 5.00 6.00", GoVersion: "go1.26.8", CPUs: 2, Commit: "abc1234"}
	rows := []Row{
		{Case: "one | two", System: QuotaMeshLeases, Offered: 10, Decided: 10, ServersCPU: -1, ClientsCPU: -1},
		{Case: "one | two", System: Gubernator, Offered: 10, Decided: 9, ServersCPU: -1, ClientsCPU: -1},
	}
	var md bytes.Buffer
	if err := WriteTable(&md, env, rows, true); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(md.String()), "\n")
	if !strings.Contains(lines[0], "2026-12-07 16:00 to 16:12 UTC") || !strings.Contains(lines[0], "1.00 2.00 3.00 at the start, 4.00 5.00 6.00 at the end") ||
		!strings.Contains(lines[0], "commit abc1234") {
		t.Errorf("header %q lacks the date, the load or the commit", lines[0])
	}
	table := lines[2:]
	if len(table) != 2+len(rows) {
		t.Fatalf("markdown table has %d lines, want %d:\n%s", len(table), 2+len(rows), md.String())
	}
	for i, l := range table {
		if got := strings.Count(l, "|"); got != len(columns)+1 {
			t.Errorf("markdown line %d has %d '|', want %d: %q", i, got, len(columns)+1, l)
		}
	}
	var text bytes.Buffer
	if err := WriteTable(&text, env, rows, false); err != nil {
		t.Fatal(err)
	}
	if got := strings.Count(text.String(), "one | two"); got != 1 {
		t.Errorf("text table names the load %d times, want once (rows of one load are grouped):\n%s", got, text.String())
	}
}

func TestWorkers(t *testing.T) {
	for _, st := range []struct {
		system string
		fixed  bool
		n      int
		batch  bool
	}{
		{QuotaMeshLeases, false, Workers, false},
		{QuotaMeshLeases, true, LeaseRateWorkers, true},
		{QuotaMeshStrict, true, Workers, false},
		{QuotaMeshStrict, false, Workers, false},
		{Gubernator, true, Workers, false},
	} {
		if n, b := workers(st.system, st.fixed); n != st.n || b != st.batch {
			t.Errorf("workers(%s, fixed rate %v) = %d, %v; want %d, %v", st.system, st.fixed, n, b, st.n, st.batch)
		}
	}
}

func TestValidateNamesTheFlag(t *testing.T) {
	for _, st := range []struct {
		change func(*Options)
		flag   string
	}{
		{func(o *Options) { o.Systems = []string{"redis"} }, "--systems"},
		{func(o *Options) { o.Systems = nil }, "--systems"},
		{func(o *Options) { o.Patterns = []string{"sine"} }, "--patterns"},
		{func(o *Options) { o.Limit = "1000/hour" }, "--limit"},
		{func(o *Options) { o.KeysLimit = "ten" }, "--keys-limit"},
		{func(o *Options) { o.Duration = time.Minute }, "--duration"},
		{func(o *Options) { o.KeyDists = []string{"pareto"} }, "--key-dists"},
		{func(o *Options) { o.Keys = []int{0} }, "--keys"},
		{func(o *Options) { o.Keys = []int{2_000_000} }, "--keys"},
		{func(o *Options) { o.ZipfExponent = 0 }, "--zipf"},
		{func(o *Options) { o.ZipfExponent = 11 }, "--zipf"},
		{func(o *Options) { o.Patterns = []string{"flash"} }, "--patterns"},
		{func(o *Options) { o.Arrivals = "bursty" }, "--arrivals"},
		{func(o *Options) { o.Rates = []float64{-5} }, "--rates"},
		{func(o *Options) { o.SatStep = 1 }, "--sat-step"},
		{func(o *Options) { o.P99Target = 0 }, "--p99-target"},
		{func(o *Options) { o.GuberBatch = 1001 }, "--guber-batch"},
		{func(o *Options) { o.Binary, o.Repo = "", "" }, "--quotamesh-binary"},
	} {
		o := DefaultOptions()
		st.change(&o)
		_, err := o.Validate()
		if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), st.flag) {
			t.Errorf("Validate = %v, want ErrInvalid naming %s", err, st.flag)
		}
	}
	if _, err := DefaultOptions().Validate(); err != nil {
		t.Errorf("defaults: %v", err)
	}
	if _, err := DefaultOptions().Quick().Validate(); err != nil {
		t.Errorf("quick: %v", err)
	}
	// Without QuotaMesh, no binary or repository is needed.
	o := DefaultOptions()
	o.Systems, o.Repo = []string{Gubernator}, ""
	if _, err := o.Validate(); err != nil {
		t.Errorf("Gubernator alone, no repository: %v", err)
	}
}

package workload

import (
	"errors"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/quotamesh/quotamesh/internal/pattern"
	"github.com/quotamesh/quotamesh/limits"
)

func spec(mod func(*Spec)) Spec {
	s := Spec{Nodes: 3, Rule: "user:*", Keys: 100, Limit: limits.MustParseRate("10/s"), Duration: 5 * time.Second, Seed: 7}
	if mod != nil {
		mod(&s)
	}
	return s
}

func all(t *testing.T, s Spec) []Arrival {
	t.Helper()
	g, err := NewGenerator(s)
	if err != nil {
		t.Fatalf("NewGenerator(%v) = %v", s, err)
	}
	var out []Arrival
	for a, ok := g.Next(); ok; a, ok = g.Next() {
		out = append(out, a)
	}
	return out
}

func TestParsePattern(t *testing.T) {
	for i, tc := range []struct {
		in      string
		want    Pattern
		wantErr bool
	}{
		{in: "uniform", want: Pattern{Name: "uniform"}},
		{in: "steady", want: Pattern{Name: "steady"}},
		{in: "skew90", want: Pattern{Name: "skew90", Hot: true}},
		{in: "rotate", want: Pattern{Name: "rotate", Hot: true, Rotate: true}},
		{in: "ramp", want: Pattern{Name: "ramp", Shape: Ramp}},
		{in: "burst", want: Pattern{Name: "burst", Shape: Burst}},
		{in: "burst:20ms", want: Pattern{Name: "burst", Shape: Burst, BurstOn: 20 * time.Millisecond}},
		{in: "burst:100ms/900ms", want: Pattern{Name: "burst", Shape: Burst, BurstOn: 100 * time.Millisecond, BurstOff: 900 * time.Millisecond}},
		{in: "flash", want: Pattern{Name: "flash", Shape: Flash}},
		{in: "flash:0.3:5", want: Pattern{Name: "flash", Shape: Flash, FlashFrom: 0.3, FlashTo: 5}},
		{in: "flash:0:5:10s", want: Pattern{Name: "flash", Shape: Flash, FlashTo: 5, FlashAt: 10 * time.Second}},
		{in: "uniform:1", wantErr: true},
		{in: "burst:0ms", wantErr: true},
		{in: "burst:20", wantErr: true},
		{in: "burst:20ms/x", wantErr: true},
		{in: "flash:1", wantErr: true},
		{in: "flash:1:0", wantErr: true},
		{in: "flash:-1:2", wantErr: true},
		{in: "flash:1:2:-1s", wantErr: true},
		{in: "flash:1:2:3s:4", wantErr: true},
		{in: "flash:NaN:2", wantErr: true},
		{in: "zigzag", wantErr: true},
		{in: "", wantErr: true},
	} {
		got, err := ParsePattern(tc.in)
		if tc.wantErr {
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("step %d: ParsePattern(%q) = %+v, %v; want an ErrInvalid", i, tc.in, got, err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("step %d: ParsePattern(%q) = %+v, %v; want %+v", i, tc.in, got, err, tc.want)
		}
	}
}

func TestParsePlacementAndPopularity(t *testing.T) {
	for i, tc := range []struct {
		in   string
		want Placement
		frac float64
		ok   bool
	}{
		{"spread", Spread, 0, true}, {"sticky", Sticky, 0, true}, {"hot", Hot, 0, true}, {"hot:0.75", Hot, 0.75, true},
		{"hot:0", 0, 0, false}, {"hot:1.5", 0, 0, false}, {"sticky:1", 0, 0, false}, {"near", 0, 0, false},
	} {
		p, f, err := ParsePlacement(tc.in)
		if (err == nil) != tc.ok || tc.ok && (p != tc.want || f != tc.frac) {
			t.Errorf("step %d: ParsePlacement(%q) = %v, %v, %v; want %v, %v, ok %v", i, tc.in, p, f, err, tc.want, tc.frac, tc.ok)
		}
	}
	for i, tc := range []struct {
		in   string
		zipf bool
		exp  float64
		ok   bool
	}{
		{"uniform", false, 0, true}, {"zipf", true, 1, true}, {"zipf:1.2", true, 1.2, true},
		{"zipf:0", false, 0, false}, {"zipf:x", false, 0, false}, {"pareto", false, 0, false}, {"uniform:2", false, 0, false},
	} {
		z, e, _, err := ParsePopularity(tc.in)
		if (err == nil) != tc.ok || tc.ok && (z != tc.zipf || e != tc.exp) {
			t.Errorf("step %d: ParsePopularity(%q) = %v, %v, %v; want %v, %v, ok %v", i, tc.in, z, e, err, tc.zipf, tc.exp, tc.ok)
		}
	}
}

// Flags.Spec's errors name the flag at fault.
func TestFlagsSpecNamesTheFlag(t *testing.T) {
	for i, tc := range []struct {
		mod  func(*Flags)
		flag string
	}{
		{func(f *Flags) { f.Limit = "10 per second" }, "--limit"},
		{func(f *Flags) { f.Pattern = "zigzag" }, "--pattern"},
		{func(f *Flags) { f.Placement = "near" }, "--placement"},
		{func(f *Flags) { f.Pattern, f.Placement = "rotate", "spread" }, "--placement"},
		{func(f *Flags) { f.Period = time.Second }, "--period"},
		{func(f *Flags) { f.Period = time.Microsecond }, "--period"},
		{func(f *Flags) { f.Popularity = "zipf:-1" }, "--popularity"},
		{func(f *Flags) { f.Arrivals = "bursty" }, "--arrivals"},
		{func(f *Flags) { f.Keys = 0 }, "--keys"},
		{func(f *Flags) { f.Keys = 2 }, "--keys"}, // a rule without '*'
		{func(f *Flags) { f.Multiplier = math.NaN() }, "--multiplier"},
		{func(f *Flags) { f.Rate, f.KeyRate = 1, 1 }, "--rate"},
		{func(f *Flags) { f.Rule = "a*b*" }, "--key"},
	} {
		f := DefaultFlags("bench")
		tc.mod(&f)
		_, err := f.Spec(3, time.Minute, 1)
		if !errors.Is(err, ErrInvalid) && !errors.Is(err, limits.ErrInvalidRate) {
			t.Errorf("step %d: %+v: Spec() = %v, want an invalid workload", i, f, err)
			continue
		}
		if !strings.Contains(err.Error(), tc.flag) {
			t.Errorf("step %d: Spec() = %q, want it to name %s", i, err, tc.flag)
		}
	}
	f := DefaultFlags("user:*")
	f.Keys, f.Pattern, f.Period, f.Popularity = 200, "rotate", 200*time.Millisecond, "zipf:0.9"
	s, err := f.Spec(5, time.Minute, 3)
	if err != nil {
		t.Fatalf("Spec() = %v", err)
	}
	if s.Placement != Hot || s.Period != 200*time.Millisecond || !s.Zipf || s.ZipfExponent != 0.9 || s.Keys != 200 || s.Nodes != 5 {
		t.Errorf("Spec() = %+v, want 200 zipf keys on a hot node moving every 200ms over 5 nodes", s)
	}
}

func TestKeyNames(t *testing.T) {
	s := spec(func(s *Spec) { s.Rule, s.Keys = "tenant:*:orders", 12 })
	if got := s.KeyName(11); got != "tenant:11:orders" {
		t.Errorf("KeyName(11) = %q, want tenant:11:orders", got)
	}
	s.Rule, s.Keys = "bench", 1
	if got := s.KeyName(0); got != "bench" {
		t.Errorf("KeyName(0) = %q, want bench", got)
	}
}

// Every arrival is in the run, in time order, for a key and a node of the
// workload; the same seed gives the same run, another seed another one.
func TestGeneratorProperties(t *testing.T) {
	specs := map[string]Spec{
		"spread":        spec(nil),
		"sticky zipf":   spec(func(s *Spec) { s.Placement, s.Zipf = Sticky, true }),
		"hot 200ms":     spec(func(s *Spec) { s.Placement, s.Period = Hot, 200*time.Millisecond }),
		"burst 20ms":    spec(func(s *Spec) { s.Shape, s.BurstOn = Burst, 20*time.Millisecond }),
		"flash poisson": spec(func(s *Spec) { s.Shape, s.Arrivals = Flash, Poisson }),
		"ramp one key":  spec(func(s *Spec) { s.Shape, s.Rule, s.Keys = Ramp, "k", 1 }),
		"1 node":        spec(func(s *Spec) { s.Nodes, s.Placement = 1, Sticky }),
	}
	for name, s := range specs {
		t.Run(name, func(t *testing.T) {
			as := all(t, s)
			if len(as) == 0 {
				t.Fatal("no arrivals")
			}
			for i, a := range as {
				if a.At < 0 || a.At >= s.Duration || a.Key < 0 || a.Key >= s.WithDefaults().Keys || a.Node < 0 || a.Node >= s.Nodes {
					t.Fatalf("arrival %d = %+v, outside the run, keys or nodes", i, a)
				}
				if i > 0 && a.At < as[i-1].At {
					t.Fatalf("arrival %d at %v before arrival %d at %v", i, a.At, i-1, as[i-1].At)
				}
			}
			if want := Expected(s); math.Abs(float64(len(as))-want) > 0.03*want+5 {
				t.Errorf("%d arrivals, want about %.0f", len(as), want)
			}
			again := all(t, s)
			if len(again) != len(as) || again[len(again)/2] != as[len(as)/2] {
				t.Errorf("a second run with the same seed differs")
			}
			s.Seed++
			if other := all(t, s); len(other) == len(as) && other[len(other)/2] == as[len(as)/2] && other[0] == as[0] {
				t.Errorf("another seed gave the same run")
			}
		})
	}
}

// Placement: sticky keys stay on their node; a hot node takes its share
// and moves every period; spread splits evenly.
func TestPlacement(t *testing.T) {
	sticky := spec(func(s *Spec) { s.Placement = Sticky; s.Zipf = true })
	for _, a := range all(t, sticky) {
		if a.Node != a.Key%3 {
			t.Fatalf("sticky arrival %+v: want node key mod 3", a)
		}
	}
	hot := spec(func(s *Spec) { s.Placement, s.Period, s.Keys = Hot, time.Second, 1; s.Rule = "k" })
	perSec := make([][3]int, 5)
	for _, a := range all(t, hot) {
		perSec[a.At/time.Second][a.Node]++
	}
	for sec, c := range perSec {
		total := c[0] + c[1] + c[2]
		if share := float64(c[sec%3]) / float64(total); math.Abs(share-0.9) > 0.01 {
			t.Errorf("second %d: hot node %d took %.3f of %d, want 0.9 (counts %v)", sec, sec%3, share, total, c)
		}
	}
	var spread [3]int
	as := all(t, spec(nil))
	for _, a := range as {
		spread[a.Node]++
	}
	for n, c := range spread {
		if want := float64(len(as)) / 3; math.Abs(float64(c)-want) > 10 {
			t.Errorf("spread: node %d got %d of %d, want about %.0f (%v)", n, c, len(as), want, spread)
		}
	}
}

// Popularity: uniform keys are picked evenly, Zipf keys as 1/(k+1)^s.
func TestPopularity(t *testing.T) {
	for _, exp := range []float64{0.6, 1, 1.5} {
		s := spec(func(s *Spec) { s.Keys, s.Zipf, s.ZipfExponent, s.Rate = 20, true, exp, 10000; s.Placement = Spread })
		counts := make([]float64, 20)
		as := all(t, s)
		for _, a := range as {
			counts[a.Key]++
		}
		h := 0.0
		for k := range 20 {
			h += math.Pow(float64(k+1), -exp)
		}
		for k, c := range counts {
			p := math.Pow(float64(k+1), -exp) / h
			want := p * float64(len(as))
			if sd := math.Sqrt(want * (1 - p)); math.Abs(c-want) > 5*sd+1 {
				t.Errorf("zipf %v: key %d drawn %.0f times, want %.0f ± %.0f", exp, k, c, want, 5*sd)
			}
		}
	}
}

// Each shape offers what it says: flash steps between its levels, burst
// is silent when off, ramp peaks at twice the base rate mid-run.
func TestShapes(t *testing.T) {
	count := func(as []Arrival, from, to time.Duration) float64 {
		n := 0
		for _, a := range as {
			if a.At >= from && a.At < to {
				n++
			}
		}
		return float64(n)
	}
	base := 100 * 10 * 2.0 // 100 keys × 10/s × 2
	flash := all(t, spec(func(s *Spec) { s.Shape, s.FlashFrom, s.FlashTo, s.FlashAt = Flash, 0.5, 4, 2*time.Second }))
	if got := count(flash, 0, 2*time.Second) / 2; math.Abs(got-0.5*base) > 0.02*base {
		t.Errorf("flash before the step: %.0f/s, want %.0f", got, 0.5*base)
	}
	if got := count(flash, 2*time.Second, 5*time.Second) / 3; math.Abs(got-4*base) > 0.02*base {
		t.Errorf("flash after the step: %.0f/s, want %.0f", got, 4*base)
	}
	burst := all(t, spec(func(s *Spec) { s.Shape, s.BurstOn, s.BurstOff = Burst, 20*time.Millisecond, 80*time.Millisecond }))
	for _, a := range burst {
		if a.At%(100*time.Millisecond) >= 20*time.Millisecond {
			t.Fatalf("burst arrival at %v, in an off phase", a.At)
		}
	}
	ramp := all(t, spec(func(s *Spec) { s.Shape = Ramp }))
	if mid, edge := count(ramp, 2400*time.Millisecond, 2600*time.Millisecond), count(ramp, 0, 200*time.Millisecond); mid < 10*edge {
		t.Errorf("ramp: %v arrivals mid-run, %v at the start; want the middle far above", mid, edge)
	}
}

// One key under the original patterns arrives as package pattern's
// arrivals did, node by node.
func TestOneKeyIsThePatternsLoad(t *testing.T) {
	for _, name := range []pattern.Name{pattern.Uniform, pattern.Skew90, pattern.Burst, pattern.Rotate, pattern.Ramp} {
		for _, arr := range []pattern.Arrival{pattern.Even, pattern.Poisson} {
			f := DefaultFlags("k")
			f.Pattern, f.Arrivals = string(name), string(arr)
			s, err := f.Spec(3, 12*time.Second, 5)
			if err != nil {
				t.Fatal(err)
			}
			load := pattern.Load{Pattern: name, Nodes: 3, Limit: 1000, Multiplier: 2, Duration: 12 * time.Second}.WithDefaults()
			got := make([][]time.Duration, 3)
			for _, a := range all(t, s) {
				got[a.Node] = append(got[a.Node], a.At)
			}
			for n := range 3 {
				pa := pattern.NewArrivals(load, n, arr, 5)
				i := 0
				for at, ok := pa.Next(); ok; at, ok = pa.Next() {
					if i >= len(got[n]) || absDur(got[n][i]-at) > time.Microsecond {
						t.Fatalf("%s/%s node %d arrival %d: pattern %v, workload %v", name, arr, n, i, at, at)
					}
					i++
				}
				if i != len(got[n]) {
					t.Errorf("%s/%s node %d: pattern %d arrivals, workload %d", name, arr, n, i, len(got[n]))
				}
			}
		}
	}
}

func absDur(d time.Duration) time.Duration { return max(d, -d) }

// A million keys cost nothing per key: drawing arrivals allocates nothing
// once the streams are warm.
func TestMillionKeysAllocateNothing(t *testing.T) {
	for _, zipf := range []bool{false, true} {
		s := spec(func(s *Spec) { s.Keys, s.Rate, s.Zipf, s.Duration = MaxKeys, 3000, zipf, time.Hour })
		g, err := NewGenerator(s)
		if err != nil {
			t.Fatal(err)
		}
		for range 1000 {
			g.Next()
		}
		if allocs := testing.AllocsPerRun(10000, func() { g.Next() }); allocs > 0.01 {
			t.Errorf("zipf %v: %.3f allocations per arrival, want none", zipf, allocs)
		}
	}
}

func TestValidate(t *testing.T) {
	for i, mod := range []func(*Spec){
		func(s *Spec) { s.Nodes = 0 },
		func(s *Spec) { s.Keys = MaxKeys + 1 },
		func(s *Spec) { s.Duration = 0 },
		func(s *Spec) { s.Rate = math.Inf(1) },
		func(s *Spec) { s.Rate = 2 * MaxRate },
		func(s *Spec) { s.KeyRate = -1 },
		func(s *Spec) { s.HotFraction = 2 },
		func(s *Spec) { s.Period = time.Nanosecond },
		func(s *Spec) { s.Shape, s.BurstOn = Burst, time.Nanosecond },
		func(s *Spec) { s.Shape, s.FlashAt = Flash, time.Hour },
		func(s *Spec) { s.Limit = limits.Rate{} },
		func(s *Spec) { s.Rule = "" },
		func(s *Spec) { s.Rule = strings.Repeat("k", limits.MaxKeyLen) + "*" },
		func(s *Spec) { s.Zipf, s.ZipfExponent = true, -1 },
	} {
		if err := spec(mod).Validate(); !errors.Is(err, ErrInvalid) {
			t.Errorf("step %d: Validate() = %v, want ErrInvalid", i, err)
		}
	}
	if err := spec(nil).Validate(); err != nil {
		t.Errorf("Validate() = %v for a good spec", err)
	}
}

// TestSweepCallsEveryKey: under sweep popularity each node's requests take
// its keys in turn, so a run calls every key, each about as often as the
// others, for key counts below, at and above the node count; sweep and
// Zipf together are refused.
func TestSweepCallsEveryKey(t *testing.T) {
	for _, keys := range []int{2, 3, 10, 1000, 10_007} {
		s := Spec{Nodes: 3, Rule: "user:*", Keys: keys, Limit: limits.MustParseRate("10/s"), Duration: 2 * time.Second, Seed: 7, Sweep: true,
			Arrivals: Even}
		s.Rate = float64(3 * keys) // every key about six times in the 2 s
		got := all(t, s)
		seen := make(map[int]int)
		for _, a := range got {
			if a.Key < 0 || a.Key >= keys {
				t.Fatalf("%d keys: key %d out of range", keys, a.Key)
			}
			seen[a.Key]++
		}
		if len(seen) != keys {
			t.Errorf("%d keys, %d requests: %d keys called, want all", keys, len(got), len(seen))
		}
		lo, hi := len(got), 0
		for _, c := range seen {
			lo, hi = min(lo, c), max(hi, c)
		}
		if keys >= 3 && hi-lo > 2 {
			t.Errorf("%d keys: calls per key from %d to %d, want an even sweep", keys, lo, hi)
		}
	}
	if err := (Spec{Nodes: 3, Rule: "user:*", Keys: 10, Limit: limits.MustParseRate("10/s"), Duration: time.Second, Sweep: true, Zipf: true}).Validate(); err == nil {
		t.Errorf("sweep and zipf together: no error")
	}
}

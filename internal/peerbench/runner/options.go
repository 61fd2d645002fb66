package runner

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"time"

	"github.com/quotamesh/quotamesh/internal/workload"
	"github.com/quotamesh/quotamesh/limits"
)

// The systems a run can compare.
const (
	QuotaMeshLeases = "quotamesh-leases"
	QuotaMeshStrict = "quotamesh-strict"
	Gubernator      = "gubernator"
)

// Systems lists them in the order a run measures them.
var Systems = []string{QuotaMeshLeases, QuotaMeshStrict, Gubernator}

// Workers per node. The loads that score decisions (one key, many keys)
// give every request a worker of its own from a pool, as a service gives
// each request a goroutine, whatever the system: a decision that waits
// (a round trip, a lease on its way) then holds up only its own request.
// The fixed-rate loads measure latency; there the generator makes lease
// decisions itself, one after another, as `quotamesh bench` does: handing
// each to another goroutine adds a wake-up per decision that costs more
// than the decision, and no service pays it.
const (
	Workers          = 64
	LeaseRateWorkers = 0
)

// ErrInvalid reports bad options; the error names the flag.
var ErrInvalid = errors.New("peerbench: invalid options")

// Options is everything a run can be told; the flags in main.go document
// each field.
type Options struct {
	Systems []string

	Patterns   []string
	Arrivals   string
	Limit      string
	Multiplier float64
	Duration   time.Duration

	Keys         []int
	KeyDists     []string
	ZipfExponent float64
	KeysRate     float64
	KeysLimit    string
	KeysDuration time.Duration

	Rates        []float64
	RateDuration time.Duration
	FastLimit    string

	SatStart    float64
	SatStep     float64
	SatSteps    int
	SatDuration time.Duration
	P99Target   time.Duration

	Settle time.Duration
	Seed   uint64

	Binary   string
	Repo     string
	Exe      string
	Markdown bool

	GuberSyncWait  time.Duration
	GuberCacheSize int
	GuberInFlight  int
	GuberBatch     int
}

// DefaultOptions is the full run: every pattern for 20 s, the many-key
// loads for 10 s each, latency at three rates, and the saturation ladder.
func DefaultOptions() Options {
	return Options{
		Systems:  Systems,
		Patterns: []string{"uniform", "skew90", "burst", "rotate", "ramp"}, Arrivals: "uniform",
		Limit: "1000/s", Multiplier: 2, Duration: 20 * time.Second,
		Keys: []int{1_000, 10_000, 100_000}, KeyDists: []string{"uniform", "zipf"}, ZipfExponent: 1,
		KeysRate: 3000, KeysLimit: "10/s", KeysDuration: 10 * time.Second,
		Rates: []float64{1000, 5000, 10_000}, RateDuration: 5 * time.Second, FastLimit: "1000000000/s",
		SatStart: 1000, SatStep: 1.5, SatSteps: 15, SatDuration: 3 * time.Second, P99Target: 5 * time.Millisecond,
		Settle: time.Second, Seed: 1, Repo: "../..",
	}
}

// Quick shortens o to the form CI runs in under a minute: one pattern,
// one many-key load, one rate and two saturation steps, a second or two
// each.
func (o Options) Quick() Options {
	o.Patterns, o.Duration = []string{"uniform"}, 2*time.Second
	o.Keys, o.KeyDists, o.KeysDuration = []int{1_000}, []string{"uniform"}, 2*time.Second
	o.Rates, o.RateDuration = []float64{2000}, time.Second
	o.SatSteps, o.SatDuration = 2, time.Second
	o.Settle = 200 * time.Millisecond
	return o
}

// Plan is validated options with their parsed forms.
type Plan struct {
	Options
	patterns  []workload.Pattern
	arrivals  workload.Process
	limit     limits.Rate
	keysLimit limits.Rate
	fastLimit limits.Rate
	dists     []string
}

// onePatterns are the one-key demand patterns a run offers.
var onePatterns = []string{"uniform", "skew90", "burst", "rotate", "ramp"}

// Key popularities of the many-key runs.
const (
	distUniform = "uniform"
	distZipf    = "zipf"
)

func bad(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrInvalid}, args...)...)
}

// Validate checks o and parses it; errors name the flag and its value.
func (o Options) Validate() (Plan, error) {
	p := Plan{Options: o}
	if len(o.Systems) == 0 {
		return p, bad("--systems: none given; use some of %v", Systems)
	}
	for _, s := range o.Systems {
		switch s {
		case QuotaMeshLeases, QuotaMeshStrict, Gubernator:
		default:
			return p, bad("--systems: %q: use some of %v", s, Systems)
		}
	}
	for _, s := range o.Patterns {
		if !slices.Contains(onePatterns, s) {
			return p, bad("--patterns: %q: use some of %v", s, onePatterns)
		}
		n, err := workload.ParsePattern(s)
		if err != nil {
			return p, fmt.Errorf("%w: --patterns: %w", ErrInvalid, err)
		}
		p.patterns = append(p.patterns, n)
	}
	var err error
	if p.arrivals, err = workload.ParseArrival(o.Arrivals); err != nil {
		return p, fmt.Errorf("%w: --arrivals: %w", ErrInvalid, err)
	}
	for _, r := range []struct {
		flag, text string
		into       *limits.Rate
	}{{"--limit", o.Limit, &p.limit}, {"--keys-limit", o.KeysLimit, &p.keysLimit}, {"--fast-limit", o.FastLimit, &p.fastLimit}} {
		if *r.into, err = limits.ParseRate(r.text); err != nil {
			return p, fmt.Errorf("%w: %s: %w", ErrInvalid, r.flag, err)
		}
	}
	for _, d := range o.KeyDists {
		if d != distUniform && d != distZipf {
			return p, bad("--key-dists: %q: use uniform or zipf", d)
		}
		p.dists = append(p.dists, d)
		for _, n := range o.Keys {
			// Zero keys and a zero exponent would take the workload's
			// defaults: refuse them here.
			ws := workload.Spec{Nodes: 1, Rule: userPattern, Keys: n, Limit: p.keysLimit, Zipf: d == distZipf,
				ZipfExponent: o.ZipfExponent, Duration: time.Second}
			err := ws.Validate()
			if n < 1 {
				err = fmt.Errorf("%w: keys %d, want 1 to %d", workload.ErrInvalid, n, workload.MaxKeys)
			} else if d == distZipf && o.ZipfExponent == 0 {
				err = fmt.Errorf("%w: zipf exponent 0, want more than 0 and at most 10", workload.ErrInvalid)
			}
			if err != nil {
				return p, fmt.Errorf("%w: --keys %d, --zipf %v: %w", ErrInvalid, n, o.ZipfExponent, err)
			}
		}
	}
	positive := func(v float64) bool { return v > 0 && !math.IsInf(v, 0) }
	switch {
	case !positive(o.Multiplier):
		return p, bad("--multiplier %v: want a positive number", o.Multiplier)
	case o.Duration <= 0 || o.Duration > 20*time.Second:
		return p, bad("--duration %v: want more than 0 and at most 20s (the machine is shared)", o.Duration)
	case o.KeysDuration <= 0 || o.KeysDuration > 20*time.Second:
		return p, bad("--keys-duration %v: want more than 0 and at most 20s", o.KeysDuration)
	case o.RateDuration <= 0 || o.RateDuration > 20*time.Second:
		return p, bad("--rate-duration %v: want more than 0 and at most 20s", o.RateDuration)
	case o.SatDuration <= 0 || o.SatDuration > 20*time.Second:
		return p, bad("--sat-duration %v: want more than 0 and at most 20s", o.SatDuration)
	case !positive(o.KeysRate):
		return p, bad("--keys-rate %v: want a positive rate per second", o.KeysRate)
	case o.SatSteps < 0 || o.SatSteps > 30:
		return p, bad("--sat-steps %d: want 0 (no saturation ladder) to 30", o.SatSteps)
	case o.SatSteps > 0 && !positive(o.SatStart):
		return p, bad("--sat-start %v: want a positive rate per second", o.SatStart)
	case o.SatSteps > 0 && !(o.SatStep > 1 && o.SatStep <= 10):
		return p, bad("--sat-step %v: want a factor above 1 and at most 10", o.SatStep)
	case o.P99Target <= 0:
		return p, bad("--p99-target %v: want a positive duration", o.P99Target)
	case o.Settle < 0 || o.Settle > time.Minute:
		return p, bad("--settle %v: want 0 to 1m", o.Settle)
	case o.GuberSyncWait < 0:
		return p, bad("--guber-sync-wait %v: want 0 (Gubernator's default) or more", o.GuberSyncWait)
	case o.GuberCacheSize < 0:
		return p, bad("--guber-cache-size %d: want 0 (Gubernator's default) or more", o.GuberCacheSize)
	case o.GuberInFlight < 0 || o.GuberInFlight > 1024:
		return p, bad("--guber-in-flight %d: want 0 (default) to 1024", o.GuberInFlight)
	case o.GuberBatch < 0 || o.GuberBatch > 1000:
		return p, bad("--guber-batch %d: want 0 (default, 1000) to 1000", o.GuberBatch)
	case o.Binary == "" && o.Repo == "" && p.has(QuotaMeshLeases, QuotaMeshStrict):
		return p, bad("--quotamesh-binary or --repo: one is needed to run QuotaMesh")
	}
	for _, r := range o.Rates {
		if !positive(r) {
			return p, bad("--rates: %v: want positive rates per second", r)
		}
	}
	return p, nil
}

// has reports whether the plan measures any of systems.
func (p Plan) has(systems ...string) bool {
	for _, s := range p.Systems {
		for _, t := range systems {
			if s == t {
				return true
			}
		}
	}
	return false
}

// Package workload describes offered load as users run it, once, for the
// simulator (`quotamesh sim`) and the real-process bench (`quotamesh
// bench`): how many keys there are under one rule (a single key, or 1 to
// 1,000,000 keys under a pattern such as `user:*`), how popular each is
// (uniform or Zipf), how much each is offered (a multiple of its limit, a
// rate per key, or a total rate), which node a request reaches (spread over
// all nodes, sticky to one per key, or skewed to a hot node that moves every
// Period), how the load moves in time (steady, on/off bursts, a ramp, a flash
// crowd) and how requests arrive (evenly spaced or Poisson).
//
// What it promises:
//
//   - A Spec is a pure value: Validate names the first bad field; the
//     parsers (ParsePattern, ParsePlacement, ParsePopularity, Flags.Spec)
//     refuse bad text with an error naming it, never a panic.
//   - NewGenerator yields every arrival of a run as (intended time, key,
//     node), in time order, deterministically from the Spec's seed. Its cost
//     follows requests, not keys: no memory or work per key per second (the
//     sticky placement keeps one weight per node, Zipf popularity a few
//     constants), so a million keys cost what ten do.
//   - With one key and the single-key patterns (uniform, skew90, burst,
//     rotate, ramp) the arrivals are those of the original harnesses: the
//     same rates per node, integrated the same way.
//
// The package is pure: no I/O, no goroutines, no clock.
package workload

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/quotamesh/quotamesh/limits"
)

// ErrInvalid reports a bad Spec field or a bad flag value; the message names
// which.
var ErrInvalid = errors.New("quotamesh/workload: invalid workload")

// Bounds of a Spec.
const (
	// MaxKeys is the most keys a workload may name.
	MaxKeys = 1_000_000
	// MaxNodes is the most nodes a workload may spread over.
	MaxNodes = 1000
	// MaxRate is the largest total offered rate, requests per second.
	MaxRate = 1e7
	// MaxDuration is the longest run.
	MaxDuration = 24 * time.Hour
	// MinPeriod is the shortest hot-node period and burst phase.
	MinPeriod = time.Millisecond
)

// Defaults.
const (
	DefaultMultiplier  = 2
	DefaultHotFraction = 0.9
	// DefaultRotate is how often the rotate pattern moves its hot node.
	DefaultRotate = 5 * time.Second
	// DefaultBurst is each phase of burst (on, then off).
	DefaultBurst = 200 * time.Millisecond
	// DefaultFlashFrom and DefaultFlashTo are flash's levels, in multiples
	// of the base load: with the default 2× the limit, 0.5× then 5× it.
	DefaultFlashFrom = 0.25
	DefaultFlashTo   = 2.5
	// DefaultZipf is Zipf popularity's exponent when none is given.
	DefaultZipf = 1.0
)

// Shape is how the total offered rate moves in time, as a factor of the
// base rate (Spec.BaseRate).
type Shape uint8

const (
	// Steady offers the base rate throughout.
	Steady Shape = iota
	// Burst offers BaseRate × (on+off)/on during each on phase and nothing
	// during off: the base rate on average.
	Burst
	// Ramp rises linearly from 0 to twice the base rate at mid-run and back
	// to 0: the base rate on average.
	Ramp
	// Flash offers FlashFrom × the base rate until FlashAt, then FlashTo ×.
	Flash
)

func (s Shape) String() string {
	switch s {
	case Steady:
		return "steady"
	case Burst:
		return "burst"
	case Ramp:
		return "ramp"
	case Flash:
		return "flash"
	}
	return fmt.Sprintf("Shape(%d)", uint8(s))
}

// Placement is which node a request reaches.
type Placement uint8

const (
	// Spread sends each request to a node chosen evenly at random.
	Spread Placement = iota
	// Sticky sends every request for key k to node k mod Nodes.
	Sticky
	// Hot sends HotFraction of the requests to the hot node and spreads the
	// rest evenly over the others. The hot node is node 0 and moves to the
	// next node every Period (never with Period 0).
	Hot
)

func (p Placement) String() string {
	switch p {
	case Spread:
		return "spread"
	case Sticky:
		return "sticky"
	case Hot:
		return "hot"
	}
	return fmt.Sprintf("Placement(%d)", uint8(p))
}

// Process is how requests arrive at a given rate.
type Process uint8

const (
	// Even spaces requests evenly, with a random phase per node.
	Even Process = iota
	// Poisson draws exponential gaps.
	Poisson
)

func (a Process) String() string {
	switch a {
	case Even:
		return "uniform"
	case Poisson:
		return "poisson"
	}
	return fmt.Sprintf("Process(%d)", uint8(a))
}

// Spec is one workload. The zero value of a field marked "default" means
// its default (WithDefaults).
type Spec struct {
	// Nodes is how many nodes the load is placed on, 1 to MaxNodes.
	Nodes int
	// Rule is the limit's pattern: a key (every request is for it), or a
	// pattern with one '*' that key i's number replaces ("user:*" names
	// user:0, user:1, ...).
	Rule string
	// Keys is how many keys the load names, 1 to MaxKeys (default 1). More
	// than one needs a Rule with a '*'.
	Keys int
	// Limit is the limit of every key.
	Limit limits.Rate

	// Zipf makes key i's popularity proportional to 1/(i+1)^ZipfExponent
	// (default exponent 1) instead of uniform.
	Zipf         bool
	ZipfExponent float64
	// Sweep makes each node's requests take the keys in turn (node i
	// keys i, i+Nodes, ...), so that every key is called once in Keys
	// requests: a crawler, or filling a cluster with keys. Not with Zipf.
	Sweep bool

	// The base rate, requests per second over all keys, is Rate if set,
	// else KeyRate × Keys if set, else Multiplier × the limit per second ×
	// Keys (default multiplier 2).
	Rate       float64
	KeyRate    float64
	Multiplier float64

	// Placement of each request on a node.
	Placement Placement
	// HotFraction is the hot node's share under Hot (default 0.9).
	HotFraction float64
	// Period is how often Hot's hot node moves (0: never).
	Period time.Duration

	// Shape of the rate in time.
	Shape Shape
	// BurstOn and BurstOff are Burst's phases (defaults 200 ms each).
	BurstOn, BurstOff time.Duration
	// FlashFrom and FlashTo are Flash's levels, multiples of the base rate
	// (defaults 0.25 and 2.5), and FlashAt the time of the step (default
	// half the duration).
	FlashFrom, FlashTo float64
	FlashAt            time.Duration

	// Arrivals is the arrival process at each node.
	Arrivals Process
	// Duration is the length of the run.
	Duration time.Duration
	// Seed makes the run reproducible: node i's arrivals draw from a
	// stream seeded by Seed and i.
	Seed uint64
}

// WithDefaults returns s with every zero field that has a default set.
func (s Spec) WithDefaults() Spec {
	if s.Keys == 0 {
		s.Keys = 1
	}
	if s.Zipf && s.ZipfExponent == 0 {
		s.ZipfExponent = DefaultZipf
	}
	if s.Multiplier == 0 {
		s.Multiplier = DefaultMultiplier
	}
	if s.HotFraction == 0 {
		s.HotFraction = DefaultHotFraction
	}
	if s.Shape == Burst {
		if s.BurstOn == 0 {
			s.BurstOn = DefaultBurst
		}
		if s.BurstOff == 0 {
			s.BurstOff = s.BurstOn
		}
	}
	if s.Shape == Flash {
		if s.FlashFrom == 0 && s.FlashTo == 0 {
			s.FlashFrom, s.FlashTo = DefaultFlashFrom, DefaultFlashTo
		}
		if s.FlashAt == 0 {
			s.FlashAt = s.Duration / 2
		}
	}
	return s
}

func bad(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrInvalid}, args...)...)
}

func finite(x float64) bool { return !math.IsNaN(x) && !math.IsInf(x, 0) }

// Validate reports the first field of s (defaults applied) out of range,
// naming it and its value.
func (s Spec) Validate() error {
	s = s.WithDefaults()
	switch {
	case s.Nodes < 1 || s.Nodes > MaxNodes:
		return bad("nodes %d, want 1 to %d", s.Nodes, MaxNodes)
	case s.Keys < 1 || s.Keys > MaxKeys:
		return bad("keys %d, want 1 to %d", s.Keys, MaxKeys)
	case s.Duration <= 0 || s.Duration > MaxDuration:
		return bad("duration %v, want more than 0 and at most %v", s.Duration, MaxDuration)
	case s.Zipf && s.Sweep:
		return bad("zipf and sweep popularity together; choose one")
	case s.Zipf && !(s.ZipfExponent > 0 && s.ZipfExponent <= 10):
		return bad("zipf exponent %v, want more than 0 and at most 10", s.ZipfExponent)
	case !(s.Rate >= 0) || !finite(s.Rate):
		return bad("rate %v, want 0 or a positive number of requests per second", s.Rate)
	case !(s.KeyRate >= 0) || !finite(s.KeyRate):
		return bad("rate per key %v, want 0 or a positive number of requests per second", s.KeyRate)
	case s.Rate > 0 && s.KeyRate > 0:
		return bad("rate %v and rate per key %v: give one of them", s.Rate, s.KeyRate)
	case !(s.Multiplier > 0) || !finite(s.Multiplier):
		return bad("multiplier %v, want a positive number", s.Multiplier)
	case s.Placement > Hot:
		return bad("placement %v", s.Placement)
	case !(s.HotFraction > 0 && s.HotFraction <= 1):
		return bad("hot fraction %v, want more than 0 and at most 1", s.HotFraction)
	case s.Period < 0 || s.Period > 0 && s.Period < MinPeriod:
		return bad("period %v, want 0 (the hot node never moves) or at least %v", s.Period, MinPeriod)
	case s.Shape > Flash:
		return bad("shape %v", s.Shape)
	case s.Shape == Burst && (s.BurstOn < MinPeriod || s.BurstOff < 0 || s.BurstOff > 0 && s.BurstOff < MinPeriod):
		return bad("burst on %v, off %v: want phases of at least %v", s.BurstOn, s.BurstOff, MinPeriod)
	case s.Shape == Flash && (!(s.FlashFrom >= 0) || !(s.FlashTo > 0) || !finite(s.FlashFrom) || !finite(s.FlashTo)):
		return bad("flash from %v to %v, want levels of 0 or more, the second positive", s.FlashFrom, s.FlashTo)
	case s.Shape == Flash && (s.FlashAt <= 0 || s.FlashAt >= s.Duration):
		return bad("flash at %v, want within the run's %v", s.FlashAt, s.Duration)
	case s.Arrivals > Poisson:
		return bad("arrivals %v", s.Arrivals)
	}
	if err := s.Limit.Validate(); err != nil {
		return bad("limit: %v", err)
	}
	if err := s.checkRule(); err != nil {
		return err
	}
	if peak := s.BaseRate() * s.peakFactor(); !(peak <= MaxRate) {
		return bad("offered rate up to %.4g requests/s, want at most %.0g", peak, MaxRate)
	}
	return nil
}

// checkRule checks the rule and that every key it names is valid.
func (s Spec) checkRule() error {
	if _, err := limits.ParsePattern(s.Rule); err != nil {
		return bad("rule %q: %v", s.Rule, err)
	}
	switch n := strings.Count(s.Rule, "*"); {
	case n > 1:
		return bad("rule %q has %d '*', want at most one (the key number replaces it)", s.Rule, n)
	case n == 0 && s.Keys > 1:
		return bad("rule %q names one key, not %d: use a pattern such as user:*", s.Rule, s.Keys)
	}
	for _, i := range []int{0, s.Keys - 1} {
		if err := limits.ValidateKey(s.KeyName(i)); err != nil {
			return bad("key %d of rule %q: %v", i, s.Rule, err)
		}
	}
	return nil
}

// peakFactor is the largest factor of the base rate the shape reaches.
func (s Spec) peakFactor() float64 {
	switch s.Shape {
	case Burst:
		return float64(s.BurstOn+s.BurstOff) / float64(s.BurstOn)
	case Ramp:
		return 2
	case Flash:
		return max(s.FlashFrom, s.FlashTo)
	}
	return 1
}

// KeyName is the name of key i (0 ≤ i < Keys): the rule with its '*'
// replaced by i, or the rule itself when it has none.
func (s Spec) KeyName(i int) string {
	return string(s.AppendKeyName(nil, i))
}

// AppendKeyName appends KeyName(i) to dst.
func (s Spec) AppendKeyName(dst []byte, i int) []byte {
	star := strings.IndexByte(s.Rule, '*')
	if star < 0 {
		return append(dst, s.Rule...)
	}
	dst = append(dst, s.Rule[:star]...)
	dst = strconv.AppendInt(dst, int64(i), 10)
	return append(dst, s.Rule[star+1:]...)
}

// BaseRate is the offered rate over all keys, requests per second, before
// the shape: Rate, KeyRate × Keys, or Multiplier × the limit × Keys.
func (s Spec) BaseRate() float64 {
	s = s.WithDefaults()
	switch {
	case s.Rate > 0:
		return s.Rate
	case s.KeyRate > 0:
		return s.KeyRate * float64(s.Keys)
	}
	return s.Multiplier * s.Limit.PerSecond() * float64(s.Keys)
}

// Factor is the shape's factor of the base rate at t (since the start).
// s must have its defaults.
func (s Spec) Factor(t time.Duration) float64 {
	switch s.Shape {
	case Burst:
		period := s.BurstOn + s.BurstOff
		if t%period < s.BurstOn {
			return float64(period) / float64(s.BurstOn)
		}
		return 0
	case Ramp:
		x := float64(t) / float64(s.Duration)
		return 2 * max(0, 1-math.Abs(2*x-1))
	case Flash:
		if t < s.FlashAt {
			return s.FlashFrom
		}
		return s.FlashTo
	}
	return 1
}

// HotNode is the hot node at t under Hot placement.
func (s Spec) HotNode(t time.Duration) int {
	if s.Period <= 0 {
		return 0
	}
	return int((t / s.Period) % time.Duration(s.Nodes))
}

// String is a short description for reports: "200 keys user:* (zipf 1)
// at 10/s, 2x, steady, spread, poisson".
func (s Spec) String() string {
	s = s.WithDefaults()
	var b strings.Builder
	if s.Keys == 1 {
		fmt.Fprintf(&b, "key %s", s.KeyName(0))
	} else {
		fmt.Fprintf(&b, "%d keys %s", s.Keys, s.Rule)
		if s.Zipf {
			fmt.Fprintf(&b, " (zipf %g)", s.ZipfExponent)
		}
		if s.Sweep {
			b.WriteString(" (sweep)")
		}
	}
	fmt.Fprintf(&b, " at %s", s.Limit)
	switch {
	case s.Rate > 0:
		fmt.Fprintf(&b, ", %g/s in all", s.Rate)
	case s.KeyRate > 0:
		fmt.Fprintf(&b, ", %g/s per key", s.KeyRate)
	default:
		fmt.Fprintf(&b, ", %gx", s.Multiplier)
	}
	fmt.Fprintf(&b, ", %s, %s, %s arrivals", ShapeString(s), PlacementString(s), s.Arrivals)
	return b.String()
}

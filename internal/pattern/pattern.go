// Package pattern describes offered load: how many requests per second each
// node of a cluster is offered at each moment, for the demand patterns the
// simulator and the accuracy harness share (uniform, skew90, burst, rotate,
// ramp), and turns a rate into arrival times (evenly spaced or Poisson).
//
// Everything is deterministic given a seed, so a simulated run and a real
// one can be driven by the same arrivals.
package pattern

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"time"
)

// Name is a demand pattern.
type Name string

// The demand patterns. Each offers Multiplier × limit on average over a run
// (ramp averages Multiplier × limit over a whole run too).
const (
	// Uniform offers every node the same rate.
	Uniform Name = "uniform"
	// Skew90 offers 90 % of the load to node 0 and splits the rest.
	Skew90 Name = "skew90"
	// Burst switches the whole load on and off every 200 ms; during "on" it
	// offers twice the average, split evenly.
	Burst Name = "burst"
	// Rotate is skew90 whose hot node changes every 5 s.
	Rotate Name = "rotate"
	// Ramp rises linearly from 0 to 2 × Multiplier × limit at mid-run and back
	// to 0, split evenly.
	Ramp Name = "ramp"
)

// Names lists every pattern.
var Names = []Name{Uniform, Skew90, Burst, Rotate, Ramp}

// ErrInvalid reports a bad pattern name or parameter.
var ErrInvalid = errors.New("quotamesh/pattern: invalid pattern")

// Parse reads a pattern name.
func Parse(s string) (Name, error) {
	for _, n := range Names {
		if string(n) == s {
			return n, nil
		}
	}
	all := make([]string, len(Names))
	for i, n := range Names {
		all[i] = string(n)
	}
	return "", fmt.Errorf("%w %q: use one of %s", ErrInvalid, s, strings.Join(all, ", "))
}

// Load is a pattern applied to a cluster.
type Load struct {
	// Pattern is the demand pattern.
	Pattern Name
	// Nodes is the number of nodes the load is split over (≥ 1).
	Nodes int
	// Limit is the limit in requests per second.
	Limit float64
	// Multiplier is the average offered load over the limit; default 2.
	Multiplier float64
	// Duration is the length of the run; ramp needs it.
	Duration time.Duration
	// HotFraction is the share of the hot node in skew90 and rotate; default 0.9.
	HotFraction float64
	// RotateEvery is how often rotate moves the hot node; default 5 s.
	RotateEvery time.Duration
	// BurstOn and BurstOff are the phases of burst; default 200 ms each.
	BurstOn, BurstOff time.Duration
}

// WithDefaults fills zero fields with their defaults.
func (l Load) WithDefaults() Load {
	if l.Multiplier == 0 {
		l.Multiplier = 2
	}
	if l.HotFraction == 0 {
		l.HotFraction = 0.9
	}
	if l.RotateEvery == 0 {
		l.RotateEvery = 5 * time.Second
	}
	if l.BurstOn == 0 {
		l.BurstOn = 200 * time.Millisecond
	}
	if l.BurstOff == 0 {
		l.BurstOff = 200 * time.Millisecond
	}
	return l
}

// Validate names the first bad field.
func (l Load) Validate() error {
	if _, err := Parse(string(l.Pattern)); err != nil {
		return err
	}
	switch {
	case l.Nodes < 1:
		return fmt.Errorf("%w: nodes %d, want at least 1", ErrInvalid, l.Nodes)
	case !(l.Limit > 0) || math.IsInf(l.Limit, 0):
		return fmt.Errorf("%w: limit %v requests/s, want a positive number", ErrInvalid, l.Limit)
	case !(l.Multiplier > 0) || math.IsInf(l.Multiplier, 0):
		return fmt.Errorf("%w: multiplier %v, want a positive number", ErrInvalid, l.Multiplier)
	case l.Duration <= 0:
		return fmt.Errorf("%w: duration %v, want a positive duration", ErrInvalid, l.Duration)
	case !(l.HotFraction > 0 && l.HotFraction <= 1):
		return fmt.Errorf("%w: hot fraction %v, want (0, 1]", ErrInvalid, l.HotFraction)
	case l.RotateEvery <= 0 || l.BurstOn <= 0 || l.BurstOff < 0:
		return fmt.Errorf("%w: rotate every %v, burst on %v off %v, want positive durations", ErrInvalid, l.RotateEvery, l.BurstOn, l.BurstOff)
	}
	return nil
}

// Total is the cluster-wide offered rate (requests per second) at t.
func (l Load) Total(t time.Duration) float64 {
	avg := l.Multiplier * l.Limit
	switch l.Pattern {
	case Burst:
		period := l.BurstOn + l.BurstOff
		if t%period < l.BurstOn {
			return avg * float64(period) / float64(l.BurstOn)
		}
		return 0
	case Ramp:
		x := float64(t) / float64(l.Duration)
		return 2 * avg * max(0, 1-math.Abs(2*x-1))
	}
	return avg
}

// Hot is the node that takes HotFraction of the load at t under skew90 and
// rotate, or -1 for the evenly split patterns.
func (l Load) Hot(t time.Duration) int {
	switch l.Pattern {
	case Skew90:
		return 0
	case Rotate:
		return int(t/l.RotateEvery) % l.Nodes
	}
	return -1
}

// Rate is the offered rate (requests per second) at node at t.
func (l Load) Rate(node int, t time.Duration) float64 {
	total := l.Total(t)
	hot := l.Hot(t)
	switch {
	case l.Nodes == 1:
		return total
	case hot < 0:
		return total / float64(l.Nodes)
	case node == hot:
		return total * l.HotFraction
	default:
		return total * (1 - l.HotFraction) / float64(l.Nodes-1)
	}
}

// Arrival says how requests arrive at a given rate.
type Arrival string

const (
	// Even spaces requests evenly (a deterministic fluid arrival).
	Even Arrival = "uniform"
	// Poisson draws exponential gaps (memoryless arrivals).
	Poisson Arrival = "poisson"
)

// ParseArrival reads an arrival process name.
func ParseArrival(s string) (Arrival, error) {
	switch Arrival(s) {
	case Even, Poisson:
		return Arrival(s), nil
	}
	return "", fmt.Errorf("%w: arrivals %q, use uniform or poisson", ErrInvalid, s)
}

// step is the resolution at which time-varying rates are integrated.
const step = time.Millisecond

// Arrivals yields the arrival times of requests at one node, in order.
type Arrivals struct {
	load    Load
	node    int
	kind    Arrival
	rng     *rand.Rand
	t       time.Duration // start of the current integration step
	owed    float64       // request mass still needed before the next arrival
	pending []time.Duration
}

// NewArrivals returns the arrivals at node under load, seeded by seed.
func NewArrivals(load Load, node int, kind Arrival, seed uint64) *Arrivals {
	a := &Arrivals{load: load, node: node, kind: kind, rng: rand.New(rand.NewPCG(seed, uint64(node)+1))}
	// A random phase for even arrivals, so nodes do not move in lockstep.
	a.owed = a.rng.Float64()
	if kind == Poisson {
		a.owed = a.rng.ExpFloat64()
	}
	return a
}

func (a *Arrivals) gap() float64 {
	if a.kind == Poisson {
		return a.rng.ExpFloat64()
	}
	return 1
}

// Next returns the next arrival time, or false once the run's duration is
// reached. Rates are integrated in 1 ms steps; within a step arrivals are
// placed in proportion to the mass they need.
func (a *Arrivals) Next() (time.Duration, bool) {
	for len(a.pending) == 0 {
		if a.t >= a.load.Duration {
			return 0, false
		}
		mass := a.load.Rate(a.node, a.t) * step.Seconds()
		used := 0.0
		for a.owed <= mass-used {
			used += a.owed
			if at := a.t + time.Duration(float64(step)*used/mass); at < a.load.Duration {
				a.pending = append(a.pending, at)
			}
			a.owed = a.gap()
		}
		a.owed -= mass - used
		a.t += step
	}
	next := a.pending[0]
	a.pending = a.pending[1:]
	return next, true
}

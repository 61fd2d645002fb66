package workload

import (
	"math"
	"math/rand/v2"
	"time"
)

// Arrival is one request of a workload.
type Arrival struct {
	// At is the request's intended time, since the start of the run.
	At time.Duration
	// Key is the key's number, 0 ≤ Key < Spec.Keys (Spec.KeyName names it).
	Key int
	// Node is the node it reaches, 0 ≤ Node < Spec.Nodes.
	Node int
}

// step is the resolution at which rates are integrated into arrivals.
const step = time.Millisecond

// maxStickyTries bounds the draws a sticky Zipf pick makes before it takes
// a key of the node's class evenly instead.
const maxStickyTries = 1024

// Generator yields a workload's arrivals in time order. It is not safe for
// concurrent use.
type Generator struct {
	s       Spec
	base    float64
	streams []stream
	heap    []int32 // live streams, by next arrival then node
	zipf    *zipf
	weights []float64 // under Sticky: each node's share of the load
}

// stream is one node's arrivals.
type stream struct {
	node    int
	rng     *rand.Rand // gaps between arrivals
	keys    *rand.Rand // key picks
	t       time.Duration
	owed    float64 // request mass needed before the next arrival
	pending []time.Duration
	pos     int
	next    time.Duration
	swept   int // under Sweep: the next of the stream's keys
}

// NewGenerator returns the arrivals of s, which must be valid.
func NewGenerator(s Spec) (*Generator, error) {
	if err := s.Validate(); err != nil {
		return nil, err
	}
	s = s.WithDefaults()
	g := &Generator{s: s, base: s.BaseRate(), streams: make([]stream, s.Nodes)}
	if s.Zipf && s.Keys > 1 {
		g.zipf = newZipf(s.Keys, s.ZipfExponent)
	}
	if s.Placement == Sticky {
		g.weights = stickyWeights(s)
	}
	for i := range g.streams {
		st := &g.streams[i]
		// The seeding and the first gap of the original harnesses'
		// arrivals (package pattern), so one key's load is theirs.
		st.node = i
		st.rng = rand.New(rand.NewPCG(s.Seed, uint64(i)+1))
		st.keys = rand.New(rand.NewPCG(s.Seed^0x6b657973, uint64(i)+1))
		st.owed = st.rng.Float64()
		if s.Arrivals == Poisson {
			st.owed = st.rng.ExpFloat64()
		}
		if g.advance(st) {
			g.push(int32(i))
		}
	}
	return g, nil
}

// Spec is the generator's workload, with its defaults.
func (g *Generator) Spec() Spec { return g.s }

// Next returns the next arrival, or false once the run's duration is
// reached.
func (g *Generator) Next() (Arrival, bool) {
	if len(g.heap) == 0 {
		return Arrival{}, false
	}
	i := g.heap[0]
	st := &g.streams[i]
	a := Arrival{At: st.next, Node: st.node, Key: g.pickKey(st)}
	if g.advance(st) {
		g.fix()
	} else {
		g.pop()
	}
	return a, true
}

// rate is the offered rate at node at t.
func (g *Generator) rate(node int, t time.Duration) float64 {
	s := &g.s
	total := g.base * s.Factor(t)
	n := s.Nodes
	switch {
	case n == 1:
		return total
	case s.Placement == Sticky:
		return total * g.weights[node]
	case s.Placement == Hot:
		if node == s.HotNode(t) {
			return total * s.HotFraction
		}
		return total * (1 - s.HotFraction) / float64(n-1)
	}
	return total / float64(n)
}

func (g *Generator) gap(st *stream) float64 {
	if g.s.Arrivals == Poisson {
		return st.rng.ExpFloat64()
	}
	return 1
}

// advance moves st to its next arrival; false when it has none left.
// Rates are integrated in 1 ms steps; within a step arrivals are placed in
// proportion to the mass they need.
func (g *Generator) advance(st *stream) bool {
	for st.pos == len(st.pending) {
		if st.t >= g.s.Duration {
			return false
		}
		st.pending, st.pos = st.pending[:0], 0
		mass := g.rate(st.node, st.t) * step.Seconds()
		if mass > 0 {
			used := 0.0
			for st.owed <= mass-used {
				used += st.owed
				if at := st.t + time.Duration(float64(step)*used/mass); at < g.s.Duration {
					st.pending = append(st.pending, at)
				}
				st.owed = g.gap(st)
			}
			st.owed -= mass - used
		}
		st.t += step
	}
	st.next = st.pending[st.pos]
	st.pos++
	return true
}

// pickKey draws the key of st's next arrival.
func (g *Generator) pickKey(st *stream) int {
	s := &g.s
	if s.Keys == 1 {
		return 0
	}
	if s.Sweep {
		// The stream's class of keys (k ≡ node mod Nodes) in turn, so
		// the streams together call every key once in Keys requests.
		n, class := min(s.Nodes, s.Keys), classSize(s.Keys, min(s.Nodes, s.Keys), st.node%min(s.Nodes, s.Keys))
		k := st.node%n + n*st.swept
		st.swept = (st.swept + 1) % class
		return k
	}
	if s.Placement != Sticky || s.Nodes == 1 {
		if g.zipf != nil {
			return g.zipf.sample(st.keys) - 1
		}
		return st.keys.IntN(s.Keys)
	}
	// Sticky: a key of the node's class, k ≡ node (mod Nodes).
	n, class := s.Nodes, classSize(s.Keys, s.Nodes, st.node)
	if g.zipf != nil {
		for range maxStickyTries {
			if k := g.zipf.sample(st.keys) - 1; k%n == st.node {
				return k
			}
		}
	}
	return st.node + n*st.keys.IntN(class)
}

// classSize is how many of keys keys are ≡ node (mod nodes).
func classSize(keys, nodes, node int) int {
	return (keys - node + nodes - 1) / nodes
}

// stickyWeights is each node's share of the load when key k goes to node
// k mod Nodes: the popularity of its keys.
func stickyWeights(s Spec) []float64 {
	w := make([]float64, s.Nodes)
	if !s.Zipf {
		for i := range w {
			w[i] = float64(max(0, classSize(s.Keys, s.Nodes, i))) / float64(s.Keys)
		}
		return w
	}
	total := 0.0
	for k := range s.Keys {
		p := math.Pow(float64(k+1), -s.ZipfExponent)
		w[k%s.Nodes] += p
		total += p
	}
	for i := range w {
		w[i] /= total
	}
	return w
}

// The heap of live streams, by next arrival, then node.

func (g *Generator) less(a, b int32) bool {
	x, y := &g.streams[a], &g.streams[b]
	if x.next != y.next {
		return x.next < y.next
	}
	return a < b
}

func (g *Generator) push(i int32) {
	g.heap = append(g.heap, i)
	j := len(g.heap) - 1
	for j > 0 {
		p := (j - 1) / 2
		if !g.less(g.heap[j], g.heap[p]) {
			break
		}
		g.heap[j], g.heap[p] = g.heap[p], g.heap[j]
		j = p
	}
}

func (g *Generator) pop() {
	last := len(g.heap) - 1
	g.heap[0] = g.heap[last]
	g.heap = g.heap[:last]
	if last > 0 {
		g.fix()
	}
}

// fix moves the head down to its place.
func (g *Generator) fix() {
	h, j := g.heap, 0
	for {
		l, r, m := 2*j+1, 2*j+2, j
		if l < len(h) && g.less(h[l], h[m]) {
			m = l
		}
		if r < len(h) && g.less(h[r], h[m]) {
			m = r
		}
		if m == j {
			return
		}
		h[j], h[m] = h[m], h[j]
		j = m
	}
}

// Expected is about how many arrivals s has (the rate integrated over the
// run in 100 ms steps): a hint for sizing buffers.
func Expected(s Spec) float64 {
	s = s.WithDefaults()
	const dt = 100 * time.Millisecond
	base, n := s.BaseRate(), 0.0
	for t := time.Duration(0); t < s.Duration; t += dt {
		n += base * s.Factor(t) * min(dt, s.Duration-t).Seconds()
	}
	return n
}

// Package sim is QuotaMesh's deterministic simulator: N real engines (the
// same window, crdt, share and engine code a node runs) on simulated time,
// joined by simulated links with delay, jitter, loss and partitions, each
// node with its own clock offset, driven by the demand patterns of package
// workload (one key or a million, placed on nodes as package workload
// says). Requests are decided by the nodes themselves, as an embedded node
// decides them, or by SDK clients as actors (Config.Clients): K clients per
// node, each with its own link to the nodes and its own arrivals, running
// the SDK's pure lease logic (package lease) on simulated time as the real
// client does. No sockets, no goroutines, no wall clock: a run is a
// function of its Config, seed included, so a result can be reproduced
// exactly.
//
// Links model what QUIC streams give the real node: frames arrive in order,
// a lost packet delays a frame (and every frame behind it) by a
// retransmission timeout instead of dropping it, and a partition breaks the
// stream, so both ends start over with a full state when it heals.
//
// It is how the admission algorithm is tuned, and users get it as a capacity
// planning tool: `quotamesh sim --nodes N --pattern P`.
package sim

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/quotamesh/quotamesh/internal/accuracy"
	"github.com/quotamesh/quotamesh/internal/engine"
	"github.com/quotamesh/quotamesh/internal/pattern"
	"github.com/quotamesh/quotamesh/internal/route"
	"github.com/quotamesh/quotamesh/internal/share"
	"github.com/quotamesh/quotamesh/internal/wire"
	"github.com/quotamesh/quotamesh/internal/workload"
	"github.com/quotamesh/quotamesh/limits"
)

// ErrInvalid reports a Config field out of range.
var ErrInvalid = errors.New("quotamesh/sim: invalid config")

// Partition cuts the cluster into groups from Start to End (simulated time
// since the run began). Nodes in different groups cannot exchange frames;
// nodes not listed form one more group.
type Partition struct {
	Start, End time.Duration
	Groups     [][]int
}

// Cut breaks the links between every node of A and every node of B, both
// ways, from Start to End, and no other link. Unlike a Partition it need
// not be transitive: with A {0} and B {2}, node 1 still hears both (a
// bridge), while 0 and 2 cannot hear each other.
type Cut struct {
	Start, End time.Duration
	A, B       []int
}

// ClockStep moves node's clock by Offset at At (the clock-skew nemesis).
type ClockStep struct {
	At     time.Duration
	Node   int
	Offset time.Duration // the node's new offset from true time
}

// Restart kills Node at At (kill -9: its engine and everything in it are
// gone, its links break) and starts it again as a new incarnation Down
// later. Requests that arrive while it is down never reach the cluster.
type Restart struct {
	At, Down time.Duration
	Node     int
}

// Config is one simulated run.
type Config struct {
	// Nodes is the cluster size, 1 to 1000.
	Nodes int
	// Workload, if set, is the offered load (its Nodes, and unless set its
	// Duration and Seed, are the run's); otherwise Pattern, Arrivals, Limit
	// and Multiplier describe one key's load.
	Workload *workload.Spec
	// Pattern and Arrivals shape the offered load (pattern.Load).
	Pattern  pattern.Name
	Arrivals pattern.Arrival
	// Limit is the key's limit; default 1000/s.
	Limit limits.Rate
	// Multiplier is offered load over the limit; default 2.
	Multiplier float64
	// Clients, if not zero, puts that many SDK clients beside each node:
	// a request offered at a node goes to one of its clients (at random),
	// which decides it as the SDK does (leases, or a round trip each with
	// Strict) over its own link to the nodes. Zero: the nodes decide every
	// request themselves, as an embedded node does.
	Clients int
	// Client tunes the SDK clients.
	Client ClientConfig
	// Route says, with no clients, where a node decides a request: Local
	// (as an embedded node's AllowN: always itself), Home (the key's home,
	// one link's round trip away, as the decision APIs with
	// --gateway-route home) or Thin (the default, as the decision APIs by
	// default: the home for a key whose limit and demand are thin over the
	// members, itself for any other, engine.Engine.Thin).
	Route Route
	// Duration of the run; default 60 s. Every time in a Config (partitions,
	// restarts, clock steps) counts from the start of the load.
	Duration time.Duration
	// Warmup is how long the nodes run, connecting and syncing, before the
	// load starts, as the real harness waits for its cluster to be ready;
	// default 1 s.
	Warmup time.Duration
	// Sync is the sync interval; default 20 ms.
	Sync time.Duration
	// RTT is the round-trip time of every link; default 2 ms.
	RTT time.Duration
	// Jitter adds a uniform random delay in [0, Jitter) to each frame.
	Jitter time.Duration
	// Loss is the probability that a frame needs a retransmission, which
	// delays it (and the frames behind it on its link, as on a QUIC stream)
	// by RTO; a retransmission is lost again with the same probability, and
	// each further one waits twice as long (QUIC's probe timeout backs off).
	Loss float64
	// RTO is the delay one loss adds; default 3×RTT + 1 ms. quic-go's probe
	// timeout on a path of RTT r is about r + 4·rttvar + 25 ms (its maximum
	// ACK delay), so 30 ms models real processes on one machine better.
	RTO time.Duration
	// Skew gives node i a fixed clock offset, spread evenly over
	// [−Skew, +Skew].
	Skew time.Duration
	// FirstFrame delays the first sync frame of every new stream (after a
	// partition heals, a restart or at start) to this long after its hello:
	// on real processes the first full state can take that long (a QUIC
	// handshake under load, a state of many keys) while the hello is
	// already in. Zero: the next tick's frame follows at once.
	FirstFrame time.Duration
	// ClockSteps change clock offsets during the run.
	ClockSteps []ClockStep
	// Partitions cut links during the run.
	Partitions []Partition
	// Cuts break single links during the run (non-transitive partitions).
	Cuts []Cut
	// Restarts kill and restart nodes during the run.
	Restarts []Restart
	// Pauses stop nodes during the run; IdleTimeout and Reconnect say what
	// the streams to a paused node do (pause.go).
	Pauses      []Pause
	IdleTimeout time.Duration
	Reconnect   time.Duration
	// Resets reset every key of the workload during the run (reset.go).
	Resets []Reset
	// Policy is the partition policy.
	Policy share.Policy
	// Seed makes the run reproducible; default 1.
	Seed uint64
	// Engine tunes every engine (Node, Incarnation and Seed are set per
	// node; SyncInterval is set from Sync).
	Engine engine.Config
	// Encode sends every frame through wire's encoder and decoder, to
	// measure bytes on the wire (slower).
	Encode bool
}

func (c Config) withDefaults() Config {
	c.Client = c.Client.withDefaults()
	if c.Arrivals == "" {
		c.Arrivals = pattern.Even
	}
	if c.Limit == (limits.Rate{}) {
		c.Limit = limits.MustParseRate("1000/s")
	}
	if c.Multiplier == 0 {
		c.Multiplier = 2
	}
	if c.Duration == 0 {
		c.Duration = 60 * time.Second
	}
	if c.Warmup == 0 {
		c.Warmup = time.Second
	}
	if c.Sync == 0 {
		c.Sync = 20 * time.Millisecond
	}
	if c.RTT == 0 {
		c.RTT = 2 * time.Millisecond
	}
	if c.Seed == 0 {
		c.Seed = 1
	}
	if c.Route == "" {
		c.Route = RouteThin
	}
	if c.IdleTimeout == 0 {
		c.IdleTimeout = DefaultIdleTimeout
	}
	if c.Reconnect == 0 {
		c.Reconnect = DefaultReconnect
	}
	return c
}

// Validate names the first bad field.
func (c Config) Validate() error {
	d := c.withDefaults()
	switch {
	case d.Nodes < 1 || d.Nodes > 1000:
		return fmt.Errorf("%w: nodes %d, use 1 to 1000", ErrInvalid, d.Nodes)
	case d.Sync < time.Millisecond || d.Sync > 10*time.Second:
		return fmt.Errorf("%w: sync %v, use 1ms to 10s", ErrInvalid, d.Sync)
	case d.RTT < 0 || d.RTT > 10*time.Second || d.Jitter < 0 || d.Jitter > 10*time.Second:
		return fmt.Errorf("%w: rtt %v, jitter %v: use 0 to 10s", ErrInvalid, d.RTT, d.Jitter)
	case d.Loss < 0 || d.Loss >= 1:
		return fmt.Errorf("%w: loss %v, use [0, 1)", ErrInvalid, d.Loss)
	case d.FirstFrame < 0 || d.FirstFrame > 10*time.Second:
		return fmt.Errorf("%w: first frame %v, use 0 to 10s", ErrInvalid, d.FirstFrame)
	case d.RTO < 0 || d.RTO > 10*time.Second:
		return fmt.Errorf("%w: rto %v, use 0 to 10s", ErrInvalid, d.RTO)
	case d.IdleTimeout > time.Minute || d.Reconnect < 0 || d.Reconnect > time.Minute:
		return fmt.Errorf("%w: idle timeout %v, reconnect %v: use up to 1m (a negative idle timeout: never)", ErrInvalid, d.IdleTimeout, d.Reconnect)
	case d.Skew < 0 || d.Skew > time.Hour:
		return fmt.Errorf("%w: skew %v, use 0 to 1h", ErrInvalid, d.Skew)
	case d.Duration <= 0 || d.Duration > 24*time.Hour:
		return fmt.Errorf("%w: duration %v, use up to 24h", ErrInvalid, d.Duration)
	case d.Warmup < 0 || d.Warmup > time.Hour:
		return fmt.Errorf("%w: warmup %v, use 0 to 1h", ErrInvalid, d.Warmup)
	}
	if err := d.Limit.Validate(); err != nil {
		return fmt.Errorf("%w: limit: %w", ErrInvalid, err)
	}
	for i, p := range d.Partitions {
		if p.End <= p.Start {
			return fmt.Errorf("%w: partition %d ends at %v, not after its start %v", ErrInvalid, i, p.End, p.Start)
		}
		for _, g := range p.Groups {
			for _, n := range g {
				if n < 0 || n >= d.Nodes {
					return fmt.Errorf("%w: partition %d names node %d of %d", ErrInvalid, i, n, d.Nodes)
				}
			}
		}
	}
	for i, c := range d.Cuts {
		if c.End <= c.Start {
			return fmt.Errorf("%w: cut %d ends at %v, not after its start %v", ErrInvalid, i, c.End, c.Start)
		}
		for _, n := range slices.Concat(c.A, c.B) {
			if n < 0 || n >= d.Nodes {
				return fmt.Errorf("%w: cut %d names node %d of %d", ErrInvalid, i, n, d.Nodes)
			}
		}
	}
	for i, r := range d.Restarts {
		if r.Node < 0 || r.Node >= d.Nodes || r.Down <= 0 {
			return fmt.Errorf("%w: restart %d of node %d down for %v: name a node of %d and a positive down time", ErrInvalid, i, r.Node, r.Down, d.Nodes)
		}
	}
	for i, p := range d.Pauses {
		if p.Node < 0 || p.Node >= d.Nodes || p.For <= 0 {
			return fmt.Errorf("%w: pause %d of node %d for %v: name a node of %d and a positive duration", ErrInvalid, i, p.Node, p.For, d.Nodes)
		}
	}
	for i, s := range d.ClockSteps {
		if s.Node < 0 || s.Node >= d.Nodes {
			return fmt.Errorf("%w: clock step %d names node %d of %d", ErrInvalid, i, s.Node, d.Nodes)
		}
	}
	if d.Route != RouteLocal && d.Route != RouteHome && d.Route != RouteThin {
		return fmt.Errorf("%w: route %q, use local, home or thin", ErrInvalid, d.Route)
	}
	if d.Clients < 0 || d.Clients > maxClients {
		return fmt.Errorf("%w: clients %d per node, use 0 to %d", ErrInvalid, d.Clients, maxClients)
	}
	if err := d.Client.validate(); err != nil {
		return err
	}
	if err := d.validateResets(); err != nil {
		return err
	}
	if _, err := d.load(); err != nil {
		return err
	}
	return nil
}

// load is the run's workload: Config.Workload, or one key's load from
// Pattern, Arrivals, Limit and Multiplier.
func (c Config) load() (workload.Spec, error) {
	var w workload.Spec
	if c.Workload != nil {
		w = *c.Workload
		if w.Duration == 0 {
			w.Duration = c.Duration
		}
		if w.Seed == 0 {
			w.Seed = c.Seed
		}
	} else {
		if _, err := pattern.Parse(string(c.Pattern)); err != nil {
			return w, fmt.Errorf("%w: %w", ErrInvalid, err)
		}
		p, err := workload.ParsePattern(string(c.Pattern))
		if err != nil {
			return w, fmt.Errorf("%w: %w", ErrInvalid, err)
		}
		arr, err := workload.ParseArrival(string(c.Arrivals))
		if err != nil {
			return w, fmt.Errorf("%w: %w", ErrInvalid, err)
		}
		w = workload.Spec{Rule: key, Limit: c.Limit, Multiplier: c.Multiplier, Arrivals: arr, Duration: c.Duration, Seed: c.Seed}
		p.Apply(&w, 0)
	}
	w.Nodes = c.Nodes
	if err := w.Validate(); err != nil {
		return w, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	return w.WithDefaults(), nil
}

// Result is a run's report plus what only a simulation can tell.
type Result struct {
	accuracy.Report
	// PerSecond is the cluster's admitted count in each whole second.
	PerSecond []int64 `json:"per_second"`
	// Frames and Bytes count what crossed the links (Bytes only with
	// Config.Encode).
	Frames int64 `json:"frames"`
	Bytes  int64 `json:"bytes,omitempty"`
	// Rejected counts frames the engines refused.
	Rejected int64 `json:"rejected"`
	// Failed counts requests that got an error instead of a decision.
	Failed int64 `json:"failed,omitempty"`
	// With SDK clients: ClientRequests counts the requests they sent the
	// nodes (decisions, leases, settlements), LeaseRequests those that
	// asked for a lease, and LocalDecisions the calls decided from leases
	// or denied locally, without a round trip.
	ClientRequests int64 `json:"client_requests,omitempty"`
	LeaseRequests  int64 `json:"lease_requests,omitempty"`
	LocalDecisions int64 `json:"local_decisions,omitempty"`
	// Routed counts the requests nodes sent to their key's home
	// (Config.Route).
	Routed int64 `json:"routed,omitempty"`
	// Workload describes the offered load.
	Workload string `json:"workload"`
	// IdealMaxWindowRatio is max_window_ratio of the ideal's admissions.
	IdealMaxWindowRatio float64 `json:"ideal_max_window_ratio"`
	// ResetFloors are when Config.Resets took effect (reset.go).
	ResetFloors []ResetFloor `json:"reset_floors,omitempty"`

	admits []time.Duration // every admission's time since the load began, in order
}

// MaxWindow is the largest number of admissions in any interval
// [t, t+width) with from <= t and t+width <= to (times since the load
// began): the real-time window the fault tests bound.
func (r Result) MaxWindow(from, to, width time.Duration) int64 {
	var best int64
	lo := 0
	for hi, t := range r.admits {
		if t < from || t >= to {
			continue
		}
		for lo < hi && (r.admits[lo] < from || r.admits[lo] <= t-width) {
			lo++
		}
		best = max(best, int64(hi-lo+1))
	}
	return best
}

// base is the simulated wall-clock time of the start of a run: node time is
// base + simulated time + the node's clock offset.
const base = int64(1_767_225_600) * int64(time.Second) // 2026-01-01

const key = "sim.key"

// nameCache is how many keys' names are made once; further keys' names are
// made at each request.
const nameCache = 1 << 17

type node struct {
	id       string
	eng      *engine.Engine
	cfg      engine.Config // to start it again
	down     bool
	pausedTo time.Duration // paused until this time, if after now
	delayed  []int32       // requests (log indices) waiting for a paused process
	restarts uint64
	offset   time.Duration
}

type link struct {
	up       bool
	lastAt   time.Duration // delivery time of the last frame queued, to keep order
	streamID uint64        // frames of an older stream are dropped on delivery
	// The ends of a stream to a paused node close apart (pause.go):
	// fromClosed, the sender closed its end (it sends nothing more; frames
	// it sent before still arrive); toClosed, the receiver did (frames
	// arriving are dropped).
	fromClosed, toClosed bool
}

type sim struct {
	cfg     Config
	now     time.Duration
	nodes   []*node
	table   *limits.Table
	ids     []string
	links   [][]*link // links[from][to]
	q       eventQueue
	rng     *rand.Rand
	work    workload.Spec
	gen     *workload.Generator
	names   []string // the first keys' names
	log     *accuracy.Log
	clients []*sdk
	crng    *rand.Rand // which client of a node an arrival goes to
	routes  *route.Table
	res     Result
	enc     *wire.Encoder
	dec     *wire.Decoder
	buf     []byte
	// resetTables are the tables of the resets committed so far.
	resetTables []*limits.Table
}

// Run simulates cfg and reports what the cluster admitted.
func Run(cfg Config) (Result, error) {
	if err := cfg.Validate(); err != nil {
		return Result{}, err
	}
	cfg = cfg.withDefaults()
	work, _ := cfg.load()
	s := &sim{cfg: cfg, rng: rand.New(rand.NewPCG(cfg.Seed, 0x5eed)), work: work, log: accuracy.NewLog(),
		crng: rand.New(rand.NewPCG(cfg.Seed, 0xc11e))}
	if cfg.Encode {
		s.enc, s.dec = wire.NewEncoder(), wire.NewDecoder()
	}
	table, err := limits.NewTable(limits.Rule{Pattern: work.Rule, Rate: work.Limit})
	if err != nil {
		return Result{}, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	if s.gen, err = workload.NewGenerator(work); err != nil {
		return Result{}, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	for i := range min(work.Keys, nameCache) {
		s.names = append(s.names, work.KeyName(i))
	}
	ids := make([]string, cfg.Nodes)
	for i := range ids {
		ids[i] = fmt.Sprintf("n%03d", i)
	}
	for i := range cfg.Nodes {
		ecfg := cfg.Engine
		ecfg.Node = ids[i]
		ecfg.Incarnation = uint64(i) + 1
		ecfg.Seed = cfg.Seed*1000003 + uint64(i)
		ecfg.SyncInterval = cfg.Sync
		ecfg.Policy = cfg.Policy
		n := &node{id: ids[i], cfg: ecfg}
		if cfg.Nodes > 1 && cfg.Skew > 0 {
			n.offset = time.Duration(-float64(cfg.Skew) + 2*float64(cfg.Skew)*float64(i)/float64(cfg.Nodes-1))
		}
		n.eng, err = engine.New(ecfg, table, ids, s.nodeTime(n))
		if err != nil {
			return Result{}, fmt.Errorf("%w: engine: %w", ErrInvalid, err)
		}
		s.nodes = append(s.nodes, n)
	}
	s.table, s.ids = table, ids
	s.links = make([][]*link, cfg.Nodes)
	for i := range s.links {
		s.links[i] = make([]*link, cfg.Nodes)
		for j := range s.links[i] {
			s.links[i][j] = &link{}
		}
	}
	for i := range s.nodes {
		// Ticks start at a random phase so nodes do not tick in lockstep.
		s.q.push(event{at: time.Duration(s.rng.Int64N(int64(cfg.Sync))), kind: evTick, node: i})
	}
	s.routes = route.New(ids...)
	s.startClients()
	s.nextArrival()
	w := cfg.Warmup
	for _, p := range cfg.Pauses {
		s.q.push(event{at: w + p.At, kind: evPause, node: p.Node, offset: p.For})
	}
	for _, r := range cfg.Restarts {
		s.q.push(event{at: w + r.At, kind: evKill, node: r.Node})
		s.q.push(event{at: w + r.At + r.Down, kind: evRevive, node: r.Node})
	}
	for _, st := range cfg.ClockSteps {
		s.q.push(event{at: w + st.At, kind: evClock, node: st.Node, offset: st.Offset})
	}
	s.scheduleResets()
	s.q.push(event{at: 0, kind: evLinks})
	for _, p := range cfg.Partitions {
		s.q.push(event{at: w + p.Start, kind: evLinks})
		s.q.push(event{at: w + p.End, kind: evLinks})
	}
	for _, c := range cfg.Cuts {
		s.q.push(event{at: w + c.Start, kind: evLinks})
		s.q.push(event{at: w + c.End, kind: evLinks})
	}
	for s.q.len() > 0 {
		ev := s.q.pop()
		if ev.at >= w+cfg.Duration {
			s.q.push(ev)
			break
		}
		s.now = ev.at
		s.handle(ev)
	}
	// Calls the clients sent before the end are answered, as the bench
	// waits for every answer: only the clients' messages move now.
	for s.q.len() > 0 {
		ev := s.q.pop()
		if ev.kind == evToNode || ev.kind == evToClient {
			s.now = ev.at
			s.handle(ev)
		}
	}
	return s.report(), nil
}

// nodeTime is what node n's clock reads now: true time, the node's offset,
// and the correction its engine asks for (clock alignment).
func (s *sim) nodeTime(n *node) int64 {
	t := base + int64(s.now) + int64(n.offset)
	if n.eng != nil {
		t += int64(n.eng.Correction())
	}
	return t
}

func (s *sim) handle(ev event) {
	if ev.kind == evDeliver || ev.kind == evToNode || ev.kind == evForward {
		if n := s.nodes[ev.node]; n.pausedTo > s.now {
			// The process is stopped: the frame or request waits for it
			// (pause.go says in which order they are handled).
			ev.at = n.pausedTo
			if ev.kind == evToNode || ev.kind == evForward {
				ev.at += afterWakeTick
			}
			s.q.push(ev)
			return
		}
	}
	switch ev.kind {
	case evArrival:
		s.nextArrival()
		s.arrive(ev.node, int(ev.key))
	case evTick:
		s.q.push(event{at: s.now + s.cfg.Sync, kind: evTick, node: ev.node})
		s.tick(ev.node)
	case evDeliver:
		l := s.links[ev.from][ev.node]
		if !l.up || l.streamID != ev.stream || l.toClosed {
			return // the stream broke while the frame was in flight
		}
		n := s.nodes[ev.node]
		var err error
		switch m := ev.msg.(type) {
		case *wire.Sync:
			err = n.eng.Receive(s.nodeTime(n), s.nodes[ev.from].id, m)
		case *wire.Hello:
			err = n.eng.Hello(s.nodeTime(n), s.nodes[ev.from].id, m)
		}
		if err != nil {
			s.res.Rejected++
		}
	case evLinks:
		s.updateLinks()
	case evClock:
		s.nodes[ev.node].offset = ev.offset
	case evPause, evResume, evIdleClose, evReconnect, evWakeTick, evServeDelayed:
		s.handlePause(ev)
	case evKill:
		s.nodes[ev.node].down = true
		s.updateLinks()
	case evResetCommit, evResetApply:
		s.handleReset(ev)
	case evForward:
		s.forwarded(ev.from, ev.node, ev.key)
	default:
		s.handleClient(ev)
	case evRevive:
		n := s.nodes[ev.node]
		n.restarts++
		cfg := n.cfg
		cfg.Incarnation += 1000 * n.restarts
		cfg.Seed += 1000 * n.restarts
		eng, err := engine.New(cfg, s.table, s.ids, s.nodeTime(n))
		if err != nil {
			panic(fmt.Sprintf("sim: restarting %s: %v", n.id, err)) // the config started it once already
		}
		n.eng, n.down = eng, false
		s.updateLinks()
	}
}

func (s *sim) index(id string) int {
	var i int
	fmt.Sscanf(id, "n%d", &i)
	return i
}

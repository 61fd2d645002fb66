package engine

import (
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/quotamesh/quotamesh/internal/share"
	"github.com/quotamesh/quotamesh/internal/wire"
	"github.com/quotamesh/quotamesh/limits"
)

// TestScenarios runs the stories of testdata/*.txt: admission across nodes
// (design.md §7) step by step, with the expected state after each step.
// Regenerate the expected output with
//
//	go test ./internal/engine -run TestScenarios -rewrite
//
// Commands (times are Go durations, node lists are comma-separated):
//
//	cluster nodes=a,b,c [policy=available]  engines joined by streams, at time 0
//	limit k=300/s ...                       the limit table, on every engine
//	run for=1s [offer=a:4000,b:100] [key=k] time passes: every node ticks every
//	                                        20 ms and its frames arrive at once;
//	                                        each node is offered its requests
//	                                        evenly over the period; prints what
//	                                        was admitted (and per second, from 2 s)
//	tick [nodes=a,b]                        ticks now, frames stay queued
//	frames                                  lists the queued frames
//	deliver [from=a] [to=b] [kind=hello]    delivers queued frames, in order
//	drop [from=a] [to=b]                    loses queued frames
//	partition a,b|c                         cuts every link between the groups
//	cut a-c                                 cuts one link (both ways)
//	heal                                    every cut link comes back: a new stream
//	                                        each way, starting with a hello
//	members on=a,b nodes=a,b                the engines in on apply a membership
//	pause c / resume c                      a stopped process: no ticks, no frames
//	                                        handled, no requests offered
//	offer node=a n=50 [key=k]               n requests now; prints the admitted
//	state [key=k]                           per node: quota ("expired" once its
//	                                        validity passed), own window count,
//	                                        what others hold (of which reserved),
//	                                        fenced, the members it hears, those
//	                                        whose reservation it reclaimed
//
// Links deliver at once: a frame sent at a tick is merged before the next
// tick, a model of a fast network, not of real delays.
func TestScenarios(t *testing.T) {
	files, err := filepath.Glob("testdata/*.txt")
	if err != nil || len(files) == 0 {
		t.Fatalf("no scenario files in testdata/ (%v)", err)
	}
	for _, f := range files {
		t.Run(strings.TrimSuffix(filepath.Base(f), ".txt"), func(t *testing.T) {
			s := &scenario{t: t}
			runDataDriven(t, f, s.do)
		})
	}
}

type scenario struct {
	t        *testing.T
	ids      []string
	eng      map[string]*Engine
	now      int64 // time since the start of the scenario
	lastTick map[string]int64
	queue    []frame
	cut      map[[2]string]bool
	paused   map[string]bool
	rejected int
}

const syncEvery = 20 * ms

func (s *scenario) do(d *directive) string {
	if s.eng == nil && d.cmd != "" && !strings.HasPrefix(d.cmd, "cluster") {
		s.t.Fatalf("%s: the first command must be cluster", d.pos)
	}
	switch name := strings.Fields(d.cmd)[0]; name {
	case "cluster":
		return s.cluster(d)
	case "limit":
		var rules []limits.Rule
		for _, k := range sortedKeys(d.args) {
			rate, err := limits.ParseRate(d.args[k])
			if err != nil {
				s.t.Fatalf("%s: %v", d.pos, err)
			}
			rules = append(rules, limits.Rule{Pattern: k, Rate: rate})
		}
		tb, err := limits.NewTable(rules...)
		if err != nil {
			s.t.Fatalf("%s: %v", d.pos, err)
		}
		for _, id := range s.ids {
			s.eng[id].SetTable(tb)
		}
		return ""
	case "run":
		return s.run(d)
	case "tick":
		before := len(s.queue)
		for _, id := range s.nodes(d, "nodes") {
			s.tick(id)
		}
		return s.frames(s.queue[before:])
	case "frames":
		return s.frames(s.queue)
	case "deliver", "drop":
		return s.deliverOrDrop(d, name == "deliver")
	case "partition":
		groups := strings.Split(strings.Join(d.words, ""), "|")
		for i, g := range groups {
			for _, h := range groups[i+1:] {
				for _, a := range strings.Split(g, ",") {
					for _, b := range strings.Split(h, ",") {
						s.cutLink(a, b)
					}
				}
			}
		}
		return ""
	case "cut":
		for _, w := range d.words {
			a, b, _ := strings.Cut(w, "-")
			s.cutLink(a, b)
		}
		return ""
	case "heal":
		return s.heal()
	case "members":
		// members on=a,b nodes=a,b: the engines listed in on get the
		// membership nodes (a Raft configuration change they applied).
		ids := strings.Split(d.arg("nodes", ""), ",")
		for _, id := range strings.Split(d.arg("on", ""), ",") {
			if s.eng[id] == nil {
				s.t.Fatalf("%s: members on unknown node %q", d.pos, id)
			}
			s.eng[id].SetMembers(ids, s.nodeTime(id, s.now))
		}
		return ""
	case "pause", "resume":
		for _, id := range d.words {
			s.paused[id] = name == "pause"
		}
		return ""
	case "offer":
		id, key := d.arg("node", ""), d.arg("key", "k")
		n, err := strconv.Atoi(d.arg("n", "1"))
		if err != nil || s.eng[id] == nil {
			s.t.Fatalf("%s: offer needs node=<a node> n=<count>", d.pos)
		}
		admitted := 0
		for range n {
			if dec, _ := s.eng[id].AllowN(s.nodeTime(id, s.now), key, 1); dec.Allowed {
				admitted++
			}
		}
		return fmt.Sprintf("admitted %d of %d", admitted, n)
	case "state":
		return s.state(d.arg("key", "k"))
	default:
		s.t.Fatalf("%s: unknown command %q", d.pos, name)
		return ""
	}
}

func (s *scenario) cluster(d *directive) string {
	s.ids = strings.Split(d.arg("nodes", "a,b,c"), ",")
	s.eng = map[string]*Engine{}
	s.lastTick = map[string]int64{}
	s.cut = map[[2]string]bool{}
	s.paused = map[string]bool{}
	cfg := Config{}
	switch p := d.arg("policy", "conservative"); p {
	case "conservative":
	case "available":
		cfg.Policy = share.Available
	default:
		s.t.Fatalf("%s: policy=%s: want conservative or available", d.pos, p)
	}
	empty, err := limits.NewTable()
	if err != nil {
		s.t.Fatal(err)
	}
	for i, id := range s.ids {
		c := cfg
		c.Node, c.Incarnation = id, uint64(i+1)
		s.eng[id] = newEngine(s.t, c, empty, s.ids, t0)
		s.lastTick[id] = -1
	}
	for _, a := range s.ids {
		for _, b := range s.ids {
			if a != b {
				s.connect(a, b)
			}
		}
	}
	s.deliverAll()
	return ""
}

// connect starts a new stream from a to b: PeerUp, then a's hello.
func (s *scenario) connect(a, b string) {
	s.eng[a].PeerUp(b)
	self := s.eng[a].Self()
	s.queue = append(s.queue, frame{a, b, &wire.Hello{ClusterID: "quotamesh", Node: self.Node, Incarnation: self.Incarnation, Addr: "x"}})
}

func (s *scenario) cutLink(a, b string) {
	if s.eng[a] == nil || s.eng[b] == nil || a == b {
		s.t.Fatalf("cannot cut %q-%q", a, b)
	}
	for _, l := range [][2]string{{a, b}, {b, a}} {
		s.cut[l] = true
		s.eng[l[0]].PeerDown(l[1])
	}
	s.queue = slices.DeleteFunc(s.queue, func(f frame) bool { return s.cut[[2]string{f.from, f.to}] })
}

func (s *scenario) heal() string {
	var healed []string
	for _, a := range s.ids {
		for _, b := range s.ids {
			if s.cut[[2]string{a, b}] {
				delete(s.cut, [2]string{a, b})
				s.connect(a, b)
				if a < b {
					healed = append(healed, a+"-"+b)
				}
			}
		}
	}
	return "healed " + strings.Join(healed, " ")
}

func (s *scenario) nodeTime(id string, at int64) int64 {
	return t0 + at + int64(s.eng[id].Correction())
}

// tick runs one tick of id now, as the node does: Tick, send, Advance.
func (s *scenario) tick(id string) {
	if s.paused[id] {
		return
	}
	s.lastTick[id] = s.now
	tickWith(s.eng[id], s.nodeTime(id, s.now), func(to string, m *wire.Sync) error {
		s.queue = append(s.queue, frame{id, to, m})
		return nil
	})
}

// deliverAll delivers every queued frame whose receiver is not paused.
func (s *scenario) deliverAll() {
	kept := s.queue[:0]
	for _, f := range slices.Clone(s.queue) {
		if s.paused[f.to] {
			kept = append(kept, f)
			continue
		}
		if err := s.deliver(f); err != nil {
			s.rejected++
		}
	}
	s.queue = kept
}

func (s *scenario) deliver(f frame) error {
	e, now := s.eng[f.to], s.nodeTime(f.to, s.now)
	switch m := f.msg.(type) {
	case *wire.Hello:
		return e.Hello(now, f.from, m)
	case *wire.Sync:
		return e.Receive(now, f.from, m)
	}
	return nil
}

func (s *scenario) run(d *directive) string {
	dur, err := time.ParseDuration(d.arg("for", "1s"))
	if err != nil || dur%time.Millisecond != 0 {
		s.t.Fatalf("%s: for=%s is not a whole number of milliseconds", d.pos, d.arg("for", ""))
	}
	key := d.arg("key", "k")
	offer := map[string]int64{}
	if o := d.arg("offer", ""); o != "" {
		for _, p := range strings.Split(o, ",") {
			id, n, _ := strings.Cut(p, ":")
			v, err := strconv.ParseInt(n, 10, 64)
			if err != nil || s.eng[id] == nil {
				s.t.Fatalf("%s: offer=%s: want node:count,...", d.pos, o)
			}
			offer[id] = v
		}
	}
	steps := int64(dur / time.Millisecond)
	admitted := map[string]int64{}
	perSecond := make([]int64, (steps+999)/1000)
	s.rejected = 0
	for step := range steps {
		if s.now%syncEvery == 0 {
			for _, id := range s.ids {
				if s.lastTick[id] != s.now {
					s.tick(id)
				}
			}
			s.deliverAll()
		}
		for _, id := range s.ids {
			if s.paused[id] {
				continue
			}
			// Requests numbered from ceil(step·n/steps) on fall in this
			// millisecond, evenly spaced within it.
			n := offer[id]
			from, to := (step*n+steps-1)/steps, ((step+1)*n+steps-1)/steps
			for r := from; r < to; r++ {
				at := s.now + (r*steps*ms/max(n, 1))%ms
				if dec, _ := s.eng[id].AllowN(s.nodeTime(id, at), key, 1); dec.Allowed {
					admitted[id]++
					perSecond[step/1000]++
				}
			}
		}
		s.now += ms
	}
	var b strings.Builder
	b.WriteString("admitted")
	var total int64
	for _, id := range s.ids {
		if n, ok := offer[id]; ok {
			fmt.Fprintf(&b, " %s=%d/%d", id, admitted[id], n)
		}
		total += admitted[id]
	}
	fmt.Fprintf(&b, " total=%d", total)
	if len(perSecond) >= 2 {
		fmt.Fprintf(&b, "\nper second %v", perSecond)
	}
	if s.rejected > 0 {
		fmt.Fprintf(&b, "\nframes rejected %d", s.rejected)
	}
	return b.String()
}

// frames lists frames: hellos, full states, deltas and relays.
func (s *scenario) frames(fs []frame) string {
	var b strings.Builder
	for _, f := range fs {
		fmt.Fprintf(&b, "%s→%s ", f.from, f.to)
		switch m := f.msg.(type) {
		case *wire.Hello:
			b.WriteString("hello")
		case *wire.Sync:
			kind := "delta"
			switch {
			case m.Delta.Full:
				kind = "full state"
			case m.Delta.Basis == m.Delta.Seq:
				var ids []string
				for _, o := range m.Delta.Origins[1:] { // the first is the sender's
					ids = append(ids, o.ID.Node)
				}
				kind = "relay of " + strings.Join(ids, ",")
			}
			fmt.Fprintf(&b, "%s (frame %d, part %d/%d)", kind, m.Seq, m.Delta.Part+1, m.Delta.Parts)
			if len(m.Misses) > 0 {
				fmt.Fprintf(&b, " misses %s", strings.Join(m.Misses, ","))
			}
		}
		b.WriteString("\n")
	}
	if b.Len() == 0 {
		return "no frames"
	}
	return b.String()
}

func (s *scenario) deliverOrDrop(d *directive, deliver bool) string {
	match := func(f frame) bool {
		_, hello := f.msg.(*wire.Hello)
		return (d.arg("from", "") == "" || d.arg("from", "") == f.from) &&
			(d.arg("to", "") == "" || d.arg("to", "") == f.to) &&
			(d.arg("kind", "") == "" || (d.arg("kind", "") == "hello") == hello)
	}
	var kept []frame
	n := 0
	var errs []string
	stale := map[string]int{} // refused as stale, by link: one line each
	for _, f := range slices.Clone(s.queue) {
		if !match(f) || deliver && s.paused[f.to] {
			kept = append(kept, f)
			continue
		}
		n++
		if deliver {
			err := s.deliver(f)
			switch {
			case errors.Is(err, ErrStaleFrame):
				link := f.from + "→" + f.to
				if stale[link] == 0 {
					errs = append(errs, link)
				}
				stale[link]++
			case err != nil:
				errs = append(errs, fmt.Sprintf("%s→%s: %v", f.from, f.to, err))
			}
		}
	}
	for i, e := range errs {
		if k := stale[e]; k > 0 {
			errs[i] = fmt.Sprintf("%s: %d refused: %v", e, k, ErrStaleFrame)
		}
	}
	s.queue = kept
	verb := "delivered"
	if !deliver {
		verb = "dropped"
	}
	return strings.Join(append([]string{fmt.Sprintf("%s %d", verb, n)}, errs...), "\n")
}

// state prints, per node, its quota and own window count for key, what it
// counts the others as holding (and of that, how much is reserved beyond
// what they admitted), whether it is fenced, which members it hears and
// whose reservation it has reclaimed.
func (s *scenario) state(key string) string {
	var b strings.Builder
	for _, id := range s.ids {
		e := s.eng[id]
		st := e.Status(s.nodeTime(id, s.now), 1<<20)
		fmt.Fprintf(&b, "%s:", id)
		i := slices.IndexFunc(st.TopKeys, func(k KeyStatus) bool { return k.Key == key })
		if i < 0 {
			b.WriteString(" no window")
		} else {
			k := st.TopKeys[i]
			fmt.Fprintf(&b, " quota=%d", k.Quota)
			if !e.live(s.nodeTime(id, s.now)) {
				b.WriteString(" (expired)")
			}
			fmt.Fprintf(&b, " window=%d others=%d reserved=%d", k.Admitted, k.Others, k.Reserved)
		}
		var hears, reclaimed []string
		for _, m := range st.Members {
			if m.Self {
				continue
			}
			if m.Reachable {
				hears = append(hears, m.ID)
			}
			if m.Reclaimed {
				reclaimed = append(reclaimed, m.ID)
			}
		}
		if st.Fenced {
			b.WriteString(" fenced")
		}
		fmt.Fprintf(&b, " hears=%s", orNone(hears))
		if len(reclaimed) > 0 {
			fmt.Fprintf(&b, " reclaimed=%s", strings.Join(reclaimed, ","))
		}
		if s.paused[id] {
			b.WriteString(" (paused)")
		}
		b.WriteString("\n")
	}
	return b.String()
}

// nodes returns the nodes named by argument key, or every node.
func (s *scenario) nodes(d *directive, key string) []string {
	if v := d.arg(key, ""); v != "" {
		return strings.Split(v, ",")
	}
	return s.ids
}

func orNone(ids []string) string {
	if len(ids) == 0 {
		return "-"
	}
	return strings.Join(ids, ",")
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

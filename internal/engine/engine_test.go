package engine

import (
	"errors"
	"github.com/quotamesh/quotamesh"
	"github.com/quotamesh/quotamesh/internal/route"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/quotamesh/quotamesh/crdt"
	"github.com/quotamesh/quotamesh/internal/share"
	"github.com/quotamesh/quotamesh/internal/wire"
	"github.com/quotamesh/quotamesh/limits"
	"github.com/quotamesh/quotamesh/window"
)

const (
	t0 = int64(1_767_225_600) * int64(time.Second)
	ms = int64(time.Millisecond)
)

func table(t *testing.T, rules ...string) *limits.Table {
	t.Helper()
	var rs []limits.Rule
	for i := 0; i < len(rules); i += 2 {
		rs = append(rs, limits.Rule{Pattern: rules[i], Rate: limits.MustParseRate(rules[i+1])})
	}
	tb, err := limits.NewTable(rs...)
	if err != nil {
		t.Fatal(err)
	}
	return tb
}

func newEngine(t *testing.T, cfg Config, tb *limits.Table, members []string, now int64) *Engine {
	t.Helper()
	if cfg.Incarnation == 0 {
		cfg.Incarnation = uint64(len(cfg.Node)) + 7
	}
	e, err := New(cfg, tb, members, now)
	if err != nil {
		t.Fatalf("New(%+v) = %v", cfg, err)
	}
	return e
}

// net is a cluster of engines that deliver frames to each other at once.
type net struct {
	t       *testing.T
	engines map[string]*Engine
	offset  map[string]int64 // each engine's clock offset
	queue   []frame
	cut     map[[2]string]bool // links that drop every frame, from→to
}

type frame struct {
	from, to string
	msg      wire.Message
}

func newNet(t *testing.T, tb *limits.Table, cfg Config, ids ...string) *net {
	n := &net{t: t, engines: map[string]*Engine{}, offset: map[string]int64{}}
	for i, id := range ids {
		c := cfg
		c.Node, c.Incarnation = id, uint64(i+1)
		n.engines[id] = newEngine(t, c, tb, ids, t0)
	}
	for _, a := range ids {
		for _, b := range ids {
			if a != b {
				n.engines[a].PeerUp(b)
				self := n.engines[a].Self()
				n.queue = append(n.queue, frame{a, b, &wire.Hello{ClusterID: "quotamesh", Node: self.Node, Incarnation: self.Incarnation, Addr: "x"}})
			}
		}
	}
	return n
}

// tickWith runs one tick of e at now and hands its frames to send, as the
// node does: Tick, send outside the engine, Advance.
func tickWith(e *Engine, now int64, send func(node string, s *wire.Sync) error) TickStats {
	rd := e.Tick(now)
	rd.Send(send)
	return e.Advance(rd)
}

func (n *net) now(id string, at int64) int64 {
	return at + n.offset[id] + int64(n.engines[id].Correction())
}

// tick runs one tick of every engine at true time at and delivers every
// frame.
func (n *net) tick(at int64) {
	ids := make([]string, 0, len(n.engines))
	for id := range n.engines {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	for _, id := range ids {
		tickWith(n.engines[id], n.now(id, at), func(to string, s *wire.Sync) error {
			c := *s
			c.Delta.Entries = slices.Clone(s.Delta.Entries)
			c.Delta.Origins = slices.Clone(s.Delta.Origins)
			c.Delta.Quotas = slices.Clone(s.Delta.Quotas)
			if n.cut[[2]string{id, to}] {
				return nil // lost in a partition
			}
			n.queue = append(n.queue, frame{id, to, &c})
			return nil
		})
	}
	n.deliver(at)
}

func (n *net) deliver(at int64) {
	for len(n.queue) > 0 {
		f := n.queue[0]
		n.queue = n.queue[1:]
		e := n.engines[f.to]
		var err error
		switch m := f.msg.(type) {
		case *wire.Hello:
			err = e.Hello(n.now(f.to, at), f.from, m)
		case *wire.Sync:
			err = e.Receive(n.now(f.to, at), f.from, m)
		}
		if err != nil {
			n.t.Fatalf("delivering %T from %s to %s: %v", f.msg, f.from, f.to, err)
		}
	}
}

func TestConfigValidateNamesTheField(t *testing.T) {
	tests := []struct {
		cfg      Config
		mentions string
	}{
		{Config{}, "node"},
		{Config{Node: "a b"}, "node"},
		{Config{Node: "a", ClusterID: "x y"}, "cluster ID"},
		{Config{Node: "a", Registry: window.Config{OnCreate: func(string, limits.Rule, *window.Window) {}}}, "OnCreate"},
		{Config{Node: "a", Store: crdt.Config{Horizon: func(string) int { return 1 }}}, "Horizon"},
		{Config{Node: "a", SyncInterval: time.Microsecond}, "sync interval"},
		{Config{Node: "a", DeadAfter: time.Millisecond}, "dead after"},
		{Config{Node: "a", FenceAfter: 2 * time.Second, ReclaimAfter: 2500 * time.Millisecond}, "reclaim after"},
		{Config{Node: "a", DemandSlots: 11}, "demand slots"},
		{Config{Node: "a", MaxLeaseFraction: 2}, "max lease fraction"},
		{Config{Node: "a", QuotaValidity: 100 * time.Millisecond}, "quota validity"},
		{Config{Node: "a", AlignDeadband: 2 * time.Second}, "align deadband"},
		{Config{Node: "a", Policy: share.Policy(9)}, "policy"},
	}
	for i, tt := range tests {
		err := tt.cfg.Validate()
		if !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), tt.mentions) {
			t.Errorf("step %d: Validate(%+v) = %v, want ErrInvalidConfig mentioning %q", i, tt.cfg, err, tt.mentions)
		}
	}
	if err := (Config{Node: "a"}).Validate(); err != nil {
		t.Errorf("Validate of a minimal config = %v", err)
	}
}

// TestLoneNode: a single member is never fenced and admits its limit.
func TestLoneNode(t *testing.T) {
	e := newEngine(t, Config{Node: "a"}, table(t, "k", "10/s"), []string{"a"}, t0)
	admitted := 0
	for i := range 30 {
		now := t0 + int64(i)*ms
		if i%20 == 0 {
			tickWith(e, now, func(string, *wire.Sync) error { t.Fatal("a lone node sent a frame"); return nil })
		}
		if d, err := e.AllowN(now, "k", 1); err != nil {
			t.Fatal(err)
		} else if d.Allowed {
			admitted++
		}
	}
	if admitted != 10 || e.Fenced() {
		t.Errorf("admitted %d, fenced %v; want 10, false", admitted, e.Fenced())
	}
	if c := e.Counters(); c.Admitted != 10 || c.Offered != 20 {
		t.Errorf("counters %+v: want 10 admitted of 20 offered after the last tick", c)
	}
}

// TestFencedUntilAQuorumIsHeard: a starting node of three admits nothing
// until it has heard one peer (with itself, half the members).
func TestFencedUntilAQuorumIsHeard(t *testing.T) {
	tb := table(t, "k", "1000/s")
	n := newNet(t, tb, Config{}, "a", "b", "c")
	a := n.engines["a"]
	tickWith(a, t0, func(string, *wire.Sync) error { return nil })
	if !a.Fenced() {
		t.Fatal("a node that has heard no peer is not fenced")
	}
	if d, _ := a.AllowN(t0, "k", 1); d.Allowed {
		t.Error("a fenced node admitted a request")
	}
	n.deliver(t0) // hellos
	for i := int64(1); i <= 3; i++ {
		n.tick(t0 + i*20*ms)
	}
	if a.Fenced() {
		t.Fatal("a node that hears its peers is still fenced")
	}
	if d, _ := a.AllowN(t0+61*ms, "k", 1); !d.Allowed {
		t.Errorf("AllowN after the quorum was heard = %+v, want allowed", d)
	}
}

// TestThreeNodesShareTheLimit: three nodes with the same demand, ticking and
// syncing, admit the limit between them.
func TestThreeNodesShareTheLimit(t *testing.T) {
	n := newNet(t, table(t, "k", "300/s"), Config{}, "a", "b", "c")
	n.deliver(t0)
	admitted := 0
	for step := int64(0); step < 200; step++ { // 4 s in 20 ms ticks
		at := t0 + step*20*ms
		n.tick(at)
		for _, id := range []string{"a", "b", "c"} {
			for r := int64(0); r < 8; r++ { // 400/s each, 1200/s in all
				if d, _ := n.engines[id].AllowN(n.now(id, at+r*2*ms), "k", 1); d.Allowed && step >= 50 {
					admitted++
				}
			}
		}
	}
	// Steps 50..199: 3 s at 300/s.
	if admitted < 880 || admitted > 920 {
		t.Errorf("admitted %d in the last 3 s, want 900±20", admitted)
	}
	st := n.engines["a"].Status(t0+4*int64(time.Second), 5)
	if len(st.Members) != 3 || len(st.TopKeys) != 1 || len(st.TopKeys[0].PerNode) != 3 {
		t.Errorf("status %+v: want 3 members and one key seen from 3 nodes", st)
	}
}

// TestReceiveRejects: frames that break a rule are refused with a reason and
// change nothing.
func TestReceiveRejects(t *testing.T) {
	tb := table(t, "k", "100/s")
	a := newEngine(t, Config{Node: "a"}, tb, []string{"a", "b"}, t0)
	b := crdt.OriginID{Node: "b", Incarnation: 9}
	good := func(seq uint64) *wire.Sync {
		return &wire.Sync{Seq: seq, Delta: crdt.Delta{From: b, Seq: 5, Basis: 4, Parts: 1,
			Origins: []crdt.OriginState{{ID: b, AsOf: t0}},
			Entries: []crdt.Entry{{Key: "k", Epoch: t0 / int64(limits.Slot), Admitted: 3, Offered: 4}}}}
	}
	a.PeerUp("b")
	tests := []struct {
		name   string
		from   string
		msg    *wire.Sync
		want   error
		reason string
	}{
		{"not a member", "z", good(1), ErrNotMember, "member"},
		{"another sender", "b", func() *wire.Sync {
			s := good(1)
			s.Delta.From = crdt.OriginID{Node: "c", Incarnation: 1}
			s.Delta.Origins[0].ID = s.Delta.From
			return s
		}(), ErrWrongSender, "sender"},
		{"invalid delta", "b", func() *wire.Sync { s := good(1); s.Delta.Parts = 0; return s }(), crdt.ErrInvalidDelta, "invalid"},
	}
	for i, tt := range tests {
		err := a.Receive(t0, tt.from, tt.msg)
		if !errors.Is(err, tt.want) {
			t.Errorf("step %d (%s): Receive = %v, want %v", i, tt.name, err, tt.want)
		}
		if got := a.Counters().FramesRejected[tt.reason]; got != 1 {
			t.Errorf("step %d (%s): rejected[%q] = %d, want 1", i, tt.name, tt.reason, got)
		}
	}
	if st := a.Status(t0, 5); len(st.TopKeys) != 0 {
		t.Errorf("a rejected frame changed state: %+v", st.TopKeys)
	}
	if err := a.Receive(t0, "b", good(1)); err != nil {
		t.Fatalf("a good frame: %v", err)
	}
	if err := a.Receive(t0, "b", good(1)); !errors.Is(err, ErrReplay) {
		t.Errorf("the same frame again = %v, want ErrReplay", err)
	}
	if err := a.Hello(t0, "b", &wire.Hello{ClusterID: "other", Node: "b", Incarnation: 9, Addr: "x"}); !errors.Is(err, ErrWrongCluster) {
		t.Errorf("hello of another cluster = %v, want ErrWrongCluster", err)
	}
	if err := a.Hello(t0, "b", &wire.Hello{ClusterID: "quotamesh", Node: "c", Incarnation: 9, Addr: "x"}); !errors.Is(err, ErrWrongSender) {
		t.Errorf("hello naming another node = %v, want ErrWrongSender", err)
	}
}

func TestLease(t *testing.T) {
	tb := table(t, "k", "1000/s")
	e := newEngine(t, Config{Node: "a"}, tb, []string{"a"}, t0)
	rep, err := e.Request(t0, Request{Key: "k", Client: 1, Want: 500, Offered: 10})
	if err != nil || rep.Granted != 100 || rep.LeaseID == 0 || rep.Limit.Count != 1000 || rep.TTL != DefaultLeaseTTL {
		t.Fatalf("Request(want 500) = %+v, %v; want lease of 100 (capped at 10%% of the limit)", rep, err)
	}
	first := rep.LeaseID
	// A reserved lease is held, not counted: nothing in the window's slots.
	w, _, _ := e.Registry().Lookup("k")
	if adm, _ := w.Counts(t0); adm != 0 || w.Total() != 100 || w.Reserved() != 100 {
		t.Fatalf("after a lease of 100: slots %d, total %d, reserved %d; want 0, 100, 100", adm, w.Total(), w.Reserved())
	}
	for range 9 {
		if rep, _ = e.Request(t0, Request{Key: "k", Client: 1, Want: 100}); rep.Granted != 100 {
			t.Fatalf("Request = %+v, want 100", rep)
		}
	}
	if rep, _ = e.Request(t0, Request{Key: "k", Client: 1, N: 1, Want: 100}); rep.Allowed || rep.Granted != 0 || rep.RetryAfter <= 0 {
		t.Errorf("Request with the window held = %+v, want denied, nothing granted and a retry-after", rep)
	}
	// Another client cannot settle the first lease.
	if rep, _ = e.Request(t0+ms, Request{Key: "k", Client: 2, SettleID: first, SettleUsed: 0, Want: 30}); rep.Granted != 0 {
		t.Errorf("a settlement by another client freed room: %+v", rep)
	}
	// Its own client settles it: 60 used, 40 freed; the lease rides on it.
	if rep, _ = e.Request(t0+ms, Request{Key: "k", Client: 1, SettleID: first, SettleUsed: 60, Want: 30}); rep.Granted != 30 {
		t.Errorf("Request after settling 60 of 100 = %+v, want 30 granted", rep)
	}
	if adm, _ := w.Counts(t0 + ms); adm != 60 {
		t.Errorf("counted %d after the settlement, want the 60 used", adm)
	}
	// Settling twice changes nothing.
	e.Request(t0+2*ms, Request{Key: "k", Client: 1, SettleID: first, SettleUsed: 0})
	if c := e.Counters(); c.LeaseGranted != 1030 || c.LeaseReturned != 40 {
		t.Errorf("lease counters granted %d returned %d, want 1030, 40", c.LeaseGranted, c.LeaseReturned)
	}
	if rep, _ = e.Request(t0, Request{Key: "nomatch", Want: 5}); !rep.Unlimited || rep.Granted != 5 {
		t.Errorf("Request of an unknown key = %+v, want unlimited with 5 granted", rep)
	}
	if _, err := e.Request(t0, Request{Key: "k", Want: -1}); !errors.Is(err, ErrInvalidRequest) {
		t.Errorf("Request(want -1) = %v, want ErrInvalidRequest", err)
	}
	if _, err := e.Request(t0, Request{Key: "bad key", Want: 1}); !errors.Is(err, limits.ErrInvalidKey) {
		t.Errorf("Request(bad key) = %v, want limits.ErrInvalidKey", err)
	}
	if _, err := e.Request(t0, Request{Key: "k", N: 1001}); !errors.Is(err, quotamesh.ErrExceedsLimit) {
		t.Errorf("Request(n above the limit) = %v, want quotamesh.ErrExceedsLimit", err)
	}
}

// TestLeaseExpiresAsUsed: a lease nobody settles counts as fully used when
// its time (TTL plus the grace for a settlement on its way) is up, in the
// slot of that tick, and its room is not freed early.
func TestLeaseExpiresAsUsed(t *testing.T) {
	e := newEngine(t, Config{Node: "a"}, table(t, "k", "1000/min"), []string{"a"}, t0)
	none := func(string, *wire.Sync) error { return nil }
	rep, _ := e.Request(t0, Request{Key: "k", Client: 1, Want: 50})
	w, _, _ := e.Registry().Lookup("k")
	tickWith(e, t0+int64(DefaultLeaseTTL), none)
	if e.Outstanding() != 1 || w.Reserved() != 50 {
		t.Fatalf("at its TTL: %d outstanding, %d reserved; want the lease still held for its grace", e.Outstanding(), w.Reserved())
	}
	end := t0 + int64(DefaultLeaseTTL) + int64(e.leaseGrace()) + ms
	tickWith(e, end, none)
	if adm, _ := w.Counts(end); e.Outstanding() != 0 || w.Reserved() != 0 || adm != 50 {
		t.Fatalf("after expiry: %d outstanding, %d reserved, %d counted; want 0, 0, 50", e.Outstanding(), w.Reserved(), adm)
	}
	// A late settlement is ignored.
	e.Request(end+ms, Request{Key: "k", Client: 1, SettleID: rep.LeaseID, SettleUsed: 1})
	if adm, _ := w.Counts(end + ms); adm != 50 || w.Total() != 50 {
		t.Errorf("a late settlement changed the counts: %d counted, total %d", adm, w.Total())
	}
}

// TestQuotaExpiresWithoutTicks: a node whose ticks stop (paused, stalled)
// stops admitting once its quota's validity has passed.
func TestQuotaExpiresWithoutTicks(t *testing.T) {
	e := newEngine(t, Config{Node: "a"}, table(t, "k", "1000000/s"), []string{"a"}, t0)
	tickWith(e, t0, func(string, *wire.Sync) error { return nil })
	if d, _ := e.AllowN(t0+500*ms, "k", 1); !d.Allowed {
		t.Fatal("AllowN within the validity was denied")
	}
	if d, _ := e.AllowN(t0+2000*ms, "k", 1); d.Allowed {
		t.Error("AllowN two seconds after the last tick was allowed; the quota should have expired")
	}
	tickWith(e, t0+2001*ms, func(string, *wire.Sync) error { return nil })
	if d, _ := e.AllowN(t0+2002*ms, "k", 1); !d.Allowed {
		t.Error("AllowN after a new tick was denied")
	}
}

// TestClockAlignment: a node whose clock is 400 ms ahead of two others moves
// its node time to theirs; the others stay put.
func TestClockAlignment(t *testing.T) {
	n := newNet(t, table(t, "k", "100/s"), Config{}, "a", "b", "c")
	n.offset["a"] = 400 * ms
	n.deliver(t0)
	for step := int64(1); step <= 100; step++ {
		n.tick(t0 + step*20*ms)
	}
	if got := n.engines["a"].Correction(); got > -390*time.Millisecond || got < -410*time.Millisecond {
		t.Errorf("a's correction = %v, want about -400ms", got)
	}
	for _, id := range []string{"b", "c"} {
		if got := n.engines[id].Correction(); got != 0 {
			t.Errorf("%s's correction = %v, want 0", id, got)
		}
	}
}

func TestSetTableAndMembers(t *testing.T) {
	e := newEngine(t, Config{Node: "a"}, table(t, "k", "10/s"), []string{"a"}, t0)
	e.AllowN(t0, "k", 1)
	e.SetTable(table(t, "k", "20/s"))
	if w, r, ok := e.Registry().Lookup("k"); !ok || r.Rate.Count != 20 || w.Rate().Count != 20 {
		t.Errorf("after SetTable the window's rate is %v", r)
	}
	e.SetMembers([]string{"a", "b"}, t0)
	if got := e.Members(); !slices.Equal(got, []string{"a", "b"}) {
		t.Errorf("Members() = %v", got)
	}
	tickWith(e, t0+ms, func(string, *wire.Sync) error { return nil })
	if e.Fenced() {
		t.Error("one of two members, alone, fenced itself; it is not a strict minority")
	}
}

// TestNewKeySplitGivesTheHomeItsLimit: a brand-new key whose limit is below
// the number of nodes is not left with nothing at the node SDKs send it to
// (its home): the first grace's split gives the home what the others' even
// parts leave. And the split ends with the grace even when nothing is
// written after it.
func TestNewKeySplitGivesTheHomeItsLimit(t *testing.T) {
	tb := table(t, "user:*", "1/s")
	n := newNet(t, tb, Config{}, "a", "b", "c")
	at := t0
	for range 30 { // every node hears the others
		at += 20 * ms
		n.tick(at)
	}
	const key = "user:42"
	home, _ := route.New("a", "b", "c").Home(key)
	for _, id := range []string{"a", "b", "c"} {
		d, err := n.engines[id].AllowN(n.now(id, at), key, 1)
		if err != nil {
			t.Fatal(err)
		}
		if want := id == home; d.Allowed != want {
			t.Errorf("node %s (home %s): first request on a new 1/s key allowed %v, want %v", id, home, d.Allowed, want)
		}
	}
	// A 10/s key on the home alone: capped at first, its whole limit once
	// the grace has passed, though nothing more is written.
	tb10 := table(t, "user:*", "10/s")
	for _, e := range n.engines {
		e.SetTable(tb10)
	}
	key2 := "user:7"
	h2, _ := route.New("a", "b", "c").Home(key2)
	e := n.engines[h2]
	if _, err := e.AllowN(n.now(h2, at), key2, 1); err != nil {
		t.Fatal(err)
	}
	w, _, _ := e.Registry().Lookup(key2)
	if q := w.Quota(); q >= 10 {
		t.Fatalf("new key's quota in its grace = %d, want the home's part (< 10)", q)
	}
	for range 10 {
		at += 20 * ms
		n.tick(at)
	}
	if q := w.Quota(); q != 10 {
		t.Errorf("quota after the grace with no writes = %d, want the whole limit 10", q)
	}
}

// TestSharedStateOnlyForSharedKeys: a key this node decides alone keeps no
// shared state (no remembered shares); once another member's
// view of it arrives it gets one, and keeps it.
func TestSharedStateOnlyForSharedKeys(t *testing.T) {
	n := newNet(t, table(t, "user:*", "100/s"), Config{}, "a", "b", "c")
	n.deliver(t0)
	a := n.engines["a"]
	for step := range int64(10) {
		at := t0 + step*20*ms
		n.tick(at)
		a.AllowN(n.now("a", at), "user:alone", 1)
	}
	n.tick(t0 + 10*20*ms)
	ks := a.keys["user:alone"]
	if ks == nil || ks.sh != nil || ks.shared {
		t.Fatalf("key used by a alone: state %+v, want one without shared state", ks)
	}
	st := a.Status(n.now("a", t0+10*20*ms), 5)
	if len(st.TopKeys) != 1 || st.TopKeys[0].Share != 1 || st.TopKeys[0].Others != 0 {
		t.Errorf("status of a key decided alone = %+v, want share 1 and nothing held by others", st.TopKeys)
	}
	for step := int64(11); step < 20; step++ {
		at := t0 + step*20*ms
		n.tick(at)
		n.engines["b"].AllowN(n.now("b", at), "user:alone", 1)
	}
	n.tick(t0 + 20*20*ms)
	if ks.sh == nil || !ks.shared {
		t.Fatalf("key used by a and b: shared %v, state %+v; want shared state", ks.shared, ks.sh)
	}
	if _, ok := ks.sh.share.Frozen("b"); !ok {
		t.Error("b's share is not remembered")
	}
}

// TestDecisionCountersFollowTicks: whatever the pattern of requests and
// ticks (several per slot, one per several slots, pauses of seconds), the
// decision counters add up to the decisions made, counted once each. (A
// tick mirrors the slots still in the window: the node ticks every 20 ms,
// here at most 200 ms apart, and before every pause.)
func TestDecisionCountersFollowTicks(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	e := newEngine(t, Config{Node: "a"}, table(t, "k*", "50/s"), []string{"a"}, t0)
	var admitted, offered int64
	now, ticked := t0, t0
	tick := func(step int) {
		tickWith(e, now, func(string, *wire.Sync) error { return nil })
		ticked = now
		if c := e.Counters(); c.Admitted != admitted || c.Offered != offered {
			t.Fatalf("step %d: counters %d admitted of %d, want %d of %d", step, c.Admitted, c.Offered, admitted, offered)
		}
	}
	for step := range 5000 {
		now += int64(rng.IntN(60)) * ms
		if rng.IntN(50) == 0 {
			tick(step)
			now += int64(rng.IntN(3000)) * ms
		}
		if rng.IntN(4) == 0 || now-ticked > 200*ms {
			tick(step)
		}
		key := []string{"k1", "k2", "k3"}[rng.IntN(3)]
		n := int64(1 + rng.IntN(3))
		d, err := e.AllowN(now, key, n)
		if err != nil {
			t.Fatal(err)
		}
		if d.Allowed {
			admitted += n
		}
		offered += n // admitted or not, and also while the engine is stale
	}
}

package engine

import (
	"cmp"
	crand "crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quotamesh/quotamesh/crdt"
	"github.com/quotamesh/quotamesh/internal/share"
	"github.com/quotamesh/quotamesh/internal/wire"
	"github.com/quotamesh/quotamesh/limits"
	"github.com/quotamesh/quotamesh/window"
)

// Engine is one node's admission core. Create it with New.
type Engine struct {
	cfg  Config
	self crdt.OriginID
	reg  *window.Registry

	lastNow atomic.Int64 // newest time passed to any method, for OnCreate

	mu        sync.Mutex // guards everything below
	store     *crdt.Store
	started   int64
	members   map[string]*member // current members other than this node
	memberIDs []string           // their IDs, sorted: every walk is in this order, so runs are reproducible
	nMembers  int                // members, this node included
	peers     map[string]*peer   // sync stream state, by node ID
	keys      map[string]*keyState
	keyList   []*keyState // the same keys in creation order, for reproducible walks
	dirty     []*keyState // keys whose quota the next tick recomputes, each once
	stamp     uint64      // for computeQuotaLocked
	rng       *rand.Rand
	ticks     uint64
	// unadvanced is the tick whose Ready awaits Advance; 0 when none.
	unadvanced uint64
	// lastQuorum is the last local time this node was not in a strict
	// minority (it heard at least half the members, itself included); it
	// starts far in the past, so a starting node is fenced until it has
	// heard enough members.
	lastQuorum   int64
	fenced       bool
	origins      []share.Origin // scratch for computeQuota
	alignScratch []int64
	alignHold    int64 // no realignment before this local time
	slots        []crdt.SlotCounts
	relayScratch []crdt.OriginID
	counters     Counters

	leaseGranted, leaseReturned atomic.Int64 // counted outside mu
	correction                  atomic.Int64 // ns the caller adds to its clock (clock alignment)
}

// member is what the engine tracks of another member.
type member struct {
	id          string
	offsets     offsetFilter // samples of (its asOf − our now) on direct frames
	echo        int64        // its estimate of our offset as last sent (wire.Sync.Offset), 0 if none
	seen        uint64       // stamp of the last computeQuotaLocked that saw its origin
	incarnation uint64       // newest known; 0 before any contact
	heard       int64        // local time of the last contact; engine start if never
	direct      int64        // local time of the last frame from it (not relayed); engine start if never
	misses      []string     // the members it said it misses in its last frame (wire.Sync.Misses)
	reachable   bool
	reclaimed   bool
}

// peer is the state of the sync stream with one node.
type peer struct {
	outSeq uint64 // last frame sequence sent on the current stream
	inSeq  uint64 // last frame sequence accepted on the current stream
}

// keyState is what the engine keeps for a key that has a local window.
type keyState struct {
	key         string
	dirty       bool // on Engine.dirty
	gone        bool // removed from Engine.keys; dropped from keyList at the next housekeeping
	rule        limits.Rule
	w           *window.Window
	share       share.State
	last        share.Output
	mirrorFrom  int64     // first epoch the next mirror must read
	announced   int64     // quota last recorded in the store
	announcedAt int64     // and the epoch it was recorded for
	created     int64     // node time this node's window of the key was made
	seen        [2]seenAt // newest mirrored slots, for decision counters
}

type seenAt struct {
	epoch    int64
	adm, off int64
}

// Counters are cumulative figures the node turns into metrics.
type Counters struct {
	// Admitted and Offered count the tokens this node's windows admitted and
	// were offered, as mirrored at ticks.
	Admitted, Offered int64
	// FramesRejected counts peer frames refused, by reason.
	FramesRejected map[string]int64
	// Merged counts deltas merged.
	Merged int64
	// LeaseGranted and LeaseReturned count lease tokens.
	LeaseGranted, LeaseReturned int64
	// Realigned counts clock corrections.
	Realigned int64
}

// New returns an engine for cfg over table, with members (node IDs, this
// node's own included or not) as the cluster's membership, at local time
// now.
func New(cfg Config, table *limits.Table, members []string, now int64) (*Engine, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	if cfg.Incarnation == 0 {
		var b [8]byte
		for cfg.Incarnation == 0 {
			if _, err := crand.Read(b[:]); err != nil {
				return nil, fmt.Errorf("quotamesh/engine: drawing an incarnation: %w", err)
			}
			cfg.Incarnation = binary.LittleEndian.Uint64(b[:])
		}
	}
	if cfg.Seed == 0 {
		cfg.Seed = cfg.Incarnation
	}
	e := &Engine{
		cfg:        cfg,
		self:       crdt.OriginID{Node: cfg.Node, Incarnation: cfg.Incarnation},
		started:    now,
		members:    make(map[string]*member),
		peers:      make(map[string]*peer),
		keys:       make(map[string]*keyState),
		rng:        rand.New(rand.NewPCG(cfg.Seed, cfg.Seed^0x9e3779b97f4a7c15)),
		lastQuorum: now - int64(100*365*24*time.Hour),
	}
	e.counters.FramesRejected = make(map[string]int64)
	e.lastNow.Store(now)
	storeCfg := cfg.Store
	storeCfg.Horizon = e.horizon
	store, err := crdt.NewStore(e.self, storeCfg)
	if err != nil {
		return nil, fmt.Errorf("%w: store: %w", ErrInvalidConfig, err)
	}
	e.store = store
	regCfg := cfg.Registry
	regCfg.OnCreate = e.onCreate
	reg, err := window.NewRegistry(regCfg, table)
	if err != nil {
		return nil, fmt.Errorf("%w: registry: %w", ErrInvalidConfig, err)
	}
	e.reg = reg
	e.mu.Lock()
	e.setMembersLocked(members, now)
	e.evaluateMembersLocked(now)
	e.mu.Unlock()
	return e, nil
}

// Self returns this process's origin: node ID and incarnation.
func (e *Engine) Self() crdt.OriginID { return e.self }

// Config returns the engine's configuration with defaults filled in.
func (e *Engine) Config() Config { return e.cfg }

// Registry returns the key registry (for read-only inspection).
func (e *Engine) Registry() *window.Registry { return e.reg }

func (e *Engine) seeTime(now int64) {
	for {
		last := e.lastNow.Load()
		if now <= last || e.lastNow.CompareAndSwap(last, now) {
			return
		}
	}
}

// horizon tells the store how many slots to keep for key: its window, the
// demand period and a margin. Keys without a rule keep the longest window.
func (e *Engine) horizon(key string) int {
	slots := limits.MaxSlots
	if r, ok := e.reg.Table().Lookup(key); ok {
		slots = r.Rate.Slots()
	}
	return max(slots, e.cfg.DemandSlots) + HorizonMargin
}

// AllowN decides n requests for key at node time now. For a key that has a
// window it is lock-free and allocation-free; a new key takes the slow path
// (see the package comment). Errors are the registry's.
func (e *Engine) AllowN(now int64, key string, n int64) (window.Decision, error) {
	return e.reg.AllowN(now, key, n)
}

// Admit decides one request for key at node time now and returns only the
// verdict: the fastest call (see window.Registry.Admit).
func (e *Engine) Admit(now int64, key string) bool {
	return e.reg.Admit(now, key)
}

// onCreate runs under the registry's creation lock for every new window: it
// gives the window its first quota from what the store knows.
func (e *Engine) onCreate(key string, rule limits.Rule, w *window.Window) {
	now := max(e.lastNow.Load(), w.OpenEpoch()*int64(limits.Slot))
	e.mu.Lock()
	defer e.mu.Unlock()
	ks := e.keys[key]
	if ks == nil {
		ks = e.addKeyLocked(key)
	}
	ks.rule, ks.w = rule, w
	ks.mirrorFrom = w.OpenEpoch()
	ks.created = now
	e.computeQuotaLocked(now, ks)
}

// SetTable makes t the limit table: windows follow at once (count changes in
// place, window changes replace the window), and every key's quota is
// recomputed at the next tick.
func (e *Engine) SetTable(t *limits.Table) {
	e.reg.SetTable(t) // takes the registry's creation lock: not under e.mu
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, ks := range e.keyList {
		if ks.gone {
			continue
		}
		w, rule, ok := e.reg.Lookup(ks.key)
		if !ok {
			e.removeKeyLocked(ks)
			continue
		}
		ks.w, ks.rule = w, rule
		e.markDirtyLocked(ks)
	}
}

// Table returns the limit table in force.
func (e *Engine) Table() *limits.Table { return e.reg.Table() }

// SetMembers replaces the membership (node IDs; this node's own may be
// included or not). Members that left are forgotten; new members count as
// unheard since now.
func (e *Engine) SetMembers(ids []string, now int64) {
	e.seeTime(now)
	e.mu.Lock()
	defer e.mu.Unlock()
	e.setMembersLocked(ids, now)
	e.evaluateMembersLocked(now)
	e.markAllDirtyLocked()
}

func (e *Engine) setMembersLocked(ids []string, now int64) {
	next := make(map[string]*member, len(ids))
	for _, id := range ids {
		if id == e.cfg.Node {
			continue
		}
		if m, ok := e.members[id]; ok {
			next[id] = m
			continue
		}
		next[id] = &member{id: id, heard: now, direct: now}
	}
	for id := range e.members {
		if _, ok := next[id]; !ok {
			for _, ks := range e.keys {
				ks.share.Forget(id)
			}
		}
	}
	e.members = next
	e.nMembers = len(next) + 1
	e.memberIDs = e.memberIDs[:0]
	for id := range next {
		e.memberIDs = append(e.memberIDs, id)
	}
	slices.Sort(e.memberIDs)
}

// Members returns the node IDs of the membership, this node included, sorted.
func (e *Engine) Members() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := []string{e.cfg.Node}
	for id := range e.members {
		out = append(out, id)
	}
	slices.Sort(out)
	return out
}

// PeerUp tells the engine a new sync stream with node is up: both sides
// start over (full state, sequence numbers from 1).
func (e *Engine) PeerUp(node string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.peers[node] = &peer{}
	e.store.ResetPeer(node)
}

// PeerDown tells the engine the sync stream with node is gone.
func (e *Engine) PeerDown(node string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	delete(e.peers, node)
}

// Hello handles the first frame of a peer's sync stream, at local time now.
// A new incarnation of the peer restarts the protocol with it.
func (e *Engine) Hello(now int64, from string, h *wire.Hello) error {
	e.seeTime(now)
	e.mu.Lock()
	defer e.mu.Unlock()
	switch {
	case h.ClusterID != e.cfg.ClusterID:
		e.counters.FramesRejected["cluster"]++
		return fmt.Errorf("%w: %q says cluster %q, this is %q", ErrWrongCluster, from, h.ClusterID, e.cfg.ClusterID)
	case h.Node != from:
		e.counters.FramesRejected["sender"]++
		return fmt.Errorf("%w: hello on %q's stream says node %q", ErrWrongSender, from, h.Node)
	}
	m, ok := e.members[from]
	if !ok {
		e.counters.FramesRejected["member"]++
		return fmt.Errorf("%w: %q", ErrNotMember, from)
	}
	if m.incarnation != h.Incarnation {
		m.incarnation = h.Incarnation
		e.store.ResetPeer(from)
	}
	if p := e.peers[from]; p != nil {
		p.inSeq = 0
	}
	// A hello does not make the member reachable: it carries no counts and
	// no quota. Until the member's first sync frame is merged, its view here
	// may have slid empty and its quota register expired (after a partition
	// or a pause), and a member taken for reachable would be counted as
	// holding nothing: the first version handed a rejoining node almost the
	// whole limit on its peers' hellos, and gave its peers its reservation
	// back before they knew its quota (design.md §7, rejoining).
	return nil
}

// Receive merges a sync frame from node at local time now. A frame from a
// non-member, a replay, or a delta that fails validation is rejected with a
// reason and changes nothing.
func (e *Engine) Receive(now int64, from string, s *wire.Sync) error {
	e.seeTime(now)
	e.mu.Lock()
	defer e.mu.Unlock()
	m, ok := e.members[from]
	if !ok {
		e.counters.FramesRejected["member"]++
		return fmt.Errorf("%w: %q", ErrNotMember, from)
	}
	if s.Delta.From.Node != from {
		e.counters.FramesRejected["sender"]++
		return fmt.Errorf("%w: frame on %q's stream carries a delta from %q", ErrWrongSender, from, s.Delta.From.Node)
	}
	p := e.peers[from]
	if p == nil {
		p = &peer{}
		e.peers[from] = p
	}
	if s.Seq <= p.inSeq {
		e.counters.FramesRejected["replay"]++
		return fmt.Errorf("%w: %q sent frame %d after %d", ErrReplay, from, s.Seq, p.inSeq)
	}
	if _, err := e.store.Merge(s.Delta, now); err != nil {
		e.counters.FramesRejected["invalid"]++
		return fmt.Errorf("quotamesh/engine: delta from %q: %w", from, err)
	}
	p.inSeq = s.Seq
	e.counters.Merged++
	e.store.Ack(from, s.Ack)
	if inc := s.Delta.From.Incarnation; inc != m.incarnation {
		// A delta from an incarnation we had no hello from: the peer
		// restarted and its stream is new; restart the protocol.
		m.incarnation = inc
		e.store.ResetPeer(from)
	}
	m.heard = max(m.heard, now)
	m.direct = max(m.direct, now)
	m.misses = append(m.misses[:0], s.Misses...)
	if st := s.Delta.Origins; len(st) > 0 {
		for i := range st {
			if st[i].ID == s.Delta.From {
				m.offsets.add(st[i].AsOf - now)
				break
			}
		}
	}
	m.echo = s.Offset
	for i := range s.Delta.Entries {
		key := s.Delta.Entries[i].Key
		if ks, ok := e.keys[key]; ok {
			e.markDirtyLocked(ks)
		}
	}
	return nil
}

// Ready is what one tick asks the caller to send: for every peer with a
// sync stream, in member ID order, the frames of this tick. Tick returns it
// and does no I/O; the caller encodes and sends the frames outside the
// engine's lock, records in each Outbox how many went out, and hands the
// Ready back to Advance before the next Tick (see the package comment,
// "Ready and Advance").
type Ready struct {
	Peers []Outbox
	// Stats says what the tick did; Advance completes it with the frames
	// that went out.
	Stats TickStats

	tick uint64 // the Tick that made it, checked by Advance
}

// Outbox is one peer's frames of a tick.
type Outbox struct {
	Node string
	// Frames are to be sent in order, each with its Seq assigned: the parts
	// of the peer's delta, then the Relays last ones, which relay members
	// the peer misses (design.md §7, bridges). Neither the engine nor the
	// store modifies them once returned: they may be encoded outside the
	// engine's lock and kept after Advance.
	Frames []*wire.Sync
	Relays int
	// Sent is for the caller to set: how many of Frames, from the first,
	// were handed to the transport before the first failure (a busy or
	// closed stream). The rest count as not sent: nothing is lost, the
	// next tick covers it.
	Sent int

	stream *peer // the stream the Seqs were numbered on
	relay  bool  // the store was asked for a relay (RelaySent is due if every frame went out)
}

// Send hands each peer's frames to send, in order, stopping at a peer's
// first error, and records in Sent how many went out. It does not touch
// the engine: call it outside any engine method, then Advance.
func (rd *Ready) Send(send func(node string, s *wire.Sync) error) {
	for i := range rd.Peers {
		ob := &rd.Peers[i]
		ob.Sent = 0
		for _, f := range ob.Frames {
			if send(ob.Node, f) != nil {
				break
			}
			ob.Sent++
		}
	}
}

// Tick runs one sync interval at local time now (see the package comment)
// and returns every peer's frames. It sends nothing: the caller sends the
// frames and reports with Advance what went out, before the next Tick.
func (e *Engine) Tick(now int64) Ready {
	e.seeTime(now)
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.unadvanced != 0 {
		panic("quotamesh/engine: Tick before Advance of the previous tick's Ready")
	}
	e.ticks++
	rd := Ready{tick: e.ticks}
	e.reg.Drain(func(key string) {
		w, rule, ok := e.reg.Lookup(key)
		if !ok {
			return
		}
		ks := e.keys[key]
		if ks == nil || ks.w != w {
			if ks == nil {
				ks = e.addKeyLocked(key)
				ks.mirrorFrom = w.OpenEpoch()
			}
			ks.w, ks.rule = w, rule
		}
		e.mirrorLocked(now, ks)
		e.markDirtyLocked(ks)
		rd.Stats.Mirrored++
	})
	if e.evaluateMembersLocked(now) {
		e.markAllDirtyLocked()
	}
	e.alignLocked(now)
	if e.ticks%uint64(e.cfg.RefreshEvery) == 0 {
		e.markAllDirtyLocked()
	}
	for _, ks := range e.dirty {
		ks.dirty = false
		if !ks.gone {
			e.computeQuotaLocked(now, ks)
			rd.Stats.Recomputed++
		}
	}
	clear(e.dirty)
	e.dirty = e.dirty[:0]
	// Close the interval after the quotas are announced, so they leave with
	// this tick's deltas.
	e.store.SetOwnAsOf(now)
	e.store.Tick()

	misses := e.missesLocked(now)
	for _, id := range e.memberIDs {
		p := e.peers[id]
		if p == nil {
			continue // no stream: the transport will tell us when there is
		}
		ob := Outbox{Node: id, stream: p}
		ack := e.store.AckFor(id)
		echo, _ := e.members[id].offsets.estimate()
		frame := func(d crdt.Delta) {
			seq := p.outSeq + uint64(len(ob.Frames)) + 1
			ob.Frames = append(ob.Frames, &wire.Sync{Seq: seq, Ack: ack, Offset: echo, Delta: d, Misses: misses})
		}
		for _, d := range e.store.DeltaFor(id, now) {
			frame(d)
		}
		// Relays go after the delta: a peer that did not get every part of
		// it does not get them either (Advance counts a prefix).
		if relay := e.relayOriginsLocked(id); len(relay) > 0 {
			ob.relay = true
			parts := e.store.RelayFor(id, now, relay)
			for _, d := range parts {
				frame(d)
			}
			ob.Relays = len(parts)
		}
		rd.Peers = append(rd.Peers, ob)
	}
	e.unadvanced = rd.tick
	return rd
}

// Advance records what the caller sent of rd, the Ready the last Tick
// returned: per peer, the first Sent frames went out. It must be called
// once for every Tick, before the next one. What it leaves is what the
// engine held when Tick itself called the transport: the stream's sequence
// number counts the frames sent, parts of a full state or split delta not
// sent are returned again first (crdt.Store.Sent), and a relay counts as
// delivered only if every part of the delta and of the relay went out
// (crdt.Store.RelaySent). A peer whose stream was replaced or dropped since
// the Tick (PeerUp, PeerDown) keeps its new stream's numbering. It returns
// the tick's stats with the frames that went out.
func (e *Engine) Advance(rd Ready) TickStats {
	e.mu.Lock()
	defer e.mu.Unlock()
	if rd.tick == 0 || rd.tick != e.unadvanced {
		panic("quotamesh/engine: Advance of a Ready that is not the last Tick's, or twice")
	}
	e.unadvanced = 0
	st := rd.Stats
	for i := range rd.Peers {
		ob := &rd.Peers[i]
		sent := min(max(ob.Sent, 0), len(ob.Frames))
		deltas := len(ob.Frames) - ob.Relays
		if e.peers[ob.Node] == ob.stream {
			ob.stream.outSeq += uint64(sent)
		}
		// The store's state for the peer is as Tick left it, or was reset
		// or acknowledged since; in the latter cases these are no-ops, as
		// they would have been had the reset come after them.
		e.store.Sent(ob.Node, min(sent, deltas))
		if ob.relay && sent == len(ob.Frames) {
			e.store.RelaySent(ob.Node)
		}
		st.Frames += sent
		st.Relayed += max(sent-deltas, 0)
	}
	return st
}

// missAfter is how long a member may send no frame of its own before this
// node says it misses it (wire.Sync.Misses) and its peers relay it: half of
// DeadAfter, so that relayed state arrives before the member would count
// as unreachable.
func (e *Engine) missAfter() int64 { return int64(e.cfg.DeadAfter) / 2 }

// missesLocked lists the members this node has had no frame from for
// missAfter, in ID order; nil when it hears them all.
func (e *Engine) missesLocked(now int64) []string {
	var out []string
	for _, id := range e.memberIDs {
		if now-e.members[id].direct > e.missAfter() {
			out = append(out, id)
		}
	}
	return out
}

// relayOriginsLocked returns the members peer id says it misses that this
// node still counts as reachable, whose state it relays to id after its
// delta (design.md §7, bridges); none if id misses nobody. Relaying only on
// request keeps a fully connected cluster's traffic as it was.
func (e *Engine) relayOriginsLocked(id string) []crdt.OriginID {
	m := e.members[id]
	if len(m.misses) == 0 {
		return nil
	}
	relay := e.relayScratch[:0]
	for _, x := range m.misses {
		if x == id || x == e.cfg.Node {
			continue
		}
		if o := e.members[x]; o != nil && o.reachable && o.incarnation != 0 {
			relay = append(relay, crdt.OriginID{Node: x, Incarnation: o.incarnation})
		}
	}
	e.relayScratch = relay[:0]
	return relay
}

// TickStats says what one tick did.
type TickStats struct {
	Mirrored   int // keys whose own slots were mirrored
	Recomputed int // quotas recomputed
	Frames     int // frames sent (as Advance was told), relays included
	Relayed    int // of which relays of members a peer misses
}

// mirrorLocked copies the slots of ks's window that may have changed since
// the last mirror into the store, and counts new decisions.
func (e *Engine) mirrorLocked(now int64, ks *keyState) {
	e.slots = e.slots[:0]
	ks.w.Slots(now, ks.mirrorFrom, func(epoch int64, admitted, offered uint32) {
		e.slots = append(e.slots, crdt.SlotCounts{Epoch: epoch, Admitted: admitted, Offered: offered})
	})
	if len(e.slots) > 0 {
		if err := e.store.RecordOwn(ks.key, e.slots); err == nil {
			e.countDecisionsLocked(ks)
		}
	}
	ks.mirrorFrom = max(ks.mirrorFrom, ks.w.OpenEpoch())
}

// countDecisionsLocked adds the growth of the mirrored slots since the last
// mirror to the decision counters. Only the last two slots can still grow.
func (e *Engine) countDecisionsLocked(ks *keyState) {
	var next [2]seenAt
	for _, s := range e.slots {
		adm, off := int64(s.Admitted), int64(s.Offered)
		for _, prev := range ks.seen {
			if prev.epoch == s.Epoch {
				adm -= prev.adm
				off -= prev.off
				break
			}
		}
		e.counters.Admitted += max(adm, 0)
		e.counters.Offered += max(off, 0)
		next[0], next[1] = next[1], seenAt{epoch: s.Epoch, adm: int64(s.Admitted), off: int64(s.Offered)}
	}
	ks.seen = next
}

func (e *Engine) markDirtyLocked(ks *keyState) {
	if !ks.dirty && !ks.gone && ks.w != nil {
		ks.dirty = true
		e.dirty = append(e.dirty, ks)
	}
}

func (e *Engine) markAllDirtyLocked() {
	for _, ks := range e.keyList {
		e.markDirtyLocked(ks)
	}
}

// addKeyLocked tracks a new key.
func (e *Engine) addKeyLocked(key string) *keyState {
	ks := &keyState{key: key}
	e.keys[key] = ks
	e.keyList = append(e.keyList, ks)
	return ks
}

// removeKeyLocked stops tracking a key.
func (e *Engine) removeKeyLocked(ks *keyState) {
	delete(e.keys, ks.key)
	ks.gone = true
}

// evaluateMembersLocked updates reachability, majority, fencing and
// reclaiming at now, and reports whether any of them changed.
func (e *Engine) evaluateMembersLocked(now int64) bool {
	current := e.currentOriginsLocked()
	changed := false
	reachable := 1 // this node
	for _, id := range e.memberIDs {
		m := e.members[id]
		if o, ok := current[id]; ok {
			m.heard = max(m.heard, o.HeardAt)
			if m.incarnation == 0 {
				m.incarnation = o.ID.Incarnation
			}
		}
		r := now-m.heard <= int64(e.cfg.DeadAfter) && m.incarnation != 0
		if r != m.reachable {
			m.reachable, changed = r, true
		}
		if r {
			reachable++
		}
	}
	// Only a strict majority may reclaim an unreachable member's share, so
	// only a strict minority must fence itself: in an even split (2 of 4)
	// neither side reclaims and both keep their frozen shares.
	majority := 2*reachable > e.nMembers
	if 2*reachable >= e.nMembers {
		e.lastQuorum = now
	}
	fenced := e.cfg.Policy == share.Conservative && now-e.lastQuorum > int64(e.cfg.FenceAfter)
	if fenced != e.fenced {
		e.fenced, changed = fenced, true
	}
	for _, m := range e.members {
		rc := e.cfg.Policy == share.Conservative && majority && !m.reachable && now-m.heard > int64(e.cfg.ReclaimAfter)
		if rc != m.reclaimed {
			m.reclaimed, changed = rc, true
		}
	}
	return changed
}

// currentOriginsLocked returns, for every member heard of, the store's
// newest incarnation of it (the one its hello announced, or the one last
// heard).
func (e *Engine) currentOriginsLocked() map[string]crdt.OriginInfo {
	out := make(map[string]crdt.OriginInfo, len(e.members))
	for _, o := range e.store.Origins() {
		m, ok := e.members[o.ID.Node]
		if !ok || o.Self {
			continue
		}
		if m.incarnation != 0 && o.ID.Incarnation != m.incarnation {
			continue
		}
		if prev, ok := out[o.ID.Node]; !ok || o.HeardAt > prev.HeardAt {
			out[o.ID.Node] = o
		}
	}
	return out
}

// computeQuotaLocked sets ks's window quota from the views (design.md §7).
func (e *Engine) computeQuotaLocked(now int64, ks *keyState) {
	if ks.w == nil {
		return
	}
	rate := ks.rule.Rate
	slots := rate.Slots()
	admitted, _ := ks.w.Counts(now)
	in := share.Input{
		Limit:    rate.Count,
		Admitted: admitted,
		Demand:   ks.w.Demand(now, e.cfg.DemandSlots),
		Members:  e.nMembers,
		Policy:   e.cfg.Policy,
		Fenced:   e.fenced,
		Prior:    e.cfg.Prior,
		Uniform:  e.rng.Float64(),
	}
	origins := e.origins[:0]
	e.stamp++
	e.store.Views(ks.key, slots, e.cfg.DemandSlots, now, func(info crdt.OriginInfo, v crdt.View) {
		o := share.Origin{Node: info.ID.Node, Admitted: v.Admitted, Demand: v.Demand, Quota: v.Quota}
		if m, ok := e.members[info.ID.Node]; ok && m.incarnation == info.ID.Incarnation {
			o.Member, o.Reachable, o.Reclaimed = true, m.reachable, m.reclaimed
			o.Fresh = m.reachable && v.Age <= e.cfg.Store.Grace
			m.seen = e.stamp
		}
		origins = append(origins, o)
	})
	reachable, unknown := int64(1), 0 // this node, and reachable members with no view of the key
	for _, id := range e.memberIDs {
		m := e.members[id]
		if m.reachable {
			reachable++
		}
		if m.seen != e.stamp {
			origins = append(origins, share.Origin{Node: id, Member: true, Reachable: m.reachable, Reclaimed: m.reclaimed})
			if m.reachable {
				unknown++
			}
		}
	}
	in.Origins = origins
	ks.last = share.Compute(e.cfg.Node, in, &ks.share)
	// A key this node has just begun to track, while reachable members have
	// not shown a view of it: a flood on a new key reaches every node at
	// once, and each would see itself as the only one asking and take all
	// the headroom (N× the limit in the key's first second). Until a view
	// could have arrived (one grace period), take at most an even split.
	if unknown > 0 && now-ks.created < int64(e.cfg.Store.Grace) {
		ks.last.Quota = min(ks.last.Quota, rate.Count/reachable)
	}
	if e.cfg.UnsafeIgnoreShare {
		ks.last.Quota = rate.Count // the broken node of the fault suite
	}
	valid := int64(e.cfg.QuotaValidity / limits.Slot)
	ks.w.SetQuotaUntil(ks.last.Quota, window.EpochOf(now)+valid)
	e.origins = origins[:0]
	// Announce the quota: peers count it as held by this node (design.md
	// §7). Once per slot at least, or when it changes, so that the register
	// stays in every view's window while it matters.
	if epoch := window.EpochOf(now); ks.last.Quota != ks.announced || epoch != ks.announcedAt {
		if err := e.store.RecordOwnQuota(ks.key, epoch, uint32(min(ks.last.Quota, limits.MaxCount))); err == nil {
			ks.announced, ks.announcedAt = ks.last.Quota, epoch
		}
	}
}

// Correction is how much the caller must add to its clock to read node
// time: the engine moves it to align this node's slot edges with the
// cluster's (design.md §2). It changes at ticks, rarely once aligned; the
// times passed to the engine must include it.
func (e *Engine) Correction() time.Duration { return time.Duration(e.correction.Load()) }

// alignLocked moves the correction to the median of the clock offsets
// measured to the members this node hears (itself counting as offset zero),
// when that median is beyond the deadband. Each offset is half the difference
// of this node's estimate of the peer and the peer's estimate of this node,
// so symmetric delays cancel (NTP's exchange); using one side alone would
// read every delay as the peer being late, and the whole cluster would walk
// backwards. A single member with a wrong clock is outvoted; two nodes meet
// halfway. After a correction every sample is dropped and alignment waits
// alignHoldOff, so that both sides measure against the new clock.
func (e *Engine) alignLocked(now int64) {
	if e.cfg.AlignDeadband < 0 || now < e.alignHold {
		return
	}
	offs := e.alignScratch[:0]
	offs = append(offs, 0)
	for _, id := range e.memberIDs {
		m := e.members[id]
		if !m.reachable || now-m.direct > int64(e.cfg.DeadAfter) {
			continue // only heard through a relay: no clock samples
		}
		o, ok := m.offsets.estimate()
		if !ok || m.echo == 0 {
			// Wait for every member this node hears: a median of part of
			// them (or a mean of two of three) would follow an outlier.
			e.alignScratch = offs
			return
		}
		offs = append(offs, (o-m.echo)/2)
	}
	e.alignScratch = offs
	if len(offs) < 2 {
		return
	}
	slices.Sort(offs)
	mid := len(offs) / 2
	median := offs[mid]
	if len(offs)%2 == 0 {
		median = (offs[mid-1] + offs[mid]) / 2
	}
	if median > int64(e.cfg.AlignDeadband) || median < -int64(e.cfg.AlignDeadband) {
		e.correction.Add(median)
		e.counters.Realigned++
		e.alignHold = now + median + int64(alignHoldOff)
		for _, m := range e.members {
			m.offsets, m.echo = offsetFilter{}, 0
		}
	}
}

// alignHoldOff is how long alignment waits after a correction: long enough
// for both sides' filters to refill with samples of the new clock.
const alignHoldOff = 500 * time.Millisecond

// offsetFilter keeps the last few samples of a peer's clock offset as seen
// through its frames: asOf − local now, which is the offset minus the
// frame's delay. Their maximum is the sample with the least delay, the best
// estimate of the offset itself.
type offsetFilter struct {
	samples [8]int64
	n       int
	next    int
}

func (f *offsetFilter) add(d int64) {
	f.samples[f.next] = d
	f.next = (f.next + 1) % len(f.samples)
	f.n = min(f.n+1, len(f.samples))
}

// estimate returns the offset once enough samples are in.
func (f *offsetFilter) estimate() (int64, bool) {
	if f.n < 4 {
		return 0, false
	}
	best := f.samples[0]
	for _, v := range f.samples[1:f.n] {
		best = max(best, v)
	}
	return best, true
}

// Housekeep evicts idle windows and garbage-collects the store. The node
// calls it about once a second; it must not be called with the engine's
// lock held (it is not).
func (e *Engine) Housekeep(now int64) window.SweepStats {
	e.seeTime(now)
	sw := e.reg.Sweep(now) // registry creation lock: outside e.mu
	e.mu.Lock()
	defer e.mu.Unlock()
	e.store.GC(now)
	kept := e.keyList[:0]
	for _, ks := range e.keyList {
		if !ks.gone {
			if w, _, ok := e.reg.Lookup(ks.key); !ok {
				e.removeKeyLocked(ks)
			} else {
				ks.w = w
			}
		}
		if !ks.gone || ks.dirty {
			kept = append(kept, ks)
		}
	}
	clear(e.keyList[len(kept):])
	e.keyList = kept
	return sw
}

// LeaseRequest asks for tokens an SDK decides with locally (design.md §10).
type LeaseRequest struct {
	Key string
	// Want is how many tokens the SDK would like.
	Want int64
	// Offered is how many calls the SDK saw for the key since its last
	// report, its own denials included.
	Offered int64
	// ReturnN tokens of the previous lease, granted at ReturnGrantedAt (node
	// time), were not used.
	ReturnN, ReturnGrantedAt int64
}

// LeaseGrant answers a LeaseRequest.
type LeaseGrant struct {
	// Granted tokens may be used until GrantedAt + TTL.
	Granted   int64
	GrantedAt int64
	TTL       time.Duration
	// RetryAfter, when nothing was granted, is when to ask again.
	RetryAfter time.Duration
	// Remaining is the room left in this node's quota.
	Remaining int64
	Limit     limits.Rate
	Unlimited bool
}

// Lease grants up to r.Want tokens of key from this node's quota at node time
// now, after refunding the returned ones and recording the reported demand.
// The granted tokens are admitted in the node's window now, so the cluster
// counts them whether or not the SDK uses them.
func (e *Engine) Lease(now int64, r LeaseRequest) (LeaseGrant, error) {
	e.seeTime(now)
	if r.Want < 0 || r.Offered < 0 || r.ReturnN < 0 {
		return LeaseGrant{}, fmt.Errorf("%w: lease for key %q with want %d, offered %d, return %d: none may be negative", ErrInvalidRequest, r.Key, r.Want, r.Offered, r.ReturnN)
	}
	w, rule, err := e.reg.GetOrCreate(now, r.Key)
	switch {
	case errors.Is(err, limits.ErrNoRule):
		allowed := e.cfg.Registry.UnknownKeys != window.PolicyDeny // the default allows
		g := LeaseGrant{Unlimited: true, GrantedAt: now, TTL: e.cfg.LeaseTTL}
		if allowed {
			g.Granted = max(r.Want, 1)
		} else {
			g.RetryAfter = window.Never
		}
		return g, nil
	case err != nil:
		return LeaseGrant{}, err
	}
	if r.ReturnN > 0 {
		back := w.Refund(now, r.ReturnGrantedAt, r.ReturnN)
		e.leaseReturned.Add(back)
	}
	want := min(r.Want, max(1, int64(e.cfg.MaxLeaseFraction*float64(rule.Rate.Count))))
	granted := w.Grant(now, want, r.Offered)
	e.leaseGranted.Add(granted)
	e.reg.Touch(r.Key)
	g := LeaseGrant{
		Granted:   granted,
		GrantedAt: now,
		TTL:       e.cfg.LeaseTTL,
		Remaining: max(0, w.Quota()-w.Total()),
		Limit:     rule.Rate,
	}
	if granted == 0 && want > 0 {
		// Room comes back at the next slot edge (expiry) or the next tick
		// (a new quota), whichever is first.
		toEdge := time.Duration(int64(limits.Slot) - now%int64(limits.Slot))
		g.RetryAfter = min(toEdge, e.cfg.SyncInterval)
	}
	return g, nil
}

// Fenced reports whether this node currently admits nothing new because it
// has not heard a majority for FenceAfter (conservative policy).
func (e *Engine) Fenced() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.fenced
}

// Counters returns the engine's cumulative counters.
func (e *Engine) Counters() Counters {
	e.mu.Lock()
	defer e.mu.Unlock()
	c := e.counters
	c.LeaseGranted = e.leaseGranted.Load()
	c.LeaseReturned = e.leaseReturned.Load()
	c.FramesRejected = make(map[string]int64, len(e.counters.FramesRejected))
	for k, v := range e.counters.FramesRejected {
		c.FramesRejected[k] = v
	}
	return c
}

// MemberStatus is one member as this node sees it.
type MemberStatus struct {
	ID          string        `json:"id"`
	Self        bool          `json:"self"`
	Incarnation uint64        `json:"incarnation"`
	Reachable   bool          `json:"reachable"`
	Reclaimed   bool          `json:"reclaimed"`
	LastHeard   time.Duration `json:"last_heard_ns"`
	Connected   bool          `json:"connected"`
}

// KeyStatus is one key as this node sees it.
type KeyStatus struct {
	Key      string  `json:"key"`
	Limit    string  `json:"limit"`
	Admitted int64   `json:"admitted"` // own window count
	Quota    int64   `json:"quota"`
	Share    float64 `json:"share"`
	Others   int64   `json:"others"`
	Reserved int64   `json:"reserved"`
	// PerNode is every origin's window count, own included, by node ID.
	PerNode map[string]int64 `json:"per_node"`
}

// Status is a snapshot of the engine for `quotamesh status`.
type Status struct {
	Node        string         `json:"node"`
	Incarnation uint64         `json:"incarnation"`
	Fenced      bool           `json:"fenced"`
	Policy      string         `json:"policy"`
	Members     []MemberStatus `json:"members"`
	Keys        int            `json:"keys"`
	TopKeys     []KeyStatus    `json:"top_keys"`
	StoreBytes  int            `json:"store_bytes"`
}

// PerNode returns every node's window count for key as this node sees it at
// now: its own exact, the others' as their views (all incarnations of a node
// summed). Nodes with nothing for the key are absent. It takes the engine's
// lock: for status pages and tests, not the request path.
func (e *Engine) PerNode(now int64, key string) map[string]int64 {
	e.seeTime(now)
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.perNodeLocked(now, key)
}

func (e *Engine) perNodeLocked(now int64, key string) map[string]int64 {
	out := map[string]int64{}
	slots := limits.MaxSlots
	if r, ok := e.reg.Table().Lookup(key); ok {
		slots = r.Rate.Slots()
	}
	if w, _, ok := e.reg.Lookup(key); ok {
		if adm, _ := w.Counts(now); adm > 0 {
			out[e.cfg.Node] = adm
		}
	}
	e.store.Views(key, slots, e.cfg.DemandSlots, now, func(info crdt.OriginInfo, v crdt.View) {
		if v.Admitted > 0 {
			out[info.ID.Node] += v.Admitted
		}
	})
	return out
}

// Status reports the membership and the top keys by own window count.
func (e *Engine) Status(now int64, topKeys int) Status {
	e.seeTime(now)
	e.mu.Lock()
	defer e.mu.Unlock()
	s := Status{
		Node:        e.cfg.Node,
		Incarnation: e.self.Incarnation,
		Fenced:      e.fenced,
		Policy:      e.cfg.Policy.String(),
		Keys:        e.reg.Len(),
		StoreBytes:  e.store.Bytes(),
	}
	s.Members = append(s.Members, MemberStatus{ID: e.cfg.Node, Self: true, Incarnation: e.self.Incarnation, Reachable: true, Connected: true})
	for id, m := range e.members {
		_, conn := e.peers[id]
		s.Members = append(s.Members, MemberStatus{
			ID: id, Incarnation: m.incarnation, Reachable: m.reachable, Reclaimed: m.reclaimed,
			LastHeard: time.Duration(now - m.heard), Connected: conn,
		})
	}
	slices.SortFunc(s.Members, func(a, b MemberStatus) int { return cmp.Compare(a.ID, b.ID) })
	for key, ks := range e.keys {
		if ks.w == nil {
			continue
		}
		adm, _ := ks.w.Counts(now)
		k := KeyStatus{Key: key, Limit: ks.rule.Rate.String(), Admitted: adm, Quota: ks.w.Quota(),
			Share: ks.last.Share, Others: ks.last.Others, Reserved: ks.last.Reserved,
			PerNode: e.perNodeLocked(now, key)}
		s.TopKeys = append(s.TopKeys, k)
	}
	slices.SortFunc(s.TopKeys, func(a, b KeyStatus) int {
		if c := cmp.Compare(b.Admitted, a.Admitted); c != 0 {
			return c
		}
		return cmp.Compare(a.Key, b.Key)
	})
	if len(s.TopKeys) > topKeys {
		s.TopKeys = s.TopKeys[:topKeys]
	}
	return s
}

package engine

import (
	crand "crypto/rand"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quotamesh/quotamesh/crdt"
	"github.com/quotamesh/quotamesh/internal/route"
	"github.com/quotamesh/quotamesh/internal/share"
	"github.com/quotamesh/quotamesh/limits"
	"github.com/quotamesh/quotamesh/window"
)

// Engine is one node's admission core. Create it with New.
type Engine struct {
	cfg  Config
	self crdt.OriginID
	reg  *window.Registry

	lastNow atomic.Int64 // newest time passed to any method, for OnCreate

	mu         sync.Mutex // guards everything below
	store      *crdt.Store
	started    int64
	members    map[string]*member // current members other than this node
	memberIDs  []string           // their IDs, sorted: every walk is in this order, so runs are reproducible
	memberList []*member          // the members in memberIDs' order
	nReachable int                // members counted reachable at the last walk (walkMembersLocked)
	// Membership evaluation (members.go): the next time a walk over the
	// members is due, and whether one is due now (evalNow) or must read
	// every origin of the store first (readOrigins).
	evalAt               int64
	evalNow, readOrigins bool
	// The members this node misses (missesLocked), kept until missAt or
	// until missNow says they may have changed; missRelayed is the overlay
	// state they were made for.
	missList             []string
	missAt               int64
	missNow, missRelayed bool
	// direct holds the members that sent a frame (member.inDirect), for
	// clock alignment, which takes samples only from them; members not
	// heard directly for DeadAfter leave it.
	direct []*member
	// missedBy holds the members whose last frame said they miss this node
	// (member.onMissedBy), for syncTargetsLocked.
	missedBy []*member
	// targets is syncTargetsLocked's scratch.
	targets       []string
	departed      map[string]*member // members the configuration removed, reserved until ReclaimAfter after last heard (members.go)
	departedIDs   []string           // their IDs, sorted
	nMembers      int                // members, this node included
	peers         map[string]*peer   // sync stream state, by node ID
	keys          map[string]*keyState
	keyList       []*keyState         // the same keys in an order that depends only on what happened, for reproducible walks (keyState.listAt)
	shared        []*keyState         // keys another member uses too, refreshed every RefreshEvery ticks (sharedKey.sharedAt)
	young         map[*keyState]int64 // when keys made within the last grace period were made (keyState.young)
	capped        []*keyState         // keys whose quota a new key's split capped: recomputed every tick until its grace ends
	reachGen      uint64              // counts changes of reachability, for reachRoute
	reachRoute    *route.Table        // this node and the reachable members, for a new key's split
	reachRouteGen uint64
	dirty         []*keyState // keys whose quota the next tick recomputes, each once
	stamp         uint64      // for computeQuotaLocked
	rng           *rand.Rand
	ticks         uint64
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
	ov           overlay // overlay.go
	counters     Counters
	byRule       map[string]*RuleCounts // rules.go
	// Resets (reset.go): the table's resets already applied, the floor of
	// every key reset recently, and the keys whose windows still await
	// their floor's slot.
	resetsSeen    map[limits.Reset]bool
	floors        map[*keyState]int64
	pendingFloors []*keyState

	leaseGranted, leaseReturned atomic.Int64 // counted outside mu
	correction                  atomic.Int64 // ns the caller adds to its clock (clock alignment)
	// beat is the local time of the last Tick: the quotas are valid while
	// it is within QuotaValidity (live).
	beat   atomic.Int64
	leases leases
	// stallBeat is the beat of the last stall noticed (a call finding the
	// engine not live), and wokeAt the local time it was noticed: frames
	// sent before it waited out the stall in the socket (peers.go).
	stallBeat, wokeAt int64
}

// keyState is what the engine keeps for a key that has a local window:
// what every key needs (its announced register included), 80 bytes. What
// only a key that other members use needs (its remembered shares, its
// place in the refresh list) sits behind sh, allocated the first time a member's view of
// the key appears: most keys of a large key space are decided by one node
// alone and never pay for it.
type keyState struct {
	key        string
	w          *window.Window
	sh         *sharedKey // nil until a member's view of the key was seen
	mirrorFrom int64      // first epoch the next mirror must read
	seen       seenSlots  // newest mirrored slots, for decision counters
	listAt     int32      // its place in Engine.keyList
	dirty      bool       // on Engine.dirty
	gone       bool       // removed from Engine.keys and keyList
	shared     bool       // another member used the key at the last computation
	young      bool       // its window was made within a grace period (Engine.young)
	announced  uint32     // quota last recorded in the store (0: none, or withdrawn)
}

// sharedKey is the part of a key's state that only keys another member
// has a view of need: 64 bytes, and 24 per other member it remembers.
type sharedKey struct {
	share share.State
	// The last computation's figures, for status; others and reserved
	// saturate at 2^32−1.
	lastShare                float32
	lastOthers, lastReserved uint32
	sharedAt                 int32 // its place in Engine.shared while shared
}

// seenSlots are the last two slots mirrored: the newer at epoch, the older
// gap slots before it (gap 0: none). Only they can still grow.
type seenSlots struct {
	epoch    int64
	gap      uint32
	adm, off [2]uint32 // the older, the newer
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
		departed:   make(map[string]*member),
		peers:      make(map[string]*peer),
		keys:       make(map[string]*keyState),
		rng:        rand.New(rand.NewPCG(cfg.Seed, cfg.Seed^0x9e3779b97f4a7c15)),
		lastQuorum: now - int64(100*365*24*time.Hour),
	}
	e.counters.FramesRejected = make(map[string]int64)
	e.lastNow.Store(now)
	e.beat.Store(now)
	// Lease IDs start where no earlier incarnation's are likely to be, so a
	// settlement meant for a predecessor matches nothing.
	e.leases.next = cfg.Incarnation << 24
	storeCfg := cfg.Store
	storeCfg.Horizon = e.horizon
	store, err := crdt.NewStore(e.self, storeCfg)
	if err != nil {
		return nil, fmt.Errorf("%w: store: %w", ErrInvalidConfig, err)
	}
	e.store = store
	regCfg := cfg.Registry
	regCfg.OnCreate = e.onCreate
	regCfg.OnEvict = e.onEvict
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
// (see the package comment). Errors are the registry's. While the engine is
// not live (no Tick within QuotaValidity) every request is denied.
func (e *Engine) AllowN(now int64, key string, n int64) (window.Decision, error) {
	if !e.live(now) {
		return e.stale(now, key, n), nil
	}
	return e.reg.AllowN(now, key, n)
}

// Admit decides one request for key at node time now and returns only the
// verdict: the fastest call (see window.Registry.Admit).
func (e *Engine) Admit(now int64, key string) bool {
	if !e.live(now) {
		e.stale(now, key, 1)
		return false
	}
	return e.reg.Admit(now, key)
}

// live reports whether the quotas are current at now: the sync loop ticked
// within QuotaValidity. A process paused (SIGSTOP, a long GC) or whose loop
// stalled then admits nothing until it has ticked again, rather than
// admitting under a share the cluster may have given to someone else. One
// atomic load on the request path, where keeping every quota's own validity
// renewed cost work per key held.
func (e *Engine) live(now int64) bool {
	return now-e.beat.Load() <= int64(e.cfg.QuotaValidity)
}

// stale answers a request while the engine is not live: denied, counted as
// offered if the key has a window.
func (e *Engine) stale(now int64, key string, n int64) window.Decision {
	d := window.Decision{RetryAfter: e.cfg.SyncInterval}
	if w, rule, ok := e.reg.Lookup(key); ok {
		w.RecordOffered(now, n)
		d.Limit = rule.Rate
	}
	return d
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
	ks.w = w
	ks.mirrorFrom = w.OpenEpoch()
	ks.young = true
	if e.young == nil {
		e.young = make(map[*keyState]int64)
	}
	e.young[ks] = now
	if f := e.reg.Table().ResetFloor(key); f > 0 && f+floorKeepSlots >= window.EpochOf(now) {
		// Reset recently: a window carried over from a replaced one may
		// hold slots before the floor.
		e.setFloorLocked(ks, f)
		e.clearDueFloorsLocked(now)
	}
	e.computeQuotaLocked(now, ks)
}

// SetTable makes t the limit table: windows follow at once (count changes in
// place, window changes replace the window), and every key's quota is
// recomputed at the next tick.
func (e *Engine) SetTable(t *limits.Table) {
	e.reg.SetTable(t) // takes the registry's creation lock: not under e.mu
	e.mu.Lock()
	defer e.mu.Unlock()
	// Backwards: removing a key moves the last one into its place, which
	// this walk has already seen.
	for i := len(e.keyList) - 1; i >= 0; i-- {
		ks := e.keyList[i]
		w, _, ok := e.reg.Lookup(ks.key)
		if !ok {
			e.removeKeyLocked(ks)
			continue
		}
		ks.w = w
		e.markDirtyLocked(ks)
	}
	e.applyResetsLocked(t, e.lastNow.Load())
	e.clearDueFloorsLocked(e.lastNow.Load())
}

// Table returns the limit table in force.
func (e *Engine) Table() *limits.Table { return e.reg.Table() }

// Housekeep evicts idle windows and garbage-collects the store. The node
// calls it about once a second; it must not be called with the engine's
// lock held (it is not). Its cost follows the keys that changed or expire,
// not the keys held: the registry looks at a part of its keys per call, and
// the store at the keys due.
func (e *Engine) Housekeep(now int64) window.SweepStats {
	e.seeTime(now)
	sw := e.reg.Sweep(now) // registry creation lock: outside e.mu (onEvict takes it)
	e.mu.Lock()
	defer e.mu.Unlock()
	e.store.GC(now)
	e.pruneFloorsLocked(now)
	return sw
}

// onEvict runs under the registry's creation lock for every window Sweep
// evicts: the engine forgets the key (withdrawing its register).
func (e *Engine) onEvict(key string, w *window.Window) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if ks := e.keys[key]; ks != nil && ks.w == w {
		e.removeKeyLocked(ks)
	}
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
	ks := &keyState{key: key, listAt: int32(len(e.keyList))}
	e.keys[key] = ks
	e.keyList = append(e.keyList, ks)
	return ks
}

// removeKeyLocked stops tracking a key, withdrawing the room its register
// held, if it announced one.
func (e *Engine) removeKeyLocked(ks *keyState) {
	delete(e.keys, ks.key)
	if ks.young {
		delete(e.young, ks)
		ks.young = false
	}
	ks.gone = true
	delete(e.floors, ks)
	last := e.keyList[len(e.keyList)-1]
	e.keyList[ks.listAt], last.listAt = last, ks.listAt
	e.keyList[len(e.keyList)-1] = nil
	e.keyList = e.keyList[:len(e.keyList)-1]
	e.setShared(ks, false)
	if ks.announced != 0 {
		if err := e.store.RecordOwnQuota(ks.key, window.EpochOf(e.lastNow.Load()), 0); err == nil {
			ks.announced = 0
		}
	}
}

// setShared records whether another member uses ks's key, keeping the
// list of such keys that the periodic refresh walks. A key is shared only
// once its sharedKey exists.
func (e *Engine) setShared(ks *keyState, shared bool) {
	if ks.shared == shared {
		return
	}
	ks.shared = shared
	if shared {
		ks.sh.sharedAt = int32(len(e.shared))
		e.shared = append(e.shared, ks)
		return
	}
	last := e.shared[len(e.shared)-1]
	e.shared[ks.sh.sharedAt], last.sh.sharedAt = last, ks.sh.sharedAt
	e.shared[len(e.shared)-1] = nil
	e.shared = e.shared[:len(e.shared)-1]
}

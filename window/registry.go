package window

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quotamesh/quotamesh/limits"
)

const (
	// DefaultMaxKeys is the number of windows a registry holds at most
	// unless Config.MaxKeys says otherwise.
	DefaultMaxKeys = 1_000_000
	// MinIdleAfter is the shortest default idle time before eviction: a
	// window is evicted after max(2×its window, MinIdleAfter) without a
	// write, unless Config.IdleAfter says otherwise.
	MinIdleAfter = 10 * time.Second
)

// Policy says how a registry answers a request it cannot give a window.
type Policy uint8

const (
	// PolicyDefault means the documented default of the field it is in.
	PolicyDefault Policy = iota
	// PolicyAllow admits the request without limit.
	PolicyAllow
	// PolicyDeny denies the request.
	PolicyDeny
)

func (p Policy) String() string {
	switch p {
	case PolicyDefault:
		return "default"
	case PolicyAllow:
		return "allow"
	case PolicyDeny:
		return "deny"
	}
	return fmt.Sprintf("Policy(%d)", uint8(p))
}

// Config configures a Registry. The zero Config is valid and means every
// default. NewRegistry copies it; it cannot change afterwards.
type Config struct {
	// MaxKeys bounds the number of windows, divided among the rules so that
	// one rule's keys cannot take another's room (see Registry.RuleKeys and
	// docs/design.md §4). A new key beyond its rule's budget is refused with
	// ErrTooManyKeys and answered per WhenFull. Zero means DefaultMaxKeys
	// (1,000,000); negative is invalid.
	MaxKeys int
	// IdleAfter is how long a window must go without a write before Sweep
	// evicts it; it is never evicted before its slots have all expired.
	// Zero means max(2×the window, MinIdleAfter) for each key; negative is
	// invalid.
	IdleAfter time.Duration
	// UnknownKeys is the answer for keys that match no rule. Such keys never
	// get a window, so a flood of them costs no memory; every such decision
	// is counted in Stats.Unlimited. Zero means PolicyAllow.
	UnknownKeys Policy
	// WhenFull is the answer for a new key while MaxKeys windows exist.
	// Zero means PolicyDeny.
	WhenFull Policy
	// OnCreate, if not nil, is called with every new window before any
	// request can see it: for a new key, and for a window that replaces one
	// whose length changed (after the old window's counts were carried
	// over). The node sets the window's initial quota here. It runs under
	// the registry's creation lock, so it must not call GetOrCreate,
	// SetTable, Sweep, or AllowN for a key that has no window yet.
	OnCreate func(key string, rule limits.Rule, w *Window)
	// OnEvict, if not nil, is called by Sweep with every window it evicts,
	// after the window left the registry, under the creation lock (the
	// same rules as OnCreate apply).
	OnEvict func(key string, w *Window)
}

// Validate reports the first field out of range, naming its value.
func (c Config) Validate() error {
	switch {
	case c.MaxKeys < 0:
		return fmt.Errorf("%w: MaxKeys %d is negative; 0 means the default %d", ErrInvalidConfig, c.MaxKeys, DefaultMaxKeys)
	case c.IdleAfter < 0:
		return fmt.Errorf("%w: IdleAfter %v is negative; 0 means max(2×the window, %v)", ErrInvalidConfig, c.IdleAfter, MinIdleAfter)
	case c.UnknownKeys > PolicyDeny:
		return fmt.Errorf("%w: UnknownKeys is %v; use PolicyAllow or PolicyDeny", ErrInvalidConfig, c.UnknownKeys)
	case c.WhenFull > PolicyDeny:
		return fmt.Errorf("%w: WhenFull is %v; use PolicyAllow or PolicyDeny", ErrInvalidConfig, c.WhenFull)
	}
	return nil
}

func (c Config) withDefaults() Config {
	if c.MaxKeys == 0 {
		c.MaxKeys = DefaultMaxKeys
	}
	if c.UnknownKeys == PolicyDefault {
		c.UnknownKeys = PolicyAllow
	}
	if c.WhenFull == PolicyDefault {
		c.WhenFull = PolicyDeny
	}
	return c
}

// Registry holds one Window per key under a limits.Table. All methods are
// safe for concurrent use. AllowN on a key that has a window is lock-free
// and allocation-free (one lookup in a lock-free key map and a Window
// decision); creating a
// window, SetTable and Sweep serialise on a mutex that the request path for
// existing keys never takes. A Registry starts no goroutine: its owner calls
// Sweep periodically (the node does every second).
type Registry struct {
	cfg   Config
	table atomic.Pointer[limits.Table]
	keys  *keyMap // key -> *entry; written under mu only
	count atomic.Int64

	touched touchList // entries written since the owner last drained them

	mu      sync.Mutex              // serialises creation, SetTable and Sweep
	rules   map[string]*limits.Rule // the table's rules by pattern, shared by their entries; guarded by mu
	retired []retired               // windows taken out of keys, kept one more Sweep; guarded by mu
	idle    idleWheel               // when each key may next be idle (idle.go)
	budgets keyBudgets              // MaxKeys per rule (budget.go); guarded by mu

	stats struct {
		created, evicted, removed, replaced, rejected, unlimited, migrated atomic.Int64
	}
}

// entry is immutable but for its place in the touched list and on the idle
// wheel; a rule change stores a new entry. The entries of one rule share
// it (Registry.rules): 64 bytes an entry.
type entry struct {
	key  string
	rule *limits.Rule
	w    *Window

	next   *entry // the touched list's link; written only while pushing
	idleAt int64  // the epoch from which it may be idle; guarded by idleWheel.mu

	queued     atomic.Bool // on the touched list, or about to be
	idleQueued bool        // on the idle wheel; guarded by idleWheel.mu
}

type retired struct {
	key string
	w   *Window
}

// Stats are a registry's counters since it was created.
type Stats struct {
	Keys      int64 // windows held now
	Created   int64 // windows created, for new keys and as replacements
	Evicted   int64 // windows evicted by Sweep as idle
	Removed   int64 // windows dropped because no rule matches their key any more
	Replaced  int64 // windows replaced because their rule's window length changed
	Rejected  int64 // new keys refused because MaxKeys windows existed
	Unlimited int64 // decisions for keys that match no rule
	Migrated  int64 // late tokens (admitted + offered) moved out of evicted or replaced windows
}

// SweepStats tell what one Sweep did.
type SweepStats struct {
	Keys             int   // windows held after the sweep
	Evicted          int   // windows evicted as idle
	Migrated         int   // retired windows that had late counts
	MigratedAdmitted int64 // late admitted tokens moved into live windows
	MigratedOffered  int64 // late offered tokens moved into live windows
	Dropped          int64 // late tokens of keys that can no longer have a window (no rule, or full)
}

// errNoRule is the internal, allocation-free form of "no rule governs key".
var errNoRule = errors.New("no rule")

// NewRegistry returns an empty registry over table (nil is an empty table:
// every key is unknown). The error wraps ErrInvalidConfig.
func NewRegistry(cfg Config, table *limits.Table) (*Registry, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	r := &Registry{cfg: cfg.withDefaults(), keys: newKeyMap()}
	r.table.Store(table)
	r.internLocked(table) // no other goroutine has r yet
	r.recountLocked()
	return r, nil
}

// Table returns the table the registry resolves keys with.
func (r *Registry) Table() *limits.Table { return r.table.Load() }

// Allow is AllowN(now, key, 1).
func (r *Registry) Allow(now int64, key string) (Decision, error) { return r.AllowN(now, key, 1) }

// AllowN decides n tokens for key at node time now, creating the key's
// window on its first request. For a key that has a window it is lock-free
// and allocation-free.
//
// Errors (test with errors.Is): limits.ErrInvalidKey for a malformed key,
// ErrInvalidN for n < 0, ErrExceedsLimit for n above the key's count; the
// decision is then a denial with RetryAfter Never. ErrTooManyKeys for a new
// key while MaxKeys windows exist; the decision then holds the WhenFull
// answer (Unlimited set), which the caller may use. A key that matches no
// rule is answered per UnknownKeys with Unlimited set and no error.
func (r *Registry) AllowN(now int64, key string, n int64) (Decision, error) {
	en, ok := r.keys.load(key)
	if !ok {
		return r.allowNew(now, key, n)
	}
	r.touched.push(en)
	if n < 0 || n > en.w.count.Load() {
		return en.w.Decide(now, n), badN(en.w, key, n)
	}
	// Decide's result goes straight to the caller: every layer that holds
	// a Decision and returns it again copies it (measured: ~5 ns a layer).
	return en.w.Decide(now, n), nil
}

// Admit decides one token for key at node time now when only the verdict
// matters: the fastest way to ask, since no remaining count or retry-after
// is computed (measured: a denial costs the key lookup plus 9 ns, against
// 14 ns for Decide). A malformed key is denied; a new key, a key that no
// rule matches and a full registry are answered as AllowN answers them.
// Lock-free and allocation-free for a key that has a window.
func (r *Registry) Admit(now int64, key string) bool {
	if en, ok := r.keys.load(key); ok {
		r.touched.push(en)
		return en.w.AllowN(now, 1)
	}
	d, _ := r.allowNew(now, key, 1)
	return d.Allowed
}

// decide answers for an entry, checking n.
func decide(en *entry, now int64, key string, n int64) (Decision, error) {
	if n < 0 || n > en.w.count.Load() {
		return en.w.Decide(now, n), badN(en.w, key, n)
	}
	return en.w.Decide(now, n), nil
}

// badN is the error for an n that Decide answered with Never.
//
//go:noinline
func badN(w *Window, key string, n int64) error {
	if n < 0 {
		return invalidN(key, n)
	}
	return fmt.Errorf("%w: n %d for key %q is above its limit %v; no wait can admit it", ErrExceedsLimit, n, clip(key), w.Rate())
}

func invalidN(key string, n int64) error {
	return fmt.Errorf("%w %d for key %q: n must be 0 or more", ErrInvalidN, n, clip(key))
}

func (r *Registry) allowNew(now int64, key string, n int64) (Decision, error) {
	if n < 0 {
		if err := limits.ValidateKey(key); err != nil {
			return Decision{RetryAfter: Never}, err
		}
		return Decision{RetryAfter: Never}, invalidN(key, n)
	}
	en, err := r.getOrCreate(now, key)
	switch {
	case err == nil:
		d, err := decide(en, now, key, n)
		r.touched.push(en)
		return d, err
	case err == errNoRule:
		r.stats.unlimited.Add(1)
		d := Decision{Allowed: r.cfg.UnknownKeys == PolicyAllow, Unlimited: true}
		if !d.Allowed {
			d.RetryAfter = Never
		}
		return d, nil
	case errors.Is(err, ErrTooManyKeys):
		d := Decision{Allowed: r.cfg.WhenFull == PolicyAllow, Unlimited: true}
		if !d.Allowed {
			d.RetryAfter = Never
		}
		return d, err
	}
	return Decision{RetryAfter: Never}, err
}

// Lookup returns key's window and rule if it has one. It never creates a
// window; it is lock-free.
func (r *Registry) Lookup(key string) (*Window, limits.Rule, bool) {
	if en, ok := r.keys.load(key); ok {
		return en.w, *en.rule, true
	}
	return nil, limits.Rule{}, false
}

// GetOrCreate returns key's window and rule, creating the window (and
// calling Config.OnCreate) if there is none. Errors: limits.ErrInvalidKey,
// limits.ErrNoRule when no rule governs key (unknown keys get no window),
// ErrTooManyKeys when MaxKeys windows exist.
func (r *Registry) GetOrCreate(now int64, key string) (*Window, limits.Rule, error) {
	en, err := r.getOrCreate(now, key)
	if err == errNoRule {
		return nil, limits.Rule{}, fmt.Errorf("%w governs key %q", limits.ErrNoRule, clip(key))
	}
	if err != nil {
		return nil, limits.Rule{}, err
	}
	return en.w, *en.rule, nil
}

func (r *Registry) getOrCreate(now int64, key string) (*entry, error) {
	if en, ok := r.keys.load(key); ok {
		return en, nil
	}
	if err := limits.ValidateKey(key); err != nil {
		return nil, err
	}
	// Unknown keys are answered without the lock: a flood of them must not
	// serialise.
	if _, ok := r.table.Load().Lookup(key); !ok {
		return nil, errNoRule
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.createLocked(now, key)
}

// createLocked returns key's entry, creating it under the current table.
func (r *Registry) createLocked(now int64, key string) (*entry, error) {
	if en, ok := r.keys.load(key); ok {
		return en, nil
	}
	rule, ok := r.table.Load().Lookup(key)
	if !ok {
		return nil, errNoRule
	}
	if n := r.count.Load(); n >= int64(r.cfg.MaxKeys) {
		r.stats.rejected.Add(1)
		r.budgets.reject(rule)
		return nil, fmt.Errorf("%w: key %q would be window %d, MaxKeys is %d", ErrTooManyKeys, clip(key), n+1, r.cfg.MaxKeys)
	}
	if err := r.budgets.admit(rule, key); err != nil {
		r.stats.rejected.Add(1)
		return nil, err
	}
	key = strings.Clone(key) // never pin the caller's buffer
	w, err := New(rule.Rate, now)
	if err != nil {
		return nil, fmt.Errorf("rule %v for key %q: %w", rule, clip(key), err)
	}
	if r.cfg.OnCreate != nil {
		r.cfg.OnCreate(key, rule, w)
	}
	en := &entry{key: key, rule: r.ruleRef(rule), w: w}
	r.keys.store(en)
	r.idle.add(en, w.OpenEpoch()+r.idleSlots(rule))
	r.budgets.add(rule)
	r.count.Add(1)
	r.stats.created.Add(1)
	return en, nil
}

// SetTable makes t the registry's table and re-resolves every key: a changed
// count with the same window applies in place (Window.SetRate); a changed
// window length replaces the window, carrying its slots over at their own
// epochs (those inside the new window count against it); a key that no rule
// matches any more loses its window. A replaced window's quota drops to zero
// so that requests racing with the change are denied rather than admitted
// twice; their counts move to the new window at the next Sweep. SetTable
// holds the creation lock for O(keys).
func (r *Registry) SetTable(t *limits.Table) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.table.Store(t)
	r.internLocked(t)
	r.keys.rangeAll(func(key string, en *entry) bool {
		rule, ok := t.Lookup(key)
		switch {
		case !ok:
			if r.keys.compareAndDelete(key, en) {
				r.count.Add(-1)
				r.stats.removed.Add(1)
			}
		case rule.Rate.Window != en.rule.Rate.Window:
			r.replaceLocked(key, en, rule)
		case rule != *en.rule:
			_ = en.w.SetRate(rule.Rate) // same window, valid rate: cannot fail
			ne := &entry{key: key, rule: r.ruleRef(rule), w: en.w}
			r.keys.store(ne)
			r.idle.add(ne, en.w.OpenEpoch()+r.idleSlots(rule))
		}
		return true
	})
	r.recountLocked()
}

func (r *Registry) replaceLocked(key string, en *entry, rule limits.Rule) {
	old := en.w
	old.SetQuota(0)
	w, err := New(rule.Rate, slotStart(old.OpenEpoch()))
	if err != nil {
		return // rules in a Table are valid
	}
	w.absorb(old.drain())
	if r.cfg.OnCreate != nil {
		r.cfg.OnCreate(key, rule, w)
	}
	ne := &entry{key: key, rule: r.ruleRef(rule), w: w}
	r.keys.store(ne)
	r.idle.add(ne, w.OpenEpoch()+r.idleSlots(rule))
	r.retired = append(r.retired, retired{key: key, w: old})
	r.stats.replaced.Add(1)
	r.stats.created.Add(1)
}

// Sweep evicts windows that saw no write for their idle time (see
// Config.IdleAfter), whose slots have therefore all expired, and migrates
// late counts: a request that loaded a window just before it was evicted or
// replaced may still count into it, so removed windows are kept until the
// next Sweep, which moves whatever they gained into the key's live window
// (creating it if the key has none). Nothing is lost unless a request stalls
// inside AllowN for longer than a sweep period. Sweep costs O(keys) and
// holds the creation lock; call it from one goroutine, about every second.
func (r *Registry) Sweep(now int64) SweepStats {
	r.mu.Lock()
	defer r.mu.Unlock()
	var st SweepStats
	pending := r.retired
	r.retired = nil
	for _, old := range pending {
		slots := old.w.drain()
		if len(slots) == 0 {
			continue
		}
		st.Migrated++
		en, err := r.createLocked(now, old.key)
		if err != nil {
			for _, s := range slots {
				st.Dropped += int64(s.v>>32) + int64(s.v&uint64(maxUint32))
			}
			continue
		}
		a, o := en.w.absorb(slots)
		st.MigratedAdmitted += a
		st.MigratedOffered += o
		r.stats.migrated.Add(a + o)
	}
	e := EpochOf(now)
	r.idle.due(e, func(en *entry) {
		key := en.key
		if cur, ok := r.keys.load(key); !ok || cur != en {
			return // replaced or evicted meanwhile: its successor is scheduled
		}
		if last := en.w.OpenEpoch(); e-last < r.idleSlots(*en.rule) {
			r.idle.add(en, last+r.idleSlots(*en.rule)) // written since
			return
		}
		if !r.keys.compareAndDelete(key, en) {
			return
		}
		r.count.Add(-1)
		r.budgets.remove(*en.rule)
		r.stats.evicted.Add(1)
		st.Evicted++
		// What it holds has expired; empty it so that anything found in it
		// at the next Sweep is a late count.
		en.w.Reset()
		r.retired = append(r.retired, retired{key: key, w: en.w})
		if r.cfg.OnEvict != nil {
			r.cfg.OnEvict(key, en.w)
		}
	})
	st.Keys = int(r.count.Load())
	return st
}

// internLocked makes the rules of table t the ones entries share.
func (r *Registry) internLocked(t *limits.Table) {
	r.rules = make(map[string]*limits.Rule)
	if t == nil {
		return
	}
	for _, rule := range t.Rules() {
		r.rules[rule.Pattern] = &rule
	}
}

// ruleRef returns the shared copy of rule, a rule of the current table.
func (r *Registry) ruleRef(rule limits.Rule) *limits.Rule {
	if p := r.rules[rule.Pattern]; p != nil && *p == rule {
		return p
	}
	return &rule // not a rule of the current table: cannot happen, but stay right
}

// idleSlots is how many slots a window of rule must go without a write
// before it is evicted.
func (r *Registry) idleSlots(rule limits.Rule) int64 {
	k := int64(rule.Rate.Slots())
	if r.cfg.IdleAfter > 0 {
		return max(int64((r.cfg.IdleAfter+limits.Slot-1)/limits.Slot), k)
	}
	return max(2*k, int64(MinIdleAfter/limits.Slot))
}

// Range calls fn for every key with a window, in no particular order, until
// fn returns false. fn may call any method except those that take the
// creation lock (GetOrCreate, SetTable, Sweep). Keys created or removed
// meanwhile may or may not be seen.
func (r *Registry) Range(fn func(key string, rule limits.Rule, w *Window) bool) {
	r.keys.rangeAll(func(key string, en *entry) bool {
		return fn(key, *en.rule, en.w)
	})
}

// Len returns the number of windows.
func (r *Registry) Len() int { return int(r.count.Load()) }

// Stats returns the registry's counters.
func (r *Registry) Stats() Stats {
	return Stats{
		Keys:      r.count.Load(),
		Created:   r.stats.created.Load(),
		Evicted:   r.stats.evicted.Load(),
		Removed:   r.stats.removed.Load(),
		Replaced:  r.stats.replaced.Load(),
		Rejected:  r.stats.rejected.Load(),
		Unlimited: r.stats.unlimited.Load(),
		Migrated:  r.stats.migrated.Load(),
	}
}

// slotStart is the node time slot e starts at, saturating.
func slotStart(e int64) int64 {
	switch {
	case e > (1<<63-1)/slotNs:
		return 1<<63 - 1
	case e < (-1<<63)/slotNs:
		return -1 << 63
	}
	return e * slotNs
}

// clip keeps error messages short when a caller passes a huge key.
func clip(s string) string {
	if len(s) > 64 {
		return s[:64] + "..."
	}
	return s
}

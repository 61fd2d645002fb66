package window

import (
	"fmt"
	"strings"

	"github.com/quotamesh/quotamesh/limits"
)

// keyBudgets divides a registry's MaxKeys among the rules of its table, so
// that the keys of one rule can neither block nor evict another rule's
// (nothing is ever evicted to make room: windows go only when idle).
//
// An exact rule (no wildcard) has one key at most and always gets its
// window. What is left, R = MaxKeys - (exact rules), is split in two
// halves: a reserve, of which each of the P pattern rules is guaranteed
// R/(2P) windows, and a pool that the pattern rules share first come,
// first served. A new key of a pattern rule gets a window while its rule
// holds fewer windows than its reserve, or while the windows that all
// pattern rules hold beyond their reserves are fewer than the pool. So one
// rule flooding keys takes at most its reserve and the pool, and every
// other rule still finds its reserve.
//
// MaxKeys stays a hard bound on the windows held. In a steady table the
// reserves and the pool add up to it, so the bound never blocks a rule
// within its reserve; right after a rule change that shrinks the reserves
// (more pattern rules), windows already held are kept, and until idle ones
// are evicted a rule may find the registry full below its new reserve.
//
// A keyBudgets is guarded by the registry's creation lock.
type keyBudgets struct {
	held     map[string]int   // windows per rule pattern
	rejected map[string]int64 // new keys refused, per rule pattern
	reserve  int              // windows guaranteed to each pattern rule
	pool     int              // windows shared beyond the reserves
	over     int              // windows held beyond their reserves, all pattern rules together
	patterns int              // pattern rules in the table
	maxKeys  int
}

// RuleKeys is one rule's use of the registry's key budget.
type RuleKeys struct {
	// Keys is the windows the rule's keys hold.
	Keys int
	// Reserve is the windows guaranteed to the rule (1 for an exact rule);
	// beyond it the rule's keys share a pool with the other pattern rules.
	Reserve int
	// Rejected counts the rule's new keys refused since the registry was
	// created (ErrTooManyKeys).
	Rejected int64
}

func exact(pattern string) bool { return !strings.ContainsRune(pattern, limits.Wildcard) }

// reset recomputes the reserves for table t and the counts from each, which
// calls fn for every window's rule.
func (b *keyBudgets) reset(t *limits.Table, maxKeys int, each func(fn func(rule limits.Rule))) {
	b.maxKeys = maxKeys
	exacts, patterns := 0, 0
	if t != nil {
		for _, r := range t.Rules() {
			if exact(r.Pattern) {
				exacts++
			} else {
				patterns++
			}
		}
	}
	b.patterns = patterns
	rest := max(maxKeys-exacts, 0)
	b.reserve, b.pool = 0, rest
	if patterns > 0 {
		b.reserve = rest / (2 * patterns)
		b.pool = rest - patterns*b.reserve
	}
	b.held = make(map[string]int, patterns+exacts)
	each(func(rule limits.Rule) { b.held[rule.Pattern]++ })
	b.over = 0
	for p, n := range b.held {
		if !exact(p) {
			b.over += max(n-b.reserve, 0)
		}
	}
	for p := range b.rejected {
		if _, ok := t.Get(p); !ok { // a nil table has no rule
			delete(b.rejected, p)
		}
	}
}

// admit reports whether key, of rule, may get a new window, and if not why
// (wrapping ErrTooManyKeys).
func (b *keyBudgets) admit(rule limits.Rule, key string) error {
	if exact(rule.Pattern) {
		return nil
	}
	held := b.held[rule.Pattern]
	if held < b.reserve || b.over < b.pool {
		return nil
	}
	b.reject(rule)
	return fmt.Errorf("%w: key %q of rule %q: the rule holds %d windows, past its reserve of %d, and the %d windows the pattern rules share are taken (MaxKeys %d among %d pattern rules); other rules keep theirs",
		ErrTooManyKeys, clip(key), clip(rule.Pattern), held, b.reserve, b.pool, b.maxKeys, b.patterns)
}

// reject counts a new key of rule refused.
func (b *keyBudgets) reject(rule limits.Rule) {
	if b.rejected == nil {
		b.rejected = make(map[string]int64)
	}
	b.rejected[rule.Pattern]++
}

// add counts a new window of rule.
func (b *keyBudgets) add(rule limits.Rule) {
	b.held[rule.Pattern]++
	if !exact(rule.Pattern) && b.held[rule.Pattern] > b.reserve {
		b.over++
	}
}

// remove counts a window of rule gone.
func (b *keyBudgets) remove(rule limits.Rule) {
	n := b.held[rule.Pattern]
	if n == 0 {
		return
	}
	if !exact(rule.Pattern) && n > b.reserve {
		b.over--
	}
	if n == 1 {
		delete(b.held, rule.Pattern)
		return
	}
	b.held[rule.Pattern] = n - 1
}

// byRule returns every rule's use of the budget, for the rules of t.
func (b *keyBudgets) byRule(t *limits.Table) map[string]RuleKeys {
	out := make(map[string]RuleKeys, t.Len())
	for _, r := range t.Rules() {
		rk := RuleKeys{Keys: b.held[r.Pattern], Reserve: b.reserve, Rejected: b.rejected[r.Pattern]}
		if exact(r.Pattern) {
			rk.Reserve = 1
		}
		out[r.Pattern] = rk
	}
	return out
}

// RuleKeys returns, for every rule of the table, the windows its keys hold,
// its reserve and its rejected keys. It takes the creation lock: call it
// now and then (the node does every second), not per request.
func (r *Registry) RuleKeys() map[string]RuleKeys {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.budgets.byRule(r.table.Load())
}

// recountLocked recomputes the budgets for the current table; r.mu held.
func (r *Registry) recountLocked() {
	r.budgets.reset(r.table.Load(), r.cfg.MaxKeys, func(fn func(limits.Rule)) {
		r.keys.rangeAll(func(_ string, en *entry) bool {
			fn(*en.rule)
			return true
		})
	})
}

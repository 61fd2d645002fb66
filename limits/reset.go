package limits

import (
	"fmt"
	"slices"
)

// A Reset starts the limit of every key its pattern matches afresh: from
// slot Floor on, the cluster counts only what was admitted in Floor and
// later slots, whatever the counts of earlier slots (design.md §8,
// "Resets"). Floor is a slot number (node time / Slot), the same on every
// node, so a node that applies the reset late, or again after a restart,
// forgets exactly the same admissions as the others.
type Reset struct {
	// Pattern is an exact key or a pattern with '*' wildcards.
	Pattern string `json:"pattern"`
	// Floor is the first slot that counts, 1 to MaxFloor.
	Floor int64 `json:"floor"`
}

const (
	// MaxResets is the most resets a Table keeps. A new reset beyond it
	// drops the one with the oldest floor: dropping a reset only makes the
	// nodes count more, never less.
	MaxResets = 1024
	// ResetKeepSlots is how long a Table keeps a reset after a newer one:
	// resets whose floor is this many slots (two of the longest windows)
	// or more below the newest reset's floor are dropped when a reset is
	// added, since no window can still hold slots before them.
	ResetKeepSlots = int64(2 * MaxSlots)
	// MaxFloor bounds a reset's floor: the slot of node time 2^62 ns, as
	// for every epoch the cluster exchanges.
	MaxFloor = int64(1) << 62 / int64(Slot)
)

// Validate checks the pattern and the floor.
func (r Reset) Validate() error {
	if _, err := ParsePattern(r.Pattern); err != nil {
		return err
	}
	if r.Floor < 1 || r.Floor > MaxFloor {
		return fmt.Errorf("%w: reset of %q: floor slot %d is outside [1, %d]", ErrInvalidReset, clip(r.Pattern), r.Floor, MaxFloor)
	}
	return nil
}

// String writes the reset as "pattern@floor".
func (r Reset) String() string { return fmt.Sprintf("%s@%d", r.Pattern, r.Floor) }

// Resets returns the table's resets, oldest floor first.
func (t *Table) Resets() []Reset {
	if t == nil {
		return nil
	}
	return slices.Clone(t.resets)
}

// ResetFloor returns the newest floor of the resets whose pattern matches
// key, or 0 if none does. It walks every reset (at most MaxResets): for
// slow paths, such as a key seen for the first time.
func (t *Table) ResetFloor(key string) int64 {
	if t == nil {
		return 0
	}
	var f int64
	for i := len(t.resets) - 1; i >= 0; i-- {
		r := t.resets[i]
		if r.Floor <= f {
			break // sorted by floor: nothing older can raise it
		}
		if t.resetPatterns[i].Match(key) {
			f = r.Floor
		}
	}
	return f
}

// WithReset returns a copy of t that holds r as well. A reset of the same
// pattern with an older or equal floor is replaced (a reset with a newer
// one makes r redundant and t is returned as is); resets whose floor is
// ResetKeepSlots or more below the newest are dropped, and beyond
// MaxResets the oldest are. Rules are unchanged.
func (t *Table) WithReset(r Reset) (*Table, error) {
	if err := r.Validate(); err != nil {
		return nil, err
	}
	old := t.Resets()
	if i := slices.IndexFunc(old, func(x Reset) bool { return x.Pattern == r.Pattern }); i >= 0 {
		if old[i].Floor >= r.Floor {
			return t, nil
		}
		old = slices.Delete(old, i, i+1)
	}
	return t.withResets(append(old, r))
}

// WithResets returns a copy of t whose resets are rs (validated, sorted,
// and kept to the bounds WithReset applies), for a table rebuilt from a
// snapshot. Two resets of one pattern keep the newer.
func (t *Table) WithResets(rs []Reset) (*Table, error) {
	if len(rs) > MaxResets {
		return nil, fmt.Errorf("%w: %d resets given, at most %d are kept", ErrInvalidReset, len(rs), MaxResets)
	}
	for _, r := range rs {
		if err := r.Validate(); err != nil {
			return nil, err
		}
	}
	return t.withResets(slices.Clone(rs))
}

func (t *Table) withResets(rs []Reset) (*Table, error) {
	slices.SortStableFunc(rs, func(a, b Reset) int {
		switch {
		case a.Floor < b.Floor:
			return -1
		case a.Floor > b.Floor:
			return 1
		}
		return 0
	})
	// One reset per pattern: the newest.
	seen := make(map[string]bool, len(rs))
	kept := make([]Reset, 0, len(rs))
	for i := len(rs) - 1; i >= 0; i-- {
		if !seen[rs[i].Pattern] {
			seen[rs[i].Pattern] = true
			kept = append(kept, rs[i])
		}
	}
	slices.Reverse(kept)
	if n := len(kept); n > 0 {
		newest := kept[n-1].Floor
		i := 0
		for i < n && kept[i].Floor <= newest-ResetKeepSlots {
			i++
		}
		kept = kept[max(i, n-MaxResets):]
	}
	u := &Table{exact: t.exactRules(), patterns: t.patternRules(), longest: t.LongestWindow()}
	u.resets = kept
	u.resetPatterns = make([]Pattern, len(kept))
	for i, r := range kept {
		u.resetPatterns[i], _ = ParsePattern(r.Pattern) // validated
	}
	return u, nil
}

// exactRules and patternRules share t's rules with a copy of t: tables are
// immutable, so the maps and slices are never written after NewTable.
func (t *Table) exactRules() map[string]Rule {
	if t == nil || t.exact == nil {
		return map[string]Rule{}
	}
	return t.exact
}

func (t *Table) patternRules() []compiled {
	if t == nil {
		return nil
	}
	return t.patterns
}

// keepResets returns u with t's resets, for a rule change.
func (t *Table) keepResets(u *Table) *Table {
	if t != nil && u != nil {
		u.resets, u.resetPatterns = t.resets, t.resetPatterns
	}
	return u
}

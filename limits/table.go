package limits

import (
	"fmt"
	"slices"
	"time"
)

// MaxRules is the largest number of rules a Table may hold. Lookups of keys
// that match no exact rule walk the patterns, so the bound keeps the slow path
// of creating a key cheap.
const MaxRules = 10000

// Rule binds a pattern to a rate.
type Rule struct {
	// Pattern is an exact key or a pattern with '*' wildcards.
	Pattern string `msgpack:"p" json:"pattern" yaml:"pattern"`
	// Rate is the limit each distinct matching key gets.
	Rate Rate `msgpack:"r" json:"rate" yaml:"rate"`
	// Shadow makes the rule observe without enforcing: the cluster decides
	// and counts every matching key exactly as it would under the rule, but
	// a request the rule would deny is let through, and counted as denied
	// in shadow (design.md §11, "Shadow rules"). The zero value enforces.
	Shadow bool `msgpack:"s,omitempty" json:"shadow,omitempty" yaml:"shadow,omitempty"`
}

// Validate checks the pattern and the rate.
func (r Rule) Validate() error {
	if _, err := ParsePattern(r.Pattern); err != nil {
		return err
	}
	if err := r.Rate.Validate(); err != nil {
		return fmt.Errorf("rule %q: %w", r.Pattern, err)
	}
	return nil
}

// String writes the rule as "pattern rate", with " shadow" after a shadow
// rule: "user:* 10/s shadow".
func (r Rule) String() string {
	if r.Shadow {
		return r.Pattern + " " + r.Rate.String() + " shadow"
	}
	return r.Pattern + " " + r.Rate.String()
}

type compiled struct {
	rule    Rule
	pattern Pattern
}

// Table is an immutable set of rules, and the resets in force (Reset).
// The zero value and nil are empty tables. Tables are safe for concurrent
// use.
type Table struct {
	exact    map[string]Rule
	patterns []compiled // most specific first
	longest  time.Duration
	// resets (reset.go), sorted by floor, and their compiled patterns.
	resets        []Reset
	resetPatterns []Pattern
}

// NewTable validates rules and builds a table. Two rules with the same
// pattern are an error.
func NewTable(rules ...Rule) (*Table, error) {
	if len(rules) > MaxRules {
		return nil, fmt.Errorf("%w: %d rules given, at most %d are allowed", ErrTooManyRules, len(rules), MaxRules)
	}
	t := &Table{exact: make(map[string]Rule)}
	seen := make(map[string]bool, len(rules))
	for _, r := range rules {
		if err := r.Validate(); err != nil {
			return nil, err
		}
		if seen[r.Pattern] {
			return nil, fmt.Errorf("%w: pattern %q appears twice", ErrDuplicateRule, r.Pattern)
		}
		seen[r.Pattern] = true
		t.add(r)
	}
	t.sort()
	return t, nil
}

// add assumes r is valid and new.
func (t *Table) add(r Rule) {
	p, _ := ParsePattern(r.Pattern)
	if p.IsExact() {
		t.exact[r.Pattern] = r
	} else {
		t.patterns = append(t.patterns, compiled{rule: r, pattern: p})
	}
	t.longest = max(t.longest, r.Rate.Window)
}

func (t *Table) sort() {
	slices.SortFunc(t.patterns, func(a, b compiled) int {
		switch {
		case moreSpecific(a.pattern, b.pattern):
			return -1
		case moreSpecific(b.pattern, a.pattern):
			return 1
		}
		return 0
	})
}

// Lookup returns the rule that governs key: the exact rule if there is one,
// else the most specific matching pattern. It reports false when no rule
// matches.
func (t *Table) Lookup(key string) (Rule, bool) {
	if t == nil {
		return Rule{}, false
	}
	if r, ok := t.exact[key]; ok {
		return r, true
	}
	for _, c := range t.patterns {
		if c.pattern.Match(key) {
			return c.rule, true
		}
	}
	return Rule{}, false
}

// Get returns the rule with exactly this pattern.
func (t *Table) Get(pattern string) (Rule, bool) {
	if t == nil {
		return Rule{}, false
	}
	if r, ok := t.exact[pattern]; ok {
		return r, true
	}
	for _, c := range t.patterns {
		if c.rule.Pattern == pattern {
			return c.rule, true
		}
	}
	return Rule{}, false
}

// Len is the number of rules.
func (t *Table) Len() int {
	if t == nil {
		return 0
	}
	return len(t.exact) + len(t.patterns)
}

// Rules returns every rule, sorted by pattern.
func (t *Table) Rules() []Rule {
	if t == nil {
		return nil
	}
	out := make([]Rule, 0, t.Len())
	for _, r := range t.exact {
		out = append(out, r)
	}
	for _, c := range t.patterns {
		out = append(out, c.rule)
	}
	slices.SortFunc(out, func(a, b Rule) int {
		switch {
		case a.Pattern < b.Pattern:
			return -1
		case a.Pattern > b.Pattern:
			return 1
		}
		return 0
	})
	return out
}

// LongestWindow is the longest window of any rule, or zero for an empty
// table. Replicated state older than this can be garbage collected.
func (t *Table) LongestWindow() time.Duration {
	if t == nil {
		return 0
	}
	return t.longest
}

// With returns a copy of t in which r replaces any rule with the same pattern.
func (t *Table) With(r Rule) (*Table, error) {
	if err := r.Validate(); err != nil {
		return nil, err
	}
	rules := t.Rules()
	if i := slices.IndexFunc(rules, func(x Rule) bool { return x.Pattern == r.Pattern }); i >= 0 {
		rules[i] = r
	} else {
		rules = append(rules, r)
	}
	u, err := NewTable(rules...)
	return t.keepResets(u), err
}

// Without returns a copy of t without the rule for pattern. It is an error
// (ErrNoRule) if there is none.
func (t *Table) Without(pattern string) (*Table, error) {
	rules := t.Rules()
	i := slices.IndexFunc(rules, func(x Rule) bool { return x.Pattern == pattern })
	if i < 0 {
		return nil, fmt.Errorf("%w: %q", ErrNoRule, clip(pattern))
	}
	u, err := NewTable(slices.Delete(rules, i, i+1)...)
	return t.keepResets(u), err
}

// Equal reports whether t and u hold the same rules and resets.
func (t *Table) Equal(u *Table) bool {
	return slices.Equal(t.Rules(), u.Rules()) && slices.Equal(t.Resets(), u.Resets())
}

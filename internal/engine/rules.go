// Decision counts by rule, for the node's per-rule metrics: their labels
// are bounded by the limit table, never by keys.

package engine

// RuleCounts are the tokens the keys of one rule admitted and were offered
// on this node, as mirrored at ticks.
type RuleCounts struct {
	Admitted, Offered int64
}

// countRuleLocked adds a mirrored growth to the counts of rule pattern.
func (e *Engine) countRuleLocked(pattern string, admitted, offered int64) {
	if admitted == 0 && offered == 0 {
		return
	}
	if e.byRule == nil {
		e.byRule = make(map[string]*RuleCounts)
	}
	c := e.byRule[pattern]
	if c == nil {
		c = &RuleCounts{}
		e.byRule[pattern] = c
	}
	c.Admitted += admitted
	c.Offered += offered
}

// ruleCountsLocked copies the counts of the rules in the table, and forgets
// those of rules no longer in it.
func (e *Engine) ruleCountsLocked() map[string]RuleCounts {
	t := e.reg.Table()
	out := make(map[string]RuleCounts, len(e.byRule))
	for p, c := range e.byRule {
		if _, ok := t.Get(p); !ok {
			delete(e.byRule, p)
			continue
		}
		out[p] = *c
	}
	return out
}

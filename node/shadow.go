package node

import (
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/quotamesh/quotamesh"
	"github.com/quotamesh/quotamesh/internal/wire"
	"github.com/quotamesh/quotamesh/limits"
)

// Shadow rules (limits.Rule.Shadow, design.md §11 "Shadow rules"): the
// engine decides and counts a shadow rule's keys exactly as it would
// enforce them (windows, shares, deltas, leases all unchanged), and the node
// turns each denial into an admission on the way out, counting what was
// let through in quotamesh_shadow_denied_total{rule}. The request path pays
// for it only on a denial: one lock-free registry lookup for the key's rule.

// metricShadowDenied counts, per shadow rule, the tokens it would have
// denied.
const metricShadowDenied = "quotamesh_shadow_denied_total"

// shadowRules counts what each shadow rule let through. The map holds only
// the rules that are shadow rules in the current table; it is replaced
// (never changed) on every table change, so the request path reads it
// with one atomic load.
type shadowRules struct {
	vec     *prometheus.CounterVec
	reg     prometheus.Registerer
	mu      sync.Mutex // serialises setTable
	current atomic.Pointer[map[string]*shadowCount]
}

// shadowCount is one shadow rule's tally since it became a shadow rule on
// this node.
type shadowCount struct {
	rule   limits.Rule
	tokens atomic.Int64
	c      prometheus.Counter
}

func newShadowRules(reg prometheus.Registerer) (*shadowRules, error) {
	s := &shadowRules{
		vec: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: metricShadowDenied,
			Help: "Tokens a shadow rule would have denied and let through, by the rule's pattern (one series per shadow rule).",
		}, []string{"rule"}),
		reg: reg,
	}
	empty := map[string]*shadowCount{}
	s.current.Store(&empty)
	if err := reg.Register(s.vec); err != nil {
		return nil, err
	}
	return s, nil
}

func (s *shadowRules) unregister() { s.reg.Unregister(s.vec) }

// setTable follows a new limit table: counts of rules that stay shadow
// rules carry over, rules that are no longer shadow rules lose their
// series.
func (s *shadowRules) setTable(t *limits.Table) {
	s.mu.Lock()
	defer s.mu.Unlock()
	old := *s.current.Load()
	next := make(map[string]*shadowCount)
	for _, r := range t.Rules() {
		if !r.Shadow {
			continue
		}
		if c, ok := old[r.Pattern]; ok {
			c2 := &shadowCount{rule: r, c: c.c}
			c2.tokens.Store(c.tokens.Load())
			next[r.Pattern] = c2
			continue
		}
		next[r.Pattern] = &shadowCount{rule: r, c: s.vec.WithLabelValues(r.Pattern)}
	}
	for p := range old {
		if _, ok := next[p]; !ok {
			s.vec.DeleteLabelValues(p)
		}
	}
	s.current.Store(&next)
}

// count records k tokens rule let through.
func (s *shadowRules) count(rule limits.Rule, k int64) {
	if c, ok := (*s.current.Load())[rule.Pattern]; ok {
		c.tokens.Add(k)
		c.c.Add(float64(k))
	}
}

// ShadowStatus is one shadow rule as this node has applied it.
type ShadowStatus struct {
	Pattern string `json:"pattern"`
	Rate    string `json:"rate"`
	// WouldDeny is how many tokens the rule would have denied on this node
	// since it became a shadow rule here (or the node started), and let
	// through.
	WouldDeny int64 `json:"would_deny"`
}

// status lists the shadow rules, sorted by pattern.
func (s *shadowRules) status() []ShadowStatus {
	cur := *s.current.Load()
	out := make([]ShadowStatus, 0, len(cur))
	for _, c := range cur {
		out = append(out, ShadowStatus{Pattern: c.rule.Pattern, Rate: c.rule.Rate.String(), WouldDeny: c.tokens.Load()})
	}
	slices.SortFunc(out, func(a, b ShadowStatus) int { return strings.Compare(a.Pattern, b.Pattern) })
	return out
}

// ShadowStatus returns the shadow rules this node applies, with what each
// would have denied here.
func (n *Node) ShadowStatus() []ShadowStatus { return n.shadow.status() }

// shadowRule returns the rule of a key that has a window if it is a shadow
// rule.
func (n *Node) shadowRule(key string) (limits.Rule, bool) {
	_, rule, ok := n.eng.Registry().Lookup(key)
	return rule, ok && rule.Shadow
}

// unshadow is AllowN's answer after the engine denied k tokens for key
// (d, err): an admission if the key's rule is a shadow rule, else d and
// err as they were. A shadow rule never denies, not even a request above
// its whole limit.
//
//go:noinline
func (n *Node) unshadow(key string, k int64, d quotamesh.Decision, err error) (quotamesh.Decision, error) {
	rule, ok := n.shadowRule(key)
	if !ok {
		return d, err
	}
	n.shadow.count(rule, k)
	return quotamesh.Decision{Allowed: true, Limit: rule.Rate}, nil
}

// admitShadow is Admit's answer after the engine denied one token.
//
//go:noinline
func (n *Node) admitShadow(key string) bool {
	rule, ok := n.shadowRule(key)
	if ok {
		n.shadow.count(rule, 1)
	}
	return ok
}

// shadowReply adjusts the reply to a client's decision or lease request
// for a key under a shadow rule; err is the engine's error for it, and
// the result is the error the reply reports. A denied decision becomes an
// admission. A lease that the key's room cut short is topped up to what
// was asked (within MaxLeaseFraction), so that the SDK, which decides from
// it, does not deny either: only the tokens the engine reserved are
// counted (settling more is capped at the reservation), and the top-up is
// counted as what the rule would have denied. That is an upper bound: the
// SDK may not use all of it.
func (n *Node) shadowReply(r *wire.ClientRequest, rep *wire.ClientReply, err error) error {
	if rep.Unlimited || (rep.Allowed && (r.Op != wire.OpLease || r.Want == 0)) {
		return err
	}
	rule, ok := n.shadowRule(r.Key)
	if !ok {
		return err
	}
	var denied int64
	if r.N > 0 && (!rep.Allowed || err != nil) {
		denied = r.N
		rep.Allowed, rep.RetryAfter, rep.Limit, err = true, 0, rule.Rate, nil
	}
	if r.Op == wire.OpLease && r.Want > 0 {
		want := min(r.Want, max(1, int64(n.cfg.MaxLeaseFraction*float64(rule.Rate.Count))))
		if rep.Granted < want {
			denied += want - rep.Granted
			rep.Granted, rep.TTL, rep.RetryAfter = want, n.cfg.LeaseTTL, 0
			rep.Remaining = max(rep.Remaining, 1) // room "remains": ask again rather than deny
		}
	}
	if denied > 0 {
		n.shadow.count(rule, denied)
	}
	return err
}

// Status and counters, for `quotamesh status` and the node's metrics.

package engine

import (
	"cmp"
	"slices"
	"time"

	"github.com/quotamesh/quotamesh/crdt"
	"github.com/quotamesh/quotamesh/limits"
)

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
	// Rules counts Admitted and Offered by the rule of the key, for the
	// rules in the table (rules.go).
	Rules map[string]RuleCounts
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
	c.Rules = e.ruleCountsLocked()
	return c
}

// Fenced reports whether this node currently admits nothing new because it
// has not heard a majority for FenceAfter (conservative policy).
func (e *Engine) Fenced() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.fenced
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
	type ranked struct {
		ks  *keyState
		adm int64
	}
	var top []ranked
	for _, ks := range e.keys {
		if ks.w == nil {
			continue
		}
		adm, _ := ks.w.Counts(now)
		top = append(top, ranked{ks, adm})
	}
	slices.SortFunc(top, func(a, b ranked) int {
		if c := cmp.Compare(b.adm, a.adm); c != 0 {
			return c
		}
		return cmp.Compare(a.ks.key, b.ks.key)
	})
	for _, r := range top[:min(len(top), max(topKeys, 0))] {
		ks := r.ks
		sh, others, reserved := e.statusShareLocked(now, ks)
		s.TopKeys = append(s.TopKeys, KeyStatus{Key: ks.key, Limit: ks.w.Rate().String(), Admitted: r.adm, Quota: ks.w.Quota(),
			Share: sh, Others: others, Reserved: reserved,
			PerNode: e.perNodeLocked(now, ks.key)})
	}
	return s
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
	e.store.ViewsFrom(key, slots, e.cfg.DemandSlots, e.floorLocked(e.keys[key], now), now, func(info crdt.OriginInfo, v crdt.View) {
		if v.Admitted > 0 {
			out[info.ID.Node] += v.Admitted
		}
	})
	return out
}

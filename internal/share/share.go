package share

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
)

// Policy says what a node admits while it cannot hear some members.
type Policy uint8

const (
	// Conservative keeps an unreachable member's last share reserved until
	// it is reclaimed, so the cluster never admits more than the limit (up to
	// share estimates). It is the default.
	Conservative Policy = iota
	// Available ignores unreachable members: each side of a partition admits
	// up to the whole limit (k sides: up to k times the limit).
	Available
)

// ErrInvalidPolicy reports a policy name ParsePolicy does not know.
var ErrInvalidPolicy = errors.New("quotamesh/share: invalid policy")

// ParsePolicy reads "conservative" or "available".
func ParsePolicy(s string) (Policy, error) {
	switch s {
	case "conservative":
		return Conservative, nil
	case "available":
		return Available, nil
	}
	return 0, fmt.Errorf("%w %q: use conservative or available", ErrInvalidPolicy, s)
}

func (p Policy) String() string {
	switch p {
	case Conservative:
		return "conservative"
	case Available:
		return "available"
	}
	return fmt.Sprintf("Policy(%d)", uint8(p))
}

// DefaultPrior is β: the demand every reachable member is credited with on
// top of its measured demand, in requests per demand period.
const DefaultPrior = 1.0

// Origin is what the caller knows of one other origin (a process incarnation
// of another node) for one key.
type Origin struct {
	// Node is the node ID the origin belongs to.
	Node string
	// Admitted is the origin's window count as of its view (design.md §5).
	Admitted int64
	// Demand is the origin's offered count over the demand period.
	Demand int64
	// Quota is the quota the origin last announced for this key (zero if
	// none is current): the cap it may fill without telling anyone. A
	// reachable member is counted as holding all of it, so room handed to
	// one node is never handed to another before it is given back.
	Quota int64
	// Announced reports whether the origin has announced a quota register
	// for the key at all. An origin that uses a key alone announces none;
	// until its first register arrives, a member seen using the key is
	// counted as holding its demand's part of the limit (below).
	Announced bool
	// Member is true for the newest incarnation of a current member. Older
	// incarnations and non-members only count what they admitted.
	Member bool
	// Reachable is true when the member reported within DeadAfter.
	Reachable bool
	// Fresh is true when the member's view is current (its last report is
	// within the grace, so its view is not sliding yet). Only fresh views
	// update the member's remembered share: a member that has gone silent
	// keeps the share it had while it was heard, not the one its fading
	// demand would give it.
	Fresh bool
	// Reclaimed is true when the caller has reclaimed the reservation of an
	// unreachable member (it is in a majority and the member has been
	// unreachable for ReclaimAfter).
	Reclaimed bool
}

// Input is everything Compute needs for one key.
type Input struct {
	// Limit is the key's count per window.
	Limit int64
	// Admitted is this node's own window count; Demand its offered count over
	// the demand period.
	Admitted, Demand int64
	// Origins are the other origins that have counts for this key, plus one
	// entry (with zero counts) for every member that has none.
	Origins []Origin
	// Members is the number of current members, this node included. It sets
	// the default reservation 1/Members of a member never heard.
	Members int
	// Policy is the partition policy.
	Policy Policy
	// Fenced is true when this node has been in a strict minority for
	// FenceAfter (conservative policy): its quota is zero, so it admits
	// nothing, not even into room its own expired slots free.
	Fenced bool
	// Prior is β; zero means DefaultPrior.
	Prior float64
	// Uniform is a number in [0, 1) used to round the quota stochastically;
	// the caller draws it from a seeded source.
	Uniform float64
}

// Output is the decision for one key.
type Output struct {
	// Quota caps this node's own window count.
	Quota int64
	// Share is this node's fraction of the headroom (the reachable members'
	// shares sum to one).
	Share float64
	// Headroom is the limit minus everything counted (may be negative).
	Headroom int64
	// Others is what every other origin is counted as holding, reservations
	// included.
	Others int64
	// Reserved is the part of Others that is held beyond what the origins
	// were seen to admit: announced quotas not yet filled, and the
	// reservations of unreachable members.
	Reserved int64
}

// State is what Compute remembers about one key between calls: the share it
// last computed for each member while that member was reachable (φ in
// design.md §7). The zero value is ready to use. A State is not safe for
// concurrent use.
//
// This node's own share is kept in a field and the other members' in a
// small slice sorted by node, allocated only once another member has been
// seen: a key decided by this node alone, the common case, costs no
// allocation (a map per key cost about 250 bytes at three members).
type State struct {
	others  []frozen
	selfPhi float64 // this node's share
	hasSelf bool    // Compute has run
}

// frozen is one other member's remembered share.
type frozen struct {
	node string
	phi  float64
}

// Own returns the share last computed for this node, and whether Compute
// has run (the fault suite checks that the sides of a partition agree).
func (s *State) Own() (float64, bool) { return s.selfPhi, s.hasSelf }

// Frozen returns the share last computed for node, another member, while it
// was reachable, and whether there is one.
func (s *State) Frozen(node string) (float64, bool) {
	if i, ok := s.find(node); ok {
		return s.others[i].phi, true
	}
	return 0, false
}

// Forget drops what is remembered of node (it left the cluster).
func (s *State) Forget(node string) {
	if i, ok := s.find(node); ok {
		s.others = append(s.others[:i], s.others[i+1:]...)
		if len(s.others) == 0 {
			s.others = nil
		}
	}
}

// Clone returns a copy of s that Compute may update without changing s.
func (s *State) Clone() State {
	c := *s
	c.others = slices.Clone(s.others)
	return c
}

func (s *State) find(node string) (int, bool) {
	return slices.BinarySearchFunc(s.others, node, func(f frozen, n string) int { return strings.Compare(f.node, n) })
}

// Compute returns this node's quota for one key and updates st. self is this
// node's ID; its own share is remembered too (State.Own).
func Compute(self string, in Input, st *State) Output {
	prior := in.Prior
	if prior <= 0 {
		prior = DefaultPrior
	}
	members := max(in.Members, 1)
	var (
		others      int64
		reserved    int64
		frozenAway  float64 // Σ φ_u over unreachable, unreclaimed members
		away        int64   // what origins out of reach hold
		demandTotal = float64(in.Demand) + prior
	)
	unannounced := false
	for _, o := range in.Origins {
		switch {
		case o.Member && o.Reachable:
			hold := max(o.Admitted, o.Quota)
			reserved += hold - o.Admitted
			others += hold
			if o.active() {
				demandTotal += float64(o.Demand) + prior
				unannounced = unannounced || !o.Announced
			}
		case !o.Member, in.Policy == Available, o.Reclaimed:
			// A retired incarnation cannot admit any more, an ignored or
			// reclaimed member no longer holds room: only what they
			// admitted still counts, until it expires.
			others += o.Admitted
		default: // an unreachable member under the conservative policy
			phi, ok := st.Frozen(o.Node)
			if !ok {
				phi = 1 / float64(members)
			}
			hold := max(o.Admitted, o.Quota, int64(math.Ceil(phi*float64(in.Limit))))
			reserved += hold - o.Admitted
			others += hold
			away += hold
			frozenAway += phi
		}
	}
	if unannounced {
		// A member using the key without having said what it holds may be
		// deciding it alone, with the whole limit as its quota (it
		// announces only once it sees another member use the key): until
		// its register arrives, a sync interval or two, count it as holding
		// at least its demand's part of the limit.
		for _, o := range in.Origins {
			if o.Member && o.Reachable && o.active() && !o.Announced {
				part := int64(math.Ceil((float64(o.Demand) + prior) / demandTotal * float64(in.Limit)))
				if hold := max(o.Admitted, o.Quota); part > hold {
					reserved += part - hold
					others += part - hold
				}
			}
		}
	}
	// The headroom already excludes the reservations, so the reachable
	// members split all of it by demand. What is remembered (φ) is a share
	// of the whole limit: the reachable part, 1 − Σφ_u, split the same way.
	reachableShare := max(0, 1-frozenAway)
	out := Output{
		Share:    (float64(in.Demand) + prior) / demandTotal,
		Headroom: in.Limit - in.Admitted - others,
		Others:   others,
		Reserved: reserved,
	}
	st.selfPhi, st.hasSelf = reachableShare*(float64(in.Demand)+prior)/demandTotal, true
	for _, o := range in.Origins {
		if o.Member && o.Reachable && o.Fresh {
			phi := 0.0
			if o.active() {
				phi = reachableShare * (float64(o.Demand) + prior) / demandTotal
			}
			st.remember(o.Node, phi, members)
		}
	}
	if in.Fenced {
		return out // Quota 0
	}
	out.Quota = in.Admitted
	if out.Headroom > 0 {
		out.Quota += roundStochastic(out.Share*float64(out.Headroom), in.Uniform)
	}
	// The headroom is shared by demand, but a full window has none: each
	// node would then refill only what its own slots free, and whatever
	// split the nodes happened to reach would last (SDK leases, granted in
	// lumps, drifted to 63 / 12 / 6 % on uniform demand and left 18 % of
	// the limit unused, held by quotas the lumps had left). A node above
	// its demand's part of what the reachable members share takes nothing
	// new until it is back under it, so the room its slots free goes to
	// the others (design.md §7, "How the limit is divided among nodes").
	if target := int64(math.Ceil(1.25 * out.Share * float64(max(in.Limit-away, 0)))); out.Quota > target {
		out.Quota = target
	}
	return out
}

// active reports whether the origin shows any use of the key: counts in
// the window, demand, or a quota it holds. Only active members take part
// in the split (each with the prior β): a member that has never seen the
// key holds nothing and asks for nothing, and crediting it β would keep a
// node alone with a key's demand from its whole limit (with one active
// node of three and a few requests per demand period, the share cap held
// it to a third to a half of the limit). A member whose demand appears
// computes its own share from its own demand, and the others see it
// within a sync interval.
func (o Origin) active() bool { return o.Admitted > 0 || o.Demand > 0 || o.Quota > 0 }

// remember sets node's share; members is the cluster's size, which the
// slice is first made for.
func (s *State) remember(node string, phi float64, members int) {
	i, ok := s.find(node)
	if ok {
		s.others[i].phi = phi
		return
	}
	if s.others == nil {
		s.others = make([]frozen, 0, max(members-1, 1))
	}
	s.others = slices.Insert(s.others, i, frozen{node: node, phi: phi})
}

// roundStochastic rounds x ≥ 0 down or up so that the expected result is x:
// up with probability equal to its fractional part.
func roundStochastic(x, u float64) int64 {
	whole := math.Floor(x)
	if u < x-whole {
		whole++
	}
	return int64(whole)
}

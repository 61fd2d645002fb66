// Membership (design.md §7): who is reachable, whether this node is fenced,
// whose reservation it may reclaim, and which members it misses and relays
// to the peers that miss them.

package engine

import (
	"math"
	"slices"

	"github.com/quotamesh/quotamesh/crdt"
	"github.com/quotamesh/quotamesh/internal/share"
)

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
	missed      bool // on Engine.missList: this node misses it
	missesMe    bool // misses holds this node
	inDirect    bool // on Engine.direct
	onMissedBy  bool // on Engine.missedBy
}

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
	e.reachGen++
	next := make(map[string]*member, len(ids))
	for _, id := range ids {
		if id == e.cfg.Node {
			continue
		}
		if m, ok := e.members[id]; ok {
			next[id] = m
			continue
		}
		if m, ok := e.departed[id]; ok {
			// Back before its reservation was given up: it keeps it.
			delete(e.departed, id)
			next[id] = m
			continue
		}
		next[id] = &member{id: id, heard: now, direct: now}
	}
	for id, m := range e.members {
		if _, ok := next[id]; ok {
			continue
		}
		if m.incarnation == 0 {
			e.forgetLocked(id) // never heard: it holds nothing
			continue
		}
		// A member the configuration removed may not know it yet (a node
		// cut off from the majority that removed it): it admits under its
		// share until it fences itself, FenceAfter after it last heard a
		// majority. So its reservation is held, as an unreachable member's,
		// until ReclaimAfter after it was last heard here (design.md §7,
		// "Membership changes").
		m.reachable = false
		e.departed[id] = m
	}
	e.departedIDs = e.departedIDs[:0]
	for id := range e.departed {
		e.departedIDs = append(e.departedIDs, id)
	}
	slices.Sort(e.departedIDs)
	e.members = next
	e.nMembers = len(next) + 1
	e.memberIDs = e.memberIDs[:0]
	for id := range next {
		e.memberIDs = append(e.memberIDs, id)
	}
	slices.Sort(e.memberIDs)
	e.memberList = e.memberList[:0]
	for _, id := range e.memberIDs {
		e.memberList = append(e.memberList, next[id])
	}
	direct := e.direct[:0]
	for _, m := range e.direct {
		if next[m.id] == m {
			direct = append(direct, m)
		} else {
			m.inDirect = false
		}
	}
	clear(e.direct[len(direct):])
	e.direct = direct
	// New members may be in the store already (relayed before they were
	// members): the next evaluation reads every origin once.
	e.readOrigins, e.evalNow, e.missNow = true, true, true
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

// evaluateMembersLocked updates reachability, majority, fencing and
// reclaiming at now, and reports whether any of them changed.
//
// Its cost follows what changed, not the members (design.md §7, "Sync
// traffic"): the heard times come from the origins the store merged since
// the last tick (crdt.Store.DrainHeard), and the walk over every member
// runs only when one could change: a member heard that was not reachable,
// a new incarnation, a new membership, or the first deadline (a reachable
// member's DeadAfter, an unreachable one's ReclaimAfter) passed. Heard
// times only grow, so a deadline computed at the last walk is never later
// than the real one. Quorum and fencing, which move with time alone, are
// checked on every tick from the count of reachable members.
func (e *Engine) evaluateMembersLocked(now int64) bool {
	if !e.readOrigins {
		e.store.DrainHeard(func(o crdt.OriginInfo) {
			switch m := e.members[o.ID.Node]; {
			case m == nil:
			case m.incarnation == 0:
				// Which incarnation is the member's: the most recently
				// heard of all its origins, read below.
				e.readOrigins = true
			default:
				e.heardLocked(m, o)
			}
		})
	}
	if e.readOrigins {
		e.readOrigins = false
		e.store.DrainHeard(func(crdt.OriginInfo) {})
		for id, o := range e.currentOriginsLocked() {
			e.heardLocked(e.members[id], o)
		}
	}
	if e.evalNow || now >= e.evalAt {
		return e.walkMembersLocked(now)
	}
	return e.quorumLocked(now, e.nReachable+1)
}

// heardLocked folds what the store knows of one of m's origins into m: its
// newest heard time, and its incarnation if none is known yet. Origins of
// other incarnations are not m.
func (e *Engine) heardLocked(m *member, o crdt.OriginInfo) {
	if m.incarnation != 0 && o.ID.Incarnation != m.incarnation {
		return
	}
	if m.incarnation == 0 {
		m.incarnation = o.ID.Incarnation
		e.evalNow = true
	}
	e.noteHeardLocked(m, o.HeardAt)
}

// noteHeardLocked raises m's heard time to at, scheduling what that can
// change: a member not reachable may become so, a missed one no longer.
func (e *Engine) noteHeardLocked(m *member, at int64) {
	if at <= m.heard {
		return
	}
	m.heard = at
	if !m.reachable {
		e.evalNow = true
	}
	if m.missed {
		e.missNow = true
	}
}

// walkMembersLocked is evaluateMembersLocked's walk over every member; it
// sets the next deadline.
func (e *Engine) walkMembersLocked(now int64) bool {
	e.evalNow = false
	next := int64(math.MaxInt64)
	conservative := e.cfg.Policy == share.Conservative
	changed := false
	reachable := 1 // this node
	for _, m := range e.memberList {
		r := now-m.heard <= int64(e.cfg.DeadAfter) && m.incarnation != 0
		if r != m.reachable {
			m.reachable, changed = r, true
			e.reachGen++
		}
		if r {
			reachable++
			next = min(next, m.heard+int64(e.cfg.DeadAfter)+1)
		}
	}
	e.nReachable = reachable - 1
	// Only a strict majority may reclaim an unreachable member's share, so
	// only a strict minority must fence itself: in an even split (2 of 4)
	// neither side reclaims and both keep their frozen shares.
	majority := 2*reachable > e.nMembers
	if e.quorumLocked(now, reachable) {
		changed = true
	}
	for _, m := range e.memberList {
		rc := conservative && majority && !m.reachable && now-m.heard > int64(e.cfg.ReclaimAfter)
		if rc != m.reclaimed {
			m.reclaimed, changed = rc, true
		}
		if conservative && !m.reachable && !rc {
			next = min(next, m.heard+int64(e.cfg.ReclaimAfter)+1)
		}
	}
	// A departed member's reservation is given up once it cannot be
	// admitting any more: ReclaimAfter after it was last heard (it fenced
	// itself FenceAfter after it last heard a majority, which was no later),
	// or at once under the available policy, which reserves nothing.
	kept := e.departedIDs[:0]
	for _, id := range e.departedIDs {
		if m := e.departed[id]; conservative && now-m.heard <= int64(e.cfg.ReclaimAfter) {
			kept = append(kept, id)
			next = min(next, m.heard+int64(e.cfg.ReclaimAfter)+1)
			continue
		}
		delete(e.departed, id)
		e.forgetLocked(id)
		changed = true
	}
	e.departedIDs = kept
	e.evalAt = next
	return changed
}

// quorumLocked records at now whether this node, hearing reachable members
// (itself included), is outside a strict minority, and fences it when it
// has been in one for FenceAfter; it reports whether fencing changed.
func (e *Engine) quorumLocked(now int64, reachable int) bool {
	if 2*reachable >= e.nMembers {
		e.lastQuorum = now
	}
	fenced := e.cfg.Policy == share.Conservative && now-e.lastQuorum > int64(e.cfg.FenceAfter)
	if fenced != e.fenced {
		e.fenced = fenced
		return true
	}
	return false
}

// forgetLocked forgets what the keys remember of node id (its shares).
func (e *Engine) forgetLocked(id string) {
	for _, ks := range e.keys {
		if ks.sh != nil {
			ks.sh.share.Forget(id)
		}
	}
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

// missAfter is how long a member may send no frame of its own before this
// node says it misses it (wire.Sync.Misses) and its peers relay it: half of
// DeadAfter, so that relayed state arrives before the member would count
// as unreachable.
func (e *Engine) missAfter() int64 { return int64(e.cfg.DeadAfter) / 2 }

// missesLocked lists the members this node has had no frame from for
// missAfter, in ID order; nil when it hears them all. Over the sync
// overlay, where most members are heard through others, a member is
// missed when it was not heard at all, directly or relayed.
//
// The list is kept from tick to tick and made again only when it can have
// changed: a missed member heard, the overlay switched on or off, a new
// membership, or the first member's missAfter passed. The slice returned
// is never modified (frames hold it).
func (e *Engine) missesLocked(now int64) []string {
	relayed := e.ov.on
	if !e.missNow && relayed == e.missRelayed && now < e.missAt {
		return e.missList
	}
	var out []string
	next := int64(math.MaxInt64)
	for _, m := range e.memberList {
		last := m.direct
		if relayed {
			last = max(m.direct, m.heard)
		}
		m.missed = now-last > e.missAfter()
		if m.missed {
			out = append(out, m.id)
		} else {
			next = min(next, last+e.missAfter()+1)
		}
	}
	e.missList, e.missAt, e.missNow, e.missRelayed = out, next, false, relayed
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

// Sync streams with peers, and the frames that arrive on them.

package engine

import (
	"fmt"
	"slices"
	"time"

	"github.com/quotamesh/quotamesh/crdt"
	"github.com/quotamesh/quotamesh/internal/wire"
)

// peer is the state of the sync stream with one node.
type peer struct {
	outSeq uint64 // last frame sequence sent on the current stream
	inSeq  uint64 // last frame sequence accepted on the current stream
	// lastOut is the local time of the last tick that sent it a frame;
	// sentAny says there was one.
	lastOut int64
	sentAny bool
}

// PeerUp tells the engine a new sync stream with node is up: both sides
// start over (full state, sequence numbers from 1).
func (e *Engine) PeerUp(node string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.peers[node] = &peer{}
	e.store.ResetPeer(node)
}

// PeerDown tells the engine the sync stream with node is gone.
func (e *Engine) PeerDown(node string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	delete(e.peers, node)
}

// Hello handles the first frame of a peer's sync stream, at local time now.
// A new incarnation of the peer restarts the protocol with it.
func (e *Engine) Hello(now int64, from string, h *wire.Hello) error {
	e.seeTime(now)
	e.mu.Lock()
	defer e.mu.Unlock()
	switch {
	case h.ClusterID != e.cfg.ClusterID:
		e.counters.FramesRejected["cluster"]++
		return fmt.Errorf("%w: %q says cluster %q, this is %q", ErrWrongCluster, from, h.ClusterID, e.cfg.ClusterID)
	case h.Node != from:
		e.counters.FramesRejected["sender"]++
		return fmt.Errorf("%w: hello on %q's stream says node %q", ErrWrongSender, from, h.Node)
	}
	m, ok := e.members[from]
	if !ok {
		e.counters.FramesRejected["member"]++
		return fmt.Errorf("%w: %q", ErrNotMember, from)
	}
	if m.incarnation != h.Incarnation {
		m.incarnation = h.Incarnation
		e.store.ResetPeer(from)
		// What the store may have heard of the new incarnation already
		// (relayed) counts from now on; the membership is evaluated again.
		if o, ok := e.store.Origin(crdt.OriginID{Node: from, Incarnation: h.Incarnation}); ok {
			e.noteHeardLocked(m, o.HeardAt)
		}
		e.evalNow = true
	}
	if p := e.peers[from]; p != nil {
		p.inSeq = 0
	}
	// A hello does not make the member reachable: it carries no counts and
	// no quota. Until the member's first sync frame is merged, its view here
	// may have slid empty and its quota register expired (after a partition
	// or a pause), and a member taken for reachable would be counted as
	// holding nothing: the first version handed a rejoining node almost the
	// whole limit on its peers' hellos, and gave its peers its reservation
	// back before they knew its quota (design.md §7, rejoining).
	return nil
}

// Receive merges a sync frame from node at local time now. A frame from a
// non-member, a replay, or a delta that fails validation is rejected with a
// reason and changes nothing.
func (e *Engine) Receive(now int64, from string, s *wire.Sync) error {
	e.seeTime(now)
	e.mu.Lock()
	defer e.mu.Unlock()
	m, ok := e.members[from]
	if !ok {
		e.counters.FramesRejected["member"]++
		return fmt.Errorf("%w: %q", ErrNotMember, from)
	}
	if s.Delta.From.Node != from {
		e.counters.FramesRejected["sender"]++
		return fmt.Errorf("%w: frame on %q's stream carries a delta from %q", ErrWrongSender, from, s.Delta.From.Node)
	}
	if !e.live(now) {
		e.noteStallLocked(now)
	}
	if ago, stale := e.sentBeforeWakeLocked(m, s); stale {
		e.counters.FramesRejected["stale"]++
		return fmt.Errorf("%w: %q sent frame %d %v before this node resumed", ErrStaleFrame, from, s.Seq, time.Duration(ago))
	}
	p := e.peers[from]
	if p == nil {
		p = &peer{}
		e.peers[from] = p
	}
	if s.Seq <= p.inSeq {
		e.counters.FramesRejected["replay"]++
		return fmt.Errorf("%w: %q sent frame %d after %d", ErrReplay, from, s.Seq, p.inSeq)
	}
	if _, err := e.store.Merge(s.Delta, now); err != nil {
		e.counters.FramesRejected["invalid"]++
		return fmt.Errorf("quotamesh/engine: delta from %q: %w", from, err)
	}
	p.inSeq = s.Seq
	e.counters.Merged++
	e.store.Ack(from, s.Ack)
	if inc := s.Delta.From.Incarnation; inc != m.incarnation {
		// A delta from an incarnation we had no hello from: the peer
		// restarted and its stream is new; restart the protocol.
		m.incarnation = inc
		e.store.ResetPeer(from)
		e.evalNow = true
	}
	e.noteHeardLocked(m, now)
	if now > m.direct {
		m.direct = now
		if m.missed {
			e.missNow = true
		}
	}
	if !m.inDirect {
		m.inDirect = true
		e.direct = append(e.direct, m)
	}
	m.misses = append(m.misses[:0], s.Misses...)
	m.missesMe = slices.Contains(m.misses, e.cfg.Node)
	if m.missesMe && !m.onMissedBy {
		m.onMissedBy = true
		e.missedBy = append(e.missedBy, m)
	}
	if st := s.Delta.Origins; len(st) > 0 {
		for i := range st {
			if st[i].ID == s.Delta.From {
				m.offsets.add(st[i].AsOf-now, now)
				break
			}
		}
	}
	m.echo = s.Offset
	for i := range s.Delta.Entries {
		if ks, ok := e.keys[s.Delta.Entries[i].Key]; ok {
			e.markDirtyLocked(ks)
		}
	}
	for i := range s.Delta.Quotas {
		if ks, ok := e.keys[s.Delta.Quotas[i].Key]; ok {
			e.markDirtyLocked(ks)
		}
	}
	return nil
}

// noteStallLocked records, once per stall, that the engine found itself not
// live at now: it did not tick for QuotaValidity (a paused process, a
// stalled loop), and has just resumed.
func (e *Engine) noteStallLocked(now int64) {
	if b := e.beat.Load(); b != e.stallBeat {
		e.stallBeat, e.wokeAt = b, now
	}
}

// sentBeforeWakeLocked reports whether frame s of member m was sent more
// than staleSlack before this node noticed its last stall, and how long
// before: a frame that waited in the socket while the process was stopped.
// Its counts and quotas are as old as the stall, and merging it would make
// its sender reachable as if heard now: a resumed node took its peers for
// reachable, holding nothing (their views slid empty, their registers as
// they were when the stall began), stayed unfenced, and admitted up to
// half the limit on top of what its peers, which had reclaimed its share,
// admitted; the frames' clock samples also moved its clock by seconds
// (design.md §7, "Resuming"). When the frame was sent comes from the
// sender's own asOf less the offset filter's estimate (its clock's offset
// less the least delay), as filtered before the stall; without an
// estimate nothing is stale.
func (e *Engine) sentBeforeWakeLocked(m *member, s *wire.Sync) (int64, bool) {
	if e.wokeAt == 0 {
		return 0, false
	}
	est, ok := m.offsets.estimateAsOfLast()
	if !ok {
		return 0, false
	}
	for i := range s.Delta.Origins {
		if st := &s.Delta.Origins[i]; st.ID == s.Delta.From {
			ago := e.wokeAt - (st.AsOf - est)
			return ago, ago > e.staleSlack()
		}
	}
	return 0, false
}

// staleSlack is how long before a resume a frame may have been sent and
// still be merged: half of DeadAfter (missAfter). Frames that recent carry
// state younger than any reclaim, which waits ReclaimAfter.
func (e *Engine) staleSlack() int64 { return e.missAfter() }

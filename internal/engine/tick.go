// A tick (see the package comment): mirror own counts, evaluate members,
// recompute quotas, and return the frames to send in a Ready; Advance
// records what was sent.

package engine

import (
	"slices"

	"github.com/quotamesh/quotamesh/crdt"
	"github.com/quotamesh/quotamesh/internal/wire"
)

// Ready is what one tick asks the caller to send: for every peer with a
// sync stream, in member ID order, the frames of this tick. Tick returns it
// and does no I/O; the caller encodes and sends the frames outside the
// engine's lock, records in each Outbox how many went out, and hands the
// Ready back to Advance before the next Tick (see the package comment,
// "Ready and Advance").
type Ready struct {
	Peers []Outbox
	// Stats says what the tick did; Advance completes it with the frames
	// that went out.
	Stats TickStats

	tick uint64 // the Tick that made it, checked by Advance
	at   int64  // its local time
}

// Outbox is one peer's frames of a tick.
type Outbox struct {
	Node string
	// Frames are to be sent in order, each with its Seq assigned: the parts
	// of the peer's delta, then the Relays last ones, which relay members
	// the peer misses (design.md §7, bridges). Neither the engine nor the
	// store modifies them once returned: they may be encoded outside the
	// engine's lock and kept after Advance.
	Frames []*wire.Sync
	Relays int
	// Sent is for the caller to set: how many of Frames, from the first,
	// were handed to the transport before the first failure (a busy or
	// closed stream). The rest count as not sent: nothing is lost, the
	// next tick covers it.
	Sent int

	stream *peer // the stream the Seqs were numbered on
	relay  bool  // the store was asked for a relay (RelaySent is due if every frame went out)
}

// Send hands each peer's frames to send, in order, stopping at a peer's
// first error, and records in Sent how many went out. It does not touch
// the engine: call it outside any engine method, then Advance.
func (rd *Ready) Send(send func(node string, s *wire.Sync) error) {
	for i := range rd.Peers {
		ob := &rd.Peers[i]
		ob.Sent = 0
		for _, f := range ob.Frames {
			if send(ob.Node, f) != nil {
				break
			}
			ob.Sent++
		}
	}
}

// Tick runs one sync interval at local time now (see the package comment)
// and returns every peer's frames. It sends nothing: the caller sends the
// frames and reports with Advance what went out, before the next Tick.
func (e *Engine) Tick(now int64) Ready {
	e.seeTime(now)
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.unadvanced != 0 {
		panic("quotamesh/engine: Tick before Advance of the previous tick's Ready")
	}
	e.ticks++
	stalled := !e.live(now)
	if stalled {
		// Back from a pause or a stall: every quota is as old as that;
		// recompute them all before anything is admitted under them, and
		// only then say the quotas are live again (requests are decided
		// without the engine's lock, so a beat stored first would let them
		// admit under the old quotas while this tick recomputes them).
		e.noteStallLocked(now)
		e.markAllDirtyLocked()
	} else {
		e.beat.Store(max(e.beat.Load(), now))
	}
	e.expireLeases(now)
	rd := Ready{tick: e.ticks, at: now}
	e.reg.Drain(func(key string) {
		w, rule, ok := e.reg.Lookup(key)
		if !ok {
			return
		}
		ks := e.keys[key]
		if ks == nil || ks.w != w {
			if ks == nil {
				ks = e.addKeyLocked(key)
				ks.mirrorFrom = w.OpenEpoch()
			}
			ks.w = w
		}
		e.mirrorLocked(now, ks, rule.Pattern)
		e.markDirtyLocked(ks)
		rd.Stats.Mirrored++
	})
	e.clearDueFloorsLocked(now)
	if e.evaluateMembersLocked(now) {
		e.markAllDirtyLocked()
	}
	e.alignLocked(now)
	for _, ks := range e.capped {
		e.markDirtyLocked(ks)
	}
	clear(e.capped)
	e.capped = e.capped[:0]
	for ks, made := range e.young {
		if now-made >= int64(e.cfg.Store.Grace) {
			delete(e.young, ks)
			ks.young = false
		}
	}
	if e.ticks%uint64(e.cfg.RefreshEvery) == 0 {
		// Keys another member uses: shares move with time (views slide,
		// demand fades) even when nothing is written. A key decided here
		// alone changes only when it is written or a delta names it.
		for _, ks := range e.shared {
			e.markDirtyLocked(ks)
		}
	}
	for _, ks := range e.dirty {
		ks.dirty = false
		if !ks.gone {
			e.computeQuotaLocked(now, ks)
			rd.Stats.Recomputed++
		}
	}
	clear(e.dirty)
	e.dirty = e.dirty[:0]
	if stalled {
		e.beat.Store(max(e.beat.Load(), now))
	}
	// Close the interval after the quotas are announced, so they leave with
	// this tick's deltas.
	e.store.SetOwnAsOf(now)
	e.store.Tick()

	ov := e.overlayLocked()
	misses := e.missesLocked(now)
	for _, id := range e.syncTargetsLocked(ov, misses) {
		p := e.peers[id]
		if p == nil {
			continue // no stream: the transport will tell us when there is
		}
		var rs *crdt.RelaySet
		if ov.on {
			nb := ov.peers[id]
			if nb != nil {
				rs = nb.set
			} else if m := e.members[id]; m.reachable && !slices.Contains(misses, id) && !slices.Contains(m.misses, e.cfg.Node) {
				// Not a neighbour: it hears this node through them. A
				// member this node cannot reach, misses, or that misses
				// it, gets frames directly, as in a full mesh: that is how
				// it becomes reachable, and how a path the overlay lost
				// is bridged (design.md §7).
				continue
			}
		}
		ob := Outbox{Node: id, stream: p}
		ack := e.store.AckFor(id)
		echo, _ := e.members[id].offsets.estimate(now)
		frame := func(d crdt.Delta) {
			seq := p.outSeq + uint64(len(ob.Frames)) + 1
			ob.Frames = append(ob.Frames, &wire.Sync{Seq: seq, Ack: ack, Offset: echo, Delta: d, Misses: misses})
		}
		parts := e.store.DeltaForRelaying(id, now, rs)
		relay := e.relayOriginsLocked(id)
		if len(relay) == 0 && len(misses) == 0 && len(parts) == 1 && quiet(&parts[0]) &&
			p.sentAny && now-p.lastOut < int64(e.cfg.Heartbeat) {
			// Nothing the peer has not had but this node's asOf, and its
			// last frame is recent: no frame this tick (design.md §6).
			rd.Stats.Quiet++
			continue
		}
		for _, d := range parts {
			frame(d)
		}
		// Relays go after the delta: a peer that did not get every part of
		// it does not get them either (Advance counts a prefix).
		if len(relay) > 0 {
			ob.relay = true
			parts := e.store.RelayFor(id, now, relay)
			for _, d := range parts {
				frame(d)
			}
			ob.Relays = len(parts)
		}
		rd.Peers = append(rd.Peers, ob)
	}
	e.unadvanced = rd.tick
	return rd
}

// syncTargetsLocked returns, in ID order, the members a tick may send
// frames to: every member as a full mesh, or over the overlay its
// neighbours and the members that get frames directly (not reachable,
// missed, or missing this node; see Tick). Over the overlay its cost
// follows the neighbours and those exceptions, not the members.
func (e *Engine) syncTargetsLocked(ov *overlay, misses []string) []string {
	if !ov.on {
		return e.memberIDs
	}
	ids := append(e.targets[:0], ov.ids...)
	ids = append(ids, misses...)
	extra := false
	if e.nReachable < len(e.memberList) {
		extra = true
		for _, m := range e.memberList {
			if !m.reachable {
				ids = append(ids, m.id)
			}
		}
	}
	missedBy := e.missedBy[:0]
	for _, m := range e.missedBy {
		if m.missesMe && e.members[m.id] == m {
			missedBy = append(missedBy, m)
			ids, extra = append(ids, m.id), true
		} else {
			m.onMissedBy = false
		}
	}
	clear(e.missedBy[len(missedBy):])
	e.missedBy = missedBy
	if len(misses) > 0 || extra {
		slices.Sort(ids)
		ids = slices.Compact(ids)
	}
	e.targets = ids
	return ids
}

// Advance records what the caller sent of rd, the Ready the last Tick
// returned: per peer, the first Sent frames went out. It must be called
// once for every Tick, before the next one. What it leaves is what the
// engine held when Tick itself called the transport: the stream's sequence
// number counts the frames sent, parts of a full state or split delta not
// sent are returned again first (crdt.Store.Sent), and a relay counts as
// delivered only if every part of the delta and of the relay went out
// (crdt.Store.RelaySent). A peer whose stream was replaced or dropped since
// the Tick (PeerUp, PeerDown) keeps its new stream's numbering. It returns
// the tick's stats with the frames that went out.
func (e *Engine) Advance(rd Ready) TickStats {
	e.mu.Lock()
	defer e.mu.Unlock()
	if rd.tick == 0 || rd.tick != e.unadvanced {
		panic("quotamesh/engine: Advance of a Ready that is not the last Tick's, or twice")
	}
	e.unadvanced = 0
	st := rd.Stats
	for i := range rd.Peers {
		ob := &rd.Peers[i]
		sent := min(max(ob.Sent, 0), len(ob.Frames))
		deltas := len(ob.Frames) - ob.Relays
		if e.peers[ob.Node] == ob.stream {
			ob.stream.outSeq += uint64(sent)
			if sent > 0 {
				ob.stream.lastOut, ob.stream.sentAny = rd.at, true
			}
		}
		// The store's state for the peer is as Tick left it, or was reset
		// or acknowledged since; in the latter cases these are no-ops, as
		// they would have been had the reset come after them.
		e.store.Sent(ob.Node, min(sent, deltas))
		if ob.relay && sent == len(ob.Frames) {
			e.store.RelaySent(ob.Node)
		}
		st.Frames += sent
		st.Relayed += max(sent-deltas, 0)
	}
	// Every peer had its delta: the store need not keep them till the next
	// tick (the frames belong to the caller now).
	e.store.ReleaseDeltas()
	return st
}

// TickStats says what one tick did.
type TickStats struct {
	Mirrored   int // keys whose own slots were mirrored
	Recomputed int // quotas recomputed
	Frames     int // frames sent (as Advance was told), relays included
	Relayed    int // of which relays of members a peer misses
	Quiet      int // peers sent nothing: no news for them and no heartbeat due
}

// quiet reports whether d is a normal delta carrying nothing but its
// sender's own state: a heartbeat.
// Relayed states without counts (liveness of idle origins) ride along
// with the next frame that goes anyway.
func quiet(d *crdt.Delta) bool {
	return !d.Full && d.Parts <= 1 && len(d.Entries) == 0 && len(d.Quotas) == 0
}

// mirrorLocked copies the slots of ks's window that may have changed since
// the last mirror into the store, and counts new decisions under the rule
// pattern.
func (e *Engine) mirrorLocked(now int64, ks *keyState, pattern string) {
	// The open epoch before the read: a slot that closes while it reads may
	// still grow after, and the next mirror reads it again.
	open := ks.w.OpenEpoch()
	e.slots = e.slots[:0]
	ks.w.Slots(now, ks.mirrorFrom, func(epoch int64, admitted, offered uint32) {
		e.slots = append(e.slots, crdt.SlotCounts{Epoch: epoch, Admitted: admitted, Offered: offered})
	})
	if len(e.slots) > 0 {
		if err := e.store.RecordOwn(ks.key, e.slots); err == nil {
			e.countDecisionsLocked(ks, pattern)
		}
	}
	ks.mirrorFrom = max(ks.mirrorFrom, open)
}

// countDecisionsLocked adds the growth of the mirrored slots since the last
// mirror to the decision counters. Only the last two slots can still grow.
func (e *Engine) countDecisionsLocked(ks *keyState, pattern string) {
	var next seenSlots
	for _, s := range e.slots {
		adm, off := int64(s.Admitted), int64(s.Offered)
		for i, at := range [2]int64{ks.seen.epoch - int64(ks.seen.gap), ks.seen.epoch} {
			if at == s.Epoch && (i == 1 || ks.seen.gap != 0) {
				adm -= int64(ks.seen.adm[i])
				off -= int64(ks.seen.off[i])
				break
			}
		}
		e.counters.Admitted += max(adm, 0)
		e.counters.Offered += max(off, 0)
		e.countRuleLocked(pattern, max(adm, 0), max(off, 0))
		if next.epoch != 0 && s.Epoch-next.epoch <= 1<<31 {
			next.gap = uint32(s.Epoch - next.epoch)
			next.adm[0], next.off[0] = next.adm[1], next.off[1]
		} else {
			next.gap = 0
		}
		next.epoch, next.adm[1], next.off[1] = s.Epoch, s.Admitted, s.Offered
	}
	ks.seen = next
}

package node

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/quotamesh/quotamesh/internal/consensus"
	"github.com/quotamesh/quotamesh/internal/engine"
	"github.com/quotamesh/quotamesh/internal/route"
	"github.com/quotamesh/quotamesh/internal/wire"
	"github.com/quotamesh/quotamesh/transport"
)

// handler is what the transport delivers to: peer events go to the engine,
// client connections to the client server (client.go). Its methods run on
// the transport's goroutines, which Transport.Close waits for.
type handler struct{ n *Node }

var _ transport.Handler = handler{}

// PeerUp starts the sync protocol with a peer afresh (engine.PeerUp: full
// state, sequence numbers from 1) and sends it this node's Hello, as the
// first frame on the new connection: sendMu keeps a tick from sending a
// delta before it.
func (h handler) PeerUp(peer string) {
	n := h.n
	if !n.waitWired() {
		return // Start failed; the transport is closing
	}
	n.sendMu.Lock()
	defer n.sendMu.Unlock()
	n.eng.PeerUp(peer)
	self := n.eng.Self()
	body, err := wire.Encode(&wire.Hello{ClusterID: n.cfg.ClusterID, Node: self.Node, Incarnation: self.Incarnation, Addr: n.advertise})
	if err == nil {
		err = n.tr.Send(peer, body)
	}
	if err != nil {
		n.syncLog.Warn().Err(err).Str("peer", peer).Msg("could not send hello; the peer learns this incarnation from its first delta")
	}
}

// PeerDown tells the engine the peer's stream is gone.
func (h handler) PeerDown(peer string, err error) {
	h.n.eng.PeerDown(peer)
	h.n.syncLog.Debug().Err(err).Str("peer", peer).Msg("sync stream down")
}

// PeerFrame decodes a frame from a peer and hands it to the engine. A frame
// that does not decode, is not a peer message, or that the engine refuses
// (a non-member, a replay, another cluster, a bad delta) changes nothing:
// it is counted by reason and logged at most once a second per peer and
// reason.
func (h handler) PeerFrame(peer string, body []byte) {
	n := h.n
	dec, _ := n.decoders.Get().(*wire.Decoder)
	if dec == nil {
		dec = wire.NewDecoder()
	}
	msg, err := dec.Decode(body)
	n.decoders.Put(dec)
	if err != nil {
		reason := decodeReason(err)
		n.m.framesRejected.WithLabelValues(reason).Inc()
		n.logRejected(peer, reason, err)
		return
	}
	now := n.now()
	switch m := msg.(type) {
	case *wire.Hello:
		err = n.eng.Hello(now, peer, m)
	case *wire.Sync:
		err = n.eng.Receive(now, peer, m)
	default:
		n.m.framesRejected.WithLabelValues(reasonUnexpectedType).Inc()
		n.logRejected(peer, reasonUnexpectedType, fmt.Errorf("a %T on a peer sync stream", msg))
		return
	}
	if err != nil {
		// The engine counted it (Counters.FramesRejected); the metric
		// follows at the next housekeeping.
		n.logRejected(peer, engineReason(err), err)
		return
	}
	n.peersMu.Lock()
	n.lastFrame[peer] = n.wall()
	n.peersMu.Unlock()
}

// logRejected logs a refused frame, at most once a second per peer and
// reason.
func (n *Node) logRejected(peer, reason string, err error) {
	ok, suppressed := n.rejectLog.Allow(peer+"\x00"+reason, n.wall())
	if !ok {
		return
	}
	l := n.syncLog.Warn()
	if reason == "member" && !n.isMember.Load() {
		l = n.syncLog.Debug() // this node is joining: routine
	}
	l.Err(err).Str("peer", peer).Str("reason", reason).Int("suppressed", suppressed).Msg("frame from peer refused")
}

// decodeReason is the rejection reason of a wire decoding error.
func decodeReason(err error) string {
	switch {
	case errors.Is(err, wire.ErrTooLarge):
		return reasonTooLarge
	case errors.Is(err, wire.ErrVersion):
		return reasonVersion
	case errors.Is(err, wire.ErrUnknownType):
		return reasonUnknownType
	}
	return reasonMalformed
}

// engineReason is the rejection reason of an engine error, the same words
// the engine counts under.
func engineReason(err error) string {
	switch {
	case errors.Is(err, engine.ErrNotMember):
		return "member"
	case errors.Is(err, engine.ErrReplay):
		return "replay"
	case errors.Is(err, engine.ErrWrongSender):
		return "sender"
	case errors.Is(err, engine.ErrWrongCluster):
		return "cluster"
	case errors.Is(err, engine.ErrStaleFrame):
		return "stale"
	}
	return "invalid"
}

// syncLoop ticks the engine every sync interval: mirror, membership,
// quotas, deltas to peers.
func (n *Node) syncLoop() {
	t := time.NewTicker(n.cfg.SyncInterval)
	defer t.Stop()
	send := n.sender(wire.NewEncoder(), nil)
	for {
		select {
		case <-n.loopCtx.Done():
			return
		case <-t.C:
		}
		n.tick(send)
		if n.state.Load() == stateStarting && n.isMember.Load() {
			n.maybeServe()
		}
	}
}

// sender returns the engine's send function: it encodes with enc (one per
// goroutine) and queues the frame on the transport. A busy or unconnected
// peer returns the error, so that the engine stops for that peer this tick;
// the next delta covers what was not sent. sent, if not nil, records the
// peers a frame was queued for.
func (n *Node) sender(enc *wire.Encoder, sent map[string]int) func(string, *wire.Sync) error {
	return func(peer string, s *wire.Sync) error {
		// The transport owns a frame until it is written: a fresh buffer
		// each time.
		body, err := enc.AppendBody(nil, s)
		if err != nil {
			if ok, _ := n.rejectLog.Allow("encode\x00"+peer, n.wall()); ok {
				n.syncLog.Error().Err(err).Str("peer", peer).Msg("encoding a delta failed")
			}
			return err
		}
		if err := n.tr.Send(peer, body); err != nil {
			return err
		}
		if sent != nil {
			sent[peer]++
		}
		return nil
	}
}

// tick runs one engine tick under sendMu: the engine returns the frames,
// send encodes and queues them outside the engine's lock, and Advance tells
// the engine what went out.
func (n *Node) tick(send func(string, *wire.Sync) error) {
	start := n.wall()
	n.sendMu.Lock()
	rd := n.eng.Tick(n.now())
	rd.Send(send)
	n.eng.Advance(rd)
	n.sendMu.Unlock()
	n.m.tick.Observe(n.wall().Sub(start).Seconds())
}

// maybeServe starts serving decisions once this member hears as many
// members as the engine needs not to fence (half of them, itself
// included): until then it knows neither what the others admitted nor its
// share; and once its limit table has caught up with the leader
// (catchUpLoop): a node restarted on its data dir replays the log only as
// the leader confirms it, and with an empty table every key would be
// unknown, so allowed without limit (the fault suite saw a restarted node
// admit 131 requests in 100 ms that way).
func (n *Node) maybeServe() {
	if !n.caughtUp.Load() {
		return
	}
	st := n.eng.Status(n.now(), 0)
	reachable := 0
	for _, m := range st.Members {
		if m.Reachable {
			reachable++
		}
	}
	if 2*reachable >= len(st.Members) && n.state.CompareAndSwap(stateStarting, stateServing) {
		n.log.Info().Int("reachable", reachable).Int("members", len(st.Members)).Msg("serving decisions")
	}
}

// housekeepLoop applies membership changes every membershipEvery and, every
// housekeepEvery, sweeps idle keys, collects the store's garbage and
// refreshes metrics.
func (n *Node) housekeepLoop() {
	t := time.NewTicker(membershipEvery)
	defer t.Stop()
	var last lastCounts
	every := int(housekeepEvery / membershipEvery)
	for i := 0; ; i++ {
		select {
		case <-n.loopCtx.Done():
			return
		case <-t.C:
		}
		n.applyMembership()
		if i%every == 0 {
			n.eng.Housekeep(n.now())
			n.refreshMetrics(&last)
			n.rejectLog.Prune(n.wall())
		}
	}
}

// applyMembership reads Raft's latest configuration and, if it changed,
// gives it to the engine (who is a member) and the transport (whom to
// dial).
func (n *Node) applyMembership() {
	// The housekeeping and join goroutines both apply: one at a time, so
	// that an older configuration never overwrites a newer one.
	n.applyMu.Lock()
	defer n.applyMu.Unlock()
	ms, err := n.store.Members()
	if err != nil {
		n.log.Debug().Err(err).Msg("reading the membership")
		return
	}
	self := slices.ContainsFunc(ms, func(m consensus.Member) bool { return m.ID == n.cfg.ID }) && !n.left.Load()
	wasMember := n.isMember.Swap(self)
	if wasMember && !self && n.state.CompareAndSwap(stateServing, stateStarting) {
		n.log.Warn().Msg("this node is no longer a member: it stops serving decisions")
	}
	addrs := make(map[string]string, len(ms))
	ids := make([]string, 0, len(ms))
	for _, m := range ms {
		ids = append(ids, m.ID)
		if m.ID != n.cfg.ID {
			addrs[m.ID] = m.Address
		}
	}
	n.membersMu.Lock()
	changed := !maps.Equal(addrs, n.memberAddrs) || self != wasMember
	old := n.memberAddrs
	n.members = ms
	n.memberAddrs = addrs
	n.membersMu.Unlock()
	n.routes.Store(route.New(ids...))
	if !changed {
		return
	}
	n.eng.SetMembers(ids, n.now())
	if err := n.tr.SetPeers(addrs); err != nil {
		n.log.Error().Err(err).Msg("giving the membership to the transport")
	}
	for id := range old {
		if _, ok := addrs[id]; !ok {
			n.m.forgetPeer(id)
			n.peersMu.Lock()
			delete(n.lastFrame, id)
			n.peersMu.Unlock()
		}
	}
	n.log.Info().Strs("members", ids).Bool("self", self).Msg("membership changed")
}

// catchUpLoop brings the limit table up to date once, the condition for
// serving: it asks the leader, through Raft (consensus.Store.Sync: the
// leader confirms its leadership, applies what its predecessors committed
// and answers its applied index), and waits until this node's state machine
// has applied that far. The table then holds every change committed before
// the node first serves. Raft's own applied index would not do: Raft
// counts an entry applied once it has handed it to the state machine's
// goroutine, before the table changes, so a restarted node could pass it
// with an empty table and serve limited keys as unlimited for a moment.
// Sync is refused to non-members; a joining node waits until it is one.
func (n *Node) catchUpLoop() {
	backoff := 100 * time.Millisecond
	for {
		if n.isMember.Load() {
			ctx, cancel := context.WithTimeout(n.loopCtx, catchUpTimeout)
			index, err := n.store.Sync(ctx)
			cancel()
			if err == nil {
				n.caughtUp.Store(true)
				st := n.store.Stats()
				n.log.Info().Uint64("leader_applied", index).Uint64("table_index", st.TableIndex).Int("rules", st.Rules).Msg("limit table caught up")
				n.maybeServe()
				return
			}
			if n.loopCtx.Err() != nil {
				return
			}
			n.log.Debug().Err(err).Str("retry_in", backoff.String()).Msg("limit table not caught up yet")
		}
		if !n.pause(backoff) {
			return
		}
		backoff = min(2*backoff, time.Second)
	}
}

// pause waits for d on a loop goroutine; false if the loops were stopped
// first.
func (n *Node) pause(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-n.loopCtx.Done():
		return false
	case <-t.C:
		return true
	}
}

// joinLoop asks the Join addresses to add this node, until one does or the
// node stops.
func (n *Node) joinLoop() {
	backoff := 100 * time.Millisecond
	for {
		err := n.store.JoinVia(n.loopCtx, n.cfg.Join...)
		if err == nil {
			n.log.Info().Strs("via", n.cfg.Join).Msg("joined the cluster")
			n.applyMembership()
			return
		}
		if n.loopCtx.Err() != nil {
			return
		}
		n.log.Warn().Err(err).Strs("via", n.cfg.Join).Dur("retry_in", backoff).Msg("joining the cluster failed")
		if !n.pause(backoff) {
			return
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

// lastSync sends one last delta to every connected member and waits, within
// lastSyncWait and ctx, until those frames are written to their streams.
// It is best effort: a frame written to a stream may still be lost when the
// connection closes, and the peers then learn the last admissions of this
// incarnation only from a relayed full state, or never (they expire).
func (n *Node) lastSync(ctx context.Context) {
	deadline := time.NewTimer(lastSyncWait)
	defer deadline.Stop()
	before := map[string]uint64{}
	want := map[string]bool{}
	members := n.memberSet()
	for _, p := range n.tr.Peers() {
		before[p.ID] = p.FramesOut
		if p.Connected && members[p.ID] {
			want[p.ID] = true
		}
	}
	if len(want) == 0 {
		return
	}
	sent := map[string]int{}
	send := n.sender(wire.NewEncoder(), sent)
	wait := func() bool {
		select {
		case <-ctx.Done():
			return false
		case <-deadline.C:
			return false
		case <-time.After(2 * time.Millisecond):
			return true
		}
	}
	for {
		n.tick(send)
		missing := 0
		for id := range want {
			if sent[id] == 0 {
				missing++
			}
		}
		if missing == 0 || !wait() {
			break
		}
	}
	for {
		pending := 0
		for _, p := range n.tr.Peers() {
			if sent[p.ID] > 0 && p.FramesOut < before[p.ID]+uint64(sent[p.ID]) && p.Connected {
				pending++
			}
		}
		if pending == 0 || !wait() {
			if pending > 0 {
				n.syncLog.Warn().Int("peers", pending).Msg("last deltas not written to every peer before shutting down")
			}
			return
		}
	}
}

// memberSet returns the IDs of the other members.
func (n *Node) memberSet() map[string]bool {
	n.membersMu.Lock()
	defer n.membersMu.Unlock()
	out := make(map[string]bool, len(n.memberAddrs))
	for id := range n.memberAddrs {
		out[id] = true
	}
	return out
}

// membership returns the latest membership applied.
func (n *Node) membership() []consensus.Member {
	n.membersMu.Lock()
	defer n.membersMu.Unlock()
	return slices.Clone(n.members)
}

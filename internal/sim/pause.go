// Pauses (SIGSTOP, a long GC pause) and what the streams to a paused node
// do, as quic-go does on real processes.

package sim

import "time"

// Defaults of the pause model.
const (
	// DefaultIdleTimeout is QUIC's idle timeout between nodes (the
	// transport's default).
	DefaultIdleTimeout = time.Second
	// DefaultReconnect is how long a resumed node keeps the streams its
	// peers closed while it was stopped, before new ones replace them:
	// measured on real processes (3 nodes on network namespaces, a node
	// stopped 8 s), the stateless reset that ended its old connections came
	// 525 ms after SIGCONT, and its peers' new connections 25 ms later.
	DefaultReconnect = 500 * time.Millisecond
)

// Pause stops Node at At for For (SIGSTOP, a long GC pause): it neither
// ticks nor handles frames, and the frames and requests sent to it wait.
// When it resumes, it handles them in the worst order, as a resumed
// process may: first the frames that waited in its socket, then a tick
// (its ticker's overdue fire), then the requests. Requests that come before
// that tick are denied (engine.Config.QuotaValidity); live callers'
// requests come after it on real processes (the SDK gave up on the older
// ones at its request timeout and sends its backlog once it reconnects), so
// they are decided under whatever the frames and the tick made of the
// quotas.
//
// Its streams behave as QUIC's do (Config.IdleTimeout, Config.Reconnect):
// a peer that has heard nothing from the stopped node for the idle timeout
// closes its end of their streams and sends nothing more. The frames it
// sent before wait in the stopped node's socket, and the stopped node, which
// saw nothing close, handles them when it resumes, on streams it takes for
// live: frames as old as the pause, the newest an idle timeout after its
// start. Its own frames on those streams reach nobody. Reconnect after it
// resumes, new streams replace the old ones, with hellos and full states.
// A pause shorter than the idle timeout closes nothing: every frame sent
// during it waits, and the newest are fresh.
type Pause struct {
	At, For time.Duration
	Node    int
}

// The order of what a resumed node handles: the frames that waited (at its
// resume time), its overdue tick, then the requests that waited.
const (
	wakeTick      = time.Nanosecond
	afterWakeTick = 2 * time.Nanosecond
)

// handlePause handles the events of pauses.
func (s *sim) handlePause(ev event) {
	n := s.nodes[ev.node]
	switch ev.kind {
	case evPause:
		n.pausedTo = s.now + ev.offset
		s.q.push(event{at: n.pausedTo, kind: evResume, node: ev.node})
		if s.cfg.IdleTimeout > 0 && ev.offset > s.cfg.IdleTimeout {
			s.q.push(event{at: s.now + s.cfg.IdleTimeout, kind: evIdleClose, node: ev.node})
		}
	case evIdleClose:
		// Every peer closes its streams with the stopped node.
		if n.down || n.pausedTo <= s.now {
			return
		}
		for j, m := range s.nodes {
			if j == ev.node || m.down || !s.links[j][ev.node].up {
				continue
			}
			s.links[j][ev.node].fromClosed = true
			s.links[ev.node][j].toClosed = true
			m.eng.PeerDown(n.id)
		}
	case evResume:
		// The frames that waited are queued for now, after this event;
		// the ticker's overdue tick and the requests follow them.
		s.q.push(event{at: s.now + wakeTick, kind: evWakeTick, node: ev.node})
		s.q.push(event{at: s.now + afterWakeTick, kind: evServeDelayed, node: ev.node})
		s.q.push(event{at: s.now + s.cfg.Reconnect, kind: evReconnect, node: ev.node})
	case evWakeTick:
		s.tick(ev.node)
	case evServeDelayed:
		delayed := n.delayed
		n.delayed = nil
		for _, rec := range delayed {
			s.serve(ev.node, rec)
		}
	case evReconnect:
		// The old streams die at the resumed node too; new ones start.
		if n.down {
			return
		}
		for j := range s.nodes {
			if j == ev.node || !s.links[j][ev.node].fromClosed || !s.links[j][ev.node].up {
				continue
			}
			n.eng.PeerDown(s.nodes[j].id)
			s.openStream(j, ev.node)
			s.openStream(ev.node, j)
		}
	}
}

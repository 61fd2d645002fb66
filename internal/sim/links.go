// Links between the simulated nodes: which may exchange frames, the
// streams on them, and the frames' delays.

package sim

import (
	"errors"
	"slices"
	"time"

	"github.com/quotamesh/quotamesh/internal/wire"
)

// connected reports whether from and to may exchange frames now.
func (s *sim) connected(from, to int) bool {
	if s.nodes[from].down || s.nodes[to].down {
		return false
	}
	for _, p := range s.cfg.Partitions {
		if s.now < s.cfg.Warmup+p.Start || s.now >= s.cfg.Warmup+p.End {
			continue
		}
		if group(p, from) != group(p, to) {
			return false
		}
	}
	for _, c := range s.cfg.Cuts {
		if s.now < s.cfg.Warmup+c.Start || s.now >= s.cfg.Warmup+c.End {
			continue
		}
		if slices.Contains(c.A, from) && slices.Contains(c.B, to) || slices.Contains(c.B, from) && slices.Contains(c.A, to) {
			return false
		}
	}
	return true
}

func group(p Partition, n int) int {
	for g, members := range p.Groups {
		if slices.Contains(members, n) {
			return g
		}
	}
	return len(p.Groups)
}

// updateLinks opens streams that became possible and breaks those that did
// not survive a partition change. A new stream starts with a hello each way.
func (s *sim) updateLinks() {
	for i := range s.nodes {
		for j := range s.nodes {
			if i == j {
				continue
			}
			l := s.links[i][j]
			up := s.connected(i, j)
			switch {
			case up && !l.up:
				s.openStream(i, j)
			case !up && l.up:
				l.up = false
				l.fromClosed, l.toClosed = false, false
				if !s.nodes[i].down {
					s.nodes[i].eng.PeerDown(s.nodes[j].id)
				}
			}
		}
	}
}

// tick runs node i's sync interval, as the node does: the tick returns its
// frames, they are sent, and the engine is told what went out.
func (s *sim) tick(i int) {
	n := s.nodes[i]
	if n.down || n.pausedTo > s.now {
		return
	}
	rd := n.eng.Tick(s.nodeTime(n))
	rd.Send(func(to string, m *wire.Sync) error {
		return s.send(i, s.index(to), m)
	})
	n.eng.Advance(rd)
	if s.now%time.Second < s.cfg.Sync {
		n.eng.Housekeep(s.nodeTime(n))
	}
}

// openStream starts a new stream from i to j: i's engine is told, and a
// hello leads it.
func (s *sim) openStream(i, j int) {
	l := s.links[i][j]
	l.up = true
	l.fromClosed, l.toClosed = false, false
	l.streamID++
	l.lastAt = s.now
	s.nodes[i].eng.PeerUp(s.nodes[j].id)
	self := s.nodes[i].eng.Self()
	s.enqueue(i, j, &wire.Hello{ClusterID: "quotamesh", Node: self.Node, Incarnation: self.Incarnation, Addr: "sim"}, s.cfg.RTT)
	l.lastAt = max(l.lastAt, s.now+s.cfg.FirstFrame)
}

// send queues a frame from a tick; it fails (as a closed stream would) when
// the link is down or its sender closed it.
func (s *sim) send(from, to int, m *wire.Sync) error {
	if l := s.links[from][to]; !l.up || l.fromClosed {
		return errLinkDown
	}
	s.enqueue(from, to, s.copySync(m), 0)
	return nil
}

var errLinkDown = errors.New("link down")

func (s *sim) enqueue(from, to int, m wire.Message, extra time.Duration) {
	l := s.links[from][to]
	delay := s.cfg.RTT/2 + extra
	if s.cfg.Jitter > 0 {
		delay += time.Duration(s.rng.Int64N(int64(s.cfg.Jitter)))
	}
	rto := s.cfg.RTO
	if rto == 0 {
		rto = 3*s.cfg.RTT + time.Millisecond
	}
	for s.cfg.Loss > 0 && s.rng.Float64() < s.cfg.Loss && rto < 10*time.Second {
		delay += rto
		rto *= 2
	}
	at := max(s.now+delay, l.lastAt)
	l.lastAt = at
	s.res.Frames++
	if s.cfg.Encode {
		var err error
		s.buf, err = s.enc.Append(s.buf[:0], m)
		if err == nil {
			s.res.Bytes += int64(len(s.buf))
			m, _ = s.dec.Decode(s.buf[frameHeader(s.buf):])
		}
	}
	s.q.push(event{at: at, kind: evDeliver, from: from, node: to, msg: m, stream: l.streamID})
}

// frameHeader is the length of the uvarint length prefix Append writes.
func frameHeader(b []byte) int {
	for i, c := range b {
		if c < 0x80 {
			return i + 1
		}
	}
	return len(b)
}

// copySync copies the parts of a frame the store may reuse after the tick.
func (s *sim) copySync(m *wire.Sync) *wire.Sync {
	c := *m
	c.Delta.Origins = slices.Clone(m.Delta.Origins)
	c.Delta.Entries = slices.Clone(m.Delta.Entries)
	return &c
}

package transport

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quotamesh/quotamesh/internal/wire"
	"github.com/rs/zerolog"
)

// peer is one remote node: configured by SetPeers, or known because it
// connected to us (and AllowPeer let it).
type peer struct {
	id  string
	log zerolog.Logger
	m   peerMetrics

	// sendConn is the connection Send writes to: set when a connection is
	// up, cleared before PeerDown.
	sendConn atomic.Pointer[peerConn]

	bytesIn, bytesOut, framesIn, framesOut, dials atomic.Uint64
	dialing                                       atomic.Bool

	mu         sync.Mutex
	addr       string             // address from SetPeers; "" if not configured
	adHocAddr  string             // address StreamLayer.Dial reached it at, if any
	configured bool               // in the SetPeers set
	dialStop   context.CancelFunc // stops the dialer; nil without one
	active     *peerConn          // the connection the tie-break keeps (up or coming up)
	upCh       chan struct{}      // closed and replaced whenever a connection comes up
	since      time.Time
	lastErr    error
}

func (p *peer) status() PeerStatus {
	p.mu.Lock()
	s := PeerStatus{
		ID:         p.id,
		Addr:       p.addr,
		Configured: p.configured,
		Since:      p.since,
		LastError:  p.lastErr,
	}
	p.mu.Unlock()
	if c := p.sendConn.Load(); c != nil {
		s.Connected = true
		s.Outbound = c.outbound
		s.RemoteAddr = c.qc.RemoteAddr().String()
		s.RTT = c.qc.ConnectionStats().SmoothedRTT
	}
	s.BytesIn, s.BytesOut = p.bytesIn.Load(), p.bytesOut.Load()
	s.FramesIn, s.FramesOut = p.framesIn.Load(), p.framesOut.Load()
	s.Dials = p.dials.Load()
	s.Dialing = p.dialing.Load()
	return s
}

// waitUp returns the peer's connection once one is up.
func (p *peer) waitUp(ctx context.Context) (*peerConn, error) {
	for {
		if c := p.sendConn.Load(); c != nil {
			return c, nil
		}
		p.mu.Lock()
		ch := p.upCh
		p.mu.Unlock()
		if c := p.sendConn.Load(); c != nil {
			return c, nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return nil, fmt.Errorf("%w: peer %s: %w", ErrNotConnected, p.id, context.Cause(ctx))
		}
	}
}

// peerConn is one QUIC connection to a peer. Goroutines per connection: a
// supervisor (PeerUp, then waits for the end, then PeerDown), a writer
// (drains the one-frame mailbox into our sync stream), a reader (frames
// from the peer's sync stream to Handler.PeerFrame) and an acceptor for
// bidirectional streams; all started through Transport.spawn.
type peerConn struct {
	t        *Transport
	p        *peer
	qc       *quic.Conn
	outbound bool        // dialed by this node
	replaces *peerConn   // the connection this one replaced: its PeerDown comes first
	mailbox  chan []byte // capacity 1, see Send
	busy     atomic.Bool // a frame is in the mailbox or being written
	reason   atomic.Pointer[error]
	wg       sync.WaitGroup // writer, reader, acceptor
	done     chan struct{}  // closed when the supervisor has finished
	upAt     time.Time      // when PeerUp was called (zero if never); set by the supervisor
	downAt   time.Time
}

// closeWith closes the connection, recording reason for PeerDown unless an
// earlier reason was recorded. It waits until quic-go has sent
// CONNECTION_CLOSE, so do not call it with a lock held.
func (c *peerConn) closeWith(reason error, code quic.ApplicationErrorCode) {
	c.reason.CompareAndSwap(nil, &reason)
	_ = c.qc.CloseWithError(code, reason.Error())
}

// downReason is why the connection ended.
func (c *peerConn) downReason() error {
	if r := c.reason.Load(); r != nil {
		return *r
	}
	cause := context.Cause(c.qc.Context())
	var app *quic.ApplicationError
	if errors.As(cause, &app) && app.Remote && app.ErrorCode == codeReplaced {
		return fmt.Errorf("%w by peer: %w", ErrReplaced, cause)
	}
	return fmt.Errorf("%w: %w", ErrConnectionLost, cause)
}

// spawnFor starts fn as one of c's goroutines; false if the Transport is
// closing.
func (t *Transport) spawnFor(c *peerConn, fn func()) bool {
	c.wg.Add(1)
	if t.spawn(func() { defer c.wg.Done(); fn() }) {
		return true
	}
	c.wg.Done()
	return false
}

// adopt takes an authenticated peer connection and applies the tie-break:
// a pair keeps one connection. Between connections of different directions
// the one dialed by the node with the smaller ID wins, on both sides alike;
// between connections of the same direction the newer wins, since a node
// only dials again when it considers its previous connection gone (a
// restart, a lost connection). With preferExisting, a live connection is
// kept whatever its direction (StreamLayer.Dial reaching a known peer). It
// returns the adopted connection, or nil if qc was closed instead.
func (t *Transport) adopt(qc *quic.Conn, id string, outbound, preferExisting bool) *peerConn {
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		_ = qc.CloseWithError(codeShutdown, ErrClosed.Error())
		return nil
	}
	p := t.peers[id]
	if p == nil {
		p = t.newPeerLocked(id)
	}
	c := &peerConn{t: t, p: p, qc: qc, outbound: outbound, mailbox: make(chan []byte, 1), done: make(chan struct{})}
	p.mu.Lock()
	old := p.active
	oldAlive := old != nil && old.qc.Context().Err() == nil
	keepOld := false
	if oldAlive {
		switch {
		case preferExisting:
			keepOld = true
		case old.outbound != outbound:
			canonicalOutbound := t.cfg.NodeID < id
			keepOld = old.outbound == canonicalOutbound
		}
	}
	if keepOld {
		p.mu.Unlock()
		delete(t.conns, qc)
		t.mu.Unlock()
		p.log.Debug().Bool("outbound", outbound).Msg("duplicate connection closed by tie-break")
		c.closeWith(ErrReplaced, codeReplaced)
		return nil
	}
	c.replaces = old
	p.active = c
	p.mu.Unlock()
	t.conns[qc] = c
	started := t.spawnLocked(func() { t.supervise(c) })
	t.mu.Unlock()
	if oldAlive {
		p.log.Debug().Bool("outbound", outbound).Msg("connection replaced by tie-break")
		old.closeWith(ErrReplaced, codeReplaced)
	}
	if !started { // unreachable: t.closed was checked under the same lock
		c.closeWith(ErrClosed, codeShutdown)
	}
	return c
}

// supervise runs one connection's life: start the writer, wait for the
// peer's sync stream (proof the peer accepted and adopted the connection),
// report PeerUp, read until the connection ends, report PeerDown.
func (t *Transport) supervise(c *peerConn) {
	p := c.p
	defer close(c.done)
	defer t.untrack(c.qc)
	wasUp := false
	defer func() { t.connEnded(c, wasUp) }()

	if !t.spawnFor(c, func() { t.writeFrames(c) }) {
		c.closeWith(ErrClosed, codeShutdown)
	}
	rs, fr, err := t.acceptSync(c)
	if err != nil {
		c.closeWith(err, codeProtocol)
	}
	if c.replaces != nil {
		<-c.replaces.done
		c.replaces = nil
	}
	if err != nil {
		c.wg.Wait()
		return
	}

	p.mu.Lock()
	if p.active != c || c.qc.Context().Err() != nil {
		p.mu.Unlock()
		c.closeWith(ErrReplaced, codeReplaced)
		c.wg.Wait()
		return
	}
	now := time.Now()
	c.upAt = now
	p.since = now
	p.lastErr = nil
	p.sendConn.Store(c)
	close(p.upCh)
	p.upCh = make(chan struct{})
	p.mu.Unlock()
	wasUp = true
	p.m.up.Set(1)
	p.log.Info().Bool("outbound", c.outbound).Str("remote", c.qc.RemoteAddr().String()).Msg("peer up")
	t.cfg.Handler.PeerUp(p.id)

	if !t.spawnFor(c, func() { t.readFrames(c, rs, fr) }) || !t.spawnFor(c, func() { t.acceptStreams(c) }) {
		c.closeWith(ErrClosed, codeShutdown)
	}
	<-c.qc.Context().Done()
	c.wg.Wait()

	reason := c.downReason()
	p.sendConn.CompareAndSwap(c, nil)
	c.downAt = time.Now()
	p.mu.Lock()
	p.since = c.downAt
	p.lastErr = reason
	p.mu.Unlock()
	p.m.up.Set(0)
	p.log.Info().Err(reason).Dur("up_for", c.downAt.Sub(c.upAt)).Msg("peer down")
	t.cfg.Handler.PeerDown(p.id, reason)
}

// connEnded clears c from its peer and forgets a peer that is neither
// configured nor connected.
func (t *Transport) connEnded(c *peerConn, wasUp bool) {
	p := c.p
	t.mu.Lock()
	defer t.mu.Unlock()
	p.mu.Lock()
	defer p.mu.Unlock()
	if !wasUp && p.active == c {
		p.lastErr = c.downReason()
	}
	if p.active == c {
		p.active = nil
	}
	if !p.configured && p.active == nil {
		t.deletePeerLocked(p)
	}
}

// acceptSync waits for the peer's sync stream and checks its kind byte.
func (t *Transport) acceptSync(c *peerConn) (*quic.ReceiveStream, *bufio.Reader, error) {
	timeout := t.cfg.HandshakeTimeout
	ctx, cancel := context.WithTimeout(c.qc.Context(), timeout)
	defer cancel()
	rs, err := c.qc.AcceptUniStream(ctx)
	if err != nil {
		if c.qc.Context().Err() != nil {
			return nil, nil, c.downReason()
		}
		return nil, nil, fmt.Errorf("%w: no sync stream from %s within %v: %w", ErrProtocol, c.p.id, timeout, err)
	}
	_ = rs.SetReadDeadline(time.Now().Add(timeout))
	var kind [1]byte
	if _, err := io.ReadFull(rs, kind[:]); err != nil {
		if c.qc.Context().Err() != nil {
			return nil, nil, c.downReason()
		}
		return nil, nil, fmt.Errorf("%w: reading the sync stream's kind from %s: %w", ErrProtocol, c.p.id, err)
	}
	_ = rs.SetReadDeadline(time.Time{})
	if kind[0] != kindSync {
		t.m.rejected.WithLabelValues(rejectProtocol).Inc()
		return nil, nil, fmt.Errorf("%w: unidirectional stream of kind %q from %s, want %q", ErrProtocol, kind[0], c.p.id, kindSync)
	}
	return rs, bufio.NewReaderSize(rs, 16<<10), nil
}

// keptFrameBuffer is the largest frame buffer writeFrames keeps for the
// next frame.
const keptFrameBuffer = 64 << 10

// writeFrames opens our sync stream and writes each mailbox frame to it.
func (t *Transport) writeFrames(c *peerConn) {
	ctx := c.qc.Context()
	s, err := c.qc.OpenUniStreamSync(ctx)
	if err != nil {
		if ctx.Err() == nil {
			c.closeWith(fmt.Errorf("%w: opening the sync stream to %s: %w", ErrProtocol, c.p.id, err), codeProtocol)
		}
		return
	}
	if _, err := s.Write([]byte{kindSync}); err != nil {
		if ctx.Err() == nil {
			c.closeWith(fmt.Errorf("%w: writing to %s: %w", ErrConnectionLost, c.p.id, err), codeProtocol)
		}
		return
	}
	p := c.p
	var frame []byte
	for {
		select {
		case <-ctx.Done():
			return
		case body := <-c.mailbox:
			var err error
			// Send checked the body's length, so framing cannot fail.
			frame, err = wire.AppendFrame(frame[:0], body, t.cfg.MaxFrameSize)
			if err == nil {
				_, err = s.Write(frame)
			}
			if err != nil {
				if ctx.Err() == nil {
					c.closeWith(fmt.Errorf("%w: writing to %s: %w", ErrConnectionLost, p.id, err), codeProtocol)
				}
				return
			}
			size := uint64(len(frame))
			p.bytesOut.Add(size)
			p.framesOut.Add(1)
			p.m.bytesOut.Add(float64(size))
			p.m.framesOut.Inc()
			if cap(frame) > keptFrameBuffer {
				frame = nil // a rare large frame: do not hold its memory
			}
			c.busy.Store(false)
		}
	}
}

// readFrames delivers the peer's frames to the handler until the stream or
// the connection ends. A frame the framer refuses closes the connection: the
// stream cannot be resynchronised.
func (t *Transport) readFrames(c *peerConn, rs *quic.ReceiveStream, br *bufio.Reader) {
	p := c.p
	for {
		body, err := wire.ReadFrame(br, t.cfg.MaxFrameSize)
		if err != nil {
			if c.qc.Context().Err() != nil {
				return
			}
			// The framer's errors are internal: the caller sees this
			// package's sentinels, with the framer's message.
			switch {
			case errors.Is(err, wire.ErrTooLarge):
				t.m.rejected.WithLabelValues(rejectTooLarge).Inc()
				p.log.Warn().Err(err).Msg("frame refused; closing the connection")
				c.closeWith(fmt.Errorf("%w: peer %s: %v", ErrFrameTooLarge, p.id, err), codeFrameTooLarge)
			case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
				t.m.rejected.WithLabelValues(rejectProtocol).Inc()
				c.closeWith(fmt.Errorf("%w: peer %s ended its sync stream", ErrProtocol, p.id), codeProtocol)
			case errors.Is(err, wire.ErrMalformed):
				t.m.rejected.WithLabelValues(rejectMalformed).Inc()
				p.log.Warn().Err(err).Msg("frame refused; closing the connection")
				c.closeWith(fmt.Errorf("%w: peer %s: %v", ErrBadFrame, p.id, err), codeProtocol)
			default:
				c.closeWith(fmt.Errorf("%w: reading from %s: %w", ErrConnectionLost, p.id, err), codeProtocol)
			}
			return
		}
		size := uint64(varintLen(len(body)) + len(body))
		p.bytesIn.Add(size)
		p.framesIn.Add(1)
		p.m.bytesIn.Add(float64(size))
		p.m.framesIn.Inc()
		t.cfg.Handler.PeerFrame(p.id, body)
	}
}

func varintLen(n int) int {
	var b [binary.MaxVarintLen64]byte
	return binary.PutUvarint(b[:], uint64(n))
}

// dialLoop keeps one connection to a configured peer: it dials when the
// peer has none, with jittered exponential backoff between failures, until
// ctx (the peer's configuration, within the Transport's life) ends.
//
// The node with the smaller ID dials at once when the peer is configured,
// and DialBackoffMin to 1.5×DialBackoffMin after a connection ends. The node
// with the larger ID, whose connection the tie-break would drop if both
// dialed, yields: it waits DialBackoffMax/2 to DialBackoffMax before its
// first attempt, so that in the common case the canonical connection is the
// only one and no PeerDown/PeerUp swap happens. It still connects, later,
// when the other node does not dial it (e.g. does not list it yet).
func (t *Transport) dialLoop(ctx context.Context, p *peer) {
	b := newBackoff(t.cfg.DialBackoffMin, t.cfg.DialBackoffMax, t.nextSeed())
	yield := t.cfg.NodeID > p.id
	pause := yield // wait before the next attempt, then look again
	failing := false
	for {
		if pause {
			pause = false
			d := b.next()
			if yield {
				d = b.yieldDelay()
			}
			if !sleepCtx(ctx, d) {
				return
			}
			continue
		}
		p.mu.Lock()
		active, addr := p.active, p.addr
		p.mu.Unlock()
		if active != nil {
			select {
			case <-active.done:
			case <-ctx.Done():
				return
			}
			// A connection that stayed up a while ends the failure streak.
			if !active.upAt.IsZero() && active.downAt.Sub(active.upAt) >= t.cfg.DialBackoffMax {
				b.reset()
			}
			pause = true
			continue
		}
		p.dials.Add(1)
		p.dialing.Store(true)
		qc, err := t.dial(ctx, addr, p.id)
		p.dialing.Store(false)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			p.m.dialErr.Inc()
			p.mu.Lock()
			p.lastErr = err
			p.mu.Unlock()
			ev := p.log.Debug()
			if !failing {
				ev = p.log.Warn()
			}
			failing = true
			ev.Err(err).Str("addr", addr).Msg("dial failed; retrying with backoff")
			if !b.wait(ctx) {
				return
			}
			continue
		}
		failing = false
		p.m.dialOK.Inc()
		t.adopt(qc, p.id, true, false)
	}
}

// dial connects to addr and checks that the node there is expect (any
// node that AllowPeer accepts if expect is "").
func (t *Transport) dial(ctx context.Context, addr, expect string) (*quic.Conn, error) {
	ua, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		return nil, fmt.Errorf("quotamesh/transport: resolve %s: %w", addr, err)
	}
	var verifyErr atomic.Pointer[error]
	tc := t.dialTLS(addr, expect)
	verify := tc.VerifyConnection
	tc.VerifyConnection = func(cs tls.ConnectionState) error {
		err := verify(cs)
		if err != nil {
			verifyErr.Store(&err)
		}
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 2*t.cfg.HandshakeTimeout)
	defer cancel()
	qc, err := t.qt.Dial(ctx, ua, tc, t.quicConf)
	if err != nil {
		if v := verifyErr.Load(); v != nil {
			return nil, fmt.Errorf("dial %s: %w", addr, *v)
		}
		if errorsIsClosed(err) && t.ctx.Err() != nil {
			return nil, ErrClosed
		}
		return nil, fmt.Errorf("%w: dial %s: %w", ErrNotConnected, addr, err)
	}
	if !t.track(qc) {
		return nil, ErrClosed
	}
	return qc, nil
}

package transport

import (
	"context"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	"github.com/quic-go/quic-go"
)

// Stream is a bidirectional QUIC stream as a net.Conn: a StreamLayer
// connection or a client stream. Read and Write may be called from
// different goroutines, but each from one goroutine at a time, as with a
// QUIC stream.
type Stream struct {
	s         *quic.Stream
	qc        *quic.Conn
	local     net.Addr
	remote    net.Addr
	closeOnce sync.Once
}

var _ net.Conn = (*Stream)(nil)

func newStream(s *quic.Stream, qc *quic.Conn) *Stream {
	return &Stream{s: s, qc: qc, local: qc.LocalAddr(), remote: qc.RemoteAddr()}
}

// PeerNode returns the node ID in the verified certificate of the
// connection the stream belongs to, "" if the other end is not a node (a
// client). It is the identity of whoever opened a StreamLayer stream,
// whatever happens to the connection meanwhile.
func (s *Stream) PeerNode() string {
	id := nodeIdentityOf(s.qc)
	if !id.Node {
		return ""
	}
	return id.Name
}

// Read reads from the stream; io.EOF after the other side's CloseWrite.
func (s *Stream) Read(b []byte) (int, error) { return s.s.Read(b) }

// Write writes to the stream, blocking under flow control until the
// deadline.
func (s *Stream) Write(b []byte) (int, error) { return s.s.Write(b) }

// CloseWrite ends the write direction (the other side reads io.EOF once it
// has read everything); reading goes on.
func (s *Stream) CloseWrite() error { return s.s.Close() }

// Close ends both directions: it finishes the write direction and stops
// reading (unread data is discarded and the other side's writes fail).
func (s *Stream) Close() error {
	s.closeOnce.Do(func() {
		_ = s.s.Close()
		s.s.CancelRead(quic.StreamErrorCode(codeStreamClosed))
	})
	return nil
}

// LocalAddr returns the local UDP address of the stream's connection.
func (s *Stream) LocalAddr() net.Addr { return s.local }

// RemoteAddr returns the remote UDP address of the stream's connection.
func (s *Stream) RemoteAddr() net.Addr { return s.remote }

// SetDeadline sets the read and write deadlines.
func (s *Stream) SetDeadline(t time.Time) error { return s.s.SetDeadline(t) }

// SetReadDeadline sets the read deadline; an expired Read returns an error
// for which os.ErrDeadlineExceeded matches errors.Is.
func (s *Stream) SetReadDeadline(t time.Time) error { return s.s.SetReadDeadline(t) }

// SetWriteDeadline sets the write deadline.
func (s *Stream) SetWriteDeadline(t time.Time) error { return s.s.SetWriteDeadline(t) }

// streamBacklog is how many accepted streams a StreamLayer holds before it
// refuses more (each is reset, and the dialer's first read or write fails).
const streamBacklog = 64

// StreamLayer carries connections of one kind (e.g. 'r' for Raft, 'f' for
// RPC forwarding) as bidirectional streams on the peer connections: a
// net.Listener for the streams peers open, and Dial to open one. It has the
// shape hashicorp/raft's StreamLayer wants (Dial takes a string address, so
// the consumer adapts it).
type StreamLayer struct {
	t         *Transport
	kind      byte
	accept    chan *Stream
	closed    chan struct{}
	closeOnce sync.Once
}

var _ net.Listener = (*StreamLayer)(nil)

// StreamLayer registers and returns the stream layer for kind, which must not
// be 's' (the sync streams') nor in use by another open layer
// (ErrKindTaken). Streams of a kind with no layer are reset.
func (t *Transport) StreamLayer(kind byte) (*StreamLayer, error) {
	if kind == kindSync {
		return nil, fmt.Errorf("%w: kind %q is reserved for sync streams", ErrKindTaken, kind)
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return nil, ErrClosed
	}
	if _, ok := t.layers[kind]; ok {
		return nil, fmt.Errorf("%w: kind %q", ErrKindTaken, kind)
	}
	l := &StreamLayer{t: t, kind: kind, accept: make(chan *Stream, streamBacklog), closed: make(chan struct{})}
	t.layers[kind] = l
	return l, nil
}

// Accept returns the next stream of this kind a peer opened. After Close it
// returns an error wrapping ErrClosed and net.ErrClosed.
func (l *StreamLayer) Accept() (net.Conn, error) {
	select {
	case s := <-l.accept:
		return s, nil
	case <-l.closed:
		return nil, fmt.Errorf("%w: stream layer %q: %w", ErrClosed, l.kind, net.ErrClosed)
	}
}

// Close stops accepting: queued and later streams of this kind are reset,
// and the kind can be registered again. Streams already accepted stay open.
func (l *StreamLayer) Close() error {
	l.closeOnce.Do(func() {
		l.t.mu.Lock()
		if l.t.layers[l.kind] == l {
			delete(l.t.layers, l.kind)
		}
		close(l.closed)
		l.t.mu.Unlock()
		for {
			select {
			case s := <-l.accept:
				s.s.CancelWrite(quic.StreamErrorCode(codeStreamClosed))
				s.s.CancelRead(quic.StreamErrorCode(codeStreamClosed))
			default:
				return
			}
		}
	})
	return nil
}

// Addr returns the Transport's address.
func (l *StreamLayer) Addr() net.Addr { return l.t.Addr() }

// Dial opens a stream of this kind to the node at addr, on the peer
// connection to it: the one SetPeers dials, waited for until timeout if it
// is not up yet. An address SetPeers did not give is dialed directly; the
// node there must pass AllowPeer, and the connection then serves as its
// peer connection (PeerUp is called) until it ends, without redials.
func (l *StreamLayer) Dial(addr string, timeout time.Duration) (net.Conn, error) {
	select {
	case <-l.closed:
		return nil, fmt.Errorf("%w: stream layer %q", ErrClosed, l.kind)
	default:
	}
	ctx, cancel := context.WithTimeout(l.t.ctx, timeout)
	defer cancel()
	c, err := l.t.connTo(ctx, addr)
	if err != nil {
		return nil, err
	}
	s, err := c.qc.OpenStreamSync(ctx)
	if err != nil {
		return nil, fmt.Errorf("%w: open stream to %s (%s): %w", ErrNotConnected, c.p.id, addr, err)
	}
	if deadline, ok := ctx.Deadline(); ok {
		_ = s.SetWriteDeadline(deadline)
	}
	if _, err := s.Write([]byte{l.kind}); err != nil {
		s.CancelRead(quic.StreamErrorCode(codeStreamClosed))
		s.CancelWrite(quic.StreamErrorCode(codeStreamClosed))
		return nil, fmt.Errorf("%w: open stream to %s (%s): %w", ErrNotConnected, c.p.id, addr, err)
	}
	_ = s.SetWriteDeadline(time.Time{})
	return newStream(s, c.qc), nil
}

// connTo returns the up connection to the node at addr, dialing it if no
// peer has that address.
func (t *Transport) connTo(ctx context.Context, addr string) (*peerConn, error) {
	if p := t.peerByAddr(addr); p != nil {
		return p.waitUp(ctx)
	}
	qc, err := t.dial(ctx, addr, "")
	if err != nil {
		return nil, err
	}
	id := nodeIDOf(qc)
	c := t.adopt(qc, id, true, true)
	p := t.peerByID(id)
	if p == nil {
		return nil, fmt.Errorf("%w: %s at %s went away", ErrNotConnected, id, addr)
	}
	if c != nil {
		p.mu.Lock()
		p.adHocAddr = addr
		p.mu.Unlock()
	}
	return p.waitUp(ctx)
}

func (t *Transport) peerByAddr(addr string) *peer {
	for _, p := range *t.peerSnap.Load() {
		p.mu.Lock()
		match := p.addr == addr || p.adHocAddr == addr
		p.mu.Unlock()
		if match {
			return p
		}
	}
	return nil
}

func (t *Transport) peerByID(id string) *peer { return (*t.peerSnap.Load())[id] }

// acceptStreams routes the bidirectional streams a peer opens to the stream
// layer of their kind.
func (t *Transport) acceptStreams(c *peerConn) {
	for {
		s, err := c.qc.AcceptStream(c.qc.Context())
		if err != nil {
			return
		}
		if !t.spawn(func() { t.routeStream(c, s) }) {
			s.CancelRead(quic.StreamErrorCode(codeStreamClosed))
			s.CancelWrite(quic.StreamErrorCode(codeStreamClosed))
			return
		}
	}
}

// routeStream reads a stream's kind byte (within the handshake timeout) and
// queues it on its layer, or resets it.
func (t *Transport) routeStream(c *peerConn, s *quic.Stream) {
	reset := func() {
		s.CancelRead(quic.StreamErrorCode(codeStreamClosed))
		s.CancelWrite(quic.StreamErrorCode(codeStreamClosed))
	}
	_ = s.SetReadDeadline(time.Now().Add(t.cfg.HandshakeTimeout))
	var kind [1]byte
	if _, err := io.ReadFull(s, kind[:]); err != nil {
		reset()
		return
	}
	_ = s.SetReadDeadline(time.Time{})
	// Deliver under t.mu: StreamLayer.Close unregisters under it before
	// draining, so no stream is queued on a closed layer.
	t.mu.Lock()
	l := t.layers[kind[0]]
	queued := false
	if l != nil {
		select {
		case l.accept <- newStream(s, c.qc):
			queued = true
		default:
		}
	}
	t.mu.Unlock()
	switch {
	case l == nil:
		t.m.rejected.WithLabelValues(rejectProtocol).Inc()
		c.p.log.Debug().Str("kind", string(kind[:])).Msg("stream of unknown kind reset")
		reset()
	case !queued:
		c.p.log.Warn().Str("kind", string(kind[:])).Msg("stream layer backlog full; stream reset")
		reset()
	}
}

package consensus

import (
	"net"
	"sync"
	"time"

	"github.com/hashicorp/raft"
)

// trackedLayer adapts a StreamLayer to raft.StreamLayer, advertises the
// configured address, and remembers every connection it hands to Raft's
// NetworkTransport. The transport does not close the connections it
// accepted when it shuts down (their handlers exit only when the peer
// closes them), so Close closes all of them: after it, no goroutine of the
// transport is left blocked on a read.
type trackedLayer struct {
	inner StreamLayer
	addr  layerAddr

	mu     sync.Mutex
	closed bool
	conns  map[*trackedConn]struct{}
}

var _ raft.StreamLayer = (*trackedLayer)(nil)

func newTrackedLayer(inner StreamLayer, advertise string) *trackedLayer {
	return &trackedLayer{
		inner: inner,
		addr:  layerAddr{network: inner.Addr().Network(), address: advertise},
		conns: make(map[*trackedConn]struct{}),
	}
}

// layerAddr is the advertised address: Raft tells other members to reach
// this node at Addr().String().
type layerAddr struct{ network, address string }

func (a layerAddr) Network() string { return a.network }
func (a layerAddr) String() string  { return a.address }

func (l *trackedLayer) Accept() (net.Conn, error) {
	c, err := l.inner.Accept()
	if err != nil {
		return nil, err
	}
	return l.track(c)
}

func (l *trackedLayer) Dial(address raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	c, err := l.inner.Dial(string(address), timeout)
	if err != nil {
		return nil, err
	}
	return l.track(c)
}

func (l *trackedLayer) Addr() net.Addr { return l.addr }

// Close closes the inner listener and every connection still open. It is
// idempotent.
func (l *trackedLayer) Close() error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil
	}
	l.closed = true
	conns := l.conns
	l.conns = nil
	l.mu.Unlock()
	err := l.inner.Close()
	for c := range conns {
		_ = c.Conn.Close()
	}
	return err
}

func (l *trackedLayer) track(c net.Conn) (net.Conn, error) {
	tc := &trackedConn{Conn: c, layer: l}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		_ = c.Close()
		return nil, net.ErrClosed
	}
	l.conns[tc] = struct{}{}
	return tc, nil
}

func (l *trackedLayer) forget(c *trackedConn) {
	l.mu.Lock()
	if l.conns != nil {
		delete(l.conns, c)
	}
	l.mu.Unlock()
}

// trackedConn removes itself from its layer when closed.
type trackedConn struct {
	net.Conn
	layer *trackedLayer
	once  sync.Once
}

func (c *trackedConn) Close() error {
	c.once.Do(func() { c.layer.forget(c) })
	return c.Conn.Close()
}

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

// guardedTransport is Raft's NetworkTransport with a heartbeat handler that
// can be stopped and waited for. Raft answers heartbeats on the transport's
// own connection goroutines (a fast path beside its main loop), and such a
// heartbeat may still be writing the current term to the stable store after
// Raft.Shutdown returned; closing the store under it made Raft panic
// ("failed to save current term: closed"). Close stops the handler, waits
// for the heartbeat in progress, and only then closes the transport, so the
// stores can be closed after it.
type guardedTransport struct {
	*raft.NetworkTransport
	mu      sync.RWMutex
	stopped bool
}

// SetHeartbeatHandler wraps fn so that after stop no heartbeat reaches it;
// one refused goes unanswered, as Raft itself leaves heartbeats after its
// shutdown, and the transport's close ends the wait for its answer.
func (g *guardedTransport) SetHeartbeatHandler(fn func(raft.RPC)) {
	if fn == nil {
		g.NetworkTransport.SetHeartbeatHandler(nil)
		return
	}
	g.NetworkTransport.SetHeartbeatHandler(func(rpc raft.RPC) {
		g.mu.RLock()
		defer g.mu.RUnlock()
		if g.stopped {
			return
		}
		fn(rpc)
	})
}

// Close stops the heartbeat handler, waits for the one in progress, and
// closes the transport.
func (g *guardedTransport) Close() error {
	g.mu.Lock()
	g.stopped = true
	g.mu.Unlock()
	return g.NetworkTransport.Close()
}

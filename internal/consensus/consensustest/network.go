// Package consensustest provides an in-memory network for testing code that
// runs consensus.Stores: a StreamLayer per node built on net.Pipe, a
// Forwarder that calls the receiving node's handler directly, and faults
// (Disconnect, Partition, Heal) that cut both at once.
//
// A cut link refuses new streams and forwarded requests, and closes the
// streams already open across it, the way a connection reset would. It does
// not model delay or loss.
package consensustest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"sync"
	"time"
)

// ErrUnreachable is returned by Dial and Forward across a cut link.
var ErrUnreachable = errors.New("consensustest: unreachable")

// ErrRefused is returned by Dial and Forward to an address nobody listens on.
var ErrRefused = errors.New("consensustest: connection refused")

// Handler answers forwarded requests: a Store's HandleForward.
type Handler func(ctx context.Context, req []byte) ([]byte, error)

// Network is a set of in-memory nodes, keyed by address. Its zero value is
// not usable; call NewNetwork. It is safe for concurrent use.
type Network struct {
	mu        sync.Mutex
	listeners map[string]*Layer
	handlers  map[string]Handler
	cut       map[link]bool
	isolated  map[string]bool
	conns     map[*conn]struct{}
}

// link is an unordered pair of addresses.
type link struct{ a, b string }

func linkOf(a, b string) link {
	if a > b {
		a, b = b, a
	}
	return link{a, b}
}

// NewNetwork returns an empty network with every link up.
func NewNetwork() *Network {
	return &Network{
		listeners: make(map[string]*Layer),
		handlers:  make(map[string]Handler),
		cut:       make(map[link]bool),
		isolated:  make(map[string]bool),
		conns:     make(map[*conn]struct{}),
	}
}

// Listen returns the StreamLayer of the node at addr. The address stays
// taken until the layer is closed.
func (n *Network) Listen(addr string) (*Layer, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if _, ok := n.listeners[addr]; ok {
		return nil, fmt.Errorf("consensustest: address %s is in use", addr)
	}
	l := &Layer{net: n, addr: addr, accept: make(chan net.Conn), done: make(chan struct{})}
	n.listeners[addr] = l
	return l, nil
}

// Handle sets the handler for requests forwarded to addr (nil removes it).
func (n *Network) Handle(addr string, h Handler) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if h == nil {
		delete(n.handlers, addr)
		return
	}
	n.handlers[addr] = h
}

// Forwarder returns the Forwarder of the node at from.
func (n *Network) Forwarder(from string) *Forwarder { return &Forwarder{net: n, from: from} }

// Disconnect cuts every link of addr, including links to nodes that appear
// later, until Heal.
func (n *Network) Disconnect(addr string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.isolated[addr] = true
	n.dropCutLocked()
}

// Reconnect undoes Disconnect(addr); links cut by Partition stay cut.
func (n *Network) Reconnect(addr string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	delete(n.isolated, addr)
}

// Partition cuts every link between a node of one group and a node of
// another. Links within a group, and of nodes in no group, are untouched.
func (n *Network) Partition(groups ...[]string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	for i, g := range groups {
		for _, h := range groups[i+1:] {
			for _, a := range g {
				for _, b := range h {
					n.cut[linkOf(a, b)] = true
				}
			}
		}
	}
	n.dropCutLocked()
}

// Heal restores every link.
func (n *Network) Heal() {
	n.mu.Lock()
	defer n.mu.Unlock()
	clear(n.cut)
	clear(n.isolated)
}

// Reachable reports whether the link between a and b is up.
func (n *Network) Reachable(a, b string) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return !n.isCutLocked(a, b)
}

func (n *Network) isCutLocked(a, b string) bool {
	return a != b && (n.isolated[a] || n.isolated[b] || n.cut[linkOf(a, b)])
}

// dropCutLocked closes every open stream across a cut link.
func (n *Network) dropCutLocked() {
	for c := range n.conns {
		if n.isCutLocked(c.local, c.remote) {
			delete(n.conns, c)
			_ = c.Conn.Close()
		}
	}
}

func (n *Network) dial(from, to string, timeout time.Duration) (net.Conn, error) {
	n.mu.Lock()
	if n.isCutLocked(from, to) {
		n.mu.Unlock()
		return nil, fmt.Errorf("%w: %s -> %s", ErrUnreachable, from, to)
	}
	l, ok := n.listeners[to]
	n.mu.Unlock()
	if !ok {
		return nil, fmt.Errorf("%w: %s -> %s", ErrRefused, from, to)
	}
	client, server := net.Pipe()
	cc := &conn{Conn: client, net: n, local: from, remote: to}
	sc := &conn{Conn: server, net: n, local: to, remote: from}
	n.mu.Lock()
	n.conns[cc], n.conns[sc] = struct{}{}, struct{}{}
	n.mu.Unlock()
	var deadline <-chan time.Time
	if timeout > 0 {
		t := time.NewTimer(timeout)
		defer t.Stop()
		deadline = t.C
	}
	select {
	case l.accept <- sc:
		return cc, nil
	case <-l.done:
		_ = cc.Close()
		_ = sc.Close()
		return nil, fmt.Errorf("%w: %s -> %s", ErrRefused, from, to)
	case <-deadline:
		_ = cc.Close()
		_ = sc.Close()
		return nil, fmt.Errorf("consensustest: dial %s -> %s: timed out after %v", from, to, timeout)
	}
}

// Layer is one node's StreamLayer: a listener at its address and a dialer
// that opens in-memory streams to other layers.
type Layer struct {
	net    *Network
	addr   string
	accept chan net.Conn
	done   chan struct{}
	once   sync.Once
}

// Accept waits for a stream another node dialled.
func (l *Layer) Accept() (net.Conn, error) {
	select {
	case c := <-l.accept:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

// Close frees the address. Streams already open stay open.
func (l *Layer) Close() error {
	l.once.Do(func() {
		close(l.done)
		l.net.mu.Lock()
		if l.net.listeners[l.addr] == l {
			delete(l.net.listeners, l.addr)
		}
		l.net.mu.Unlock()
	})
	return nil
}

// Addr is the layer's address.
func (l *Layer) Addr() net.Addr { return addr(l.addr) }

// Dial opens a stream to the layer at address.
func (l *Layer) Dial(address string, timeout time.Duration) (net.Conn, error) {
	return l.net.dial(l.addr, address, timeout)
}

// addr is an in-memory address.
type addr string

func (a addr) Network() string { return "mem" }
func (a addr) String() string  { return string(a) }

// conn is one end of a stream, remembered so that a cut can close it.
type conn struct {
	net.Conn
	net           *Network
	local, remote string
}

func (c *conn) LocalAddr() net.Addr  { return addr(c.local) }
func (c *conn) RemoteAddr() net.Addr { return addr(c.remote) }

func (c *conn) Close() error {
	c.net.mu.Lock()
	delete(c.net.conns, c)
	c.net.mu.Unlock()
	return c.Conn.Close()
}

// Forwarder is one node's consensus.Forwarder: it calls the handler of the
// receiving address directly, unless the link is cut.
type Forwarder struct {
	net  *Network
	from string
}

// Forward runs the handler at address with a copy of req.
func (f *Forwarder) Forward(ctx context.Context, address string, req []byte) ([]byte, error) {
	f.net.mu.Lock()
	cut := f.net.isCutLocked(f.from, address)
	h, ok := f.net.handlers[address]
	f.net.mu.Unlock()
	switch {
	case cut:
		return nil, fmt.Errorf("%w: %s -> %s", ErrUnreachable, f.from, address)
	case !ok:
		return nil, fmt.Errorf("%w: %s -> %s", ErrRefused, f.from, address)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	// A handler's error comes with a response that says the same (as
	// consensus.Store.HandleForward's does): send the response when there is
	// one, as a node would.
	resp, err := h(ctx, slices.Clone(req))
	if resp == nil {
		return nil, err
	}
	// The answer crosses the same link: a cut while the handler ran loses it.
	if !f.net.Reachable(f.from, address) {
		return nil, fmt.Errorf("%w: %s <- %s", ErrUnreachable, f.from, address)
	}
	return slices.Clone(resp), nil
}

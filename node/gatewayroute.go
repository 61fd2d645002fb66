package node

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quotamesh/quotamesh"
	"github.com/quotamesh/quotamesh/client"
	"github.com/quotamesh/quotamesh/internal/route"
)

// With GatewayConfig.RouteHome, the decision APIs send each key to its
// home node (package route, as the SDK does) instead of deciding it here:
// one more round trip for the keys homed elsewhere, for the exactness of
// one node deciding all of a key. The node reaches its peers through an
// SDK client in strict mode, dialled on first use with the node's own
// certificate, which routes by the members and fails over as the SDK
// does. Off by default: design.md §11 measures both.

// homeRouter is the node's client to its peers for RouteHome.
type homeRouter struct {
	cert tls.Certificate

	mu     sync.Mutex // serialises dialling and closing
	c      atomic.Pointer[client.Client]
	closed bool

	table atomic.Pointer[routeTable]
}

// routeTable is the route table of one membership.
type routeTable struct {
	ids []string
	t   *route.Table
}

// homeDialTimeout bounds dialling the peers on first use.
const homeDialTimeout = 5 * time.Second

// decideAtHome decides at key's home node: here if this node is the home
// (or no membership is known), else through the client.
func (n *Node) decideAtHome(ctx context.Context, key string, k int64) (quotamesh.Decision, error) {
	home, ok := n.homeOf(key)
	if !ok || home == n.cfg.ID {
		return n.AllowN(ctx, key, k)
	}
	c, err := n.homeClient(ctx)
	if err != nil {
		// Deciding here is what the node would do without RouteHome.
		return n.AllowN(ctx, key, k)
	}
	return c.AllowN(ctx, key, k)
}

// homeOf is key's home among the current members.
func (n *Node) homeOf(key string) (string, bool) {
	h := n.gw.home
	ms := n.membership()
	ids := make([]string, len(ms))
	for i, m := range ms {
		ids[i] = m.ID
	}
	slices.Sort(ids)
	rt := h.table.Load()
	if rt == nil || !slices.Equal(rt.ids, ids) {
		rt = &routeTable{ids: ids, t: route.New(ids...)}
		h.table.Store(rt)
	}
	return rt.t.Home(key)
}

// homeClient returns the client to the peers, dialling it on first use.
func (n *Node) homeClient(ctx context.Context) (*client.Client, error) {
	h := n.gw.home
	if c := h.c.Load(); c != nil {
		return c, nil
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if c := h.c.Load(); c != nil {
		return c, nil
	}
	if h.closed {
		return nil, errClosed
	}
	var addrs []string
	for _, m := range n.membership() {
		if m.ID != n.cfg.ID {
			addrs = append(addrs, m.Address)
		}
	}
	if len(addrs) == 0 {
		return nil, errors.New("quotamesh/node: no other member to route to")
	}
	dctx, cancel := context.WithTimeout(ctx, homeDialTimeout)
	defer cancel()
	c, err := client.Dial(dctx, addrs, client.WithCA(n.gw.cas), client.WithCertificate(h.cert), client.WithStrict(),
		client.WithLogger(n.clientLog.With().Str("sub", "route").Logger()))
	if err != nil {
		if ok, _ := n.rejectLog.Allow("gateway-route", time.Now()); ok {
			n.clientLog.Warn().Err(err).Msg("cannot reach the other members to route decisions home; deciding here")
		}
		return nil, fmt.Errorf("quotamesh/node: routing home: %w", err)
	}
	h.c.Store(c)
	return c, nil
}

// close closes the client, if any; later calls decide here.
func (h *homeRouter) close() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.closed = true
	if c := h.c.Swap(nil); c != nil {
		_ = c.Close()
	}
}

package node

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quotamesh/quotamesh"
	"github.com/quotamesh/quotamesh/client"
)

// GatewayRoute says where the decision APIs decide a key (design.md §11,
// "Decide here, or at the key's home?").
type GatewayRoute string

const (
	// RouteThin (the default) sends a thin key to its home node and
	// decides any other here: a thin key spread over the nodes is decided
	// exactly at the cost of one more round trip, while a hot key costs no
	// hop and no single node's CPU. Thin is a limit and an offered rate
	// (as this node's views see it) both under engine.ThickPerMember
	// requests per member per slot (engine.Engine.Thin; design.md §7,
	// "Thin demand per node", and §11).
	RouteThin GatewayRoute = "thin"
	// RouteLocal decides every key on the node called: no hop, and the
	// thin-demand loss of design.md §7 for keys spread thinly.
	RouteLocal GatewayRoute = "local"
	// RouteHome sends every key to its home: one more round trip for the
	// keys homed elsewhere, however hot.
	RouteHome GatewayRoute = "home"
)

// The decision APIs send a key to its home node (package route, as the
// SDK does) through an SDK client in strict mode, dialled on first use
// with the node's own certificate, which routes by the members and fails
// over as the SDK does. When no other member can be reached, or the home
// and the members after it do not answer, the node decides here.

// homeRouter is the node's client to its peers, for RouteHome and
// RouteThin.
type homeRouter struct {
	cert tls.Certificate

	mu     sync.Mutex // serialises dialling and closing
	c      atomic.Pointer[client.Client]
	closed bool
}

// homeDialTimeout bounds dialling the peers on first use.
const homeDialTimeout = 5 * time.Second

// decideAtHome decides at key's home node: here if this node is the home
// (or no membership is known, or, unless always, the key is thick), else
// through the client, and here again if the client cannot get an answer.
func (n *Node) decideAtHome(ctx context.Context, key string, k int64, always bool) (quotamesh.Decision, error) {
	if n.state.Load() != stateServing {
		return n.AllowN(ctx, key, k) // the refusal, with its reason
	}
	home, ok := n.homeOf(key)
	if !ok || home == n.cfg.ID || (!always && !n.eng.Thin(n.now(), key)) {
		return n.AllowN(ctx, key, k)
	}
	c, err := n.homeClient(ctx)
	if err != nil {
		// Deciding here is what the node would do without routing.
		return n.AllowN(ctx, key, k)
	}
	d, err := c.AllowN(ctx, key, k)
	if errors.Is(err, quotamesh.ErrUnavailable) && ctx.Err() == nil {
		n.gw.routed.WithLabelValues("fallback").Inc()
		return n.AllowN(ctx, key, k)
	}
	n.gw.routed.WithLabelValues("home").Inc()
	return d, err
}

// homeOf is key's home among the current members: the table made when
// the membership was applied (peers.go), so a decision costs no copy of
// the members.
func (n *Node) homeOf(key string) (string, bool) {
	rt := n.routes.Load()
	if rt == nil {
		return "", false
	}
	return rt.Home(key)
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

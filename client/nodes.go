package client

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/quotamesh/quotamesh"
	"github.com/quotamesh/quotamesh/internal/route"
	"github.com/quotamesh/quotamesh/internal/wire"
	"github.com/quotamesh/quotamesh/transport"
)

// discoverEvery is how often the SDK asks a node for the membership, to
// connect to members that joined and let go of those that left.
const discoverEvery = 5 * time.Second

// link is the SDK's path to one node: its address, the calls queued for
// it, and the connection while there is one. One supervisor goroutine per
// link (re)connects it.
type link struct {
	c     *Client
	id    string
	addr  string
	queue *sendQueue

	mu   sync.Mutex
	cur  *conn         // nil while down
	upCh chan struct{} // closed when a connection is installed; renewed when it dies

	gone     chan struct{} // closed when the node left the membership
	goneOnce sync.Once
	done     chan struct{} // closed when the supervisor has exited
	tried    chan struct{} // closed when the supervisor's first attempt ended
	started  sync.Once
}

func newLink(c *Client, id, addr string) *link {
	return &link{c: c, id: id, addr: addr, queue: newSendQueue(c.cfg.maxInFlight), upCh: make(chan struct{}),
		gone: make(chan struct{}), done: make(chan struct{}), tried: make(chan struct{})}
}

// conn returns the live connection, nil while down.
func (l *link) conn() *conn {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.cur != nil && !l.cur.isDead() {
		return l.cur
	}
	return nil
}

func (l *link) up() bool { return l.conn() != nil }

// routes is an immutable snapshot of where keys go: the members (or, when
// the membership is unknown, the nodes the SDK reached), and their links.
type routes struct {
	table *route.Table
	links map[string]*link
	// nearest, with WithNearest, is the only node used.
	nearest string
}

// pick returns the link of key's home: the first node in the key's
// rendezvous order whose connection is up, skipping skip ("" for none).
// With no node up it returns nil.
func (c *Client) pick(h uint64, skip string) *link {
	rt := c.routes.Load()
	if rt.nearest != "" {
		if l := rt.links[rt.nearest]; l != nil && l.up() {
			return l
		}
		// The nearest is down: any other node will do until it is back.
	}
	id, ok := rt.table.HomeOf(h, func(id string) bool {
		if id == skip {
			return true
		}
		l := rt.links[id]
		return l == nil || !l.up()
	})
	if !ok {
		return nil
	}
	return rt.links[id]
}

// dialSeeds connects to every seed address at once and returns the
// connections that came up (at least one) within the dial timeout.
func (c *Client) dialSeeds(ctx context.Context, addrs []string) ([]*conn, error) {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.dialTimeout)
	defer cancel()
	type result struct {
		cn  *conn
		err error
	}
	results := make(chan result, len(addrs))
	for _, addr := range addrs {
		go func() {
			cn, err := c.dialOne(ctx, addr, nil)
			results <- result{cn, err}
		}()
	}
	var conns []*conn
	var errs []error
	for range addrs {
		r := <-results
		if r.err != nil {
			errs = append(errs, r.err)
			continue
		}
		if c.cfg.nearest && len(conns) > 0 {
			r.cn.fail(errLostRace) // WithNearest keeps the first only
			continue
		}
		conns = append(conns, r.cn)
		if c.cfg.nearest {
			cancel() // the others lost the race
		}
	}
	if len(conns) == 0 {
		return nil, dialErr(addrs, errs)
	}
	return conns, nil
}

// dialErr explains why no node could be reached, naming a refused
// certificate when that is why.
func dialErr(addrs []string, errs []error) error {
	for _, e := range errs {
		switch {
		case errors.Is(e, transport.ErrCertificateRefused):
			return fmt.Errorf("quotamesh/client: nodes %v refused the client's certificate (not signed by the cluster CA, expired, or missing where required): %w",
				addrs, errors.Join(append([]error{ErrCertificate}, errs...)...))
		case errors.Is(e, transport.ErrCertificate), errors.Is(e, transport.ErrWrongPeer):
			return fmt.Errorf("quotamesh/client: the client refused the certificate of the node at %v (not signed by the CA given with WithCA: another cluster's node?): %w",
				addrs, errors.Join(append([]error{ErrCertificate}, errs...)...))
		}
	}
	return fmt.Errorf("quotamesh/client: no node of %v reachable: %w", addrs, errors.Join(append([]error{quotamesh.ErrUnavailable}, errs...)...))
}

var errLostRace = errors.New("another node answered first")

// dialOne connects to addr and opens the request stream; l, if not nil,
// is the link the connection serves (its queue feeds the writer).
func (c *Client) dialOne(ctx context.Context, addr string, l *link) (*conn, error) {
	ccfg := transport.ClientConfig{
		Certificate: c.cfg.cert,
		CAs:         c.cfg.cas,
		NodeID:      c.cfg.nodeID,
		ServerName:  c.cfg.serverName,
		// The handshake is bounded by ctx; quic-go gives up after twice
		// HandshakeTimeout without progress.
		HandshakeTimeout: c.cfg.dialTimeout,
	}
	if l != nil && l.id != "" && c.cfg.nodeID == "" {
		ccfg.NodeID = l.id // a member's address must serve that member
	}
	if c.cfg.idleTimeout > 0 {
		ccfg.IdleTimeout, ccfg.KeepAlive = c.cfg.idleTimeout, c.cfg.idleTimeout/4
	}
	cc, err := transport.DialClient(ctx, addr, ccfg)
	if err != nil {
		return nil, err
	}
	s, err := cc.OpenStream(ctx)
	if err != nil {
		_ = cc.Close()
		return nil, fmt.Errorf("%s: %w", addr, err)
	}
	node := cc.Identity().Name
	return &conn{
		c: c, cc: cc, s: s, addr: addr, node: node, link: l,
		gen:  c.gens.Add(1),
		log:  c.log.With().Str("node", node).Str("addr", addr).Logger(),
		dead: make(chan struct{}),
	}, nil
}

// members asks cn's node for the membership.
func (c *Client) members(ctx context.Context, cn *conn) ([]wire.Member, error) {
	rep, err := c.adminOn(ctx, cn, wire.AdminRequest{Op: wire.AdminMembers})
	if err != nil {
		return nil, err
	}
	return rep.Members, nil
}

// setup builds the first routes from the seed connections: it asks one of
// them for the membership and connects to every member (WithNearest: the
// seed only), waiting within the dial timeout for each member's first
// attempt. The membership request is also the first exchange, where a node
// that refuses the client's certificate says so (TLS 1.3 checks it after
// the client's side of the handshake): setup then fails with ErrCertificate
// and starts nothing.
func (c *Client) setup(ctx context.Context, seeds []*conn) error {
	mctx, cancel := context.WithTimeout(ctx, c.cfg.dialTimeout)
	defer cancel()
	// The seeds' readers are not running yet: the request gets its own
	// stream.
	ms, err := c.members(mctx, seeds[0])
	if isCertErr(err) {
		for _, cn := range seeds {
			cn.fail(err)
		}
		return fmt.Errorf("quotamesh/client: the node at %s refused the client's certificate (signed by another CA, expired, or missing where one is required): %w: %w",
			seeds[0].addr, ErrCertificate, err)
	}
	links := make(map[string]*link)
	ids := make([]string, 0, len(seeds))
	for _, cn := range seeds {
		l := newLink(c, cn.node, cn.addr)
		l.install(cn)
		links[cn.node] = l
		ids = append(ids, cn.node)
	}
	rt := &routes{links: links}
	if c.cfg.nearest {
		rt.nearest = seeds[0].node
		rt.table = route.New(ids...)
		c.routes.Store(rt)
		c.startLinks(links)
		return nil
	}
	if err != nil || len(ms) == 0 {
		// An older node, or no answer: route among the nodes reached.
		c.log.Warn().Err(err).Strs("nodes", ids).Msg("membership unknown; routing among the nodes given")
		rt.table = route.New(ids...)
		c.routes.Store(rt)
		c.startLinks(links)
		return nil
	}
	memberIDs := make([]string, 0, len(ms))
	var fresh []*link
	for _, m := range ms {
		memberIDs = append(memberIDs, m.Node)
		if links[m.Node] == nil {
			l := newLink(c, m.Node, m.Addr)
			links[m.Node] = l
			fresh = append(fresh, l)
		}
	}
	// A seed that is not a member (it left, or has not joined yet) is kept
	// reachable for admin calls but not routed to.
	rt.table = route.New(memberIDs...)
	c.routes.Store(rt)
	c.startLinks(links)
	// Wait for the first attempt at every new member, within the dial
	// timeout: keys routed elsewhere meanwhile would split their demand.
	for _, l := range fresh {
		select {
		case <-l.upSignal():
		case <-mctx.Done():
		case <-l.firstTry():
		}
	}
	return nil
}

// startLinks starts the supervisor of every link not yet started.
func (c *Client) startLinks(links map[string]*link) {
	for _, l := range links {
		l.startOnce()
	}
}

// refreshMembers asks a node for the membership and reconciles the links:
// new members get a link, links of nodes that left are closed once their
// calls moved elsewhere.
func (c *Client) refreshMembers() {
	rt := c.routes.Load()
	if rt.nearest != "" {
		return
	}
	var cn *conn
	for _, id := range rt.table.Nodes() {
		if l := rt.links[id]; l != nil {
			if cn = l.conn(); cn != nil {
				break
			}
		}
	}
	if cn == nil {
		return
	}
	ctx, cancel := context.WithTimeout(c.stopCtx, c.cfg.dialTimeout)
	defer cancel()
	ms, err := c.members(ctx, cn)
	if err != nil || len(ms) == 0 {
		return
	}
	ids := make([]string, 0, len(ms))
	addrs := make(map[string]string, len(ms))
	for _, m := range ms {
		ids = append(ids, m.Node)
		addrs[m.Node] = m.Addr
	}
	if slices.Equal(ids, rt.table.Nodes()) {
		return
	}
	links := maps.Clone(rt.links)
	var added []*link
	for _, id := range ids {
		if links[id] == nil {
			l := newLink(c, id, addrs[id])
			links[id] = l
			added = append(added, l)
		}
	}
	var removed []*link
	for id, l := range links {
		if _, ok := addrs[id]; !ok {
			delete(links, id)
			removed = append(removed, l)
		}
	}
	c.routes.Store(&routes{table: route.New(ids...), links: links})
	c.log.Info().Strs("members", ids).Msg("membership changed")
	for _, l := range added {
		l.startOnce()
	}
	for _, l := range removed {
		l.close()
	}
}

// allLinks returns every link of the current routes.
func (c *Client) allLinks() []*link {
	rt := c.routes.Load()
	if rt == nil {
		return nil
	}
	out := make([]*link, 0, len(rt.links))
	for _, id := range slices.Sorted(maps.Keys(rt.links)) {
		out = append(out, rt.links[id])
	}
	return out
}

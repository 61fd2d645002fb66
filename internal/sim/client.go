// SDK clients as actors: the real client's use of package lease (client/
// keys.go and client.go), on simulated time.

package sim

import (
	"fmt"
	"slices"
	"time"

	"github.com/quotamesh/quotamesh/internal/accuracy"
	"github.com/quotamesh/quotamesh/internal/engine"
	"github.com/quotamesh/quotamesh/internal/lease"
	"github.com/quotamesh/quotamesh/internal/route"
	"github.com/quotamesh/quotamesh/window"
)

// maxClients bounds Config.Clients.
const maxClients = 1000

// Defaults of the simulated SDK, the real SDK's (client.DefaultMaxKeys,
// client.DefaultRequestTimeout) unless said otherwise.
const (
	// DefaultClientRTT is a client link's round trip by default: a QUIC
	// request and its answer between processes on one machine, a little
	// more than loopback's own.
	DefaultClientRTT     = 200 * time.Microsecond
	defaultClientMaxKeys = 10_000
	defaultClientTimeout = 500 * time.Millisecond
	fullSweepEvery       = time.Second
)

// ClientConfig tunes the simulated SDK clients (Config.Clients).
type ClientConfig struct {
	// RTT is the round trip of each client's link to any node (default
	// DefaultClientRTT); Jitter adds a uniform random delay in [0, Jitter)
	// to each message; Loss is the probability that a message needs a
	// retransmission, which delays it (and the messages behind it on its
	// link) by RTO (default 3×RTT + 1 ms), doubling for each further loss.
	RTT, Jitter time.Duration
	Loss        float64
	RTO         time.Duration
	// Strict makes every call a round trip to the key's node
	// (client.WithStrict).
	Strict bool
	// Nearest sends every key to the client's own node instead of its
	// home (client.WithNearest).
	Nearest bool
	// Lease is the lease logic's configuration (zero fields: the SDK's
	// defaults; TTL is client.WithLeaseTTL).
	Lease lease.Config
	// MaxKeys bounds the keys a client keeps lease state for; further keys
	// are decided call by call (default 10,000, as the SDK's).
	MaxKeys int
	// Timeout is how long a request to a node that is down waits before it
	// fails (the SDK's request timeout, default 500 ms).
	Timeout time.Duration
}

func (c ClientConfig) withDefaults() ClientConfig {
	if c.RTT == 0 {
		c.RTT = DefaultClientRTT
	}
	if c.RTO == 0 {
		c.RTO = 3*c.RTT + time.Millisecond
	}
	if c.MaxKeys == 0 {
		c.MaxKeys = defaultClientMaxKeys
	}
	if c.Timeout == 0 {
		c.Timeout = defaultClientTimeout
	}
	c.Lease = c.Lease.WithDefaults()
	return c
}

func (c ClientConfig) validate() error {
	switch {
	case c.RTT < 0 || c.RTT > 10*time.Second || c.Jitter < 0 || c.Jitter > 10*time.Second:
		return fmt.Errorf("%w: client rtt %v, jitter %v: use 0 to 10s", ErrInvalid, c.RTT, c.Jitter)
	case c.Loss < 0 || c.Loss >= 1:
		return fmt.Errorf("%w: client loss %v, use [0, 1)", ErrInvalid, c.Loss)
	case c.RTO < 0 || c.RTO > 10*time.Second:
		return fmt.Errorf("%w: client rto %v, use 0 to 10s", ErrInvalid, c.RTO)
	case c.MaxKeys < 0:
		return fmt.Errorf("%w: client max keys %d, use 0 (the default) or more", ErrInvalid, c.MaxKeys)
	case c.Timeout < 0:
		return fmt.Errorf("%w: client timeout %v, use 0 (the default) or more", ErrInvalid, c.Timeout)
	}
	if err := c.Lease.Validate(); err != nil {
		return fmt.Errorf("%w: client: %w", ErrInvalid, err)
	}
	return nil
}

// sdk is one SDK client.
type sdk struct {
	idx      int // among all clients
	node     int // the node it sits beside: its arrivals are that node's
	keys     map[int32]*sdkKey
	filter   *lease.Filter // counts calls of keys without state (client.Client.filter)
	all      []*sdkKey     // every key with state, in creation order
	live     []*sdkKey     // keys the housekeeper looks at every tick
	lastFull int64
	links    []clientLink // per node
}

// clientLink keeps each direction of a client's link to a node in order,
// as a QUIC stream does.
type clientLink struct{ toNode, toClient time.Duration }

// sdkKey is a key's state at a client (client.keyEntry).
type sdkKey struct {
	id             int32
	name           string
	h              uint64
	k              *lease.Key
	listed, queued bool
	gone           bool
	waiting        []int32 // calls waiting for the lease request out (client.awaitRenewal)
}

// clientMsg is a request of a client and, once answered, the answer.
type clientMsg struct {
	client int
	node   int
	key    *sdkKey // nil: a call without lease state
	keyID  int32
	rec    int32 // the call waiting for the answer; -1: none
	req    lease.Request
	sent   int64 // the client's clock when sent
	rep    engine.Reply
	err    error         // the node's answer was an error
	lost   bool          // no answer: the node was down
	at     time.Duration // the node's clock when it decided, on the run's scale (the reply's Decided)
}

// startClients makes Clients clients per node and starts their
// housekeeping ticks at random phases.
func (s *sim) startClients() {
	if s.cfg.Clients == 0 {
		return
	}
	tick := s.clientTick()
	for i := range s.cfg.Nodes {
		for range s.cfg.Clients {
			c := &sdk{idx: len(s.clients), node: i, keys: map[int32]*sdkKey{}, links: make([]clientLink, s.cfg.Nodes),
				filter: lease.NewFilter(s.cfg.Client.Lease, 0)}
			s.clients = append(s.clients, c)
			s.q.push(event{at: time.Duration(s.crng.Int64N(int64(tick))), kind: evClientTick, node: c.idx})
		}
	}
}

// clientTick is the SDK housekeeper's period: a quarter TTL, within
// [1 ms, 10 ms].
func (s *sim) clientTick() time.Duration {
	return min(max(s.cfg.Client.Lease.TTL/4, time.Millisecond), 10*time.Millisecond)
}

// clientNow is the clients' clock (leases are timed on it alone).
func (s *sim) clientNow() int64 { return base + int64(s.now) }

// clientHome is the node client c sends key's requests to: the key's home
// among the nodes up, or with Nearest the client's own node.
func (s *sim) clientHome(c *sdk, name string, h uint64) int {
	if s.cfg.Client.Nearest {
		return c.node
	}
	id, ok := s.routes.HomeOf(h, func(id string) bool { return s.nodes[s.nodeIndex(id)].down })
	if !ok {
		return c.node
	}
	return s.nodeIndex(id)
}

// nodeIndex is the index of node id ("n%03d").
func (s *sim) nodeIndex(id string) int {
	i := 0
	for _, b := range id[1:] {
		i = i*10 + int(b-'0')
	}
	return i
}

// entry returns c's new warm state of key (named name, hashed h) once the
// key's calls here could fill a lease (lease.Filter) unless MaxKeys keys
// hold state; nil otherwise (client.Client.AllowN).
func (s *sim) entry(c *sdk, key int32, name string, h uint64, now int64) *sdkKey {
	if !c.filter.Note(now, h, 1) || len(c.keys) >= s.cfg.Client.MaxKeys {
		return nil
	}
	ke := &sdkKey{id: key, name: name, h: h, k: lease.NewWarmKey(s.cfg.Client.Lease, now)}
	c.keys[key] = ke
	c.all = append(c.all, ke)
	return ke
}

// clientCall is one call of client c for key, logged as rec: decided from
// a lease, denied locally, or sent to the key's node (client.AllowN).
func (s *sim) clientCall(c *sdk, key int, rec int32) {
	now := s.clientNow()
	ke := c.keys[int32(key)] // none in strict mode
	if ke == nil {
		name := s.keyName(key)
		h := route.Hash(name)
		if !s.cfg.Client.Strict {
			ke = s.entry(c, int32(key), name, h, now)
		}
		if ke == nil {
			s.clientSend(c, s.clientHome(c, name, h), &clientMsg{keyID: int32(key), rec: rec, req: lease.Request{N: 1}})
			return
		}
	}
	s.takeOrAsk(c, ke, rec, now)
}

// takeOrAsk decides call rec of client c for ke at now from its lease,
// denies it locally, has it wait for the lease request out, or sends it
// to the key's node (client.allowLease, client.awaitRenewal; the client's
// bound on the wait, its request timeout, is longer than any answer here).
func (s *sim) takeOrAsk(c *sdk, ke *sdkKey, rec int32, now int64) {
	v, left, _ := ke.k.Take(now, 1)
	switch v {
	case lease.Admit:
		s.decided(rec, accuracy.Admitted)
		s.res.LocalDecisions++
		if l := ke.k.Current(); l != nil {
			if q := l.Granted / 4; left <= q && left+1 > q {
				s.poke(c, ke) // a quarter left: renew now
			}
		}
		return
	case lease.Deny:
		s.decided(rec, accuracy.Denied)
		s.res.LocalDecisions++
		return
	}
	if ke.k.Renewing() {
		ke.waiting = append(ke.waiting, rec)
		return
	}
	home := s.clientHome(c, ke.name, ke.h)
	req := ke.k.Decide(now, 1, s.ids[home])
	s.clientSend(c, home, &clientMsg{key: ke, keyID: ke.id, rec: rec, req: req})
}

// poke has the housekeeper look at ke at once (client.poke).
func (s *sim) poke(c *sdk, ke *sdkKey) {
	if ke.queued {
		return
	}
	ke.queued = true
	s.q.push(event{at: s.now, kind: evClientPoke, node: c.idx, key: ke.id})
}

// clientSend sends m from client c to node over their link.
func (s *sim) clientSend(c *sdk, node int, m *clientMsg) {
	m.client, m.node, m.sent = c.idx, node, s.clientNow()
	s.res.ClientRequests++
	if m.req.Want > 0 {
		s.res.LeaseRequests++
	}
	l := &c.links[node]
	l.toNode = max(s.now+s.clientDelay(), l.toNode)
	s.q.push(event{at: l.toNode, kind: evToNode, node: node, cm: m})
}

// clientDelay is one message's one-way delay on a client link.
func (s *sim) clientDelay() time.Duration {
	cc := &s.cfg.Client
	d := cc.RTT / 2
	if cc.Jitter > 0 {
		d += time.Duration(s.rng.Int64N(int64(cc.Jitter)))
	}
	for rto := cc.RTO; cc.Loss > 0 && s.rng.Float64() < cc.Loss && rto < 10*time.Second; rto *= 2 {
		d += rto
	}
	return d
}

// handleClient handles the events of the clients.
func (s *sim) handleClient(ev event) {
	switch ev.kind {
	case evToNode:
		m := ev.cm
		c := s.clients[m.client]
		n := s.nodes[ev.node]
		if n.down {
			// No answer: the SDK gives up after its request timeout.
			m.lost = true
			s.q.push(event{at: s.now + s.cfg.Client.Timeout, kind: evToClient, node: c.idx, cm: m})
			return
		}
		name := s.keyName(int(m.keyID))
		if m.key != nil {
			name = m.key.name
		}
		now := s.nodeTime(n)
		m.rep, m.err = n.eng.Request(now, engine.Request{Key: name, Client: uint64(m.client*len(s.nodes) + ev.node + 1),
			N: m.req.N, Want: m.req.Want, Offered: m.req.Offered, SettleID: m.req.Settle.ID, SettleUsed: m.req.Settle.Used})
		m.at = time.Duration(now - base - int64(s.cfg.Warmup))
		l := &c.links[ev.node]
		l.toClient = max(s.now+s.clientDelay(), l.toClient)
		s.q.push(event{at: l.toClient, kind: evToClient, node: c.idx, cm: m})
	case evToClient:
		s.answered(s.clients[ev.node], ev.cm)
	case evClientTick:
		c := s.clients[ev.node]
		s.q.push(event{at: s.now + s.clientTick(), kind: evClientTick, node: c.idx})
		s.housekeep(c)
	case evClientPoke:
		c := s.clients[ev.node]
		if ke := c.keys[ev.key]; ke != nil && !ke.gone {
			ke.queued = false
			s.plan(c, ke, s.clientNow())
		}
	}
}

// answered gives the lease logic the answer to m (client.applyTo) and
// decides the call waiting for it.
func (s *sim) answered(c *sdk, m *clientMsg) {
	now := s.clientNow()
	var rep *lease.Reply
	if !m.lost {
		r := &m.rep
		rep = &lease.Reply{Node: s.ids[m.node], Allowed: r.Allowed, LeaseID: r.LeaseID, Granted: r.Granted, TTL: r.TTL,
			RetryAfter: r.RetryAfter, Limit: r.Limit, Remaining: r.Remaining}
		switch {
		case m.err != nil:
			rep.Granted, rep.LeaseID = 0, 0
		case !r.Unlimited:
			rep.NoRoom = m.req.NoRoom(r.Allowed, r.Granted, r.Remaining)
		case r.RetryAfter == window.Never:
			rep.NoRoom = true
		}
	}
	if ke := m.key; ke != nil && !ke.gone {
		ke.k.Apply(now, m.sent, m.req, rep)
		if !ke.k.Idle() || ke.k.Warm() {
			s.listLive(c, ke)
		}
		if m.req.Want > 0 && len(ke.waiting) > 0 {
			waiting := ke.waiting
			ke.waiting = nil
			for _, rec := range waiting {
				s.takeOrAsk(c, ke, rec, now)
			}
		}
	}
	if m.rec < 0 {
		return
	}
	switch {
	case m.lost || m.err != nil:
		s.decided(m.rec, accuracy.Failed)
	case m.rep.Allowed:
		s.decided(m.rec, accuracy.Admitted)
		s.log.At(int(m.rec)).Decided = m.at // as the SDK reports a node's decision
	default:
		s.decided(m.rec, accuracy.Denied)
	}
}

// listLive puts ke on c's list of keys looked at every tick, once.
func (s *sim) listLive(c *sdk, ke *sdkKey) {
	if !ke.listed {
		ke.listed = true
		c.live = append(c.live, ke)
	}
}

// housekeep is one tick of c's housekeeper (client.housekeep): every live
// key is planned, and once a second every key.
func (s *sim) housekeep(c *sdk) {
	now := s.clientNow()
	live := slices.Clone(c.live) // plan may list keys anew
	c.live = c.live[:0]
	for _, ke := range live {
		ke.listed = false
	}
	for _, ke := range live {
		s.plan(c, ke, now)
		if !ke.gone && (!ke.k.Idle() || ke.k.Warm()) {
			s.listLive(c, ke)
		}
	}
	if now-c.lastFull >= int64(fullSweepEvery) {
		c.lastFull = now
		for _, ke := range slices.Clone(c.all) {
			if !ke.listed && !ke.gone {
				s.plan(c, ke, now)
			}
		}
		c.all = slices.DeleteFunc(c.all, func(ke *sdkKey) bool { return ke.gone })
	}
}

// plan sends what ke needs at now (client.plan): a renewal or report to
// its home, settlements owed to other nodes; and forgets an idle key.
func (s *sim) plan(c *sdk, ke *sdkKey, now int64) {
	home := s.clientHome(c, ke.name, ke.h)
	req, forget := ke.k.Plan(now, s.ids[home])
	switch {
	case !req.Empty():
		s.clientSend(c, home, &clientMsg{key: ke, keyID: ke.id, rec: -1, req: req})
	case forget:
		ke.gone = true
		delete(c.keys, ke.id)
		return
	}
	for _, st := range slices.Clone(ke.k.Owed()) {
		if st.Node == s.ids[home] {
			continue // rides on the next request to the home
		}
		if st = ke.k.TakeOwed(st.Node); st.ID != 0 {
			s.clientSend(c, s.nodeIndex(st.Node), &clientMsg{key: ke, keyID: ke.id, rec: -1, req: lease.Request{Settle: st}})
		}
	}
}

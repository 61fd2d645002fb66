package client

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quotamesh/quotamesh"
	"github.com/quotamesh/quotamesh/internal/clock"
	"github.com/quotamesh/quotamesh/internal/lease"
	"github.com/quotamesh/quotamesh/internal/route"
	"github.com/quotamesh/quotamesh/internal/wire"
	"github.com/quotamesh/quotamesh/limits"
	"github.com/rs/zerolog"
)

// Client is a remote QuotaMesh limiter: it sends each key's decisions to
// the key's home node, and decides locally from leases for keys it calls
// often enough (see the package documentation). It satisfies
// quotamesh.Limiter and is safe for concurrent use. Create one with Dial
// and share it; Close it when done.
type Client struct {
	cfg      config
	leaseCfg lease.Config
	seeds    []string
	log      zerolog.Logger
	clk      clock.Source
	hclk     *clock.Handle // the shared coarse clock, released by Close

	closed    atomic.Bool
	closeOnce sync.Once
	closing   chan struct{}      // closed when Close begins
	housekept chan struct{}      // closed when the housekeeper is done
	stop      chan struct{}      // closed once leases are settled: the connections end
	stopCtx   context.Context    // done with stop
	stopFn    context.CancelFunc //
	wg        sync.WaitGroup     // housekeeper, link supervisors, discovery

	// Calls in flight (call.go).
	nextID  atomic.Uint64
	mu      sync.Mutex
	pending map[uint64]*call
	shut    bool // Close has failed every pending call; guarded by mu
	slots   chan struct{}
	parkMu  sync.Mutex
	parked  []*call       // calls for which no node was up
	changed chan struct{} // closed and renewed when a link goes up or down; guarded by parkMu

	// Nodes (nodes.go).
	gens        atomic.Uint64
	routes      atomic.Pointer[routes]
	discovering atomic.Bool
	startedHK   atomic.Bool // Dial started the housekeeper

	// Keys (keys.go).
	filter   *lease.Filter // counts the calls of keys without state; nil in strict mode
	keys     sync.Map      // string -> *keyEntry
	nkeys    atomic.Int64
	urgentMu sync.Mutex
	urgent   []*keyEntry   // keys to look at now
	added    []*keyEntry   // keys that became live, for the housekeeper's list
	wake     chan struct{} // capacity 1: urgent is not empty

	// Counters (Stats).
	batches, requests, timeouts, failovers   atomic.Int64
	overloads                                atomic.Int64 // calls answered by the overload policy: no place in flight
	nodeOverloads                            atomic.Int64 // ... a node answered "overloaded"
	leaseRequests, tokensGranted, tokensBack atomic.Int64
	leasesAsked                              atomic.Int64
	nodeDecisions                            atomic.Int64
}

// Dial connects to the cluster through the nodes at addrs (UDP host:port):
// it dials them all at once, asks the first to answer for the membership,
// and connects to every member (WithNearest keeps only the nearest node).
// It fails with an error wrapping quotamesh.ErrUnavailable when no node
// answers within ctx and the dial timeout, with one wrapping ErrCertificate
// when the nodes refused the client's certificate, and with
// ErrInvalidConfig for bad options (WithCA is required).
func Dial(ctx context.Context, addrs []string, opts ...Option) (*Client, error) {
	cfg := defaultConfig()
	for _, o := range opts {
		o(&cfg)
	}
	if err := cfg.validate(addrs); err != nil {
		return nil, err
	}
	c := &Client{
		cfg:       cfg,
		leaseCfg:  lease.Config{TTL: cfg.leaseTTL, ForgetAfter: cfg.leaseForget}.WithDefaults(),
		seeds:     slices.Compact(slices.Clone(addrs)),
		log:       cfg.log.With().Str("component", "client").Logger(),
		closing:   make(chan struct{}),
		housekept: make(chan struct{}),
		stop:      make(chan struct{}),
		pending:   make(map[uint64]*call),
		slots:     make(chan struct{}, cfg.maxInFlight),
		changed:   make(chan struct{}),
		wake:      make(chan struct{}, 1),
	}
	if !cfg.strict && cfg.maxKeys > 0 {
		c.filter = lease.NewFilter(c.leaseCfg, 0)
	}
	c.stopCtx, c.stopFn = context.WithCancel(context.Background())
	c.clk = cfg.clock
	if c.clk == nil {
		c.hclk = clock.Acquire()
		c.clk = c.hclk
	}
	seeds, err := c.dialSeeds(ctx, c.seeds)
	if err != nil {
		c.stopFn()
		if c.hclk != nil {
			c.hclk.Release()
		}
		return nil, err
	}
	if err := c.setup(ctx, seeds); err != nil {
		c.stopFn()
		if c.hclk != nil {
			c.hclk.Release()
		}
		return nil, err
	}
	if err := c.certRefused(); err != nil {
		_ = c.Close()
		return nil, err
	}
	c.startedHK.Store(true)
	c.wg.Add(1)
	go func() { defer c.wg.Done(); defer close(c.housekept); c.housekeep() }()
	return c, nil
}

// certRefused reports the nodes' refusal of the client's certificate when
// no connection survived setup for that reason: TLS 1.3 checks the client's
// certificate after the client's side of the handshake, so the refusal
// arrives at the first exchange (the membership request), not at the
// dial.
func (c *Client) certRefused() error {
	var refused error
	for _, l := range c.allLinks() {
		if l.up() {
			return nil
		}
		l.mu.Lock()
		if l.cur != nil && l.cur.err != nil && isCertErr(l.cur.err) {
			refused = l.cur.err
		}
		l.mu.Unlock()
	}
	if refused != nil {
		return fmt.Errorf("quotamesh/client: the nodes refused the client's certificate (signed by another CA, expired, or missing where one is required): %w: %w", ErrCertificate, refused)
	}
	return nil
}

// Allow is AllowN(ctx, key, 1).
func (c *Client) Allow(ctx context.Context, key string) (quotamesh.Decision, error) {
	return c.AllowN(ctx, key, 1)
}

// AllowN asks to admit n requests for key at once: all or none.
//
// With a live lease for key it decides locally, without a lock, an
// allocation or a wait, and ignores ctx as an embedded node does. Otherwise
// it is one round trip to the key's home node, within ctx and the request
// timeout; in strict mode every call is.
//
// Errors: limits.ErrInvalidKey for a malformed key and quotamesh.ErrInvalidN
// for n ≤ 0 (both before any network traffic); quotamesh.ErrExceedsLimit
// when n is above the key's whole limit; quotamesh.ErrTooManyKeys when the
// node refused a new key (the Decision then holds the node's answer);
// quotamesh.ErrClosed after Close; quotamesh.ErrUnavailable when no node
// answered in time; ctx's error when it ended first.
func (c *Client) AllowN(ctx context.Context, key string, n int64) (quotamesh.Decision, error) {
	if n <= 0 {
		return quotamesh.Decision{}, fmt.Errorf("quotamesh/client: n %d for key %q: %w", n, clip(key), quotamesh.ErrInvalidN)
	}
	if c.closed.Load() {
		return quotamesh.Decision{}, closedErr("allow")
	}
	if !c.cfg.strict {
		if v, ok := c.keys.Load(key); ok {
			return c.overloaded(c.allowLease(ctx, v.(*keyEntry), n))
		}
	}
	if err := limits.ValidateKey(key); err != nil {
		return quotamesh.Decision{}, fmt.Errorf("quotamesh/client: %w", err)
	}
	h := route.Hash(key)
	if c.filter != nil {
		// A key without state gets it once its calls here could fill a
		// lease (lease.Filter); until then each call is a decision by its
		// home node, exactly as in strict mode.
		if now := c.clk.Now(); c.filter.Note(now, h, n) {
			if ke := c.entry(key, h, now); ke != nil {
				return c.overloaded(c.allowLease(ctx, ke, n))
			}
		}
	}
	return c.overloaded(c.decide(ctx, key, h, n))
}

// overloaded applies the overload policy to a call that failed with
// quotamesh.ErrOverloaded (the SDK's own or a node's).
func (c *Client) overloaded(d quotamesh.Decision, err error) (quotamesh.Decision, error) {
	if err == nil || !errors.Is(err, quotamesh.ErrOverloaded) {
		return d, err
	}
	switch c.cfg.overload {
	case OverloadAllow:
		return quotamesh.Decision{Allowed: true}, err
	case OverloadDeny:
		return quotamesh.Decision{RetryAfter: max(c.cfg.overloadWait, time.Millisecond)}, err
	}
	return quotamesh.Decision{}, err
}

// decide asks key's home node to decide n requests: one round trip. h is
// the key's route.Hash.
func (c *Client) decide(ctx context.Context, key string, h uint64, n int64) (quotamesh.Decision, error) {
	cl := &call{req: wire.ClientRequest{Op: wire.OpDecide, Key: key, N: n}, h: h}
	c.nodeDecisions.Add(1)
	if err := c.roundTrip(ctx, cl); err != nil {
		return quotamesh.Decision{}, err
	}
	return decisionOf(&cl.reply), c.replyErr(cl)
}

// replyErr is the error of a call's reply (nil for CodeOK), counting the
// node's "overloaded" answers.
func (c *Client) replyErr(cl *call) error {
	if cl.reply.Code == wire.CodeOverloaded {
		c.nodeOverloads.Add(1)
	}
	return codeErr(cl.reply.Code, cl.reply.Message)
}

// Close stops the client: calls in progress and later return
// quotamesh.ErrClosed. It settles its leases with the nodes that granted
// them (waiting at most the request timeout, and 100 ms at most), closes
// the connections and waits for every goroutine the client started. It is
// idempotent and always returns nil.
func (c *Client) Close() error {
	c.closeOnce.Do(func() {
		c.closed.Store(true)
		close(c.closing)
		if c.startedHK.Load() {
			<-c.housekept // it settles leases first
		}
		close(c.stop)
		c.stopFn()
		c.wg.Wait()
		c.mu.Lock()
		c.shut = true
		left := make([]*call, 0, len(c.pending))
		for id, cl := range c.pending {
			delete(c.pending, id)
			left = append(left, cl)
		}
		c.mu.Unlock()
		for _, cl := range left {
			c.finish(cl, nil, closedErr("request"))
		}
		if c.hclk != nil {
			c.hclk.Release()
		}
	})
	return nil
}

// Node returns the ID of a node the client is connected to (the nearest
// with WithNearest), or "" while none is.
func (c *Client) Node() string {
	rt := c.routes.Load()
	if rt == nil {
		return ""
	}
	if rt.nearest != "" {
		if l := rt.links[rt.nearest]; l != nil && l.up() {
			return l.id
		}
	}
	for _, l := range c.allLinks() {
		if l.up() {
			return l.id
		}
	}
	return ""
}

// Nodes returns the IDs of the nodes the client is connected to, sorted.
func (c *Client) Nodes() []string {
	var out []string
	for _, l := range c.allLinks() {
		if l.up() {
			out = append(out, l.id)
		}
	}
	return out
}

// Stats are the client's counters since Dial.
type Stats struct {
	// Node is a node connected to ("" while none is); Nodes all of them.
	Node  string
	Nodes []string
	// Keys is the number of keys holding lease state.
	Keys int64
	// Batches and Requests count frames written and the requests in them
	// (decisions, lease requests and settlements).
	Batches, Requests int64
	// Timeouts counts requests that got no reply within the request
	// timeout.
	Timeouts int64
	// Failovers counts connections lost.
	Failovers int64
	// LeaseRequests counts requests of the lease logic answered (decisions
	// included); TokensGranted the lease tokens they brought; Settlements
	// the leases settled with the node that granted them.
	LeaseRequests, TokensGranted, Settlements int64
	// LeasesAsked counts requests sent that asked for a lease (a renewal,
	// or a lease riding on a decision).
	LeasesAsked int64
	// NodeDecisions counts calls sent to a node to decide (every call in
	// strict mode; in the lease mode, the calls of keys without a lease).
	NodeDecisions int64
	// Overloads counts calls answered by the overload policy (their error
	// wraps quotamesh.ErrOverloaded): every place in flight stayed taken
	// for the overload wait, or a node answered "overloaded".
	Overloads int64
	// NodeOverloads counts those of them a node answered "overloaded" (its
	// Config.ClientMaxWait).
	NodeOverloads int64
}

// Stats returns the client's counters. It takes no lock the decision path
// uses.
func (c *Client) Stats() Stats {
	return Stats{
		Node:          c.Node(),
		Nodes:         c.Nodes(),
		Keys:          c.nkeys.Load(),
		Batches:       c.batches.Load(),
		Requests:      c.requests.Load(),
		Timeouts:      c.timeouts.Load(),
		Failovers:     c.failovers.Load(),
		LeaseRequests: c.leaseRequests.Load(),
		TokensGranted: c.tokensGranted.Load(),
		Settlements:   c.tokensBack.Load(),
		LeasesAsked:   c.leasesAsked.Load(),
		NodeDecisions: c.nodeDecisions.Load(),
		Overloads:     c.overloads.Load() + c.nodeOverloads.Load(),
		NodeOverloads: c.nodeOverloads.Load(),
	}
}

var _ quotamesh.Limiter = (*Client)(nil)

// clip keeps error messages short when a caller passes a huge key.
func clip(s string) string {
	if len(s) > 64 {
		return strings.ToValidUTF8(s[:64], "") + "..."
	}
	return s
}

// jitter is a uniform random duration in [0, n) nanoseconds.
func jitter(n int64) int64 { return rand.Int64N(max(n, 1)) }

// durationSince is the time from then to now on the client's clock, never
// negative.
func durationSince(now, then int64) time.Duration { return time.Duration(max(0, now-then)) }

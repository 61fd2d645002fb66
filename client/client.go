package client

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quotamesh/quotamesh"
	"github.com/quotamesh/quotamesh/internal/clock"
	"github.com/quotamesh/quotamesh/internal/wire"
	"github.com/quotamesh/quotamesh/limits"
	"github.com/rs/zerolog"
)

// Client is a remote QuotaMesh limiter: it decides from leases of its
// node's share, or asks the node for every decision in strict mode (see the
// package documentation). It satisfies quotamesh.Limiter and is safe for
// concurrent use. Create one with Dial and share it; Close it when done.
type Client struct {
	cfg   config
	addrs []string
	log   zerolog.Logger
	clk   clock.Source
	hclk  *clock.Handle // the shared coarse clock, released by Close

	closed    atomic.Bool
	closeOnce sync.Once
	closing   chan struct{}      // closed when Close begins
	housekept chan struct{}      // closed when the housekeeper is done
	stop      chan struct{}      // closed once leases are returned: the connection ends
	stopCtx   context.Context    // done with stop
	stopFn    context.CancelFunc //
	wg        sync.WaitGroup     // supervisor and housekeeper

	// Calls in flight (call.go).
	nextID  atomic.Uint64
	mu      sync.Mutex
	pending map[uint64]*call
	shut    bool // Close has failed every pending call; guarded by mu
	slots   chan struct{}
	queue   *sendQueue

	// The connection (conn.go).
	gens        atomic.Uint64
	connMu      sync.Mutex
	cur         *conn
	connChanged chan struct{}

	// Leases (lease.go).
	keys      sync.Map // string -> *keyState
	nkeys     atomic.Int64
	urgentMu  sync.Mutex
	urgent    []*keyState   // keys to look at now
	added     []*keyState   // keys that got a lease, for the housekeeper's list
	wake      chan struct{} // capacity 1: urgent is not empty
	retryHint atomic.Int64  // RetryAfter of a denial from an exhausted lease

	// Counters (Stats).
	batches, requests, timeouts, failovers   atomic.Int64
	leaseRequests, tokensGranted, tokensBack atomic.Int64
}

// Dial connects to the nearest of the nodes at addrs (UDP host:port): it
// dials all of them at once and keeps the first to complete the handshake,
// the others being fallbacks for failover. It fails with an error wrapping
// quotamesh.ErrUnavailable when none answers within ctx and the dial
// timeout, and with ErrInvalidConfig for bad options (WithCA is required).
func Dial(ctx context.Context, addrs []string, opts ...Option) (*Client, error) {
	cfg := defaultConfig()
	for _, o := range opts {
		o(&cfg)
	}
	if err := cfg.validate(addrs); err != nil {
		return nil, err
	}
	c := &Client{
		cfg:         cfg,
		addrs:       slices.Compact(slices.Clone(addrs)),
		log:         cfg.log.With().Str("component", "client").Logger(),
		closing:     make(chan struct{}),
		housekept:   make(chan struct{}),
		stop:        make(chan struct{}),
		pending:     make(map[uint64]*call),
		slots:       make(chan struct{}, cfg.maxInFlight),
		queue:       newSendQueue(cfg.maxInFlight),
		connChanged: make(chan struct{}),
		wake:        make(chan struct{}, 1),
	}
	c.stopCtx, c.stopFn = context.WithCancel(context.Background())
	c.clk = cfg.clock
	if c.clk == nil {
		c.hclk = clock.Acquire()
		c.clk = c.hclk
	}
	c.retryHint.Store(int64(time.Millisecond))
	cn, err := c.dial(ctx)
	if err != nil {
		c.stopFn()
		if c.hclk != nil {
			c.hclk.Release()
		}
		return nil, err
	}
	c.setConn(cn)
	cn.start()
	c.wg.Add(2)
	go func() { defer c.wg.Done(); c.supervise(cn) }()
	go func() { defer c.wg.Done(); defer close(c.housekept); c.housekeep() }()
	return c, nil
}

// Allow is AllowN(ctx, key, 1).
func (c *Client) Allow(ctx context.Context, key string) (quotamesh.Decision, error) {
	return c.AllowN(ctx, key, 1)
}

// AllowN asks to admit n requests for key at once: all or none.
//
// With a live lease for key it decides locally, without a lock, an
// allocation or a wait, and ignores ctx as an embedded node does. The first
// call for a key (and the first after its lease lapsed from disuse) waits
// for a lease, within ctx and the request timeout; so does every call in
// strict mode, and a call for more tokens than leases of the key hold.
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
			return c.allowLease(ctx, v.(*keyState), n, 0)
		}
	}
	if err := limits.ValidateKey(key); err != nil {
		return quotamesh.Decision{}, fmt.Errorf("quotamesh/client: %w", err)
	}
	if c.cfg.strict {
		return c.decide(ctx, key, n)
	}
	return c.allowNew(ctx, key, n)
}

// decide asks the node to decide n requests for key: one round trip.
func (c *Client) decide(ctx context.Context, key string, n int64) (quotamesh.Decision, error) {
	cl := &call{
		req:  wire.ClientRequest{Op: wire.OpDecide, Key: key, N: n},
		done: make(chan struct{}),
	}
	if err := c.roundTrip(ctx, cl); err != nil {
		return quotamesh.Decision{}, err
	}
	r := &cl.reply
	d := quotamesh.Decision{
		Allowed:    r.Allowed,
		Remaining:  r.Remaining,
		RetryAfter: r.RetryAfter,
		Limit:      r.Limit,
		Unlimited:  r.Unlimited,
	}
	return d, codeErr(r.Code, r.Message)
}

// Close stops the client: calls in progress and later return
// quotamesh.ErrClosed. It returns the unused tokens of its leases to the
// node (waiting at most the request timeout, and 100 ms at most), closes
// the connection and waits for every goroutine the client started. It is
// idempotent and always returns nil.
func (c *Client) Close() error {
	c.closeOnce.Do(func() {
		c.closed.Store(true)
		close(c.closing)
		<-c.housekept // it returns unused tokens first
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

// Node returns the ID of the node the client is connected to, or "" while
// it reconnects.
func (c *Client) Node() string {
	c.connMu.Lock()
	defer c.connMu.Unlock()
	if c.cur == nil {
		return ""
	}
	return c.cur.node
}

// Stats are the client's counters since Dial.
type Stats struct {
	// Node is the node connected to ("" while reconnecting).
	Node string
	// Keys is the number of keys holding lease state.
	Keys int64
	// Batches and Requests count frames written and the requests in them
	// (strict decisions and lease requests).
	Batches, Requests int64
	// Timeouts counts requests that got no reply within the request
	// timeout.
	Timeouts int64
	// Failovers counts connections lost and replaced.
	Failovers int64
	// LeaseRequests counts lease requests answered; TokensGranted and
	// TokensReturned the tokens they were granted and gave back.
	LeaseRequests, TokensGranted, TokensReturned int64
}

// Stats returns the client's counters. It takes no lock the decision path
// uses.
func (c *Client) Stats() Stats {
	return Stats{
		Node:           c.Node(),
		Keys:           c.nkeys.Load(),
		Batches:        c.batches.Load(),
		Requests:       c.requests.Load(),
		Timeouts:       c.timeouts.Load(),
		Failovers:      c.failovers.Load(),
		LeaseRequests:  c.leaseRequests.Load(),
		TokensGranted:  c.tokensGranted.Load(),
		TokensReturned: c.tokensBack.Load(),
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

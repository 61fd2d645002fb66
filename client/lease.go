package client

import (
	"context"
	"fmt"
	"math"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quotamesh/quotamesh"
	"github.com/quotamesh/quotamesh/internal/wire"
	"github.com/quotamesh/quotamesh/limits"
)

const (
	// maxDeny caps how long the SDK denies a key locally after the node
	// granted nothing: the node's RetryAfter is a hint (the next tick or
	// slot edge), and asking again soon costs one request per key.
	maxDeny = 20 * time.Millisecond
	// minDeny is the shortest such local denial.
	minDeny = time.Millisecond
	// forgetAfter is how many lease TTLs a key must be idle before the SDK
	// forgets it (returning what it holds). Calls then wait for a lease
	// again, which for a key used less than once per TTL is what happens
	// anyway.
	forgetAfter = 40
	// flushWait bounds how long Close waits for the node to take back
	// unused tokens.
	flushWait = 100 * time.Millisecond
)

// lease is one grant from a node. Its fields are fixed but for tokens,
// which calls take with compare-and-swap; a renewal installs a new lease
// and takes what is left of the old one with one swap, so that a token is
// either used or returned, never both.
type lease struct {
	tokens atomic.Int64 // left to use; for unlimited leases, granted minus uses
	poked  atomic.Bool  // the housekeeper was asked to look at this key

	granted   int64
	short     bool  // granted less than asked: the node's room ran out
	expires   int64 // clock time after which no call uses it
	renewAt   int64 // clock time from which it is renewed if the key is in use
	grantedAt int64 // node time, sent back with unused tokens
	gen       uint64
	limit     limits.Rate
	unlimited bool          // no rule matched: no tokens to count
	deny      bool          // unlimited, and the node denies unknown keys
	retry     time.Duration // RetryAfter of a deny lease

	lapsed atomic.Bool // unused tokens taken back after expiry; set under keyState.mu
}

// wait is a round of callers waiting for a key's next lease.
type wait struct {
	ch  chan struct{} // closed when a lease is installed or the request failed
	err error
	dec quotamesh.Decision // with err: the decision to return (ErrTooManyKeys)
}

// returned is what the SDK owes a node: unused tokens of a lease.
type returned struct {
	n, at int64
	gen   uint64
}

// keyState is the SDK's state for one key. The request path reads lease,
// deniedUntil and denied with atomics only; everything else belongs to the
// housekeeper and the reply handler, under mu.
type keyState struct {
	key         string
	lease       atomic.Pointer[lease]
	deniedUntil atomic.Int64 // clock time until which calls are denied locally
	denied      atomic.Int64 // tokens denied locally, ever
	maxGrant    atomic.Int64 // the largest lease granted for the key
	queued      atomic.Bool  // on the urgent list

	mu           sync.Mutex
	gone         bool         // forgotten: callers must look the key up again
	inflight     bool         // a lease request is out
	wait         *wait        // callers waiting for a lease, if any
	wantSum      int64        // the tokens they ask for
	consumedBase int64        // tokens used of retired leases, not yet reported
	reportedCur  int64        // tokens used of the current lease, already reported
	deniedSeen   int64        // denied, as last reported
	deniedAtSet  int64        // denied when the current lease was installed
	lastReport   int64        // clock time of the last report
	lastActive   atomic.Int64 // clock time some use was last seen; set under mu
	waiting      atomic.Bool  // wait != nil; set under mu
	listed       atomic.Bool  // on the housekeeper's list of live leases
	rate         float64      // demand estimate, tokens per second
	lastLapsed   int64        // clock time a call last found the lease lapsed
	coldRate     float64      // rate of such calls, tokens per second
	ret          returned
}

// allowNew handles the first call for a key the SDK does not track: it
// starts tracking it (unless MaxKeys are tracked: then the node decides)
// and waits for its first lease.
func (c *Client) allowNew(ctx context.Context, key string, n int64) (quotamesh.Decision, error) {
	if c.nkeys.Load() >= int64(c.cfg.maxKeys) {
		return c.decide(ctx, key, n)
	}
	now := c.clk.Now()
	ks := &keyState{key: strings.Clone(key), lastReport: now}
	ks.lastActive.Store(now)
	v, loaded := c.keys.LoadOrStore(ks.key, ks)
	if !loaded {
		c.nkeys.Add(1)
	}
	return c.allowLease(ctx, v.(*keyState), n, 0)
}

// maxWaits bounds how many renewals one call waits for: a caller that
// joined a wait after its request was sized may find the grant too small,
// and waits for the next (which counts it), while grants are full.
const maxWaits = 3

// allowLease decides n requests for ks from its lease. waits counts the
// leases the call already waited for: it uses the lease it waited for even
// if that expired on the way.
func (c *Client) allowLease(ctx context.Context, ks *keyState, n int64, waits int) (quotamesh.Decision, error) {
	waited := waits > 0
	now := c.clk.Now()
	for {
		g := ks.lease.Load()
		if g == nil || (now >= g.expires && !waited) {
			if waited {
				ks.denied.Add(n)
				return quotamesh.Decision{RetryAfter: time.Duration(c.retryHint.Load())}, nil
			}
			return c.waitLease(ctx, ks, g, n, waits)
		}
		if g.unlimited {
			if g.deny {
				ks.denied.Add(n)
				return quotamesh.Decision{Unlimited: true, RetryAfter: g.retry}, nil
			}
			g.tokens.Add(-n)
			return quotamesh.Decision{Allowed: true, Unlimited: true}, nil
		}
		if n > g.limit.Count {
			return quotamesh.Decision{RetryAfter: retryNever, Limit: g.limit}, exceedsErr(ks.key, n, g.limit)
		}
		if du := ks.deniedUntil.Load(); now < du {
			ks.denied.Add(n)
			return quotamesh.Decision{RetryAfter: time.Duration(du - now), Limit: g.limit}, nil
		}
		t := g.tokens.Load()
		if t >= n {
			if !g.tokens.CompareAndSwap(t, t-n) {
				continue
			}
			// The housekeeper's tick renews leases half used, all keys due
			// in one frame; one three quarters used is urgent.
			if q := g.granted / 4; t > q && t-n <= q {
				c.poke(ks, g)
			}
			return quotamesh.Decision{Allowed: true, Remaining: t - n, Limit: g.limit}, nil
		}
		if ks.lease.Load() != g {
			continue // renewed meanwhile
		}
		if !waited && n > 1 && n > ks.maxGrant.Load() {
			// No lease of this key has been that large: the node decides.
			return c.decide(ctx, ks.key, n)
		}
		if !g.short && waits < maxWaits {
			// The node granted all the SDK asked: the SDK asked too
			// little, not the cluster ran out. Wait for the renewal.
			return c.waitLease(ctx, ks, g, n, waits)
		}
		// The node's room ran out: deny locally until the renewal.
		ks.denied.Add(n)
		c.poke(ks, g)
		return quotamesh.Decision{RetryAfter: time.Duration(c.retryHint.Load()), Limit: g.limit}, nil
	}
}

// waitLease waits for ks's next lease after stale (the lease the caller
// found unusable, or nil), within ctx and the request timeout, then decides
// from it.
func (c *Client) waitLease(ctx context.Context, ks *keyState, stale *lease, n int64, waits int) (quotamesh.Decision, error) {
	ks.mu.Lock()
	if ks.gone {
		ks.mu.Unlock()
		return c.AllowN(ctx, ks.key, n) // forgotten meanwhile: start afresh
	}
	if ks.lease.Load() != stale {
		ks.mu.Unlock()
		return c.allowLease(ctx, ks, n, waits) // renewed meanwhile
	}
	if now := c.clk.Now(); stale != nil && now >= stale.expires && ks.wait == nil && !ks.inflight {
		// The lease lapsed. A key called less than once per lease TTL
		// would wait for a lease at every call, and use it once: a
		// decision by the node costs less and is exact.
		dt := max(now-ks.lastLapsed, int64(time.Millisecond))
		ks.lastLapsed = now
		sample := float64(n) / time.Duration(dt).Seconds()
		if sample >= ks.coldRate {
			ks.coldRate = sample
		} else {
			ks.coldRate = (ks.coldRate + sample) / 2
		}
		if ks.coldRate*c.cfg.leaseTTL.Seconds() < 1 {
			ks.lastActive.Store(now)
			ks.mu.Unlock()
			return c.decide(ctx, ks.key, n)
		}
	}
	ks.wantSum += n
	w := ks.wait
	if w == nil {
		w = &wait{ch: make(chan struct{})}
		ks.wait = w
		ks.waiting.Store(true)
	}
	// The first waiter asks the node itself rather than through the
	// housekeeper: a key called less often than once per TTL waits for a
	// lease at every call, and one hop fewer is most of its latency.
	var cl *call
	if !ks.inflight && c.tryAcquire() {
		if cl = c.plan(ks, c.clk.Now()); cl == nil {
			<-c.slots
		}
	}
	ks.mu.Unlock()
	if cl != nil {
		c.send([]*call{cl})
	} else {
		c.poke(ks, nil)
	}
	select {
	case <-w.ch:
	case <-ctx.Done():
		return quotamesh.Decision{}, ctxErr(ctx, "wait for a lease")
	case <-c.closing:
		return quotamesh.Decision{}, closedErr("wait for a lease")
	}
	if w.err != nil {
		return w.dec, w.err
	}
	return c.allowLease(ctx, ks, n, waits+1)
}

// poke asks the housekeeper to look at ks soon: once per lease g (nil for
// a key waiting for one).
func (c *Client) poke(ks *keyState, g *lease) {
	if g != nil && !g.poked.CompareAndSwap(false, true) {
		return
	}
	if !ks.queued.CompareAndSwap(false, true) {
		return
	}
	c.urgentMu.Lock()
	c.urgent = append(c.urgent, ks)
	c.urgentMu.Unlock()
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// housekeep is the background goroutine: it renews leases ahead of need,
// batching every key due into one frame, times out requests, and forgets
// idle keys. Woken by pokes for urgent keys, it also looks at every key
// holding a live lease each tick (a quarter TTL, at most 10 ms), and at
// every key once a second. On Close it returns unused tokens.
func (c *Client) housekeep() {
	tick := min(max(c.cfg.leaseTTL/4, time.Millisecond), 10*time.Millisecond)
	t := time.NewTicker(tick)
	defer t.Stop()
	var urgent, added, live []*keyState
	lastFull := c.clk.Now()
	for {
		select {
		case <-c.closing:
			c.flushReturns()
			return
		case <-c.wake:
			c.urgentMu.Lock()
			urgent, c.urgent = c.urgent, urgent[:0]
			c.urgentMu.Unlock()
			now := c.clk.Now()
			var calls []*call
			for _, ks := range urgent {
				ks.queued.Store(false)
				if cl := c.planOne(ks, now); cl != nil {
					calls = append(calls, cl)
				}
			}
			clear(urgent)
			c.send(calls)
		case <-t.C:
			now := c.clk.Now()
			c.sweep(now)
			c.updateRetryHint()
			c.urgentMu.Lock()
			added, c.added = c.added, added[:0]
			c.urgentMu.Unlock()
			live = append(live, added...)
			clear(added)
			var calls []*call
			visit := func(ks *keyState) {
				if c.notDue(ks, now) {
					return
				}
				if cl := c.planOne(ks, now); cl != nil {
					calls = append(calls, cl)
				}
			}
			kept := live[:0]
			for _, ks := range live {
				visit(ks)
				if c.stillLive(ks) {
					kept = append(kept, ks)
				}
			}
			clear(live[len(kept):])
			live = kept
			if now-lastFull >= int64(time.Second) {
				lastFull = now
				c.keys.Range(func(_, v any) bool {
					if ks := v.(*keyState); !ks.listed.Load() {
						visit(ks)
					}
					return true
				})
			}
			c.send(calls)
		}
	}
}

// listLive puts ks on the housekeeper's list of keys with a live lease,
// under ks.mu, once.
func (c *Client) listLive(ks *keyState) {
	if !ks.listed.CompareAndSwap(false, true) {
		return
	}
	c.urgentMu.Lock()
	c.added = append(c.added, ks)
	c.urgentMu.Unlock()
}

// stillLive reports whether ks stays on the list of keys with a live
// lease; a key whose lease lapsed, or that was forgotten, leaves it (under
// ks.mu, so that a lease installed meanwhile lists it again).
func (c *Client) stillLive(ks *keyState) bool {
	if g := ks.lease.Load(); g != nil && !g.lapsed.Load() && !ks.gone {
		return true // a racy read; a wrong "live" only keeps it a tick longer
	}
	ks.mu.Lock()
	defer ks.mu.Unlock()
	if g := ks.lease.Load(); !ks.gone && (ks.wait != nil || ks.inflight || (g != nil && !g.lapsed.Load())) {
		return true
	}
	ks.listed.Store(false)
	return false
}

// notDue tells without a lock that plan would do nothing for ks now: its
// lease is live, not half used and not half expired, or it lapsed and the
// key is not idle long enough to forget; and nobody waits. It keeps the
// housekeeper's scan of many keys cheap.
func (c *Client) notDue(ks *keyState, now int64) bool {
	if ks.waiting.Load() {
		return false
	}
	g := ks.lease.Load()
	switch {
	case g == nil || g.lapsed.Load():
		return now-ks.lastActive.Load() <= forgetAfter*int64(c.cfg.leaseTTL)
	case now >= g.expires || now >= g.renewAt:
		return false
	case g.deny:
		return true
	}
	return g.tokens.Load() > g.granted/2
}

// planOne takes a place in flight and plans ks's request; the place is
// released when there is nothing to ask. Without a free place the key waits
// for the next tick.
func (c *Client) planOne(ks *keyState, now int64) *call {
	if !c.tryAcquire() {
		return nil
	}
	ks.mu.Lock()
	cl := c.plan(ks, now)
	ks.mu.Unlock()
	if cl == nil {
		<-c.slots
	}
	return cl
}

// send registers planned lease calls; the writer sends them in one frame.
func (c *Client) send(calls []*call) {
	if len(calls) == 0 {
		return
	}
	if err := c.register(calls...); err != nil {
		for _, cl := range calls {
			c.applyLease(cl, nil, err)
		}
	}
}

// plan decides what ks needs from the node now, under ks.mu: a renewal, a
// return of unused tokens, or nothing; and forgets it when idle. It updates
// the demand estimate and the report counters for the request it builds.
func (c *Client) plan(ks *keyState, now int64) *call {
	if ks.gone || ks.inflight {
		return nil
	}
	g := ks.lease.Load()
	var usedCur int64
	if g != nil && !g.lapsed.Load() && !g.deny {
		usedCur = g.granted - g.tokens.Load()
	}
	denied := ks.denied.Load()
	offered := ks.consumedBase + (usedCur - ks.reportedCur) + (denied - ks.deniedSeen)
	if offered > 0 {
		ks.lastActive.Store(now)
	}
	inUse := g != nil && (usedCur > 0 || denied > ks.deniedAtSet)
	renew := false
	switch {
	case ks.wait != nil:
		renew = true
	case g == nil:
	case now < ks.deniedUntil.Load():
		// The node had no room; ask again when it said.
	case now >= g.expires:
		// Keep a key that used its lease warm; let an unused one lapse.
		renew = inUse
	default:
		renew = inUse && (g.tokens.Load() <= g.granted/2 || now >= g.renewAt)
	}
	if !renew {
		if g != nil && now >= g.expires && !g.lapsed.Load() {
			c.retire(ks, g)
			g.lapsed.Store(true)
		}
		if ks.ret.n > 0 {
			return c.leaseCall(ks, 0, 0) // give back what an expired lease left
		}
		if ks.wait == nil && now-ks.lastActive.Load() > forgetAfter*int64(c.cfg.leaseTTL) && (g == nil || now >= g.expires) {
			ks.gone = true
			if c.keys.CompareAndDelete(ks.key, ks) {
				c.nkeys.Add(-1)
			}
		}
		return nil
	}
	// The demand estimate: offered tokens per second since the last report,
	// rising at once and falling by halves.
	// Intervals under a millisecond count as one, which keeps a burst's
	// first sample from claiming an absurd rate.
	dt := max(now-ks.lastReport, int64(time.Millisecond))
	sample := float64(offered) / time.Duration(dt).Seconds()
	if sample >= ks.rate {
		ks.rate = sample
	} else {
		ks.rate = (ks.rate + sample) / 2
	}
	ks.lastReport = now
	want := int64(math.Ceil(ks.rate * c.cfg.leaseTTL.Seconds()))
	want = min(max(want, ks.wantSum, 1), limits.MaxCount)
	cl := c.leaseCall(ks, want, max(offered, 0))
	ks.consumedBase, ks.reportedCur, ks.deniedSeen = 0, usedCur, denied
	return cl
}

// leaseCall builds a lease request for ks carrying the tokens it owes,
// under ks.mu. want 0 only returns tokens.
func (c *Client) leaseCall(ks *keyState, want, offered int64) *call {
	r := ks.ret
	ks.ret = returned{}
	ks.inflight = true
	return &call{
		req: wire.ClientRequest{
			Op: wire.OpLease, Key: ks.key, N: want, Offered: offered,
			ReturnN: r.n, ReturnGrantedAt: r.at,
		},
		retGen: r.gen,
		lease:  ks,
	}
}

// retire takes what is left of g, which is leaving service, under ks.mu:
// its use is added to the next report and its unused tokens are owed to the
// node that granted them (added to an older debt not yet sent to the same
// connection; a debt to an earlier connection is dropped, which only makes
// the cluster admit less).
func (c *Client) retire(ks *keyState, g *lease) {
	if g.lapsed.Load() {
		return
	}
	left := g.tokens.Swap(0)
	if g.deny {
		return
	}
	ks.consumedBase += g.granted - left - ks.reportedCur
	ks.reportedCur = 0
	if left > 0 && !g.unlimited {
		if ks.ret.n > 0 && ks.ret.gen == g.gen {
			// A debt not sent yet (it rides on the next renewal): one
			// debt, credited to the older grant's slot, which can only
			// make the node admit less, never more.
			ks.ret.n += left
		} else {
			ks.ret = returned{n: left, at: g.grantedAt, gen: g.gen}
		}
	}
}

// applyLease installs the outcome of a lease request (in the reader's
// goroutine, or the housekeeper's for a timeout) and wakes the callers
// waiting for it.
func (c *Client) applyLease(cl *call, rep *wire.ClientReply, err error) {
	ks := cl.lease
	now := c.clk.Now()
	ks.mu.Lock()
	defer ks.mu.Unlock()
	ks.inflight = false
	if err == nil && rep.Code != wire.CodeOK {
		err = codeErr(rep.Code, rep.Message)
	}
	if err == nil {
		c.leaseRequests.Add(1)
	}
	if cl.req.ReturnN > 0 && err == nil {
		if cn := cl.conn.Load(); cn != nil && cn.gen == cl.retGen {
			c.tokensBack.Add(cl.req.ReturnN)
		}
	}
	if cl.req.N == 0 {
		return // a return only: nothing waits for it
	}
	w := ks.wait
	if err != nil {
		if w != nil {
			w.err = err
			if rep != nil && rep.Code == wire.CodeTooManyKeys {
				w.dec = quotamesh.Decision{Allowed: rep.Allowed, Unlimited: true}
			}
			ks.wait, ks.wantSum = nil, 0
			ks.waiting.Store(false)
			close(w.ch)
		}
		return
	}
	ttl := c.cfg.leaseTTL
	if rep.TTL > 0 {
		ttl = min(ttl, rep.TTL)
	}
	sent := cl.sentAt.Load()
	// A grant is short when the node's room ran out (none remains), not
	// when its cap on one lease (a tenth of the limit) cut it.
	g := &lease{
		granted:   rep.Granted,
		short:     rep.Granted < cl.req.N && rep.Remaining <= 0,
		expires:   sent + int64(ttl),
		renewAt:   sent + int64(ttl)/2,
		grantedAt: rep.GrantedAt,
		limit:     rep.Limit,
		unlimited: rep.Unlimited,
	}
	if cn := cl.conn.Load(); cn != nil {
		g.gen = cn.gen
	}
	if rep.Unlimited {
		g.granted = max(g.granted, 1)
		g.deny = rep.Granted == 0
		g.retry = rep.RetryAfter
	}
	g.tokens.Store(g.granted)
	if old := ks.lease.Swap(g); old != nil {
		c.retire(ks, old)
	}
	c.listLive(ks)
	ks.deniedAtSet = ks.denied.Load()
	if rep.Granted > ks.maxGrant.Load() {
		ks.maxGrant.Store(rep.Granted)
	}
	c.tokensGranted.Add(rep.Granted)
	switch {
	case !rep.Unlimited && rep.Granted == 0:
		ks.deniedUntil.Store(now + int64(min(max(rep.RetryAfter, minDeny), maxDeny)))
	case rep.Granted > 0:
		ks.deniedUntil.Store(0) // room came back early: use it
	}
	if w != nil {
		ks.wait, ks.wantSum = nil, 0
		ks.waiting.Store(false)
		close(w.ch)
	}
}

// flushReturns gives the node back the unused tokens of every lease,
// waiting for renewals in flight to land and for the answers, at most
// flushWait or the request timeout in all. It runs in the housekeeper as
// Close begins; callers already get ErrClosed.
func (c *Client) flushReturns() {
	deadline := time.Now().Add(min(flushWait, c.cfg.requestTimeout))
	var sent []*call
	for {
		var calls []*call
		inflight := 0
		c.keys.Range(func(_, v any) bool {
			ks := v.(*keyState)
			if !c.tryAcquire() {
				return false
			}
			ks.mu.Lock()
			var cl *call
			if ks.inflight {
				inflight++
			} else if g := ks.lease.Load(); g != nil {
				c.retire(ks, g)
				g.lapsed.Store(true)
				if ks.ret.n > 0 {
					cl = c.leaseCall(ks, 0, 0)
				}
			}
			ks.mu.Unlock()
			if cl == nil {
				<-c.slots
			} else {
				calls = append(calls, cl)
			}
			return true
		})
		c.send(calls)
		sent = append(sent, calls...)
		if inflight == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(time.Millisecond)
	}
	for _, cl := range sent {
		for !cl.resolved.Load() && time.Now().Before(deadline) {
			time.Sleep(time.Millisecond)
		}
	}
}

// updateRetryHint sets the RetryAfter of denials from an exhausted lease:
// about when a renewal asked now would arrive.
func (c *Client) updateRetryHint() {
	c.connMu.Lock()
	cn := c.cur
	c.connMu.Unlock()
	d := time.Millisecond
	if cn != nil {
		d = max(d, 2*cn.cc.RTT())
	}
	c.retryHint.Store(int64(d))
}

// retryNever is the RetryAfter of a request no wait can admit.
const retryNever = time.Duration(math.MaxInt64)

func exceedsErr(key string, n int64, r limits.Rate) error {
	return fmt.Errorf("quotamesh/client: n %d for key %q is above its limit %v; no wait can admit it: %w", n, clip(key), r, quotamesh.ErrExceedsLimit)
}

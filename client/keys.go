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
	"github.com/quotamesh/quotamesh/internal/lease"
	"github.com/quotamesh/quotamesh/internal/wire"
	"github.com/quotamesh/quotamesh/limits"
)

// flushWait bounds how long Close waits for the nodes to take back unused
// tokens.
const flushWait = 100 * time.Millisecond

// keyEntry is the SDK's state for one key: its lease logic (package lease:
// Take without a lock, the rest under mu) and its route hash.
type keyEntry struct {
	key    string
	h      uint64
	listed atomic.Bool // on the housekeeper's list of live keys
	queued atomic.Bool // on the urgent list

	mu      sync.Mutex
	k       *lease.Key
	gone    bool          // forgotten: callers look the key up again
	renewed chan struct{} // closed when the lease request out is answered; nil if nobody waits
}

// entry returns key's state (h is its route.Hash), creating it warm, for a
// key whose calls just reached a lease's worth (lease.Filter), unless
// MaxKeys keys are held (nil then: the call is decided by the node without
// lease state).
func (c *Client) entry(key string, h uint64, now int64) *keyEntry {
	if v, ok := c.keys.Load(key); ok {
		return v.(*keyEntry)
	}
	if c.nkeys.Load() >= int64(c.cfg.maxKeys) {
		return nil
	}
	ke := &keyEntry{key: strings.Clone(key), h: h, k: lease.NewWarmKey(c.leaseCfg, now)}
	v, loaded := c.keys.LoadOrStore(ke.key, ke)
	if !loaded {
		c.nkeys.Add(1)
	}
	return v.(*keyEntry)
}

// allowLease decides n calls for ke: from its lease when it has one, else
// by its home node, with a lease asked for alongside when the key is warm.
func (c *Client) allowLease(ctx context.Context, ke *keyEntry, n int64) (quotamesh.Decision, error) {
	now := c.clk.Now()
	v, left, retry := ke.k.Take(now, n)
	l := ke.k.Current()
	if v == lease.Admit && l != nil && left <= l.Granted/4 && left+n > l.Granted/4 {
		c.poke(ke) // a quarter left: renew now rather than at the next tick
	}
	if d, ok := leaseDecision(v, left, retry, l); ok {
		return d, nil
	}
	if l != nil && l.Limit.Count > 0 && n > l.Limit.Count {
		return quotamesh.Decision{RetryAfter: retryNever, Limit: l.Limit}, exceedsErr(ke.key, n, l.Limit)
	}
	if d, ok, err := c.awaitRenewal(ctx, ke, n); ok || err != nil {
		return d, err
	}
	home := ""
	if hl := c.pick(ke.h, ""); hl != nil {
		home = hl.id
	}
	ke.mu.Lock()
	if ke.gone {
		ke.mu.Unlock()
		return c.AllowN(ctx, ke.key, n) // forgotten meanwhile: start afresh
	}
	req := ke.k.Decide(now, n, home)
	ke.mu.Unlock()
	cl := c.leaseCall(ke, wire.OpDecide, req)
	c.nodeDecisions.Add(1)
	err := c.roundTrip(ctx, cl)
	c.applyTo(ke, cl, req, err)
	if err != nil {
		return quotamesh.Decision{}, err
	}
	return decisionOf(&cl.reply), c.replyErr(cl)
}

// awaitRenewal waits, for a call its lease could not serve, for the
// answer to the lease request ke has out, and then takes the call from the
// new lease (ok) or denies it as that answer says (ok); if the new lease
// is already empty and another request for one is out, it waits for that
// too, for at most the request timeout in all. A lease request out is
// already on its way, so waiting for it costs less than the round trip of
// a decision of its own, and a burst that empties a lease makes one
// request, not one per call. Not ok: no lease request is out; the call
// goes to the node as a decision (which asks for the next lease).
func (c *Client) awaitRenewal(ctx context.Context, ke *keyEntry, n int64) (quotamesh.Decision, bool, error) {
	var t *time.Timer
	for {
		ke.mu.Lock()
		if ke.gone || !ke.k.Renewing() {
			ke.mu.Unlock()
			return quotamesh.Decision{}, false, nil
		}
		if ke.renewed == nil {
			ke.renewed = make(chan struct{})
		}
		ch := ke.renewed
		ke.mu.Unlock()
		if t == nil {
			t = time.NewTimer(c.cfg.requestTimeout)
			defer t.Stop()
		}
		select {
		case <-ch:
		case <-t.C:
			return quotamesh.Decision{}, false, nil
		case <-ctx.Done():
			return quotamesh.Decision{}, false, fmt.Errorf("quotamesh/client: waiting for the lease of %q: %w", ke.key, ctx.Err())
		}
		v, left, retry := ke.k.Take(c.clk.Now(), n)
		if d, ok := leaseDecision(v, left, retry, ke.k.Current()); ok {
			return d, true, nil
		}
	}
}

// leaseDecision is the caller's decision from a Take that decided (Admit
// or Deny; ok), l the key's current lease (nil if none).
func leaseDecision(v lease.Verdict, left int64, retry time.Duration, l *lease.Lease) (quotamesh.Decision, bool) {
	var d quotamesh.Decision
	switch v {
	case lease.Admit:
		d = quotamesh.Decision{Allowed: true, Remaining: left}
	case lease.Deny:
		d = quotamesh.Decision{RetryAfter: retry}
	default:
		return d, false
	}
	if l != nil {
		d.Limit = l.Limit
	}
	return d, true
}

// leaseCall builds the call for req, a request of ke's lease logic.
func (c *Client) leaseCall(ke *keyEntry, op wire.Op, req lease.Request) *call {
	if req.Want > 0 {
		c.leasesAsked.Add(1)
	}
	return &call{
		req: wire.ClientRequest{Op: op, Key: ke.key, N: req.N, Want: req.Want, Offered: req.Offered,
			SettleID: req.Settle.ID, SettleUsed: req.Settle.Used},
		h:          ke.h,
		settleNode: req.Settle.Node,
	}
}

// applyTo gives ke's lease logic the outcome of cl, which carried req.
func (c *Client) applyTo(ke *keyEntry, cl *call, req lease.Request, err error) {
	now := c.clk.Now()
	var rep *lease.Reply
	if err == nil {
		rep = leaseReply(cl, req)
		if cl.reply.Code == wire.CodeOK {
			c.leaseRequests.Add(1)
			c.tokensGranted.Add(cl.reply.Granted)
		}
	}
	if req.Settle.ID != 0 && err == nil && cl.node == req.Settle.Node {
		c.tokensBack.Add(1) // settlements delivered
	}
	ke.mu.Lock()
	ke.k.Apply(now, cl.sentAt.Load(), req, rep)
	live := !ke.k.Idle() || ke.k.Warm()
	if req.Want > 0 && ke.renewed != nil {
		close(ke.renewed) // the calls waiting for this lease take from it
		ke.renewed = nil
	}
	ke.mu.Unlock()
	if live {
		c.listLive(ke)
	}
}

// leaseReply is what the lease logic needs of cl's reply to req.
func leaseReply(cl *call, req lease.Request) *lease.Reply {
	r := &cl.reply
	rep := &lease.Reply{Node: cl.node, Allowed: r.Allowed, LeaseID: r.LeaseID, Granted: r.Granted, TTL: r.TTL,
		RetryAfter: r.RetryAfter, Limit: r.Limit, Remaining: r.Remaining}
	if r.Code != wire.CodeOK {
		rep.Granted, rep.LeaseID = 0, 0
		return rep
	}
	if !r.Unlimited {
		rep.NoRoom = req.NoRoom(r.Allowed, r.Granted, r.Remaining)
	} else if r.RetryAfter == retryNever {
		// Unknown keys are denied: say so for a while, not forever.
		rep.NoRoom = true
	}
	return rep
}

// decisionOf is the caller's decision from a reply to a decision; a denial
// has no Remaining, as quotamesh.Decision documents (the node's figure is
// for its lease logic). Decided is the node's decision time, when the
// reply carries it.
func decisionOf(r *wire.ClientReply) quotamesh.Decision {
	remaining := r.Remaining
	if !r.Allowed {
		remaining = 0
	}
	d := quotamesh.Decision{
		Allowed:    r.Allowed,
		Remaining:  remaining,
		RetryAfter: r.RetryAfter,
		Limit:      r.Limit,
		Unlimited:  r.Unlimited,
	}
	if r.Decided != 0 {
		d.Decided = time.Unix(0, r.Decided)
	}
	return d
}

// poke asks the housekeeper to look at ke now.
func (c *Client) poke(ke *keyEntry) {
	if !ke.queued.CompareAndSwap(false, true) {
		return
	}
	c.urgentMu.Lock()
	c.urgent = append(c.urgent, ke)
	c.urgentMu.Unlock()
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// listLive puts ke on the housekeeper's list of keys to look at every
// tick, once.
func (c *Client) listLive(ke *keyEntry) {
	if !ke.listed.CompareAndSwap(false, true) {
		return
	}
	c.urgentMu.Lock()
	c.added = append(c.added, ke)
	c.urgentMu.Unlock()
}

// housekeep is the background goroutine: it renews leases ahead of need
// and settles used ones, batching what is due into one frame per node,
// times out requests, forgets idle keys and follows the membership. Woken
// by pokes for urgent keys, it also looks at every key with a lease each
// tick (a quarter TTL, at most 10 ms), and at every key once a second. On
// Close it settles every lease.
func (c *Client) housekeep() {
	tick := min(max(c.leaseCfg.TTL/4, time.Millisecond), 10*time.Millisecond)
	t := time.NewTicker(tick)
	defer t.Stop()
	var urgent, added, live []*keyEntry
	lastFull, lastMembers := c.clk.Now(), c.clk.Now()
	for {
		select {
		case <-c.closing:
			c.flushSettles()
			return
		case <-c.wake:
			c.urgentMu.Lock()
			urgent, c.urgent = c.urgent, urgent[:0]
			c.urgentMu.Unlock()
			now := c.clk.Now()
			var calls []*call
			for _, ke := range urgent {
				ke.queued.Store(false)
				calls = c.plan(ke, now, calls)
			}
			clear(urgent)
			c.send(calls)
		case <-t.C:
			now := c.clk.Now()
			c.sweep(now)
			c.urgentMu.Lock()
			added, c.added = c.added, added[:0]
			c.urgentMu.Unlock()
			live = append(live, added...)
			clear(added)
			var calls []*call
			kept := live[:0]
			for _, ke := range live {
				calls = c.plan(ke, now, calls)
				if c.stillLive(ke) {
					kept = append(kept, ke)
				}
			}
			clear(live[len(kept):])
			live = kept
			if now-lastFull >= int64(time.Second) {
				lastFull = now
				c.keys.Range(func(_, v any) bool {
					if ke := v.(*keyEntry); !ke.listed.Load() {
						calls = c.plan(ke, now, calls)
					}
					return true
				})
			}
			c.send(calls)
			if now-lastMembers >= int64(discoverEvery) {
				lastMembers = now
				c.discover()
			}
		}
	}
}

// discover refreshes the membership without holding up the housekeeper.
func (c *Client) discover() {
	if !c.discovering.CompareAndSwap(false, true) {
		return
	}
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		defer c.discovering.Store(false)
		c.refreshMembers()
	}()
}

// stillLive reports whether ke stays on the list of keys looked at every
// tick: while it holds or owes something, or is warm.
func (c *Client) stillLive(ke *keyEntry) bool {
	ke.mu.Lock()
	defer ke.mu.Unlock()
	if !ke.gone && (!ke.k.Idle() || ke.k.Warm()) {
		return true
	}
	ke.listed.Store(false)
	return false
}

// plan appends to calls what ke needs sent at now: a renewal or report to
// its home, settlements owed to other nodes; and forgets the key when it
// is idle. Each call takes a place in flight; without one the key waits
// for the next tick.
func (c *Client) plan(ke *keyEntry, now int64, calls []*call) []*call {
	hl := c.pick(ke.h, "")
	ke.mu.Lock()
	defer ke.mu.Unlock()
	if ke.gone {
		return calls
	}
	if hl != nil && c.tryAcquire() {
		req, forget := ke.k.Plan(now, hl.id)
		switch {
		case !req.Empty():
			calls = append(calls, c.asyncCall(ke, req, ""))
		case forget:
			<-c.slots
			ke.gone = true
			if c.keys.CompareAndDelete(ke.key, ke) {
				c.nkeys.Add(-1)
			}
			return calls
		default:
			<-c.slots
		}
	}
	for _, s := range ke.k.Owed() {
		if hl != nil && s.Node == hl.id {
			continue // rides on the next request to the home
		}
		if !c.tryAcquire() {
			break
		}
		s = ke.k.TakeOwed(s.Node)
		calls = append(calls, c.asyncCall(ke, lease.Request{Settle: s}, s.Node))
	}
	return calls
}

// asyncCall is a lease request or settlement nobody waits for: its
// outcome goes to the key's lease logic. to, if not empty, is the one node
// it may go to (a settlement belongs to the node that granted the lease).
func (c *Client) asyncCall(ke *keyEntry, req lease.Request, to string) *call {
	cl := c.leaseCall(ke, wire.OpLease, req)
	cl.to = to
	cl.onReply = func(cl *call, rep *wire.ClientReply, err error) {
		if rep != nil {
			cl.reply = *rep
		}
		c.applyTo(ke, cl, req, err)
	}
	return cl
}

// send registers calls that already hold their places in flight.
func (c *Client) send(calls []*call) {
	if len(calls) == 0 {
		return
	}
	if err := c.register(calls...); err != nil {
		for _, cl := range calls {
			cl.onReply(cl, nil, err)
		}
	}
}

// flushSettles settles every lease with the node that granted it, waiting
// at most flushWait (and the request timeout) in all: for lease requests in
// flight to land (their leases are settled unused) and for the answers. It
// runs in the housekeeper as Close begins; callers already get ErrClosed.
func (c *Client) flushSettles() {
	deadline := time.Now().Add(min(flushWait, c.cfg.requestTimeout))
	var sent []*call
	for {
		var calls []*call
		renewing := 0
		c.keys.Range(func(_, v any) bool {
			ke := v.(*keyEntry)
			ke.mu.Lock()
			ke.k.Release()
			if ke.k.Renewing() {
				renewing++
			}
			for _, s := range ke.k.Owed() {
				if !c.tryAcquire() {
					break
				}
				s = ke.k.TakeOwed(s.Node)
				calls = append(calls, c.asyncCall(ke, lease.Request{Settle: s}, s.Node))
			}
			ke.mu.Unlock()
			return true
		})
		c.send(calls)
		sent = append(sent, calls...)
		if renewing == 0 || time.Now().After(deadline) {
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

// retryNever is the RetryAfter of a request no wait can admit.
const retryNever = time.Duration(math.MaxInt64)

func exceedsErr(key string, n int64, r limits.Rate) error {
	return fmt.Errorf("quotamesh/client: n %d for key %q is above its limit %v; no wait can admit it: %w", n, clip(key), r, quotamesh.ErrExceedsLimit)
}

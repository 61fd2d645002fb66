// Requests from SDK clients: decisions, and leases riding on them
// (design.md §10).

package engine

import (
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/quotamesh/quotamesh/limits"
	"github.com/quotamesh/quotamesh/window"
)

// Request is one request of an SDK client: a decision of N calls, a lease
// of up to Want tokens, a settlement of an earlier lease, a report of
// demand, or several of these at once.
type Request struct {
	Key string
	// Client identifies the client connection; a lease is settled only by
	// the connection it was granted to.
	Client uint64
	// N calls to decide now, all or none; 0 for none.
	N int64
	// Want tokens of a new lease; 0 for none.
	Want int64
	// Offered calls the client denied locally since its last report.
	Offered int64
	// SettleID, if not zero, is a lease granted to Client for Key, of which
	// SettleUsed tokens were used.
	SettleID   uint64
	SettleUsed int64
}

// Reply answers a Request.
type Reply struct {
	// Allowed is the decision on N (true for N 0).
	Allowed bool
	// LeaseID names the new lease of Granted tokens, held for TTL.
	LeaseID uint64
	Granted int64
	TTL     time.Duration
	// RetryAfter, when the calls were denied or the lease cut short by the
	// room, is when this node expects room again.
	RetryAfter time.Duration
	// Remaining is the room left in this node's quota.
	Remaining int64
	Limit     limits.Rate
	Unlimited bool
}

// outstanding is a lease granted and not yet settled.
type outstanding struct {
	id      uint64
	client  uint64
	key     string
	w       *window.Window
	n       int64
	expires int64 // local time after which it counts as used
	done    bool
}

// leases are the outstanding leases of one engine. Leases all live LeaseTTL
// plus a grace, so they expire in the order they were granted: a FIFO.
type leases struct {
	mu   sync.Mutex
	next uint64
	byID map[uint64]*outstanding
	fifo []*outstanding // in grant order; settled ones stay until they reach the head
	head int
}

// Request serves r at local time now. Errors: ErrInvalidRequest for
// negative fields, and the registry's errors: a bad key, a full registry,
// N above the key's limit (quotamesh.ErrExceedsLimit).
func (e *Engine) Request(now int64, r Request) (Reply, error) {
	e.seeTime(now)
	if r.N < 0 || r.Want < 0 || r.Offered < 0 || r.SettleUsed < 0 {
		return Reply{}, fmt.Errorf("%w: request for key %q with n %d, want %d, offered %d, settle used %d: none may be negative",
			ErrInvalidRequest, r.Key, r.N, r.Want, r.Offered, r.SettleUsed)
	}
	// Settle first: the room it frees may serve this very request.
	if r.SettleID != 0 {
		e.settle(now, r.Client, r.Key, r.SettleID, r.SettleUsed)
	}
	w, rule, err := e.reg.GetOrCreate(now, r.Key)
	switch {
	case errors.Is(err, limits.ErrNoRule):
		allowed := e.cfg.Registry.UnknownKeys != window.PolicyDeny // the default allows
		rep := Reply{Unlimited: true, Allowed: allowed || r.N == 0}
		if allowed {
			rep.Granted, rep.TTL = r.Want, e.cfg.LeaseTTL
		} else {
			rep.RetryAfter = window.Never
		}
		return rep, nil
	case err != nil:
		return Reply{}, err
	}
	if !e.live(now) {
		// The sync loop has not ticked within QuotaValidity (a paused
		// process, a stalled loop): the quotas may be stale.
		w.RecordOffered(now, r.N+r.Offered)
		return Reply{Limit: rule.Rate, RetryAfter: e.cfg.SyncInterval}, nil
	}
	rep := Reply{Allowed: true, Limit: rule.Rate}
	if r.N > 0 {
		d, err := e.reg.AllowN(now, r.Key, r.N)
		if err != nil {
			return Reply{Limit: rule.Rate, RetryAfter: d.RetryAfter}, err // n above the limit
		}
		rep.Allowed = d.Allowed
		if !d.Allowed {
			rep.RetryAfter = e.retryAfter(now, d.RetryAfter)
		}
	}
	w.RecordOffered(now, r.Offered)
	if r.Want > 0 {
		want := min(r.Want, max(1, int64(e.cfg.MaxLeaseFraction*float64(rule.Rate.Count))))
		if got := w.Reserve(now, want); got > 0 {
			rep.LeaseID, rep.Granted, rep.TTL = e.hold(now, r.Client, r.Key, w, got), got, e.cfg.LeaseTTL
			e.leaseGranted.Add(got)
		}
		if rep.Granted < want && rep.RetryAfter == 0 {
			rep.RetryAfter = e.retryAfter(now, 0)
		}
	}
	e.reg.Touch(r.Key)
	rep.Remaining = max(0, w.Quota()-w.Total())
	return rep, nil
}

// retryAfter is when room may come back: the window's own expiry hint, the
// next slot edge or the next tick (a new quota, or a lease settled),
// whichever comes first.
func (e *Engine) retryAfter(now int64, hint time.Duration) time.Duration {
	toEdge := time.Duration(int64(limits.Slot) - now%int64(limits.Slot))
	r := min(toEdge, e.cfg.SyncInterval)
	if hint > 0 {
		r = min(r, hint)
	}
	return r
}

// hold records a lease of n tokens of w, reserved for client, and returns
// its ID.
func (e *Engine) hold(now int64, client uint64, key string, w *window.Window, n int64) uint64 {
	l := &e.leases
	l.mu.Lock()
	defer l.mu.Unlock()
	l.next++
	o := &outstanding{id: l.next, client: client, key: key, w: w, n: n,
		expires: now + int64(e.cfg.LeaseTTL) + int64(e.leaseGrace())}
	if l.byID == nil {
		l.byID = make(map[uint64]*outstanding)
	}
	l.byID[o.id] = o
	l.fifo = append(l.fifo, o)
	return o.id
}

// leaseGrace is how long past its TTL a lease is held for a settlement on
// its way: the SDK stops using a lease at its TTL counted from when it sent
// the request, settles it at its next housekeeping tick, and the
// settlement takes a one-way trip: the TTL itself for short TTLs, between
// 50 and 100 ms.
func (e *Engine) leaseGrace() time.Duration {
	return min(max(e.cfg.LeaseTTL, 50*time.Millisecond), 100*time.Millisecond)
}

// settle ends the lease id of client for key: used tokens are counted in
// the slot of now, the rest freed. An unknown ID (settled already, expired,
// granted by an earlier incarnation) or one of another client or key is
// ignored: that lease was, or will be, counted as used.
func (e *Engine) settle(now int64, client uint64, key string, id uint64, used int64) {
	l := &e.leases
	l.mu.Lock()
	o := l.byID[id]
	if o == nil || o.client != client || o.key != key {
		l.mu.Unlock()
		return
	}
	delete(l.byID, id)
	o.done = true
	l.mu.Unlock()
	e.release(now, o, min(used, o.n))
}

// release settles o's reservation with used tokens used, on o's window if
// it is still the key's, else on the key's current window (a limit change
// replaced it): the used tokens are counted there as admitted.
func (e *Engine) release(now int64, o *outstanding, used int64) {
	o.w.Settle(now, o.n, used)
	e.leaseReturned.Add(o.n - used)
	if cur, _, ok := e.reg.Lookup(o.key); ok && cur != o.w && used > 0 {
		if got := cur.Reserve(now, used); got > 0 {
			cur.Settle(now, got, got)
		}
	}
}

// expireLeases counts every lease whose time is up at now as fully used:
// a client that never settled may have used all of it, and counting it so
// can only make the cluster admit less.
func (e *Engine) expireLeases(now int64) {
	l := &e.leases
	l.mu.Lock()
	var due []*outstanding
	for l.head < len(l.fifo) {
		o := l.fifo[l.head]
		if !o.done && o.expires > now {
			break
		}
		l.fifo[l.head] = nil
		l.head++
		if !o.done {
			o.done = true
			delete(l.byID, o.id)
			due = append(due, o)
		}
	}
	if l.head > 1024 && l.head*2 > len(l.fifo) {
		n := copy(l.fifo, l.fifo[l.head:])
		clear(l.fifo[n:])
		l.fifo, l.head = l.fifo[:n], 0
	}
	l.mu.Unlock()
	for _, o := range due {
		e.release(now, o, o.n)
	}
}

// Outstanding returns the leases granted and not yet settled or expired.
func (e *Engine) Outstanding() int {
	l := &e.leases
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.byID)
}

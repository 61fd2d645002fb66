package client

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quotamesh/quotamesh"
	"github.com/quotamesh/quotamesh/internal/wire"
)

// call is one request to a node: a decision (perhaps with a lease riding
// on it), or a lease request or settlement the housekeeper sends.
//
// Ownership: a call lives in Client.pending from submission until exactly
// one party removes it there, under Client.mu, and so owns its outcome: the
// reader (a reply), the housekeeper (its deadline passed), the waiter (its
// context ended) or Close. Only the owner calls finish. Meanwhile the call
// may sit in a link's send queue, or have been written on a connection; a
// link's supervisor sends it to the key's next node when that connection
// dies before a reply.
type call struct {
	id  uint64
	req wire.ClientRequest
	// h is the key's route hash: the call goes to the key's home.
	h uint64
	// to, if not empty, is the only node the call may go to (a settlement
	// of that node's lease); it is dropped when that node is down.
	to string
	// settleNode is the node whose lease req settles; the writer drops the
	// settlement on any other node's connection.
	settleNode string
	// deadline is the clock time after which the housekeeper fails the
	// call with ErrUnavailable.
	deadline int64
	// onReply, for calls nobody waits for, handles the outcome (in the
	// reader's or the housekeeper's goroutine); waited-for calls have done
	// instead.
	onReply func(cl *call, rep *wire.ClientReply, err error)
	done    chan struct{}

	resolved atomic.Bool          // finished: the writer skips it
	sentAt   atomic.Int64         // clock time of the last write
	conn     atomic.Pointer[conn] // connection of the last write

	// Set before finish hands the call over.
	node  string // the node that answered
	reply wire.ClientReply
	err   error
}

// sendQueue holds calls waiting for a link's writer. It is a slice under a
// mutex rather than a channel so that calls abandoned while queued cost
// nothing once their place in flight is released: the writer drops them,
// and a queue that grows past twice the in-flight bound is compacted.
type sendQueue struct {
	mu    sync.Mutex
	calls []*call
	spare []*call
	max   int
	ready chan struct{} // capacity 1: the queue is not empty
}

func newSendQueue(maxInFlight int) *sendQueue {
	return &sendQueue{max: 2 * maxInFlight, ready: make(chan struct{}, 1)}
}

// push appends calls and wakes the writer.
func (q *sendQueue) push(calls ...*call) {
	q.mu.Lock()
	q.calls = append(q.calls, calls...)
	if len(q.calls) > q.max {
		live := q.calls[:0]
		for _, cl := range q.calls {
			if !cl.resolved.Load() {
				live = append(live, cl)
			}
		}
		clear(q.calls[len(live):])
		q.calls = live
	}
	q.mu.Unlock()
	select {
	case q.ready <- struct{}{}:
	default:
	}
}

// take returns everything queued; the caller hands the slice back with
// recycle once done with it.
func (q *sendQueue) take() []*call {
	q.mu.Lock()
	defer q.mu.Unlock()
	out := q.calls
	q.calls, q.spare = q.spare[:0], nil
	return out
}

func (q *sendQueue) recycle(s []*call) {
	clear(s)
	q.mu.Lock()
	if q.spare == nil {
		q.spare = s[:0]
	}
	q.mu.Unlock()
}

// acquire takes a place in flight, waiting within ctx and the overload
// wait: every place taken means the nodes are not keeping up, and a caller
// is better told so at once (errOverloaded) than queued behind them.
func (c *Client) acquire(ctx context.Context) error {
	select {
	case c.slots <- struct{}{}:
		return nil
	default:
	}
	t := time.NewTimer(c.cfg.overloadWait)
	defer t.Stop()
	select {
	case c.slots <- struct{}{}:
		return nil
	case <-t.C:
		c.overloads.Add(1)
		return fmt.Errorf("quotamesh/client: %d requests in flight for %v: %w", c.cfg.maxInFlight, c.cfg.overloadWait, quotamesh.ErrOverloaded)
	case <-ctx.Done():
		return ctxErr(ctx, "wait for a place in flight")
	case <-c.closing:
		return closedErr("wait for a place in flight")
	}
}

// tryAcquire takes a place in flight if one is free.
func (c *Client) tryAcquire() bool {
	select {
	case c.slots <- struct{}{}:
		return true
	default:
		return false
	}
}

// register gives calls (each holding a place in flight) their IDs and
// deadlines, puts them in pending and sends them to their keys' homes. It
// fails, releasing their places, once Close has begun.
func (c *Client) register(calls ...*call) error {
	deadline := c.clk.Now() + int64(c.cfg.requestTimeout)
	c.mu.Lock()
	if c.shut {
		c.mu.Unlock()
		for range calls {
			<-c.slots
		}
		return closedErr("send")
	}
	for _, cl := range calls {
		cl.id = c.nextID.Add(1)
		cl.req.ID = cl.id
		cl.deadline = deadline
		c.pending[cl.id] = cl
	}
	c.mu.Unlock()
	c.resend(calls, "")
	return nil
}

// resend queues each call on its key's home, skipping node skip; calls
// for which no node is up wait until one is (or their deadline).
func (c *Client) resend(calls []*call, skip string) {
	var parked []*call
	for _, cl := range calls {
		if cl.to != "" {
			if l := c.routes.Load().links[cl.to]; l != nil && cl.to != skip && l.up() {
				l.queue.push(cl)
			} else if c.take(cl) {
				c.finish(cl, nil, fmt.Errorf("quotamesh/client: node %s is down: %w", cl.to, quotamesh.ErrUnavailable))
			}
			continue
		}
		if l := c.pick(cl.h, skip); l != nil {
			l.queue.push(cl)
		} else {
			parked = append(parked, cl)
		}
	}
	if len(parked) > 0 {
		c.parkMu.Lock()
		c.parked = append(c.parked, parked...)
		c.parkMu.Unlock()
		c.linkChanged() // a link may have come up meanwhile
	}
}

// linkChanged is called when a link came up or went down: parked calls go
// to their homes if one is up now, and admin calls waiting for a
// connection look again.
func (c *Client) linkChanged() {
	c.parkMu.Lock()
	parked := c.parked
	c.parked = nil
	close(c.changed)
	c.changed = make(chan struct{})
	c.parkMu.Unlock()
	var still []*call
	for _, cl := range parked {
		if cl.resolved.Load() {
			continue
		}
		if l := c.pick(cl.h, ""); l != nil {
			l.queue.push(cl)
		} else {
			still = append(still, cl)
		}
	}
	if len(still) > 0 {
		c.parkMu.Lock()
		c.parked = append(c.parked, still...)
		c.parkMu.Unlock()
	}
}

// orphans returns the pending calls last written on dead, to be sent again.
func (c *Client) orphans(dead *conn) []*call {
	var out []*call
	c.mu.Lock()
	for _, cl := range c.pending {
		if cl.conn.Load() == dead {
			out = append(out, cl)
		}
	}
	c.mu.Unlock()
	return out
}

// take removes cl from pending if it is still there; the caller then owns
// its outcome.
func (c *Client) take(cl *call) bool {
	c.mu.Lock()
	_, ok := c.pending[cl.id]
	if ok {
		delete(c.pending, cl.id)
	}
	c.mu.Unlock()
	return ok
}

// finish completes a call its caller took from pending: it releases the
// place in flight and delivers the outcome (rep is nil when err is set).
func (c *Client) finish(cl *call, rep *wire.ClientReply, err error) {
	cl.resolved.Store(true)
	<-c.slots
	if cl.onReply != nil {
		cl.onReply(cl, rep, err)
		return
	}
	if rep != nil {
		cl.reply = *rep
	}
	cl.err = err
	close(cl.done)
}

// roundTrip sends a call and waits for its outcome, its context, or Close.
func (c *Client) roundTrip(ctx context.Context, cl *call) error {
	if err := c.acquire(ctx); err != nil {
		return err
	}
	cl.done = make(chan struct{})
	if err := c.register(cl); err != nil {
		return err
	}
	select {
	case <-cl.done:
		return cl.err
	case <-ctx.Done():
		if c.take(cl) {
			c.finish(cl, nil, ctxErr(ctx, "decide"))
		}
	case <-c.closing:
		if c.take(cl) {
			c.finish(cl, nil, closedErr("decide"))
		}
	}
	<-cl.done // the owner finishes it at once
	return cl.err
}

// sweep fails the calls whose deadline has passed.
func (c *Client) sweep(now int64) {
	var late []*call
	c.mu.Lock()
	for id, cl := range c.pending {
		if now > cl.deadline {
			delete(c.pending, id)
			late = append(late, cl)
		}
	}
	c.mu.Unlock()
	for _, cl := range late {
		c.timeouts.Add(1)
		c.finish(cl, nil, fmt.Errorf("quotamesh/client: no reply within %v: %w", c.cfg.requestTimeout, quotamesh.ErrUnavailable))
	}
}

// ctxErr wraps ctx's error (cancelled or deadline) for op.
func ctxErr(ctx context.Context, op string) error {
	return fmt.Errorf("quotamesh/client: %s: %w", op, ctx.Err())
}

// contextUntil is parent, also done when gone is closed, and bounded by d.
func contextUntil(parent context.Context, gone <-chan struct{}, d time.Duration) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithTimeout(parent, d)
	go func() {
		select {
		case <-gone:
			cancel()
		case <-ctx.Done():
		}
	}()
	return ctx, cancel
}

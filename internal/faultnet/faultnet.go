package faultnet

import (
	"container/heap"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// MaxQueued is the most datagrams a Conn holds in its delay queue; a delayed
// datagram that finds the queue full is dropped and counted in
// Stats.QueueFull.
const MaxQueued = 4096

// Faults are the impairments applied to outgoing datagrams. The zero value
// applies none.
type Faults struct {
	// Drop is the probability, in [0, 1], that a datagram is dropped.
	Drop float64
	// Delay is added to every datagram that is not dropped.
	Delay time.Duration
	// Jitter adds a uniform random delay in [0, Jitter) on top of Delay, so
	// datagrams may also overtake each other.
	Jitter time.Duration
	// Reorder is the probability, in [0, 1], that a datagram is held back by
	// ReorderDelay more than its Delay and Jitter.
	Reorder float64
	// ReorderDelay is the hold-back of a reordered datagram. Zero means
	// 2×(Delay+Jitter), at least 1 ms.
	ReorderDelay time.Duration
}

// Validate reports a probability outside [0, 1] or a negative duration.
func (f Faults) Validate() error {
	switch {
	case !(f.Drop >= 0 && f.Drop <= 1):
		return fmt.Errorf("%w: Drop %v is not a probability in [0, 1]", ErrInvalidFaults, f.Drop)
	case !(f.Reorder >= 0 && f.Reorder <= 1):
		return fmt.Errorf("%w: Reorder %v is not a probability in [0, 1]", ErrInvalidFaults, f.Reorder)
	case f.Delay < 0:
		return fmt.Errorf("%w: Delay %v is negative", ErrInvalidFaults, f.Delay)
	case f.Jitter < 0:
		return fmt.Errorf("%w: Jitter %v is negative", ErrInvalidFaults, f.Jitter)
	case f.ReorderDelay < 0:
		return fmt.Errorf("%w: ReorderDelay %v is negative", ErrInvalidFaults, f.ReorderDelay)
	}
	return nil
}

func (f Faults) any() bool {
	return f.Drop > 0 || f.Delay > 0 || f.Jitter > 0 || f.Reorder > 0
}

func (f Faults) reorderDelay() time.Duration {
	if f.ReorderDelay > 0 {
		return f.ReorderDelay
	}
	return max(2*(f.Delay+f.Jitter), time.Millisecond)
}

// Stats counts what the fault path did. Datagrams written or read while no
// fault and no block is set bypass it and are not counted.
type Stats struct {
	Passed     uint64 // written to the wrapped conn at once
	Dropped    uint64 // dropped by Faults.Drop
	Delayed    uint64 // put in the delay queue
	Reordered  uint64 // of those, held back by Faults.Reorder
	QueueFull  uint64 // dropped because the delay queue was full
	BlockedOut uint64 // discarded on WriteTo (or when due) by Block
	BlockedIn  uint64 // discarded on ReadFrom by Block
}

// blockDir is which directions of an address's traffic a block discards.
type blockDir uint8

const (
	blockOut  blockDir = 1 << iota // datagrams to the address
	blockIn                        // datagrams from it
	blockBoth = blockOut | blockIn
)

// state is an immutable snapshot of the configured faults; a nil *state
// means no fault and no block, the fast path.
type state struct {
	faults  Faults
	blocked map[string]blockDir
}

// isBlocked reports whether traffic with addr in direction d is discarded.
func (s *state) isBlocked(addr net.Addr, d blockDir) bool {
	if len(s.blocked) == 0 || addr == nil {
		return false
	}
	return s.blocked[addr.String()]&d != 0
}

// Conn is a net.PacketConn that applies Faults to what it writes and Block to
// both directions. Create it with Wrap; its methods are safe for concurrent
// use.
type Conn struct {
	pc    net.PacketConn
	state atomic.Pointer[state]

	mu     sync.Mutex // guards the fields below and every store to state
	faults Faults
	block  map[string]blockDir
	rng    *rand.Rand
	queue  delayQueue
	seq    uint64
	closed bool

	wake      chan struct{} // capacity 1: a new head of the queue
	done      chan struct{} // closed by Close
	wg        sync.WaitGroup
	closeOnce sync.Once
	closeErr  error

	passed, dropped, delayed, reordered, queueFull, blockedOut, blockedIn atomic.Uint64
}

var _ net.PacketConn = (*Conn)(nil)

// Wrap returns a Conn over pc with no faults set, drawing its random
// decisions from a PCG generator seeded with seed. It starts the goroutine
// that sends delayed datagrams; Close stops it. The Conn owns pc from now on:
// Close closes it.
func Wrap(pc net.PacketConn, seed uint64) *Conn {
	c := &Conn{
		pc:    pc,
		block: map[string]blockDir{},
		rng:   rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)),
		wake:  make(chan struct{}, 1),
		done:  make(chan struct{}),
	}
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		c.run()
	}()
	return c
}

// Listen opens a UDP socket on addr (e.g. "127.0.0.1:0") and wraps it.
func Listen(addr string, seed uint64) (*Conn, error) {
	pc, err := net.ListenPacket("udp", addr)
	if err != nil {
		return nil, fmt.Errorf("quotamesh/faultnet: listen %s: %w", addr, err)
	}
	return Wrap(pc, seed), nil
}

// SetFaults replaces the faults applied to datagrams written from now on.
func (c *Conn) SetFaults(f Faults) error {
	if err := f.Validate(); err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.faults = f
	c.publishLocked()
	return nil
}

// Faults returns the faults currently set.
func (c *Conn) Faults() Faults {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.faults
}

// Block discards datagrams to and from each address from now on (a
// partition). Addresses compare by their String form, e.g. "127.0.0.1:4000".
func (c *Conn) Block(addrs ...net.Addr) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, a := range addrs {
		c.block[a.String()] = blockBoth
	}
	c.publishLocked()
}

// BlockOut discards datagrams to each address from now on, and lets those
// from it through (a one-way partition: the address hears nothing from this
// Conn). A later Block of the same address blocks both ways.
func (c *Conn) BlockOut(addrs ...net.Addr) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, a := range addrs {
		c.block[a.String()] |= blockOut
	}
	c.publishLocked()
}

// Unblock lets traffic to and from each address through again.
func (c *Conn) Unblock(addrs ...net.Addr) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, a := range addrs {
		delete(c.block, a.String())
	}
	c.publishLocked()
}

// Heal removes every block and every fault.
func (c *Conn) Heal() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.faults = Faults{}
	clear(c.block)
	c.publishLocked()
}

// publishLocked stores a new snapshot, or nil when nothing is set so that
// ReadFrom and WriteTo take the fast path.
func (c *Conn) publishLocked() {
	if !c.faults.any() && len(c.block) == 0 {
		c.state.Store(nil)
		return
	}
	blocked := make(map[string]blockDir, len(c.block))
	for a, d := range c.block {
		blocked[a] = d
	}
	c.state.Store(&state{faults: c.faults, blocked: blocked})
}

// Stats returns the fault path's counters.
func (c *Conn) Stats() Stats {
	return Stats{
		Passed:     c.passed.Load(),
		Dropped:    c.dropped.Load(),
		Delayed:    c.delayed.Load(),
		Reordered:  c.reordered.Load(),
		QueueFull:  c.queueFull.Load(),
		BlockedOut: c.blockedOut.Load(),
		BlockedIn:  c.blockedIn.Load(),
	}
}

// ReadFrom reads the next datagram not from a blocked address.
func (c *Conn) ReadFrom(b []byte) (int, net.Addr, error) {
	for {
		n, addr, err := c.pc.ReadFrom(b)
		if err != nil {
			return n, addr, err
		}
		if s := c.state.Load(); s != nil && s.isBlocked(addr, blockIn) {
			c.blockedIn.Add(1)
			continue
		}
		return n, addr, nil
	}
}

// WriteTo writes b to addr, or drops, delays or discards it as the faults
// say. A datagram that is dropped, queued or blocked is reported written.
func (c *Conn) WriteTo(b []byte, addr net.Addr) (int, error) {
	s := c.state.Load()
	if s == nil {
		return c.pc.WriteTo(b, addr)
	}
	if s.isBlocked(addr, blockOut) {
		c.blockedOut.Add(1)
		return len(b), nil
	}
	f := s.faults
	if !f.any() {
		c.passed.Add(1)
		return c.pc.WriteTo(b, addr)
	}
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return 0, net.ErrClosed
	}
	if f.Drop > 0 && c.rng.Float64() < f.Drop {
		c.mu.Unlock()
		c.dropped.Add(1)
		return len(b), nil
	}
	d := f.Delay
	if f.Jitter > 0 {
		d += time.Duration(c.rng.Int64N(int64(f.Jitter)))
	}
	reordered := f.Reorder > 0 && c.rng.Float64() < f.Reorder
	if reordered {
		d += f.reorderDelay()
	}
	if d <= 0 {
		c.mu.Unlock()
		c.passed.Add(1)
		return c.pc.WriteTo(b, addr)
	}
	if c.queue.Len() >= MaxQueued {
		c.mu.Unlock()
		c.queueFull.Add(1)
		return len(b), nil
	}
	c.seq++
	heap.Push(&c.queue, delayed{due: time.Now().Add(d), seq: c.seq, data: append([]byte(nil), b...), addr: addr})
	head := c.queue[0].seq == c.seq
	c.mu.Unlock()
	c.delayed.Add(1)
	if reordered {
		c.reordered.Add(1)
	}
	if head {
		select {
		case c.wake <- struct{}{}:
		default:
		}
	}
	return len(b), nil
}

// run sends queued datagrams when they fall due, until Close.
func (c *Conn) run() {
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	var due []delayed
	for {
		c.mu.Lock()
		now := time.Now()
		due = due[:0]
		for c.queue.Len() > 0 && !c.queue[0].due.After(now) {
			due = append(due, heap.Pop(&c.queue).(delayed))
		}
		wait := time.Duration(-1)
		if c.queue.Len() > 0 {
			wait = c.queue[0].due.Sub(now)
		}
		c.mu.Unlock()
		s := c.state.Load()
		for i := range due {
			if s != nil && s.isBlocked(due[i].addr, blockOut) {
				c.blockedOut.Add(1)
			} else {
				// A failed write is a lost datagram, which is what this
				// wrapper simulates anyway.
				_, _ = c.pc.WriteTo(due[i].data, due[i].addr)
			}
			due[i] = delayed{}
		}
		if wait >= 0 {
			timer.Reset(wait)
		}
		select {
		case <-c.done:
			return
		case <-c.wake:
			timer.Stop()
		case <-timer.C:
		}
	}
}

// Close discards queued datagrams, stops the delay goroutine, waits for it
// and closes the wrapped conn. Calls after the first return the first
// result.
func (c *Conn) Close() error {
	c.closeOnce.Do(func() {
		c.mu.Lock()
		c.closed = true
		c.queue = nil
		c.mu.Unlock()
		close(c.done)
		c.wg.Wait()
		c.closeErr = c.pc.Close()
	})
	return c.closeErr
}

// LocalAddr returns the wrapped conn's local address.
func (c *Conn) LocalAddr() net.Addr { return c.pc.LocalAddr() }

// SetDeadline sets the wrapped conn's deadlines.
func (c *Conn) SetDeadline(t time.Time) error { return c.pc.SetDeadline(t) }

// SetReadDeadline sets the wrapped conn's read deadline.
func (c *Conn) SetReadDeadline(t time.Time) error { return c.pc.SetReadDeadline(t) }

// SetWriteDeadline sets the wrapped conn's write deadline. Delayed datagrams
// are written by the delay goroutine and are not subject to it.
func (c *Conn) SetWriteDeadline(t time.Time) error { return c.pc.SetWriteDeadline(t) }

var errNoBuffer = errors.New("quotamesh/faultnet: wrapped conn has no socket buffer to set")

// SetReadBuffer sets the wrapped conn's socket receive buffer, if it has one
// (QUIC implementations ask for a large one).
func (c *Conn) SetReadBuffer(bytes int) error {
	if s, ok := c.pc.(interface{ SetReadBuffer(int) error }); ok {
		return s.SetReadBuffer(bytes)
	}
	return errNoBuffer
}

// SetWriteBuffer sets the wrapped conn's socket send buffer, if it has one.
func (c *Conn) SetWriteBuffer(bytes int) error {
	if s, ok := c.pc.(interface{ SetWriteBuffer(int) error }); ok {
		return s.SetWriteBuffer(bytes)
	}
	return errNoBuffer
}

// delayed is one datagram waiting in the delay queue.
type delayed struct {
	due  time.Time
	seq  uint64 // ties broken by write order
	data []byte
	addr net.Addr
}

// delayQueue is a min-heap of datagrams by due time.
type delayQueue []delayed

func (q delayQueue) Len() int { return len(q) }
func (q delayQueue) Less(i, j int) bool {
	if q[i].due.Equal(q[j].due) {
		return q[i].seq < q[j].seq
	}
	return q[i].due.Before(q[j].due)
}
func (q delayQueue) Swap(i, j int) { q[i], q[j] = q[j], q[i] }
func (q *delayQueue) Push(x any)   { *q = append(*q, x.(delayed)) }
func (q *delayQueue) Pop() any {
	old := *q
	n := len(old)
	x := old[n-1]
	old[n-1] = delayed{}
	*q = old[:n-1]
	return x
}

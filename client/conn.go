package client

import (
	"bufio"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/quotamesh/quotamesh/internal/wire"
	"github.com/quotamesh/quotamesh/transport"
	"github.com/rs/zerolog"
)

// maxBatchBytes keeps a request frame under wire.MaxFrame: keys are at most
// 256 bytes and a request's other fields at most about 60.
const maxBatchBytes = wire.MaxFrame - 64<<10

// conn is one connection to a node and its request stream, served by one
// reader and one writer goroutine; the writer sends what its link queues.
type conn struct {
	c    *Client
	cc   *transport.ClientConn
	s    *transport.Stream
	link *link
	gen  uint64 // the client's count of connections
	addr string
	node string
	log  zerolog.Logger

	dead chan struct{} // closed by fail
	once sync.Once
	err  error // why it died; set before dead is closed
	wg   sync.WaitGroup
}

// fail ends the connection (once) for err.
func (cn *conn) fail(err error) {
	cn.once.Do(func() {
		if ce := cn.cc.Err(); errors.Is(ce, transport.ErrCertificateRefused) {
			err = ce // say why the node hung up, not what failed next
		}
		cn.err = err
		close(cn.dead)
		_ = cn.s.Close()
		_ = cn.cc.Close()
	})
}

func (cn *conn) isDead() bool {
	select {
	case <-cn.dead:
		return true
	default:
		return false
	}
}

// start runs the reader and the writer.
func (cn *conn) start() {
	cn.wg.Add(2)
	go func() { defer cn.wg.Done(); cn.readLoop() }()
	go func() { defer cn.wg.Done(); cn.writeLoop() }()
}

// writeLoop drains its link's queue into one ClientBatch frame per write,
// so that whatever queued while the previous write was in flight leaves
// together.
func (cn *conn) writeLoop() {
	c, q := cn.c, cn.link.queue
	enc := wire.NewEncoder()
	var buf []byte
	batch := &wire.ClientBatch{}
	for {
		calls := q.take()
		if len(calls) == 0 {
			q.recycle(calls)
			select {
			case <-q.ready:
				continue
			case <-cn.dead:
				return
			}
		}
		// Tag every call taken before writing any: if a write fails, the
		// supervisor finds them all by their connection and sends them
		// again elsewhere.
		now := c.clk.Now()
		for _, cl := range calls {
			cl.conn.Store(cn)
			cl.sentAt.Store(now)
		}
		all := calls
		for len(calls) > 0 {
			// Stop at MaxBatch requests or maxBatchBytes, whichever first.
			batch.Items = batch.Items[:0]
			size, i := 0, 0
			for ; i < len(calls) && len(batch.Items) < wire.MaxBatch && size < maxBatchBytes; i++ {
				cl := calls[i]
				if cl.resolved.Load() {
					continue
				}
				r := cl.req
				if r.SettleID != 0 && cl.settleNode != cn.node {
					// The lease is another node's (the call moved): that
					// node counts it as used when it expires there.
					r.SettleID, r.SettleUsed = 0, 0
				}
				batch.Items = append(batch.Items, r)
				size += len(r.Key) + 64
			}
			calls = calls[i:]
			if len(batch.Items) == 0 {
				continue
			}
			var err error
			buf, err = enc.Append(buf[:0], batch)
			if err != nil {
				// Keys were validated and counts are bounded: only a bug
				// gets here. Drop the connection rather than the calls,
				// which go elsewhere.
				cn.log.Error().Err(err).Msg("encoding a request batch failed")
				cn.fail(fmt.Errorf("%w: encode: %w", ErrProtocol, err))
				return
			}
			if _, err := cn.s.Write(buf); err != nil {
				cn.fail(fmt.Errorf("write: %w", err))
				return
			}
			c.batches.Add(1)
			c.requests.Add(int64(len(batch.Items)))
		}
		q.recycle(all)
	}
}

// readLoop reads reply frames and hands each reply to its call's owner.
func (cn *conn) readLoop() {
	c := cn.c
	br := bufio.NewReaderSize(cn.s, 16<<10)
	dec := wire.NewDecoder()
	var found []*call
	var at []int
	for {
		body, err := wire.ReadFrame(br, wire.MaxFrame)
		if err != nil {
			cn.fail(fmt.Errorf("read: %w", err))
			return
		}
		m, err := dec.Decode(body)
		if err != nil {
			cn.log.Error().Err(err).Msg("undecodable frame from the node")
			cn.fail(fmt.Errorf("%w: %w", ErrProtocol, err))
			return
		}
		reps, ok := m.(*wire.ClientReplies)
		if !ok {
			cn.log.Error().Uint8("type", uint8(m.Type())).Msg("unexpected message type on the request stream")
			cn.fail(fmt.Errorf("%w: message type %d on the request stream", ErrProtocol, m.Type()))
			return
		}
		found, at = found[:0], at[:0]
		draining := false
		c.mu.Lock()
		for i := range reps.Items {
			r := &reps.Items[i]
			cl, ok := c.pending[r.ID]
			if !ok {
				continue // given up on: its context ended, or it timed out
			}
			if r.Code == wire.CodeShuttingDown {
				// Leave it pending: the supervisor sends it elsewhere.
				draining = true
				continue
			}
			delete(c.pending, r.ID)
			found = append(found, cl)
			at = append(at, i)
		}
		c.mu.Unlock()
		for k, cl := range found {
			cl.node = cn.node
			c.finish(cl, &reps.Items[at[k]], nil)
		}
		clear(found)
		if draining {
			cn.log.Info().Msg("node is shutting down; moving its calls to others")
			cn.fail(ErrShuttingDown)
			return
		}
	}
}

// install makes cn the link's connection and starts its reader and
// writer.
func (l *link) install(cn *conn) {
	cn.link = l
	l.mu.Lock()
	l.cur = cn
	close(l.upCh)
	l.mu.Unlock()
	cn.start()
}

// upSignal is closed once the link has a connection.
func (l *link) upSignal() <-chan struct{} {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.upCh
}

// firstTry is closed when the supervisor's first attempt to connect ended,
// whatever its outcome.
func (l *link) firstTry() <-chan struct{} { return l.tried }

// startOnce starts the link's supervisor, once.
func (l *link) startOnce() {
	l.started.Do(func() {
		l.c.wg.Add(1)
		go func() {
			defer l.c.wg.Done()
			defer close(l.done)
			l.supervise()
		}()
	})
}

// close stops the link (its node left the membership): its supervisor
// moves queued and unanswered calls elsewhere and exits.
func (l *link) close() { l.goneOnce.Do(func() { close(l.gone) }) }

// supervise keeps the link connected until the client stops or the node
// leaves: when the connection dies it moves the calls written on it and
// not answered, and those still queued, to their keys' next node, then
// dials again with backoff: jittered, doubling from backoffMin to
// backoffMax, and from backoffMax to certBackoffMax while the node refuses
// the certificate (retrying soon cannot help; a fleet of clients after a
// CA rotation must not flood the nodes). The streak of failures ends only
// when a connection stayed up for backoffMax: a node that accepts the
// handshake and then refuses the certificate (TLS 1.3 checks it after the
// client's side of the handshake) is not redialed at once.
func (l *link) supervise() {
	c := l.c
	b := newBackoff(c.cfg.backoffMin, c.cfg.backoffMax)
	cb := newBackoff(c.cfg.backoffMax, max(c.cfg.backoffMax, certBackoffMax))
	first := true
	warned := false // a refused certificate is said once at warn level
	wait := func(d time.Duration) bool {
		select {
		case <-c.stop:
			return false
		case <-l.gone:
			return false
		case <-time.After(d):
			return true
		}
	}
	for {
		// The installed connection, dead or alive: a dead one is cleaned up
		// below (its unanswered calls moved) before a new one is dialed.
		l.mu.Lock()
		cn := l.cur
		l.mu.Unlock()
		if cn == nil {
			ctx, cancel := contextUntil(c.stopCtx, l.gone, c.cfg.dialTimeout)
			next, err := c.dialOne(ctx, l.addr, l)
			cancel()
			if first {
				first = false
				close(l.tried)
			}
			if err != nil {
				if c.stopCtx.Err() != nil || isClosed(l.gone) {
					l.evacuate(nil)
					return
				}
				d := b.next()
				ev := c.log.Debug()
				if isCertErr(err) || errors.Is(err, transport.ErrCertificate) || errors.Is(err, transport.ErrWrongPeer) {
					d = cb.next()
					if !warned {
						ev, warned = c.log.Warn(), true
					}
				}
				ev.Err(err).Str("node", l.id).Str("retry_in", d.String()).Msg("node unreachable")
				if !wait(d) {
					l.evacuate(nil)
					return
				}
				continue
			}
			l.install(next)
			c.linkChanged()
			c.log.Info().Str("node", l.id).Str("addr", l.addr).Msg("connected")
			cn = next
		} else if first {
			first = false
			close(l.tried)
		}
		upAt := time.Now()
		select {
		case <-cn.dead:
		case <-c.stop:
			cn.fail(closedErr("connection"))
			cn.wg.Wait()
			return
		case <-l.gone:
			cn.fail(errNodeLeft)
		}
		cn.wg.Wait() // reader and writer are gone: every call they wrote is tagged
		l.mu.Lock()
		if l.cur == cn {
			l.cur = nil
			l.upCh = make(chan struct{})
		}
		l.mu.Unlock()
		c.linkChanged()
		certRefused := isCertErr(cn.err)
		switch {
		case errors.Is(cn.err, ErrShuttingDown) || errors.Is(cn.err, errNodeLeft):
			cn.log.Info().Err(cn.err).Msg("left the node")
		case certRefused && warned:
			cn.log.Debug().Err(cn.err).Msg("connection lost")
		default:
			warned = warned || certRefused
			cn.log.Warn().Err(cn.err).Msg("connection lost")
		}
		c.failovers.Add(1)
		l.evacuate(cn)
		if isClosed(l.gone) || c.stopCtx.Err() != nil {
			return
		}
		if time.Since(upAt) >= c.cfg.backoffMax && !certRefused {
			b.reset() // it was up a while: the failure streak is over
			cb.reset()
			warned = false
		}
		// Wait before dialing again, even after a connection that was up:
		// its calls have moved to other nodes already.
		d := b.next()
		if certRefused {
			d = cb.next()
		}
		if !wait(d) {
			return
		}
	}
}

var errNodeLeft = errors.New("quotamesh/client: the node left the cluster")

// evacuate moves the calls queued on the link, and those written on dead
// (if not nil) and not answered, to their keys' next node.
func (l *link) evacuate(dead *conn) {
	c := l.c
	moved := l.queue.take()
	if dead != nil {
		moved = append(moved, c.orphans(dead)...)
	}
	if len(moved) == 0 {
		return
	}
	live := moved[:0]
	for _, cl := range moved {
		if !cl.resolved.Load() {
			live = append(live, cl)
		}
	}
	c.resend(live, l.id)
}

// isClosed reports whether ch is closed.
func isClosed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// certBackoffMax is the longest wait between attempts to reach a node that
// refuses the client's certificate.
const certBackoffMax = 30 * time.Second

// backoff is a doubling wait with jitter of up to a quarter.
type backoff struct {
	min, max, cur time.Duration
}

func newBackoff(lo, hi time.Duration) *backoff { return &backoff{min: lo, max: hi, cur: lo} }

func (b *backoff) next() time.Duration {
	d := b.cur
	b.cur = min(2*b.cur, b.max)
	return d + time.Duration(jitter(int64(d/4)+1))
}

func (b *backoff) reset() { b.cur = b.min }

package client

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/quotamesh/quotamesh"
	"github.com/quotamesh/quotamesh/internal/wire"
	"github.com/quotamesh/quotamesh/transport"
	"github.com/rs/zerolog"
)

// maxBatchBytes keeps a request frame under wire.MaxFrame: keys are at most
// 256 bytes and a request's other fields at most about 50.
const maxBatchBytes = wire.MaxFrame - 64<<10

// conn is one connection to a node and its request stream, served by one
// reader and one writer goroutine.
type conn struct {
	c    *Client
	cc   *transport.ClientConn
	s    *transport.Stream
	gen  uint64 // the client's count of connections: tells nodes apart for returns
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
		cn.err = err
		close(cn.dead)
		_ = cn.s.Close()
		_ = cn.cc.Close()
	})
}

// start runs the reader and the writer.
func (cn *conn) start() {
	cn.wg.Add(2)
	go func() { defer cn.wg.Done(); cn.readLoop() }()
	go func() { defer cn.wg.Done(); cn.writeLoop() }()
}

// writeLoop drains the send queue into one ClientBatch frame per write, so
// that whatever queued while the previous write was in flight leaves
// together.
func (cn *conn) writeLoop() {
	c := cn.c
	enc := wire.NewEncoder()
	var buf []byte
	batch := &wire.ClientBatch{}
	for {
		calls := c.queue.take()
		if len(calls) == 0 {
			c.queue.recycle(calls)
			select {
			case <-c.queue.ready:
				continue
			case <-cn.dead:
				return
			}
		}
		// Tag every call taken before writing any: if a write fails, the
		// supervisor finds them all by their connection and sends them
		// again.
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
				if cl.retGen != cn.gen {
					r.ReturnN, r.ReturnGrantedAt = 0, 0
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
				// which the next one sends again.
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
		c.queue.recycle(all)
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
				// Leave it pending: the supervisor sends it again on the
				// next connection.
				draining = true
				continue
			}
			delete(c.pending, r.ID)
			found = append(found, cl)
			at = append(at, i)
		}
		c.mu.Unlock()
		for k, cl := range found {
			c.finish(cl, &reps.Items[at[k]], nil)
		}
		clear(found)
		if draining {
			cn.log.Info().Msg("node is shutting down; moving to another")
			cn.fail(ErrShuttingDown)
			return
		}
	}
}

// dialResult is one address's dial outcome.
type dialResult struct {
	cn   *conn
	addr string
	took time.Duration
	err  error
}

// dial connects to every address at once and keeps the first to complete
// its handshake and open its request stream: the nearest reachable node.
// The others are closed. It waits for every attempt before returning.
func (c *Client) dial(ctx context.Context) (*conn, error) {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.dialTimeout)
	defer cancel()
	results := make(chan dialResult, len(c.addrs))
	for _, addr := range c.addrs {
		go func() { results <- c.dialOne(ctx, addr) }()
	}
	var best *conn
	var errs []error
	for range c.addrs {
		r := <-results
		switch {
		case r.err != nil:
			errs = append(errs, r.err)
		case best == nil:
			best = r.cn
			c.log.Debug().Str("addr", r.addr).Str("node", r.cn.node).Dur("handshake", r.took).Msg("connected")
			cancel() // the others lost the race
		default:
			r.cn.fail(errLostRace)
		}
	}
	if best == nil {
		return nil, fmt.Errorf("quotamesh/client: no node of %v reachable: %w", c.addrs, errors.Join(append([]error{quotamesh.ErrUnavailable}, errs...)...))
	}
	return best, nil
}

var errLostRace = errors.New("another node answered first")

// dialOne connects to addr and opens the request stream.
func (c *Client) dialOne(ctx context.Context, addr string) dialResult {
	start := time.Now()
	ccfg := transport.ClientConfig{
		Certificate: c.cfg.cert,
		CAs:         c.cfg.cas,
		NodeID:      c.cfg.nodeID,
		ServerName:  c.cfg.serverName,
		// The handshake is bounded by ctx; quic-go gives up after twice
		// HandshakeTimeout without progress.
		HandshakeTimeout: c.cfg.dialTimeout,
	}
	if c.cfg.idleTimeout > 0 {
		ccfg.IdleTimeout, ccfg.KeepAlive = c.cfg.idleTimeout, c.cfg.idleTimeout/4
	}
	cc, err := transport.DialClient(ctx, addr, ccfg)
	if err != nil {
		return dialResult{addr: addr, err: err}
	}
	s, err := cc.OpenStream(ctx)
	if err != nil {
		_ = cc.Close()
		return dialResult{addr: addr, err: fmt.Errorf("%s: %w", addr, err)}
	}
	node := cc.Identity().Name
	cn := &conn{
		c: c, cc: cc, s: s, addr: addr, node: node,
		gen:  c.gens.Add(1),
		log:  c.log.With().Str("node", node).Str("addr", addr).Logger(),
		dead: make(chan struct{}),
	}
	return dialResult{cn: cn, addr: addr, took: time.Since(start)}
}

// supervise keeps a connection up until Close: when the current one dies it
// connects again (to the nearest node that answers, with backoff while none
// does), then sends again the calls that were written on the dead
// connection and got no reply.
func (c *Client) supervise(cn *conn) {
	backoff := newBackoff(50*time.Millisecond, time.Second)
	for {
		select {
		case <-cn.dead:
		case <-c.stop:
			cn.fail(closedErr("connection"))
			cn.wg.Wait()
			c.setConn(nil)
			return
		}
		cn.wg.Wait() // reader and writer are gone: every call they wrote is tagged
		c.setConn(nil)
		if errors.Is(cn.err, quotamesh.ErrClosed) {
			return
		}
		c.failovers.Add(1)
		cn.log.Warn().Err(cn.err).Msg("connection lost; reconnecting")
		orphans := c.orphans(cn)
		for {
			next, err := c.dial(c.stopCtx)
			if err == nil {
				cn = next
				break
			}
			if c.stopCtx.Err() != nil {
				return
			}
			d := backoff.next()
			c.log.Warn().Err(err).Dur("retry_in", d).Msg("no node reachable")
			select {
			case <-c.stop:
				return
			case <-time.After(d):
			}
		}
		backoff.reset()
		cn.log.Info().Int("resent", len(orphans)).Msg("connected after failover")
		c.setConn(cn)
		cn.start()
		if len(orphans) > 0 {
			c.queue.push(orphans...)
		}
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

// setConn makes cn the current connection (nil while reconnecting) and
// wakes those waiting for a change.
func (c *Client) setConn(cn *conn) {
	c.connMu.Lock()
	c.cur = cn
	close(c.connChanged)
	c.connChanged = make(chan struct{})
	c.connMu.Unlock()
}

// currentConn returns the current connection, waiting within ctx while the
// SDK reconnects.
func (c *Client) currentConn(ctx context.Context) (*conn, error) {
	for {
		c.connMu.Lock()
		cn, changed := c.cur, c.connChanged
		c.connMu.Unlock()
		if cn != nil {
			select {
			case <-cn.dead:
			default:
				return cn, nil
			}
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return nil, fmt.Errorf("quotamesh/client: waiting for a node: %w", errors.Join(quotamesh.ErrUnavailable, ctx.Err()))
		case <-c.closing:
			return nil, closedErr("waiting for a node")
		}
	}
}

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

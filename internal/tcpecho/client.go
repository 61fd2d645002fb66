package tcpecho

import (
	"bufio"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"

	"github.com/quotamesh/quotamesh"
)

// Client is the baseline's client: requests from many goroutines
// pipelined over one TCP connection, as the SDK pipelines strict decisions
// over one QUIC connection. It satisfies quotamesh.Limiter; every answer
// is "allowed".
type Client struct {
	conn    net.Conn
	reqs    chan uint64 // IDs for the writer
	nextID  atomic.Uint64
	mu      sync.Mutex
	waiting map[uint64]chan error // by ID; nil once the connection failed
	failed  error
	closed  chan struct{}
	once    sync.Once
	wg      sync.WaitGroup
}

var _ quotamesh.Limiter = (*Client)(nil)

func newClient(conn net.Conn) *Client {
	c := &Client{conn: conn, reqs: make(chan uint64, 1024), waiting: map[uint64]chan error{}, closed: make(chan struct{})}
	c.wg.Go(c.write)
	c.wg.Go(c.read)
	return c
}

// Allow makes one round trip.
func (c *Client) Allow(ctx context.Context, key string) (quotamesh.Decision, error) {
	return c.AllowN(ctx, key, 1)
}

// AllowN makes one round trip, whatever key and n.
func (c *Client) AllowN(ctx context.Context, _ string, _ int64) (quotamesh.Decision, error) {
	id := c.nextID.Add(1)
	done := make(chan error, 1)
	c.mu.Lock()
	if c.failed != nil {
		c.mu.Unlock()
		return quotamesh.Decision{}, c.failed
	}
	c.waiting[id] = done
	c.mu.Unlock()
	select {
	case c.reqs <- id:
	case <-c.closed:
		return quotamesh.Decision{}, quotamesh.ErrClosed
	case <-ctx.Done():
		c.forget(id)
		return quotamesh.Decision{}, ctx.Err()
	}
	select {
	case err := <-done:
		if err != nil {
			return quotamesh.Decision{}, err
		}
		return quotamesh.Decision{Allowed: true}, nil
	case <-c.closed:
		c.forget(id)
		return quotamesh.Decision{}, quotamesh.ErrClosed
	case <-ctx.Done():
		c.forget(id)
		return quotamesh.Decision{}, ctx.Err()
	}
}

func (c *Client) forget(id uint64) {
	c.mu.Lock()
	delete(c.waiting, id)
	c.mu.Unlock()
}

// write sends the IDs from reqs, flushing when none is waiting.
func (c *Client) write() {
	w := bufio.NewWriterSize(c.conn, 64<<10)
	var f [frameSize]byte
	for {
		var id uint64
		select {
		case id = <-c.reqs:
		case <-c.closed:
			return
		}
		for {
			binary.LittleEndian.PutUint64(f[:8], id)
			if _, err := w.Write(f[:]); err != nil {
				c.fail(err)
				return
			}
			select {
			case id = <-c.reqs:
				continue
			default:
			}
			break
		}
		if err := w.Flush(); err != nil {
			c.fail(err)
			return
		}
	}
}

// read hands each answer to the call waiting for it.
func (c *Client) read() {
	r := bufio.NewReaderSize(c.conn, 64<<10)
	var f [frameSize]byte
	for {
		if _, err := io.ReadFull(r, f[:]); err != nil {
			c.fail(err)
			return
		}
		id := binary.LittleEndian.Uint64(f[:8])
		c.mu.Lock()
		done := c.waiting[id]
		delete(c.waiting, id)
		c.mu.Unlock()
		if done != nil {
			done <- nil
		}
	}
}

// fail ends every waiting call with err (the connection broke or closed).
func (c *Client) fail(err error) {
	select {
	case <-c.closed:
		err = quotamesh.ErrClosed
	default:
		err = fmt.Errorf("tcpecho: connection to %s: %w: %w", c.conn.RemoteAddr(), quotamesh.ErrUnavailable, err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.failed == nil {
		c.failed = err
	}
	for id, done := range c.waiting {
		done <- err
		delete(c.waiting, id)
	}
}

// Close closes the connection, ends every waiting call and waits for the
// client's goroutines. Later calls fail with quotamesh.ErrClosed, or with
// the connection's failure if it failed first.
func (c *Client) Close() error {
	c.once.Do(func() {
		close(c.closed)
		c.conn.Close()
	})
	c.wg.Wait()
	return nil
}

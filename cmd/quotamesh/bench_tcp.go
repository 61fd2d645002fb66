package main

// The TCP baseline of strict mode (--tcp-baseline): the same load, the same
// generator and workers, against plain pipelined request/response over TCP
// on loopback, to separate what a round trip costs on this machine from
// what QUIC and the node add to it.

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spf13/cobra"

	"github.com/quotamesh/quotamesh"
	"github.com/quotamesh/quotamesh/internal/accuracy"
)

// echoFrame is the size of a baseline request and of its answer: an 8-byte
// request ID and 8 bytes of payload (about a strict decision's size).
const echoFrame = 16

// newBenchEchoCmd is the baseline's server, a hidden command the bench
// starts as separate processes, as it starts nodes.
func newBenchEchoCmd() *cobra.Command {
	var listen string
	cmd := &cobra.Command{
		Use:    "bench-echo",
		Hidden: true,
		Short:  "The TCP request/response server of 'bench --tcp-baseline' (internal)",
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if _, _, err := net.SplitHostPort(listen); err != nil {
				return usageError{fmt.Errorf("--listen %q: want host:port: %v", listen, err)}
			}
			return echoServe(cmd.Context(), listen)
		},
	}
	cmd.Flags().StringVar(&listen, "listen", "", "TCP host:port to answer on")
	return cmd
}

// echoServe answers every request frame on every connection to addr with a
// frame carrying the same ID, until ctx ends.
func echoServe(ctx context.Context, addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("bench-echo: %w", err)
	}
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		conns = map[net.Conn]struct{}{}
	)
	stop := context.AfterFunc(ctx, func() {
		ln.Close()
		mu.Lock()
		defer mu.Unlock()
		for c := range conns {
			c.Close()
		}
	})
	defer stop()
	for {
		c, err := ln.Accept()
		if err != nil {
			wg.Wait()
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("bench-echo: accept: %w", err)
		}
		mu.Lock()
		if ctx.Err() != nil {
			mu.Unlock()
			c.Close()
			continue
		}
		conns[c] = struct{}{}
		mu.Unlock()
		wg.Go(func() {
			echoConn(c)
			mu.Lock()
			delete(conns, c)
			mu.Unlock()
			c.Close()
		})
	}
}

// echoConn answers c's requests in order, flushing when no further request
// is already buffered (so pipelined requests share writes).
func echoConn(c net.Conn) {
	r, w := bufio.NewReaderSize(c, 64<<10), bufio.NewWriterSize(c, 64<<10)
	var f [echoFrame]byte
	for {
		if _, err := io.ReadFull(r, f[:]); err != nil {
			return
		}
		f[8] = 1 // "allowed"
		if _, err := w.Write(f[:]); err != nil {
			return
		}
		if r.Buffered() < echoFrame {
			if err := w.Flush(); err != nil {
				return
			}
		}
	}
}

// startEchoServers starts n bench-echo processes on 127.0.0.10 and up, as
// a localCluster (stop stops them and removes their logs).
func startEchoServers(n int, stderr io.Writer) (lc *localCluster, err error) {
	lc, exe, err := newLocalCluster("quotamesh-bench-tcp-", "the TCP baseline")
	if err != nil {
		return nil, err
	}
	dir := lc.dir
	defer func() {
		if err != nil {
			lc.stop(stderr)
			lc = nil
		}
	}()
	for i := range n {
		ip := fmt.Sprintf("127.0.0.%d", firstNodeIP+i)
		addr, err := freePort("tcp", ip)
		if err != nil {
			return nil, err
		}
		c := &childNode{id: fmt.Sprintf("tcp%d", i+1), addr: addr, logPath: filepath.Join(dir, fmt.Sprintf("tcp%d.log", i+1))}
		lc.nodes = append(lc.nodes, c)
		if err := c.start(exe, []string{"bench-echo", "--listen", addr}); err != nil {
			return nil, err
		}
	}
	return lc, nil
}

// dialEcho connects to an echo server, trying again until ctx ends (the
// process may not listen yet).
func dialEcho(ctx context.Context, addr string) (*tcpClient, error) {
	var d net.Dialer
	for {
		c, err := d.DialContext(ctx, "tcp", addr)
		if err == nil {
			return newTCPClient(c), nil
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("bench: connect to the TCP baseline at %s: %w", addr, err)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// tcpClient is the baseline's client: requests from many goroutines
// pipelined over one TCP connection, as the SDK pipelines strict decisions
// over one QUIC connection. It satisfies quotamesh.Limiter; every answer
// is "allowed".
type tcpClient struct {
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

var _ quotamesh.Limiter = (*tcpClient)(nil)

func newTCPClient(conn net.Conn) *tcpClient {
	c := &tcpClient{conn: conn, reqs: make(chan uint64, 1024), waiting: map[uint64]chan error{}, closed: make(chan struct{})}
	c.wg.Go(c.write)
	c.wg.Go(c.read)
	return c
}

func (c *tcpClient) Allow(ctx context.Context, key string) (quotamesh.Decision, error) {
	return c.AllowN(ctx, key, 1)
}

// AllowN makes one round trip, whatever key and n.
func (c *tcpClient) AllowN(ctx context.Context, _ string, _ int64) (quotamesh.Decision, error) {
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

func (c *tcpClient) forget(id uint64) {
	c.mu.Lock()
	delete(c.waiting, id)
	c.mu.Unlock()
}

// write sends the IDs from reqs, flushing when none is waiting.
func (c *tcpClient) write() {
	w := bufio.NewWriterSize(c.conn, 64<<10)
	var f [echoFrame]byte
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
func (c *tcpClient) read() {
	r := bufio.NewReaderSize(c.conn, 64<<10)
	var f [echoFrame]byte
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
func (c *tcpClient) fail(err error) {
	select {
	case <-c.closed:
		err = quotamesh.ErrClosed
	default:
		err = fmt.Errorf("bench: TCP baseline connection to %s: %w: %w", c.conn.RemoteAddr(), quotamesh.ErrUnavailable, err)
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

func (c *tcpClient) Close() error {
	c.once.Do(func() {
		close(c.closed)
		c.conn.Close()
	})
	c.wg.Wait()
	return nil
}

// errNoBaseline is returned when the baseline cannot run.
var errNoBaseline = errors.New("TCP baseline")

// tcpBaseline runs spec against n echo server processes, one pipelined
// connection each, and returns its report (mode "tcp").
func tcpBaseline(ctx context.Context, n int, spec loadSpec, r benchRun, stderr io.Writer) (benchReport, error) {
	lc, err := startEchoServers(n, stderr)
	if err != nil {
		return benchReport{}, fmt.Errorf("%w: %w", errNoBaseline, err)
	}
	defer lc.stop(stderr)
	dctx, cancel := context.WithTimeout(ctx, r.ReadyTimeout)
	defer cancel()
	var lims []quotamesh.Limiter
	var names []string
	defer func() {
		for _, l := range lims {
			l.Close()
		}
	}()
	for _, node := range lc.nodes {
		c, err := dialEcho(dctx, node.addr)
		if err != nil {
			return benchReport{}, fmt.Errorf("%w: %w", errNoBaseline, orDied(lc, err))
		}
		lims = append(lims, c)
		names = append(names, node.id)
	}
	cpu0 := readCPU(lc)
	rep := runLoad(ctx, lims, names, spec)
	readCPU(lc).since(cpu0).report(&rep)
	if err := orDied(lc, ctx.Err()); err != nil {
		return rep, fmt.Errorf("%w: %w", errNoBaseline, err)
	}
	// Every answer is "allowed": the accuracy fields would mean nothing.
	rep.Report = accuracy.Report{Pattern: rep.Pattern, Nodes: rep.Nodes, Duration: rep.Duration, Offered: rep.Offered}
	rep.PerSecond, rep.IdealMaxWindowRatio, rep.Mode = nil, 0, "tcp"
	return rep, nil
}

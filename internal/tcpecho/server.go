package tcpecho

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
)

// ErrAddr marks a listen address that is not host:port.
var ErrAddr = errors.New("tcpecho: bad address")

// Serve answers every request frame on every connection to addr with a
// frame carrying the same ID, until ctx ends; then it closes the listener
// and every connection, waits for their goroutines and returns nil.
// An addr that is not host:port is ErrAddr.
func Serve(ctx context.Context, addr string) error {
	if _, _, err := net.SplitHostPort(addr); err != nil {
		return fmt.Errorf("%w: --listen %q: want host:port: %w", ErrAddr, addr, err)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("tcpecho: %w", err)
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
			return fmt.Errorf("tcpecho: accept: %w", err)
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
			serveConn(c)
			mu.Lock()
			delete(conns, c)
			mu.Unlock()
			c.Close()
		})
	}
}

// serveConn answers c's requests in order, flushing when no further request
// is already buffered (so pipelined requests share writes).
func serveConn(c net.Conn) {
	r, w := bufio.NewReaderSize(c, 64<<10), bufio.NewWriterSize(c, 64<<10)
	var f [frameSize]byte
	for {
		if _, err := io.ReadFull(r, f[:]); err != nil {
			return
		}
		f[8] = 1 // "allowed"
		if _, err := w.Write(f[:]); err != nil {
			return
		}
		if r.Buffered() < frameSize {
			if err := w.Flush(); err != nil {
				return
			}
		}
	}
}

// Package tcpecho is the bench's TCP baseline (--tcp-baseline): plain
// pipelined request/response over TCP, so that a run can separate what a
// round trip costs on this machine from what QUIC and a node add to it.
// Serve answers every 16-byte request frame with a frame carrying the same
// request ID; Client pipelines calls from many goroutines over one
// connection, as the SDK pipelines strict decisions over one QUIC
// connection, and satisfies quotamesh.Limiter (every answer is "allowed").
package tcpecho

import (
	"context"
	"fmt"
	"net"
	"time"
)

// frameSize is the size of a baseline request and of its answer: an 8-byte
// request ID and 8 bytes of payload (about a strict decision's size).
const frameSize = 16

// Dial connects to a server, trying again until ctx ends (the process may
// not listen yet).
func Dial(ctx context.Context, addr string) (*Client, error) {
	var d net.Dialer
	for {
		c, err := d.DialContext(ctx, "tcp", addr)
		if err == nil {
			return newClient(c), nil
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("tcpecho: connect to %s: %w", addr, err)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

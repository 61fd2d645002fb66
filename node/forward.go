package node

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/quotamesh/quotamesh/internal/consensus"
	"github.com/quotamesh/quotamesh/internal/wire"
	"github.com/quotamesh/quotamesh/transport"
)

// The forwarding protocol (stream kind 'f'): one bidirectional stream per
// request. The caller writes one frame (uvarint length, then the request
// bytes consensus made) and the callee answers with one frame holding
// consensus's response, then both close the stream. The node never looks
// inside either payload.
const (
	// maxForwardFrame bounds a forwarded request or response; consensus's
	// own bound is 8 KiB.
	maxForwardFrame = 64 << 10
	// forwardReadTimeout bounds how long a callee waits for the request
	// frame on a new stream.
	forwardReadTimeout = 5 * time.Second
	// forwardMaxTime bounds how long a callee works on one request (the
	// request's own budget, from the caller's deadline, usually ends it
	// sooner).
	forwardMaxTime = 30 * time.Second
	// maxForwardHandlers bounds the forwarded requests handled at once; a
	// stream beyond it is closed at once (the caller retries).
	maxForwardHandlers = 64
)

// forwarder is consensus's Forwarder over the transport's 'f' streams.
type forwarder struct {
	layer   *transport.StreamLayer
	timeout time.Duration // dial timeout when ctx has no sooner deadline
}

var _ consensus.Forwarder = (*forwarder)(nil)

// Forward sends req to the member at address and returns its response.
func (f *forwarder) Forward(ctx context.Context, address string, req []byte) ([]byte, error) {
	timeout := f.timeout
	if dl, ok := ctx.Deadline(); ok {
		timeout = min(timeout, time.Until(dl))
	}
	if timeout <= 0 {
		return nil, context.DeadlineExceeded
	}
	frame, err := wire.AppendFrame(nil, req, maxForwardFrame)
	if err != nil {
		return nil, fmt.Errorf("quotamesh/node: forwarding to %s: %w", address, err)
	}
	conn, err := f.layer.Dial(address, timeout)
	if err != nil {
		return nil, fmt.Errorf("quotamesh/node: forwarding to %s: %w", address, err)
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Now()) })
	defer stop()
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	if _, err := conn.Write(frame); err != nil {
		return nil, fmt.Errorf("quotamesh/node: forwarding to %s: %w", address, ctxErr(ctx, err))
	}
	resp, err := wire.ReadFrame(bufio.NewReader(conn), maxForwardFrame)
	if err != nil {
		return nil, fmt.Errorf("quotamesh/node: reading the answer of %s: %w", address, ctxErr(ctx, err))
	}
	return resp, nil
}

// ctxErr prefers the context's error to the I/O error its cancellation
// caused.
func ctxErr(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return fmt.Errorf("%w (%v)", ctx.Err(), err)
	}
	return err
}

// serveForwards accepts forwarded requests until the 'f' layer closes.
func (n *Node) serveForwards() {
	sem := make(chan struct{}, maxForwardHandlers)
	for {
		conn, err := n.fwdLayer.Accept()
		if err != nil {
			if !errors.Is(err, net.ErrClosed) {
				n.log.Error().Err(err).Msg("accepting forwarded requests stopped")
			}
			return
		}
		select {
		case sem <- struct{}{}:
		default:
			n.log.Warn().Str("remote", conn.RemoteAddr().String()).Msg("too many forwarded requests in progress; stream closed")
			_ = conn.Close()
			continue
		}
		if !n.fwd.Go(func() {
			defer func() { <-sem }()
			n.handleForward(conn)
		}) {
			_ = conn.Close()
			<-sem
		}
	}
}

// handleForward answers one forwarded request, telling consensus who sent
// it: the node ID of the connection it came on, as its certificate says.
func (n *Node) handleForward(conn net.Conn) {
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(forwardReadTimeout))
	req, err := wire.ReadFrame(bufio.NewReader(conn), maxForwardFrame)
	if err != nil {
		n.log.Debug().Err(err).Str("remote", conn.RemoteAddr().String()).Msg("reading a forwarded request")
		return
	}
	caller := ""
	if s, ok := conn.(*transport.Stream); ok {
		caller = s.PeerNode() // the certificate of the connection it came on
	} else {
		caller = n.peerAt(conn.RemoteAddr()) // a stream layer of tests
	}
	ctx, cancel := context.WithTimeout(n.fwdCtx, forwardMaxTime)
	defer cancel()
	_ = conn.SetDeadline(time.Now().Add(forwardMaxTime))
	resp, err := n.store.HandleForwardFrom(ctx, caller, req)
	if err != nil {
		n.m.forwardRefused.Inc()
		if ok, suppressed := n.rejectLog.Allow("forward\x00"+caller, time.Now()); ok {
			// A node that is joining refuses the leader's health probes
			// until the configuration that lists both reaches it: routine.
			l := n.log.Warn()
			if !n.isMember.Load() {
				l = n.log.Debug()
			}
			l.Err(err).Str("peer", caller).Str("remote", conn.RemoteAddr().String()).Int("suppressed", suppressed).Msg("forwarded request refused")
		}
	}
	frame, err := wire.AppendFrame(nil, resp, maxForwardFrame)
	if err == nil {
		_, err = conn.Write(frame)
	}
	if err != nil {
		n.log.Debug().Err(err).Str("peer", caller).Msg("answering a forwarded request")
	}
}

// peerAt returns the node ID of the peer connected from remote, or "" if
// none or more than one is. A StreamLayer stream does not say which peer
// opened it, but it says the UDP address of its connection, and the
// transport verified the certificate of the one connection each peer has:
// a node dials and accepts on one socket, so its connections all come from
// that socket's address. (A transport method naming a stream's peer would
// be better; see the report of the node's first version.)
func (n *Node) peerAt(remote net.Addr) string {
	if remote == nil {
		return ""
	}
	addr := remote.String()
	id := ""
	for _, p := range n.tr.Peers() {
		if p.Connected && p.RemoteAddr == addr {
			if id != "" {
				return ""
			}
			id = p.ID
		}
	}
	return id
}

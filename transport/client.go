package transport

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"sync/atomic"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quotamesh/quotamesh/internal/certs"
)

// ClientConn is a client connection (ALPN quotamesh-client/3 or /2): on a
// node, what Handler.ServeClient gets; in a client, what DialClient
// returns. Either end may open streams. Its methods are safe for concurrent
// use.
type ClientConn struct {
	qc     *quic.Conn
	remote Identity
	proto  string
	reason atomic.Pointer[error]
}

func newClientConn(qc *quic.Conn, remote Identity, proto string) *ClientConn {
	return &ClientConn{qc: qc, remote: remote, proto: proto}
}

// Protocol is the client protocol the two ends agreed on: ALPNClient, or
// ALPNClient2 when one end is older.
func (c *ClientConn) Protocol() string { return c.proto }

// DialClient connects to the node at addr as a client, verifying the node's
// certificate against cfg.CAs (and cfg.NodeID and cfg.ServerName when set).
// It starts no goroutine of this package; quic-go's end when the connection
// is closed.
func DialClient(ctx context.Context, addr string, cfg ClientConfig) (*ClientConn, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	ua, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		return nil, fmt.Errorf("quotamesh/transport: resolve %s: %w", addr, err)
	}
	qconf := &quic.Config{
		HandshakeIdleTimeout:  cfg.HandshakeTimeout,
		MaxIdleTimeout:        cfg.IdleTimeout,
		KeepAlivePeriod:       cfg.KeepAlive,
		MaxIncomingStreams:    int64(cfg.MaxIncomingStreams),
		MaxIncomingUniStreams: -1,
	}
	var verifyErr atomic.Pointer[error]
	tc := clientTLS(cfg)
	verify := tc.VerifyConnection
	tc.VerifyConnection = func(cs tls.ConnectionState) error {
		err := verify(cs)
		if err != nil {
			verifyErr.Store(&err)
		}
		return err
	}
	var qc *quic.Conn
	if cfg.PacketConn != nil {
		qc, err = quic.Dial(ctx, cfg.PacketConn, ua, tc, qconf)
	} else {
		qc, err = quic.DialAddr(ctx, ua.String(), tc, qconf)
	}
	if err != nil {
		if v := verifyErr.Load(); v != nil {
			return nil, fmt.Errorf("dial %s: %w", addr, *v)
		}
		return nil, dialErr(addr, err)
	}
	return newClientConn(qc, nodeIdentityOf(qc), qc.ConnectionState().TLS.NegotiatedProtocol), nil
}

// dialErr names why a dial failed: the node refused the attempt before the
// handshake (rate limit), or refused the handshake (a TLS alert: the
// client's certificate), or could not be reached.
func dialErr(addr string, err error) error {
	var te *quic.TransportError
	if errors.As(err, &te) && te.Remote {
		switch {
		case te.ErrorCode == quic.ConnectionRefused:
			return fmt.Errorf("%w: %s: %w", ErrConnectionRefused, addr, err)
		case te.ErrorCode.IsCryptoError():
			return fmt.Errorf("%w: %s refused the handshake: %w", ErrCertificateRefused, addr, err)
		}
	}
	return fmt.Errorf("%w: dial %s: %w", ErrNotConnected, addr, err)
}

// OpenStream opens a stream to the other end, waiting while the other end's
// stream limit is reached.
func (c *ClientConn) OpenStream(ctx context.Context) (*Stream, error) {
	s, err := c.qc.OpenStreamSync(ctx)
	if err != nil {
		return nil, c.wrap("open stream", err)
	}
	return newStream(s, c.qc), nil
}

// AcceptStream returns the next stream the other end opened. The other end
// must write before a stream can be accepted.
func (c *ClientConn) AcceptStream(ctx context.Context) (*Stream, error) {
	s, err := c.qc.AcceptStream(ctx)
	if err != nil {
		return nil, c.wrap("accept stream", err)
	}
	return newStream(s, c.qc), nil
}

// wrap names why a stream call failed: ErrClosed after Close, the lost
// connection otherwise.
func (c *ClientConn) wrap(op string, err error) error {
	if c.qc.Context().Err() != nil {
		return fmt.Errorf("%s: %w", op, c.Err())
	}
	return fmt.Errorf("%w: %s: %w", ErrNotConnected, op, err)
}

// Identity returns who is at the other end, from its verified certificate:
// on a node, the client's name (or a node's ID for tools using a node
// certificate), the zero Identity for a client without a certificate; in a
// client, the node's ID.
func (c *ClientConn) Identity() Identity { return c.remote }

// Close closes the connection and every stream on it; the other end sees a
// clean close at once.
func (c *ClientConn) Close() error {
	reason := ErrClosed
	c.reason.CompareAndSwap(nil, &reason)
	return c.qc.CloseWithError(codeClientDone, "")
}

// Done is closed when the connection has ended, for any reason.
func (c *ClientConn) Done() <-chan struct{} { return c.qc.Context().Done() }

// Err returns why the connection ended (ErrClosed after Close, an error
// wrapping ErrConnectionLost otherwise), or nil while it is open.
func (c *ClientConn) Err() error {
	if c.qc.Context().Err() == nil {
		return nil
	}
	if r := c.reason.Load(); r != nil {
		return *r
	}
	cause := context.Cause(c.qc.Context())
	var ae *quic.ApplicationError
	if errors.As(cause, &ae) && ae.Remote && ae.ErrorCode == codeTooManyClients {
		return fmt.Errorf("%w: %w", ErrTooManyClients, cause)
	}
	var te *quic.TransportError
	if errors.As(cause, &te) && te.Remote && te.ErrorCode.IsCryptoError() {
		// TLS 1.3 checks a client's certificate after the client's side of
		// the handshake is done: a refused one arrives as a TLS alert that
		// closes the connection at the first exchange.
		return fmt.Errorf("%w: the node refused the handshake: %w", ErrCertificateRefused, cause)
	}
	return fmt.Errorf("%w: %w", ErrConnectionLost, cause)
}

// LocalAddr returns the local UDP address.
func (c *ClientConn) LocalAddr() net.Addr { return c.qc.LocalAddr() }

// RemoteAddr returns the remote UDP address.
func (c *ClientConn) RemoteAddr() net.Addr { return c.qc.RemoteAddr() }

// RTT returns the connection's smoothed round-trip time.
func (c *ClientConn) RTT() time.Duration { return c.qc.ConnectionStats().SmoothedRTT }

// nodeIdentityOf is the verified node identity at the other end of qc.
func nodeIdentityOf(qc *quic.Conn) Identity {
	pcs := qc.ConnectionState().TLS.PeerCertificates
	if len(pcs) == 0 {
		return Identity{}
	}
	id, _ := certs.IdentityOf(pcs[0])
	return identityOf(id)
}

// nodeIDOf is the verified node ID at the other end of a peer connection.
func nodeIDOf(qc *quic.Conn) string { return nodeIdentityOf(qc).Name }

// Refused reports whether err, returned by a ClientConn or one of its
// streams, says the node closed the connection with a TLS alert: it refused
// this client's certificate. A stream can see the alert before the
// connection's Err does.
func Refused(err error) bool {
	var te *quic.TransportError
	return errors.As(err, &te) && te.Remote && te.ErrorCode.IsCryptoError()
}

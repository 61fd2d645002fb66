package transport

import "errors"

// Sentinel errors. Errors returned by this package are one of these or wrap
// one of them (with the peer, address or value in the message); test with
// errors.Is. Errors from quic-go are wrapped too, so callers never need to
// import it.
var (
	// ErrClosed reports use of a closed Transport, StreamLayer or
	// ClientConn, or a connection ended by Close.
	ErrClosed = errors.New("quotamesh/transport: closed")
	// ErrBusy reports that the previous frame to a peer is still being
	// written: skip the peer this round and send a newer frame later.
	ErrBusy = errors.New("quotamesh/transport: peer busy")
	// ErrNotConnected reports a peer with no established connection.
	ErrNotConnected = errors.New("quotamesh/transport: peer not connected")
	// ErrFrameTooLarge reports a frame longer than the configured maximum,
	// either given to Send or announced by a peer (whose connection is then
	// closed, since its stream cannot be resynchronised).
	ErrFrameTooLarge = errors.New("quotamesh/transport: frame too large")
	// ErrBadFrame reports a frame that breaks the framing: an empty body
	// given to Send, or from a peer (whose connection is then closed) an
	// empty frame or a length prefix that is not minimally encoded.
	ErrBadFrame = errors.New("quotamesh/transport: malformed frame")
	// ErrInvalidConfig reports a Config or ClientConfig value out of range;
	// the message names the field and the value.
	ErrInvalidConfig = errors.New("quotamesh/transport: invalid config")
	// ErrCertificate reports a certificate refused at the handshake: missing,
	// signed by another CA, expired or not yet valid, or without the
	// expected QuotaMesh identity.
	ErrCertificate = errors.New("quotamesh/transport: certificate refused")
	// ErrCertificateRefused reports, in a client, that the node closed the
	// connection with a TLS alert: it refused the client's certificate (not
	// signed by the cluster CA, expired, or missing where one is required).
	ErrCertificateRefused = errors.New("quotamesh/transport: the node refused this client's certificate")
	// ErrTooManyClients reports, in a client, that the node closed the
	// connection because it holds ClientPolicy.MaxClientConns client
	// connections already.
	ErrTooManyClients = errors.New("quotamesh/transport: the node has too many client connections")
	// ErrConnectionRefused reports, in a dialer, that the node refused the
	// connection attempt before the handshake: too many attempts from this
	// address (ClientPolicy.HandshakeRate), or the node is closing.
	ErrConnectionRefused = errors.New("quotamesh/transport: the node refused the connection attempt")
	// ErrWrongPeer reports a dialed node whose certificate names another
	// node than the one expected at that address.
	ErrWrongPeer = errors.New("quotamesh/transport: unexpected peer identity")
	// ErrNotAllowed reports a node that Config.AllowPeer refused.
	ErrNotAllowed = errors.New("quotamesh/transport: peer not allowed")
	// ErrReplaced reports a connection closed because the pair already has,
	// or now has, the connection the tie-break keeps.
	ErrReplaced = errors.New("quotamesh/transport: duplicate connection replaced")
	// ErrPeerRemoved reports a connection closed because SetPeers removed
	// the peer.
	ErrPeerRemoved = errors.New("quotamesh/transport: peer removed")
	// ErrConnectionLost reports a connection that ended by itself: the peer
	// closed it, was silent past the idle timeout, or restarted. It wraps
	// the underlying cause.
	ErrConnectionLost = errors.New("quotamesh/transport: connection lost")
	// ErrProtocol reports a peer that broke the stream protocol: an unknown
	// stream kind, a missing or second sync stream, a sync stream that
	// ended.
	ErrProtocol = errors.New("quotamesh/transport: protocol violation")
	// ErrKindTaken reports a StreamLayer kind already in use.
	ErrKindTaken = errors.New("quotamesh/transport: stream kind in use")
)

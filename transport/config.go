package transport

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/quotamesh/quotamesh/internal/certs"
	"github.com/rs/zerolog"
)

// ALPN protocol names. Peers and clients share one UDP port; the ALPN a
// connection negotiates decides which it is, before any application byte.
// A client offers ALPNClient and ALPNClient2; a node picks the newest both
// speak (ClientConn.Protocol), so SDKs and nodes of either version talk.
const (
	ALPNPeer = "quotamesh-peer/1"
	// ALPNClient is the client protocol: replies to decisions carry the
	// node's decision time (wire.ClientReply.Decided).
	ALPNClient = "quotamesh-client/3"
	// ALPNClient2 is the client protocol before decision times: the same
	// messages, replies without Decided.
	ALPNClient2 = "quotamesh-client/2"
)

// Defaults for zero Config fields.
const (
	DefaultKeepAlive          = 250 * time.Millisecond
	DefaultIdleTimeout        = time.Second
	DefaultHandshakeTimeout   = 2 * time.Second
	DefaultDialBackoffMin     = 50 * time.Millisecond
	DefaultDialBackoffMax     = 2 * time.Second
	DefaultMaxIncomingStreams = 256
	// DefaultMaxClientConns bounds open client connections (each costs
	// about 70 KB with its streams' buffers).
	DefaultMaxClientConns = 1024
	// DefaultHandshakeRate and DefaultHandshakeBurst bound the connection
	// attempts one source IP address may make: a token bucket of
	// DefaultHandshakeBurst refilled at DefaultHandshakeRate per second.
	// Peers redial at most every 50 ms and back off to 2 s; a well-behaved
	// SDK backs off too, so only a misbehaving or hostile source meets it.
	DefaultHandshakeRate  = 20.0
	DefaultHandshakeBurst = 40
)

// DefaultMaxFrameSize is the default largest frame body, 1 MiB.
const DefaultMaxFrameSize = 1 << 20

// MaxFrameSizeLimit is the largest MaxFrameSize a Config may set, 64 MiB.
const MaxFrameSizeLimit = 64 << 20

// Config configures a Transport. Zero fields take the documented defaults;
// New copies the Config, so changing it afterwards has no effect. What may
// change at run time goes through methods: SetPeers (membership to dial),
// whatever AllowPeer consults, SetCertificate and SetClientPolicy.
type Config struct {
	// NodeID is this node's ID; Certificate must carry
	// quotamesh://node/<NodeID>. Required.
	NodeID string
	// ListenAddr is the UDP address to listen on (e.g. "127.0.0.1:7000",
	// ":0") when PacketConn is nil. The Transport closes the socket it opens.
	ListenAddr string
	// PacketConn, if set, is used instead of ListenAddr, e.g. a socket that
	// injects loss or latency in tests. The Transport does not close it: its
	// owner closes it after Transport.Close.
	PacketConn net.PacketConn
	// Certificate is this node's certificate and key, signed by the cluster
	// CA, with server and client authentication. Required.
	Certificate tls.Certificate
	// CAs holds the cluster CA; peers' and clients' certificates must chain
	// to it. Required.
	CAs *x509.CertPool
	// Clients is what this node asks of clients and of connection attempts:
	// certificates, and the bounds on connections and handshakes. The zero
	// value requires a certificate of every client and takes the default
	// bounds.
	Clients ClientPolicy
	// AllowPeer, if set, gates peer connections by node ID: an incoming
	// peer (and one reached by StreamLayer.Dial at an address SetPeers did
	// not give) is refused at the handshake unless it returns true. It is
	// called from handshake goroutines, so it must be safe for concurrent
	// use and fast. Nil allows every CA-signed node. Peers given to SetPeers
	// are dialed without consulting it.
	AllowPeer func(nodeID string) bool
	// MaxFrameSize is the largest frame body accepted from a peer and given
	// to Send, at most MaxFrameSizeLimit. Default DefaultMaxFrameSize (1 MiB).
	MaxFrameSize int
	// KeepAlive is the QUIC keep-alive period; it must be below
	// IdleTimeout. Default 250 ms.
	KeepAlive time.Duration
	// IdleTimeout is the QUIC idle timeout: a peer silent this long is
	// down. The effective value is the smaller of both ends'. Default 1 s.
	IdleTimeout time.Duration
	// HandshakeTimeout bounds a handshake without progress (quic-go's
	// HandshakeIdleTimeout; a handshake gives up after twice this at most),
	// and the wait for a new peer connection's sync stream. Default 2 s.
	HandshakeTimeout time.Duration
	// DialBackoffMin and DialBackoffMax bound the jittered exponential wait
	// between redials of a peer. Defaults 50 ms and 2 s.
	DialBackoffMin, DialBackoffMax time.Duration
	// MaxIncomingStreams bounds the bidirectional streams (Raft, RPC,
	// client requests) a connection may have open towards this node at
	// once. Default 256.
	MaxIncomingStreams int
	// Logger receives the transport's logs, with component=transport and,
	// where one is concerned, peer=<id>. The zero Logger discards them.
	Logger zerolog.Logger
	// Registerer, if set, receives the transport's metrics, named
	// quotamesh_transport_* (docs/operations.md lists them); the peer label
	// only takes cluster members' IDs.
	Registerer prometheus.Registerer
	// Handler receives peer frames, peer up/down events and client
	// connections. Required.
	Handler Handler
}

// ClientPolicy is what a node asks of clients, and how many connection
// attempts and client connections it takes. It may change at run time
// (Transport.SetClientPolicy); a zero field takes its default.
type ClientPolicy struct {
	// AllowAnonymous lets a client without a certificate connect; it may
	// then only decide (Identity.May). INSECURE: anyone who reaches the
	// port may then spend any key's limit. Off by default: every client
	// must present a certificate signed by the cluster CA. A client that
	// presents one must pass verification either way.
	AllowAnonymous bool
	// MaxClientConns bounds open client connections; one more is closed at
	// once with ErrTooManyClients. Default DefaultMaxClientConns (1024).
	// Peer connections do not count.
	MaxClientConns int
	// HandshakeRate (per second) and HandshakeBurst bound the connection
	// attempts of one source IP address, peers and clients alike; an
	// attempt beyond them is refused before the TLS handshake (the dialer
	// sees ErrConnectionRefused) and counted as reason rate_limited.
	// Defaults 20/s and 40.
	HandshakeRate  float64
	HandshakeBurst int
}

func (p ClientPolicy) withDefaults() ClientPolicy {
	orDefault(&p.MaxClientConns, DefaultMaxClientConns)
	orDefault(&p.HandshakeRate, DefaultHandshakeRate)
	orDefault(&p.HandshakeBurst, DefaultHandshakeBurst)
	return p
}

// orDefault sets *v to def if *v is its type's zero value.
func orDefault[T comparable](v *T, def T) {
	var zero T
	if *v == zero {
		*v = def
	}
}

// Validate reports the first field out of range, naming its value.
func (p ClientPolicy) Validate() error {
	d := p.withDefaults()
	switch {
	case d.MaxClientConns < 0:
		return fmt.Errorf("%w: MaxClientConns %d is negative", ErrInvalidConfig, p.MaxClientConns)
	case d.HandshakeRate < 0 || d.HandshakeRate != d.HandshakeRate:
		return fmt.Errorf("%w: HandshakeRate %v: want a positive number per second", ErrInvalidConfig, p.HandshakeRate)
	case d.HandshakeBurst < 0:
		return fmt.Errorf("%w: HandshakeBurst %d is negative", ErrInvalidConfig, p.HandshakeBurst)
	}
	return nil
}

// Handler is what the transport delivers to. Its methods are called from
// goroutines the Transport owns and waits for in Close, so they must not call
// Close.
type Handler interface {
	// PeerFrame delivers one frame body from peer, which the handler then
	// owns. It is called from the peer's reader goroutine, in order, never
	// concurrently for one peer, and only between that connection's PeerUp
	// and PeerDown. It must not block long: while it runs, nothing more is
	// read from that peer, and QUIC flow control eventually stalls the
	// peer's sender (which then sees ErrBusy).
	PeerFrame(peer string, body []byte)
	// PeerUp reports a new connection to peer, ready for Send (Send works
	// from inside PeerUp, and the first frame sent is the first the peer
	// receives on this connection). Every PeerUp is followed by exactly one
	// PeerDown, and for one peer the calls never overlap.
	PeerUp(peer string)
	// PeerDown reports the end of the connection PeerUp announced, with the
	// reason (see the package's sentinel errors). No PeerFrame for that
	// connection follows it.
	PeerDown(peer string, err error)
	// ServeClient serves one client connection, in a goroutine of its own,
	// and returns when done (at the latest when c.Done() is closed); the
	// transport then closes the connection.
	ServeClient(c *ClientConn)
}

// withDefaults returns c with zero fields set to their defaults.
func (c Config) withDefaults() Config {
	if c.MaxFrameSize == 0 {
		c.MaxFrameSize = DefaultMaxFrameSize
	}
	if c.KeepAlive == 0 {
		c.KeepAlive = DefaultKeepAlive
	}
	if c.IdleTimeout == 0 {
		c.IdleTimeout = DefaultIdleTimeout
	}
	if c.HandshakeTimeout == 0 {
		c.HandshakeTimeout = DefaultHandshakeTimeout
	}
	if c.DialBackoffMin == 0 {
		c.DialBackoffMin = DefaultDialBackoffMin
	}
	if c.DialBackoffMax == 0 {
		c.DialBackoffMax = DefaultDialBackoffMax
	}
	if c.MaxIncomingStreams == 0 {
		c.MaxIncomingStreams = DefaultMaxIncomingStreams
	}
	c.Clients = c.Clients.withDefaults()
	return c
}

// Validate reports the first field that is missing or out of range, naming
// its value; zero fields are read as their defaults. It also checks that
// Certificate carries NodeID's identity, has both server and client
// authentication, and chains to CAs now.
func (c Config) Validate() error {
	_, err := c.validate()
	return err
}

// validate checks c and returns the parsed leaf of its certificate.
func (c Config) validate() (*x509.Certificate, error) {
	d := c.withDefaults()
	if err := certs.ValidateNodeID(c.NodeID); err != nil {
		return nil, fmt.Errorf("%w: NodeID: %w", ErrInvalidConfig, err)
	}
	if c.PacketConn == nil && c.ListenAddr == "" {
		return nil, fmt.Errorf("%w: neither ListenAddr nor PacketConn is set", ErrInvalidConfig)
	}
	if c.Handler == nil {
		return nil, fmt.Errorf("%w: Handler is nil", ErrInvalidConfig)
	}
	if c.CAs == nil {
		return nil, fmt.Errorf("%w: CAs is nil; want the cluster CA", ErrInvalidConfig)
	}
	switch {
	case d.MaxFrameSize < 0 || d.MaxFrameSize > MaxFrameSizeLimit:
		return nil, fmt.Errorf("%w: MaxFrameSize %d: want 1 to %d (0 for %d)", ErrInvalidConfig, c.MaxFrameSize, MaxFrameSizeLimit, DefaultMaxFrameSize)
	case d.KeepAlive < 0:
		return nil, fmt.Errorf("%w: KeepAlive %v is negative", ErrInvalidConfig, c.KeepAlive)
	case d.IdleTimeout < 0:
		return nil, fmt.Errorf("%w: IdleTimeout %v is negative", ErrInvalidConfig, c.IdleTimeout)
	case d.KeepAlive >= d.IdleTimeout:
		return nil, fmt.Errorf("%w: KeepAlive %v must be below IdleTimeout %v", ErrInvalidConfig, d.KeepAlive, d.IdleTimeout)
	case d.HandshakeTimeout < 0:
		return nil, fmt.Errorf("%w: HandshakeTimeout %v is negative", ErrInvalidConfig, c.HandshakeTimeout)
	case d.DialBackoffMin < 0 || d.DialBackoffMax < 0:
		return nil, fmt.Errorf("%w: DialBackoffMin %v or DialBackoffMax %v is negative", ErrInvalidConfig, c.DialBackoffMin, c.DialBackoffMax)
	case d.DialBackoffMin > d.DialBackoffMax:
		return nil, fmt.Errorf("%w: DialBackoffMin %v is above DialBackoffMax %v", ErrInvalidConfig, d.DialBackoffMin, d.DialBackoffMax)
	case d.MaxIncomingStreams < 0:
		return nil, fmt.Errorf("%w: MaxIncomingStreams %d is negative", ErrInvalidConfig, c.MaxIncomingStreams)
	}
	if err := c.Clients.Validate(); err != nil {
		return nil, err
	}
	return validateMaterial(c.NodeID, c.Certificate, c.CAs)
}

// validateMaterial checks that cert carries node id's identity, has both
// server and client authentication, and chains to cas now; it returns the
// parsed leaf.
func validateMaterial(nodeID string, cert tls.Certificate, cas *x509.CertPool) (*x509.Certificate, error) {
	if cas == nil {
		return nil, fmt.Errorf("%w: CAs is nil; want the cluster CA", ErrInvalidConfig)
	}
	leaf, err := leafOf(cert)
	if err != nil {
		return nil, fmt.Errorf("%w: Certificate: %w", ErrInvalidConfig, err)
	}
	id, err := certs.NodeID(leaf)
	if err != nil {
		return nil, fmt.Errorf("%w: Certificate: %w", ErrInvalidConfig, err)
	}
	if id != nodeID {
		return nil, fmt.Errorf("%w: Certificate is for node %q, NodeID is %q", ErrInvalidConfig, id, nodeID)
	}
	intermediates := x509.NewCertPool()
	for _, der := range cert.Certificate[1:] {
		if ic, err := x509.ParseCertificate(der); err == nil {
			intermediates.AddCert(ic)
		}
	}
	for _, usage := range []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth} {
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: cas, Intermediates: intermediates, KeyUsages: []x509.ExtKeyUsage{usage}}); err != nil {
			return nil, fmt.Errorf("%w: Certificate of node %q does not verify against CAs for %s: %w", ErrInvalidConfig, id, usageName(usage), err)
		}
	}
	return leaf, nil
}

func leafOf(c tls.Certificate) (*x509.Certificate, error) {
	if len(c.Certificate) == 0 {
		return nil, fmt.Errorf("no certificate")
	}
	if c.PrivateKey == nil {
		return nil, fmt.Errorf("no private key")
	}
	if c.Leaf != nil {
		return c.Leaf, nil
	}
	return x509.ParseCertificate(c.Certificate[0])
}

func usageName(u x509.ExtKeyUsage) string {
	if u == x509.ExtKeyUsageServerAuth {
		return "server authentication"
	}
	return "client authentication"
}

// ClientConfig configures DialClient. Zero fields take the defaults of
// Config.
type ClientConfig struct {
	// Certificate is the client's certificate, if it has one: a client
	// certificate, or a node certificate for tools running on a node.
	Certificate *tls.Certificate
	// CAs holds the cluster CA the node's certificate must chain to.
	// Required.
	CAs *x509.CertPool
	// NodeID, if set, is the node the client expects to reach: a node
	// certificate for any other ID is refused.
	NodeID string
	// ServerName, if set, must match a DNS or IP SAN of the node's
	// certificate, as in ordinary TLS.
	ServerName string
	// PacketConn, if set, carries the connection instead of a new UDP
	// socket. The caller closes it after the ClientConn.
	PacketConn net.PacketConn
	// KeepAlive, IdleTimeout and HandshakeTimeout as in Config. The idle
	// timeout in effect is the smaller of the client's and the node's, so
	// keep-alives are on by default.
	KeepAlive, IdleTimeout, HandshakeTimeout time.Duration
	// MaxIncomingStreams bounds streams the node may open towards the
	// client. Default 256.
	MaxIncomingStreams int
}

func (c ClientConfig) withDefaults() ClientConfig {
	d := Config{KeepAlive: c.KeepAlive, IdleTimeout: c.IdleTimeout, HandshakeTimeout: c.HandshakeTimeout, MaxIncomingStreams: c.MaxIncomingStreams}.withDefaults()
	c.KeepAlive, c.IdleTimeout, c.HandshakeTimeout, c.MaxIncomingStreams = d.KeepAlive, d.IdleTimeout, d.HandshakeTimeout, d.MaxIncomingStreams
	return c
}

// Validate reports the first field that is missing or out of range.
func (c ClientConfig) Validate() error {
	d := c.withDefaults()
	switch {
	case c.CAs == nil:
		return fmt.Errorf("%w: ClientConfig.CAs is nil; want the cluster CA", ErrInvalidConfig)
	case d.KeepAlive < 0 || d.IdleTimeout < 0 || d.HandshakeTimeout < 0:
		return fmt.Errorf("%w: negative duration in ClientConfig (KeepAlive %v, IdleTimeout %v, HandshakeTimeout %v)", ErrInvalidConfig, c.KeepAlive, c.IdleTimeout, c.HandshakeTimeout)
	case d.KeepAlive >= d.IdleTimeout:
		return fmt.Errorf("%w: ClientConfig.KeepAlive %v must be below IdleTimeout %v", ErrInvalidConfig, d.KeepAlive, d.IdleTimeout)
	case d.MaxIncomingStreams < 0:
		return fmt.Errorf("%w: ClientConfig.MaxIncomingStreams %d is negative", ErrInvalidConfig, c.MaxIncomingStreams)
	}
	if c.NodeID != "" {
		if err := certs.ValidateNodeID(c.NodeID); err != nil {
			return fmt.Errorf("%w: ClientConfig.NodeID: %w", ErrInvalidConfig, err)
		}
	}
	if c.Certificate != nil {
		leaf, err := leafOf(*c.Certificate)
		if err != nil {
			return fmt.Errorf("%w: ClientConfig.Certificate: %w", ErrInvalidConfig, err)
		}
		if _, err := certs.IdentityOf(leaf); err != nil {
			return fmt.Errorf("%w: ClientConfig.Certificate: %w", ErrInvalidConfig, err)
		}
	}
	return nil
}

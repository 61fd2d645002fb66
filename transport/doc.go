// Package transport is QuotaMesh's QUIC mesh: the connections between nodes
// and from clients, with mutual TLS, length-prefixed frames on long-lived
// sync streams, and stream layers for Raft and RPC. It is the only package
// that imports quic-go; nothing it exports mentions quic-go types or a
// QuotaMesh internal package.
//
// # What callers may rely on
//
//   - Goroutine safety. The methods of Transport, StreamLayer and ClientConn
//     are safe for concurrent use. A Stream's Read and Write may run
//     concurrently, each from one goroutine at a time. Handler methods are
//     called from goroutines the Transport owns (see Handler).
//   - Time. Unlike QuotaMesh's pure packages, the transport reads the clock
//     and runs timers: keep-alives, idle timeouts, redials. Every duration
//     is a Config field with a documented default.
//   - Zero values. A zero Config field takes its default (Default* below),
//     but NodeID, ListenAddr or PacketConn, Certificate, CAs and Handler are
//     required; Config.Validate says which is missing. The zero Identity is
//     an anonymous client. The zero Transport, StreamLayer, ClientConn and
//     Stream are not usable: they come from New, Transport.StreamLayer,
//     DialClient and the methods that open or accept streams.
//   - Bounds. Frames on sync streams are at most MaxFrameSize; each peer
//     holds at most one frame waiting to be written; a connection has at
//     most MaxIncomingStreams streams open towards this end; a StreamLayer
//     queues at most 64 streams not yet accepted. Memory does not grow with
//     a slow peer.
//   - Errors are this package's sentinels or wrap them, quic-go's errors
//     included (see the sentinels below); test with errors.Is.
//
// # Certificates
//
// Every certificate chains to the cluster CA (Config.CAs, ClientConfig.CAs)
// and names who it speaks for in exactly one URI SAN of scheme quotamesh: a
// node's quotamesh://node/<id>, with both server and client authentication
// in its extended key usage; a client's quotamesh://client/<name>, with
// client authentication and its role in a second URI SAN,
// quotamesh://role/admin or quotamesh://role/decide (Identity.Role;
// Identity.May says what each role may do). A node ID or client name is 1
// to 64 bytes of [A-Za-z0-9._-]. The quotamesh command writes a CA and such certificates
// ("quotamesh certs init"); the package example makes them with
// crypto/x509.
//
// # What it promises
//
//   - Identity. Every node certificate must chain to the cluster CA (Config
//     CAs), carry quotamesh://node/<id>, be valid now, and have the key
//     usage of its role; a peer that presents none, or one from another CA,
//     or an expired one, is refused during the handshake, in both
//     directions. A dialed node must present the ID SetPeers expects at that
//     address; an incoming node must pass Config.AllowPeer. A node never
//     accepts its own ID from the network.
//   - Peers and clients share one UDP port and are told apart by ALPN
//     (quotamesh-peer/1, quotamesh-client/3 or /2) before any byte of the
//     application: a client connection is never a peer and a peer
//     connection never reaches Handler.ServeClient. Clients must present a
//     CA-signed certificate, unless ClientPolicy.AllowAnonymous (insecure)
//     lets them connect without one. TLS 1.3 checks a client's certificate
//     after the client's side of the handshake: a refused client sees the
//     TLS alert at its first exchange (ClientConn.Err wraps
//     ErrCertificateRefused).
//   - Bounded admission. Every incoming connection attempt first meets a
//     token bucket per source IP address (ClientPolicy.HandshakeRate and
//     HandshakeBurst, 20/s and 40 by default), before any TLS work; client
//     connections are bounded by ClientPolicy.MaxClientConns (1024).
//     Refused handshakes are counted by reason in
//     quotamesh_transport_handshakes_refused_total (every series exported
//     at 0 from the start) and logged at warn level at most once per second
//     per direction and reason.
//   - Rotation. SetCertificate replaces the node's certificate and the CA
//     for new handshakes; SetClientPolicy the client policy.
//   - One connection per pair of nodes, reused by the sync streams and by
//     every StreamLayer. When both nodes dial at once, both keep the
//     connection dialed by the node with the smaller ID; the node with the
//     larger ID waits 1 to 2 s before dialing, so that this is rare. A
//     configured peer is redialed with jittered exponential backoff
//     (DialBackoffMin to DialBackoffMax, 50 ms to 2 s by default).
//   - A silent peer is reported down (Handler.PeerDown) by the QUIC idle
//     timeout: 1.0 s after its last packet while frames flow, 1.25 s on a
//     connection with only keep-alives (every 250 ms), with the defaults. A
//     peer that closes is reported at once (CONNECTION_CLOSE), and so is one
//     that crashed and came back on the same address with the same key (a
//     stateless reset; the reset key is derived from the node's private key).
//   - Frames. The transport does not look inside frames: Send takes a frame
//     body and Handler.PeerFrame gets one. Each direction of a pair has one
//     unidirectional sync stream that carries uvarint length-prefixed
//     frames; a length above MaxFrameSize (1 MiB by default) is refused
//     before any allocation, and so are an empty frame and a length prefix
//     that is not minimally encoded: each closes the connection. Frames from
//     one peer reach Handler.PeerFrame in order, from one goroutine, between
//     PeerUp and PeerDown. A Stream (a StreamLayer connection or a client
//     stream) is a plain byte stream: its user frames it.
//   - Back-pressure without growth. Send never blocks: each peer has a
//     one-frame mailbox, and while the previous frame is still being written
//     (flow control, a slow or dead peer) Send returns ErrBusy. A slow peer
//     costs one frame of memory and never delays the others.
//   - Lifecycle. Every goroutine is started through one tracked helper and
//     Close waits for all of them, including Handler calls in progress; Close
//     is idempotent. The Transport closes the UDP socket it opened and
//     leaves a Config.PacketConn to its owner.
package transport

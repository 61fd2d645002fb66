package transport

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quotamesh/quotamesh/internal/certs"
	"github.com/quotamesh/quotamesh/internal/lograte"
	"github.com/rs/zerolog"
)

// Application error codes sent in CONNECTION_CLOSE and stream resets.
const (
	codeShutdown quic.ApplicationErrorCode = 0x100 + iota
	codeReplaced
	codeRemoved
	codeFrameTooLarge
	codeProtocol
	codeClientDone
	codeStreamClosed
	codeTooManyClients
)

// Stream kind bytes. A peer's unidirectional sync stream starts with
// kindSync; bidirectional streams start with the kind of their StreamLayer.
const kindSync byte = 's'

// Transport is one node's QUIC endpoint: the mesh of peer connections, the
// stream layers carried on them, and the client listener. Its methods are
// safe for concurrent use.
type Transport struct {
	cfg      Config
	log      zerolog.Logger
	m        *metrics
	qt       *quic.Transport
	ln       *quic.Listener
	pc       net.PacketConn
	ownPC    bool
	quicConf *quic.Config
	ctx      context.Context // cancelled by Close
	cancel   context.CancelFunc
	seed     atomic.Uint64

	mat         atomic.Pointer[material]     // certificate and CA in use (SetCertificate)
	policy      atomic.Pointer[ClientPolicy] // SetClientPolicy; defaults filled in
	limiter     *handshakeLimiter
	clientConns atomic.Int64
	refusalLog  *lograte.Limiter

	mu     sync.Mutex
	closed bool
	peers  map[string]*peer
	conns  map[*quic.Conn]*peerConn // every live connection (nil value: a client or not yet adopted)
	layers map[byte]*StreamLayer
	wg     sync.WaitGroup // every goroutine the Transport starts

	peerSnap   atomic.Pointer[map[string]*peer] // copy of peers for Send
	closedFlag atomic.Bool

	closeOnce sync.Once
}

// New validates cfg, opens the UDP socket (or takes cfg.PacketConn), starts
// listening and returns the Transport. It dials nobody until SetPeers.
func New(cfg Config) (*Transport, error) {
	leaf, err := cfg.validate()
	if err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	m, err := newMetrics(cfg.Registerer)
	if err != nil {
		return nil, err
	}
	t := &Transport{
		cfg:    cfg,
		log:    cfg.Logger.With().Str("component", "transport").Logger(), // the caller's logger names the node
		m:      m,
		peers:  map[string]*peer{},
		conns:  map[*quic.Conn]*peerConn{},
		layers: map[byte]*StreamLayer{},

		limiter:    newHandshakeLimiter(cfg.Clients),
		refusalLog: lograte.New(time.Second),
	}
	t.mat.Store(&material{cert: cfg.Certificate, leaf: leaf, cas: cfg.CAs})
	policy := cfg.Clients
	t.policy.Store(&policy)
	t.seed.Store(uint64(time.Now().UnixNano()))
	t.publishPeersLocked()
	t.pc = cfg.PacketConn
	if t.pc == nil {
		pc, err := net.ListenPacket("udp", cfg.ListenAddr)
		if err != nil {
			t.unregister()
			return nil, fmt.Errorf("quotamesh/transport: listen on %s: %w", cfg.ListenAddr, err)
		}
		t.pc, t.ownPC = pc, true
	}
	t.quicConf = &quic.Config{
		HandshakeIdleTimeout:  cfg.HandshakeTimeout,
		MaxIdleTimeout:        cfg.IdleTimeout,
		KeepAlivePeriod:       cfg.KeepAlive,
		MaxIncomingStreams:    int64(cfg.MaxIncomingStreams),
		MaxIncomingUniStreams: 1, // the peer's sync stream; clients need none
	}
	if cfg.MaxIncomingStreams == 0 {
		t.quicConf.MaxIncomingStreams = -1
	}
	t.qt = &quic.Transport{Conn: t.pc, StatelessResetKey: statelessResetKey(cfg.Certificate)}
	listenConf := t.quicConf.Clone()
	listenConf.GetConfigForClient = t.admitConn
	ln, err := t.qt.Listen(t.serverTLS(), listenConf)
	if err != nil {
		_ = t.qt.Close()
		if t.ownPC {
			_ = t.pc.Close()
		}
		t.unregister()
		return nil, fmt.Errorf("quotamesh/transport: listen on %s: %w", t.pc.LocalAddr(), err)
	}
	t.ln = ln
	t.ctx, t.cancel = context.WithCancel(context.Background())
	t.spawn(t.acceptLoop)
	t.log.Info().Str("addr", t.Addr().String()).Msg("transport listening")
	return t, nil
}

func (t *Transport) unregister() {
	if t.m.unregister != nil {
		t.m.unregister()
	}
}

// NodeID returns this node's ID.
func (t *Transport) NodeID() string { return t.cfg.NodeID }

// Addr returns the local UDP address peers and clients connect to.
func (t *Transport) Addr() net.Addr { return t.pc.LocalAddr() }

// spawn runs fn in a goroutine that Close waits for, unless the Transport is
// closing; it reports whether fn was started.
func (t *Transport) spawn(fn func()) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.spawnLocked(fn)
}

// spawnLocked is spawn with t.mu held.
func (t *Transport) spawnLocked(fn func()) bool {
	if t.closed {
		return false
	}
	t.wg.Add(1)
	go func() {
		defer t.wg.Done()
		fn()
	}()
	return true
}

// nextSeed returns a seed for a per-peer random generator.
func (t *Transport) nextSeed() uint64 { return t.seed.Add(0x9e3779b97f4a7c15) }

// track registers a live connection so that Close can close it; it closes qc
// and returns false if the Transport is closing.
func (t *Transport) track(qc *quic.Conn) bool {
	t.mu.Lock()
	if !t.closed {
		t.conns[qc] = nil
		t.mu.Unlock()
		return true
	}
	t.mu.Unlock()
	_ = qc.CloseWithError(codeShutdown, ErrClosed.Error())
	return false
}

func (t *Transport) untrack(qc *quic.Conn) {
	t.mu.Lock()
	delete(t.conns, qc)
	t.mu.Unlock()
}

// acceptLoop hands each accepted connection to the peer or client side by
// its ALPN. Certificates were checked during the handshake (serverTLS).
func (t *Transport) acceptLoop() {
	for {
		qc, err := t.ln.Accept(t.ctx)
		if err != nil {
			if t.ctx.Err() == nil {
				t.log.Error().Err(err).Msg("accept loop stopped")
			}
			return
		}
		t.handleInbound(qc)
	}
}

func (t *Transport) handleInbound(qc *quic.Conn) {
	if !t.track(qc) {
		return
	}
	cs := qc.ConnectionState().TLS
	switch cs.NegotiatedProtocol {
	case ALPNPeer:
		var id string
		var err error
		if len(cs.PeerCertificates) == 0 {
			err = fmt.Errorf("%w: no certificate", ErrCertificate)
		} else {
			id, err = certs.NodeID(cs.PeerCertificates[0])
		}
		if err != nil { // unreachable: verifyPeer refused it already
			t.untrack(qc)
			_ = qc.CloseWithError(codeProtocol, err.Error())
			return
		}
		t.adopt(qc, id, false, false)
	case ALPNClient, ALPNClient2:
		var id certs.Identity
		if len(cs.PeerCertificates) > 0 {
			id, _ = certs.IdentityOf(cs.PeerCertificates[0]) // verified by verifyClient
		}
		if !t.admitClient() {
			t.untrack(qc)
			limit := t.policy.Load().MaxClientConns
			_ = t.countRefusal("inbound", qc.RemoteAddr().String(), refuse(refusedTooManyClients,
				fmt.Errorf("%w: %d open (MaxClientConns); refused %s", ErrTooManyClients, limit, identityOf(id))))
			_ = qc.CloseWithError(codeTooManyClients, fmt.Sprintf("too many client connections (%d)", limit))
			return
		}
		cc := newClientConn(qc, identityOf(id), cs.NegotiatedProtocol)
		if !t.spawn(func() { t.serveClient(cc) }) {
			t.releaseClient()
			t.untrack(qc)
			_ = qc.CloseWithError(codeShutdown, ErrClosed.Error())
		}
	default: // unreachable: GetConfigForClient refuses other ALPNs
		t.untrack(qc)
		_ = qc.CloseWithError(codeProtocol, "unknown ALPN")
	}
}

func (t *Transport) serveClient(cc *ClientConn) {
	defer t.releaseClient()
	log := t.log.With().Str("client", cc.Identity().String()).Str("remote", cc.RemoteAddr().String()).Logger()
	log.Debug().Msg("client connected")
	t.cfg.Handler.ServeClient(cc)
	_ = cc.qc.CloseWithError(codeClientDone, "")
	t.untrack(cc.qc)
	log.Debug().Msg("client connection closed")
}

// SetPeers sets the peers this node dials, by node ID: peers not yet known
// are dialed, changed addresses are used from the next dial, and peers no
// longer listed have their connection closed (PeerDown with
// ErrPeerRemoved) and are not redialed. Peers that dialed in, are not
// listed, and that AllowPeer now refuses are disconnected too (PeerDown with
// ErrNotAllowed): call SetPeers after a membership change so that AllowPeer's
// new answers apply to live connections. This node's own ID is ignored. A
// bad ID or address fails the whole call and changes nothing. A removed peer
// may dial in again if AllowPeer lets it.
func (t *Transport) SetPeers(peers map[string]string) error {
	for id, addr := range peers {
		if err := certs.ValidateNodeID(id); err != nil {
			return fmt.Errorf("quotamesh/transport: SetPeers: %w", err)
		}
		if _, port, err := net.SplitHostPort(addr); err != nil || port == "" {
			return fmt.Errorf("%w: SetPeers: address %q of peer %q is not host:port", ErrInvalidConfig, addr, id)
		}
	}
	type closing struct {
		c      *peerConn
		reason error
		code   quic.ApplicationErrorCode
	}
	var toClose []closing
	var dialedIn []*peer // not configured, connected: AllowPeer decides
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return ErrClosed
	}
	for id, addr := range peers {
		if id == t.cfg.NodeID {
			continue
		}
		p := t.peers[id]
		if p == nil {
			p = t.newPeerLocked(id)
		}
		p.mu.Lock()
		p.addr = addr
		if !p.configured {
			p.configured = true
			ctx, cancel := context.WithCancel(t.ctx)
			p.dialStop = cancel
			t.spawnLocked(func() { t.dialLoop(ctx, p) })
		}
		p.mu.Unlock()
	}
	for id, p := range t.peers {
		if _, keep := peers[id]; keep {
			continue
		}
		p.mu.Lock()
		switch {
		case p.configured:
			p.configured = false
			p.addr = ""
			p.dialStop()
			p.dialStop = nil
			if p.active != nil {
				toClose = append(toClose, closing{p.active, fmt.Errorf("%w: %s", ErrPeerRemoved, id), codeRemoved})
			} else {
				t.deletePeerLocked(p)
			}
		case p.active != nil:
			dialedIn = append(dialedIn, p)
		}
		p.mu.Unlock()
	}
	t.publishPeersLocked()
	t.mu.Unlock()
	// AllowPeer is the caller's code: call it without our locks held.
	for _, p := range dialedIn {
		if t.cfg.AllowPeer == nil || t.cfg.AllowPeer(p.id) {
			continue
		}
		p.mu.Lock()
		if c := p.active; c != nil && !p.configured {
			toClose = append(toClose, closing{c, fmt.Errorf("%w: node %q", ErrNotAllowed, p.id), codeRemoved})
		}
		p.mu.Unlock()
	}
	for _, x := range toClose {
		x.c.closeWith(x.reason, x.code)
	}
	return nil
}

// newPeerLocked adds a peer entry; t.mu held.
func (t *Transport) newPeerLocked(id string) *peer {
	p := &peer{
		id:   id,
		log:  t.log.With().Str("peer", id).Logger(),
		m:    t.m.forPeer(id),
		upCh: make(chan struct{}),
	}
	t.peers[id] = p
	t.publishPeersLocked()
	return p
}

// deletePeerLocked forgets a peer with no connection and no dialer; t.mu
// and p.mu held.
func (t *Transport) deletePeerLocked(p *peer) {
	if t.peers[p.id] != p {
		return
	}
	delete(t.peers, p.id)
	t.m.forgetPeer(p.id)
	t.publishPeersLocked()
}

func (t *Transport) publishPeersLocked() {
	snap := make(map[string]*peer, len(t.peers))
	for id, p := range t.peers {
		snap[id] = p
	}
	t.peerSnap.Store(&snap)
}

// Send queues body as the next frame to peer and returns at once; the
// Transport owns body from then on (do not modify it). nil means queued, not
// delivered: a frame queued on a connection that then ends is dropped, and
// the PeerDown that follows tells the caller to resynchronise. Each peer
// has a one-frame mailbox: if the previous frame to it has not been written
// to its stream yet (flow control, a slow or dead peer), Send returns
// ErrBusy and the caller sends a newer frame later. It returns
// ErrNotConnected if the peer has no connection that is up, ErrBadFrame if
// body is empty, ErrFrameTooLarge if it exceeds MaxFrameSize, and ErrClosed
// after Close. It does not allocate.
func (t *Transport) Send(peer string, body []byte) error {
	switch {
	case len(body) == 0:
		return ErrBadFrame
	case len(body) > t.cfg.MaxFrameSize:
		t.m.dropTooLarge.Inc()
		return ErrFrameTooLarge
	}
	if t.closedFlag.Load() {
		return ErrClosed
	}
	p := (*t.peerSnap.Load())[peer]
	if p == nil {
		t.m.dropNotConnected.Inc()
		return ErrNotConnected
	}
	c := p.sendConn.Load()
	if c == nil {
		t.m.dropNotConnected.Inc()
		return ErrNotConnected
	}
	if !c.busy.CompareAndSwap(false, true) {
		t.m.dropBusy.Inc()
		return ErrBusy
	}
	select {
	case c.mailbox <- body:
		return nil
	default: // unreachable: the mailbox is empty whenever busy was false
		c.busy.Store(false)
		t.m.dropBusy.Inc()
		return ErrBusy
	}
}

// PeerStatus describes one peer as Peers reports it.
type PeerStatus struct {
	// ID is the peer's node ID.
	ID string
	// Addr is the address SetPeers gave, or "" for a peer that only dialed
	// in (or was reached by StreamLayer.Dial).
	Addr string
	// RemoteAddr is the UDP address of the current connection, if any.
	RemoteAddr string
	// Configured reports whether the peer is in the SetPeers set (and so
	// redialed).
	Configured bool
	// Connected reports whether a connection is up (PeerUp called, PeerDown
	// not yet).
	Connected bool
	// Outbound reports whether the current connection was dialed by this
	// node.
	Outbound bool
	// Since is when Connected last changed; zero if it never did.
	Since time.Time
	// RTT is the current connection's smoothed round-trip time, from
	// quic-go's connection statistics.
	RTT time.Duration
	// BytesIn, BytesOut, FramesIn and FramesOut count sync-stream traffic
	// (bytes include length prefixes) over all of the peer's connections.
	BytesIn, BytesOut, FramesIn, FramesOut uint64
	// Dials counts connection attempts to the peer; Dialing reports one in
	// progress.
	Dials   uint64
	Dialing bool
	// LastError is why the last connection ended or the last dial failed.
	LastError error
}

// Peers returns the status of every known peer, sorted by ID.
func (t *Transport) Peers() []PeerStatus {
	snap := *t.peerSnap.Load()
	out := make([]PeerStatus, 0, len(snap))
	for _, p := range snap {
		out = append(out, p.status())
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// Close stops the Transport: it stops accepting, closes every stream layer
// and connection (peers see a clean close at once), waits for every
// goroutine it started, including Handler calls in progress (PeerDown is
// called for every peer that was up, with ErrClosed), and closes the socket
// it opened. It is idempotent; later calls return nil at once.
func (t *Transport) Close() error {
	t.closeOnce.Do(t.close)
	return nil
}

func (t *Transport) close() {
	t.mu.Lock()
	t.closed = true
	t.closedFlag.Store(true)
	conns := make(map[*quic.Conn]*peerConn, len(t.conns))
	for qc, c := range t.conns {
		conns[qc] = c
	}
	layers := make([]*StreamLayer, 0, len(t.layers))
	for _, l := range t.layers {
		layers = append(layers, l)
	}
	for _, p := range t.peers {
		p.mu.Lock()
		if p.dialStop != nil {
			p.dialStop()
			p.dialStop = nil
		}
		p.mu.Unlock()
	}
	t.mu.Unlock()

	t.cancel()
	_ = t.ln.Close()
	for _, l := range layers {
		_ = l.Close()
	}
	var wg sync.WaitGroup
	for qc, c := range conns {
		wg.Go(func() {
			if c != nil {
				c.closeWith(ErrClosed, codeShutdown)
			} else {
				_ = qc.CloseWithError(codeShutdown, ErrClosed.Error())
			}
		})
	}
	wg.Wait()
	t.wg.Wait()
	_ = t.qt.Close()
	if t.ownPC {
		_ = t.pc.Close()
	}
	t.unregister()
	t.log.Info().Msg("transport closed")
}

// errorsIsClosed reports whether err means the Transport or connection is
// gone.
func errorsIsClosed(err error) bool {
	return errors.Is(err, ErrClosed) || errors.Is(err, net.ErrClosed) || errors.Is(err, context.Canceled)
}

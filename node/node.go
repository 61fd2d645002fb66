package node

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/rs/zerolog"

	"github.com/quotamesh/quotamesh"
	"github.com/quotamesh/quotamesh/internal/certs"
	"github.com/quotamesh/quotamesh/internal/clock"
	"github.com/quotamesh/quotamesh/internal/consensus"
	"github.com/quotamesh/quotamesh/internal/engine"
	"github.com/quotamesh/quotamesh/internal/lograte"
	"github.com/quotamesh/quotamesh/internal/nodehook"
	"github.com/quotamesh/quotamesh/internal/route"
	"github.com/quotamesh/quotamesh/limits"
	"github.com/quotamesh/quotamesh/transport"
)

// Stream kinds the node registers on the transport.
const (
	kindRaft    = 'r' // Raft's RPCs (consensus.StreamLayer)
	kindForward = 'f' // forwarded consensus requests (consensus.Forwarder)
)

// Timings of the shell, not worth a Config field each.
const (
	// membershipEvery is how often the node reads Raft's configuration and
	// applies it to the engine and the transport.
	membershipEvery = 250 * time.Millisecond
	// housekeepEvery is how often the node sweeps idle keys, collects the
	// store's garbage and refreshes metrics.
	housekeepEvery = time.Second
	// closeTimeout bounds the graceful part of Close.
	closeTimeout = 2 * time.Second
	// lastSyncWait bounds how long Shutdown waits for its last deltas to
	// be written.
	lastSyncWait = 200 * time.Millisecond
	// catchUpTimeout bounds one attempt to bring the table up to date
	// before the node serves.
	catchUpTimeout = 5 * time.Second
)

// Node states, in Node.state: the one atomic the request path reads.
const (
	stateStarting int32 = iota // not a member yet, or has not heard a majority since it became one
	stateServing
	stateClosed
)

// Node is one running QuotaMesh node: a lock-free admission engine, QUIC
// links to its peers and its clients, a Raft replica of the limit table,
// and an admin HTTP listener. Create it with Start; it satisfies
// quotamesh.Limiter for embedded use. All methods are safe for concurrent
// use.
type Node struct {
	state atomic.Int32 // see the state constants; read on every decision
	eng   *engine.Engine
	skew  *clock.Skewed

	cfg       Config // as given, defaults filled in: what Reload compares against
	advertise string
	started   time.Time // by wall
	clk       *clock.Handle
	wallClock func() time.Time // nil: clk read exactly (see wall)

	log, syncLog, clientLog, adminLog zerolog.Logger
	level                             *levelHook
	leaveOnShutdown                   atomic.Bool
	lock                              *dirLock // the DataDir's, held until Shutdown's end

	tr       *transport.Transport
	fault    nodehook.Attached // the fault layer, when a test attached one
	fwdLayer *transport.StreamLayer
	store    *consensus.Store
	m        *metrics
	shadow   *shadowRules // what shadow rules let through (shadow.go)
	gw       *gateways    // the RLS and HTTP decision APIs (gateway.go)
	gatherer prometheus.Gatherer
	adminLn  net.Listener
	http     *http.Server

	// wired is closed once the transport and the advertised address are
	// set (wiredOK) or Start failed: the transport may call PeerUp before
	// New has returned.
	wired     chan struct{}
	wiredOK   atomic.Bool
	wiredOnce sync.Once

	// sendMu makes a peer's Hello the first frame on its connection: PeerUp
	// sends it while holding sendMu, and ticks hold it too.
	sendMu sync.Mutex

	decoders sync.Pool // *wire.Decoder for PeerFrame, which runs on one goroutine per peer

	peersMu   sync.Mutex
	lastFrame map[string]time.Time // last sync frame accepted from each peer
	rejectLog *lograte.Limiter

	applyMu     sync.Mutex // serialises applyMembership
	membersMu   sync.Mutex
	members     []consensus.Member // latest membership applied
	memberAddrs map[string]string
	// routes is the rendezvous table of the latest membership, where the
	// decision APIs find a key's home (gatewayroute.go); nil until the
	// first membership is applied.
	routes   atomic.Pointer[route.Table]
	isMember atomic.Bool
	caughtUp atomic.Bool // the table caught up with the leader once (catchUpLoop)

	rates rateTracker

	// Lifetime. Each group is closed and waited for at its step of
	// Shutdown.
	loopCtx       context.Context
	stopLoops     context.CancelFunc
	loops         group // sync, housekeeping, join
	clientCtx     context.Context
	stopClients   context.CancelFunc
	clients       group // client connections being served (transport goroutines) and their streams
	acceptClients atomic.Bool
	clientConns   atomic.Uint64 // numbers client connections: a lease is settled by its own
	left          atomic.Bool   // this node left the cluster (Leave of itself succeeded)
	fwdCtx        context.Context
	stopFwd       context.CancelFunc
	fwd           group // forwarded-request accept loop and handlers
	misc          group // admin HTTP server

	shutdownOnce sync.Once
	done         chan struct{}
	shutdownErr  error
}

var _ quotamesh.Limiter = (*Node)(nil)

// Start starts a node: it opens the QUIC endpoint, the Raft replica in
// cfg.DataDir, the admin listener, and the node's goroutines, then returns.
// It does not wait for a leader or for peers (Ready says when the node is
// ready), and a node that is not yet a member (cfg.Join) joins in the
// background, so Start never blocks on the network: ctx is only checked
// before each step that opens something, and while it waits for the DataDir
// lock (the options that tests and the fault suite pass through
// internal/nodehook come in ctx too). The first step takes the DataDir's
// lock, waiting up to 5 s for another process to release it, so that a
// second node on the same directory fails (ErrDataDirLocked, naming the
// holder) before it opens anything else. The node runs until Shutdown or
// Close.
func Start(ctx context.Context, cfg Config) (_ *Node, err error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("quotamesh/node: start: %w", err)
	}
	cfg = cfg.withDefaults()
	hooks := nodehook.From(ctx)
	level, _ := parseLevel(cfg.LogLevel)
	n := &Node{
		cfg:       cfg,
		level:     newLevelHook(level),
		lastFrame: make(map[string]time.Time),
		rejectLog: lograte.New(time.Second),
		done:      make(chan struct{}),
		wired:     make(chan struct{}),
	}
	n.leaveOnShutdown.Store(cfg.LeaveOnShutdown)
	base := cfg.Logger.Hook(n.level).With().Str("node", cfg.ID).Logger()
	n.log = base.With().Str("component", "node").Logger()
	n.syncLog = base.With().Str("component", "sync").Logger()
	n.clientLog = base.With().Str("component", "client").Logger()
	n.adminLog = base.With().Str("component", "admin").Logger()

	// Undo what was opened if a later step fails.
	var undo []func()
	defer func() {
		if err != nil {
			for i := len(undo) - 1; i >= 0; i-- {
				undo[i]()
			}
		}
	}()
	// interrupted is the error for a ctx that ended during start-up.
	interrupted := func(step string) error {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("quotamesh/node: start interrupted before %s: %w", step, err)
		}
		return nil
	}

	if n.lock, err = lockDataDir(ctx, cfg.DataDir, cfg.ID); err != nil {
		return nil, err
	}
	undo = append(undo, n.lock.release)

	reg, gatherer := cfg.Registerer, cfg.Gatherer
	if reg == nil {
		r := prometheus.NewRegistry()
		r.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
		reg, gatherer = r, r
	} else if gatherer == nil {
		gatherer = reg.(prometheus.Gatherer) // Validate checked
	}
	n.gatherer = gatherer
	if n.m, err = newMetrics(reg); err != nil {
		return nil, fmt.Errorf("quotamesh/node: registering metrics: %w", err)
	}
	undo = append(undo, n.m.unregister)
	if n.shadow, err = newShadowRules(reg); err != nil {
		return nil, fmt.Errorf("quotamesh/node: registering metrics: %w", err)
	}
	undo = append(undo, n.shadow.unregister)

	cert, cas, err := loadTLS(cfg)
	if err != nil {
		return nil, err
	}
	if err := interrupted("opening the transport"); err != nil {
		return nil, err
	}
	if err = n.openGateways(reg, cert, cas); err != nil {
		return nil, err
	}
	undo = append(undo, n.closeGateways)

	n.clk = clock.Acquire()
	undo = append(undo, n.clk.Release)
	n.wallClock = hooks.Wall
	n.started = n.wall()
	n.skew = clock.NewSkewed(n.clk)

	pc := cfg.PacketConn
	var disk *diskDelay // the fault layer's slow disk, nil without it
	if hooks.Fault != nil {
		disk = &diskDelay{}
		if n.fault, err = hooks.Fault(nodehook.Target{
			PacketConn: pc, Listen: cfg.Listen, Clock: skewControl{n}, Disk: disk, Log: n.adminLog, Seed: uint64(n.clk.Precise()),
		}); err != nil {
			return nil, fmt.Errorf("quotamesh/node: attaching the fault layer on %s: %w", cfg.Listen, err)
		}
		if n.fault.PacketConn != nil {
			pc = n.fault.PacketConn
		}
		undo = append(undo, n.closeFault)
	}

	// The engine first: the transport's handler and Raft's OnChange feed it.
	var initial []string
	if listed(cfg.Bootstrap, cfg.ID) {
		for _, p := range cfg.Bootstrap {
			initial = append(initial, p.ID)
		}
	}
	ec := cfg.engineConfig()
	ec.UnsafeIgnoreShare = hooks.UnsafeIgnoreShare
	n.eng, err = engine.New(ec, nil, initial, n.skew.Now())
	if err != nil {
		return nil, fmt.Errorf("quotamesh/node: %w", err)
	}

	n.tr, err = transport.New(transport.Config{
		NodeID:      cfg.ID,
		ListenAddr:  cfg.Listen,
		PacketConn:  pc,
		Certificate: cert,
		CAs:         cas,
		Clients:     cfg.Clients,
		Logger:      base,
		Registerer:  reg,
		Handler:     handler{n},
	})
	if err != nil {
		return nil, fmt.Errorf("quotamesh/node: starting the transport: %w", err)
	}
	n.setCertMetrics()
	undo = append(undo, func() { _ = n.tr.Close() }, func() { n.markWired(false) })
	n.advertise, err = advertised(cfg.Advertise, n.tr.Addr())
	if err != nil {
		return nil, err
	}
	n.markWired(true)

	raftLayer, err := n.tr.StreamLayer(kindRaft)
	if err != nil {
		return nil, fmt.Errorf("quotamesh/node: %w", err)
	}
	if n.fwdLayer, err = n.tr.StreamLayer(kindForward); err != nil {
		_ = raftLayer.Close()
		return nil, fmt.Errorf("quotamesh/node: %w", err)
	}
	undo = append(undo, func() { _ = n.fwdLayer.Close() })

	if err := interrupted("opening Raft"); err != nil {
		_ = raftLayer.Close()
		return nil, err
	}
	var bootstrap []consensus.Server
	for _, p := range cfg.Bootstrap {
		bootstrap = append(bootstrap, consensus.Server{ID: p.ID, Address: p.Addr})
	}
	ccfg := consensus.Config{
		NodeID:    cfg.ID,
		Address:   n.advertise,
		DataDir:   cfg.DataDir,
		ClusterID: cfg.ClusterID,
		Bootstrap: bootstrap,
		MaxVoters: cfg.MaxVoters,
		Layer:     raftLayer,
		Forwarder: &forwarder{layer: n.fwdLayer, timeout: consensus.DefaultRPCTimeout},
		Logger:    base,
		OnChange:  n.onTableChange,
	}
	if disk != nil {
		ccfg.LogDelay = disk.Delay
	}
	if rt := hooks.RaftTimeouts; rt.HeartbeatTimeout > 0 {
		ccfg.HeartbeatTimeout, ccfg.ElectionTimeout, ccfg.LeaderLeaseTimeout = rt.HeartbeatTimeout, rt.ElectionTimeout, rt.LeaderLeaseTimeout
	}
	n.store, err = consensus.Open(ccfg)
	if err != nil {
		_ = raftLayer.Close()
		return nil, fmt.Errorf("quotamesh/node: opening Raft in %s: %w", cfg.DataDir, err)
	}
	undo = append(undo, func() { _ = n.store.Close() })

	if err := interrupted("opening the admin listener"); err != nil {
		return nil, err
	}
	if cfg.AdminListen != "" {
		if n.adminLn, err = net.Listen("tcp", cfg.AdminListen); err != nil {
			return nil, fmt.Errorf("quotamesh/node: admin listener on %s: %w", cfg.AdminListen, err)
		}
		undo = append(undo, func() { _ = n.adminLn.Close() })
	}

	// Everything is open: start the goroutines.
	n.loopCtx, n.stopLoops = context.WithCancel(context.Background())
	n.clientCtx, n.stopClients = context.WithCancel(context.Background())
	n.fwdCtx, n.stopFwd = context.WithCancel(context.Background())
	n.applyMembership()
	n.fwd.Go(n.serveForwards)
	n.loops.Go(n.syncLoop)
	n.loops.Go(n.housekeepLoop)
	n.loops.Go(n.catchUpLoop)
	if !n.isMember.Load() {
		if len(cfg.Join) > 0 {
			n.loops.Go(n.joinLoop)
		} else {
			n.log.Warn().Msg("this node is not a member and has no Join addresses: it waits to be added (quotamesh join through a member)")
		}
	}
	if n.adminLn != nil {
		n.startAdmin()
	}
	n.startGateways()
	n.acceptClients.Store(true)
	if hooks.Fault != nil {
		n.log.Warn().Bool("fault_control", true).Str("admin", n.AdminAddr()).Strs("endpoints", slices.Sorted(maps.Keys(n.fault.Routes))).
			Msg("FAULT CONTROL IS ON: the fault endpoints can skew this node's clock and break its network; for tests only")
	}
	if cfg.Clients.AllowAnonymous {
		n.logAnonymous(true)
	}
	if hooks.UnsafeIgnoreShare {
		n.log.Error().Msg("UNSAFE: this node ignores its share and admits up to the whole limit; the cluster will over-admit; for testing the fault suite's checkers only")
	}
	n.log.Info().Str("addr", n.Addr()).Str("advertise", n.advertise).Str("admin", n.AdminAddr()).
		Uint64("incarnation", n.eng.Self().Incarnation).Bool("member", n.isMember.Load()).
		Str("policy", cfg.Policy.String()).Msg("node started")
	return n, nil
}

func listed(peers []Peer, id string) bool {
	return slices.ContainsFunc(peers, func(p Peer) bool { return p.ID == id })
}

// loadTLS returns the node's certificate and the cluster CA.
func loadTLS(cfg Config) (tls.Certificate, *x509.CertPool, error) {
	if cfg.TLS.CertDir == "" {
		return *cfg.TLS.Certificate, cfg.TLS.CAs, nil
	}
	cert, pool, err := certs.LoadNode(cfg.TLS.CertDir, cfg.ID)
	if err != nil {
		return cert, nil, fmt.Errorf("%w: loading the certificates of %s from %s: %w", ErrCertificates, cfg.ID, cfg.TLS.CertDir, err)
	}
	return cert, pool, nil
}

// logAnonymous says loudly that clients without a certificate are served.
func (n *Node) logAnonymous(on bool) {
	if on {
		n.log.Error().Bool("allow_anonymous_clients", true).
			Msg("INSECURE: clients without a certificate may ask for decisions; anyone who reaches this node's port can spend any key's limit (they cannot read or change anything)")
		return
	}
	n.log.Info().Bool("allow_anonymous_clients", false).Msg("clients must present a certificate again")
}

// advertised resolves the address peers reach this node at: adv if given
// (its port 0 replaced by the bound port), else the bound address.
func advertised(adv string, bound net.Addr) (string, error) {
	_, boundPort, err := net.SplitHostPort(bound.String())
	if err != nil {
		return "", fmt.Errorf("quotamesh/node: bound address %s: %w", bound, err)
	}
	if adv == "" {
		host, _, _ := net.SplitHostPort(bound.String())
		if unspecified(host) {
			return "", fmt.Errorf("%w: Advertise is empty and the bound address %s names no specific host", ErrInvalidConfig, bound)
		}
		return bound.String(), nil
	}
	host, port, err := net.SplitHostPort(adv)
	if err != nil {
		return "", fmt.Errorf("%w: Advertise %q: %w", ErrInvalidConfig, adv, err)
	}
	if port == "0" {
		port = boundPort
	}
	return net.JoinHostPort(host, port), nil
}

// markWired releases the transport's handler calls waiting for Start.
func (n *Node) markWired(ok bool) {
	n.wiredOnce.Do(func() {
		n.wiredOK.Store(ok)
		close(n.wired)
	})
}

// waitWired waits until Start has wired the transport and reports whether
// it succeeded.
func (n *Node) waitWired() bool {
	<-n.wired
	return n.wiredOK.Load()
}

// onTableChange is Raft's OnChange: the engine re-resolves its keys.
func (n *Node) onTableChange(t *limits.Table, index uint64) {
	n.shadow.setTable(t) // before the engine: a rule turned shadow is counted from its first denial
	n.gw.setTable(t)
	n.eng.SetTable(t)
	n.m.limitRules.Set(float64(t.Len()))
	n.m.raftApplied.Set(float64(index))
}

// now is node time, what decisions are made at: the base clock, the
// test-only skew and the engine's clock alignment. Three atomic loads.
func (n *Node) now() int64 {
	return n.clk.Now() + int64(n.skew.Offset()) + int64(n.eng.Correction())
}

// wall is the node's clock read exactly: what the shell times and stamps
// with off the request path (log rate limits, sync lag, uptime, the
// durations of ticks and of shutdown). It leaves out the skew and the
// alignment, which move the time decisions are made at, not the time that
// passes. Tests may replace it (nodehook.Options.Wall).
func (n *Node) wall() time.Time {
	if n.wallClock != nil {
		return n.wallClock()
	}
	return time.Unix(0, n.clk.Precise())
}

// ID returns the node's ID.
func (n *Node) ID() string { return n.cfg.ID }

// Addr returns the UDP address the node's QUIC endpoint is bound to.
func (n *Node) Addr() string { return n.tr.Addr().String() }

// Advertise returns the address peers and Raft reach this node at.
func (n *Node) Advertise() string { return n.advertise }

// AdminAddr returns the admin HTTP listener's address, or "" if it is off.
func (n *Node) AdminAddr() string {
	if n.adminLn == nil {
		return ""
	}
	return n.adminLn.Addr().String()
}

// Ready reports whether the node is ready for traffic: it serves, is not
// fenced, knows a Raft leader, and has applied the limit table as far as
// the leader had committed when it first heard one. /readyz answers from
// it.
func (n *Node) Ready() bool { return len(n.notReady()) == 0 }

// notReady lists why the node is not ready; empty when it is.
func (n *Node) notReady() []string {
	var why []string
	switch n.state.Load() {
	case stateClosed:
		return []string{"shutting down"}
	case stateStarting:
		if !n.isMember.Load() {
			why = append(why, "not a member of the cluster yet")
		} else {
			why = append(why, "has not heard a majority of the members yet")
		}
	}
	if n.eng.Fenced() {
		why = append(why, "fenced: has not heard a strict majority of the members for FenceAfter")
	}
	if id, _ := n.store.Leader(); id == "" {
		why = append(why, "no Raft leader known")
	}
	if !n.caughtUp.Load() {
		why = append(why, "limit table not yet applied up to the leader's commit")
	}
	return why
}

// Reload applies what may change while the node runs: LogLevel,
// LeaveOnShutdown, Clients (anonymous clients, the bounds on client
// connections and handshakes), and the certificates (re-read from
// TLS.CertDir, or TLS.Certificate and CAs): new handshakes use them, open
// connections stay. cfg is a whole Config (the one the node would be
// started with now, e.g. re-read on SIGHUP). Reload applies every field that
// may change even when others differ; it then returns an error wrapping
// ErrNotReloadable that names those others, which need a restart. If the
// certificates cannot be loaded or do not fit this node, the old ones stay
// and the error (wrapping ErrCertificates) says why. Logger, Registerer,
// Gatherer, PacketConn and Join are not compared and not applied.
//
// Policy, timings and key bounds are not reloadable: the engine and the
// registry take them once at construction (they size the stores and timers
// of every key), so changing them needs a restart, which the cluster
// survives like any other.
func (n *Node) Reload(cfg Config) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	next := cfg.withDefaults()
	var errs []error
	level, _ := parseLevel(next.LogLevel)
	n.level.set(level)
	n.leaveOnShutdown.Store(next.LeaveOnShutdown)
	wasAnonymous := n.tr.ClientPolicy().AllowAnonymous
	if err := n.tr.SetClientPolicy(next.Clients); err != nil {
		errs = append(errs, err) // unreachable: Validate checked
	} else if wasAnonymous != next.Clients.AllowAnonymous {
		n.logAnonymous(next.Clients.AllowAnonymous)
	}
	certsApplied := false
	if cert, cas, err := loadTLS(next); err != nil {
		errs = append(errs, fmt.Errorf("certificates not reloaded, the old ones stay: %w", err))
	} else if err := n.tr.SetCertificate(cert, cas); err != nil {
		errs = append(errs, fmt.Errorf("%w: certificates not reloaded, the old ones stay: %w", ErrCertificates, err))
	} else {
		certsApplied = true
		n.setCertMetrics()
	}
	p := n.tr.ClientPolicy()
	leaf := n.tr.Certificate()
	n.log.Info().Str("log_level", level.String()).Bool("leave_on_shutdown", next.LeaveOnShutdown).
		Bool("allow_anonymous_clients", p.AllowAnonymous).Int("max_client_conns", p.MaxClientConns).
		Float64("handshake_rate", p.HandshakeRate).Int("handshake_burst", p.HandshakeBurst).
		Bool("certificates_reloaded", certsApplied).Str("certificate_expires", leaf.NotAfter.UTC().Format(time.RFC3339)).
		Msg("configuration reloaded")
	if diff := n.cfg.reloadDiff(next); len(diff) > 0 {
		errs = append(errs, fmt.Errorf("%w: %s changed and need a restart; the rest was applied", ErrNotReloadable, strings.Join(diff, ", ")))
	}
	return errors.Join(errs...)
}

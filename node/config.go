package node

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/quotamesh/quotamesh/internal/certs"
	"github.com/quotamesh/quotamesh/internal/consensus"
	"github.com/quotamesh/quotamesh/internal/engine"
	"github.com/quotamesh/quotamesh/internal/share"
	"github.com/quotamesh/quotamesh/transport"
	"github.com/quotamesh/quotamesh/window"
)

// Defaults for zero Config fields (see DefaultConfig).
const (
	DefaultClusterID = "quotamesh"
	// DefaultListen is loopback only: a node reachable from other hosts is
	// a choice (Listen names the interface peers and clients use).
	DefaultListen      = "127.0.0.1:7946"
	DefaultAdminListen = "127.0.0.1:9946"
	DefaultLogLevel    = "info"
	// DefaultAdminClient is the client name `quotamesh certs init` gives the
	// operator's certificate (with role admin), which the CLI uses by
	// default.
	DefaultAdminClient = "admin"
)

// Peer is a cluster member as a Bootstrap list names it: its node ID and
// the address (host:port) peers and Raft reach it at, its Advertise.
type Peer struct {
	ID   string
	Addr string
}

// TLSConfig is where a node's certificates come from. Every connection is
// mutual TLS under the cluster CA (design.md §6); what clients may do
// follows the role in their certificate (transport.Identity.May).
type TLSConfig struct {
	// CertDir is a certificates directory in the layout of package certs:
	// the node reads ca.crt and nodes/<ID>.crt and .key (certs.LoadNode),
	// at Start and again at every Reload, so that renewed files take
	// effect on SIGHUP.
	CertDir string
	// Certificate and CAs are loaded material, used instead of CertDir
	// (embedders, tests). Set both or neither. Reload applies new ones.
	Certificate *tls.Certificate
	CAs         *x509.CertPool
}

// Config configures a node. A zero field means its documented default
// (DefaultConfig lists them), except AdminListen, where "" turns the admin
// listener off. Start copies the Config: changing it afterwards has no
// effect; what may change at run time goes through Reload.
type Config struct {
	// ID names this node for all time (1 to 64 bytes of [A-Za-z0-9._-]);
	// its certificate must carry it. A node restarted from its DataDir must
	// keep its ID. Required.
	ID string
	// ClusterID names the cluster; peers of another cluster are refused.
	// Default "quotamesh".
	ClusterID string

	// Listen is the UDP address of the QUIC endpoint that peers and clients
	// share (default ":7946"). Ignored when PacketConn is set.
	Listen string
	// Advertise is the host:port peers and Raft reach this node at; it is
	// this node's address in the cluster's membership. Default: the bound
	// address, when it names a specific host (a port of 0 in either is the
	// port actually bound).
	Advertise string
	// AdminListen is the TCP address of the admin HTTP listener: /metrics,
	// /healthz, /readyz, /status and /debug/pprof/. "" turns it off;
	// DefaultConfig sets "127.0.0.1:9946".
	AdminListen string

	// DataDir holds the Raft log and snapshots. Required.
	DataDir string
	// Bootstrap lists the initial members, the same list in the same order
	// on every initial node. A listed node with an empty DataDir bootstraps
	// the cluster with it: the first MaxVoters vote, the others start as
	// non-voters. A restart from disk ignores it.
	Bootstrap []Peer
	// Join lists addresses of members to join through, tried in turn, when
	// this node is not a member after opening its DataDir. The node joins
	// in the background; it does not serve decisions until it is a member
	// and has heard a majority of the members.
	Join []string

	// TLS is the node's certificate and the cluster CA.
	TLS TLSConfig
	// Clients is what the node asks of clients: a certificate (unless
	// AllowAnonymous, which is insecure and logged loudly), at most
	// MaxClientConns connections, and at most HandshakeRate connection
	// attempts per second per source address. Zero fields take the
	// transport's defaults; it may change at run time (Reload).
	Clients transport.ClientPolicy
	// ClientMaxWait bounds how long a batch of client requests may wait
	// inside the node, read but not yet decided, while the node decides
	// the batches before it (time the node spent waiting for that client to
	// read its replies does not count). A batch that waited longer is
	// answered "overloaded" at once, without deciding (the SDK applies its
	// overload policy), save the requests in it that settle a lease or
	// report demand. Default DefaultClientMaxWait (100 ms); at least 1 ms,
	// at most 1 minute; negative turns it off (every batch is decided, however
	// late).
	ClientMaxWait time.Duration
	// DisablePprof turns /debug/pprof/ off on the admin listener (it is on
	// by default; profiles show memory contents, such as keys, to whoever
	// reaches the listener).
	DisablePprof bool
	// Gateway turns on the decision APIs for other languages and proxies:
	// Envoy's rate limit service and HTTP (gateway.go). Off by default.
	Gateway GatewayConfig

	// Policy is what a node admits while it cannot hear some members:
	// share.Conservative (the zero value, default) or share.Available
	// (design.md §7).
	Policy share.Policy
	// SyncInterval is how often deltas go to peers and quotas are
	// recomputed (default 20 ms).
	SyncInterval time.Duration
	// DeadAfter is how long a silent member stays reachable (default 1 s).
	DeadAfter time.Duration
	// FenceAfter is how long a node that does not hear a strict majority
	// keeps admitting under the conservative policy (default 3 s).
	FenceAfter time.Duration
	// ReclaimAfter is how long a member must have been unreachable before a
	// majority reclaims its share (default 5 s; at least FenceAfter +
	// DeadAfter).
	ReclaimAfter time.Duration
	// MaxKeys bounds the keys with a window (default 1,000,000).
	MaxKeys int
	// UnknownKeys answers keys no rule matches (default window.PolicyAllow).
	UnknownKeys window.Policy
	// WhenFull answers a new key while MaxKeys windows exist (default
	// window.PolicyDeny).
	WhenFull window.Policy
	// LeaseTTL is the longest an SDK may use a lease (default 500 ms): the
	// SDK uses a lease for its own TTL (50 ms) or, for a key far from its
	// limit, its far TTL (500 ms), whichever this caps. A lease that is
	// not settled counts as used when LeaseTTL and a grace of 50-100 ms
	// have passed.
	LeaseTTL time.Duration
	// MaxLeaseFraction caps one lease at this fraction of the key's limit
	// (default 0.1).
	MaxLeaseFraction float64

	// MaxVoters is how many members vote in Raft: odd, 1 to 7 (default 5).
	MaxVoters int
	// LeaveOnShutdown makes Shutdown remove this node from the cluster
	// before it stops. The default is to stay a member: a restart (a
	// rolling upgrade, a crash) keeps the membership, and a node is removed
	// on purpose with Leave.
	LeaveOnShutdown bool

	// LogLevel is the least level logged: trace, debug, info (default),
	// warn, error. It may change at run time (Reload). Logger's own level
	// applies first.
	LogLevel string
	// Logger receives the node's logs, one sub-logger per component
	// (node, sync, raft, transport, client, admin). The zero Logger
	// discards them.
	Logger zerolog.Logger
	// Registerer and Gatherer receive and serve the node's metrics. Nil
	// means a fresh registry for this node (with Go and process
	// collectors), never the global one, so that several nodes can run in
	// one process. A Registerer that is a *prometheus.Registry serves as
	// the Gatherer too.
	Registerer prometheus.Registerer
	Gatherer   prometheus.Gatherer
	// PacketConn, if set, carries QUIC instead of a socket on Listen (tests
	// wrap one with internal/faultnet). Its owner closes it after Shutdown.
	PacketConn net.PacketConn
}

// DefaultConfig returns a Config with every default filled in. ID, DataDir
// and the TLS material are left for the caller.
func DefaultConfig() Config {
	e := engineDefaults()
	return Config{
		ClusterID:        DefaultClusterID,
		Listen:           DefaultListen,
		AdminListen:      DefaultAdminListen,
		Policy:           share.Conservative,
		SyncInterval:     e.SyncInterval,
		DeadAfter:        e.DeadAfter,
		FenceAfter:       e.FenceAfter,
		ReclaimAfter:     e.ReclaimAfter,
		MaxKeys:          window.DefaultMaxKeys,
		UnknownKeys:      window.PolicyAllow,
		WhenFull:         window.PolicyDeny,
		LeaseTTL:         e.LeaseTTL,
		MaxLeaseFraction: e.MaxLeaseFraction,
		MaxVoters:        consensus.DefaultMaxVoters,
		LogLevel:         DefaultLogLevel,
		ClientMaxWait:    DefaultClientMaxWait,
	}
}

// engineDefaults is the engine's Config with its defaults, as the engine
// reports them.
func engineDefaults() engine.Config {
	return engine.Config{
		SyncInterval:     engine.DefaultSyncInterval,
		DeadAfter:        engine.DefaultDeadAfter,
		FenceAfter:       engine.DefaultFenceAfter,
		ReclaimAfter:     engine.DefaultReclaimAfter,
		LeaseTTL:         engine.DefaultLeaseTTL,
		MaxLeaseFraction: engine.DefaultMaxLeaseFraction,
	}
}

// withDefaults fills zero fields and copies slices, so that the caller's
// Config and the node's share nothing mutable.
func (c Config) withDefaults() Config {
	d := DefaultConfig()
	orDefault(&c.ClusterID, d.ClusterID)
	orDefault(&c.Listen, d.Listen)
	orDefault(&c.SyncInterval, d.SyncInterval)
	orDefault(&c.DeadAfter, d.DeadAfter)
	orDefault(&c.FenceAfter, d.FenceAfter)
	orDefault(&c.ReclaimAfter, d.ReclaimAfter)
	orDefault(&c.MaxKeys, d.MaxKeys)
	orDefault(&c.UnknownKeys, d.UnknownKeys) // window.PolicyDefault is the zero Policy
	orDefault(&c.WhenFull, d.WhenFull)
	orDefault(&c.LeaseTTL, d.LeaseTTL)
	orDefault(&c.MaxLeaseFraction, d.MaxLeaseFraction)
	orDefault(&c.MaxVoters, d.MaxVoters)
	orDefault(&c.LogLevel, d.LogLevel)
	orDefault(&c.ClientMaxWait, d.ClientMaxWait)
	c.Bootstrap = slices.Clone(c.Bootstrap)
	c.Join = slices.Clone(c.Join)
	return c
}

// orDefault sets *v to def if *v is its type's zero value.
func orDefault[T comparable](v *T, def T) {
	var zero T
	if *v == zero {
		*v = def
	}
}

// engineConfig is the engine's part of c (defaults filled in).
func (c Config) engineConfig() engine.Config {
	return engine.Config{
		Node:             c.ID,
		ClusterID:        c.ClusterID,
		Registry:         window.Config{MaxKeys: c.MaxKeys, UnknownKeys: c.UnknownKeys, WhenFull: c.WhenFull},
		Policy:           c.Policy,
		SyncInterval:     c.SyncInterval,
		DeadAfter:        c.DeadAfter,
		FenceAfter:       c.FenceAfter,
		ReclaimAfter:     c.ReclaimAfter,
		LeaseTTL:         c.LeaseTTL,
		MaxLeaseFraction: c.MaxLeaseFraction,
	}
}

// Validate reports every field out of range, each named with its bad value
// (the error wraps ErrInvalidConfig). Zero fields are read as their
// defaults. It does not read certificate files or open sockets: Start
// reports those failures.
func (c Config) Validate() error {
	d := c.withDefaults()
	var problems []string
	bad := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }

	if err := certs.ValidateNodeID(c.ID); err != nil {
		bad("ID %q: use 1 to 64 bytes of [A-Za-z0-9._-]", c.ID)
	}
	if err := certs.ValidateNodeID(d.ClusterID); err != nil {
		bad("ClusterID %q: use 1 to 64 bytes of [A-Za-z0-9._-]", d.ClusterID)
	}
	listenHost, listenOK := "", true
	if c.PacketConn == nil {
		host, err := splitAddr(d.Listen, true)
		if err != nil {
			bad("Listen %q: %v", d.Listen, err)
		}
		listenHost, listenOK = host, err == nil
	} else if a := c.PacketConn.LocalAddr(); a != nil {
		listenHost, _, _ = net.SplitHostPort(a.String())
	}
	if c.Advertise != "" {
		if host, err := splitAddr(c.Advertise, true); err != nil {
			bad("Advertise %q: %v", c.Advertise, err)
		} else if unspecified(host) {
			bad("Advertise %q: name a host peers can reach, not %q", c.Advertise, host)
		}
	} else if listenOK && unspecified(listenHost) {
		bad("Advertise is empty and the listen address %q names no specific host: set Advertise to the host:port peers reach this node at", d.Listen)
	}
	if c.AdminListen != "" {
		if _, err := splitAddr(c.AdminListen, true); err != nil {
			bad("AdminListen %q: %v", c.AdminListen, err)
		}
	}
	c.Gateway.validate(bad)
	if c.DataDir == "" {
		bad("DataDir is empty: the Raft log needs a directory")
	}
	seen := map[string]bool{}
	for i, p := range c.Bootstrap {
		if err := certs.ValidateNodeID(p.ID); err != nil {
			bad("Bootstrap[%d].ID %q: use 1 to 64 bytes of [A-Za-z0-9._-]", i, p.ID)
		}
		if seen[p.ID] {
			bad("Bootstrap[%d].ID %q is listed twice", i, p.ID)
		}
		seen[p.ID] = true
		if host, err := splitAddr(p.Addr, false); err != nil || unspecified(host) {
			bad("Bootstrap[%d].Addr %q: use the host:port the node advertises (%v)", i, p.Addr, err)
		}
	}
	for i, a := range c.Join {
		if _, err := splitAddr(a, false); err != nil {
			bad("Join[%d] %q: %v", i, a, err)
		}
	}
	switch t := c.TLS; {
	case t.CertDir != "" && (t.Certificate != nil || t.CAs != nil):
		bad("TLS: set CertDir %q or Certificate and CAs, not both", t.CertDir)
	case t.CertDir == "" && (t.Certificate == nil || t.CAs == nil):
		bad("TLS: set CertDir, or both Certificate and CAs (Certificate set: %v, CAs set: %v)", t.Certificate != nil, t.CAs != nil)
	}
	if err := c.Clients.Validate(); err != nil {
		bad("Clients.%v", strings.TrimPrefix(err.Error(), transport.ErrInvalidConfig.Error()+": "))
	}
	for _, f := range []struct {
		name string
		v    time.Duration
	}{{"SyncInterval", c.SyncInterval}, {"DeadAfter", c.DeadAfter}, {"FenceAfter", c.FenceAfter}, {"ReclaimAfter", c.ReclaimAfter}, {"LeaseTTL", c.LeaseTTL}} {
		if f.v < 0 {
			bad("%s %v is negative: use a positive duration, or 0 for the default", f.name, f.v)
		}
	}
	if w := c.ClientMaxWait; w > 0 && (w < time.Millisecond || w > time.Minute) {
		bad("ClientMaxWait %v: use 1ms to 1m, negative to turn it off, or 0 for the default %v", w, DefaultClientMaxWait)
	}
	if c.MaxLeaseFraction < 0 {
		bad("MaxLeaseFraction %v is negative: use a fraction in (0, 1], or 0 for the default", c.MaxLeaseFraction)
	}
	if c.MaxKeys < 0 {
		bad("MaxKeys %d: use a positive number, or 0 for the default %d", c.MaxKeys, window.DefaultMaxKeys)
	}
	for _, p := range []struct {
		name string
		v    window.Policy
	}{{"UnknownKeys", c.UnknownKeys}, {"WhenFull", c.WhenFull}} {
		if p.v > window.PolicyDeny {
			bad("%s %d: use window.PolicyAllow or window.PolicyDeny", p.name, p.v)
		}
	}
	if len(problems) == 0 { // the engine's checks name its own fields: only if ours passed
		if err := d.engineConfig().Validate(); err != nil {
			bad("%v", strings.TrimPrefix(err.Error(), engine.ErrInvalidConfig.Error()+": "))
		}
	}
	if v := d.MaxVoters; v < 1 || v > 7 || v%2 == 0 {
		bad("MaxVoters %d: use an odd number from 1 to 7", v)
	}
	if _, err := parseLevel(d.LogLevel); err != nil {
		bad("LogLevel %q: use trace, debug, info, warn or error", d.LogLevel)
	}
	if c.Registerer == nil && c.Gatherer != nil {
		bad("Gatherer is set without a Registerer")
	}
	if c.Registerer != nil && c.Gatherer == nil {
		if _, ok := c.Registerer.(prometheus.Gatherer); !ok {
			bad("Registerer %T is not a Gatherer: set Gatherer too", c.Registerer)
		}
	}
	if len(problems) == 0 {
		return nil
	}
	return fmt.Errorf("%w: %s", ErrInvalidConfig, strings.Join(problems, "; "))
}

// splitAddr checks a host:port and returns the host: the port must be a
// number from 1 to 65535, or 0 where listen (a port the system picks).
func splitAddr(addr string, listen bool) (string, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", fmt.Errorf("not host:port (%v)", err)
	}
	p, err := strconv.Atoi(port)
	lo := 1
	if listen {
		lo = 0
	}
	if err != nil || p < lo || p > 65535 {
		return "", fmt.Errorf("port %q: use a number from %d to 65535", port, lo)
	}
	return host, nil
}

// unspecified reports a host that names no particular interface.
func unspecified(host string) bool {
	if host == "" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsUnspecified()
}

// parseLevel reads a LogLevel.
func parseLevel(s string) (zerolog.Level, error) {
	l, err := zerolog.ParseLevel(s)
	if err != nil || s == "" {
		return zerolog.NoLevel, fmt.Errorf("%w: log level %q", ErrInvalidConfig, s)
	}
	switch l {
	case zerolog.TraceLevel, zerolog.DebugLevel, zerolog.InfoLevel, zerolog.WarnLevel, zerolog.ErrorLevel:
		return l, nil
	}
	return zerolog.NoLevel, fmt.Errorf("%w: log level %q", ErrInvalidConfig, s)
}

// reloadDiff names the fields of next that differ from c (both with
// defaults filled in) and cannot change at run time. Logger, Registerer,
// Gatherer and PacketConn are not compared: they cannot be reloaded and
// Reload ignores them. Join is only read at start, so it is ignored too.
// What may change (LogLevel, LeaveOnShutdown, Clients, the certificates) is
// not compared either.
func (c Config) reloadDiff(next Config) []string {
	var diff []string
	cmp := func(name string, same bool) {
		if !same {
			diff = append(diff, name)
		}
	}
	cmp("ID", c.ID == next.ID)
	cmp("ClusterID", c.ClusterID == next.ClusterID)
	cmp("Listen", c.Listen == next.Listen)
	cmp("Advertise", c.Advertise == next.Advertise)
	cmp("AdminListen", c.AdminListen == next.AdminListen)
	cmp("DataDir", c.DataDir == next.DataDir)
	cmp("Bootstrap", slices.Equal(c.Bootstrap, next.Bootstrap))
	cmp("Gateway", c.Gateway == next.Gateway)
	cmp("TLS.CertDir", c.TLS.CertDir == next.TLS.CertDir)
	cmp("DisablePprof", c.DisablePprof == next.DisablePprof)
	cmp("Policy", c.Policy == next.Policy)
	cmp("SyncInterval", c.SyncInterval == next.SyncInterval)
	cmp("DeadAfter", c.DeadAfter == next.DeadAfter)
	cmp("FenceAfter", c.FenceAfter == next.FenceAfter)
	cmp("ReclaimAfter", c.ReclaimAfter == next.ReclaimAfter)
	cmp("MaxKeys", c.MaxKeys == next.MaxKeys)
	cmp("UnknownKeys", c.UnknownKeys == next.UnknownKeys)
	cmp("WhenFull", c.WhenFull == next.WhenFull)
	cmp("LeaseTTL", c.LeaseTTL == next.LeaseTTL)
	cmp("MaxLeaseFraction", c.MaxLeaseFraction == next.MaxLeaseFraction)
	cmp("MaxVoters", c.MaxVoters == next.MaxVoters)
	cmp("ClientMaxWait", c.ClientMaxWait == next.ClientMaxWait)
	return diff
}

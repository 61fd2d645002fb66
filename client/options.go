package client

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"time"

	"github.com/quotamesh/quotamesh/internal/clock"
	"github.com/quotamesh/quotamesh/internal/lease"
	"github.com/rs/zerolog"
)

// Defaults for options not given.
const (
	// DefaultLeaseTTL is the longest the SDK uses a lease (the node may
	// grant shorter). A key is decided from leases once its calls per TTL
	// reach 4 (80/s at this TTL). Half a slot: a lease's used tokens are
	// counted in the slot its settlement reaches the node in, and a TTL of
	// a whole slot (100 ms) made most settlements cross a slot edge, which
	// held 3-8 % of a saturated key's room idle (design.md §10).
	DefaultLeaseTTL = lease.DefaultTTL
	// DefaultRequestTimeout bounds one round trip: a strict decision, a
	// first lease, a renewal. A call gives up with quotamesh.ErrUnavailable
	// when it passes, or earlier when its context ends.
	DefaultRequestTimeout = 500 * time.Millisecond
	// DefaultDialTimeout bounds one attempt to connect to the nodes.
	DefaultDialTimeout = 2 * time.Second
	// DefaultAdminTimeout bounds an admin call whose context has no
	// deadline. Limit changes go through Raft, which may be electing a
	// leader.
	DefaultAdminTimeout = 10 * time.Second
	// DefaultMaxKeys is how many keys the SDK holds leases for at most.
	// Further keys are decided by a round trip each until idle keys are
	// forgotten.
	DefaultMaxKeys = 10_000
	// DefaultMaxInFlight bounds the requests queued or awaiting a reply;
	// a caller beyond it waits for a place for the overload wait at most,
	// then gets the overload policy's answer.
	DefaultMaxInFlight = 2048
	// DefaultOverloadWait is how long a call waits for a place in flight
	// before the SDK answers it by its overload policy.
	DefaultOverloadWait = 10 * time.Millisecond
	// DefaultBackoffMin and DefaultBackoffMax bound the wait between
	// attempts to reach a node that does not answer: it doubles from the
	// first to the second, with jitter.
	DefaultBackoffMin = 50 * time.Millisecond
	DefaultBackoffMax = 2 * time.Second
)

// Option configures Dial.
type Option func(*config)

// config is what the options set; Dial validates it.
type config struct {
	cas            *x509.CertPool
	cert           *tls.Certificate
	nodeID         string
	serverName     string
	strict         bool
	leaseTTL       time.Duration
	requestTimeout time.Duration
	dialTimeout    time.Duration
	adminTimeout   time.Duration
	maxKeys        int
	maxInFlight    int
	idleTimeout    time.Duration
	nearest        bool
	leaseForget    time.Duration // tests; 0: lease.DefaultForgetAfter
	overload       OverloadPolicy
	overloadWait   time.Duration
	backoffMin     time.Duration
	backoffMax     time.Duration
	log            zerolog.Logger
	clock          clock.Source // tests only; nil: the shared coarse clock
}

func defaultConfig() config {
	return config{
		leaseTTL:       DefaultLeaseTTL,
		requestTimeout: DefaultRequestTimeout,
		dialTimeout:    DefaultDialTimeout,
		adminTimeout:   DefaultAdminTimeout,
		maxKeys:        DefaultMaxKeys,
		maxInFlight:    DefaultMaxInFlight,
		overloadWait:   DefaultOverloadWait,
		backoffMin:     DefaultBackoffMin,
		backoffMax:     DefaultBackoffMax,
		log:            zerolog.Nop(),
	}
}

// WithCA sets the cluster CA that nodes' certificates must chain to.
// Required.
func WithCA(pool *x509.CertPool) Option { return func(c *config) { c.cas = pool } }

// WithCertificate sets the client's certificate (quotamesh://client/<name>,
// signed by the cluster CA). Optional unless the nodes require client
// certificates; admin operations may require an admin's.
func WithCertificate(cert tls.Certificate) Option {
	return func(c *config) { c.cert = &cert }
}

// WithNodeID makes the SDK use the node id only, refusing any node whose
// certificate is not for id: every key goes to it, as with WithNearest.
// Useful with a single address.
func WithNodeID(id string) Option { return func(c *config) { c.nodeID, c.nearest = id, true } }

// WithServerName makes the SDK check that the node's certificate carries
// name as a DNS or IP SAN, as ordinary TLS does.
func WithServerName(name string) Option { return func(c *config) { c.serverName = name } }

// WithStrict makes every decision a round trip to the node (pipelined and
// batched with other callers') instead of deciding from leases: exact
// per-node accounting at the cost of a round trip per call and the
// throughput ceiling of one connection.
func WithStrict() Option { return func(c *config) { c.strict = true } }

// OverloadPolicy is what a call answers when the nodes cannot keep up: a
// node answered that it is overloaded, or every place in flight
// (WithMaxInFlight) stayed taken for the overload wait. The call's error
// then wraps quotamesh.ErrOverloaded and its Decision is the policy's.
type OverloadPolicy uint8

const (
	// OverloadDeny (the default) denies: Allowed false, RetryAfter the
	// overload wait. The limit holds whatever the load.
	OverloadDeny OverloadPolicy = iota
	// OverloadAllow allows: the service keeps working and its limit is not
	// enforced while the limiter is overloaded (fail open).
	OverloadAllow
	// OverloadError answers the zero Decision: the caller decides.
	OverloadError
)

// WithOverload sets the overload policy and how long a call waits for a
// place in flight before it applies (default OverloadDeny and
// DefaultOverloadWait). A limiter past its capacity answers at once, by the
// policy, instead of queueing callers behind the nodes: latency stays
// bounded and the nodes keep their peak throughput.
func WithOverload(p OverloadPolicy, wait time.Duration) Option {
	return func(c *config) { c.overload, c.overloadWait = p, wait }
}

// WithNearest makes the SDK use only the nearest node (the first of the
// addresses to answer) for every key, instead of sending each key to its
// home node among all members. Use it where clients must talk to one node
// (a node beside each client, several regions): keys whose demand spreads
// over nodes then share their limit by the nodes' algorithm (design.md §7),
// which loses accuracy on keys with a few requests per node per sync
// interval.
func WithNearest() Option { return func(c *config) { c.nearest = true } }

// WithLeaseTTL sets the longest the SDK uses a lease (1 ms to 10 s; the
// node's TTL applies when shorter) and the horizon leases are sized for:
// the SDK asks for its observed demand × TTL. Shorter leases track the
// cluster more closely and cost more renewals. Default DefaultLeaseTTL.
func WithLeaseTTL(d time.Duration) Option { return func(c *config) { c.leaseTTL = d } }

// WithRequestTimeout bounds one round trip (default DefaultRequestTimeout).
func WithRequestTimeout(d time.Duration) Option {
	return func(c *config) { c.requestTimeout = d }
}

// WithDialTimeout bounds one attempt to connect (default
// DefaultDialTimeout).
func WithDialTimeout(d time.Duration) Option { return func(c *config) { c.dialTimeout = d } }

// WithAdminTimeout bounds admin calls whose context has no deadline
// (default DefaultAdminTimeout).
func WithAdminTimeout(d time.Duration) Option { return func(c *config) { c.adminTimeout = d } }

// WithMaxKeys bounds the keys the SDK keeps lease state for (default
// DefaultMaxKeys). Each costs a few hundred bytes.
func WithMaxKeys(n int) Option { return func(c *config) { c.maxKeys = n } }

// WithMaxInFlight bounds requests queued or awaiting a reply (default
// DefaultMaxInFlight).
func WithMaxInFlight(n int) Option { return func(c *config) { c.maxInFlight = n } }

// WithIdleTimeout sets the QUIC idle timeout the SDK offers (the smaller of
// the client's and the node's applies; keep-alives are sent at a quarter of
// it). A silent node is given up after about this long. Default 1 s, as
// the nodes'.
func WithIdleTimeout(d time.Duration) Option { return func(c *config) { c.idleTimeout = d } }

// WithLogger sets the logger; the SDK adds component=client. It logs
// connection changes and protocol errors, never per decision. Default: no
// logs.
func WithLogger(l zerolog.Logger) Option { return func(c *config) { c.log = l } }

// withLeaseForget sets how long an idle key's state is kept (tests).
func withLeaseForget(d time.Duration) Option {
	return func(c *config) { c.leaseForget = max(d, c.leaseTTL) }
}

// withClock sets the clock leases are timed with (tests).
func withClock(s clock.Source) Option { return func(c *config) { c.clock = s } }

// validate reports the first option out of range, naming its value.
func (c *config) validate(addrs []string) error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: "+format, append([]any{ErrInvalidConfig}, args...)...)
	}
	switch {
	case len(addrs) == 0:
		return bad("no node address given")
	case c.cas == nil:
		return bad("no CA: use WithCA with the cluster CA")
	case c.leaseTTL < time.Millisecond || c.leaseTTL > 10*time.Second:
		return bad("lease TTL %v: use 1ms to 10s", c.leaseTTL)
	case c.requestTimeout < time.Millisecond:
		return bad("request timeout %v: use at least 1ms", c.requestTimeout)
	case c.dialTimeout < time.Millisecond:
		return bad("dial timeout %v: use at least 1ms", c.dialTimeout)
	case c.adminTimeout < time.Millisecond:
		return bad("admin timeout %v: use at least 1ms", c.adminTimeout)
	case c.maxKeys < 0:
		return bad("max keys %d: use 0 (leases off) or more", c.maxKeys)
	case c.maxInFlight < 1 || c.maxInFlight > 1<<20:
		return bad("max in flight %d: use 1 to %d", c.maxInFlight, 1<<20)
	case c.overload > OverloadError:
		return bad("overload policy %d: use OverloadDeny, OverloadAllow or OverloadError", c.overload)
	case c.overloadWait < 0 || c.overloadWait > time.Minute:
		return bad("overload wait %v: use 0 to 1m", c.overloadWait)
	case c.backoffMin <= 0 || c.backoffMax < c.backoffMin:
		return bad("backoff [%v, %v]: both positive, the first not above the second", c.backoffMin, c.backoffMax)
	case c.idleTimeout != 0 && c.idleTimeout < 4*time.Millisecond:
		return bad("idle timeout %v: use at least 4ms (keep-alives go at a quarter of it)", c.idleTimeout)
	}
	for i, a := range addrs {
		if a == "" {
			return bad("address %d is empty", i)
		}
	}
	return nil
}

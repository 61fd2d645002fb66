package node

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/quotamesh/quotamesh"
	"github.com/quotamesh/quotamesh/internal/httpapi"
	"github.com/quotamesh/quotamesh/internal/rls"
	"github.com/quotamesh/quotamesh/limits"
	"github.com/quotamesh/quotamesh/transport"
)

// The gateways: decision APIs for callers that are not the Go SDK, each on
// a TCP listener of its own, both deciding through AllowN, the embedded
// path (shadow rules included), on this node:
//
//   - Envoy's rate limit service v3 over gRPC (GatewayConfig.RLSListen,
//     package internal/rls);
//   - POST /v1/allow over HTTP (GatewayConfig.HTTPListen, package
//     internal/httpapi).
//
// Both are TLS with the node's certificate, and authenticate callers as
// the client port does (authorizeDecisions).

// GatewayConfig configures the decision APIs for other languages and
// proxies. The zero value turns both off.
type GatewayConfig struct {
	// RLSListen is the TCP host:port of Envoy's rate limit service (gRPC,
	// envoy.service.ratelimit.v3.RateLimitService); "" turns it off.
	RLSListen string
	// HTTPListen is the TCP host:port of the HTTP decision API (POST
	// /v1/allow); "" turns it off.
	HTTPListen string
	// RLSUnmatchedOverLimit answers OVER_LIMIT, instead of OK, for RLS
	// descriptors that no rule matches.
	RLSUnmatchedOverLimit bool
	// RLSRefuseOverride answers an RLS request whose descriptor carries a
	// limit override INVALID_ARGUMENT. By default the override is ignored
	// and the cluster's rule decides.
	RLSRefuseOverride bool
	// Route says where both APIs decide (gatewayroute.go): RouteThin
	// (the default, ""), RouteLocal or RouteHome.
	Route GatewayRoute
}

// validate reports bad listen addresses and routes.
func (g GatewayConfig) validate(bad func(string, ...any)) {
	switch g.Route {
	case "", RouteThin, RouteLocal, RouteHome:
	default:
		bad("Gateway.Route %q: use %q, %q or %q", g.Route, RouteThin, RouteLocal, RouteHome)
	}
	for _, l := range []struct{ name, addr string }{{"Gateway.RLSListen", g.RLSListen}, {"Gateway.HTTPListen", g.HTTPListen}} {
		if l.addr == "" {
			continue
		}
		if _, _, err := net.SplitHostPort(l.addr); err != nil {
			bad("%s %q: not host:port (%v)", l.name, l.addr, err)
		}
	}
}

// gateways is the node's part of the decision APIs.
type gateways struct {
	rls    *rls.Server
	http   *httpapi.Server
	rlsLn  net.Listener
	httpLn net.Listener
	cas    *x509.CertPool
	home   *homeRouter // the client to the peers, for RouteHome and RouteThin

	requests  *prometheus.CounterVec // {api, outcome}
	decisions *prometheus.CounterVec // {api, rule, result}
	overrides prometheus.Counter
	routed    *prometheus.CounterVec // {outcome}: decisions sent to a key's home
	reg       prometheus.Registerer

	rulesMu sync.Mutex
	rules   map[string]bool // patterns that may have series in decisions
}

// Gateway metric names.
const (
	metricAPIRequests  = "quotamesh_api_requests_total"
	metricAPIDecisions = "quotamesh_api_decisions_total"
	metricRLSOverrides = "quotamesh_rls_limit_overrides_total"
	metricAPIRouted    = "quotamesh_api_routed_total"
)

func newGateways(reg prometheus.Registerer, cas *x509.CertPool) (*gateways, error) {
	g := &gateways{
		cas: cas,
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: metricAPIRequests,
			Help: "Requests to the RLS and HTTP decision APIs, by API and outcome (ok, over_limit, allowed, denied, bad_request, unavailable, error)."}, []string{"api", "outcome"}),
		decisions: prometheus.NewCounterVec(prometheus.CounterOpts{Name: metricAPIDecisions,
			Help: "Keys decided through the RLS (one per descriptor) and HTTP APIs, by API, the governing rule's pattern (\"\" for none) and result (allowed, denied, unmatched, error)."}, []string{"api", "rule", "result"}),
		overrides: prometheus.NewCounter(prometheus.CounterOpts{Name: metricRLSOverrides,
			Help: "RLS requests that carried a limit override, which the cluster's rules overrule."}),
		routed: prometheus.NewCounterVec(prometheus.CounterOpts{Name: metricAPIRouted,
			Help: "Decisions of the RLS and HTTP APIs sent to their key's home node, by outcome (home: the home or a member after it answered; fallback: none could, and this node decided)."}, []string{"outcome"}),
		reg:   reg,
		rules: map[string]bool{},
	}
	for i, c := range g.collectors() {
		if err := reg.Register(c); err != nil {
			for _, r := range g.collectors()[:i] {
				reg.Unregister(r)
			}
			return nil, err
		}
	}
	return g, nil
}

func (g *gateways) collectors() []prometheus.Collector {
	return []prometheus.Collector{g.requests, g.decisions, g.overrides, g.routed}
}

func (g *gateways) unregister() {
	for _, c := range g.collectors() {
		g.reg.Unregister(c)
	}
}

// setTable drops the decision series of rules that are gone.
func (g *gateways) setTable(t *limits.Table) {
	g.rulesMu.Lock()
	defer g.rulesMu.Unlock()
	for p := range g.rules {
		if _, ok := t.Get(p); !ok {
			g.decisions.DeletePartialMatch(prometheus.Labels{"rule": p})
			delete(g.rules, p)
		}
	}
	for _, r := range t.Rules() {
		g.rules[r.Pattern] = true
	}
}

// authorizeDecisions says whether the caller of a decision API, given its
// TLS state (the chain it presented, not yet verified), may ask for
// decisions. It is the client port's rule, in one place so that roles in
// client certificates (decide-only, admin) can be checked here as they are
// there: a certificate must chain to the cluster CA, be meant for client
// authentication and carry a QuotaMesh identity (a client's or a node's);
// without one the caller is anonymous, which only a node that does not
// require client certificates accepts. Errors end the handshake.
func (n *Node) authorizeDecisions(cs tls.ConnectionState) error {
	policy, cas := n.cfg.Clients, n.gw.cas
	if n.tr != nil { // as reloaded
		policy, cas = n.tr.ClientPolicy(), n.tr.CAs()
	}
	if len(cs.PeerCertificates) == 0 {
		if !policy.AllowAnonymous {
			return fmt.Errorf("%w: this node requires a client certificate signed by the cluster CA", ErrForbidden)
		}
		return nil
	}
	id, err := transport.VerifyClientCertificate(cs.PeerCertificates, cas)
	if err != nil {
		return fmt.Errorf("%w: client certificate %q: %w", ErrForbidden, cs.PeerCertificates[0].Subject.CommonName, err)
	}
	if !id.May(transport.ActionDecide) {
		return fmt.Errorf("%w: %s", ErrForbidden, id.Why(transport.ActionDecide))
	}
	return nil
}

// gatewayTLS is a decision API's TLS configuration. TLS 1.2 is accepted
// (Envoy's upstream TLS stops at 1.2 unless told otherwise); client
// certificates are asked for and checked by authorizeDecisions.
func (n *Node) gatewayTLS(cert tls.Certificate) *tls.Config {
	auth := tls.RequireAnyClientCert
	if n.cfg.Clients.AllowAnonymous {
		auth = tls.RequestClientCert
	}
	return &tls.Config{
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{cert},
		ClientAuth:   auth,
		VerifyConnection: func(cs tls.ConnectionState) error {
			err := n.authorizeDecisions(cs)
			if err != nil {
				if ok, _ := n.rejectLog.Allow("gateway-tls", time.Now()); ok {
					n.clientLog.Warn().Err(err).Msg("decision API handshake refused")
				}
			}
			return err
		},
	}
}

// openGateways opens the configured listeners and makes the servers; it
// starts nothing. Called by Start before any goroutine.
func (n *Node) openGateways(reg prometheus.Registerer, cert tls.Certificate, cas *x509.CertPool) (err error) {
	g, err := newGateways(reg, cas)
	if err != nil {
		return fmt.Errorf("quotamesh/node: registering metrics: %w", err)
	}
	n.gw = g
	g.home = &homeRouter{cert: cert}
	defer func() {
		if err != nil {
			n.closeGateways()
		}
	}()
	gc := n.cfg.Gateway
	if gc.RLSListen != "" {
		if g.rlsLn, err = net.Listen("tcp", gc.RLSListen); err != nil {
			return fmt.Errorf("quotamesh/node: RLS listener on %s: %w", gc.RLSListen, err)
		}
		g.rls = rls.New(rls.Config{
			Decider:        apiDecider{n, "rls"},
			TLS:            n.gatewayTLS(cert),
			Unmatched:      gc.RLSUnmatchedOverLimit,
			RefuseOverride: gc.RLSRefuseOverride,
			Observe: func(o rls.Outcome, override bool) {
				g.requests.WithLabelValues("rls", string(o)).Inc()
				if override {
					g.overrides.Inc()
				}
			},
		})
	}
	if gc.HTTPListen != "" {
		if g.httpLn, err = net.Listen("tcp", gc.HTTPListen); err != nil {
			return fmt.Errorf("quotamesh/node: HTTP decision listener on %s: %w", gc.HTTPListen, err)
		}
		g.http = httpapi.New(httpapi.Config{
			Decider:  apiDecider{n, "http"},
			TLS:      n.gatewayTLS(cert),
			Observe:  func(o httpapi.Outcome) { g.requests.WithLabelValues("http", string(o)).Inc() },
			ErrorLog: log.New(debugWriter{n.clientLog}, "", 0),
		})
	}
	return nil
}

// closeGateways undoes openGateways when Start fails after it.
func (n *Node) closeGateways() {
	if n.gw == nil {
		return
	}
	for _, ln := range []net.Listener{n.gw.rlsLn, n.gw.httpLn} {
		if ln != nil {
			_ = ln.Close()
		}
	}
	n.gw.unregister()
}

// startGateways serves the listeners, on goroutines of the misc group.
func (n *Node) startGateways() {
	g := n.gw
	for _, l := range []struct {
		name  string
		on    bool
		serve func(net.Listener) error
		ln    net.Listener
	}{
		{"RLS", g.rls != nil, func(ln net.Listener) error { return g.rls.Serve(ln) }, g.rlsLn},
		{"HTTP decision", g.http != nil, func(ln net.Listener) error { return g.http.Serve(ln) }, g.httpLn},
	} {
		if !l.on {
			continue
		}
		n.misc.Go(func() {
			if err := l.serve(l.ln); err != nil && !errors.Is(err, net.ErrClosed) {
				n.clientLog.Error().Err(err).Msgf("%s listener stopped", l.name)
			}
		})
	}
}

// stopGateways stops accepting and lets the calls in progress finish
// (they answer "unavailable" once the node is closed) until ctx ends.
func (n *Node) stopGateways(ctx context.Context) {
	g := n.gw
	var wg sync.WaitGroup
	if g.rls != nil {
		wg.Add(1)
		go func() { // waited for below
			defer wg.Done()
			g.rls.GracefulStop(ctx)
		}()
	}
	if g.http != nil {
		wg.Add(1)
		go func() { // waited for below
			defer wg.Done()
			g.http.Shutdown(ctx)
		}()
	}
	wg.Wait()
	g.home.close()
}

// RLSAddr returns the address of the Envoy rate limit service, or "" if it
// is off.
func (n *Node) RLSAddr() string { return addrOf(n.gw.rlsLn) }

// HTTPAddr returns the address of the HTTP decision API, or "" if it is
// off.
func (n *Node) HTTPAddr() string { return addrOf(n.gw.httpLn) }

func addrOf(ln net.Listener) string {
	if ln == nil {
		return ""
	}
	return ln.Addr().String()
}

// debugWriter writes each line it is given to a logger at debug level:
// the HTTP server's own complaints (a refused handshake is also logged,
// rate-limited, by gatewayTLS).
type debugWriter struct{ log zerolog.Logger }

func (w debugWriter) Write(p []byte) (int, error) {
	w.log.Debug().Str("api", "http").Msg(strings.TrimSpace(string(p)))
	return len(p), nil
}

// apiDecider decides for one API through AllowN and counts the decision
// under the key's rule.
type apiDecider struct {
	n   *Node
	api string
}

func (a apiDecider) Decide(ctx context.Context, key string, k int64) (quotamesh.Decision, string, error) {
	var d quotamesh.Decision
	var err error
	if a.n.cfg.Gateway.Route == RouteLocal {
		d, err = a.n.AllowN(ctx, key, k)
	} else {
		d, err = a.n.decideAtHome(ctx, key, k, a.n.cfg.Gateway.Route == RouteHome)
	}
	rule, result := "", "allowed"
	switch {
	case errors.Is(err, quotamesh.ErrUnavailable), errors.Is(err, quotamesh.ErrClosed),
		errors.Is(err, limits.ErrInvalidKey), errors.Is(err, quotamesh.ErrInvalidN):
		return d, "", err // not a decision
	case d.Unlimited:
		result = "unmatched"
	default:
		if _, r, ok := a.n.eng.Registry().Lookup(key); ok {
			rule = r.Pattern
		} else if r, ok := a.n.eng.Table().Lookup(key); ok { // decided at its home
			rule = r.Pattern
		}
		if !d.Allowed || err != nil {
			result = "denied"
		}
	}
	a.n.gw.decisions.WithLabelValues(a.api, rule, result).Inc()
	return d, rule, err
}

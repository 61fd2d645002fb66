package transport

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/quotamesh/quotamesh/internal/certs"
	"github.com/quotamesh/quotamesh/internal/promtest"
)

func TestHandshakeBucket(t *testing.T) {
	t0 := time.Unix(1000, 0)
	l := newHandshakeLimiter(ClientPolicy{HandshakeRate: 2, HandshakeBurst: 3})
	a := &net.UDPAddr{IP: net.IPv4(10, 0, 0, 1), Port: 5}
	b := &net.UDPAddr{IP: net.IPv4(10, 0, 0, 2), Port: 5}
	mapped := &net.UDPAddr{IP: net.ParseIP("::ffff:10.0.0.1"), Port: 9} // the same source as a
	steps := []struct {
		at   time.Duration
		addr net.Addr
		want bool
	}{
		{0, a, true}, {0, a, true}, {0, mapped, true}, // the burst of 3, ports and mapping aside
		{0, a, false},                      // empty
		{0, b, true},                       // another source has its own bucket
		{400 * time.Millisecond, a, false}, // 0.8 tokens
		{500 * time.Millisecond, a, true},  // 1 token after 500 ms at 2/s
		{500 * time.Millisecond, a, false}, //
		{-time.Second, a, false},           // a clock going backwards adds nothing
		{10 * time.Second, a, true},        // refilled, capped at the burst
		{10 * time.Second, a, true},        //
		{10 * time.Second, a, true},        //
		{10 * time.Second, a, false},       //
	}
	for i, s := range steps {
		if got := l.allow(s.addr, t0.Add(s.at)); got != s.want {
			t.Errorf("step %d: allow(%v, t0+%v) = %v, want %v", i, s.addr, s.at, got, s.want)
		}
	}
}

func TestHandshakeRateLimit(t *testing.T) {
	ca := testCA(t)
	reg := prometheus.NewRegistry()
	a := startNode(t, ca, "a", func(c *Config) {
		c.Clients = ClientPolicy{HandshakeRate: 0.1, HandshakeBurst: 2}
		c.Registerer = reg
	})
	cert := clientCert(t, ca, "cli")
	cfg := ClientConfig{Certificate: &cert, CAs: ca.Pool(), NodeID: "a"}
	for i := range 2 {
		cc, err := DialClient(ctxT(t, 3*time.Second), a.addr(), cfg)
		if err != nil {
			t.Fatalf("dial %d within the burst: %v", i, err)
		}
		_ = cc.Close()
	}
	start := time.Now()
	_, err := DialClient(ctxT(t, 3*time.Second), a.addr(), cfg)
	if !errors.Is(err, ErrConnectionRefused) {
		t.Fatalf("dial beyond the burst = %v, want ErrConnectionRefused", err)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("the refusal took %v; want it at once", d)
	}
	// A loaded machine may retransmit a refused Initial: each counts.
	if got := counterValue(t, reg, metricRefused, map[string]string{"direction": "inbound", "reason": refusedRateLimited}); got < 1 {
		t.Errorf("%s{reason=rate_limited} = %v, want at least 1", metricRefused, got)
	}
	if got := counterValue(t, reg, metricAttempts, nil); got < 3 {
		t.Errorf("%s = %v, want at least 3", metricAttempts, got)
	}
}

func TestMaxClientConns(t *testing.T) {
	ca := testCA(t)
	h := &countingHandler{recorder: newRecorder()}
	h.serve = func(c *ClientConn) { <-c.Done() }
	a := startNode(t, ca, "a", func(c *Config) { c.Clients.MaxClientConns = 1; c.Handler = h })
	cert := clientCert(t, ca, "cli")
	cfg := ClientConfig{Certificate: &cert, CAs: ca.Pool(), NodeID: "a"}
	first, err := DialClient(ctxT(t, 3*time.Second), a.addr(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer first.Close()
	eventually(t, 3*time.Second, "the first client served", func() bool { return h.clients.Load() == 1 })
	second, err := DialClient(ctxT(t, 3*time.Second), a.addr(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer second.Close()
	select {
	case <-second.Done():
	case <-time.After(3 * time.Second):
		t.Fatal("a client beyond MaxClientConns stayed connected")
	}
	if !errors.Is(second.Err(), ErrTooManyClients) {
		t.Errorf("second client's Err() = %v, want ErrTooManyClients", second.Err())
	}
	// The bound may change at run time; the first client is still served.
	if err := a.t.SetClientPolicy(ClientPolicy{MaxClientConns: 2}); err != nil {
		t.Fatal(err)
	}
	third, err := DialClient(ctxT(t, 3*time.Second), a.addr(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer third.Close()
	eventually(t, 3*time.Second, "the third client served", func() bool { return h.clients.Load() == 2 })
	if err := a.t.SetClientPolicy(ClientPolicy{MaxClientConns: -1}); !errors.Is(err, ErrInvalidConfig) {
		t.Errorf("SetClientPolicy(MaxClientConns -1) = %v, want ErrInvalidConfig", err)
	}
}

// TestSetCertificate rotates a node to a new CA: new handshakes use the new
// material at once, in both directions, and a bad certificate changes
// nothing.
func TestSetCertificate(t *testing.T) {
	oldCA, newCA := testCA(t), testCA(t)
	a := startNode(t, oldCA, "a")
	dial := func(ca *certs.CA) error {
		cert := clientCert(t, ca, "cli")
		cc, err := DialClient(ctxT(t, 3*time.Second), a.addr(), ClientConfig{Certificate: &cert, CAs: ca.Pool(), NodeID: "a"})
		if err != nil {
			return err
		}
		defer cc.Close()
		if st, err := cc.OpenStream(ctxT(t, time.Second)); err == nil {
			_, _ = st.Write([]byte{1})
		}
		select {
		case <-cc.Done():
			return cc.Err()
		case <-time.After(500 * time.Millisecond):
			return nil
		}
	}
	if err := dial(oldCA); err != nil {
		t.Fatalf("before rotation, old CA: %v", err)
	}
	if err := a.t.SetCertificate(nodeCert(t, newCA, "b"), newCA.Pool()); !errors.Is(err, ErrInvalidConfig) {
		t.Errorf("SetCertificate with another node's certificate = %v, want ErrInvalidConfig", err)
	}
	if err := a.t.SetCertificate(nodeCert(t, newCA, "a"), oldCA.Pool()); !errors.Is(err, ErrInvalidConfig) {
		t.Errorf("SetCertificate with a certificate the CA did not sign = %v, want ErrInvalidConfig", err)
	}
	if err := dial(oldCA); err != nil {
		t.Fatalf("after refused rotations, old CA: %v", err)
	}
	if err := a.t.SetCertificate(nodeCert(t, newCA, "a"), newCA.Pool()); err != nil {
		t.Fatal(err)
	}
	if err := dial(newCA); err != nil {
		t.Errorf("after rotation, new CA: %v", err)
	}
	if err := dial(oldCA); !errors.Is(err, ErrCertificate) {
		t.Errorf("after rotation, old CA: %v, want ErrCertificate (the client refuses the new node certificate)", err)
	}
	if got := a.t.Certificate().Issuer.CommonName; got != newCA.Cert.Subject.CommonName {
		t.Errorf("Certificate() issued by %q, want the new CA", got)
	}
}

func TestIdentityMay(t *testing.T) {
	steps := []struct {
		id                       Identity
		decide, read, administer bool
	}{
		{Identity{Name: "ops", Role: RoleAdmin}, true, true, true},
		{Identity{Name: "app", Role: RoleDecide}, true, true, false},
		{Identity{Name: "old"}, true, true, false},
		{Identity{Name: "n1", Node: true}, true, true, false},
		{Identity{Name: "n1", Node: true, Role: RoleAdmin}, true, true, false},
		{Identity{}, true, false, false},
	}
	for i, s := range steps {
		got := [3]bool{s.id.May(ActionDecide), s.id.May(ActionRead), s.id.May(ActionAdminister)}
		if want := [3]bool{s.decide, s.read, s.administer}; got != want {
			t.Errorf("step %d: %+v may decide, read, administer = %v, want %v", i, s.id, got, want)
		}
		for _, a := range []Action{ActionDecide, ActionRead, ActionAdminister} {
			if why := s.id.Why(a); (why == "") != s.id.May(a) {
				t.Errorf("step %d: %+v Why(%v) = %q, May = %v", i, s.id, a, why, s.id.May(a))
			}
		}
	}
}

func TestVerifyClientCertificate(t *testing.T) {
	ca, other := testCA(t), testCA(t)
	issue := func(ca *certs.CA, role certs.Role) tls.Certificate {
		b, err := ca.IssueClient("ops", role, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		return b.TLSCertificate()
	}
	admin := issue(ca, certs.RoleAdmin)
	id, err := VerifyClientCertificate([]*x509.Certificate{admin.Leaf}, ca.Pool())
	if err != nil || id != (Identity{Name: "ops", Role: RoleAdmin}) {
		t.Errorf("admin certificate: %+v, %v", id, err)
	}
	if _, err := VerifyClientCertificate([]*x509.Certificate{issue(other, certs.RoleAdmin).Leaf}, ca.Pool()); !errors.Is(err, ErrCertificate) {
		t.Errorf("another CA's certificate: %v, want ErrCertificate", err)
	}
	if _, err := VerifyClientCertificate(nil, ca.Pool()); !errors.Is(err, ErrCertificate) {
		t.Errorf("no certificate: %v, want ErrCertificate", err)
	}
}

// TestCountersFromStart checks that every refusal and rejection series is
// exported at 0 before the first event, so that alerts on growth work.
func TestCountersFromStart(t *testing.T) {
	reg := prometheus.NewRegistry()
	startNode(t, testCA(t), "a", func(c *Config) { c.Registerer = reg })
	for _, dir := range []string{"inbound", "outbound"} {
		for _, r := range refusalReasons {
			if !hasSeries(t, reg, metricRefused, map[string]string{"direction": dir, "reason": r}) {
				t.Errorf("%s{direction=%s,reason=%s} not exported at start", metricRefused, dir, r)
			}
		}
	}
	for _, r := range []string{rejectTooLarge, rejectMalformed, rejectProtocol} {
		if !hasSeries(t, reg, metricFramesRejected, map[string]string{"reason": r}) {
			t.Errorf("%s{reason=%s} not exported at start", metricFramesRejected, r)
		}
	}
	if !hasSeries(t, reg, metricAttempts, nil) {
		t.Errorf("%s not exported at start", metricAttempts)
	}
}

func hasSeries(t testing.TB, g prometheus.Gatherer, name string, want map[string]string) bool {
	t.Helper()
	ms, err := promtest.Series(g, name, want)
	if err != nil {
		t.Fatal(err)
	}
	return len(ms) > 0
}

func counterValue(t testing.TB, g prometheus.Gatherer, name string, want map[string]string) float64 {
	t.Helper()
	ms, err := promtest.Series(g, name, want)
	if err != nil {
		t.Fatal(err)
	}
	return promtest.Sum(ms)
}

package node

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/quotamesh/quotamesh"
	"github.com/quotamesh/quotamesh/internal/wire"
	"github.com/quotamesh/quotamesh/transport"
)

// TestAnonymousClients checks that a client without a certificate is
// refused by default, and with the opt-out may decide (and find where keys
// live) but read nothing and change nothing.
func TestAnonymousClients(t *testing.T) {
	c := newCluster(t, 1)
	c.startAll()
	c.waitReady(10 * time.Second)
	n1 := c.nodes["n1"]
	cc, err := transport.DialClient(ctxT(t, 5*time.Second), n1.Addr(), transport.ClientConfig{CAs: c.ca.Pool(), NodeID: "n1"})
	if err != nil {
		t.Fatal(err)
	}
	if s, err := cc.OpenStream(ctxT(t, time.Second)); err == nil {
		_, _ = s.Write([]byte{1})
	}
	select {
	case <-cc.Done():
		if !errors.Is(cc.Err(), transport.ErrCertificateRefused) {
			t.Errorf("anonymous client's Err() = %v, want ErrCertificateRefused", cc.Err())
		}
	case <-time.After(3 * time.Second):
		t.Fatal("an anonymous client stayed connected to a node that requires certificates")
	}
	_ = cc.Close()

	cfg := c.config(n1)
	cfg.Bootstrap = c.bootstrap()
	cfg.Clients.AllowAnonymous = true
	if err := n1.Reload(cfg); err != nil {
		t.Fatal(err)
	}
	if !n1.Status(0).Clients.AllowAnonymous {
		t.Error("the status document does not show that anonymous clients are allowed")
	}
	anon := dialRaw(t, c, n1, "")
	if r := anon.batch(wire.ClientRequest{ID: 1, Op: wire.OpDecide, Key: "k", N: 1})[0]; r.Code != wire.CodeOK {
		t.Errorf("anonymous decision with the opt-out: %+v", r)
	}
	if r := anon.admin(wire.AdminRequest{ID: 2, Op: wire.AdminMembers}); r.Code != wire.CodeOK {
		t.Errorf("anonymous membership query: %+v", r)
	}
	for _, op := range []wire.AdminOp{wire.AdminStatus, wire.AdminLimitList, wire.AdminLimitSet, wire.AdminLeave} {
		if r := anon.admin(wire.AdminRequest{ID: 3, Op: op, Node: "n1", Rule: rule("x", "1/s")}); r.Code != wire.CodeForbidden {
			t.Errorf("anonymous %v: %+v, want CodeForbidden", op, r)
		}
	}
}

// TestDataDirLock starts a second node on a data directory in use: it fails
// within the lock's wait, naming the holder, and stops waiting at once when
// its context ends.
func TestDataDirLock(t *testing.T) {
	c := newCluster(t, 2)
	n1 := c.nodes["n1"]
	c.start(n1, func(cfg *Config) { cfg.Bootstrap = []Peer{{ID: "n1", Addr: n1.addr}} })
	second := c.config(c.nodes["n2"])
	second.ID = "n1"
	second.DataDir = n1.dir
	second.TLS.Certificate = &n1.cert

	start := time.Now()
	_, err := Start(context.Background(), second)
	if !errors.Is(err, ErrDataDirLocked) || !strings.Contains(err.Error(), fmt.Sprintf("pid %d (node n1", os.Getpid())) {
		t.Errorf("Start on a locked DataDir = %v; want ErrDataDirLocked naming pid %d and node n1", err, os.Getpid())
	}
	if took := time.Since(start); took < lockWait || took > lockWait+2*time.Second {
		t.Errorf("Start on a locked DataDir gave up after %v; want about %v", took, lockWait)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start = time.Now()
	if _, err := Start(ctx, second); !errors.Is(err, ErrDataDirLocked) {
		t.Errorf("interrupted Start = %v, want ErrDataDirLocked", err)
	}
	if took := time.Since(start); took > time.Second {
		t.Errorf("an interrupted Start took %v to return", took)
	}

	// Once the holder is gone the directory is free.
	c.stop(n1)
	second.PacketConn = n1.pc
	n, err := Start(context.Background(), second)
	if err != nil {
		t.Fatalf("Start after the holder stopped: %v", err)
	}
	if err := n.Close(); err != nil {
		t.Error(err)
	}
}

// TestRestartNeverServesLimitedKeysAsUnlimited restarts a node of a
// cluster with many rules while a caller asks it for a limited key as fast
// as it can: from the first decision it serves, the key's rule must be in
// its table. A node that judged "caught up" by Raft's applied index (which
// counts entries handed to the state machine, not applied) could serve
// with an empty table, and so the key as unlimited.
func TestRestartNeverServesLimitedKeysAsUnlimited(t *testing.T) {
	c := newCluster(t, 3)
	c.startAll()
	c.waitReady(15 * time.Second)
	ctx := ctxT(t, 60*time.Second)
	n1, n3 := c.nodes["n1"], c.nodes["n3"]
	for i := range 60 {
		if _, err := n1.SetLimit(ctx, rule(fmt.Sprintf("filler:%d", i), "100/s")); err != nil {
			t.Fatal(err)
		}
	}
	limited := rule("limited", "1000/s")
	if _, err := n1.SetLimit(ctx, limited); err != nil {
		t.Fatal(err)
	}
	c.waitRule(limited)
	for round := range 3 {
		c.stop(n3)
		c.start(n3, func(cfg *Config) { cfg.Bootstrap = c.bootstrap() })
		var served, unlimited atomic.Int64
		deadline := time.Now().Add(15 * time.Second)
		for served.Load() < 200 && time.Now().Before(deadline) {
			d, err := n3.AllowN(ctx, "limited", 1)
			switch {
			case errors.Is(err, quotamesh.ErrUnavailable):
				continue // not serving yet
			case err != nil:
				t.Fatalf("round %d: AllowN: %v", round, err)
			}
			served.Add(1)
			if d.Unlimited {
				unlimited.Add(1)
			}
		}
		if served.Load() < 200 {
			t.Fatalf("round %d: the restarted node served %d decisions in 15 s", round, served.Load())
		}
		if n := unlimited.Load(); n > 0 {
			t.Errorf("round %d: the restarted node decided the limited key as unlimited %d times", round, n)
		}
	}
}

// TestSecurityMetrics checks the metrics an operator alerts on: every
// counter exported at 0 from the start, the build info, the certificate's
// expiry, and decisions and keys per rule.
func TestSecurityMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	c := newCluster(t, 1, func(cfg *Config) { cfg.Registerer = reg })
	c.startAll()
	c.waitReady(10 * time.Second)
	n1 := c.nodes["n1"]
	for _, want := range []struct {
		name   string
		labels map[string]string
	}{
		{"quotamesh_transport_handshakes_refused_total", map[string]string{"direction": "inbound", "reason": "unknown_authority"}},
		{"quotamesh_transport_handshakes_refused_total", map[string]string{"direction": "inbound", "reason": "rate_limited"}},
		{"quotamesh_frames_rejected_total", map[string]string{"reason": "member"}},
		{"quotamesh_frames_rejected_total", map[string]string{"reason": "malformed"}},
		{"quotamesh_client_requests_total", map[string]string{"op": "limit_set", "code": "forbidden"}},
	} {
		if !hasMetric(t, reg, want.name, want.labels) {
			t.Errorf("%s%v is not exported at start", want.name, want.labels)
		}
	}
	if !hasMetric(t, reg, "quotamesh_build_info", map[string]string{"version": "devel"}) && !hasMetric(t, reg, "quotamesh_build_info", nil) {
		t.Error("no quotamesh_build_info")
	}
	if got, want := metricValue(t, reg, "quotamesh_cert_expiry_timestamp_seconds", map[string]string{"cert": "node"}), float64(n1.cert.Leaf.NotAfter.Unix()); got != want {
		t.Errorf("node certificate expiry metric = %v, want %v", got, want)
	}
	if got := metricValue(t, reg, "quotamesh_cert_expiry_timestamp_seconds", map[string]string{"cert": "ca"}); got != float64(c.ca.Cert.NotAfter.Unix()) {
		t.Errorf("CA expiry metric = %v, want %v", got, c.ca.Cert.NotAfter.Unix())
	}

	ctx := ctxT(t, 20*time.Second)
	r := rule("user:*", "5/s")
	if _, err := n1.SetLimit(ctx, r); err != nil {
		t.Fatal(err)
	}
	c.waitRule(r)
	for range 8 {
		_, _ = n1.AllowN(ctx, "user:1", 1)
	}
	eventually(t, 5*time.Second, "per-rule decisions", func() string {
		a := metricValue(t, reg, "quotamesh_rule_decisions_total", map[string]string{"rule": "user:*", "result": "allowed"})
		d := metricValue(t, reg, "quotamesh_rule_decisions_total", map[string]string{"rule": "user:*", "result": "denied"})
		k := metricValue(t, reg, "quotamesh_rule_keys", map[string]string{"rule": "user:*"})
		if a != 5 || d != 3 || k != 1 {
			return fmt.Sprintf("allowed %v, denied %v, keys %v; want 5, 3, 1", a, d, k)
		}
		return ""
	})
	if _, err := n1.DeleteLimit(ctx, "user:*"); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "the deleted rule's series gone", func() string {
		if hasMetric(t, reg, "quotamesh_rule_decisions_total", map[string]string{"rule": "user:*"}) {
			return "still exported"
		}
		return ""
	})
}

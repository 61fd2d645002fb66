package client

import (
	"crypto/x509"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/quotamesh/quotamesh/internal/certs"
	"github.com/quotamesh/quotamesh/internal/faultnet"
	"github.com/quotamesh/quotamesh/transport"
)

// refusingNode is a node that accepts the TLS handshake of a client whose
// CA it does not trust, then refuses its certificate: TLS 1.3 sends the
// alert at the client's first exchange. It counts connection attempts.
type refusingNode struct {
	tr  *transport.Transport
	fn  *faultnet.Conn
	reg *prometheus.Registry
}

func (refusingNode) PeerFrame(string, []byte)            {}
func (refusingNode) PeerUp(string)                       {}
func (refusingNode) PeerDown(string, error)              {}
func (refusingNode) ServeClient(c *transport.ClientConn) { <-c.Done() }

func startRefusingNode(t *testing.T, ca *certs.CA, id, addr string) *refusingNode {
	t.Helper()
	b, err := ca.IssueNode(id, []string{"127.0.0.1"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	fn, err := faultnet.Listen(addr, 7)
	if err != nil {
		t.Fatal(err)
	}
	n := &refusingNode{fn: fn, reg: prometheus.NewRegistry()}
	n.tr, err = transport.New(transport.Config{NodeID: id, PacketConn: fn, Certificate: b.TLSCertificate(), CAs: ca.Pool(),
		Handler: n, Registerer: n.reg, Logger: testLogger(t)})
	if err != nil {
		_ = fn.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = n.tr.Close(); _ = n.fn.Close() })
	return n
}

func (n *refusingNode) attempts(t *testing.T) float64 {
	t.Helper()
	mfs, err := n.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == "quotamesh_transport_connection_attempts_total" {
			return mf.GetMetric()[0].GetCounter().GetValue()
		}
	}
	return 0
}

// TestRefusedCertificateBacksOff replaces the node a client is connected
// to by one that refuses the client's certificate after the handshake (a
// CA rotation the client missed): the client must not redial in a loop. It
// backs off from DefaultBackoffMax, doubling: a few attempts in 6 s, where
// redialing at once made hundreds a second.
func TestRefusedCertificateBacksOff(t *testing.T) {
	ca := newTestCA(t)
	srv := newTestServer(t, ca, "n1", rule("k*", "1000/s"))
	addr := srv.addr()
	rotated, err := certs.NewCA("rotated", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	trust := x509.NewCertPool() // the client trusts both CAs; its certificate is the old CA's
	trust.AddCert(ca.ca.Cert)
	trust.AddCert(rotated.Cert)
	c, err := Dial(ctxT(t, 5*time.Second), []string{addr}, WithCA(trust), WithCertificate(ca.client), WithLogger(testLogger(t)))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	srv.kill()
	n := startRefusingNode(t, rotated, "n1", addr)
	time.Sleep(6 * time.Second)
	if got := n.attempts(t); got < 1 || got > 4 {
		t.Errorf("the client tried %v connections in 6 s to a node refusing its certificate; want 1 to 4", got)
	}
}

package transport

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"sync/atomic"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quotamesh/quotamesh/internal/certs"
)

// rawDial connects to addr with plain quic-go, presenting cert (if any) and
// offering alpn, and skipping verification of the server: the tests below
// check what the server accepts.
func rawDial(t *testing.T, addr string, cert *tls.Certificate, alpn ...string) (*quic.Conn, error) {
	t.Helper()
	tc := &tls.Config{InsecureSkipVerify: true, NextProtos: alpn, MinVersion: tls.VersionTLS13}
	if cert != nil {
		tc.Certificates = []tls.Certificate{*cert}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	qc, err := quic.DialAddr(ctx, addr, tc, &quic.Config{HandshakeIdleTimeout: time.Second, MaxIdleTimeout: time.Second})
	if err == nil {
		t.Cleanup(func() { _ = qc.CloseWithError(0, "") })
	}
	return qc, err
}

// refusedAtHandshake reports whether the server refused the connection: the
// dial failed, or (TLS 1.3 clients finish before the server has checked
// their certificate) the connection was closed right after.
func refusedAtHandshake(qc *quic.Conn, err error) bool {
	if err != nil {
		return true
	}
	select {
	case <-qc.Context().Done():
		return true
	case <-time.After(time.Second):
		return false
	}
}

func expiredNodeCert(t *testing.T, ca *certs.CA, id string) tls.Certificate {
	t.Helper()
	past := time.Now().Add(-2 * time.Hour)
	b, err := ca.Issue(certs.Request{Identity: certs.NodeIdentity(id), Hosts: []string{"127.0.0.1"}, NotBefore: past, NotAfter: past.Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	return b.TLSCertificate()
}

func clientCert(t *testing.T, ca *certs.CA, name string) tls.Certificate {
	t.Helper()
	b, err := ca.IssueClient(name, certs.RoleDecide, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return b.TLSCertificate()
}

// countingHandler counts ServeClient calls on top of a recorder.
type countingHandler struct {
	*recorder
	clients atomic.Int32
}

func (h *countingHandler) ServeClient(c *ClientConn) {
	h.clients.Add(1)
	h.recorder.ServeClient(c)
}

func TestInboundPeerMTLS(t *testing.T) {
	ca := testCA(t)
	other := testCA(t)
	a := startNode(t, ca, "a")
	good := nodeCert(t, ca, "n2")
	foreign := nodeCert(t, other, "n2")
	expired := expiredNodeCert(t, ca, "n2")
	client := clientCert(t, ca, "cli")
	self := nodeCert(t, ca, "a")

	steps := []struct {
		name   string
		cert   *tls.Certificate
		reason string // "" for the positive control
	}{
		{"positive control: CA-signed node certificate", &good, ""},
		{"certificate from another CA", &foreign, refusedUnknownAuthority},
		{"expired certificate", &expired, refusedExpired},
		{"no certificate", nil, ""},
		{"client certificate on the peer ALPN", &client, refusedIdentity},
		{"this node's own ID", &self, refusedSelf},
	}
	for _, s := range steps {
		t.Run(s.name, func(t *testing.T) {
			before := a.t.m.refusedCount(s.reason)
			qc, err := rawDial(t, a.addr(), s.cert, ALPNPeer)
			refused := refusedAtHandshake(qc, err)
			if s.name == "no certificate" {
				// crypto/tls refuses it (RequireAnyClientCert) before our
				// verification runs, so no reason is counted.
				if !refused {
					t.Fatalf("handshake without a certificate accepted")
				}
				return
			}
			if s.reason == "" {
				if refused {
					t.Fatalf("valid node certificate refused: %v", err)
				}
				return
			}
			if !refused {
				t.Fatalf("handshake accepted, want it refused for %s", s.reason)
			}
			eventually(t, time.Second, "refusal counted", func() bool { return a.t.m.refusedCount(s.reason) == before+1 })
		})
	}
	if a.h.upCount("n2") != 0 {
		t.Errorf("a raw connection that opened no sync stream was reported up")
	}
}

func TestOutboundPeerMTLS(t *testing.T) {
	ca := testCA(t)
	other := testCA(t)
	steps := []struct {
		name   string
		cert   tls.Certificate
		reason string
		want   error
	}{
		{"positive control: the expected node", nodeCert(t, ca, "n2"), "", nil},
		{"server certificate from another CA", nodeCert(t, other, "n2"), refusedUnknownAuthority, ErrCertificate},
		{"expired server certificate", expiredNodeCert(t, ca, "n2"), refusedExpired, ErrCertificate},
		{"another node at the address", nodeCert(t, ca, "n9"), refusedWrongPeer, ErrWrongPeer},
		{"client certificate as a server", clientCert(t, ca, "n2"), refusedInvalid, ErrCertificate},
	}
	for _, s := range steps {
		t.Run(s.name, func(t *testing.T) {
			ln, err := quic.ListenAddr("127.0.0.1:0", &tls.Config{
				Certificates: []tls.Certificate{s.cert},
				NextProtos:   []string{ALPNPeer},
				MinVersion:   tls.VersionTLS13,
				ClientAuth:   tls.RequireAnyClientCert,
			}, &quic.Config{MaxIdleTimeout: time.Second})
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			a := startNode(t, ca, "a")
			if err := a.t.SetPeers(map[string]string{"n2": ln.Addr().String()}); err != nil {
				t.Fatal(err)
			}
			if s.want == nil {
				acceptCtx := ctxT(t, 3*time.Second)
				qc, err := ln.Accept(acceptCtx)
				if err != nil {
					t.Fatalf("the expected node was not dialed: %v", err)
				}
				defer qc.CloseWithError(0, "")
				if got := a.t.m.refusedCount(refusedUnknownAuthority) + a.t.m.refusedCount(refusedExpired) + a.t.m.refusedCount(refusedWrongPeer); got != 0 {
					t.Errorf("positive control counted %d refusals", got)
				}
				return
			}
			eventually(t, 3*time.Second, "refusal counted", func() bool { return a.t.m.refusedCount(s.reason) > 0 })
			var st PeerStatus
			eventually(t, time.Second, "dial error recorded", func() bool {
				st = a.t.Peers()[0]
				return st.LastError != nil
			})
			if !errors.Is(st.LastError, s.want) {
				t.Errorf("LastError = %v, want %v", st.LastError, s.want)
			}
			if st.Connected || a.h.upCount("n2") != 0 {
				t.Errorf("refused node reported up")
			}
		})
	}
}

func TestClientMTLS(t *testing.T) {
	ca := testCA(t)
	other := testCA(t)
	good := clientCert(t, ca, "cli")
	foreign := clientCert(t, other, "cli")
	past := time.Now().Add(-2 * time.Hour)
	eb, err := ca.Issue(certs.Request{Identity: certs.ClientIdentity("cli"), NotBefore: past, NotAfter: past.Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	expired := eb.TLSCertificate()

	for _, anonymous := range []bool{false, true} {
		h := &countingHandler{recorder: newRecorder()}
		identities := make(chan Identity, 8)
		h.serve = func(c *ClientConn) { identities <- c.Identity(); <-c.Done() }
		a := startNode(t, ca, "a", func(c *Config) { c.Clients.AllowAnonymous = anonymous; c.Handler = h })
		steps := []struct {
			name   string
			cert   *tls.Certificate
			accept bool
			want   Identity
		}{
			{"client certificate", &good, true, Identity{Name: "cli", Role: RoleDecide}},
			{"no certificate", nil, anonymous, Identity{}},
			{"certificate from another CA", &foreign, false, Identity{}},
			{"expired certificate", &expired, false, Identity{}},
		}
		for _, s := range steps {
			before := h.clients.Load()
			cc, err := DialClient(ctxT(t, 3*time.Second), a.addr(), ClientConfig{Certificate: s.cert, CAs: ca.Pool(), NodeID: "a"})
			var refused bool
			if err != nil {
				refused = true
			} else {
				// TLS 1.3: the node checks the client's certificate after
				// the client's side of the handshake; a refusal arrives as
				// an alert at the first exchange.
				if st, err := cc.OpenStream(ctxT(t, time.Second)); err == nil {
					_, _ = st.Write([]byte{1})
				}
				select {
				case <-cc.Done():
					refused = true
					if !errors.Is(cc.Err(), ErrCertificateRefused) {
						t.Errorf("anonymous=%v, %s: Err() = %v, want ErrCertificateRefused", anonymous, s.name, cc.Err())
					}
				case <-time.After(time.Second):
				}
			}
			if refused == s.accept {
				t.Errorf("anonymous=%v, %s: refused %v (%v), want %v", anonymous, s.name, refused, err, !s.accept)
			}
			if s.accept && !refused {
				if got := <-identities; got != s.want {
					t.Errorf("anonymous=%v, %s: ServeClient sees %v, want %v", anonymous, s.name, got, s.want)
				}
				if got := cc.Identity(); got != (Identity{Name: "a", Node: true}) {
					t.Errorf("client sees the node as %v, want node/a", got)
				}
			}
			if !s.accept && h.clients.Load() != before {
				t.Errorf("anonymous=%v, %s: refused client reached ServeClient", anonymous, s.name)
			}
			if cc != nil {
				_ = cc.Close()
			}
		}
		a.close()
	}
}

func TestDialClientVerifiesNode(t *testing.T) {
	ca := testCA(t)
	other := testCA(t)
	a := startNode(t, ca, "a")
	steps := []struct {
		name string
		cfg  ClientConfig
		want error
	}{
		{"positive control", ClientConfig{CAs: ca.Pool(), NodeID: "a", ServerName: "127.0.0.1"}, nil},
		{"node from another CA", ClientConfig{CAs: other.Pool()}, ErrCertificate},
		{"another node than expected", ClientConfig{CAs: ca.Pool(), NodeID: "b"}, ErrWrongPeer},
		{"server name not in the certificate", ClientConfig{CAs: ca.Pool(), ServerName: "example.com"}, ErrCertificate},
	}
	for _, s := range steps {
		cc, err := DialClient(ctxT(t, 3*time.Second), a.addr(), s.cfg)
		if s.want == nil {
			if err != nil {
				t.Errorf("%s: %v", s.name, err)
				continue
			}
			_ = cc.Close()
			continue
		}
		if !errors.Is(err, s.want) {
			t.Errorf("%s: DialClient = %v, want %v", s.name, err, s.want)
		}
		if cc != nil {
			_ = cc.Close()
		}
	}
	if _, err := DialClient(context.Background(), a.addr(), ClientConfig{}); !errors.Is(err, ErrInvalidConfig) {
		t.Errorf("DialClient without CAs = %v, want ErrInvalidConfig", err)
	}
}

func TestALPNSeparatesPeersFromClients(t *testing.T) {
	ca := testCA(t)
	h := &countingHandler{recorder: newRecorder()}
	served := make(chan Identity, 1)
	h.serve = func(c *ClientConn) {
		served <- c.Identity()
		s, err := c.AcceptStream(context.Background())
		if err != nil {
			return
		}
		_, _ = io.Copy(s, s) // echo until the client's CloseWrite
		_ = s.Close()
		<-c.Done()
	}
	a := startNode(t, ca, "a", func(c *Config) { c.Handler = h })
	b := startNode(t, ca, "b")

	// A node's certificate on the client ALPN makes a client, not a peer.
	bCert := b.cfg.Certificate
	cc, err := DialClient(ctxT(t, 3*time.Second), a.addr(), ClientConfig{Certificate: &bCert, CAs: ca.Pool()})
	if err != nil {
		t.Fatalf("DialClient with a node certificate: %v", err)
	}
	defer cc.Close()
	if got := <-served; got != (Identity{Name: "b", Node: true}) {
		t.Errorf("ServeClient sees %v, want node/b", got)
	}
	s, err := cc.OpenStream(ctxT(t, time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	_ = s.CloseWrite()
	got, err := io.ReadAll(s)
	if err != nil || string(got) != "hello" {
		t.Errorf("client stream echo = %q, %v", got, err)
	}
	if a.h.upCount("b") != 0 || len(a.t.Peers()) != 0 {
		t.Errorf("a client connection was treated as a peer: %+v", a.t.Peers())
	}

	// Peers never reach ServeClient.
	mesh(t, a, b)
	waitStable(t, 5*time.Second, a, b)
	if n := h.clients.Load(); n != 1 {
		t.Errorf("ServeClient called %d times, want 1 (the client only)", n)
	}

	// Unknown ALPNs are refused.
	before := a.t.m.refusedCount(refusedALPN)
	qc, err := rawDial(t, a.addr(), &bCert, "h3")
	if !refusedAtHandshake(qc, err) {
		t.Errorf("unknown ALPN accepted")
	}
	if a.t.m.refusedCount(refusedALPN) != before+1 {
		t.Errorf("unknown ALPN refusal not counted")
	}

	// Closing the client ends ServeClient; Done and Err report it.
	_ = cc.Close()
	select {
	case <-cc.Done():
	case <-time.After(time.Second):
		t.Fatal("Done not closed after Close")
	}
	if err := cc.Err(); !errors.Is(err, ErrClosed) {
		t.Errorf("Err after Close = %v, want ErrClosed", err)
	}
}

func TestAllowPeerGatesIncomingNodes(t *testing.T) {
	ca := testCA(t)
	a := startNode(t, ca, "a", func(c *Config) { c.AllowPeer = func(id string) bool { return id == "b" } })
	b, c := startNode(t, ca, "b"), startNode(t, ca, "c")
	for _, n := range []*node{b, c} {
		if err := n.t.SetPeers(map[string]string{"a": a.addr()}); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, 5*time.Second, "b admitted", func() bool { return a.h.isUp("b") })
	eventually(t, 5*time.Second, "c refused", func() bool { return a.t.m.refusedCount(refusedNotAllowed) > 0 })
	if a.h.upCount("c") != 0 || c.h.upCount("a") != 0 {
		t.Errorf("a node AllowPeer refuses came up")
	}
}

// TestClientProtocolNegotiation: a client and a node agree on the newest
// client protocol both speak, so SDKs and nodes of either version talk; a
// client of the older protocol alone gets it, and the node's ClientConn
// says which was agreed.
func TestClientProtocolNegotiation(t *testing.T) {
	ca := testCA(t)
	h := &countingHandler{recorder: newRecorder()}
	protos := make(chan string, 4)
	h.serve = func(c *ClientConn) { protos <- c.Protocol(); <-c.Done() }
	a := startNode(t, ca, "a", func(c *Config) { c.Handler = h })
	cert := clientCert(t, ca, "cli")

	cc, err := DialClient(ctxT(t, 3*time.Second), a.addr(), ClientConfig{Certificate: &cert, CAs: ca.Pool()})
	if err != nil {
		t.Fatal(err)
	}
	if got := cc.Protocol(); got != ALPNClient {
		t.Errorf("DialClient agreed on %q; want %q", got, ALPNClient)
	}
	if st, err := cc.OpenStream(ctxT(t, time.Second)); err == nil {
		_, _ = st.Write([]byte{1})
	}
	if got := <-protos; got != ALPNClient {
		t.Errorf("the node's ClientConn speaks %q; want %q", got, ALPNClient)
	}
	_ = cc.Close()

	for i, offer := range [][]string{{ALPNClient2}, {"quotamesh-client/9", ALPNClient2}} {
		qc, err := rawDial(t, a.addr(), &cert, offer...)
		if err != nil {
			t.Fatalf("step %d: a client offering %q: %v", i, offer, err)
		}
		if got := qc.ConnectionState().TLS.NegotiatedProtocol; got != ALPNClient2 {
			t.Errorf("step %d: a client offering %q agreed on %q; want %q", i, offer, got, ALPNClient2)
		}
		if st, err := qc.OpenStreamSync(ctxT(t, time.Second)); err == nil {
			_, _ = st.Write([]byte{1})
		}
		if got := <-protos; got != ALPNClient2 {
			t.Errorf("step %d: the node's ClientConn speaks %q; want %q", i, got, ALPNClient2)
		}
		_ = qc.CloseWithError(0, "")
	}
}

package certs

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"net"
	"slices"
	"testing"
	"time"
)

func newTestCA(t *testing.T) *CA {
	t.Helper()
	ca, err := NewCA("test cluster", time.Hour)
	if err != nil {
		t.Fatalf("NewCA: %v", err)
	}
	return ca
}

func TestNewCA(t *testing.T) {
	ca := newTestCA(t)
	c := ca.Cert
	if !c.IsCA || !c.BasicConstraintsValid || c.MaxPathLen != 0 || !c.MaxPathLenZero {
		t.Errorf("CA basic constraints: IsCA %v, MaxPathLen %d, MaxPathLenZero %v", c.IsCA, c.MaxPathLen, c.MaxPathLenZero)
	}
	if c.KeyUsage&x509.KeyUsageCertSign == 0 {
		t.Errorf("CA key usage %v lacks cert signing", c.KeyUsage)
	}
	if pub, ok := c.PublicKey.(*ecdsa.PublicKey); !ok || pub.Curve != elliptic.P256() {
		t.Errorf("CA key is %T, want ECDSA P-256", c.PublicKey)
	}
	if got := c.Subject.CommonName; got != "test cluster" {
		t.Errorf("CA common name %q", got)
	}
	if _, err := NewCA("x", 0); !errors.Is(err, ErrInvalidValidity) {
		t.Errorf("NewCA with zero validity = %v, want ErrInvalidValidity", err)
	}
	if _, err := NewCA(" ", time.Hour); err == nil {
		t.Errorf("NewCA with a blank name succeeded")
	}
}

func TestIssueNode(t *testing.T) {
	ca := newTestCA(t)
	b, err := ca.IssueNode("n1", []string{"127.0.0.1", "::1", "node1.example", "*.mesh.local"}, time.Hour)
	if err != nil {
		t.Fatalf("IssueNode: %v", err)
	}
	if id, err := NodeID(b.Cert); id != "n1" || err != nil {
		t.Errorf("NodeID = %q, %v, want n1", id, err)
	}
	if got := b.Cert.URIs; len(got) != 1 || got[0].String() != "quotamesh://node/n1" {
		t.Errorf("URIs = %v, want exactly quotamesh://node/n1", got)
	}
	if !slices.Equal(b.Cert.DNSNames, []string{"node1.example", "*.mesh.local"}) {
		t.Errorf("DNSNames = %v", b.Cert.DNSNames)
	}
	if len(b.Cert.IPAddresses) != 2 || !b.Cert.IPAddresses[0].Equal(net.ParseIP("127.0.0.1")) || !b.Cert.IPAddresses[1].Equal(net.ParseIP("::1")) {
		t.Errorf("IPAddresses = %v", b.Cert.IPAddresses)
	}
	for _, usage := range []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth} {
		if _, err := b.Cert.Verify(x509.VerifyOptions{Roots: ca.Pool(), KeyUsages: []x509.ExtKeyUsage{usage}}); err != nil {
			t.Errorf("node certificate does not verify for usage %v: %v", usage, err)
		}
	}
	if _, err := b.Cert.Verify(x509.VerifyOptions{Roots: ca.Pool(), DNSName: "127.0.0.1"}); err != nil {
		t.Errorf("node certificate does not verify for its IP SAN: %v", err)
	}
	other := newTestCA(t)
	if _, err := b.Cert.Verify(x509.VerifyOptions{Roots: other.Pool()}); err == nil {
		t.Errorf("node certificate verifies against another CA")
	}
	if b.Cert.NotBefore.After(time.Now().Add(-30 * time.Second)) {
		t.Errorf("NotBefore %v is not backdated", b.Cert.NotBefore)
	}
	if !matches(b.Cert, b.Key) {
		t.Errorf("bundle key does not match its certificate")
	}
	tc := b.TLSCertificate()
	if tc.Leaf != b.Cert || len(tc.Certificate) != 1 || tc.PrivateKey != b.Key {
		t.Errorf("TLSCertificate() = %+v", tc)
	}
}

func TestIssueClient(t *testing.T) {
	ca := newTestCA(t)
	b, err := ca.IssueClient("billing", RoleAdmin, time.Hour)
	if err != nil {
		t.Fatalf("IssueClient: %v", err)
	}
	if name, err := ClientName(b.Cert); name != "billing" || err != nil {
		t.Errorf("ClientName = %q, %v", name, err)
	}
	if _, err := NodeID(b.Cert); !errors.Is(err, ErrNoIdentity) {
		t.Errorf("NodeID of a client certificate = %v, want ErrNoIdentity", err)
	}
	if _, err := b.Cert.Verify(x509.VerifyOptions{Roots: ca.Pool(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Errorf("client certificate does not verify for client auth: %v", err)
	}
	if _, err := b.Cert.Verify(x509.VerifyOptions{Roots: ca.Pool(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err == nil {
		t.Errorf("client certificate verifies for server auth")
	}
}

func TestIssueRefusesBadInput(t *testing.T) {
	ca := newTestCA(t)
	now := time.Now()
	steps := []struct {
		name string
		do   func() error
		want error
	}{
		{"bad node ID", func() error { _, err := ca.IssueNode("a/b", nil, time.Hour); return err }, ErrInvalidNodeID},
		{"bad client name", func() error { _, err := ca.IssueClient("", RoleDecide, time.Hour); return err }, ErrInvalidClientName},
		{"bad host", func() error { _, err := ca.IssueNode("n1", []string{"a b"}, time.Hour); return err }, ErrInvalidHost},
		{"empty label", func() error { _, err := ca.IssueNode("n1", []string{"a..b"}, time.Hour); return err }, ErrInvalidHost},
		{"client with hosts", func() error {
			_, err := ca.Issue(Request{Identity: ClientIdentity("c"), Hosts: []string{"x"}, NotBefore: now, NotAfter: now.Add(time.Hour)})
			return err
		}, ErrInvalidHost},
		{"zero validity", func() error { _, err := ca.IssueNode("n1", nil, 0); return err }, ErrInvalidValidity},
		{"inverted dates", func() error {
			_, err := ca.Issue(Request{Identity: NodeIdentity("n1"), NotBefore: now, NotAfter: now.Add(-time.Second)})
			return err
		}, ErrInvalidValidity},
		{"no kind", func() error {
			_, err := ca.Issue(Request{Identity: Identity{Name: "x"}, NotBefore: now, NotAfter: now.Add(time.Hour)})
			return err
		}, ErrInvalidIdentity},
		{"CA without key", func() error {
			_, err := (&CA{Cert: ca.Cert}).IssueNode("n1", nil, time.Hour)
			return err
		}, ErrNoCAKey},
	}
	for _, s := range steps {
		if err := s.do(); !errors.Is(err, s.want) {
			t.Errorf("%s: error %v, want %v", s.name, err, s.want)
		}
	}
}

func TestIssueExpired(t *testing.T) {
	ca := newTestCA(t)
	past := time.Now().Add(-2 * time.Hour)
	b, err := ca.Issue(Request{Identity: NodeIdentity("old"), NotBefore: past, NotAfter: past.Add(time.Hour)})
	if err != nil {
		t.Fatalf("Issue of an expired certificate: %v", err)
	}
	_, err = b.Cert.Verify(x509.VerifyOptions{Roots: ca.Pool()})
	var invalid x509.CertificateInvalidError
	if !errors.As(err, &invalid) || invalid.Reason != x509.Expired {
		t.Errorf("Verify of an expired certificate = %v, want x509.Expired", err)
	}
}

func TestBundleWorksInTLS(t *testing.T) {
	ca := newTestCA(t)
	srv, err := ca.IssueNode("n1", []string{"127.0.0.1"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	cli, err := ca.IssueClient("c1", RoleDecide, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	sc, cc := net.Pipe()
	server := tls.Server(sc, &tls.Config{
		Certificates: []tls.Certificate{srv.TLSCertificate()},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    ca.Pool(),
		MinVersion:   tls.VersionTLS13,
	})
	client := tls.Client(cc, &tls.Config{
		Certificates: []tls.Certificate{cli.TLSCertificate()},
		RootCAs:      ca.Pool(),
		ServerName:   "127.0.0.1",
		MinVersion:   tls.VersionTLS13,
	})
	errc := make(chan error, 1)
	go func() { errc <- server.Handshake() }()
	if err := client.Handshake(); err != nil {
		t.Fatalf("client handshake: %v", err)
	}
	if err := <-errc; err != nil {
		t.Fatalf("server handshake: %v", err)
	}
	peer := server.ConnectionState().PeerCertificates[0]
	if name, err := ClientName(peer); name != "c1" || err != nil {
		t.Errorf("server sees client %q, %v", name, err)
	}
	// Close the pipe, not the TLS conns: close_notify would block on the
	// synchronous pipe until tls's 5 s close deadline.
	_ = sc.Close()
	_ = cc.Close()
}

func TestPEMRoundTrip(t *testing.T) {
	ca := newTestCA(t)
	b, err := ca.IssueNode("n1", nil, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	c, err := ParseCertificatePEM(b.CertPEM())
	if err != nil || !c.Equal(b.Cert) {
		t.Fatalf("certificate PEM round trip: %v", err)
	}
	keyPEM, err := b.KeyPEM()
	if err != nil {
		t.Fatal(err)
	}
	k, err := ParsePrivateKeyPEM(keyPEM)
	if err != nil || !k.Equal(b.Key) {
		t.Fatalf("key PEM round trip: %v", err)
	}
	// SEC 1 keys are read too.
	der, err := x509.MarshalECPrivateKey(b.Key)
	if err != nil {
		t.Fatal(err)
	}
	sec1 := pemEncode("EC PRIVATE KEY", der)
	if k, err := ParsePrivateKeyPEM(sec1); err != nil || !k.Equal(b.Key) {
		t.Errorf("SEC 1 key: %v", err)
	}
	// A bundle of certificates.
	two := append(append([]byte{}, ca.CertPEM()...), b.CertPEM()...)
	if cs, err := ParseCertificatesPEM(two); err != nil || len(cs) != 2 {
		t.Errorf("ParseCertificatesPEM of two blocks = %d, %v", len(cs), err)
	}
	if _, err := ParseCertificatePEM(two); !errors.Is(err, ErrInvalidPEM) {
		t.Errorf("ParseCertificatePEM of two blocks = %v, want ErrInvalidPEM", err)
	}
}

func pemEncode(typ string, der []byte) []byte {
	return append([]byte("-----BEGIN "+typ+"-----\n"), append(b64lines(der), []byte("-----END "+typ+"-----\n")...)...)
}

func TestPEMRefusesBadInput(t *testing.T) {
	ca := newTestCA(t)
	certPEM := ca.CertPEM()
	keyPEM, _ := ca.KeyPEM()
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	p384DER, _ := x509.MarshalPKCS8PrivateKey(p384)
	steps := []struct {
		name string
		data []byte
		cert bool
	}{
		{"empty", nil, true},
		{"blank", []byte(" \n\t"), true},
		{"junk before", append([]byte("junk\n"), certPEM...), true},
		{"junk after", append(append([]byte{}, certPEM...), "junk"...), true},
		{"key as cert", keyPEM, true},
		{"garbage DER", pemEncode("CERTIFICATE", []byte("not DER")), true},
		{"headers", []byte("-----BEGIN CERTIFICATE-----\nProc-Type: 4,ENCRYPTED\n\nAAAA\n-----END CERTIFICATE-----\n"), true},
		{"malformed then good", append([]byte("-----BEGIN CERTIFICATE-----\n!!!\n"), certPEM...), true},
		{"too large", make([]byte, MaxPEMSize+1), true},
		{"cert as key", certPEM, false},
		{"two keys", append(append([]byte{}, keyPEM...), keyPEM...), false},
		{"P-384 key", pemEncode("PRIVATE KEY", p384DER), false},
		{"garbage key", pemEncode("PRIVATE KEY", []byte{1, 2, 3}), false},
		{"RSA type", pemEncode("RSA PRIVATE KEY", []byte{1, 2, 3}), false},
	}
	for _, s := range steps {
		var err error
		if s.cert {
			_, err = ParseCertificatesPEM(s.data)
		} else {
			_, err = ParsePrivateKeyPEM(s.data)
		}
		if !errors.Is(err, ErrInvalidPEM) {
			t.Errorf("%s: error %v, want ErrInvalidPEM", s.name, err)
		}
	}
}

func FuzzParseCertificatesPEM(f *testing.F) {
	ca, err := NewCA("fuzz", time.Hour)
	if err != nil {
		f.Fatal(err)
	}
	b, err := ca.IssueNode("n1", []string{"127.0.0.1"}, time.Hour)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(ca.CertPEM())
	f.Add(append(ca.CertPEM(), b.CertPEM()...))
	f.Add([]byte("-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n"))
	f.Add([]byte("x"))
	f.Fuzz(func(t *testing.T, data []byte) {
		certs, err := ParseCertificatesPEM(data)
		if err != nil {
			if !errors.Is(err, ErrInvalidPEM) {
				t.Fatalf("error %v does not wrap ErrInvalidPEM", err)
			}
			return
		}
		if len(certs) == 0 || len(certs) > MaxPEMCertificates {
			t.Fatalf("%d certificates without an error", len(certs))
		}
		var again []byte
		for _, c := range certs {
			again = append(again, EncodeCertificatePEM(c)...)
			_, _ = IdentityOf(c) // must not panic on any parsed certificate
		}
		back, err := ParseCertificatesPEM(again)
		if err != nil || len(back) != len(certs) {
			t.Fatalf("re-encoded certificates do not parse: %v", err)
		}
	})
}

func FuzzParsePrivateKeyPEM(f *testing.F) {
	ca, err := NewCA("fuzz", time.Hour)
	if err != nil {
		f.Fatal(err)
	}
	k, _ := ca.KeyPEM()
	f.Add(k)
	der, _ := x509.MarshalECPrivateKey(ca.Key)
	f.Add(pemEncode("EC PRIVATE KEY", der))
	f.Add([]byte("-----BEGIN PRIVATE KEY-----\n-----END PRIVATE KEY-----\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		key, err := ParsePrivateKeyPEM(data)
		if err != nil {
			if !errors.Is(err, ErrInvalidPEM) {
				t.Fatalf("error %v does not wrap ErrInvalidPEM", err)
			}
			return
		}
		if key.Curve != elliptic.P256() {
			t.Fatalf("accepted a key on %s", key.Curve.Params().Name)
		}
		again, err := EncodePrivateKeyPEM(key)
		if err != nil {
			t.Fatalf("accepted key does not encode: %v", err)
		}
		if back, err := ParsePrivateKeyPEM(again); err != nil || !back.Equal(key) {
			t.Fatalf("accepted key does not round-trip: %v", err)
		}
	})
}

// b64lines is standard PEM body encoding: base64 in 64-column lines.
func b64lines(der []byte) []byte {
	s := base64.StdEncoding.EncodeToString(der)
	var out []byte
	for len(s) > 64 {
		out = append(out, s[:64]+"\n"...)
		s = s[64:]
	}
	if s != "" {
		out = append(out, s+"\n"...)
	}
	return out
}

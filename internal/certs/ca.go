package certs

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"strings"
	"time"
)

// backdate is how far before "now" issued certificates start, to tolerate
// small clock differences between machines.
const backdate = time.Minute

// CA is a certificate authority: its certificate, and its key when it can
// issue. A CA is safe for concurrent use.
type CA struct {
	// Cert is the CA certificate.
	Cert *x509.Certificate
	// Key is the CA's private key; nil for a CA loaded without ca.key, which
	// can verify but not issue.
	Key *ecdsa.PrivateKey
	// Trusted are further CA certificates trusted beside Cert: during a CA
	// rotation, ca.crt holds the new CA and the old one (or the other way
	// round), so that certificates of both verify. Cert, the first in the
	// file, is the one Key belongs to.
	Trusted []*x509.Certificate
}

// Bundle is an issued certificate and its private key.
type Bundle struct {
	Cert *x509.Certificate
	Key  *ecdsa.PrivateKey
}

// NewCA creates a self-signed CA named name (its subject common name), valid
// from one minute ago for validity.
func NewCA(name string, validity time.Duration) (*CA, error) {
	if validity <= 0 {
		return nil, fmt.Errorf("%w: CA validity %v is not positive", ErrInvalidValidity, validity)
	}
	if strings.TrimSpace(name) == "" || len(name) > 256 {
		return nil, fmt.Errorf("quotamesh/certs: CA name %q: want 1 to 256 bytes, not all spaces", truncate(name))
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("quotamesh/certs: generate CA key: %w", err)
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: name, Organization: []string{"QuotaMesh"}},
		NotBefore:             now.Add(-backdate),
		NotAfter:              now.Add(validity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLen:            0,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("quotamesh/certs: create CA certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("quotamesh/certs: parse new CA certificate: %w", err)
	}
	return &CA{Cert: cert, Key: key}, nil
}

// Pool returns a certificate pool holding only this CA, for tls.Config's
// RootCAs and ClientCAs.
func (ca *CA) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.Cert)
	for _, c := range ca.Trusted {
		p.AddCert(c)
	}
	return p
}

// signed reports whether cert is signed by Cert or one of Trusted.
func (ca *CA) signed(cert *x509.Certificate) error {
	err := cert.CheckSignatureFrom(ca.Cert)
	for _, c := range ca.Trusted {
		if err == nil {
			break
		}
		err = cert.CheckSignatureFrom(c)
	}
	return err
}

// Request describes a certificate to issue. IssueNode and IssueClient fill
// one for the common cases; Issue takes it whole, for tests and tools that
// need explicit validity dates.
type Request struct {
	// Identity is the node or client the certificate speaks for.
	Identity Identity
	// Hosts are DNS names and IP addresses for a node certificate's SANs.
	Hosts []string
	// Role is a client certificate's role (Identity.Role is ignored);
	// RoleNone issues a client certificate without one, as before roles
	// existed (tests of that case). Node certificates take none.
	Role Role
	// NotBefore and NotAfter bound the validity; NotAfter must be after
	// NotBefore. They may lie in the past (an expired certificate).
	NotBefore, NotAfter time.Time
}

// IssueNode issues a certificate for node id, valid for validity from now
// (and one minute before), with the given DNS names and IP addresses as SANs
// and both server and client authentication.
func (ca *CA) IssueNode(id string, hosts []string, validity time.Duration) (*Bundle, error) {
	if validity <= 0 {
		return nil, fmt.Errorf("%w: node %q validity %v is not positive", ErrInvalidValidity, truncate(id), validity)
	}
	now := time.Now()
	return ca.Issue(Request{Identity: NodeIdentity(id), Hosts: hosts, NotBefore: now.Add(-backdate), NotAfter: now.Add(validity)})
}

// IssueClient issues a client certificate for name with role (RoleAdmin or
// RoleDecide), valid for validity from now (and one minute before), with
// client authentication only.
func (ca *CA) IssueClient(name string, role Role, validity time.Duration) (*Bundle, error) {
	if validity <= 0 {
		return nil, fmt.Errorf("%w: client %q validity %v is not positive", ErrInvalidValidity, truncate(name), validity)
	}
	if role != RoleAdmin && role != RoleDecide {
		return nil, fmt.Errorf("%w: client %q: %v; issue admin or decide", ErrInvalidRole, truncate(name), role)
	}
	now := time.Now()
	return ca.Issue(Request{Identity: ClientIdentity(name), Role: role, NotBefore: now.Add(-backdate), NotAfter: now.Add(validity)})
}

// Issue issues the certificate req describes. Node certificates get server
// and client authentication, client certificates client authentication only
// and their role's URI; client certificates take no hosts, node
// certificates no role.
func (ca *CA) Issue(req Request) (*Bundle, error) {
	req.Identity.Role = req.Role
	if ca == nil || ca.Cert == nil {
		return nil, fmt.Errorf("quotamesh/certs: issue %s: no CA certificate", req.Identity)
	}
	if ca.Key == nil {
		return nil, fmt.Errorf("%w: cannot issue %s", ErrNoCAKey, req.Identity)
	}
	if err := req.Identity.Validate(); err != nil {
		return nil, err
	}
	if !req.NotAfter.After(req.NotBefore) {
		return nil, fmt.Errorf("%w: %s: NotAfter %v is not after NotBefore %v", ErrInvalidValidity, req.Identity, req.NotAfter, req.NotBefore)
	}
	tmpl := &x509.Certificate{
		Subject:               pkix.Name{CommonName: req.Identity.Name, Organization: []string{"QuotaMesh"}, OrganizationalUnit: []string{req.Identity.Kind.String()}},
		NotBefore:             req.NotBefore,
		NotAfter:              req.NotAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		URIs:                  []*url.URL{req.Identity.URI()},
	}
	switch req.Identity.Kind {
	case KindNode:
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}
		for _, h := range req.Hosts {
			if ip := net.ParseIP(h); ip != nil {
				tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
				continue
			}
			if err := checkDNSName(h); err != nil {
				return nil, err
			}
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	case KindClient:
		if len(req.Hosts) > 0 {
			return nil, fmt.Errorf("%w: client certificate %s takes no hosts, got %q", ErrInvalidHost, req.Identity, req.Hosts)
		}
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
		if u := req.Role.URI(); u != nil {
			tmpl.URIs = append(tmpl.URIs, u)
		}
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("quotamesh/certs: generate key for %s: %w", req.Identity, err)
	}
	if tmpl.SerialNumber, err = randomSerial(); err != nil {
		return nil, err
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &key.PublicKey, ca.Key)
	if err != nil {
		return nil, fmt.Errorf("quotamesh/certs: sign certificate for %s: %w", req.Identity, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("quotamesh/certs: parse new certificate for %s: %w", req.Identity, err)
	}
	return &Bundle{Cert: cert, Key: key}, nil
}

// checkDNSName accepts letters, digits, '-', '.', and a leading "*." for
// wildcards, in labels of 1 to 63 bytes, 253 bytes in all.
func checkDNSName(h string) error {
	name := strings.TrimPrefix(h, "*.")
	if name == "" || len(h) > 253 {
		return fmt.Errorf("%w %q: want an IP address or a DNS name", ErrInvalidHost, truncate(h))
	}
	for _, label := range strings.Split(name, ".") {
		if label == "" || len(label) > 63 {
			return fmt.Errorf("%w %q: empty or over-long DNS label", ErrInvalidHost, truncate(h))
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-') {
				return fmt.Errorf("%w %q: byte %q is not allowed in a DNS name", ErrInvalidHost, truncate(h), c)
			}
		}
	}
	return nil
}

// Identity returns the bundle's QuotaMesh identity.
func (b *Bundle) Identity() (Identity, error) { return IdentityOf(b.Cert) }

// TLSCertificate returns the bundle as a tls.Certificate (leaf only; the CA
// is what peers trust).
func (b *Bundle) TLSCertificate() tls.Certificate {
	return tls.Certificate{Certificate: [][]byte{b.Cert.Raw}, PrivateKey: b.Key, Leaf: b.Cert}
}

// CertPEM returns the certificate as a PEM block.
func (b *Bundle) CertPEM() []byte { return EncodeCertificatePEM(b.Cert) }

// KeyPEM returns the private key as a PKCS #8 PEM block.
func (b *Bundle) KeyPEM() ([]byte, error) { return EncodePrivateKeyPEM(b.Key) }

// CertPEM returns the CA certificate as a PEM block, followed by those of
// Trusted.
func (ca *CA) CertPEM() []byte {
	out := EncodeCertificatePEM(ca.Cert)
	for _, c := range ca.Trusted {
		out = append(out, EncodeCertificatePEM(c)...)
	}
	return out
}

// KeyPEM returns the CA's private key as a PKCS #8 PEM block.
func (ca *CA) KeyPEM() ([]byte, error) {
	if ca.Key == nil {
		return nil, ErrNoCAKey
	}
	return EncodePrivateKeyPEM(ca.Key)
}

// matches reports whether key is the private half of cert's public key.
func matches(cert *x509.Certificate, key *ecdsa.PrivateKey) bool {
	pub, ok := cert.PublicKey.(*ecdsa.PublicKey)
	return ok && key != nil && pub.Equal(&key.PublicKey)
}

func randomSerial() (*big.Int, error) {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("quotamesh/certs: serial number: %w", err)
	}
	return n.Add(n, big.NewInt(1)), nil // never zero
}

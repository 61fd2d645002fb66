package transport

import (
	"crypto/hmac"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quotamesh/quotamesh/internal/certs"
)

// Reasons a handshake is refused, the values of the reason label of
// quotamesh_transport_handshakes_refused_total.
const (
	refusedNoCertificate    = "no_certificate"
	refusedUnknownAuthority = "unknown_authority"
	refusedExpired          = "expired"
	refusedInvalid          = "invalid"
	refusedIdentity         = "identity"
	refusedWrongPeer        = "wrong_peer"
	refusedNotAllowed       = "not_allowed"
	refusedSelf             = "self"
	refusedALPN             = "alpn"
	// Refusals that are not about certificates: a source over its
	// handshake rate (before TLS), a client over MaxClientConns (after).
	refusedRateLimited    = "rate_limited"
	refusedTooManyClients = "too_many_clients"
)

var refusalReasons = []string{
	refusedNoCertificate, refusedUnknownAuthority, refusedExpired, refusedInvalid,
	refusedIdentity, refusedWrongPeer, refusedNotAllowed, refusedSelf, refusedALPN,
	refusedRateLimited, refusedTooManyClients,
}

// refusal is a handshake refusal with its metric reason.
type refusal struct {
	reason string
	err    error
}

func (r *refusal) Error() string { return r.err.Error() }
func (r *refusal) Unwrap() error { return r.err }

func refuse(reason string, err error) error { return &refusal{reason: reason, err: err} }

// verifyChain verifies the presented chain against roots for usage, now.
// It is the whole of certificate trust: the TLS configs below skip the
// standard verification (InsecureSkipVerify, RequireAnyClientCert) because
// QuotaMesh identities are URI SANs, not host names, and call this instead.
func verifyChain(chain []*x509.Certificate, roots *x509.CertPool, usage x509.ExtKeyUsage, now time.Time) (*x509.Certificate, error) {
	if len(chain) == 0 {
		return nil, refuse(refusedNoCertificate, fmt.Errorf("%w: no certificate presented", ErrCertificate))
	}
	intermediates := x509.NewCertPool()
	for _, c := range chain[1:] {
		intermediates.AddCert(c)
	}
	leaf := chain[0]
	_, err := leaf.Verify(x509.VerifyOptions{
		Roots:         roots,
		Intermediates: intermediates,
		KeyUsages:     []x509.ExtKeyUsage{usage},
		CurrentTime:   now,
	})
	if err == nil {
		return leaf, nil
	}
	reason := refusedInvalid
	var unknown x509.UnknownAuthorityError
	var invalid x509.CertificateInvalidError
	switch {
	case errors.As(err, &unknown):
		reason = refusedUnknownAuthority
	case errors.As(err, &invalid) && invalid.Reason == x509.Expired:
		reason = refusedExpired
	}
	return nil, refuse(reason, fmt.Errorf("%w: %s (subject %q): %w", ErrCertificate, usageName(usage), leaf.Subject.CommonName, err))
}

// material is the node's certificate and the cluster CA, replaced as a
// whole by SetCertificate; handshakes read the current one.
type material struct {
	cert tls.Certificate
	leaf *x509.Certificate
	cas  *x509.CertPool
}

// verifyPeer checks a peer's chain and identity: a CA-signed node
// certificate, not our own ID, the expected ID when we dialed a known peer,
// and allowed by AllowPeer when asked to consult it.
func (t *Transport) verifyPeer(mat *material, chain []*x509.Certificate, usage x509.ExtKeyUsage, expect string, consultAllow bool) (string, error) {
	leaf, err := verifyChain(chain, mat.cas, usage, time.Now())
	if err != nil {
		return "", err
	}
	id, err := certs.NodeID(leaf)
	if err != nil {
		return "", refuse(refusedIdentity, fmt.Errorf("%w: %w", ErrCertificate, err))
	}
	switch {
	case id == t.cfg.NodeID:
		return "", refuse(refusedSelf, fmt.Errorf("%w: peer presents this node's own ID %q", ErrCertificate, id))
	case expect != "" && id != expect:
		return "", refuse(refusedWrongPeer, fmt.Errorf("%w: certificate is for node %q, expected %q", ErrWrongPeer, id, expect))
	case consultAllow && t.cfg.AllowPeer != nil && !t.cfg.AllowPeer(id):
		return "", refuse(refusedNotAllowed, fmt.Errorf("%w: node %q", ErrNotAllowed, id))
	}
	return id, nil
}

// verifyClient checks a client's chain: a CA-signed client or node
// certificate, or none when the client policy allows anonymous clients.
func (t *Transport) verifyClient(mat *material, chain []*x509.Certificate) (Identity, error) {
	if len(chain) == 0 {
		if t.policy.Load().AllowAnonymous {
			return Identity{}, nil
		}
		return Identity{}, refuse(refusedNoCertificate, fmt.Errorf("%w: the client presented no certificate, and this node requires one", ErrCertificate))
	}
	return VerifyClientCertificate(chain, mat.cas)
}

// serverTLS is the listener's TLS config: for each handshake it picks the
// peer or the client rules by the ALPN the client offers (a client
// offering both is treated as a peer) and builds them from the current
// certificate, naming the remote address in what it logs.
func (t *Transport) serverTLS() *tls.Config {
	cfg := &tls.Config{
		MinVersion:             tls.VersionTLS13,
		NextProtos:             []string{ALPNPeer, ALPNClient, ALPNClient2},
		SessionTicketsDisabled: true,
	}
	cfg.GetConfigForClient = func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
		remote := ""
		if hello.Conn != nil && hello.Conn.RemoteAddr() != nil {
			remote = hello.Conn.RemoteAddr().String()
		}
		mat := t.mat.Load()
		c := &tls.Config{
			MinVersion:             tls.VersionTLS13,
			Certificates:           []tls.Certificate{mat.cert},
			SessionTicketsDisabled: true,
			// Verification is ours (verifyChain): with RequestClientCert
			// crypto/tls asks for a certificate and checks nothing.
			ClientAuth: tls.RequestClientCert,
		}
		switch {
		case slices.Contains(hello.SupportedProtos, ALPNPeer):
			c.NextProtos = []string{ALPNPeer}
			c.VerifyConnection = func(cs tls.ConnectionState) error {
				_, err := t.verifyPeer(mat, cs.PeerCertificates, x509.ExtKeyUsageClientAuth, "", true)
				return t.countRefusal("inbound", remote, err)
			}
		case slices.Contains(hello.SupportedProtos, ALPNClient), slices.Contains(hello.SupportedProtos, ALPNClient2):
			c.NextProtos = []string{ALPNClient, ALPNClient2} // the newest the client offers
			c.VerifyConnection = func(cs tls.ConnectionState) error {
				_, err := t.verifyClient(mat, cs.PeerCertificates)
				return t.countRefusal("inbound", remote, err)
			}
		default:
			return nil, t.countRefusal("inbound", remote, refuse(refusedALPN, fmt.Errorf("%w: no QuotaMesh ALPN offered (got %q)", ErrCertificate, hello.SupportedProtos)))
		}
		return c, nil
	}
	return cfg
}

// dialTLS is the TLS config for dialing a peer at addr; expect is the node
// ID that must answer ("" for any node AllowPeer accepts).
func (t *Transport) dialTLS(addr, expect string) *tls.Config {
	mat := t.mat.Load()
	return &tls.Config{
		MinVersion:         tls.VersionTLS13,
		Certificates:       []tls.Certificate{mat.cert},
		NextProtos:         []string{ALPNPeer},
		InsecureSkipVerify: true, // verified by VerifyConnection: identities are URI SANs
		VerifyConnection: func(cs tls.ConnectionState) error {
			_, err := t.verifyPeer(mat, cs.PeerCertificates, x509.ExtKeyUsageServerAuth, expect, expect == "")
			return t.countRefusal("outbound", addr, err)
		},
	}
}

// clientTLS is the TLS config of DialClient.
func clientTLS(cfg ClientConfig) *tls.Config {
	tc := &tls.Config{
		MinVersion:         tls.VersionTLS13,
		NextProtos:         []string{ALPNClient, ALPNClient2},
		InsecureSkipVerify: true, // verified by VerifyConnection: identities are URI SANs
		VerifyConnection: func(cs tls.ConnectionState) error {
			leaf, err := verifyChain(cs.PeerCertificates, cfg.CAs, x509.ExtKeyUsageServerAuth, time.Now())
			if err != nil {
				return err
			}
			id, err := certs.NodeID(leaf)
			if err != nil {
				return fmt.Errorf("%w: %w", ErrCertificate, err)
			}
			if cfg.NodeID != "" && id != cfg.NodeID {
				return fmt.Errorf("%w: certificate is for node %q, expected %q", ErrWrongPeer, id, cfg.NodeID)
			}
			if cfg.ServerName != "" {
				if err := leaf.VerifyHostname(cfg.ServerName); err != nil {
					return fmt.Errorf("%w: %w", ErrCertificate, err)
				}
			}
			return nil
		},
	}
	if cfg.Certificate != nil {
		tc.Certificates = []tls.Certificate{*cfg.Certificate}
	}
	return tc
}

// statelessResetKey derives the QUIC stateless reset key from the node's
// private key, so that it is the same across restarts of the node: a
// restarted node then answers packets of its previous incarnation's
// connections with a stateless reset, and peers drop those connections at
// once instead of after the idle timeout. Nil (resets off) if the key cannot
// be marshalled.
func statelessResetKey(cert tls.Certificate) *quic.StatelessResetKey {
	der, err := x509.MarshalPKCS8PrivateKey(cert.PrivateKey)
	if err != nil {
		return nil
	}
	mac := hmac.New(sha256.New, der)
	mac.Write([]byte("quotamesh/transport stateless reset key v1"))
	var key quic.StatelessResetKey
	copy(key[:], mac.Sum(nil))
	return &key
}

// refusalReason returns the metric reason of a refusal, or "".
func refusalReason(err error) string {
	var r *refusal
	if errors.As(err, &r) {
		return r.reason
	}
	return ""
}

// countRefusal counts and logs a refused handshake and returns err
// unchanged (nil passes through). A refusal is logged at warn level, at
// most once per second per direction and reason (with the number
// suppressed meanwhile), so that a misconfigured fleet or an attacker
// cannot flood the log; the metric counts every one.
func (t *Transport) countRefusal(direction, remote string, err error) error {
	if err == nil {
		return nil
	}
	reason := refusalReason(err)
	if reason == "" {
		reason = refusedInvalid
	}
	t.m.refused.WithLabelValues(direction, reason).Inc()
	if c := t.m.refusals[reason]; c != nil {
		c.Add(1)
	}
	if ok, suppressed := t.refusalLog.Allow(direction+"/"+reason, time.Now()); ok {
		t.log.Warn().Err(err).Str("direction", direction).Str("reason", reason).Str("remote", remote).
			Int("suppressed", suppressed).Msg("handshake refused")
	}
	return err
}

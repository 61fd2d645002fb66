package transport

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/quic-go/quic-go"
)

// maxSources bounds the per-source handshake buckets a Transport keeps;
// past it, buckets that have refilled (their sources quiet) are dropped, and
// if none has, a new source shares one overflow bucket, so an attacker
// spraying source addresses costs bounded memory and meets a limit too.
const maxSources = 8192

// handshakeLimiter is a token bucket per source IP address over connection
// attempts: the first gate a connection meets, before any TLS work.
type handshakeLimiter struct {
	mu       sync.Mutex
	rate     float64 // tokens per second
	burst    float64
	sources  map[netip.Addr]*bucket
	overflow bucket
}

type bucket struct {
	tokens float64
	at     time.Time
}

func newHandshakeLimiter(p ClientPolicy) *handshakeLimiter {
	l := &handshakeLimiter{sources: make(map[netip.Addr]*bucket)}
	l.set(p)
	return l
}

// set applies a new rate and burst; buckets keep their tokens (capped).
func (l *handshakeLimiter) set(p ClientPolicy) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.rate, l.burst = p.HandshakeRate, float64(p.HandshakeBurst)
}

// allow takes a token from addr's bucket at now; false if it has none.
func (l *handshakeLimiter) allow(addr net.Addr, now time.Time) bool {
	ip := sourceIP(addr)
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.sources[ip]
	if b == nil {
		if len(l.sources) >= maxSources {
			l.pruneLocked(now)
		}
		if len(l.sources) >= maxSources {
			b = &l.overflow
		} else {
			b = &bucket{tokens: l.burst, at: now}
			l.sources[ip] = b
		}
	}
	b.refill(now, l.rate, l.burst)
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// pruneLocked drops the buckets that are full again.
func (l *handshakeLimiter) pruneLocked(now time.Time) {
	for ip, b := range l.sources {
		if b.refill(now, l.rate, l.burst); b.tokens >= l.burst {
			delete(l.sources, ip)
		}
	}
}

// refill adds what rate gave since the last refill, up to burst. A clock
// that went backwards adds nothing.
func (b *bucket) refill(now time.Time, rate, burst float64) {
	if d := now.Sub(b.at); d > 0 {
		b.tokens = min(burst, b.tokens+d.Seconds()*rate)
		b.at = now
	} else if b.at.IsZero() {
		b.tokens, b.at = burst, now
	}
}

// sourceIP is the IP address of a UDP source, unmapped, or the zero Addr.
func sourceIP(a net.Addr) netip.Addr {
	if ua, ok := a.(*net.UDPAddr); ok {
		if ip, ok := netip.AddrFromSlice(ua.IP); ok {
			return ip.Unmap()
		}
	}
	if ap, err := netip.ParseAddrPort(a.String()); err == nil {
		return ap.Addr().Unmap()
	}
	return netip.Addr{}
}

// admitConn is quic-go's GetConfigForClient: every incoming connection
// attempt passes here before its handshake, and one from a source over its
// rate is refused (the dialer sees CONNECTION_REFUSED).
func (t *Transport) admitConn(info *quic.ClientInfo) (*quic.Config, error) {
	t.m.attempts.Inc()
	if !t.limiter.allow(info.RemoteAddr, time.Now()) {
		err := refuse(refusedRateLimited, fmt.Errorf("%w: %s is over %v handshakes per second", ErrConnectionRefused, info.RemoteAddr, t.policy.Load().HandshakeRate))
		return nil, t.countRefusal("inbound", info.RemoteAddr.String(), err)
	}
	return t.quicConf, nil
}

// admitClient takes a place among the client connections, or reports the
// bound reached.
func (t *Transport) admitClient() bool {
	limit := int64(t.policy.Load().MaxClientConns)
	for {
		n := t.clientConns.Load()
		if n >= limit {
			return false
		}
		if t.clientConns.CompareAndSwap(n, n+1) {
			t.m.clients.Inc()
			return true
		}
	}
}

func (t *Transport) releaseClient() {
	t.clientConns.Add(-1)
	t.m.clients.Dec()
}

// SetClientPolicy applies a new client policy: anonymous clients, the bound
// on client connections and the handshake rate. Connections already open
// stay open (an anonymous one too, and those above a lowered bound); the
// policy applies to new ones.
func (t *Transport) SetClientPolicy(p ClientPolicy) error {
	if err := p.Validate(); err != nil {
		return err
	}
	p = p.withDefaults()
	t.policy.Store(&p)
	t.limiter.set(p)
	return nil
}

// ClientPolicy returns the client policy in effect, defaults filled in.
func (t *Transport) ClientPolicy() ClientPolicy { return *t.policy.Load() }

// SetCertificate replaces the node's certificate and the cluster CA, for
// certificate rotation: it checks them as New does (the certificate must
// carry this node's ID, have server and client authentication, and chain to
// cas now) and changes nothing if they fail. Handshakes from then on use
// them, in both directions; connections already open stay open.
func (t *Transport) SetCertificate(cert tls.Certificate, cas *x509.CertPool) error {
	leaf, err := validateMaterial(t.cfg.NodeID, cert, cas)
	if err != nil {
		return err
	}
	t.mat.Store(&material{cert: cert, leaf: leaf, cas: cas})
	return nil
}

// Certificate returns the leaf of the certificate in use.
func (t *Transport) Certificate() *x509.Certificate { return t.mat.Load().leaf }

// CAs returns the cluster CA pool in use.
func (t *Transport) CAs() *x509.CertPool { return t.mat.Load().cas }

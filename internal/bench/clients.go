package bench

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"path/filepath"
	"time"

	"github.com/quotamesh/quotamesh/client"
	"github.com/quotamesh/quotamesh/internal/certs"
)

// dialTimeout bounds connecting to one node: longer than the SDK's default,
// for a loaded machine.
const dialTimeout = 10 * time.Second

// loadClientCerts reads the CA and the named client's certificate from dir.
func loadClientCerts(dir, name string) (tls.Certificate, *x509.CertPool, error) {
	set, err := certs.LoadDir(dir)
	if err != nil {
		return tls.Certificate{}, nil, fmt.Errorf("bench: --certs %s: %w", dir, err)
	}
	b, ok := set.Clients[name]
	if !ok {
		return tls.Certificate{}, nil, fmt.Errorf("bench: no client certificate %q in %s (want %s)", name, dir,
			filepath.Join(dir, certs.ClientsDir, name+".crt"))
	}
	return b.TLSCertificate(), set.CA.Pool(), nil
}

// dialNodes connects one SDK client to each address; names are the
// addresses, which say beside which node each client's requests were
// placed (a client reaches every member, so the node it reports being
// connected to says nothing of that). Clients made before an error are returned
// too, for the caller to close.
func dialNodes(ctx context.Context, addrs []string, r Plan, cert tls.Certificate, pool *x509.CertPool) ([]*client.Client, []string, error) {
	// Unless told, no worker waits for a place in flight: the workers
	// bound what is in flight.
	inFlight := r.MaxInFlight
	if inFlight == 0 {
		inFlight = max(client.DefaultMaxInFlight, 2*r.Workers)
	}
	opts := []client.Option{client.WithCA(pool), client.WithCertificate(cert), client.WithLeaseTTL(r.LeaseTTL),
		client.WithRequestTimeout(r.ReqTimeout), client.WithDialTimeout(dialTimeout),
		client.WithMaxInFlight(inFlight)}
	if r.Strict {
		opts = append(opts, client.WithStrict())
	}
	if r.Nearest {
		opts = append(opts, client.WithNearest())
	}
	var out []*client.Client
	var names []string
	for _, a := range addrs {
		c, err := client.Dial(ctx, []string{a}, opts...)
		if err != nil {
			return out, nil, fmt.Errorf("bench: connect to %s: %w", a, err)
		}
		out = append(out, c)
		names = append(names, a)
	}
	return out, names, nil
}

package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"github.com/quotamesh/quotamesh"
	"github.com/quotamesh/quotamesh/client"
	"github.com/quotamesh/quotamesh/internal/certs"
	"github.com/quotamesh/quotamesh/limits"
	"github.com/quotamesh/quotamesh/node"
)

// adminFlags are how the operator commands (limit, status) reach a node.
type adminFlags struct {
	addrs   []string
	certDir string
	client  string
	timeout time.Duration
	json    bool
}

const defaultAdminAddr = "127.0.0.1:7946"

func (a *adminFlags) bind(fs *pflag.FlagSet) {
	fs.StringSliceVar(&a.addrs, "addr", []string{defaultAdminAddr}, "node QUIC address(es) host:port; the nearest that answers is used")
	fs.StringVar(&a.certDir, "certs", "certs", "certificates directory in the layout of 'quotamesh certs init': ca.crt, and clients/<client>.crt and .key if present")
	fs.StringVar(&a.client, "client", node.DefaultAdminClient, "client certificate name under <certs>/clients (used if present; required when given)")
	fs.DurationVar(&a.timeout, "timeout", 10*time.Second, "bound on connecting and on each request (a limit change waits for Raft)")
	fs.BoolVar(&a.json, "json", false, "print JSON")
}

func (a *adminFlags) validate() error {
	if a.timeout <= 0 {
		return usagef("--timeout %v: want a positive duration", a.timeout)
	}
	if len(a.addrs) == 0 {
		return usagef("--addr: give at least one node address host:port")
	}
	for _, addr := range a.addrs {
		if !strings.Contains(addr, ":") {
			return usagef("--addr %q: want host:port (nodes listen on UDP %s by default)", addr, strings.TrimPrefix(node.DefaultListen, ":"))
		}
	}
	return nil
}

// options are the SDK options for the CA and the client certificate.
func (a *adminFlags) options(flags *pflag.FlagSet) ([]client.Option, error) {
	caPath := filepath.Join(a.certDir, certs.CACertFile)
	data, err := os.ReadFile(caPath)
	if err != nil {
		return nil, fmt.Errorf("reading the cluster CA (--certs %s, the layout of 'quotamesh certs init'): %w", a.certDir, err)
	}
	ca, err := certs.ParseCertificatePEM(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", caPath, err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	opts := []client.Option{
		client.WithCA(pool),
		client.WithDialTimeout(a.timeout),
		client.WithAdminTimeout(a.timeout),
		client.WithMaxKeys(0), // no decisions: no leases
		client.WithNearest(),  // the node named by --addr answers
	}
	base := filepath.Join(a.certDir, certs.ClientsDir, a.client)
	cert, err := tls.LoadX509KeyPair(base+".crt", base+".key")
	switch {
	case err == nil:
		opts = append(opts, client.WithCertificate(cert))
	case errors.Is(err, fs.ErrNotExist) && !flagChanged(flags, "client"):
		// Anonymous: enough unless the nodes require client certificates.
	default:
		return nil, fmt.Errorf("client certificate %s.crt (--client %s): %w", base, a.client, err)
	}
	return opts, nil
}

func flagChanged(fs *pflag.FlagSet, name string) bool {
	f := fs.Lookup(name)
	return f != nil && f.Changed
}

// dial connects to the nearest of the --addr nodes.
func (a *adminFlags) dial(ctx context.Context, fs *pflag.FlagSet, extra ...client.Option) (*client.Client, error) {
	if err := a.validate(); err != nil {
		return nil, err
	}
	opts, err := a.options(fs)
	if err != nil {
		return nil, err
	}
	dctx, cancel := context.WithTimeout(ctx, a.timeout)
	defer cancel()
	c, err := client.Dial(dctx, a.addrs, append(opts, extra...)...)
	if err != nil {
		return nil, fmt.Errorf("no node answered at %s within %v (is it running, and is --certs the cluster's?): %w",
			strings.Join(a.addrs, ","), a.timeout, err)
	}
	return c, nil
}

// explain adds what an operator can do about an admin error.
func explain(err error, what string) error {
	switch {
	case errors.Is(err, limits.ErrNoRule):
		// The chain repeats itself (SDK, node, table): say it once.
		return fmt.Errorf("%s: %w ('quotamesh limit list' shows them all)", what, limits.ErrNoRule)
	case errors.Is(err, client.ErrForbidden):
		return fmt.Errorf("%s: refused: this client is not an admin (use --client with a certificate the nodes' admin_clients name): %w", what, err)
	case errors.Is(err, quotamesh.ErrUnavailable):
		return fmt.Errorf("%s: the cluster did not answer in time (no Raft leader or quorum? see 'quotamesh status'): %w", what, err)
	case errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("%s: no answer within --timeout: %w", what, err)
	}
	return fmt.Errorf("%s: %w", what, err)
}

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

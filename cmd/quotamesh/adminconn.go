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
	"net"
	"os"
	"path/filepath"
	"strconv"
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
	fs.StringVar(&a.client, "client", node.DefaultAdminClient, "client certificate name under <certs>/clients; limit changes, join and leave need one with role admin, status and reads one with role decide")
	fs.DurationVar(&a.timeout, "timeout", 10*time.Second, "bound on connecting and on each request (a limit change waits for Raft)")
	fs.BoolVar(&a.json, "json", false, "print JSON")
}

func (a *adminFlags) validate(ctx context.Context) error {
	if a.timeout <= 0 {
		return usagef("--timeout %v: want a positive duration", a.timeout)
	}
	if len(a.addrs) == 0 {
		return usagef("--addr: give at least one node address host:port")
	}
	for _, addr := range a.addrs {
		if err := checkAddr(ctx, addr); err != nil {
			return usagef("--addr %q: %v", addr, err)
		}
	}
	return nil
}

// checkAddr checks a node address before anything is dialed: host:port, a
// port from 1 to 65535, and a host that resolves (within a second: a
// resolver that does not answer is left to the dial).
func checkAddr(ctx context.Context, addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("want host:port (nodes listen on UDP %s by default)", node.DefaultListen)
	}
	if p, err := strconv.Atoi(port); err != nil || p < 1 || p > 65535 {
		return fmt.Errorf("port %q: use a number from 1 to 65535", port)
	}
	if host == "" {
		return fmt.Errorf("no host: name the node, e.g. 127.0.0.1:%s", port)
	}
	if net.ParseIP(host) != nil {
		return nil
	}
	rctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	_, err = net.DefaultResolver.LookupHost(rctx, host)
	var dnsErr *net.DNSError
	if errors.As(err, &dnsErr) && (dnsErr.IsNotFound || !dnsErr.IsTemporary && !dnsErr.IsTimeout) {
		return fmt.Errorf("host %q does not resolve: %v", host, err)
	}
	return nil
}

// options are the SDK options for the CA and the client certificate. Every
// command needs a client certificate: nodes refuse clients without one
// (unless allow_anonymous_clients, which only lets them decide).
func (a *adminFlags) options() ([]client.Option, error) {
	caPath := filepath.Join(a.certDir, certs.CACertFile)
	data, err := os.ReadFile(caPath)
	if err != nil {
		return nil, usagef("reading the cluster CA (--certs %s, the layout of 'quotamesh certs init'): %v", a.certDir, err)
	}
	cas, err := certs.ParseCertificatesPEM(data)
	if err != nil {
		return nil, usagef("%s: %v", caPath, err)
	}
	pool := x509.NewCertPool()
	for _, ca := range cas {
		pool.AddCert(ca)
	}
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
	case errors.Is(err, fs.ErrNotExist):
		have, _ := filepath.Glob(filepath.Join(a.certDir, certs.ClientsDir, "*.crt"))
		for i, h := range have {
			have[i] = strings.TrimSuffix(filepath.Base(h), ".crt")
		}
		hint := "it has no client certificates"
		if len(have) > 0 {
			hint = "it has " + strings.Join(have, ", ") + " (choose one with --client)"
		}
		return nil, usagef("no client certificate %s.crt and .key in --certs %s (%s): nodes refuse clients without one; issue one with 'quotamesh certs issue --dir CA-DIR --client %s --role admin' (or --role decide for status only)",
			base, a.certDir, hint, a.client)
	case err != nil:
		return nil, usagef("client certificate %s.crt (--client %s): %v", base, a.client, err)
	}
	return append(opts, client.WithCertificate(cert)), nil
}

// dial connects to the nearest of the --addr nodes.
func (a *adminFlags) dial(ctx context.Context, extra ...client.Option) (*client.Client, error) {
	if err := a.validate(ctx); err != nil {
		return nil, err
	}
	opts, err := a.options()
	if err != nil {
		return nil, err
	}
	dctx, cancel := context.WithTimeout(ctx, a.timeout)
	defer cancel()
	c, err := client.Dial(dctx, a.addrs, append(opts, extra...)...)
	switch {
	case errors.Is(err, client.ErrCertificate):
		return nil, a.certErr(err)
	case err != nil:
		return nil, fmt.Errorf("no node answered at %s within %v (is it running?): %w", strings.Join(a.addrs, ","), a.timeout, err)
	}
	return c, nil
}

// certErr explains a refused certificate, at the dial or a request.
func (a *adminFlags) certErr(err error) error {
	return fmt.Errorf("certificate problem between this client (--certs %s, --client %s) and the node at %s: the node's certificate is not signed by --certs' CA, or the node refused the client's (signed by another CA, expired, or revoked by a CA rotation): %w",
		a.certDir, a.client, strings.Join(a.addrs, ","), err)
}

// explain adds what an operator can do about an admin error.
func (a *adminFlags) explain(err error, what string) error {
	switch {
	case errors.Is(err, limits.ErrNoRule):
		// The chain repeats itself (SDK, node, table): say it once.
		return fmt.Errorf("%s: %w ('quotamesh limit list' shows them all)", what, limits.ErrNoRule)
	case errors.Is(err, client.ErrForbidden):
		return fmt.Errorf("%s: refused (--client %s): %w", what, a.client, err)
	case errors.Is(err, client.ErrCertificate):
		return fmt.Errorf("%s: %w", what, a.certErr(err))
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

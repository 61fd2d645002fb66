package peer

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"github.com/quotamesh/quotamesh"
	"github.com/quotamesh/quotamesh/client"
	"github.com/quotamesh/quotamesh/internal/localcluster"
	"github.com/quotamesh/quotamesh/limits"
)

// ModulePath is the product's module: the repository BuildQuotaMesh builds
// from must declare it.
const ModulePath = "github.com/quotamesh/quotamesh"

// BuildQuotaMesh builds the product's binary (./cmd/quotamesh) in the
// repository at repo, with the repository's own go.mod (the peer
// benchmark's module pins other versions of shared dependencies), into
// dir, and returns its path.
func BuildQuotaMesh(ctx context.Context, repo, dir string) (string, error) {
	mod, err := os.ReadFile(filepath.Join(repo, "go.mod"))
	if err != nil {
		return "", fmt.Errorf("peer: the repository at %s: %w", repo, err)
	}
	if !bytes.HasPrefix(mod, []byte("module "+ModulePath+"\n")) {
		return "", fmt.Errorf("peer: %s is not the module %s", filepath.Join(repo, "go.mod"), ModulePath)
	}
	out := filepath.Join(dir, "quotamesh")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", out, "./cmd/quotamesh")
	cmd.Dir = repo
	cmd.Env = append(os.Environ(), "GOWORK=off")
	if msg, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("peer: go build ./cmd/quotamesh in %s: %w\n%s", repo, err, msg)
	}
	return out, nil
}

// QuotaMeshConfig describes a local QuotaMesh cluster.
type QuotaMeshConfig struct {
	// Binary is the quotamesh program; required.
	Binary string
	// Nodes is the number of node processes (default 3).
	Nodes int
	// FirstIP is the last byte of the first node's loopback address
	// (default 40).
	FirstIP int
	// Rules are set through Raft before StartQuotaMesh returns.
	Rules []limits.Rule
	// ServeFlags are extra `quotamesh serve` flags for every node.
	ServeFlags []string
	// ReadyTimeout bounds the start and the rules' agreement (default
	// 60 s).
	ReadyTimeout time.Duration
}

// QuotaMesh is a running local QuotaMesh cluster.
type QuotaMesh struct {
	lc   *localcluster.Cluster
	cert tls.Certificate
	pool *x509.CertPool
}

// StartQuotaMesh starts the node processes, waits until they are ready,
// sets cfg.Rules and waits until every node applied them. On error, what
// was started is stopped.
func StartQuotaMesh(ctx context.Context, cfg QuotaMeshConfig) (_ *QuotaMesh, err error) {
	if cfg.Nodes == 0 {
		cfg.Nodes = 3
	}
	if cfg.FirstIP == 0 {
		cfg.FirstIP = 40
	}
	if cfg.ReadyTimeout == 0 {
		cfg.ReadyTimeout = 60 * time.Second
	}
	lc, err := localcluster.Start(localcluster.Config{Binary: cfg.Binary, IPs: localcluster.Loopback(cfg.FirstIP, cfg.Nodes),
		TempPrefix: "peerbench-quotamesh-", ClusterID: "peerbench", Flags: cfg.ServeFlags, KillWithParent: true})
	if err != nil {
		return nil, fmt.Errorf("peer: quotamesh: %w", err)
	}
	q := &QuotaMesh{lc: lc}
	defer func() {
		if err != nil {
			_ = q.Stop()
		}
	}()
	ctx, cancel := context.WithTimeout(ctx, cfg.ReadyTimeout)
	defer cancel()
	if err := lc.WaitReady(ctx); err != nil {
		return nil, fmt.Errorf("peer: quotamesh: %w", err)
	}
	admin, ok := lc.Certs.Clients[localcluster.AdminClient]
	if !ok {
		return nil, errors.New("peer: quotamesh: the cluster has no admin client certificate")
	}
	q.cert, q.pool = admin.TLSCertificate(), lc.Certs.CA.Pool()
	if err := q.setRules(ctx, cfg.Rules); err != nil {
		return nil, err
	}
	return q, nil
}

// setRules sets every rule through the first node and waits until every
// node applied the last change.
func (q *QuotaMesh) setRules(ctx context.Context, rules []limits.Rule) error {
	clients, err := q.dial(ctx, false, 0)
	if err != nil {
		return err
	}
	defer func() {
		for _, c := range clients {
			_ = c.Close()
		}
	}()
	var index uint64
	for _, r := range rules {
		for {
			// Right after an election a node may not know the leader
			// yet: try again until ctx ends.
			if index, err = clients[0].SetLimit(ctx, r); err == nil {
				break
			}
			if errors.Is(err, client.ErrForbidden) || ctx.Err() != nil {
				return fmt.Errorf("peer: quotamesh: set limit %s: %w", r, err)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	for _, c := range clients {
		for {
			applied, err := appliedIndex(ctx, c)
			if err == nil && applied >= index {
				break
			}
			if ctx.Err() != nil {
				return fmt.Errorf("peer: quotamesh: node %s did not apply the rules (index %d, applied %d, %v): %w",
					c.Node(), index, applied, err, context.Cause(ctx))
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	return nil
}

// appliedIndex reads raft.applied_index from the status of c's node.
func appliedIndex(ctx context.Context, c *client.Client) (uint64, error) {
	raw, err := c.Status(ctx)
	if err != nil {
		return 0, err
	}
	var st struct {
		Raft struct {
			AppliedIndex uint64 `json:"applied_index"`
		} `json:"raft"`
	}
	if err := json.Unmarshal(raw, &st); err != nil {
		return 0, fmt.Errorf("status of %s: %w", c.Node(), err)
	}
	return st.Raft.AppliedIndex, nil
}

// dial connects one SDK client through each node (each then reaches every
// member, and sends each key to its home).
func (q *QuotaMesh) dial(ctx context.Context, strict bool, inFlight int) ([]*client.Client, error) {
	opts := []client.Option{client.WithCA(q.pool), client.WithCertificate(q.cert), client.WithDialTimeout(10 * time.Second),
		client.WithMaxInFlight(max(client.DefaultMaxInFlight, inFlight))}
	if strict {
		opts = append(opts, client.WithStrict())
	}
	var out []*client.Client
	for _, a := range q.lc.Addrs() {
		c, err := client.Dial(ctx, []string{a}, opts...)
		if err != nil {
			for _, o := range out {
				_ = o.Close()
			}
			return nil, fmt.Errorf("peer: quotamesh: connect to %s: %w", a, err)
		}
		out = append(out, c)
	}
	return out, nil
}

// Dial connects one SDK client through each node, in strict mode or with
// leases, allowing inFlight requests in flight each (at least the SDK's
// default); names are the nodes' IDs. The caller closes the limiters.
func (q *QuotaMesh) Dial(ctx context.Context, strict bool, inFlight int) ([]quotamesh.Limiter, []string, error) {
	cs, err := q.dial(ctx, strict, inFlight)
	if err != nil {
		return nil, nil, err
	}
	lims := make([]quotamesh.Limiter, len(cs))
	names := make([]string, len(cs))
	for i, c := range cs {
		lims[i], names[i] = c, c.Node()
	}
	return lims, names, nil
}

// Pids are the node processes' IDs.
func (q *QuotaMesh) Pids() []int { return q.lc.Pids() }

// Died returns the death of a node process, or nil.
func (q *QuotaMesh) Died() error { return q.lc.Died() }

// Stop stops the nodes and removes their directory.
func (q *QuotaMesh) Stop() error { return q.lc.Stop(stopTimeout) }

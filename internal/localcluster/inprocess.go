package localcluster

import (
	"context"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/quotamesh/quotamesh/limits"
	"github.com/quotamesh/quotamesh/node"
)

// InProcess is a cluster of in-process nodes on 127.0.0.1, each on a UDP
// socket the system chose, with a development CA: what `quotamesh demo`
// runs (its load calls each node's embedded Allow, which a process could
// not offer), and what the command tests run limit and status against.
type InProcess struct {
	Dir     string // certs/ and one data directory per node
	CertDir string // the layout of `certs init`, with an AdminClient
	Nodes   []*node.Node
	conns   []net.PacketConn
}

// StartInProcess makes a CA and certificates in dir/certs, binds n sockets
// and bootstraps n nodes (n1..nN) with Raft data in dir/<id>. On error,
// whatever was started is closed again.
func StartInProcess(ctx context.Context, dir string, n int, log zerolog.Logger) (_ *InProcess, err error) {
	c := &InProcess{Dir: dir, CertDir: filepath.Join(dir, "certs")}
	defer func() {
		if err != nil {
			c.Close()
		}
	}()
	var ids []string
	var bootstrap []node.Peer
	for i := 1; i <= n; i++ {
		id := fmt.Sprintf("n%d", i)
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("binding a UDP socket for %s: %w", id, err)
		}
		c.conns = append(c.conns, pc)
		ids = append(ids, id)
		bootstrap = append(bootstrap, node.Peer{ID: id, Addr: pc.LocalAddr().String()})
	}
	set, err := WriteDevCerts(c.CertDir, ids, []string{"127.0.0.1", "localhost"})
	if err != nil {
		return nil, err
	}
	for i, p := range bootstrap {
		cert := set.Nodes[p.ID].TLSCertificate()
		cfg := node.DefaultConfig()
		cfg.ID = p.ID
		cfg.PacketConn = c.conns[i]
		cfg.AdminListen = "127.0.0.1:0"
		cfg.DataDir = filepath.Join(dir, p.ID)
		cfg.Bootstrap = bootstrap
		cfg.TLS.Certificate, cfg.TLS.CAs = &cert, set.CA.Pool()
		cfg.Logger = log
		nd, err := node.Start(ctx, cfg)
		if err != nil {
			return nil, fmt.Errorf("starting %s: %w", p.ID, err)
		}
		c.Nodes = append(c.Nodes, nd)
	}
	return c, nil
}

// Addrs are the nodes' QUIC addresses, in order.
func (c *InProcess) Addrs() []string {
	out := make([]string, len(c.Nodes))
	for i, n := range c.Nodes {
		out[i] = n.Addr()
	}
	return out
}

// WaitReady waits until every node is ready (a leader, the table applied,
// serving) or ctx ends.
func (c *InProcess) WaitReady(ctx context.Context) error {
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for {
		var why []string
		for _, n := range c.Nodes {
			if st := n.Status(0); !st.Ready {
				why = append(why, fmt.Sprintf("%s: %v", n.ID(), st.NotReady))
			}
		}
		if len(why) == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for the cluster to be ready (%v): %w", why, ctx.Err())
		case <-t.C:
		}
	}
}

// SetLimit sets r through Raft on the first node and waits until every node
// applied it.
func (c *InProcess) SetLimit(ctx context.Context, r limits.Rule) (uint64, error) {
	idx, err := c.Nodes[0].SetLimit(ctx, r)
	if err != nil {
		return 0, fmt.Errorf("setting %s: %w", r, err)
	}
	return idx, c.WaitApplied(ctx, r)
}

// WaitApplied waits until every node's table holds r.
func (c *InProcess) WaitApplied(ctx context.Context, r limits.Rule) error {
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	for {
		all := true
		for _, n := range c.Nodes {
			if got, ok := n.Table().Get(r.Pattern); !ok || got != r {
				all = false
			}
		}
		if all {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for every node to apply %s: %w", r, ctx.Err())
		case <-t.C:
		}
	}
}

// Close stops every node at once, then closes their sockets (the nodes do
// not own them). It is safe on a partly started cluster.
func (c *InProcess) Close() error {
	errs := make([]error, len(c.Nodes))
	var wg sync.WaitGroup
	for i, n := range c.Nodes {
		wg.Go(func() {
			if err := n.Close(); err != nil {
				errs[i] = fmt.Errorf("closing %s: %w", n.ID(), err)
			}
		})
	}
	wg.Wait()
	for _, pc := range c.conns {
		_ = pc.Close()
	}
	c.Nodes, c.conns = nil, nil
	return errors.Join(errs...)
}

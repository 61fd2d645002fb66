package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/quotamesh/quotamesh/internal/certs"
	"github.com/quotamesh/quotamesh/limits"
	"github.com/quotamesh/quotamesh/node"
)

// inprocCluster is a cluster of in-process nodes on 127.0.0.1, each on a
// UDP socket the OS chose, with a development CA: what `quotamesh demo`
// runs, and what the command tests run limit and status against.
type inprocCluster struct {
	dir     string // certs/ and one data directory per node
	certDir string // the layout of `certs init`, with an admin client
	nodes   []*node.Node
	conns   []net.PacketConn
}

// startInprocCluster makes a CA and certificates in dir/certs, binds n
// sockets and bootstraps n nodes (n1..nN) with Raft data in dir/<id>. On
// error, whatever was started is closed again.
func startInprocCluster(ctx context.Context, dir string, n int, log zerolog.Logger) (_ *inprocCluster, err error) {
	lc := &inprocCluster{dir: dir, certDir: filepath.Join(dir, "certs")}
	defer func() {
		if err != nil {
			lc.close()
		}
	}()
	ca, err := certs.NewCA("QuotaMesh local cluster CA", 24*time.Hour)
	if err != nil {
		return nil, err
	}
	set := certs.NewSet(ca)
	var bootstrap []node.Peer
	for i := 1; i <= n; i++ {
		id := fmt.Sprintf("n%d", i)
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("binding a UDP socket for %s: %w", id, err)
		}
		lc.conns = append(lc.conns, pc)
		if set.Nodes[id], err = ca.IssueNode(id, []string{"127.0.0.1", "localhost"}, 24*time.Hour); err != nil {
			return nil, fmt.Errorf("node %s: %w", id, err)
		}
		bootstrap = append(bootstrap, node.Peer{ID: id, Addr: pc.LocalAddr().String()})
	}
	if set.Clients[node.DefaultAdminClient], err = ca.IssueClient(node.DefaultAdminClient, 24*time.Hour); err != nil {
		return nil, err
	}
	if err := set.WriteDir(lc.certDir); err != nil {
		return nil, err
	}
	for i, p := range bootstrap {
		cert := set.Nodes[p.ID].TLSCertificate()
		cfg := node.DefaultConfig()
		cfg.ID = p.ID
		cfg.PacketConn = lc.conns[i]
		cfg.AdminListen = "127.0.0.1:0"
		cfg.DataDir = filepath.Join(dir, p.ID)
		cfg.Bootstrap = bootstrap
		cfg.TLS.Certificate, cfg.TLS.CAs = &cert, ca.Pool()
		cfg.Logger = log
		nd, err := node.Start(ctx, cfg)
		if err != nil {
			return nil, fmt.Errorf("starting %s: %w", p.ID, err)
		}
		lc.nodes = append(lc.nodes, nd)
	}
	return lc, nil
}

// addrs are the nodes' QUIC addresses, in order.
func (lc *inprocCluster) addrs() []string {
	out := make([]string, len(lc.nodes))
	for i, n := range lc.nodes {
		out[i] = n.Addr()
	}
	return out
}

// waitReady waits until every node is ready (a leader, the table applied,
// serving) or ctx ends.
func (lc *inprocCluster) waitReady(ctx context.Context) error {
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for {
		var why []string
		for _, n := range lc.nodes {
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

// setLimit sets r through Raft on the first node and waits until every node
// applied it.
func (lc *inprocCluster) setLimit(ctx context.Context, r limits.Rule) (uint64, error) {
	idx, err := lc.nodes[0].SetLimit(ctx, r)
	if err != nil {
		return 0, fmt.Errorf("setting %s: %w", r, err)
	}
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	for {
		all := true
		for _, n := range lc.nodes {
			if got, ok := n.Table().Get(r.Pattern); !ok || got != r {
				all = false
			}
		}
		if all {
			return idx, nil
		}
		select {
		case <-ctx.Done():
			return idx, fmt.Errorf("waiting for every node to apply %s: %w", r, ctx.Err())
		case <-t.C:
		}
	}
}

// close stops every node at once, then closes their sockets (the nodes do
// not own them). It is safe on a partly started cluster.
func (lc *inprocCluster) close() error {
	errs := make([]error, len(lc.nodes))
	var wg sync.WaitGroup
	for i, n := range lc.nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := n.Close(); err != nil {
				errs[i] = fmt.Errorf("closing %s: %w", n.ID(), err)
			}
		}()
	}
	wg.Wait()
	for _, pc := range lc.conns {
		_ = pc.Close()
	}
	lc.nodes, lc.conns = nil, nil
	return errors.Join(errs...)
}

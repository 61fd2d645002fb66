package consensus

import (
	"context"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"go.uber.org/goleak"

	"github.com/quotamesh/quotamesh/internal/consensus/consensustest"
	"github.com/quotamesh/quotamesh/internal/testlog"
	"github.com/quotamesh/quotamesh/limits"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// fastTimings are LAN timings shortened so that elections in tests take a
// few hundred milliseconds, yet long enough not to flap on a loaded 2-core
// machine under the race detector.
func fastTimings(c *Config) {
	c.HeartbeatTimeout = 300 * time.Millisecond
	c.ElectionTimeout = 300 * time.Millisecond
	c.LeaderLeaseTimeout = 150 * time.Millisecond
	c.CommitTimeout = 20 * time.Millisecond
	c.RPCTimeout = time.Second
	c.ReconcileInterval = 100 * time.Millisecond
}

// testLogger routes the logs to t.Log.
func testLogger(t testing.TB) zerolog.Logger { return testlog.New(t) }

// changeLog records when OnChange reported each index on one node.
type changeLog struct {
	mu   sync.Mutex
	seen map[uint64]time.Time
	last *limits.Table
}

func (c *changeLog) record(t *limits.Table, index uint64) {
	now := time.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.seen[index]; !ok {
		c.seen[index] = now
	}
	c.last = t
}

func (c *changeLog) at(index uint64) (time.Time, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	t, ok := c.seen[index]
	return t, ok
}

func (c *changeLog) latest() *limits.Table {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.last
}

type testNode struct {
	id, addr, dir string
	store         *Store
	changes       *changeLog
}

// cluster runs Stores on one in-memory network.
type cluster struct {
	t      testing.TB
	net    *consensustest.Network
	log    zerolog.Logger
	base   Config
	nodes  []*testNode
	byID   map[string]*testNode
	voters []Server
}

// newCluster starts n nodes that bootstrap together as voters. opts adjust
// every node's Config.
func newCluster(t testing.TB, n int, opts ...func(*Config)) *cluster {
	t.Helper()
	c := &cluster{t: t, net: consensustest.NewNetwork(), log: testLogger(t), byID: make(map[string]*testNode)}
	fastTimings(&c.base)
	for _, o := range opts {
		o(&c.base)
	}
	for i := 1; i <= n; i++ {
		id := fmt.Sprintf("n%d", i)
		c.voters = append(c.voters, Server{ID: id, Address: id + ":7000"})
	}
	for _, v := range c.voters {
		c.start(c.node(v.ID), c.voters)
	}
	t.Cleanup(c.closeAll)
	return c
}

// node returns the node with this ID, creating it (not started) if new.
func (c *cluster) node(id string) *testNode {
	if n, ok := c.byID[id]; ok {
		return n
	}
	n := &testNode{id: id, addr: id + ":7000", dir: filepath.Join(c.t.TempDir(), id)}
	c.nodes = append(c.nodes, n)
	c.byID[id] = n
	return n
}

func (c *cluster) config(n *testNode, bootstrap []Server) Config {
	layer, err := c.net.Listen(n.addr)
	if err != nil {
		c.t.Fatalf("listen %s: %v", n.addr, err)
	}
	cfg := c.base
	cfg.NodeID, cfg.Address, cfg.DataDir = n.id, n.addr, n.dir
	cfg.Bootstrap = bootstrap
	cfg.Layer = layer
	cfg.Forwarder = c.net.Forwarder(n.addr)
	cfg.Logger = c.log
	n.changes = &changeLog{seen: make(map[uint64]time.Time)}
	cfg.OnChange = n.changes.record
	return cfg
}

// start opens n's Store (from its DataDir if it has one).
func (c *cluster) start(n *testNode, bootstrap []Server) {
	c.t.Helper()
	s, err := Open(c.config(n, bootstrap))
	if err != nil {
		c.t.Fatalf("open %s: %v", n.id, err)
	}
	n.store = s
	c.net.Handle(n.addr, s.HandleForward)
}

// stop closes n's Store gracefully.
func (c *cluster) stop(n *testNode) {
	c.t.Helper()
	c.net.Handle(n.addr, nil)
	if err := n.store.Close(); err != nil {
		c.t.Errorf("close %s: %v", n.id, err)
	}
	n.store = nil
}

// kill stops n the way kill -9 does, as far as the others can tell: it is cut
// off at once, so nothing it does afterwards reaches them, then it stops
// without handing leadership over. (It stops only after its Raft operations
// in flight have failed, as in-process goroutines must end; the cluster
// cannot tell the difference.)
func (c *cluster) kill(n *testNode) {
	c.t.Helper()
	c.net.Disconnect(n.addr)
	c.net.Handle(n.addr, nil)
	if err := n.store.shutdown(false); err != nil {
		c.t.Errorf("kill %s: %v", n.id, err)
	}
	n.store = nil
	c.net.Reconnect(n.addr)
}

func (c *cluster) closeAll() {
	var wg sync.WaitGroup
	for _, n := range c.nodes {
		if n.store != nil {
			wg.Add(1)
			go func(n *testNode) {
				defer wg.Done()
				c.stop(n)
			}(n)
		}
	}
	wg.Wait()
}

func (c *cluster) running() []*testNode {
	var out []*testNode
	for _, n := range c.nodes {
		if n.store != nil {
			out = append(out, n)
		}
	}
	return out
}

// leader waits until exactly one running node leads and returns it.
func (c *cluster) leader() *testNode {
	c.t.Helper()
	var lead *testNode
	c.eventually(5*time.Second, "a single leader", func() bool {
		lead = nil
		for _, n := range c.running() {
			if n.store.State() == "leader" {
				if lead != nil {
					return false
				}
				lead = n
			}
		}
		return lead != nil
	})
	return lead
}

// follower returns a running node that does not lead.
func (c *cluster) follower() *testNode {
	c.t.Helper()
	lead := c.leader()
	for _, n := range c.running() {
		if n != lead {
			return n
		}
	}
	c.t.Fatal("no follower")
	return nil
}

func (c *cluster) eventually(timeout time.Duration, what string, cond func() bool) {
	c.t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			c.t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// waitTables waits until every running node's table equals want.
func (c *cluster) waitTables(want *limits.Table) {
	c.t.Helper()
	c.eventually(5*time.Second, "every table to be "+fmt.Sprint(want.Rules()), func() bool {
		for _, n := range c.running() {
			if !n.store.Table().Equal(want) {
				return false
			}
		}
		return true
	})
}

func ctxT(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func rule(pattern, rate string) limits.Rule {
	return limits.Rule{Pattern: pattern, Rate: limits.MustParseRate(rate)}
}

func table(t *testing.T, rules ...limits.Rule) *limits.Table {
	t.Helper()
	tb, err := limits.NewTable(rules...)
	if err != nil {
		t.Fatal(err)
	}
	return tb
}

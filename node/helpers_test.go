package node

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/rs/zerolog"
	"go.uber.org/goleak"

	"github.com/quotamesh/quotamesh/internal/certs"
	"github.com/quotamesh/quotamesh/internal/faultnet"
	"github.com/quotamesh/quotamesh/internal/nodehook"
	"github.com/quotamesh/quotamesh/internal/promtest"
	"github.com/quotamesh/quotamesh/internal/testlog"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// testLogger routes the logs to t.Log.
func testLogger(t testing.TB) zerolog.Logger { return testlog.New(t) }

// cluster is a set of nodes on 127.0.0.1, each on its own faultnet socket,
// with certificates from one test CA.
type cluster struct {
	t     testing.TB
	ca    *certs.CA
	log   zerolog.Logger
	nodes map[string]*tnode
	order []string
	opts  []func(*Config)
	hooks nodehook.Options // what every node is started with
}

// tnode is one node of a cluster, running or not.
type tnode struct {
	id   string
	dir  string
	addr string // 127.0.0.1:port, kept across restarts
	pc   *faultnet.Conn
	cert tls.Certificate
	*Node
}

func newTestCA(t testing.TB) *certs.CA {
	t.Helper()
	ca, err := certs.NewCA("node test cluster", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

// newCluster makes n nodes (not started) named n1..nN, with sockets bound,
// so that the Bootstrap list can name their addresses.
func newCluster(t testing.TB, n int, opts ...func(*Config)) *cluster {
	t.Helper()
	c := &cluster{t: t, ca: newTestCA(t), log: testLogger(t), nodes: map[string]*tnode{}, opts: opts}
	// Raft's LAN defaults (300 ms heartbeats) lose their leader for seconds
	// when two busy cores run these tests under the race detector, beside
	// other packages' tests; these tests are about what a cluster does, not
	// how fast it fails over (consensus' own tests and the fault suite time
	// that), so they give Raft more time.
	c.hooks.RaftTimeouts = nodehook.RaftTimeouts{HeartbeatTimeout: time.Second, ElectionTimeout: time.Second, LeaderLeaseTimeout: 500 * time.Millisecond}
	for i := 1; i <= n; i++ {
		c.add(fmt.Sprintf("n%d", i))
	}
	t.Cleanup(c.closeAll)
	return c
}

// add makes a node (not started) with a bound socket.
func (c *cluster) add(id string) *tnode {
	c.t.Helper()
	pc, err := faultnet.Listen("127.0.0.1:0", uint64(len(c.nodes)+1))
	if err != nil {
		c.t.Fatal(err)
	}
	b, err := c.ca.IssueNode(id, []string{"127.0.0.1"}, time.Hour)
	if err != nil {
		c.t.Fatal(err)
	}
	tn := &tnode{id: id, dir: filepath.Join(c.t.TempDir(), id), addr: pc.LocalAddr().String(), pc: pc, cert: b.TLSCertificate()}
	c.nodes[id] = tn
	c.order = append(c.order, id)
	return tn
}

// bootstrap is every node's {ID, Addr}, in order.
func (c *cluster) bootstrap() []Peer {
	var out []Peer
	for _, id := range c.order {
		out = append(out, Peer{ID: id, Addr: c.nodes[id].addr})
	}
	return out
}

// config is a node's Config: its socket, certificates, DataDir, an admin
// listener on a free port, test logs, and the cluster's options.
func (c *cluster) config(tn *tnode) Config {
	cert := tn.cert
	cfg := Config{
		ID:          tn.id,
		DataDir:     tn.dir,
		PacketConn:  tn.pc,
		AdminListen: "127.0.0.1:0",
		TLS:         TLSConfig{Certificate: &cert, CAs: c.ca.Pool()},
		Logger:      c.log,
	}
	for _, o := range c.opts {
		o(&cfg)
	}
	return cfg
}

// start starts a node with cfg adjusted by opts.
func (c *cluster) start(tn *tnode, opts ...func(*Config)) {
	c.t.Helper()
	cfg := c.config(tn)
	for _, o := range opts {
		o(&cfg)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	n, err := Start(nodehook.With(ctx, c.hooks), cfg)
	if err != nil {
		c.t.Fatalf("start %s: %v", tn.id, err)
	}
	tn.Node = n
}

// startAll bootstraps every node together.
func (c *cluster) startAll() {
	c.t.Helper()
	bs := c.bootstrap()
	for _, id := range c.order {
		c.start(c.nodes[id], func(cfg *Config) { cfg.Bootstrap = bs })
	}
}

// stop closes a node (without leaving) and rebinds its socket on the same
// address, as a restarted process would.
func (c *cluster) stop(tn *tnode) {
	c.t.Helper()
	if err := tn.Close(); err != nil {
		c.t.Errorf("close %s: %v", tn.id, err)
	}
	tn.Node = nil
	_ = tn.pc.Close()
	var err error
	for range 50 { // the port was just released; retry briefly
		if tn.pc, err = faultnet.Listen(tn.addr, 99); err == nil {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	c.t.Fatalf("rebinding %s on %s: %v", tn.id, tn.addr, err)
}

func (c *cluster) closeAll() {
	var wg sync.WaitGroup
	for _, tn := range c.nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if tn.Node != nil {
				if err := tn.Close(); err != nil {
					c.t.Errorf("close %s: %v", tn.id, err)
				}
			}
			_ = tn.pc.Close()
		}()
	}
	wg.Wait()
}

// running returns the started nodes, in order.
func (c *cluster) running() []*tnode {
	var out []*tnode
	for _, id := range c.order {
		if tn := c.nodes[id]; tn.Node != nil {
			out = append(out, tn)
		}
	}
	return out
}

// waitReady waits until every running node is ready.
func (c *cluster) waitReady(bound time.Duration) {
	c.t.Helper()
	eventually(c.t, bound, "every node ready", func() string {
		for _, tn := range c.running() {
			if why := tn.notReady(); len(why) > 0 {
				return tn.id + ": " + strings.Join(why, "; ")
			}
		}
		return ""
	})
}

// eventually polls cond until it returns "" or the bound passes; cond
// returns what is still missing.
func eventually(t testing.TB, bound time.Duration, what string, cond func() string) {
	t.Helper()
	deadline := time.Now().Add(bound)
	for {
		missing := cond()
		if missing == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("not within %v: %s (%s)", bound, what, missing)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func ctxT(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// httpGet returns the status code and body of an admin URL.
func httpGet(t testing.TB, url string) (int, string) {
	t.Helper()
	return httpDo(t, http.MethodGet, url)
}

func httpDo(t testing.TB, method, url string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// metricValue sums the samples of a metric whose labels include want.
func metricValue(t testing.TB, g prometheus.Gatherer, name string, want map[string]string) float64 {
	t.Helper()
	return promtest.Sum(metricSeries(t, g, name, want))
}

// hasMetric reports whether a metric has a series whose labels include
// want.
func hasMetric(t testing.TB, g prometheus.Gatherer, name string, want map[string]string) bool {
	t.Helper()
	return len(metricSeries(t, g, name, want)) > 0
}

func metricSeries(t testing.TB, g prometheus.Gatherer, name string, want map[string]string) []*dto.Metric {
	t.Helper()
	ms, err := promtest.Series(g, name, want)
	if err != nil {
		t.Fatal(err)
	}
	return ms
}

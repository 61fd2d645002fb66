//go:build fault

package cluster_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/quotamesh/quotamesh/client"
	"github.com/quotamesh/quotamesh/internal/localcluster"
	"github.com/quotamesh/quotamesh/limits"
)

// Ports every node uses on its own address.
const (
	nodePort  = 7000
	adminPort = 8000
)

// clusterSpec describes a run's cluster.
type clusterSpec struct {
	Nodes int
	// Extra are extra serve flags per node index (e.g. the broken node).
	Extra map[int][]string
}

// Cluster is a running set of quotamesh processes on a Backend: the
// processes are localcluster's, placed and faulted by the backend.
type Cluster struct {
	t       *testing.T
	be      Backend
	lc      *localcluster.Cluster
	nodes   []*localcluster.Node
	hist    *History
	http    *http.Client
	tlsCert tls.Certificate

	crashMu sync.Mutex
	crashes []string // unexpected exits

	// keys are the loads' keys (the reset nemeses reset them); resets the
	// resets the nemeses took since the run loop last took them
	// (reset_test.go). Both are used from the run's goroutine only.
	keys   []string
	resets []*resetRecord
}

// newCluster sets up the hosts, writes certificates and starts every node
// with its data under the suite's work directory and its log in the
// report's logs/; t.Cleanup stops them and removes what the backend added,
// whatever the outcome.
func newCluster(t *testing.T, be Backend, spec clusterSpec, dir string, hist *History) *Cluster {
	t.Helper()
	c := &Cluster{t: t, be: be, hist: hist, http: &http.Client{Timeout: 3 * time.Second}}
	t.Cleanup(c.close)
	ips, err := be.Setup(spec.Nodes)
	if err != nil {
		t.Fatalf("backend %s: setup: %v", be.Name(), err)
	}
	cfg := localcluster.Config{
		Binary: suite.bin, IPs: ips, Port: nodePort, AdminPort: adminPort,
		Dir: filepath.Join(suite.workDir, filepath.Base(dir)), LogDir: filepath.Join(dir, "logs"), Keep: *flagKeep,
		ClusterID: "fault", Flags: []string{"--policy", "conservative", "--fault-control", "--log-level", "info"},
		NodeFlags: spec.Extra, Command: be.Command, OnExit: c.exited,
	}
	if s, ok := be.(signaller); ok {
		cfg.Signal = s.Signal
	}
	if c.lc, err = localcluster.Start(cfg); err != nil {
		t.Fatalf("start the nodes: %v", err)
	}
	c.nodes = c.lc.Nodes
	c.tlsCert = c.lc.Certs.Clients[localcluster.AdminClient].TLSCertificate()
	return c
}

// exited records a node's exit that no nemesis caused.
func (c *Cluster) exited(n *localcluster.Node, err error, expected bool) {
	if expected {
		return
	}
	msg := fmt.Sprintf("%s exited unexpectedly: %v", n.ID, err)
	c.crashMu.Lock()
	c.crashes = append(c.crashes, msg)
	c.crashMu.Unlock()
	c.hist.event("crash", n.ID, msg)
}

// close kills every process (SIGCONT first for paused ones), removes the
// data unless -keep, and removes what the backend added.
func (c *Cluster) close() {
	if c.lc != nil {
		if err := c.lc.Kill(); err != nil {
			c.t.Logf("stop the nodes: %v", err)
		}
	}
	if err := c.be.Close(); err != nil {
		c.t.Errorf("backend %s: clean up: %v", c.be.Name(), err)
	}
}

// crashed returns the unexpected exits so far.
func (c *Cluster) crashed() []string {
	c.crashMu.Lock()
	defer c.crashMu.Unlock()
	return append([]string(nil), c.crashes...)
}

// adminDo calls node i's admin HTTP.
func (c *Cluster) adminDo(i int, method, path string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, "http://"+c.nodes[i].Admin+path, nil)
	if err != nil {
		return nil, err
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%s %s on %s: %w", method, path, c.nodes[i].ID, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return nil, fmt.Errorf("%s %s on %s: %w", method, path, c.nodes[i].ID, err)
	}
	if resp.StatusCode != http.StatusOK {
		return body, fmt.Errorf("%s %s on %s: %s: %s", method, path, c.nodes[i].ID, resp.Status, strings.TrimSpace(string(body)))
	}
	return body, nil
}

// faultNet posts a /debug/fault/net query to node i.
func (c *Cluster) faultNet(i int, query string) error {
	_, err := c.adminDo(i, http.MethodPost, "/debug/fault/net?"+query)
	return err
}

// clockOffset sets node i's test clock offset.
func (c *Cluster) clockOffset(i int, d time.Duration) error {
	_, err := c.adminDo(i, http.MethodPost, "/debug/fault/clock?offset="+d.String())
	return err
}

// nodeStatus is the part of node.Status the checkers read.
type nodeStatus struct {
	Node    string `json:"node"`
	Ready   bool   `json:"ready"`
	Serving bool   `json:"serving"`
	Fenced  bool   `json:"fenced"`
	Raft    struct {
		State  string `json:"state"`
		Leader string `json:"leader"`
		Rules  int    `json:"rules"`
	} `json:"raft"`
	Members []struct {
		ID        string `json:"id"`
		Reachable bool   `json:"reachable"`
		Reclaimed bool   `json:"reclaimed"`
	} `json:"members"`
	TopKeys []struct {
		Key      string           `json:"key"`
		Limit    string           `json:"limit"`
		Admitted int64            `json:"admitted"`
		Quota    int64            `json:"quota"`
		PerNode  map[string]int64 `json:"per_node"`
	} `json:"top_keys"`
}

func (c *Cluster) status(i int) (nodeStatus, error) {
	var st nodeStatus
	body, err := c.adminDo(i, http.MethodGet, "/status?top=20")
	if err != nil {
		return st, err
	}
	if err := json.Unmarshal(body, &st); err != nil {
		return st, fmt.Errorf("status of %s: %w", c.nodes[i].ID, err)
	}
	return st, nil
}

// runtimeFigures are the Go runtime metrics the leak checker compares.
type runtimeFigures struct {
	Goroutines float64 `json:"goroutines"`
	HeapInuse  float64 `json:"heap_inuse_bytes"`
}

func (c *Cluster) runtimeFigures(i int) (runtimeFigures, error) {
	var f runtimeFigures
	body, err := c.adminDo(i, http.MethodGet, "/metrics")
	if err != nil {
		return f, err
	}
	found := 0
	sc := bufio.NewScanner(strings.NewReader(string(body)))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		name, val, ok := strings.Cut(sc.Text(), " ")
		if !ok {
			continue
		}
		var dst *float64
		switch name {
		case "go_goroutines":
			dst = &f.Goroutines
		case "go_memstats_heap_inuse_bytes":
			dst = &f.HeapInuse
		default:
			continue
		}
		v, err := strconv.ParseFloat(strings.TrimSpace(val), 64)
		if err != nil {
			return f, fmt.Errorf("metrics of %s: %s %q: %w", c.nodes[i].ID, name, val, err)
		}
		*dst = v
		found++
	}
	if found != 2 {
		return f, fmt.Errorf("metrics of %s: go_goroutines or go_memstats_heap_inuse_bytes missing", c.nodes[i].ID)
	}
	return f, nil
}

// waitReady waits until every running node answers /readyz.
func (c *Cluster) waitReady(timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return c.lc.WaitRunningReady(ctx)
}

// dial returns an SDK client connected to node i only, in mode: strict
// (every decision is the node's, taken between the call's invoke and its
// completion) or lease (the SDK's default: leases of the node's room,
// decided in the SDK during the call). Either way every node decides the
// load offered to it, so a fault on one node is one on its part of the
// load.
func (c *Cluster) dial(ctx context.Context, i int, mode string) (*client.Client, error) {
	opts := []client.Option{client.WithCA(c.lc.Certs.CA.Pool()), client.WithCertificate(c.tlsCert), client.WithNodeID(c.nodes[i].ID)}
	switch mode {
	case modeStrict:
		opts = append(opts, client.WithStrict())
	case modeLease:
	default:
		return nil, fmt.Errorf("decision mode %q: use %s or %s", mode, modeStrict, modeLease)
	}
	return client.Dial(ctx, []string{c.nodes[i].Addr}, opts...)
}

// setLimitEverywhere sets rule through some node, retrying while Raft
// elects, and waits until every node's table has a rule.
func (c *Cluster) setLimitEverywhere(cls []*client.Client, rule limits.Rule, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	var last error
	for i := 0; time.Now().Before(deadline); i++ {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, err := cls[i%len(cls)].SetLimit(ctx, rule)
		cancel()
		if err == nil {
			last = nil
			break
		}
		last = err
		time.Sleep(300 * time.Millisecond)
	}
	if last != nil {
		return fmt.Errorf("set %v: %w", rule, last)
	}
	for time.Now().Before(deadline) {
		ok := true
		for i := range c.nodes {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			got, err := cls[i].GetLimit(ctx, rule.Pattern)
			cancel()
			if err != nil || got != rule {
				ok = false
				last = errors.Join(err, fmt.Errorf("%s has %v", c.nodes[i].ID, got))
			}
		}
		if ok {
			return nil
		}
		time.Sleep(200 * time.Millisecond)
	}
	return fmt.Errorf("rule %v not on every node: %w", rule, last)
}

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
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/quotamesh/quotamesh/client"
	"github.com/quotamesh/quotamesh/internal/certs"
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

// Cluster is a running set of quotamesh processes on a Backend.
type Cluster struct {
	t       *testing.T
	be      Backend
	dir     string // report directory
	dataDir string
	certDir string
	nodes   []*Node
	hist    *History
	http    *http.Client
	tlsCert tls.Certificate
	set     *certs.Set

	wg      sync.WaitGroup // process monitors
	crashMu sync.Mutex
	crashes []string // unexpected exits
}

// Node is one quotamesh process and where it lives.
type Node struct {
	Index   int
	ID      string
	IP      string
	Addr    string // QUIC host:port
	Admin   string // admin HTTP host:port
	DataDir string
	extra   []string

	mu       sync.Mutex
	cmd      *exec.Cmd
	exited   chan struct{}
	expected bool // the next exit is the nemesis' doing
	paused   bool
	starts   int
}

func (n *Node) running() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.exited == nil {
		return false
	}
	select {
	case <-n.exited:
		return false
	default:
		return true
	}
}

// newCluster sets up the hosts, writes certificates and starts every node;
// t.Cleanup stops them and removes what the backend added, whatever the
// outcome.
func newCluster(t *testing.T, be Backend, spec clusterSpec, dir string, hist *History) *Cluster {
	t.Helper()
	c := &Cluster{t: t, be: be, dir: dir, hist: hist, http: &http.Client{Timeout: 3 * time.Second}}
	t.Cleanup(c.close)
	c.dataDir = filepath.Join(suite.workDir, filepath.Base(dir))
	c.certDir = filepath.Join(c.dataDir, "certs")
	if err := os.MkdirAll(filepath.Join(dir, "logs"), 0o755); err != nil {
		t.Fatalf("report directory: %v", err)
	}
	ips, err := be.Setup(spec.Nodes)
	if err != nil {
		t.Fatalf("backend %s: setup: %v", be.Name(), err)
	}
	var ids, boot []string
	for i, ip := range ips {
		n := &Node{Index: i, ID: fmt.Sprintf("n%d", i+1), IP: ip, extra: spec.Extra[i]}
		n.Addr, n.Admin = fmt.Sprintf("%s:%d", ip, nodePort), fmt.Sprintf("%s:%d", ip, adminPort)
		n.DataDir = filepath.Join(c.dataDir, n.ID)
		c.nodes = append(c.nodes, n)
		ids = append(ids, n.ID)
		boot = append(boot, n.ID+"="+n.Addr)
	}
	out, err := exec.Command(suite.bin, "certs", "init", "--dir", c.certDir, "--nodes", strings.Join(ids, ","),
		"--clients", "admin", "--hosts", strings.Join(ips, ",")).CombinedOutput()
	if err != nil {
		t.Fatalf("quotamesh certs init: %v\n%s", err, out)
	}
	if c.set, err = certs.LoadDir(c.certDir); err != nil {
		t.Fatalf("load certificates: %v", err)
	}
	c.tlsCert = c.set.Clients["admin"].TLSCertificate()
	for _, n := range c.nodes {
		if err := c.start(n, boot); err != nil {
			t.Fatalf("start %s: %v", n.ID, err)
		}
	}
	return c
}

// bootstrap is the --bootstrap list, the same on every node.
func (c *Cluster) bootstrap() []string {
	var boot []string
	for _, n := range c.nodes {
		boot = append(boot, n.ID+"="+n.Addr)
	}
	return boot
}

// start runs node n's process (again, on the same data directory).
func (c *Cluster) start(n *Node, boot []string) error {
	argv := []string{suite.bin, "serve", "--id", n.ID, "--cluster-id", "fault",
		"--listen", n.Addr, "--advertise", n.Addr, "--admin-listen", n.Admin,
		"--data-dir", n.DataDir, "--certs", c.certDir, "--bootstrap", strings.Join(boot, ","),
		"--policy", "conservative", "--fault-control", "--log-format", "json", "--log-level", "info"}
	argv = append(argv, n.extra...)
	cmd := c.be.Command(n.Index, argv)
	logf, err := os.OpenFile(filepath.Join(c.dir, "logs", n.ID+".log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return fmt.Errorf("log file: %w", err)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("%s: %w", strings.Join(argv, " "), err)
	}
	exited := make(chan struct{})
	n.mu.Lock()
	n.cmd, n.exited, n.expected, n.paused = cmd, exited, false, false
	n.starts++
	n.mu.Unlock()
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		err := cmd.Wait()
		logf.Close()
		n.mu.Lock()
		expected := n.expected
		n.mu.Unlock()
		close(exited)
		if !expected {
			msg := fmt.Sprintf("%s exited unexpectedly: %v", n.ID, err)
			c.crashMu.Lock()
			c.crashes = append(c.crashes, msg)
			c.crashMu.Unlock()
			c.hist.event("crash", n.ID, msg)
		}
	}()
	return nil
}

// signal sends sig to node n's process.
func (c *Cluster) signal(n *Node, sig syscall.Signal) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cmd == nil || n.cmd.Process == nil {
		return fmt.Errorf("%s: not started", n.ID)
	}
	if sig == syscall.SIGKILL {
		n.expected = true
	}
	if s, ok := c.be.(signaller); ok {
		if err := s.Signal(n.Index, sig); err != nil {
			return fmt.Errorf("%s: %w", n.ID, err)
		}
	} else if err := n.cmd.Process.Signal(sig); err != nil {
		return fmt.Errorf("%s: signal %v: %w", n.ID, sig, err)
	}
	switch sig {
	case syscall.SIGSTOP:
		n.paused = true
	case syscall.SIGCONT:
		n.paused = false
	}
	return nil
}

// kill -9s node n and waits for it to exit.
func (c *Cluster) kill(n *Node) error {
	if err := c.signal(n, syscall.SIGKILL); err != nil {
		return err
	}
	select {
	case <-n.exited:
		return nil
	case <-time.After(10 * time.Second):
		return fmt.Errorf("%s: still running 10s after SIGKILL", n.ID)
	}
}

// restart starts a killed node on its data directory.
func (c *Cluster) restart(n *Node) error {
	if n.running() {
		return fmt.Errorf("%s: still running", n.ID)
	}
	return c.start(n, c.bootstrap())
}

// close stops every process (SIGCONT first for paused ones), waits for the
// monitors, and removes what the backend added.
func (c *Cluster) close() {
	for _, n := range c.nodes {
		if n.running() {
			_ = c.signal(n, syscall.SIGCONT)
			_ = c.kill(n)
		}
	}
	c.wg.Wait()
	if err := c.be.Close(); err != nil {
		c.t.Errorf("backend %s: clean up: %v", c.be.Name(), err)
	}
	if !*flagKeep {
		_ = os.RemoveAll(c.dataDir)
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

// waitReady waits until every running, unpaused node answers /readyz.
func (c *Cluster) waitReady(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		var why []string
		for i, n := range c.nodes {
			if !n.running() {
				continue
			}
			if _, err := c.adminDo(i, http.MethodGet, "/readyz"); err != nil {
				why = append(why, err.Error())
			}
		}
		if len(why) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not ready after %v: %s", timeout, strings.Join(why, "; "))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// dial returns an SDK client connected to node i only, in strict mode:
// every decision is the node's, taken between the call's invoke and its
// completion, so the history places it without the lease TTL's (and the
// test process' scheduling) uncertainty.
func (c *Cluster) dial(ctx context.Context, i int) (*client.Client, error) {
	return client.Dial(ctx, []string{c.nodes[i].Addr}, client.WithStrict(),
		client.WithCA(c.set.CA.Pool()), client.WithCertificate(c.tlsCert), client.WithNodeID(c.nodes[i].ID))
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

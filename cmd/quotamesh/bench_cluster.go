package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/quotamesh/quotamesh/internal/certs"
)

// localCluster is a set of `quotamesh serve` processes started by the bench
// on 127.0.0.(10+i), with development certificates and data directories in
// one temporary directory that stop removes.
type localCluster struct {
	dir   string // temporary directory: certs/, n1/, n1.log, ...
	certs string
	nodes []*childNode
}

// childNode is one node process.
type childNode struct {
	id, addr, admin string
	logPath         string
	cmd             *exec.Cmd
	log             *os.File
	exited          chan struct{} // closed when Wait returned
	waitErr         error         // Wait's result, once exited is closed
}

// firstNodeIP is the last byte of the first node's loopback address: node i
// (from 0) listens on 127.0.0.(firstNodeIP+i).
const firstNodeIP = 10

// maxLocalNodes is how many nodes fit on 127.0.0.10 to 127.0.0.254.
const maxLocalNodes = 255 - firstNodeIP

// stopTimeout bounds a node's graceful shutdown before it is killed.
const stopTimeout = 10 * time.Second

// startLocalCluster makes certificates for n nodes and an admin client,
// then starts the nodes (re-executing this binary with serve and
// serveFlags), all with the same bootstrap list. Node logs go to logDir
// (kept) or, if it is empty, to the temporary directory. On error everything
// started is stopped and removed.
func startLocalCluster(n int, serveFlags []string, logDir string, stderr io.Writer) (lc *localCluster, err error) {
	lc, exe, err := newLocalCluster("quotamesh-bench-", "nodes")
	if err != nil {
		return nil, err
	}
	dir := lc.dir
	lc.certs = filepath.Join(dir, "certs")
	defer func() {
		if err != nil {
			lc.stop(stderr)
			lc = nil
		}
	}()
	if logDir == "" {
		logDir = dir
	} else if err := os.MkdirAll(logDir, 0o755); err != nil {
		return nil, fmt.Errorf("bench: --log-dir: %w", err)
	}
	hosts := []string{"127.0.0.1", "localhost"}
	for i := range n {
		ip := fmt.Sprintf("127.0.0.%d", firstNodeIP+i)
		addr, err := freePort("udp", ip)
		if err != nil {
			return nil, err
		}
		admin, err := freePort("tcp", ip)
		if err != nil {
			return nil, err
		}
		id := fmt.Sprintf("n%d", i+1)
		lc.nodes = append(lc.nodes, &childNode{id: id, addr: addr, admin: admin, logPath: filepath.Join(logDir, id+".log")})
		hosts = append(hosts, ip)
	}
	if err := writeDevCerts(lc.certs, lc.nodes, hosts); err != nil {
		return nil, err
	}
	var boot []string
	for _, c := range lc.nodes {
		boot = append(boot, c.id+"="+c.addr)
	}
	for _, c := range lc.nodes {
		args := []string{"serve", "--id", c.id, "--cluster-id", "bench", "--listen", c.addr,
			"--admin-listen", c.admin, "--data-dir", filepath.Join(dir, c.id), "--certs", lc.certs,
			"--bootstrap", strings.Join(boot, ","), "--log-format", "json"}
		args = append(args, serveFlags...)
		if err := c.start(exe, args); err != nil {
			return nil, err
		}
	}
	return lc, nil
}

// newLocalCluster makes the temporary directory of a set of child
// processes of this program (what, for errors) and finds the program.
func newLocalCluster(prefix, what string) (*localCluster, string, error) {
	dir, err := os.MkdirTemp("", prefix)
	if err != nil {
		return nil, "", fmt.Errorf("bench: temporary directory: %w", err)
	}
	lc := &localCluster{dir: dir}
	exe, err := os.Executable()
	if err != nil {
		os.RemoveAll(dir)
		return nil, "", fmt.Errorf("bench: find this program to start %s: %w", what, err)
	}
	return lc, exe, nil
}

// freePort returns ip:port with a port the system just handed out for
// network ("udp" or "tcp") and released. Another process could take it
// before the node binds it; the node then fails to start and says so.
func freePort(network, ip string) (string, error) {
	switch network {
	case "udp":
		pc, err := net.ListenPacket("udp", ip+":0")
		if err != nil {
			return "", fmt.Errorf("bench: find a free UDP port on %s: %w", ip, err)
		}
		defer pc.Close()
		return pc.LocalAddr().String(), nil
	default:
		ln, err := net.Listen("tcp", ip+":0")
		if err != nil {
			return "", fmt.Errorf("bench: find a free TCP port on %s: %w", ip, err)
		}
		defer ln.Close()
		return ln.Addr().String(), nil
	}
}

// writeDevCerts writes a CA, one certificate per node (valid for hosts) and
// an "admin" client certificate to dir.
func writeDevCerts(dir string, nodes []*childNode, hosts []string) error {
	const validity = 24 * time.Hour
	ca, err := certs.NewCA("QuotaMesh bench CA", validity)
	if err != nil {
		return fmt.Errorf("bench: certificates: %w", err)
	}
	set := certs.NewSet(ca)
	for _, c := range nodes {
		if set.Nodes[c.id], err = ca.IssueNode(c.id, hosts, validity); err != nil {
			return fmt.Errorf("bench: certificate for %s: %w", c.id, err)
		}
	}
	if set.Clients[benchClientName], err = ca.IssueClient(benchClientName, validity); err != nil {
		return fmt.Errorf("bench: client certificate: %w", err)
	}
	if err := set.WriteDir(dir); err != nil {
		return fmt.Errorf("bench: certificates: %w", err)
	}
	return nil
}

// start starts the node process with its output going to its log file, and
// a goroutine that waits for it (stop waits for that goroutine).
func (c *childNode) start(exe string, args []string) error {
	f, err := os.Create(c.logPath)
	if err != nil {
		return fmt.Errorf("bench: log file for %s: %w", c.id, err)
	}
	c.log = f
	c.cmd = exec.Command(exe, args...)
	c.cmd.Stdout, c.cmd.Stderr = f, f
	c.cmd.SysProcAttr = childAttr()
	if err := c.cmd.Start(); err != nil {
		return fmt.Errorf("bench: start node %s (%s serve): %w", c.id, exe, err)
	}
	c.exited = make(chan struct{})
	go func() {
		c.waitErr = c.cmd.Wait()
		close(c.exited)
	}()
	return nil
}

// errNodeDied reports a node process that exited while the bench needed it.
var errNodeDied = errors.New("node process exited early")

// died returns an error naming the node, how it exited and the tail of its
// log, if it has exited; nil if it runs.
func (c *childNode) died() error {
	select {
	case <-c.exited:
	default:
		return nil
	}
	how := "exit status 0"
	if c.waitErr != nil {
		how = c.waitErr.Error()
	}
	return fmt.Errorf("bench: %w: %s (%s, %s); last lines of %s:\n%s", errNodeDied, c.id, c.addr, how, c.logPath, tail(c.logPath, 15))
}

// died returns the first node death among the cluster's nodes, or nil (also
// for no cluster).
func (lc *localCluster) died() error {
	if lc == nil {
		return nil
	}
	for _, c := range lc.nodes {
		if err := c.died(); err != nil {
			return err
		}
	}
	return nil
}

// tail returns the last n lines of the file at path.
func tail(path string, n int) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(cannot read: %v)", err)
	}
	lines := bytes.Split(bytes.TrimRight(data, "\n"), []byte("\n"))
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return "  " + string(bytes.Join(lines, []byte("\n  ")))
}

// addrs is every node's QUIC address, in order.
func (lc *localCluster) addrs() []string {
	var out []string
	for _, c := range lc.nodes {
		out = append(out, c.addr)
	}
	return out
}

// waitReady polls every node's /readyz until all answer 200, a node dies,
// or ctx ends (the error then lists the nodes not ready and why).
func (lc *localCluster) waitReady(ctx context.Context) error {
	hc := &http.Client{Timeout: time.Second}
	defer hc.CloseIdleConnections()
	ready := make([]bool, len(lc.nodes))
	why := make([]string, len(lc.nodes))
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		all := true
		for i, c := range lc.nodes {
			if err := c.died(); err != nil {
				return err
			}
			if ready[i] {
				continue
			}
			ready[i], why[i] = readyz(ctx, hc, c.admin)
			all = all && ready[i]
		}
		if all {
			return nil
		}
		select {
		case <-ctx.Done():
			var not []string
			for i, c := range lc.nodes {
				if !ready[i] {
					not = append(not, fmt.Sprintf("%s: %s (log %s:\n%s)", c.id, why[i], c.logPath, tail(c.logPath, 5)))
				}
			}
			return fmt.Errorf("bench: nodes not ready: %w; %s", context.Cause(ctx), strings.Join(not, "; "))
		case <-tick.C:
		}
	}
}

// readyz asks one node's admin listener whether it is ready.
func readyz(ctx context.Context, hc *http.Client, admin string) (bool, string) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+admin+"/readyz", nil)
	if err != nil {
		return false, err.Error()
	}
	resp, err := hc.Do(req)
	if err != nil {
		return false, err.Error()
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	return resp.StatusCode == http.StatusOK, strings.TrimSpace(string(body))
}

// stop shuts every node down (SIGTERM to its process group, SIGKILL after
// stopTimeout), waits for every process, and removes the temporary
// directory. It is safe on a partly started cluster and reports problems to
// w without failing: the run's result does not depend on them.
func (lc *localCluster) stop(w io.Writer) {
	for _, c := range lc.nodes {
		if c.cmd != nil && c.exited != nil {
			_ = signalChild(c.cmd.Process, syscall.SIGTERM)
		}
	}
	deadline := time.NewTimer(stopTimeout)
	defer deadline.Stop()
	for _, c := range lc.nodes {
		if c.cmd == nil || c.exited == nil {
			continue
		}
		select {
		case <-c.exited:
		case <-deadline.C:
			fmt.Fprintf(w, "quotamesh: bench: node %s did not stop within %v; killing it\n", c.id, stopTimeout)
			for _, k := range lc.nodes {
				if k.cmd != nil && k.exited != nil {
					_ = signalChild(k.cmd.Process, syscall.SIGKILL)
				}
			}
			<-c.exited
		}
	}
	for _, c := range lc.nodes {
		if c.exited != nil {
			<-c.exited
		}
		if c.log != nil {
			c.log.Close()
		}
	}
	if err := os.RemoveAll(lc.dir); err != nil {
		fmt.Fprintf(w, "quotamesh: bench: remove %s: %v\n", lc.dir, err)
	}
}

package localcluster

import (
	"context"
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

// AdminClient is the client certificate Start issues: the name nodes
// accept admin operations from by default, so it may change limits.
const AdminClient = "admin"

// certValidity is how long the development certificates are valid.
const certValidity = 24 * time.Hour

// readyPoll is how often WaitReady asks the nodes again.
const readyPoll = 100 * time.Millisecond

// Config describes a cluster of `quotamesh serve` processes. Binary and IPs
// are required; every other zero value means the default named.
type Config struct {
	// Binary is the quotamesh program the nodes run.
	Binary string
	// IPs are the addresses the nodes bind, one per node (see Loopback).
	IPs []string
	// Port and AdminPort are every node's QUIC and admin HTTP ports on its
	// address; 0 means a port the system hands out, per node.
	Port, AdminPort int
	// Dir holds certs/ and each node's data directory (<id>/); empty means
	// a new temporary directory named TempPrefix*.
	Dir        string
	TempPrefix string
	// LogDir receives each node's output as <id>.log (default Dir).
	LogDir string
	// Keep leaves Dir in place when the cluster stops.
	Keep bool
	// ClusterID is passed as --cluster-id (default "local").
	ClusterID string
	// Flags are serve flags for every node, after the launcher's own (a
	// later flag wins); NodeFlags adds flags for node i after those.
	Flags     []string
	NodeFlags map[int][]string
	// Command runs node i's command line (default exec.Command): a backend
	// runs it in a network namespace or a container.
	Command func(i int, argv []string) *exec.Cmd
	// Signal replaces signalling node i's process group (nil: signal it).
	Signal func(i int, sig syscall.Signal) error
	// KillWithParent asks the kernel to kill the nodes if this process dies
	// without stopping them (Linux).
	KillWithParent bool
	// OnExit, if set, is called when a node's process exits, with whether
	// Kill or Stop ended it.
	OnExit func(n *Node, err error, expected bool)
}

// Loopback returns n loopback addresses from 127.0.0.first up.
func Loopback(first, n int) []string {
	ips := make([]string, n)
	for i := range ips {
		ips[i] = fmt.Sprintf("127.0.0.%d", first+i)
	}
	return ips
}

// Node is one node process and where it lives.
type Node struct {
	*Proc
	Index   int
	ID      string // n1, n2, ...
	IP      string
	Addr    string // QUIC host:port
	Admin   string // admin HTTP host:port
	DataDir string
}

// Cluster is a running set of `quotamesh serve` processes.
type Cluster struct {
	*Group
	// CertDir holds the certificates, laid out as `quotamesh certs init`
	// writes them; Certs is the same set, loaded.
	CertDir string
	Certs   *certs.Set
	Nodes   []*Node
}

// Start writes certificates for the nodes and an AdminClient, then starts
// every node with the same bootstrap list. It does not wait for them to be
// ready (WaitReady does). On error everything started is stopped and
// removed.
func Start(cfg Config) (_ *Cluster, err error) {
	switch {
	case cfg.Binary == "":
		return nil, fmt.Errorf("%w: no Binary", ErrInvalidConfig)
	case len(cfg.IPs) == 0:
		return nil, fmt.Errorf("%w: no IPs", ErrInvalidConfig)
	}
	if cfg.ClusterID == "" {
		cfg.ClusterID = "local"
	}
	g, err := NewGroup(cfg.Dir, cfg.TempPrefix, cfg.Keep)
	if err != nil {
		return nil, err
	}
	c := &Cluster{Group: g, CertDir: filepath.Join(g.Dir, "certs")}
	defer func() {
		if err != nil {
			_ = c.Kill()
		}
	}()
	logDir := cfg.LogDir
	if logDir == "" {
		logDir = g.Dir
	} else if err := os.MkdirAll(logDir, 0o755); err != nil {
		return nil, fmt.Errorf("log directory: %w", err)
	}
	hosts := []string{"127.0.0.1", "localhost"}
	var ids, boot []string
	for i, ip := range cfg.IPs {
		n := &Node{Index: i, ID: fmt.Sprintf("n%d", i+1), IP: ip}
		if n.Addr, err = hostPort("udp", ip, cfg.Port); err != nil {
			return nil, err
		}
		if n.Admin, err = hostPort("tcp", ip, cfg.AdminPort); err != nil {
			return nil, err
		}
		n.DataDir = filepath.Join(g.Dir, n.ID)
		c.Nodes = append(c.Nodes, n)
		ids = append(ids, n.ID)
		boot = append(boot, n.ID+"="+n.Addr)
		hosts = append(hosts, ip)
	}
	if c.Certs, err = WriteDevCerts(c.CertDir, ids, hosts); err != nil {
		return nil, err
	}
	for _, n := range c.Nodes {
		argv := []string{cfg.Binary, "serve", "--id", n.ID, "--cluster-id", cfg.ClusterID,
			"--listen", n.Addr, "--advertise", n.Addr, "--admin-listen", n.Admin,
			"--data-dir", n.DataDir, "--certs", c.CertDir, "--bootstrap", strings.Join(boot, ","),
			"--log-format", "json"}
		argv = append(append(argv, cfg.Flags...), cfg.NodeFlags[n.Index]...)
		spec := ProcSpec{Name: n.ID, Addr: n.Addr, Argv: argv, LogPath: filepath.Join(logDir, n.ID+".log"),
			KillWithParent: cfg.KillWithParent}
		if cfg.Command != nil {
			spec.Command = func(argv []string) *exec.Cmd { return cfg.Command(n.Index, argv) }
		}
		if cfg.Signal != nil {
			spec.Signal = func(sig syscall.Signal) error { return cfg.Signal(n.Index, sig) }
		}
		if cfg.OnExit != nil {
			spec.OnExit = func(err error, expected bool) { cfg.OnExit(n, err, expected) }
		}
		if n.Proc, err = g.Start(spec); err != nil {
			return nil, err
		}
	}
	return c, nil
}

// hostPort is ip:port, or, for port 0, ip and a port the system just
// handed out for network ("udp" or "tcp") and released. Another process
// could take it before the node binds it; the node then fails to start and
// says so.
func hostPort(network, ip string, port int) (string, error) {
	if port != 0 {
		return net.JoinHostPort(ip, fmt.Sprint(port)), nil
	}
	return FreePort(network, ip)
}

// FreePort returns ip:port with a port the system just handed out for
// network ("udp" or "tcp") and released.
func FreePort(network, ip string) (string, error) {
	switch network {
	case "udp":
		pc, err := net.ListenPacket("udp", ip+":0")
		if err != nil {
			return "", fmt.Errorf("find a free UDP port on %s: %w", ip, err)
		}
		defer pc.Close()
		return pc.LocalAddr().String(), nil
	default:
		ln, err := net.Listen("tcp", ip+":0")
		if err != nil {
			return "", fmt.Errorf("find a free TCP port on %s: %w", ip, err)
		}
		defer ln.Close()
		return ln.Addr().String(), nil
	}
}

// WriteDevCerts writes a development CA, one certificate per node ID
// (valid for hosts) and an AdminClient certificate to dir, as `quotamesh
// certs init` lays them out, and returns the set.
func WriteDevCerts(dir string, ids, hosts []string) (*certs.Set, error) {
	ca, err := certs.NewCA("QuotaMesh local cluster CA", certValidity)
	if err != nil {
		return nil, fmt.Errorf("certificates: %w", err)
	}
	set := certs.NewSet(ca)
	for _, id := range ids {
		if set.Nodes[id], err = ca.IssueNode(id, hosts, certValidity); err != nil {
			return nil, fmt.Errorf("certificate for %s: %w", id, err)
		}
	}
	if set.Clients[AdminClient], err = ca.IssueClient(AdminClient, certs.RoleAdmin, certValidity); err != nil {
		return nil, fmt.Errorf("client certificate: %w", err)
	}
	if err := set.WriteDir(dir); err != nil {
		return nil, fmt.Errorf("certificates: %w", err)
	}
	return set, nil
}

// Addrs is every node's QUIC address, in order.
func (c *Cluster) Addrs() []string {
	out := make([]string, len(c.Nodes))
	for i, n := range c.Nodes {
		out[i] = n.Addr
	}
	return out
}

// WaitReady polls every node's /readyz until all answer 200, a node
// exits (its Died error), or ctx ends (the error then lists the nodes not
// ready, why, and the tail of their logs).
func (c *Cluster) WaitReady(ctx context.Context) error { return c.waitReady(ctx, false) }

// WaitRunningReady is WaitReady for the nodes still running: a node that
// has exited is left out, not an error.
func (c *Cluster) WaitRunningReady(ctx context.Context) error { return c.waitReady(ctx, true) }

func (c *Cluster) waitReady(ctx context.Context, running bool) error {
	hc := &http.Client{Timeout: 3 * time.Second}
	defer hc.CloseIdleConnections()
	ready := make([]bool, len(c.Nodes))
	why := make([]string, len(c.Nodes))
	tick := time.NewTicker(readyPoll)
	defer tick.Stop()
	for {
		all := true
		for i, n := range c.Nodes {
			if running && !n.Running() {
				continue
			}
			if err := n.Died(); err != nil {
				return err
			}
			if !ready[i] {
				ready[i], why[i] = n.Ready(ctx, hc)
				all = all && ready[i]
			}
		}
		if all {
			return nil
		}
		select {
		case <-ctx.Done():
			var not []string
			for i, n := range c.Nodes {
				if !ready[i] && (!running || n.Running()) {
					not = append(not, fmt.Sprintf("%s: %s (log %s:\n%s)", n.ID, why[i], n.LogPath(), Tail(n.LogPath(), 5)))
				}
			}
			return fmt.Errorf("nodes not ready: %w; %s", context.Cause(ctx), strings.Join(not, "; "))
		case <-tick.C:
		}
	}
}

// Ready asks the node's admin listener whether it is ready; the string is
// why not.
func (n *Node) Ready(ctx context.Context, hc *http.Client) (bool, string) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+n.Admin+"/readyz", nil)
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

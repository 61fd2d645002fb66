//go:build fault

package cluster_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"
)

// Backend places nodes on separate hosts and faults the network between
// them. The cluster starts, pauses (SIGSTOP), kills (SIGKILL) and restarts
// (on the same data directory) the node processes through localcluster,
// which runs each through Command, so a backend only decides where a
// process runs and how its packets are lost.
type Backend interface {
	// Name is process, netns or docker.
	Name() string
	// Setup prepares n hosts and returns the IP address each node binds.
	Setup(n int) ([]string, error)
	// Command returns the command that runs argv on host i.
	Command(i int, argv []string) *exec.Cmd
	// Cut drops every packet between hosts a and b, both ways.
	Cut(c *Cluster, a, b int) error
	// CutOneWay drops every packet from host a to host b, and none from b
	// to a.
	CutOneWay(c *Cluster, a, b int) error
	// Loss drops each packet arriving at host i from its peers with
	// probability p.
	Loss(c *Cluster, i int, p float64) error
	// Heal removes every Cut and Loss.
	Heal(c *Cluster) error
	// Close removes everything Setup and the faults added. It is called
	// once, also when the test failed.
	Close() error
}

// errNoBackend reports that a backend cannot run here.
var errNoBackend = errors.New("backend not available")

// signaller is implemented by backends whose processes are not signalled
// directly (docker: the process the cluster runs is the docker CLI).
type signaller interface {
	Signal(i int, sig syscall.Signal) error
}

// chooseBackend returns the backend named by -backend. auto prefers docker
// (a daemon, nsenter and root) when withDocker, then netns (root with ip and
// iptables), else process. The short form passes withDocker false: on a
// loaded 2-core machine containers take twice as long to start and stall
// more, and the short form must stay within its time.
func chooseBackend(name string, withDocker bool) (Backend, error) {
	switch name {
	case "process":
		return &processBackend{}, nil
	case "netns":
		if err := netnsAvailable(); err != nil {
			return nil, err
		}
		return newNetnsBackend(), nil
	case "auto":
		if withDocker && dockerAvailable() == nil {
			return newDockerBackend(), nil
		}
		if netnsAvailable() == nil {
			return newNetnsBackend(), nil
		}
		return &processBackend{}, nil
	case "docker":
		if err := dockerAvailable(); err != nil {
			return nil, err
		}
		return newDockerBackend(), nil
	default:
		return nil, fmt.Errorf("-backend %q: use auto, process, netns or docker", name)
	}
}

// processBackend runs every node as a process on this host, node i on
// 127.0.0.(11+i). Partitions and loss use faultnet on each node's socket
// (/debug/fault/net).
type processBackend struct{}

func (*processBackend) Name() string { return "process" }

func (*processBackend) Setup(n int) ([]string, error) {
	ips := make([]string, n)
	for i := range ips {
		ips[i] = fmt.Sprintf("127.0.0.%d", 11+i)
	}
	return ips, nil
}

func (*processBackend) Command(_ int, argv []string) *exec.Cmd {
	return exec.Command(argv[0], argv[1:]...)
}

func (*processBackend) Cut(c *Cluster, a, b int) error {
	if err := c.faultNet(a, "block="+c.nodes[b].Addr); err != nil {
		return err
	}
	return c.faultNet(b, "block="+c.nodes[a].Addr)
}

func (*processBackend) CutOneWay(c *Cluster, a, b int) error {
	return c.faultNet(a, "block_out="+c.nodes[b].Addr)
}

func (*processBackend) Loss(c *Cluster, i int, p float64) error {
	// faultnet drops outgoing datagrams only, and for every destination:
	// node i loses p of what it sends (its SDK client's replies too, which
	// QUIC retransmits).
	return c.faultNet(i, fmt.Sprintf("drop=%g", p))
}

func (*processBackend) Heal(c *Cluster) error {
	var errs []error
	for i := range c.nodes {
		if c.nodes[i].Running() {
			errs = append(errs, c.faultNet(i, "heal=1"))
		}
	}
	return errors.Join(errs...)
}

func (*processBackend) Close() error { return nil }

// netnsBackend runs node i in its own network namespace qf<run>-<i>,
// connected by a veth pair to a bridge that also carries the host's address
// (10.77.0.1), from which the SDK clients and the admin calls come.
// Partitions and loss are iptables rules inside the namespaces; Docker's
// FORWARD policy DROP is answered with an ACCEPT rule for the bridge, which
// Close removes with everything else.
type netnsBackend struct {
	tag     string   // short and unique: names the bridge, namespaces and veths
	ns      []string // namespaces created
	veths   []string // host ends of the veth pairs created
	bridge  bool     // bridge created
	forward bool     // FORWARD rule added
}

const netnsSubnet = "10.77.0"

func netnsAvailable() error {
	if os.Geteuid() != 0 {
		return fmt.Errorf("%w: netns: needs root", errNoBackend)
	}
	for _, tool := range []string{"ip", "iptables"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("%w: netns: %s not found: %v", errNoBackend, tool, err)
		}
	}
	return nil
}

func newNetnsBackend() *netnsBackend {
	return &netnsBackend{tag: fmt.Sprintf("qf%04x", uint16(time.Now().UnixNano()>>10))}
}

func (*netnsBackend) Name() string { return "netns" }

func sh(args ...string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, args[0], args[1:]...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

func (b *netnsBackend) br() string { return b.tag + "br" }

func (b *netnsBackend) Setup(n int) ([]string, error) {
	if err := sh("ip", "link", "add", b.br(), "type", "bridge"); err != nil {
		return nil, err
	}
	b.bridge = true
	for _, args := range [][]string{
		{"ip", "addr", "add", netnsSubnet + ".1/24", "dev", b.br()},
		{"ip", "link", "set", b.br(), "up"},
		{"iptables", "-I", "FORWARD", "-i", b.br(), "-o", b.br(), "-j", "ACCEPT"},
	} {
		if err := sh(args...); err != nil {
			return nil, err
		}
	}
	b.forward = true
	ips := make([]string, n)
	for i := range ips {
		ns := fmt.Sprintf("%s-%d", b.tag, i)
		host, peer := fmt.Sprintf("%sh%d", b.tag, i), fmt.Sprintf("%sp%d", b.tag, i)
		ips[i] = fmt.Sprintf("%s.%d", netnsSubnet, 11+i)
		if err := sh("ip", "netns", "add", ns); err != nil {
			return nil, err
		}
		b.ns = append(b.ns, ns)
		if err := sh("ip", "link", "add", host, "type", "veth", "peer", "name", peer); err != nil {
			return nil, err
		}
		b.veths = append(b.veths, host)
		for _, args := range [][]string{
			{"ip", "link", "set", host, "master", b.br()},
			{"ip", "link", "set", host, "up"},
			{"ip", "link", "set", peer, "netns", ns},
			{"ip", "netns", "exec", ns, "ip", "addr", "add", ips[i] + "/24", "dev", peer},
			{"ip", "netns", "exec", ns, "ip", "link", "set", peer, "up"},
			{"ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up"},
		} {
			if err := sh(args...); err != nil {
				return nil, err
			}
		}
	}
	return ips, nil
}

// Command runs argv in host i's namespace. ip netns exec execs argv in
// place, so the process ID is the node's and SIGSTOP/SIGKILL reach it.
func (b *netnsBackend) Command(i int, argv []string) *exec.Cmd {
	return exec.Command("ip", append([]string{"netns", "exec", b.ns[i]}, argv...)...)
}

func (b *netnsBackend) ipt(i int, args ...string) error {
	return sh(append([]string{"ip", "netns", "exec", b.ns[i], "iptables"}, args...)...)
}

func (b *netnsBackend) Cut(c *Cluster, x, y int) error { return iptablesCut(b.ipt, c, x, y) }

func (b *netnsBackend) CutOneWay(c *Cluster, x, y int) error {
	return iptablesCutOneWay(b.ipt, c, x, y)
}

// Loss drops packets from peers (not from the host's SDK clients) at
// random, in both directions of node i's links.
func (b *netnsBackend) Loss(c *Cluster, i int, p float64) error { return iptablesLoss(b.ipt, c, i, p) }

func (b *netnsBackend) Heal(*Cluster) error {
	var errs []error
	for i := range b.ns {
		errs = append(errs, b.ipt(i, "-F"))
	}
	return errors.Join(errs...)
}

// Close deletes the namespaces (their veths and iptables rules go with
// them), the bridge and the FORWARD rule, reporting every failure.
func (b *netnsBackend) Close() error {
	var errs []error
	for _, ns := range b.ns {
		errs = append(errs, sh("ip", "netns", "delete", ns))
	}
	b.ns = nil
	for _, v := range b.veths {
		// Gone with its namespace unless setup failed before moving the
		// peer end into it.
		_ = exec.Command("ip", "link", "delete", v).Run()
	}
	b.veths = nil
	if b.forward {
		errs = append(errs, sh("iptables", "-D", "FORWARD", "-i", b.br(), "-o", b.br(), "-j", "ACCEPT"))
		b.forward = false
	}
	if b.bridge {
		errs = append(errs, sh("ip", "link", "delete", b.br()))
		b.bridge = false
	}
	return errors.Join(errs...)
}

// iptablesCut drops every packet between hosts x and y, both ways, with
// rules in both hosts' network namespaces; ipt runs iptables in host i's.
func iptablesCut(ipt func(i int, args ...string) error, c *Cluster, x, y int) error {
	for _, p := range [][2]int{{x, y}, {y, x}} {
		for _, dir := range [][]string{{"INPUT", "-s"}, {"OUTPUT", "-d"}} {
			if err := ipt(p[0], "-A", dir[0], dir[1], c.nodes[p[1]].IP, "-j", "DROP"); err != nil {
				return err
			}
		}
	}
	return nil
}

// iptablesCutOneWay drops every packet from host x to host y, with a rule
// on each side (x's OUTPUT, y's INPUT), and none from y to x.
func iptablesCutOneWay(ipt func(i int, args ...string) error, c *Cluster, x, y int) error {
	if err := ipt(x, "-A", "OUTPUT", "-d", c.nodes[y].IP, "-j", "DROP"); err != nil {
		return err
	}
	return ipt(y, "-A", "INPUT", "-s", c.nodes[x].IP, "-j", "DROP")
}

// iptablesLoss drops packets between host i and each of its peers (not
// the host's SDK clients) with probability p, in both directions.
func iptablesLoss(ipt func(i int, args ...string) error, c *Cluster, i int, p float64) error {
	prob := fmt.Sprintf("%g", p)
	for j := range c.nodes {
		if j == i {
			continue
		}
		for _, dir := range [][]string{{"INPUT", "-s"}, {"OUTPUT", "-d"}} {
			if err := ipt(i, "-A", dir[0], dir[1], c.nodes[j].IP, "-m", "statistic", "--mode", "random", "--probability", prob, "-j", "DROP"); err != nil {
				return err
			}
		}
	}
	return nil
}

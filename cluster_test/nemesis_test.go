//go:build fault

package cluster_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/quotamesh/quotamesh/client"
	"github.com/quotamesh/quotamesh/internal/localcluster"
)

// boundKind names which documented bound a fault is held to while it lasts
// and for healGrace after it heals (checker.go).
type boundKind string

const (
	boundNormal boundKind = "normal" // partitions (conservative), crashes, pauses, loss, delay
	boundClock  boundKind = "clock"  // clock steps: plus one slot's worth (e_clock)
)

// nemesis is one fault: start applies it and returns what heals it.
type nemesis struct {
	name     string
	bound    boundKind
	duration time.Duration
	minNodes int // skipped on smaller clusters
	target   int // node index, or -1 for a random one
	start    func(c *Cluster, target int, rng *rand.Rand) (detail string, heal func() error, err error)
}

// cutAll cuts every pair (a, b) for which cut says so.
func cutAll(c *Cluster, cut func(a, b int) bool) (string, error) {
	var pairs []string
	for a := range c.nodes {
		for b := a + 1; b < len(c.nodes); b++ {
			if !cut(a, b) {
				continue
			}
			if err := c.be.Cut(c, a, b); err != nil {
				return "", err
			}
			pairs = append(pairs, c.nodes[a].ID+"-"+c.nodes[b].ID)
		}
	}
	return "cut " + strings.Join(pairs, ","), nil
}

func (c *Cluster) healNet() error {
	errs := []error{c.be.Heal(c)}
	for i, n := range c.nodes {
		if n.Running() {
			errs = append(errs, c.faultNet(i, "heal=1"))
		}
	}
	return errors.Join(errs...)
}

func pick(c *Cluster, target int, rng *rand.Rand) int {
	if target >= 0 {
		return target
	}
	return rng.IntN(len(c.nodes))
}

// ringDist is the distance between a and b on a ring of n.
func ringDist(a, b, n int) int {
	d := (a - b + n) % n
	return min(d, n-d)
}

// allNemeses returns every nemesis with duration d (the time the fault
// holds).
func allNemeses(d time.Duration) map[string]nemesis {
	ns := []nemesis{
		{name: "partition-halves", bound: boundNormal, duration: d, start: func(c *Cluster, _ int, _ *rand.Rand) (string, func() error, error) {
			half := len(c.nodes) / 2
			s, err := cutAll(c, func(a, b int) bool { return (a < half) != (b < half) })
			return s, c.healNet, err
		}},
		{name: "isolate-one", bound: boundNormal, duration: d, start: func(c *Cluster, target int, rng *rand.Rand) (string, func() error, error) {
			v := pick(c, target, rng)
			s, err := cutAll(c, func(a, b int) bool { return a == v || b == v })
			return c.nodes[v].ID + " isolated: " + s, c.healNet, err
		}},
		{name: "bridge", bound: boundNormal, duration: d, start: func(c *Cluster, target int, rng *rand.Rand) (string, func() error, error) {
			// Two halves that only node m hears both of.
			m := pick(c, target, rng)
			var others []int
			for i := range c.nodes {
				if i != m {
					others = append(others, i)
				}
			}
			side := map[int]int{}
			for k, i := range others {
				side[i] = k * 2 / len(others)
			}
			s, err := cutAll(c, func(a, b int) bool { return a != m && b != m && side[a] != side[b] })
			return c.nodes[m].ID + " bridges: " + s, c.healNet, err
		}},
		{name: "majorities-ring", bound: boundNormal, duration: d, minNodes: 5, start: func(c *Cluster, _ int, _ *rand.Rand) (string, func() error, error) {
			// Every node hears its ring neighbours only: each sees a
			// majority (itself and two neighbours of five), no two the same.
			s, err := cutAll(c, func(a, b int) bool { return ringDist(a, b, len(c.nodes)) > 1 })
			return s, c.healNet, err
		}},
		{name: "kill-9", bound: boundNormal, duration: d, start: func(c *Cluster, target int, rng *rand.Rand) (string, func() error, error) {
			n := c.nodes[pick(c, target, rng)]
			if err := n.Kill(); err != nil {
				return "", nil, err
			}
			return n.ID + " killed with SIGKILL, restarted on its data", func() error { return c.restartReady(n) }, nil
		}},
		{name: "leader-kill", bound: boundNormal, duration: d, start: func(c *Cluster, _ int, rng *rand.Rand) (string, func() error, error) {
			n := c.leader()
			if n == nil {
				n = c.nodes[rng.IntN(len(c.nodes))]
			}
			if err := n.Kill(); err != nil {
				return "", nil, err
			}
			return "leader " + n.ID + " killed with SIGKILL during limit changes", func() error { return c.restartReady(n) }, nil
		}},
		{name: "pause", bound: boundNormal, duration: d, start: func(c *Cluster, target int, rng *rand.Rand) (string, func() error, error) {
			n := c.nodes[pick(c, target, rng)]
			if err := n.Pause(); err != nil {
				return "", nil, err
			}
			return n.ID + " paused (SIGSTOP)", func() error { return n.Resume() }, nil
		}},
		{name: "clock-bump", bound: boundClock, duration: d, start: func(c *Cluster, target int, rng *rand.Rand) (string, func() error, error) {
			i := pick(c, target, rng)
			off := clockStep
			if rng.IntN(2) == 0 {
				off = -off
			}
			if err := c.clockOffset(i, off); err != nil {
				return "", nil, err
			}
			return fmt.Sprintf("%s clock %+v", c.nodes[i].ID, off), func() error { return c.clockOffset(i, 0) }, nil
		}},
		{name: "clock-strobe", bound: boundClock, duration: d, start: func(c *Cluster, target int, rng *rand.Rand) (string, func() error, error) {
			i := pick(c, target, rng)
			stop, done := make(chan struct{}), make(chan error, 1)
			go func() { // owned here: heal stops and waits for it
				var errs []error
				t := time.NewTicker(time.Second)
				defer t.Stop()
				off := clockStep
				for {
					errs = append(errs, c.clockOffset(i, off))
					off = -off
					select {
					case <-stop:
						done <- errors.Join(errs...)
						return
					case <-t.C:
					}
				}
			}()
			return c.nodes[i].ID + " clock strobes ±500ms every 1s", func() error {
				close(stop)
				return errors.Join(<-done, c.clockOffset(i, 0))
			}, nil
		}},
		{name: "loss-10pct", bound: boundNormal, duration: d, start: func(c *Cluster, _ int, _ *rand.Rand) (string, func() error, error) {
			for i := range c.nodes {
				if err := c.be.Loss(c, i, 0.10); err != nil {
					return "", nil, err
				}
			}
			return "10% of packets between nodes lost on every node", c.healNet, nil
		}},
		{name: "delay", bound: boundNormal, duration: d, start: func(c *Cluster, _ int, _ *rand.Rand) (string, func() error, error) {
			for i := range c.nodes {
				if err := c.faultNet(i, "delay=50ms&jitter=20ms"); err != nil {
					return "", nil, err
				}
			}
			return "50ms + up to 20ms jitter on every datagram (faultnet)", c.healNet, nil
		}},
		{name: "one-way", bound: boundNormal, duration: d, start: func(c *Cluster, target int, rng *rand.Rand) (string, func() error, error) {
			// An asymmetric partition: v hears its peers, they do not hear v.
			v := pick(c, target, rng)
			var to []string
			for j := range c.nodes {
				if j == v {
					continue
				}
				if err := c.be.CutOneWay(c, v, j); err != nil {
					return "", nil, err
				}
				to = append(to, c.nodes[j].ID)
			}
			return fmt.Sprintf("%s's packets to %s dropped, theirs to it delivered", c.nodes[v].ID, strings.Join(to, ",")), c.healNet, nil
		}},
		{name: "flapping-link", bound: boundNormal, duration: d, start: func(c *Cluster, target int, rng *rand.Rand) (string, func() error, error) {
			// One link cut and healed in turn, every 200 to 500 ms.
			a := pick(c, target, rng)
			b := (a + 1 + rng.IntN(len(c.nodes)-1)) % len(c.nodes)
			seed := rng.Uint64()
			stop, done := make(chan struct{}), make(chan error, 1)
			var flips int
			// faultnet on both ends (an admin call each), on every backend:
			// iptables rules take too long to change on a loaded machine.
			block := func(op string) error {
				return errors.Join(c.faultNet(a, op+"="+c.nodes[b].Addr), c.faultNet(b, op+"="+c.nodes[a].Addr))
			}
			go func() { // owned here: heal stops and waits for it
				r := rand.New(rand.NewPCG(seed, seed))
				var errs []error
				cut := false
				for {
					if cut {
						errs = append(errs, block("unblock"))
					} else {
						errs = append(errs, block("block"))
					}
					cut = !cut
					flips++
					select {
					case <-stop:
						done <- errors.Join(errs...)
						return
					case <-time.After(time.Duration(200+r.IntN(301)) * time.Millisecond):
					}
				}
			}()
			return fmt.Sprintf("link %s-%s cut and healed every 200-500ms", c.nodes[a].ID, c.nodes[b].ID), func() error {
				close(stop)
				err := errors.Join(<-done, c.healNet())
				c.hist.event("flapping-link", "", fmt.Sprintf("%d cuts and heals", flips))
				return err
			}, nil
		}},
		{name: "slow-disk", bound: boundNormal, duration: d, start: func(c *Cluster, _ int, rng *rand.Rand) (string, func() error, error) {
			// The Raft leader's log writes each wait 150 ms (a slow fsync).
			i := c.index(c.leader())
			if i < 0 {
				i = rng.IntN(len(c.nodes))
			}
			if err := c.diskDelay(i, slowDiskDelay); err != nil {
				return "", nil, err
			}
			return fmt.Sprintf("%s (leader) writes its Raft log %v late", c.nodes[i].ID, slowDiskDelay), func() error { return c.diskDelay(i, 0) }, nil
		}},
		{name: "replaced-host", bound: boundNormal, duration: d, start: func(c *Cluster, target int, rng *rand.Rand) (string, func() error, error) {
			// kill -9, and the node comes back with an empty data directory
			// under its name (a host replaced, the same flags).
			i := pick(c, target, rng)
			n := c.nodes[i]
			if err := n.Kill(); err != nil {
				return "", nil, err
			}
			if err := c.wipe(i); err != nil {
				return "", nil, err
			}
			return n.ID + " killed with SIGKILL, restarted with an empty data directory", func() error { return c.restartReady(n) }, nil
		}},
		{name: "leave-join", bound: boundNormal, duration: d, start: func(c *Cluster, target int, rng *rand.Rand) (string, func() error, error) {
			// A membership change during a partition: v is cut off, the
			// majority removes it once it is unreachable there and adds it
			// back after the heal.
			v := pick(c, target, rng)
			if _, err := cutAll(c, func(a, b int) bool { return a == v || b == v }); err != nil {
				return "", nil, err
			}
			time.Sleep(leaveAfter)
			peer := (v + 1) % len(c.nodes)
			if err := c.admin(peer, func(ctx context.Context, cl *client.Client) error {
				_, err := cl.Leave(ctx, c.nodes[v].ID)
				return err
			}); err != nil {
				return "", nil, fmt.Errorf("leave %s: %w", c.nodes[v].ID, err)
			}
			c.hist.event("leave", c.nodes[v].ID, "removed through "+c.nodes[peer].ID)
			return fmt.Sprintf("%s isolated, removed through %s after %v, joined again after the heal", c.nodes[v].ID, c.nodes[peer].ID, leaveAfter), func() error {
				if err := c.healNet(); err != nil {
					return err
				}
				if err := c.admin(peer, func(ctx context.Context, cl *client.Client) error {
					_, err := cl.Join(ctx, c.nodes[v].ID, c.nodes[v].Addr)
					return err
				}); err != nil {
					return fmt.Errorf("join %s: %w", c.nodes[v].ID, err)
				}
				c.hist.event("join", c.nodes[v].ID, "added through "+c.nodes[peer].ID)
				return c.waitReady(30 * time.Second)
			}, nil
		}},
		{name: "rolling-restart", bound: boundNormal, duration: 0, start: func(c *Cluster, _ int, _ *rand.Rand) (string, func() error, error) {
			for _, n := range c.nodes {
				if !n.Running() { // crashed earlier: no-crash reports it
					if err := c.restartReady(n); err != nil {
						return "", nil, err
					}
					continue
				}
				if err := n.Kill(); err != nil {
					return "", nil, err
				}
				if err := c.restartReady(n); err != nil {
					return "", nil, err
				}
				time.Sleep(2 * time.Second)
			}
			return "every node killed with SIGKILL and restarted in turn", func() error { return nil }, nil
		}},
	}
	ns = append(ns, resetNemeses(d)...) // reset_test.go
	m := map[string]nemesis{}
	for _, n := range ns {
		n.target = -1
		m[n.name] = n
	}
	return m
}

// nemesisNames returns the names of all, sorted.
func nemesisNames(all map[string]nemesis) []string {
	names := make([]string, 0, len(all))
	for n := range all {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// Nemesis parameters.
const (
	// slowDiskDelay is how late the slow disk writes each Raft log entry.
	slowDiskDelay = 150 * time.Millisecond
	// leaveAfter is how long leave-join's cut holds before the majority
	// removes the cut node: past DeadAfter (1 s), so that the node is
	// unreachable there, and before FenceAfter (3 s), so that the node
	// itself is not fenced yet.
	leaveAfter = 1500 * time.Millisecond
	// clockStep is how far the clock nemeses step a node's clock, either
	// way; the clock bound depends on it (checker_test.go, factor).
	clockStep = 500 * time.Millisecond
)

// index returns n's index, -1 for nil.
func (c *Cluster) index(n *localcluster.Node) int {
	for i, m := range c.nodes {
		if m == n {
			return i
		}
	}
	return -1
}

// diskDelay sets node i's Raft log write delay (/debug/fault/disk).
func (c *Cluster) diskDelay(i int, d time.Duration) error {
	_, err := c.adminDo(i, http.MethodPost, "/debug/fault/disk?delay="+d.String())
	return err
}

// wiper is implemented by backends whose nodes' data is not a directory
// of this host (docker: a volume).
type wiper interface{ Wipe(i int) error }

// wipe empties node i's data directory; the node must not be running.
func (c *Cluster) wipe(i int) error {
	if w, ok := c.be.(wiper); ok {
		return w.Wipe(i)
	}
	dir := c.nodes[i].DataDir
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("wipe %s: %w", dir, err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("wipe %s: %w", dir, err)
	}
	return nil
}

// admin runs f with an SDK client connected to node i only, within 20 s.
func (c *Cluster) admin(i int, f func(context.Context, *client.Client) error) error {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cl, err := c.dial(ctx, i, modeStrict)
	if err != nil {
		return err
	}
	defer cl.Close()
	return f(ctx, cl)
}

// restartReady restarts n and waits until the cluster is ready.
func (c *Cluster) restartReady(n *localcluster.Node) error {
	if err := n.Restart(); err != nil {
		return err
	}
	if err := c.waitReady(30 * time.Second); err != nil {
		return fmt.Errorf("after restarting %s: %w", n.ID, err)
	}
	return nil
}

// leader returns the node every reachable node names as leader, or nil.
func (c *Cluster) leader() *localcluster.Node {
	for i, n := range c.nodes {
		if !n.Running() {
			continue
		}
		st, err := c.status(i)
		if err != nil || st.Raft.Leader == "" {
			continue
		}
		for _, m := range c.nodes {
			if m.ID == st.Raft.Leader {
				return m
			}
		}
	}
	return nil
}

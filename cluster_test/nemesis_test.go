//go:build fault

package cluster_test

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"sort"
	"strings"
	"time"

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
			off := 500 * time.Millisecond
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
				off := 500 * time.Millisecond
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

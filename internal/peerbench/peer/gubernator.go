package peer

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	guber "github.com/gubernator-io/gubernator/v2"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/quotamesh/quotamesh/internal/localcluster"
)

// stopTimeout bounds a child process's graceful shutdown before it is
// killed.
const stopTimeout = 10 * time.Second

// healthPoll is how often StartGubernator asks the daemons whether they
// know their peers.
const healthPoll = 50 * time.Millisecond

// GubernatorConfig describes a local Gubernator cluster.
type GubernatorConfig struct {
	// Exe is the program run as `Exe guberd ...` for each daemon: the peer
	// benchmark's own binary (or a test binary that dispatches the same
	// way). Required.
	Exe string
	// Nodes is the number of daemons (default 3).
	Nodes int
	// FirstIP is the last byte of the first daemon's loopback address
	// (default 50): daemon i listens on 127.0.0.(FirstIP+i).
	FirstIP int
	// SyncWait is GLOBAL's sync interval (0: Gubernator's default, 100 ms).
	SyncWait time.Duration
	// CacheSize is each daemon's rate limit cache (0: Gubernator's
	// default, 50,000).
	CacheSize int
	// ReadyTimeout bounds the start (default 30 s).
	ReadyTimeout time.Duration
}

func (c GubernatorConfig) withDefaults() GubernatorConfig {
	if c.Nodes == 0 {
		c.Nodes = 3
	}
	if c.FirstIP == 0 {
		c.FirstIP = 50
	}
	if c.ReadyTimeout == 0 {
		c.ReadyTimeout = 30 * time.Second
	}
	return c
}

// Gubernator is a running local Gubernator cluster.
type Gubernator struct {
	group *localcluster.Group
	addrs []string // gRPC
}

// StartGubernator starts cfg.Nodes daemon processes with each other as
// static peers, and returns once every daemon says it is healthy and
// knows them all. On error, what was started is stopped.
func StartGubernator(ctx context.Context, cfg GubernatorConfig) (_ *Gubernator, err error) {
	cfg = cfg.withDefaults()
	if cfg.Exe == "" {
		return nil, errors.New("peer: gubernator: no program to run the daemons")
	}
	g, err := localcluster.NewGroup("", "peerbench-gubernator-", false)
	if err != nil {
		return nil, fmt.Errorf("peer: gubernator: %w", err)
	}
	gc := &Gubernator{group: g}
	defer func() {
		if err != nil {
			_ = gc.Stop()
		}
	}()
	var https []string
	for _, ip := range localcluster.Loopback(cfg.FirstIP, cfg.Nodes) {
		a, err := localcluster.FreePort("tcp", ip)
		if err != nil {
			return nil, fmt.Errorf("peer: gubernator: %w", err)
		}
		h, err := localcluster.FreePort("tcp", ip)
		if err != nil {
			return nil, fmt.Errorf("peer: gubernator: %w", err)
		}
		gc.addrs, https = append(gc.addrs, a), append(https, h)
	}
	for i, a := range gc.addrs {
		name := fmt.Sprintf("g%d", i+1)
		argv := []string{cfg.Exe, DaemonCommand, "--grpc", a, "--http", https[i], "--peers", strings.Join(gc.addrs, ","),
			"--sync-wait", cfg.SyncWait.String(), "--cache-size", fmt.Sprint(cfg.CacheSize)}
		if _, err := g.Start(localcluster.ProcSpec{Name: name, Addr: a, Argv: argv,
			LogPath: filepath.Join(g.Dir, name+".log"), KillWithParent: true}); err != nil {
			return nil, fmt.Errorf("peer: gubernator: %w", err)
		}
	}
	rctx, cancel := context.WithTimeout(ctx, cfg.ReadyTimeout)
	defer cancel()
	for _, a := range gc.addrs {
		if err := gc.waitHealthy(rctx, a, cfg.Nodes); err != nil {
			return nil, err
		}
	}
	return gc, nil
}

// waitHealthy asks the daemon at addr for its health until it says it is
// healthy with peers peers, its process dies, or ctx ends.
func (gc *Gubernator) waitHealthy(ctx context.Context, addr string, peers int) error {
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return fmt.Errorf("peer: gubernator: dial %s: %w", addr, err)
	}
	defer conn.Close()
	v1 := guber.NewV1Client(conn)
	tick := time.NewTicker(healthPoll)
	defer tick.Stop()
	why := "no answer yet"
	for {
		if err := gc.group.Died(); err != nil {
			return fmt.Errorf("peer: gubernator: %w", err)
		}
		hctx, cancel := context.WithTimeout(ctx, time.Second)
		h, err := v1.HealthCheck(hctx, &guber.HealthCheckReq{})
		cancel()
		switch {
		case err != nil:
			why = err.Error()
		case h.Status == "healthy" && int(h.PeerCount) == peers:
			return nil
		default:
			why = fmt.Sprintf("status %s, %d peers (%s)", h.Status, h.PeerCount, h.Message)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("peer: gubernator daemon %s not ready: %s: %w", addr, why, context.Cause(ctx))
		case <-tick.C:
		}
	}
}

// Addrs are the daemons' gRPC addresses, in order.
func (gc *Gubernator) Addrs() []string { return gc.addrs }

// Pids are the daemons' process IDs.
func (gc *Gubernator) Pids() []int { return gc.group.Pids() }

// Died returns the death of a daemon process, or nil.
func (gc *Gubernator) Died() error { return gc.group.Died() }

// Stop stops the daemons and removes their directory.
func (gc *Gubernator) Stop() error { return gc.group.Stop(stopTimeout) }

// Dial connects one client to each daemon (see GuberLimiter); names are
// the daemons' addresses. The caller closes the limiters.
func (gc *Gubernator) Dial(cfg GuberClientConfig) ([]*GuberLimiter, []string, error) {
	var out []*GuberLimiter
	for _, a := range gc.addrs {
		l, err := DialGuber(a, cfg)
		if err != nil {
			for _, o := range out {
				_ = o.Close()
			}
			return nil, nil, err
		}
		out = append(out, l)
	}
	return out, gc.addrs, nil
}

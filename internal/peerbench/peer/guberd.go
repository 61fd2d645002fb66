package peer

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	guber "github.com/gubernator-io/gubernator/v2"
	"github.com/sirupsen/logrus"
)

// DaemonCommand is the first argument that makes the peer benchmark's
// binary run one Gubernator daemon (RunDaemon) instead of the benchmark.
const DaemonCommand = "guberd"

// daemonReady bounds how long SpawnDaemon may take to listen.
const daemonReady = 10 * time.Second

// closeWait bounds a daemon's graceful close.
const closeWait = 2 * time.Second

// RunDaemon runs one Gubernator daemon until ctx ends, configured by args:
// --grpc and --http (listen addresses), --peers (every daemon's gRPC
// address, this one's included), --sync-wait (GLOBAL's sync interval; 0:
// Gubernator's default) and --cache-size (0: Gubernator's default).
// Gubernator logs warnings and errors to logw.
func RunDaemon(ctx context.Context, args []string, logw io.Writer) error {
	fs := flag.NewFlagSet(DaemonCommand, flag.ContinueOnError)
	fs.SetOutput(logw)
	grpcAddr := fs.String("grpc", "", "gRPC listen address (host:port), also advertised to the peers")
	httpAddr := fs.String("http", "", "HTTP listen address (host:port)")
	peers := fs.String("peers", "", "comma-separated gRPC addresses of every daemon, this one's included")
	syncWait := fs.Duration("sync-wait", 0, "GLOBAL behaviour's sync interval (0: Gubernator's default)")
	cacheSize := fs.Int("cache-size", 0, "rate limits each daemon holds (0: Gubernator's default)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	switch {
	case *grpcAddr == "" || *httpAddr == "":
		return errors.New("guberd: --grpc and --http are required")
	case *peers == "":
		return errors.New("guberd: --peers is required")
	case *syncWait < 0:
		return fmt.Errorf("guberd: --sync-wait %v: want 0 or more", *syncWait)
	case *cacheSize < 0:
		return fmt.Errorf("guberd: --cache-size %d: want 0 or more", *cacheSize)
	}
	var infos []guber.PeerInfo
	self := false
	for _, p := range strings.Split(*peers, ",") {
		infos = append(infos, guber.PeerInfo{GRPCAddress: p})
		self = self || p == *grpcAddr
	}
	if !self {
		return fmt.Errorf("guberd: --peers %s does not hold this daemon's --grpc %s", *peers, *grpcAddr)
	}
	log := logrus.New()
	log.SetOutput(logw)
	log.SetLevel(logrus.WarnLevel)
	conf := guber.DaemonConfig{
		GRPCListenAddress: *grpcAddr,
		HTTPListenAddress: *httpAddr,
		AdvertiseAddress:  *grpcAddr,
		InstanceID:        *grpcAddr,
		PeerDiscoveryType: "none",
		CacheSize:         *cacheSize,
		Logger:            logrus.NewEntry(log),
		Behaviors:         guber.BehaviorConfig{GlobalSyncWait: *syncWait},
	}
	sctx, cancel := context.WithTimeout(ctx, daemonReady)
	d, err := guber.SpawnDaemon(sctx, conf)
	cancel()
	if err != nil {
		if d != nil {
			d.Close()
		}
		return fmt.Errorf("guberd: start the daemon on %s: %w", *grpcAddr, err)
	}
	d.SetPeers(infos)
	<-ctx.Done()
	// Close stops the gRPC server gracefully, which waits for every
	// connection to end, the peers' included: daemons stopped together
	// would wait for each other. The process exits after closeWait
	// whatever Close still waits for.
	closed := make(chan struct{})
	go func() { d.Close(); close(closed) }()
	select {
	case <-closed:
	case <-time.After(closeWait):
	}
	return nil
}

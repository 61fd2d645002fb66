package consensus

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	wal "github.com/hashicorp/raft-wal"
	"github.com/hashicorp/raft-wal/metadb"
	"github.com/rs/zerolog"

	"github.com/quotamesh/quotamesh/limits"
)

const (
	// walSegmentSize is the size of each raft-wal segment file. Segments are
	// preallocated; the table changes rarely, so the library's 64 MiB
	// default would only waste disk.
	walSegmentSize = 8 << 20
	// snapshotsRetained is how many snapshots stay on disk.
	snapshotsRetained = 2
	// maxPooledConns is how many idle Raft connections are kept per peer.
	maxPooledConns = 3
	// minBackoff and the HeartbeatTimeout/2 cap bound the wait between two
	// attempts at reaching the leader.
	minBackoff = 5 * time.Millisecond
)

// Store is one node's replica of the limit table, agreed through Raft.
//
// Table is a lock-free read of the latest table applied on this node and is
// what the request path uses; nothing on the request path ever waits for
// Raft. Writes (Set, Delete), consistent reads (Get, List, Sync) and
// membership changes (Join, Leave) go to the leader, forwarded through the
// Forwarder when this node is not the leader, and are retried with the same
// request ID across leader changes until their context ends.
//
// All methods are safe for concurrent use.
type Store struct {
	cfg   Config
	log   zerolog.Logger
	hlog  *hclogAdapter
	fsm   *fsm
	raft  *raft.Raft
	trans *guardedTransport
	layer *trackedLayer
	wal   *wal.WAL
	meta  *metadb.BoltMetaDB

	// readyTerm is the term in which this node, as leader, has seen a
	// barrier applied: from then on its table holds every change committed
	// before it won, and consistent reads may be served.
	readyTerm atomic.Uint64

	forwarded atomic.Uint64 // requests this node sent to a leader
	served    atomic.Uint64 // forwarded requests this node handled

	mu       sync.Mutex
	closed   bool
	inflight sync.WaitGroup // goroutines waiting on Raft futures
	closing  chan struct{}  // closed when Close starts
	ctx      context.Context
	cancel   context.CancelFunc
	kick     chan struct{} // wakes the reconcile loop (size 1: a pending wake is enough)
	loopDone chan struct{}

	// Leader changes, observed from Raft, wake requests waiting to retry.
	observer  *raft.Observer
	observed  chan raft.Observation // drained by run; Raft drops observations when full
	leaderMu  sync.Mutex
	newLeader chan struct{} // closed and replaced on every leader change

	closeOnce sync.Once
	closeErr  error

	// Leader-side membership bookkeeping, used only by the run goroutine.
	seenTerm uint64
	lastSeen map[raft.ServerID]time.Time
}

// Open starts this node's Raft instance from cfg.DataDir: it restores the
// latest snapshot and the log, bootstraps a new cluster if the directory is
// empty and cfg.Bootstrap lists this node, and returns without waiting for a
// leader. Table returns the restored table at once (the snapshot's; the log
// entries after it are applied when a leader confirms they are committed).
func Open(cfg Config) (*Store, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	zl := cfg.Logger.With().Str("component", "raft").Logger() // the caller's logger names the node
	hl := newHCLog(zl)

	walDir := filepath.Join(cfg.DataDir, "wal")
	if err := os.MkdirAll(walDir, 0o700); err != nil {
		return nil, fmt.Errorf("quotamesh/consensus: creating %s: %w", walDir, err)
	}
	w, meta, err := openLog(walDir, hl.Named("wal"), walSegmentSize)
	if err != nil {
		return nil, err
	}
	fail := func(err error) (*Store, error) {
		_ = w.Close()
		_ = meta.Close()
		return nil, err
	}
	snaps, err := raft.NewFileSnapshotStoreWithLogger(cfg.DataDir, snapshotsRetained, hl.Named("snapshot"))
	if err != nil {
		return fail(fmt.Errorf("quotamesh/consensus: opening snapshots in %s: %w", cfg.DataDir, err))
	}
	hasState, err := raft.HasExistingState(w, w, snaps)
	if err != nil {
		return fail(fmt.Errorf("%w: reading %s: %w", ErrDataDir, cfg.DataDir, err))
	}
	adopted, err := checkIdentity(cfg, hasState)
	if err != nil {
		return fail(err)
	}
	if adopted {
		zl.Warn().Str("data_dir", cfg.DataDir).Msg("the data directory had no identity file: it is now recorded as this node's")
	}
	if hasState {
		if err := checkState(cfg.DataDir, w, snaps); err != nil {
			return fail(err)
		}
	}

	layer := newTrackedLayer(cfg.Layer, cfg.Address)
	trans := &guardedTransport{NetworkTransport: raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{
		Stream:  layer,
		MaxPool: maxPooledConns,
		Timeout: cfg.RPCTimeout,
		Logger:  hl.Named("net"),
	})}
	fail = func(err error) (*Store, error) {
		_ = trans.Close()
		_ = layer.Close()
		_ = w.Close()
		_ = meta.Close()
		return nil, err
	}

	rc := raftConfig(cfg, hl)
	if !hasState && listed(cfg.Bootstrap, cfg.NodeID) {
		servers := bootstrapServers(cfg.Bootstrap, cfg.MaxVoters)
		if err := raft.BootstrapCluster(rc, w, w, snaps, trans, raft.Configuration{Servers: servers}); err != nil {
			return fail(fmt.Errorf("quotamesh/consensus: bootstrapping: %w", err))
		}
		zl.Info().Int("members", len(servers)).Int("voters", min(len(servers), cfg.MaxVoters)).Msg("bootstrapped a new cluster")
	}

	f := newFSM(zl, cfg.OnChange)
	var logs interface {
		raft.LogStore
		raft.StableStore
	} = w
	if cfg.LogDelay != nil {
		logs = slowLog{w, cfg.LogDelay}
	}
	r, err := newRaft(rc, f, logs, snaps, trans)
	if err != nil {
		if hasState {
			err = fmt.Errorf("%w: starting Raft from %s: %w", ErrDataDir, cfg.DataDir, err)
		} else {
			err = fmt.Errorf("quotamesh/consensus: starting Raft in %s: %w", cfg.DataDir, err)
		}
		return fail(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Store{
		cfg:      cfg,
		log:      zl,
		hlog:     hl,
		fsm:      f,
		raft:     r,
		trans:    trans,
		layer:    layer,
		wal:      w,
		meta:     meta,
		closing:  make(chan struct{}),
		ctx:      ctx,
		cancel:   cancel,
		kick:     make(chan struct{}, 1),
		loopDone: make(chan struct{}),
		// A few observations may pile up while run is busy reconciling;
		// only the fact that the leader changed matters.
		observed:  make(chan raft.Observation, 16),
		newLeader: make(chan struct{}),
	}
	s.observer = raft.NewObserver(s.observed, false, func(o *raft.Observation) bool {
		_, ok := o.Data.(raft.LeaderObservation)
		return ok
	})
	r.RegisterObserver(s.observer)
	go s.run()
	zl.Info().Bool("restored", hasState).Uint64("applied", f.applied.Load()).Int("rules", f.table.Load().Len()).Msg("raft started")
	return s, nil
}

// newRaft is raft.NewRaft with its panics turned into errors. NewRaft panics
// when a log entry it scans for configuration changes cannot be read; it has
// started no goroutine at that point, so recovering leaves nothing running.
// checkState should have reported any such entry already: this is the net
// under it.
func newRaft(rc *raft.Config, f raft.FSM, w interface {
	raft.LogStore
	raft.StableStore
}, snaps raft.SnapshotStore, trans raft.Transport) (r *raft.Raft, err error) {
	defer func() {
		if p := recover(); p != nil {
			r, err = nil, fmt.Errorf("raft panicked reading its state: %v", p)
		}
	}()
	return raft.NewRaft(rc, f, w, w, snaps, trans)
}

// openLog opens the raft-wal log and stable store in walDir with segments of
// segSize bytes.
//
// raft-wal does not close the metadata database it opens by default, and
// that database holds a file lock: pass our own and close it ourselves, or a
// Store reopened in the same process would wait for the lock forever.
func openLog(walDir string, hl hclog.Logger, segSize int) (*wal.WAL, *metadb.BoltMetaDB, error) {
	meta := &metadb.BoltMetaDB{}
	w, err := wal.Open(walDir, wal.WithMetaStore(meta), wal.WithLogger(hl), wal.WithSegmentSize(segSize))
	if err != nil {
		_ = meta.Close()
		return nil, nil, fmt.Errorf("%w: opening the Raft log in %s: %w", ErrDataDir, walDir, err)
	}
	return w, meta, nil
}

func raftConfig(cfg Config, hl *hclogAdapter) *raft.Config {
	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(cfg.NodeID)
	rc.HeartbeatTimeout = cfg.HeartbeatTimeout
	rc.ElectionTimeout = cfg.ElectionTimeout
	rc.LeaderLeaseTimeout = cfg.LeaderLeaseTimeout
	rc.CommitTimeout = cfg.CommitTimeout
	rc.SnapshotInterval = cfg.SnapshotInterval
	rc.SnapshotThreshold = cfg.SnapshotThreshold
	rc.TrailingLogs = cfg.SnapshotThreshold
	// A leader removes itself only through Leave, which transfers leadership
	// first; if it ever happens otherwise, stay up as an idle follower and
	// let Close shut down in order.
	rc.ShutdownOnRemove = false
	rc.NoLegacyTelemetry = true
	rc.Logger = hl
	return rc
}

func listed(servers []Server, id string) bool {
	for _, s := range servers {
		if s.ID == id {
			return true
		}
	}
	return false
}

// Table returns the latest table applied on this node. It is one atomic
// load: use it on the request path. It may lag the leader by a commit
// timeout, or more while this node cannot hear the leader; use Get or List
// for a linearizable read.
func (s *Store) Table() *limits.Table { return s.fsm.table.Load() }

// AppliedIndex is the log index of the last change applied on this node.
func (s *Store) AppliedIndex() uint64 { return s.fsm.applied.Load() }

func (s *Store) begin() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.inflight.Add(1)
	return true
}

func (s *Store) open() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return !s.closed
}

// Close stops the node: it refuses new calls (ErrClosed), hands leadership
// to another voter if it leads (so the cluster does not wait an election
// timeout), waits for every Raft operation in flight, stops Raft and closes
// the log, the snapshot store and the StreamLayer. It does not remove the
// node from the cluster (see Leave). It is idempotent; every call returns the
// first call's result.
func (s *Store) Close() error {
	return s.shutdown(true)
}

func (s *Store) shutdown(transfer bool) error {
	s.closeOnce.Do(func() { s.closeErr = s.doClose(transfer) })
	return s.closeErr
}

func (s *Store) doClose(transfer bool) error {
	s.mu.Lock()
	s.closed = true
	close(s.closing)
	s.mu.Unlock()
	s.cancel()
	<-s.loopDone
	s.raft.DeregisterObserver(s.observer)

	if transfer && s.raft.State() == raft.Leader && s.otherVoters() > 0 {
		if err := s.raft.LeadershipTransfer().Error(); err != nil {
			s.log.Warn().Err(err).Msg("leadership transfer before closing failed; the others will elect a leader")
		} else {
			s.log.Info().Msg("handed leadership over before closing")
		}
	}
	// Raft resolves every future while it runs, so this ends; stopping Raft
	// first could strand futures queued for the state machine.
	s.inflight.Wait()
	s.hlog.quiet.Store(true)
	err := s.raft.Shutdown().Error()
	_ = s.trans.Close()
	err = errors.Join(err, s.layer.Close(), s.wal.Close(), s.meta.Close())
	s.log.Info().Err(err).Msg("raft stopped")
	if err != nil {
		return fmt.Errorf("quotamesh/consensus: closing: %w", err)
	}
	return nil
}

func (s *Store) otherVoters() int {
	f := s.raft.GetConfiguration()
	if f.Error() != nil {
		return 0
	}
	n := 0
	for _, srv := range f.Configuration().Servers {
		if srv.Suffrage == raft.Voter && string(srv.ID) != s.cfg.NodeID {
			n++
		}
	}
	return n
}

// bootstrapServers is the first configuration of a cluster bootstrapped
// from list: its first maxVoters servers vote, the rest do not. Every
// initial node is given the same list, so each bootstraps the same
// configuration.
func bootstrapServers(list []Server, maxVoters int) []raft.Server {
	servers := make([]raft.Server, 0, len(list))
	for i, s := range list {
		suffrage := raft.Voter
		if i >= maxVoters {
			suffrage = raft.Nonvoter
		}
		servers = append(servers, raft.Server{Suffrage: suffrage, ID: raft.ServerID(s.ID), Address: raft.ServerAddress(s.Address)})
	}
	return servers
}

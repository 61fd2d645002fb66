package consensus

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
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
	trans *raft.NetworkTransport
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
	trans := raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{
		Stream:  layer,
		MaxPool: maxPooledConns,
		Timeout: cfg.RPCTimeout,
		Logger:  hl.Named("net"),
	})
	fail = func(err error) (*Store, error) {
		_ = trans.Close()
		_ = layer.Close()
		_ = w.Close()
		_ = meta.Close()
		return nil, err
	}

	rc := raftConfig(cfg, hl)
	if !hasState && listed(cfg.Bootstrap, cfg.NodeID) {
		var servers []raft.Server
		for _, s := range cfg.Bootstrap {
			servers = append(servers, raft.Server{Suffrage: raft.Voter, ID: raft.ServerID(s.ID), Address: raft.ServerAddress(s.Address)})
		}
		if err := raft.BootstrapCluster(rc, w, w, snaps, trans, raft.Configuration{Servers: servers}); err != nil {
			return fail(fmt.Errorf("quotamesh/consensus: bootstrapping: %w", err))
		}
		zl.Info().Int("voters", len(servers)).Msg("bootstrapped a new cluster")
	}

	f := newFSM(zl, cfg.OnChange)
	r, err := newRaft(rc, f, w, snaps, trans)
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
func newRaft(rc *raft.Config, f raft.FSM, w *wal.WAL, snaps raft.SnapshotStore, trans raft.Transport) (r *raft.Raft, err error) {
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

// Set validates r and then proposes it: it replaces the rule with the same
// pattern, or adds it. It returns the change's log index once the change is
// committed and applied on this node. A rule that does not validate is
// refused before anything is proposed, with an error that names the bad
// value and wraps limits.ErrInvalidPattern or limits.ErrInvalidRate.
func (s *Store) Set(ctx context.Context, r limits.Rule) (uint64, error) {
	if err := r.Validate(); err != nil {
		return 0, err
	}
	return s.write(ctx, request{Op: opSet, ID: newRequestID(), Rule: toWire(r)}, "set "+r.String())
}

// Delete proposes removing the rule with exactly this pattern and returns
// the change's log index once it is committed and applied on this node. It
// fails with an error wrapping limits.ErrNoRule if the table has no such
// rule when the deletion is applied.
func (s *Store) Delete(ctx context.Context, pattern string) (uint64, error) {
	if _, err := limits.ParsePattern(pattern); err != nil {
		return 0, err
	}
	return s.write(ctx, request{Op: opDelete, ID: newRequestID(), Pattern: pattern}, fmt.Sprintf("delete %q", clip(pattern)))
}

// Get returns the rule with exactly this pattern, as of a moment between the
// call and its return (a linearizable read: the leader confirms its
// leadership and this node applies everything the leader had applied).
func (s *Store) Get(ctx context.Context, pattern string) (limits.Rule, bool, error) {
	if _, err := limits.ParsePattern(pattern); err != nil {
		return limits.Rule{}, false, err
	}
	if _, err := s.Sync(ctx); err != nil {
		return limits.Rule{}, false, err
	}
	r, ok := s.Table().Get(pattern)
	return r, ok, nil
}

// List returns every rule, sorted by pattern, as of a moment between the
// call and its return (linearizable, as Get).
func (s *Store) List(ctx context.Context) ([]limits.Rule, error) {
	if _, err := s.Sync(ctx); err != nil {
		return nil, err
	}
	return s.Table().Rules(), nil
}

// Sync brings this node up to date with the cluster: it asks the leader,
// which first confirms it still leads (VerifyLeader) and that it has applied
// every change committed before it won its term (a Barrier), for its applied
// index, and waits until this node has applied that far. After Sync returns,
// Table reflects every change acknowledged before Sync was called. It returns
// the index waited for.
func (s *Store) Sync(ctx context.Context) (uint64, error) {
	resp, err := s.do(ctx, request{Op: opSync}, "sync")
	if err != nil {
		return 0, err
	}
	if err := s.fsm.waitApplied(ctx, s.closing, resp.Index); err != nil {
		return 0, s.applyWaitErr(err, "sync", resp.Index)
	}
	return resp.Index, nil
}

// write sends a change to the leader and waits until it is applied here.
func (s *Store) write(ctx context.Context, req request, what string) (uint64, error) {
	resp, err := s.do(ctx, req, what)
	if err != nil {
		return 0, err
	}
	if err := s.fsm.waitApplied(ctx, s.closing, resp.Index); err != nil {
		return resp.Index, s.applyWaitErr(err, what, resp.Index)
	}
	return resp.Index, nil
}

func (s *Store) applyWaitErr(err error, what string, index uint64) error {
	if errors.Is(err, ErrClosed) {
		return err
	}
	return fmt.Errorf("%w: %s: committed at index %d but not yet applied on this node (applied %d): %w",
		ErrTimeout, what, index, s.fsm.applied.Load(), err)
}

// do runs req on the leader (here or through the Forwarder), retrying while
// no leader is known or the one tried has stepped down, until ctx ends.
func (s *Store) do(ctx context.Context, req request, what string) (response, error) {
	backoff := minBackoff
	maxBackoff := max(minBackoff, s.cfg.HeartbeatTimeout/2)
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for {
		if !s.open() {
			return response{}, fmt.Errorf("%w: %s", ErrClosed, what)
		}
		resp, err := s.attempt(ctx, req)
		if err == nil {
			return resp, nil
		}
		if ctx.Err() != nil {
			return response{}, timeoutErr(ctx, what, err, req.Op)
		}
		if !retryable(err) {
			return resp, err
		}
		s.log.Debug().Err(err).Str("op", req.Op.String()).Dur("backoff", backoff).Msg("retrying")
		if timer == nil {
			timer = time.NewTimer(backoff)
		} else {
			timer.Reset(backoff)
		}
		select {
		case <-timer.C:
			backoff = min(2*backoff, maxBackoff)
		case <-s.leaderChanged():
			backoff = minBackoff
		case <-ctx.Done():
			return response{}, timeoutErr(ctx, what, err, req.Op)
		case <-s.closing:
			return response{}, fmt.Errorf("%w: %s", ErrClosed, what)
		}
	}
}

// leaderChanged returns a channel that is closed when the leader this node
// knows changes next.
func (s *Store) leaderChanged() <-chan struct{} {
	s.leaderMu.Lock()
	defer s.leaderMu.Unlock()
	return s.newLeader
}

func (s *Store) signalLeaderChange() {
	s.leaderMu.Lock()
	close(s.newLeader)
	s.newLeader = make(chan struct{})
	s.leaderMu.Unlock()
}

func timeoutErr(ctx context.Context, what string, last error, o op) error {
	unknown := ""
	if o == opSet || o == opDelete {
		unknown = " (the change may still take effect)"
	}
	if last == nil || errors.Is(last, ctx.Err()) {
		return fmt.Errorf("%w: %s%s: %w", ErrTimeout, what, unknown, ctx.Err())
	}
	return fmt.Errorf("%w: %s%s: %w; last error: %w", ErrTimeout, what, unknown, ctx.Err(), last)
}

// attempt runs req once: here if this node leads, else on the leader it
// knows.
func (s *Store) attempt(ctx context.Context, req request) (response, error) {
	if s.raft.State() == raft.Leader {
		return s.lead(ctx, req)
	}
	addr, id := s.raft.LeaderWithID()
	if addr == "" || string(id) == s.cfg.NodeID {
		return response{}, fmt.Errorf("%w: node %s knows of none", ErrNoLeader, s.cfg.NodeID)
	}
	s.forwarded.Add(1)
	return s.forward(ctx, string(addr), string(id), req)
}

// forward sends req to the member at addr and decodes its answer.
func (s *Store) forward(ctx context.Context, addr, id string, req request) (response, error) {
	if dl, ok := ctx.Deadline(); ok {
		req.Budget = max(time.Until(dl), time.Millisecond)
	}
	b, err := encodeRequest(req)
	if err != nil {
		return response{}, fmt.Errorf("quotamesh/consensus: encoding a %v request: %w", req.Op, err)
	}
	out, err := s.cfg.Forwarder.Forward(ctx, addr, b)
	if err != nil {
		if ctx.Err() != nil {
			return response{}, ctx.Err()
		}
		return response{}, fmt.Errorf("%w: leader %s at %s is unreachable from %s: %w", ErrNoLeader, id, addr, s.cfg.NodeID, err)
	}
	resp, err := decodeResponse(out)
	if err != nil {
		return response{}, err
	}
	return resp, resp.err()
}

// HandleForward runs a request that another member forwarded to this one
// and returns the encoded response; the node hands it req exactly as the
// other member's Forwarder sent it, and sends the response back as is. The
// response carries any error as a code, so that the sender rebuilds an error
// with the same sentinel. The returned error is non-nil only when req does
// not decode (the response then says so too): the node may count or log it.
//
// A leader-only request that reaches a follower is passed on to the leader
// the follower knows, at most once.
func (s *Store) HandleForward(ctx context.Context, req []byte) ([]byte, error) {
	r, err := decodeRequest(req)
	if err != nil {
		return encodeResponse(response{Code: codeOf(err), Msg: err.Error()}), err
	}
	return s.handle(ctx, r), nil
}

// HandleForwardFrom is HandleForward for a request whose sender the node has
// authenticated: caller is the node ID in the verified certificate of the
// connection the request arrived on. Use it for requests from the network;
// HandleForward trusts whoever sent the bytes.
//
// A caller that is not a member of the latest configuration this node knows
// may only ask to join the cluster as itself (what JoinVia sends): a join of
// any other node, and every other request, is refused with ErrForbidden.
// Without this a node holding any CA-signed certificate could add arbitrary
// members. Members may send anything, including the join of another node: a
// seed passes on the join it received from the joining node, and an
// operator's join reaches the leader through the member it was given to.
//
// The returned error is non-nil when req does not decode or was refused (the
// response says so too): the node may count or log it.
func (s *Store) HandleForwardFrom(ctx context.Context, caller string, req []byte) ([]byte, error) {
	r, err := decodeRequest(req)
	if err != nil {
		return encodeResponse(response{Code: codeOf(err), Msg: err.Error()}), err
	}
	if err := s.authorize(caller, r); err != nil {
		return encodeResponse(response{Code: codeOf(err), Msg: err.Error()}), err
	}
	return s.handle(ctx, r), nil
}

// authorize applies HandleForwardFrom's rule to a decoded request.
func (s *Store) authorize(caller string, r request) error {
	if s.hasMember(caller) {
		return nil
	}
	if r.Op == opJoin && r.Server.ID == caller {
		return nil
	}
	if r.Op == opJoin {
		return fmt.Errorf("%w: node %q is not a member and may only join as itself, not as %q", ErrForbidden, clip(caller), clip(r.Server.ID))
	}
	return fmt.Errorf("%w: node %q is not a member and may not send a %v request", ErrForbidden, clip(caller), r.Op)
}

// hasMember reports whether id is in the latest configuration this node
// knows.
func (s *Store) hasMember(id string) bool {
	if id == "" {
		return false
	}
	f := s.raft.GetConfiguration()
	if f.Error() != nil {
		return false
	}
	for _, srv := range f.Configuration().Servers {
		if string(srv.ID) == id {
			return true
		}
	}
	return false
}

// handle runs a decoded forwarded request and returns the encoded response.
func (s *Store) handle(ctx context.Context, r request) []byte {
	s.served.Add(1)
	var err error
	if r.Budget > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, r.Budget)
		defer cancel()
	}
	var resp response
	switch {
	case !s.open():
		err = fmt.Errorf("%w: node %s", ErrClosed, s.cfg.NodeID)
	case r.Op == opStatus:
		resp.Status = s.status()
	case s.raft.State() == raft.Leader:
		resp, err = s.lead(ctx, r)
	default:
		addr, id := s.raft.LeaderWithID()
		switch {
		case addr == "" || string(id) == s.cfg.NodeID:
			err = fmt.Errorf("%w: node %s knows of none", ErrNoLeader, s.cfg.NodeID)
		case r.Hops >= maxHops:
			err = fmt.Errorf("%w: node %s follows %s", ErrNotLeader, s.cfg.NodeID, id)
		default:
			r.Hops++
			resp, err = s.forward(ctx, string(addr), string(id), r)
		}
	}
	if err != nil {
		resp.Code, resp.Msg = codeOf(err), err.Error()
	}
	addr, id := s.raft.LeaderWithID()
	resp.Leader = Server{ID: string(id), Address: string(addr)}
	return encodeResponse(resp)
}

// lead runs req on this node as the leader.
func (s *Store) lead(ctx context.Context, req request) (response, error) {
	switch req.Op {
	case opSet:
		if err := req.Rule.rule().Validate(); err != nil {
			return response{}, err
		}
		return s.propose(ctx, command{Op: opSet, ID: req.ID, Rule: req.Rule})
	case opDelete:
		if _, err := limits.ParsePattern(req.Pattern); err != nil {
			return response{}, err
		}
		return s.propose(ctx, command{Op: opDelete, ID: req.ID, Pattern: req.Pattern})
	case opSync:
		return s.readIndex(ctx)
	case opJoin:
		return response{}, s.addMember(ctx, req.Server)
	case opLeave:
		return response{}, s.removeMember(ctx, req.Server.ID)
	}
	return response{}, fmt.Errorf("%w: operation %v", ErrBadRequest, req.Op)
}

// propose appends cmd to the log and waits until the leader has applied it.
func (s *Store) propose(ctx context.Context, cmd command) (response, error) {
	b, err := encodeCommand(cmd)
	if err != nil {
		return response{}, fmt.Errorf("quotamesh/consensus: encoding a %v command: %w", cmd.Op, err)
	}
	o := s.submit(ctx, func() raft.Future { return s.raft.Apply(b, s.cfg.ElectionTimeout) })
	if o.err != nil {
		return response{}, s.raftErr(o.err, "proposing a "+cmd.Op.String())
	}
	res, ok := o.resp.(applyResult)
	if !ok {
		return response{}, fmt.Errorf("quotamesh/consensus: the state machine answered %T", o.resp)
	}
	return response{Index: res.Index}, res.err()
}

// readIndex is the leader's half of a linearizable read: it returns an
// applied index that covers every change acknowledged before it was called.
func (s *Store) readIndex(ctx context.Context) (response, error) {
	term := s.raft.CurrentTerm()
	if err := s.ensureReady(ctx, term); err != nil {
		return response{}, err
	}
	if o := s.submit(ctx, s.raft.VerifyLeader); o.err != nil {
		return response{}, s.raftErr(o.err, "verifying leadership")
	}
	if s.raft.CurrentTerm() != term {
		return response{}, fmt.Errorf("%w: node %s: the term changed during a read", ErrNotLeader, s.cfg.NodeID)
	}
	return response{Index: s.fsm.applied.Load()}, nil
}

// ensureReady makes sure this leader has applied everything committed before
// it won the given term, with a Barrier once per term.
func (s *Store) ensureReady(ctx context.Context, term uint64) error {
	if s.readyTerm.Load() == term {
		return nil
	}
	if o := s.submit(ctx, func() raft.Future { return s.raft.Barrier(s.cfg.ElectionTimeout) }); o.err != nil {
		return s.raftErr(o.err, "applying a barrier")
	}
	if s.raft.CurrentTerm() != term {
		return fmt.Errorf("%w: node %s: the term changed during a barrier", ErrNotLeader, s.cfg.NodeID)
	}
	s.readyTerm.Store(term)
	return nil
}

// outcome is a resolved Raft future.
type outcome struct {
	err   error
	resp  any
	index uint64
}

// submit starts a Raft operation and waits for it until ctx ends or Close
// starts. The future is waited on by a tracked goroutine, because Raft's
// futures cannot be cancelled: Close lets every such goroutine finish (Raft
// resolves every future while it runs) before it stops Raft.
func (s *Store) submit(ctx context.Context, start func() raft.Future) outcome {
	if !s.begin() {
		return outcome{err: raft.ErrRaftShutdown}
	}
	f := start()
	ch := make(chan outcome, 1) // the waiter never blocks, even if nobody reads
	go func() {
		defer s.inflight.Done()
		o := outcome{err: f.Error()}
		if o.err == nil {
			switch f := f.(type) {
			case raft.ApplyFuture:
				o.resp, o.index = f.Response(), f.Index()
			case raft.IndexFuture:
				o.index = f.Index()
			}
		}
		ch <- o
	}()
	select {
	case o := <-ch:
		return o
	case <-ctx.Done():
		return outcome{err: ctx.Err()}
	case <-s.closing:
		return outcome{err: raft.ErrRaftShutdown}
	}
}

// raftErr maps Raft's errors to this package's: the ones after which a
// request may be retried on the (new) leader become ErrNotLeader or
// ErrNoLeader.
func (s *Store) raftErr(err error, what string) error {
	switch {
	case errors.Is(err, raft.ErrNotLeader), errors.Is(err, raft.ErrLeadershipLost),
		errors.Is(err, raft.ErrLeadershipTransferInProgress), errors.Is(err, raft.ErrNotVoter):
		return fmt.Errorf("%w: node %s %s: %v", ErrNotLeader, s.cfg.NodeID, what, err)
	case errors.Is(err, raft.ErrEnqueueTimeout):
		return fmt.Errorf("%w: node %s %s: the leader is busy: %v", ErrNoLeader, s.cfg.NodeID, what, err)
	case errors.Is(err, raft.ErrRaftShutdown):
		return fmt.Errorf("%w: node %s %s", ErrClosed, s.cfg.NodeID, what)
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return err
	}
	return fmt.Errorf("quotamesh/consensus: node %s %s: %w", s.cfg.NodeID, what, err)
}

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

// newRequestID returns a random nonzero request ID.
func newRequestID() uint64 {
	for {
		if id := rand.Uint64(); id != 0 {
			return id
		}
	}
}

// Leader returns the leader this node knows, or empty strings.
func (s *Store) Leader() (id, addr string) {
	a, i := s.raft.LeaderWithID()
	return string(i), string(a)
}

// State is this node's Raft state: "follower", "candidate", "leader",
// "shutdown", or "closed" once Close has been called.
func (s *Store) State() string {
	if !s.open() {
		return "closed"
	}
	return stateName(s.raft.State())
}

func stateName(st raft.RaftState) string {
	switch st {
	case raft.Follower:
		return "follower"
	case raft.Candidate:
		return "candidate"
	case raft.Leader:
		return "leader"
	}
	return "shutdown"
}

func (s *Store) status() status {
	_, id := s.raft.LeaderWithID()
	return status{
		ID:        s.cfg.NodeID,
		State:     stateName(s.raft.State()),
		LeaderID:  string(id),
		LastIndex: s.raft.LastIndex(),
		Applied:   s.fsm.applied.Load(),
	}
}

// Stats is a snapshot of a Store's counters and Raft indexes, for metrics and
// the status command.
type Stats struct {
	// State is as State returns it.
	State string
	// LeaderID is the leader this node knows, or empty.
	LeaderID string
	// Term is Raft's current term; it grows with every election.
	Term uint64
	// LastLogIndex, CommitIndex and AppliedIndex are Raft's (AppliedIndex
	// counts every log entry, not only changes to the table).
	LastLogIndex      uint64
	CommitIndex       uint64
	AppliedIndex      uint64
	LastSnapshotIndex uint64
	// TableIndex is the log index of the last change in Table.
	TableIndex uint64
	// Rules is the number of rules in Table.
	Rules int
	// Voters and NonVoters count the members of the latest configuration
	// this node knows.
	Voters    int
	NonVoters int
	// LastContact is how long ago this follower last heard from the leader
	// (0 on the leader, -1 if never).
	LastContact time.Duration
	// Forwarded counts requests this node sent to a leader; Served counts
	// requests other members forwarded to this one.
	Forwarded uint64
	Served    uint64
}

// Stats returns current counters.
func (s *Store) Stats() Stats {
	_, id := s.raft.LeaderWithID()
	st := Stats{
		State:        s.State(),
		LeaderID:     string(id),
		Term:         s.raft.CurrentTerm(),
		LastLogIndex: s.raft.LastIndex(),
		CommitIndex:  s.raft.CommitIndex(),
		AppliedIndex: s.raft.AppliedIndex(),
		TableIndex:   s.fsm.applied.Load(),
		Rules:        s.Table().Len(),
		Forwarded:    s.forwarded.Load(),
		Served:       s.served.Load(),
		LastContact:  -1,
	}
	if v, err := strconv.ParseUint(s.raft.Stats()["last_snapshot_index"], 10, 64); err == nil {
		st.LastSnapshotIndex = v
	}
	if s.raft.State() == raft.Leader {
		st.LastContact = 0
	} else if t := s.raft.LastContact(); !t.IsZero() {
		st.LastContact = time.Since(t)
	}
	if f := s.raft.GetConfiguration(); f.Error() == nil {
		for _, srv := range f.Configuration().Servers {
			if srv.Suffrage == raft.Voter {
				st.Voters++
			} else {
				st.NonVoters++
			}
		}
	}
	return st
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

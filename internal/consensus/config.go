package consensus

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"time"

	"github.com/rs/zerolog"

	"github.com/quotamesh/quotamesh/limits"
)

// StreamLayer is what consensus needs from the network: a listener for Raft
// streams other nodes open to this one, and a way to open one to another
// node. The node implements it over QUIC streams (transport/); tests use
// consensustest.Network. Addresses are the opaque strings given as
// Config.Address; consensus never parses them.
//
// The Store owns the layer once Open succeeds and closes it on Close.
// Connections must support deadlines (SetDeadline and friends): Raft's
// transport puts one on every RPC.
type StreamLayer interface {
	net.Listener
	// Dial opens a stream to the node listening at address, giving up after
	// timeout.
	Dial(address string, timeout time.Duration) (net.Conn, error)
}

// Forwarder carries a consensus request from this node to another member,
// almost always the leader, and brings back the response. The node
// implements it over its own RPC stream and hands the request bytes, as they
// are, to the receiving node's Store.HandleForward. consensus encodes and
// decodes both payloads; the node never looks inside them.
//
// address is the receiving member's Config.Address (its Raft address). An
// error means the request did not reach the member or its answer did not come
// back; the request may then be sent again, because every write carries an ID
// that the leader's state machine deduplicates.
type Forwarder interface {
	Forward(ctx context.Context, address string, req []byte) ([]byte, error)
}

// Server names a Raft member: its node ID and the address its StreamLayer
// listens on.
type Server struct {
	ID      string `msgpack:"i"`
	Address string `msgpack:"a"`
}

// Member is a server as the latest Raft configuration known to this node
// lists it.
type Member struct {
	ID      string
	Address string
	// Voter reports whether the member votes in elections and counts towards
	// commit quorums. Members that do not vote still receive every change.
	Voter bool
	// Leader reports whether this node currently believes the member leads.
	Leader bool
}

// Defaults. The timeouts are tuned for a LAN (round trips well under 10 ms)
// and a 1 s goal for a change to reach every node, including across a leader
// failure; docs/design.md section 8 says why each has its value.
const (
	// DefaultMaxVoters is the number of voters when Config.MaxVoters is zero.
	DefaultMaxVoters = 5
	// DefaultHeartbeatTimeout is how long a follower waits without hearing
	// from the leader before it starts an election (randomised up to twice
	// this). The leader heartbeats every tenth of it.
	DefaultHeartbeatTimeout = 300 * time.Millisecond
	// DefaultElectionTimeout is how long a candidate waits for votes before
	// it tries again (randomised up to twice this).
	DefaultElectionTimeout = 300 * time.Millisecond
	// DefaultLeaderLeaseTimeout is how long a leader keeps leading without
	// hearing from a majority of voters before it steps down.
	DefaultLeaderLeaseTimeout = 150 * time.Millisecond
	// DefaultCommitTimeout is how long the leader waits, when no new changes
	// arrive, before it tells followers the latest commit index: a follower
	// applies a change at most about twice this after it commits.
	DefaultCommitTimeout = 50 * time.Millisecond
	// DefaultRPCTimeout bounds each Raft RPC and each dial.
	DefaultRPCTimeout = 2 * time.Second
	// DefaultSnapshotInterval is how often Raft checks whether to take a
	// snapshot (randomised up to twice this).
	DefaultSnapshotInterval = 30 * time.Second
	// DefaultSnapshotThreshold is how many log entries since the last
	// snapshot trigger a new one. It is also how many entries are kept
	// behind a snapshot for followers that lag.
	DefaultSnapshotThreshold = 1024
	// DefaultReconcileInterval is how often the leader checks that the
	// cluster has MaxVoters healthy voters.
	DefaultReconcileInterval = time.Second
	// DefaultDeadVoterAfter is how long a voter may stay unreachable from the
	// leader before a healthy non-voter takes its vote.
	DefaultDeadVoterAfter = 30 * time.Second
)

// Limits on identifiers, shared with the rest of the wire format.
const (
	maxIDLen      = 64
	maxAddressLen = 256
	maxVotersCap  = 7
	minTimeout    = 5 * time.Millisecond
)

// Config configures a Store. A zero duration or count means the documented
// default. Open clones the Config; changing it afterwards has no effect.
type Config struct {
	// NodeID names this node in the cluster for all time: 1 to 64 bytes of
	// printable ASCII without spaces. A node that restarts from its DataDir
	// must keep its ID.
	NodeID string
	// Address is where other members reach this node's StreamLayer (and its
	// Forwarder endpoint). It is advertised to the cluster as is.
	Address string
	// DataDir holds the Raft log and stable store (raft-wal, in DataDir/wal)
	// and snapshots (DataDir/snapshots). It is created if missing. The first
	// Open records NodeID and ClusterID in DataDir/identity.json; a later
	// Open with another NodeID or ClusterID fails with ErrDataDir.
	DataDir string
	// ClusterID names the cluster, as recorded in DataDir. Optional: empty
	// is a name like any other, and never matches a DataDir recorded with a
	// non-empty one.
	ClusterID string

	// Bootstrap lists the initial members, the same list in the same order
	// on every initial node (like etcd's initial-cluster). A node whose
	// DataDir holds no Raft state and which is listed bootstraps the cluster
	// with this list: its first MaxVoters servers vote, the others start as
	// non-voters (the leader promotes one when a voter leaves or dies). A
	// node that is not listed starts empty and waits to be added (see
	// JoinVia). Restarting from an existing DataDir ignores Bootstrap.
	Bootstrap []Server

	// MaxVoters is how many members vote (default 5). It must be odd, from 1
	// to 7: an even count tolerates no more failures than one fewer. The
	// leader keeps exactly min(MaxVoters, members) voters: members beyond it
	// join as non-voters, a healthy non-voter is promoted when a voter
	// leaves, and one replaces a voter that stays unreachable for
	// DeadVoterAfter.
	MaxVoters int

	// Layer carries Raft's RPCs. Required.
	Layer StreamLayer
	// Forwarder carries writes, consistent reads and membership requests to
	// the leader, and the leader's health probes to members. Required.
	Forwarder Forwarder

	// HeartbeatTimeout, default DefaultHeartbeatTimeout.
	HeartbeatTimeout time.Duration
	// ElectionTimeout, default DefaultElectionTimeout; not below
	// HeartbeatTimeout.
	ElectionTimeout time.Duration
	// LeaderLeaseTimeout, default DefaultLeaderLeaseTimeout; not above
	// HeartbeatTimeout.
	LeaderLeaseTimeout time.Duration
	// CommitTimeout, default DefaultCommitTimeout; below HeartbeatTimeout.
	CommitTimeout time.Duration
	// RPCTimeout, default DefaultRPCTimeout.
	RPCTimeout time.Duration

	// SnapshotInterval, default DefaultSnapshotInterval.
	SnapshotInterval time.Duration
	// SnapshotThreshold, default DefaultSnapshotThreshold.
	SnapshotThreshold uint64

	// ReconcileInterval, default DefaultReconcileInterval.
	ReconcileInterval time.Duration
	// DeadVoterAfter, default DefaultDeadVoterAfter; negative disables the
	// replacement of unreachable voters.
	DeadVoterAfter time.Duration

	// Logger receives Raft's and this package's logs with
	// component=raft. The zero Logger discards them.
	Logger zerolog.Logger

	// OnChange, if set, is called after each change to the table is applied
	// on this node, and after a snapshot is restored (also during Open), with
	// the new table and the log index of the last change in it. It runs on
	// the state machine's goroutine: it must return quickly and must not call
	// back into the Store.
	OnChange func(t *limits.Table, index uint64)

	// LogDelay, if set, is how long each write to the Raft log and stable
	// store waits before it is made: a slow disk, for the fault suite only
	// (the node sets it when a test attaches the fault layer).
	LogDelay func() time.Duration
}

// withDefaults fills zero fields with their defaults and copies slices.
func (c Config) withDefaults() Config {
	if c.MaxVoters == 0 {
		c.MaxVoters = DefaultMaxVoters
	}
	setDur := func(d *time.Duration, def time.Duration) {
		if *d == 0 {
			*d = def
		}
	}
	setDur(&c.HeartbeatTimeout, DefaultHeartbeatTimeout)
	setDur(&c.ElectionTimeout, DefaultElectionTimeout)
	setDur(&c.LeaderLeaseTimeout, DefaultLeaderLeaseTimeout)
	setDur(&c.CommitTimeout, DefaultCommitTimeout)
	setDur(&c.RPCTimeout, DefaultRPCTimeout)
	setDur(&c.SnapshotInterval, DefaultSnapshotInterval)
	setDur(&c.ReconcileInterval, DefaultReconcileInterval)
	setDur(&c.DeadVoterAfter, DefaultDeadVoterAfter)
	if c.SnapshotThreshold == 0 {
		c.SnapshotThreshold = DefaultSnapshotThreshold
	}
	c.Bootstrap = slices.Clone(c.Bootstrap)
	return c
}

// Validate reports every problem with c (after defaults are applied), each
// naming the field and the bad value. The error wraps ErrConfig.
func (c Config) Validate() error {
	c = c.withDefaults()
	var errs []error
	bad := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("%w: "+format, append([]any{ErrConfig}, args...)...))
	}
	if err := checkID(c.NodeID); err != nil {
		bad("NodeID %q %v", clip(c.NodeID), err)
	}
	if err := checkAddress(c.Address); err != nil {
		bad("Address %q %v", clip(c.Address), err)
	}
	if c.ClusterID != "" {
		if err := checkID(c.ClusterID); err != nil {
			bad("ClusterID %q %v", clip(c.ClusterID), err)
		}
	}
	if c.DataDir == "" {
		bad("DataDir is empty; Raft's log, stable store and snapshots live there")
	}
	if c.Layer == nil {
		bad("Layer is nil; Raft needs a StreamLayer to reach the other members")
	}
	if c.Forwarder == nil {
		bad("Forwarder is nil; followers need it to send writes and consistent reads to the leader")
	}
	if c.MaxVoters < 1 || c.MaxVoters > maxVotersCap || c.MaxVoters%2 == 0 {
		bad("MaxVoters %d must be odd, from 1 to %d (3 or 5 recommended); an even count tolerates no more failures than one fewer", c.MaxVoters, maxVotersCap)
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{
		{"HeartbeatTimeout", c.HeartbeatTimeout},
		{"ElectionTimeout", c.ElectionTimeout},
		{"LeaderLeaseTimeout", c.LeaderLeaseTimeout},
		{"CommitTimeout", c.CommitTimeout},
		{"RPCTimeout", c.RPCTimeout},
		{"SnapshotInterval", c.SnapshotInterval},
		{"ReconcileInterval", c.ReconcileInterval},
	} {
		if d.v < minTimeout {
			bad("%s %v is below %v", d.name, d.v, minTimeout)
		}
	}
	if c.ElectionTimeout < c.HeartbeatTimeout {
		bad("ElectionTimeout %v is below HeartbeatTimeout %v", c.ElectionTimeout, c.HeartbeatTimeout)
	}
	if c.LeaderLeaseTimeout > c.HeartbeatTimeout {
		bad("LeaderLeaseTimeout %v is above HeartbeatTimeout %v", c.LeaderLeaseTimeout, c.HeartbeatTimeout)
	}
	if c.CommitTimeout >= c.HeartbeatTimeout {
		bad("CommitTimeout %v is not below HeartbeatTimeout %v", c.CommitTimeout, c.HeartbeatTimeout)
	}
	ids := make(map[string]bool, len(c.Bootstrap))
	addrs := make(map[string]bool, len(c.Bootstrap))
	for i, s := range c.Bootstrap {
		if err := checkID(s.ID); err != nil {
			bad("Bootstrap[%d].ID %q %v", i, clip(s.ID), err)
		}
		if err := checkAddress(s.Address); err != nil {
			bad("Bootstrap[%d].Address %q %v", i, clip(s.Address), err)
		}
		if ids[s.ID] {
			bad("Bootstrap[%d].ID %q appears twice", i, clip(s.ID))
		}
		if addrs[s.Address] {
			bad("Bootstrap[%d].Address %q appears twice", i, clip(s.Address))
		}
		ids[s.ID], addrs[s.Address] = true, true
		if s.ID == c.NodeID && s.Address != c.Address {
			bad("Bootstrap[%d] gives this node (%q) address %q but Address is %q", i, clip(s.ID), clip(s.Address), clip(c.Address))
		}
	}
	return errors.Join(errs...)
}

// checkID checks a node ID: 1 to 64 bytes of printable ASCII without spaces.
func checkID(id string) error { return limits.CheckPrintable(id, maxIDLen) }

// checkAddress checks an address: 1 to 256 bytes without spaces or controls.
func checkAddress(addr string) error { return limits.CheckPrintable(addr, maxAddressLen) }

// clip keeps error messages short when a caller passes a huge string.
func clip(s string) string {
	if len(s) > 64 {
		return s[:64] + "..."
	}
	return s
}

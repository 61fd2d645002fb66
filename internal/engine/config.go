package engine

import (
	"fmt"
	"time"

	"github.com/quotamesh/quotamesh/crdt"
	"github.com/quotamesh/quotamesh/internal/share"
	"github.com/quotamesh/quotamesh/window"
)

// Defaults for zero Config fields.
const (
	DefaultSyncInterval     = 20 * time.Millisecond
	DefaultDeadAfter        = time.Second
	DefaultFenceAfter       = 3 * time.Second
	DefaultReclaimAfter     = 5 * time.Second
	DefaultDemandSlots      = 5
	DefaultRefreshEvery     = 10
	DefaultLeaseTTL         = 500 * time.Millisecond
	DefaultMaxLeaseFraction = 0.1
	DefaultAlignDeadband    = 10 * time.Millisecond
	DefaultQuotaValidity    = time.Second
	DefaultHeartbeat        = 100 * time.Millisecond
	DefaultFullMeshUpTo     = 12
	DefaultSyncHops         = 3
	// HorizonMargin is how many slots beyond a key's window and demand
	// period the store keeps for it.
	HorizonMargin = 10
)

// Config configures an Engine. The zero value of every field but Node means
// its default; New copies it.
type Config struct {
	// Node is this node's ID (crdt.ValidateNodeID).
	Node string
	// ClusterID names the cluster; a Hello from another cluster is refused.
	// Empty means "quotamesh".
	ClusterID string
	// Incarnation identifies this process; zero means one drawn at random.
	// Two processes must never share one.
	Incarnation uint64
	// Registry configures the key registry; its OnCreate and OnEvict must
	// be nil (the engine sets them).
	Registry window.Config
	// Store configures the replicated counts; its Horizon must be nil (the
	// engine derives it from the limit table). A zero Grace means two sync
	// intervals plus 50 ms.
	Store crdt.Config
	// Policy is the partition policy; the zero value is share.Conservative.
	Policy share.Policy
	// SyncInterval is how often the caller calls Tick (default 20 ms). The
	// engine only uses it for defaults and lease retry hints.
	SyncInterval time.Duration
	// DeadAfter is how long a member may be silent before it counts as
	// unreachable (default 1 s).
	DeadAfter time.Duration
	// FenceAfter is how long a node that does not hear a strict majority
	// keeps admitting under the conservative policy (default 3 s).
	FenceAfter time.Duration
	// ReclaimAfter is how long a member must have been unreachable before a
	// node in a majority reclaims its reservation (default 5 s). It must
	// exceed FenceAfter by at least DeadAfter.
	ReclaimAfter time.Duration
	// DemandSlots is the demand period in slots (default 5, 500 ms), 1 to
	// 10: every window keeps at least 10 closed slots to read it from.
	DemandSlots int
	// Prior is share's β (default share.DefaultPrior).
	Prior float64
	// RefreshEvery is how many ticks apart every key holding counts gets its
	// quota recomputed even if nothing it depends on was written (default
	// 10); keys that changed are recomputed every tick.
	RefreshEvery int
	// LeaseTTL is the longest an SDK may use a lease (default 500 ms): the
	// SDK uses a lease for its own TTL (50 ms) or, for a key far from its
	// limit, its far TTL (500 ms), whichever this caps. A lease that is
	// not settled counts as used when LeaseTTL and a grace of 50-100 ms
	// have passed.
	LeaseTTL time.Duration
	// MaxLeaseFraction caps one lease at this fraction of the key's limit
	// (default 0.1), at least one token.
	MaxLeaseFraction float64
	// Seed seeds the random numbers that round quotas; zero means one
	// derived from the incarnation.
	Seed uint64
	// QuotaValidity is how long a quota the engine sets stays valid if it is
	// not set again (default 1 s): a node paused, or whose sync loop stalls,
	// then admits nothing until its next tick rather than admitting under a
	// share the cluster may have reclaimed. At least twice RefreshEvery
	// ticks.
	QuotaValidity time.Duration
	// Heartbeat is how often a peer this node has nothing new for still
	// gets a frame, so that it hears this node (and its acknowledgements)
	// (default 200 ms). A tick sends a peer a frame only when it carries
	// counts, quota registers or relayed states the peer has not had, or
	// a heartbeat is due: an idle cluster exchanges a few frames a second,
	// not one per peer and tick. 0 to DeadAfter/4 (a peer says it misses a
	// member after DeadAfter/2 without a frame); below the sync interval it
	// means every tick.
	Heartbeat time.Duration
	// FullMeshUpTo is the largest number of reachable nodes (this one
	// included) that sync as a full mesh, every node sending every peer
	// its frames (default 12). Larger clusters sync over an overlay: a
	// node sends frames to about SyncHops·(N^(1/SyncHops) − 1) peers and
	// relays to them the changes of others (design.md §7, "Sync
	// overlay"). Negative: always the overlay; 1 to 1000 otherwise.
	FullMeshUpTo int
	// SyncHops is how many hops of the overlay a change takes at most to
	// reach every node (default 3), 1 to 6. More hops, fewer peers per
	// node and older views.
	SyncHops int
	// UnsafeIgnoreShare makes the engine admit up to the whole limit as if
	// it were alone: a deliberately broken node, for the fault suite to
	// prove that its checkers catch over-admission. Never in production.
	UnsafeIgnoreShare bool
	// AlignDeadband is how far this node's slot edges may drift from the
	// cluster's before it corrects its node time (design.md §2): it measures
	// every peer's clock from the sync frames and moves to the median of the
	// members it hears. Zero means DefaultAlignDeadband; negative turns
	// alignment off.
	AlignDeadband time.Duration
}

func (c Config) withDefaults() Config {
	if c.ClusterID == "" {
		c.ClusterID = "quotamesh"
	}
	if c.SyncInterval == 0 {
		c.SyncInterval = DefaultSyncInterval
	}
	if c.DeadAfter == 0 {
		c.DeadAfter = DefaultDeadAfter
	}
	if c.FenceAfter == 0 {
		c.FenceAfter = DefaultFenceAfter
	}
	if c.ReclaimAfter == 0 {
		c.ReclaimAfter = DefaultReclaimAfter
	}
	if c.DemandSlots == 0 {
		c.DemandSlots = DefaultDemandSlots
	}
	if c.Prior == 0 {
		c.Prior = share.DefaultPrior
	}
	if c.RefreshEvery == 0 {
		c.RefreshEvery = DefaultRefreshEvery
	}
	if c.LeaseTTL == 0 {
		c.LeaseTTL = DefaultLeaseTTL
	}
	if c.MaxLeaseFraction == 0 {
		c.MaxLeaseFraction = DefaultMaxLeaseFraction
	}
	if c.QuotaValidity == 0 {
		// At least twice the refresh period, so that a slower sync
		// interval needs no setting of its own.
		c.QuotaValidity = max(DefaultQuotaValidity, 2*time.Duration(c.RefreshEvery)*c.SyncInterval)
	}
	if c.FullMeshUpTo == 0 {
		c.FullMeshUpTo = DefaultFullMeshUpTo
	}
	if c.SyncHops == 0 {
		c.SyncHops = DefaultSyncHops
	}
	if c.Heartbeat == 0 {
		c.Heartbeat = min(DefaultHeartbeat, c.DeadAfter/4)
	}
	if c.AlignDeadband == 0 {
		c.AlignDeadband = DefaultAlignDeadband
	}
	if c.Store.Grace == 0 {
		c.Store.Grace = 2*c.SyncInterval + 50*time.Millisecond
	}
	return c
}

// Validate reports the first field out of range, naming its value. Zero
// fields are valid: they mean the default.
func (c Config) Validate() error {
	d := c.withDefaults()
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: "+format, append([]any{ErrInvalidConfig}, args...)...)
	}
	if err := crdt.ValidateNodeID(c.Node); err != nil {
		return fmt.Errorf("%w: node: %w", ErrInvalidConfig, err)
	}
	if err := crdt.ValidateNodeID(d.ClusterID); err != nil {
		return bad("cluster ID %q: use 1 to 64 printable ASCII bytes without spaces", d.ClusterID)
	}
	if c.Registry.OnCreate != nil || c.Registry.OnEvict != nil {
		return bad("registry OnCreate or OnEvict is set; the engine owns them")
	}
	if c.Store.Horizon != nil {
		return bad("store Horizon is set; the engine derives it from the limit table")
	}
	if err := c.Registry.Validate(); err != nil {
		return fmt.Errorf("%w: registry: %w", ErrInvalidConfig, err)
	}
	if err := d.Store.Validate(); err != nil {
		return fmt.Errorf("%w: store: %w", ErrInvalidConfig, err)
	}
	switch {
	case d.Policy != share.Conservative && d.Policy != share.Available:
		return bad("policy %v: use conservative or available", d.Policy)
	case d.SyncInterval < time.Millisecond || d.SyncInterval > 10*time.Second:
		return bad("sync interval %v: use 1ms to 10s", d.SyncInterval)
	case d.DeadAfter < d.SyncInterval:
		return bad("dead after %v is below the sync interval %v", d.DeadAfter, d.SyncInterval)
	case d.FenceAfter < d.DeadAfter:
		return bad("fence after %v is below dead after %v", d.FenceAfter, d.DeadAfter)
	case d.ReclaimAfter < d.FenceAfter+d.DeadAfter:
		return bad("reclaim after %v must be at least fence after %v plus dead after %v, or a fenced minority and the reclaiming majority could both admit", d.ReclaimAfter, d.FenceAfter, d.DeadAfter)
	case d.DemandSlots < 1 || d.DemandSlots > 10:
		return bad("demand slots %d: use 1 to 10 (a window keeps at least 10 closed slots; more would read own demand over fewer slots than peers')", d.DemandSlots)
	case d.Prior < 0:
		return bad("prior %v: use a positive number", d.Prior)
	case d.RefreshEvery < 1:
		return bad("refresh every %d ticks: use at least 1", d.RefreshEvery)
	case d.LeaseTTL < time.Millisecond || d.LeaseTTL > 10*time.Second:
		return bad("lease TTL %v: use 1ms to 10s", d.LeaseTTL)
	case !(d.MaxLeaseFraction > 0 && d.MaxLeaseFraction <= 1):
		return bad("max lease fraction %v: use (0, 1]", d.MaxLeaseFraction)
	case d.QuotaValidity < 2*time.Duration(d.RefreshEvery)*d.SyncInterval:
		return bad("quota validity %v is below twice the refresh period (%d ticks of %v): quotas would expire between refreshes", d.QuotaValidity, d.RefreshEvery, d.SyncInterval)
	case d.Heartbeat < 0 || d.Heartbeat > d.DeadAfter/4:
		return bad("heartbeat %v: use up to a quarter of dead after (%v), or peers would count this node as missing between heartbeats", d.Heartbeat, d.DeadAfter)
	case d.FullMeshUpTo > 1000:
		return bad("full mesh up to %d nodes: use at most 1000, or a negative value for the overlay at every size", d.FullMeshUpTo)
	case d.SyncHops < 1 || d.SyncHops > 6:
		return bad("sync hops %d: use 1 to 6", d.SyncHops)
	case d.AlignDeadband > time.Second:
		return bad("align deadband %v: use up to 1s, or a negative value to turn alignment off", d.AlignDeadband)
	}
	return nil
}

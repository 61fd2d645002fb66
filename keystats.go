package quotamesh

import (
	"context"
	"time"

	"github.com/quotamesh/quotamesh/limits"
)

// Inspector reads how fast keys use their limits and starts limits afresh.
// Both the remote SDK (package client) and an embedded node (package node)
// satisfy it. Neither call is on the decision path: CurrentQPS reads what a
// node already holds (a dashboard may call it every second for thousands of
// keys), and Reset agrees on the reset through Raft.
type Inspector interface {
	// CurrentQPS returns the key's usage as one node sees it: the SDK asks
	// the key's home node, an embedded node answers itself.
	CurrentQPS(ctx context.Context, key string) (KeyStats, error)
	// Reset starts the limit of key, or of every key a pattern such as
	// "user:*" matches, afresh across the cluster: from the slot edge at
	// which it takes effect, no node counts admissions made before it.
	// It returns once the reset is in force on every member that could
	// be reached; the others (ResetResult.Pending) apply it when they
	// rejoin, from the same slot edge. It needs the admin role.
	Reset(ctx context.Context, keyOrPattern string) (ResetResult, error)
}

// KeyStats is one key's usage as one node sees it. Rates are tokens per
// second over the last full second (ten 100 ms slots); window counts are of
// the rule's sliding window at the time of the answer.
type KeyStats struct {
	// Key is the key asked about; Node the node that answered, and At its
	// node time.
	Key  string    `json:"key"`
	Node string    `json:"node"`
	At   time.Time `json:"at"`
	// Rule is the pattern of the rule governing the key and Limit its rate;
	// Shadow reports a shadow rule. Unlimited reports that no rule matches
	// (Rule empty, Limit zero).
	Rule      string      `json:"rule,omitempty"`
	Limit     limits.Rate `json:"limit,omitzero"`
	Shadow    bool        `json:"shadow,omitempty"`
	Unlimited bool        `json:"unlimited,omitempty"`
	// Local is what the answering node itself admitted and was offered.
	Local Rates `json:"local"`
	// Cluster is the whole cluster's rates as the answering node's views
	// see them: its own, plus every other node's as of that node's last
	// report (Nodes).
	Cluster Rates `json:"cluster"`
	// Nodes are the contributions, the answering node's own first, then by
	// node ID; a node restarted recently may appear once per incarnation
	// while its old counts expire.
	Nodes []NodeRates `json:"nodes"`
	// OldestView is the age of the oldest view of a current member among
	// Nodes: how stale the cluster-wide figures may be.
	OldestView time.Duration `json:"oldest_view_ns"`
	// Admitted is what the cluster admitted in the current window, as the
	// answering node sees it, and Remaining the room left in it: Limit's
	// count minus Admitted, at least zero.
	Admitted  int64 `json:"admitted"`
	Remaining int64 `json:"remaining"`
	// Quota is the answering node's cap on its own window count (its share
	// of the limit), and LocalRemaining what it may still admit under it.
	Quota          int64 `json:"quota"`
	LocalRemaining int64 `json:"local_remaining"`
	// ResetAt, when the key was reset recently, is the slot edge from which
	// the cluster counts its admissions; zero otherwise.
	ResetAt time.Time `json:"reset_at,omitzero"`
}

// Rates are admitted and offered tokens per second.
type Rates struct {
	Admitted float64 `json:"admitted"`
	Offered  float64 `json:"offered"`
}

// NodeRates are one node's rates for a key, as the answering node knows
// them.
type NodeRates struct {
	Node        string `json:"node"`
	Incarnation uint64 `json:"incarnation"`
	// Self marks the answering node; Member a current member (false for an
	// earlier incarnation or a node that left, whose counts still expire).
	Self   bool `json:"self,omitempty"`
	Member bool `json:"member"`
	Rates
	// Admitted in the current window, after any reset.
	InWindow int64 `json:"in_window"`
	// Age is how long ago the answering node learned these counts (zero for
	// its own).
	Age time.Duration `json:"age_ns"`
}

// ResetResult says when a reset takes effect.
type ResetResult struct {
	// Pattern is the key or pattern reset.
	Pattern string `json:"pattern"`
	// At is the slot edge from which admissions count again, on every node.
	At time.Time `json:"at"`
	// Index is the Raft log index of the reset.
	Index uint64 `json:"index"`
	// Pending are the members that had not confirmed applying the reset
	// when it returned (cut off or down): each applies it when it catches
	// up, forgetting the same admissions.
	Pending []string `json:"pending,omitempty"`
}

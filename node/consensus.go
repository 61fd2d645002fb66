package node

import (
	"context"
	"fmt"

	"github.com/quotamesh/quotamesh/limits"
)

// SetLimit sets a rule through Raft, from any node: it replaces the rule
// with the same pattern or adds one, and returns the change's log index
// once the change is committed and applied on this node (and so in force
// here; other nodes apply it within a commit timeout or two).
func (n *Node) SetLimit(ctx context.Context, r limits.Rule) (uint64, error) {
	if n.state.Load() == stateClosed {
		return 0, ErrStopped
	}
	i, err := n.store.Set(ctx, r)
	if err != nil {
		return i, fmt.Errorf("quotamesh/node: set %s: %w", r, err)
	}
	return i, nil
}

// DeleteLimit removes the rule with exactly this pattern through Raft; the
// error wraps limits.ErrNoRule if there is none.
func (n *Node) DeleteLimit(ctx context.Context, pattern string) (uint64, error) {
	if n.state.Load() == stateClosed {
		return 0, ErrStopped
	}
	i, err := n.store.Delete(ctx, pattern)
	if err != nil {
		return i, fmt.Errorf("quotamesh/node: delete %q: %w", clip(pattern), err)
	}
	return i, nil
}

// GetLimit returns the rule with exactly this pattern, read linearizably
// (the leader confirms it leads, and this node catches up with it first).
func (n *Node) GetLimit(ctx context.Context, pattern string) (limits.Rule, bool, error) {
	if n.state.Load() == stateClosed {
		return limits.Rule{}, false, ErrStopped
	}
	r, ok, err := n.store.Get(ctx, pattern)
	if err != nil {
		return r, ok, fmt.Errorf("quotamesh/node: get %q: %w", clip(pattern), err)
	}
	return r, ok, nil
}

// ListLimits returns every rule, sorted by pattern, read linearizably.
func (n *Node) ListLimits(ctx context.Context) ([]limits.Rule, error) {
	if n.state.Load() == stateClosed {
		return nil, ErrStopped
	}
	rs, err := n.store.List(ctx)
	if err != nil {
		return nil, fmt.Errorf("quotamesh/node: list: %w", err)
	}
	return rs, nil
}

// Table returns the limit table in force on this node (not linearizable:
// it may trail the leader by a commit timeout).
func (n *Node) Table() *limits.Table { return n.store.Table() }

// Join adds node id, reachable at addr, to the cluster (as a non-voter,
// promoted by the leader when votes are short). The node itself must then
// be started with this node's address in its Join list, or be started
// already and waiting.
func (n *Node) Join(ctx context.Context, id, addr string) error {
	if n.state.Load() == stateClosed {
		return ErrStopped
	}
	if err := n.store.Join(ctx, id, addr); err != nil {
		return fmt.Errorf("quotamesh/node: join %s at %s: %w", id, addr, err)
	}
	return nil
}

// Leave removes node id from the cluster (this node's own ID included: it
// stays up, no longer a member, and should then be shut down). A leaving
// voter is replaced by a healthy non-voter.
func (n *Node) Leave(ctx context.Context, id string) error {
	if n.state.Load() == stateClosed {
		return ErrStopped
	}
	if err := n.store.Leave(ctx, id); err != nil {
		return fmt.Errorf("quotamesh/node: leave %s: %w", id, err)
	}
	if id == n.cfg.ID {
		// The cluster removed this node: it stops serving now. Raft need
		// not tell a removed server of its removal, so waiting for its own
		// configuration to say so could take for ever.
		n.left.Store(true)
		n.isMember.Store(false)
		if n.state.CompareAndSwap(stateServing, stateStarting) {
			n.log.Warn().Msg("this node left the cluster: it stops serving decisions")
		}
	}
	return nil
}

package node

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"time"

	"github.com/quotamesh/quotamesh"
	"github.com/quotamesh/quotamesh/internal/consensus"
	"github.com/quotamesh/quotamesh/internal/engine"
	"github.com/quotamesh/quotamesh/limits"
	"github.com/quotamesh/quotamesh/window"
)

// resetLead is how far ahead of the node's clock a reset's floor is put:
// followers apply a committed change within one or two commit timeouts
// (design.md §8, "Timeouts"), so the members that hear the leader have
// applied the reset before its floor slot begins, and it takes effect on
// all of them at the same slot edge. A member that applies it later still
// forgets exactly the same admissions.
const resetLead = 2*consensus.DefaultCommitTimeout + 50*time.Millisecond

// resetConfirm bounds how long Reset waits for the members to confirm they
// applied a reset.
const resetConfirm = 2 * time.Second

var _ quotamesh.Inspector = (*Node)(nil)

// CurrentQPS returns key's usage as this node sees it (quotamesh.KeyStats):
// its rule, this node's rates, every node's rates and window counts as this
// node's views hold them, the age of the oldest, and the room left in the
// window. It never waits for the network and creates nothing; it takes the
// engine's lock for a pass over the key's origins, so it is for dashboards
// and tools, not for the request path. ctx is ignored. Errors:
// limits.ErrInvalidKey for a malformed key, quotamesh.ErrClosed once
// Shutdown has begun.
func (n *Node) CurrentQPS(_ context.Context, key string) (quotamesh.KeyStats, error) {
	if n.state.Load() == stateClosed {
		return quotamesh.KeyStats{}, errClosed
	}
	if err := limits.ValidateKey(key); err != nil {
		return quotamesh.KeyStats{}, fmt.Errorf("quotamesh/node: current qps: %w", err)
	}
	return n.eng.KeyStats(n.now(), key), nil
}

// Reset starts the limit of key, or of every key pattern matches, afresh
// across the cluster (design.md §8, "Resets"): it proposes through Raft a
// reset whose floor is the first slot edge at least resetLead ahead of this
// node's clock, waits until it is applied here and every member that
// answers has applied it too (ResetResult.Pending names those that did
// not: they apply it when they catch up), and until its floor has begun
// and one sync interval more (members clear their windows at their first
// tick in the floor's slot). It then returns: the reset is in force on
// every member that answered. From the floor on every node counts only
// the admissions of the floor's slot and later ones. Errors as SetLimit's,
// and limits.ErrInvalidPattern for a malformed pattern.
func (n *Node) Reset(ctx context.Context, pattern string) (quotamesh.ResetResult, error) {
	if n.state.Load() == stateClosed {
		return quotamesh.ResetResult{}, ErrStopped
	}
	if _, err := limits.ParsePattern(pattern); err != nil {
		return quotamesh.ResetResult{}, fmt.Errorf("quotamesh/node: reset: %w", err)
	}
	floor := window.EpochOf(n.now()+int64(resetLead)) + 1
	i, err := n.store.Reset(ctx, pattern, floor)
	if err != nil {
		return quotamesh.ResetResult{Index: i}, fmt.Errorf("quotamesh/node: reset %q: %w", clip(pattern), err)
	}
	at := floor * int64(limits.Slot)
	res := quotamesh.ResetResult{Pattern: pattern, At: time.Unix(0, at).UTC(), Index: i}
	// Every member that can be reached confirms it applied the reset (a
	// member applying it after the floor clears its window at once), within
	// a bound: one that cannot is cut off or down, and applies it when it
	// catches up.
	actx, cancel := context.WithTimeout(ctx, resetConfirm)
	res.Pending = n.store.AwaitApplied(actx, i)
	cancel()
	// Then wait until the floor has begun here, and one sync interval more:
	// a member that applied the reset before its floor clears its window at
	// its first tick in the floor's slot, whatever its clock's offset
	// within the alignment deadband.
	settled := at + int64(n.cfg.SyncInterval+engine.DefaultAlignDeadband)
	applied := false
	for {
		now := n.now()
		if now >= at && !applied {
			n.eng.ApplyResets(now)
			applied = true
		}
		if now >= settled {
			return res, nil
		}
		next := at
		if applied {
			next = settled
		}
		t := time.NewTimer(time.Duration(next - now))
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return res, fmt.Errorf("quotamesh/node: reset %q: committed, takes effect at %v: %w", clip(pattern), res.At, ctx.Err())
		case <-n.loopCtx.Done():
			t.Stop()
			return res, ErrStopped
		}
	}
}

// keyJSON encodes a key's usage for an admin reply.
func (n *Node) keyJSON(key string) ([]byte, error) {
	st, err := n.CurrentQPS(context.Background(), key)
	if err != nil {
		return nil, err
	}
	return json.Marshal(st)
}

// resetJSON resets pattern and encodes the result for an admin reply.
func (n *Node) resetJSON(ctx context.Context, pattern string) ([]byte, uint64, error) {
	res, err := n.Reset(ctx, pattern)
	if err != nil {
		return nil, res.Index, err
	}
	b, err := json.Marshal(res)
	return b, res.Index, err
}

// serveKey answers GET /keys/{key} on the admin listener with the key's
// usage (KeyStats) as JSON: read-only, like /status. The key is the rest of
// the path, unescaped (a key may hold a '/', escaped or not).
func (n *Node) serveKey(w http.ResponseWriter, r *http.Request) {
	st, err := n.CurrentQPS(r.Context(), r.PathValue("key"))
	if err != nil {
		code := http.StatusBadRequest
		if n.state.Load() == stateClosed {
			code = http.StatusServiceUnavailable
		}
		http.Error(w, err.Error(), code)
		return
	}
	writeJSON(w, st)
}

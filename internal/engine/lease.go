// Leases of tokens to SDK clients (design.md §10).

package engine

import (
	"errors"
	"fmt"
	"time"

	"github.com/quotamesh/quotamesh/limits"
	"github.com/quotamesh/quotamesh/window"
)

// LeaseRequest asks for tokens an SDK decides with locally (design.md §10).
type LeaseRequest struct {
	Key string
	// Want is how many tokens the SDK would like.
	Want int64
	// Offered is how many calls the SDK saw for the key since its last
	// report, its own denials included.
	Offered int64
	// ReturnN tokens of the previous lease, granted at ReturnGrantedAt (node
	// time), were not used.
	ReturnN, ReturnGrantedAt int64
}

// LeaseGrant answers a LeaseRequest.
type LeaseGrant struct {
	// Granted tokens may be used until GrantedAt + TTL.
	Granted   int64
	GrantedAt int64
	TTL       time.Duration
	// RetryAfter, when nothing was granted, is when to ask again.
	RetryAfter time.Duration
	// Remaining is the room left in this node's quota.
	Remaining int64
	Limit     limits.Rate
	Unlimited bool
}

// Lease grants up to r.Want tokens of key from this node's quota at node time
// now, after refunding the returned ones and recording the reported demand.
// The granted tokens are admitted in the node's window now, so the cluster
// counts them whether or not the SDK uses them.
func (e *Engine) Lease(now int64, r LeaseRequest) (LeaseGrant, error) {
	e.seeTime(now)
	if r.Want < 0 || r.Offered < 0 || r.ReturnN < 0 {
		return LeaseGrant{}, fmt.Errorf("%w: lease for key %q with want %d, offered %d, return %d: none may be negative", ErrInvalidRequest, r.Key, r.Want, r.Offered, r.ReturnN)
	}
	w, rule, err := e.reg.GetOrCreate(now, r.Key)
	switch {
	case errors.Is(err, limits.ErrNoRule):
		allowed := e.cfg.Registry.UnknownKeys != window.PolicyDeny // the default allows
		g := LeaseGrant{Unlimited: true, GrantedAt: now, TTL: e.cfg.LeaseTTL}
		if allowed {
			g.Granted = max(r.Want, 1)
		} else {
			g.RetryAfter = window.Never
		}
		return g, nil
	case err != nil:
		return LeaseGrant{}, err
	}
	if r.ReturnN > 0 {
		back := w.Refund(now, r.ReturnGrantedAt, r.ReturnN)
		e.leaseReturned.Add(back)
	}
	want := min(r.Want, max(1, int64(e.cfg.MaxLeaseFraction*float64(rule.Rate.Count))))
	granted := w.Grant(now, want, r.Offered)
	e.leaseGranted.Add(granted)
	e.reg.Touch(r.Key)
	g := LeaseGrant{
		Granted:   granted,
		GrantedAt: now,
		TTL:       e.cfg.LeaseTTL,
		Remaining: max(0, w.Quota()-w.Total()),
		Limit:     rule.Rate,
	}
	if granted == 0 && want > 0 {
		// Room comes back at the next slot edge (expiry) or the next tick
		// (a new quota), whichever is first.
		toEdge := time.Duration(int64(limits.Slot) - now%int64(limits.Slot))
		g.RetryAfter = min(toEdge, e.cfg.SyncInterval)
	}
	return g, nil
}

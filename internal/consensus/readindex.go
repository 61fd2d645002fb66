package consensus

import (
	"context"
	"fmt"

	"github.com/hashicorp/raft"

	"github.com/quotamesh/quotamesh/limits"
)

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

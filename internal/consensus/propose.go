package consensus

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/hashicorp/raft"

	"github.com/quotamesh/quotamesh/limits"
)

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

// Reset proposes that every key pattern matches count only what is
// admitted from slot floor on (limits.Reset), and returns the change's log
// index once it is committed and applied on this node. The floor is the
// caller's to choose: the node picks a slot edge shortly ahead of its own
// clock, so that every member applies the reset before it takes effect.
func (s *Store) Reset(ctx context.Context, pattern string, floor int64) (uint64, error) {
	r := limits.Reset{Pattern: pattern, Floor: floor}
	if err := r.Validate(); err != nil {
		return 0, err
	}
	return s.write(ctx, request{Op: opReset, ID: newRequestID(), Pattern: pattern, Floor: floor}, "reset "+r.String())
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
	case opReset:
		if err := (limits.Reset{Pattern: req.Pattern, Floor: req.Floor}).Validate(); err != nil {
			return response{}, err
		}
		return s.propose(ctx, command{Op: opReset, ID: req.ID, Pattern: req.Pattern, Floor: req.Floor})
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

// newRequestID returns a random nonzero request ID.
func newRequestID() uint64 {
	for {
		if id := rand.Uint64(); id != 0 {
			return id
		}
	}
}

// probeTimeout bounds one member's answer to AwaitApplied's probe: a member
// that does not answer within it is left to catch up when it can.
const probeTimeout = 250 * time.Millisecond

// AwaitApplied asks the other members of the latest configuration (the
// health probe, through the Forwarder) until each has applied index, and
// returns the IDs of those that did not within ctx, or did not answer a
// probe at all (cut off, down: they apply the entry when they catch up).
// It is for callers that want a change in force everywhere it can be, such
// as a reset; it never fails the change itself.
func (s *Store) AwaitApplied(ctx context.Context, index uint64) []string {
	f := s.raft.GetConfiguration()
	if f.Error() != nil {
		return nil
	}
	var pending, gone []string
	for _, srv := range f.Configuration().Servers {
		if string(srv.ID) != s.cfg.NodeID {
			pending = append(pending, string(srv.ID))
		}
	}
	addr := make(map[string]string, len(pending))
	for _, srv := range f.Configuration().Servers {
		addr[string(srv.ID)] = string(srv.Address)
	}
	for len(pending) > 0 {
		next := pending[:0]
		for _, id := range pending {
			pctx, cancel := context.WithTimeout(ctx, probeTimeout)
			resp, err := s.forward(pctx, addr[id], id, request{Op: opStatus})
			cancel()
			switch {
			case err != nil || resp.Status.ID != id:
				gone = append(gone, id)
			case resp.Status.Applied < index:
				next = append(next, id)
			}
		}
		pending = next
		if len(pending) == 0 {
			break
		}
		select {
		case <-ctx.Done():
			return append(gone, pending...)
		case <-s.closing:
			return append(gone, pending...)
		case <-time.After(10 * time.Millisecond):
		}
	}
	slices.Sort(gone)
	return gone
}

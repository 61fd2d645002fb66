package consensus

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/hashicorp/raft"
)

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
	if o == opSet || o == opDelete || o == opReset {
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

package consensus

import (
	"context"
	"fmt"
)

// HandleForwardFrom is HandleForward for a request whose sender the node has
// authenticated: caller is the node ID in the verified certificate of the
// connection the request arrived on. Use it for requests from the network;
// HandleForward trusts whoever sent the bytes.
//
// A caller that is not a member of the latest configuration this node knows
// may only ask to join or leave the cluster as itself (what JoinVia and a
// retried Leave send): a join or leave of any other node, and every other
// request, is refused with ErrForbidden.
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
	if (r.Op == opJoin || r.Op == opLeave) && r.Server.ID == caller {
		// Joining as itself is how a node becomes a member; leaving as
		// itself is harmless, and is what a node that left retries when
		// the answer to its leave was lost (it is no member any more).
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

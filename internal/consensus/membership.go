package consensus

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/hashicorp/raft"
)

// Join adds the node id, reachable at addr, to the cluster, or updates its
// address if it is already a member. It runs on the leader (forwarded if
// this node is not). New members always join as non-voters; the leader then
// promotes healthy non-voters while there are fewer than MaxVoters voters, so
// a node that is added but cannot be reached never takes a vote. Joining
// twice is not an error.
func (s *Store) Join(ctx context.Context, id, addr string) error {
	if err := checkID(id); err != nil {
		return fmt.Errorf("%w: join: node ID %q %v", ErrBadRequest, clip(id), err)
	}
	if err := checkAddress(addr); err != nil {
		return fmt.Errorf("%w: join: address %q %v", ErrBadRequest, clip(addr), err)
	}
	_, err := s.do(ctx, request{Op: opJoin, Server: Server{ID: id, Address: addr}}, "join "+id)
	return err
}

// JoinVia asks the members at seeds (their addresses) to add this node to
// their cluster, trying each in turn until one accepts or ctx ends; a seed
// that is not the leader passes the request on. It returns once this node
// has received the configuration that lists it. A node restarted from a
// DataDir in which it is already a member need not call it, but may.
func (s *Store) JoinVia(ctx context.Context, seeds ...string) error {
	req := request{Op: opJoin, Server: Server{ID: s.cfg.NodeID, Address: s.cfg.Address}}
	var lastErr error
	backoff := minBackoff
	maxBackoff := max(minBackoff, s.cfg.HeartbeatTimeout/2)
	for joined := false; !joined; {
		if !s.open() {
			return fmt.Errorf("%w: join", ErrClosed)
		}
		for _, seed := range seeds {
			if seed == s.cfg.Address {
				continue
			}
			if _, err := s.forward(ctx, seed, "via seed", req); err != nil {
				lastErr = fmt.Errorf("seed %s: %w", seed, err)
				continue
			}
			joined = true
			break
		}
		if joined {
			break
		}
		if lastErr == nil {
			return fmt.Errorf("%w: join: no seed other than this node's own address", ErrBadRequest)
		}
		if err := s.sleep(ctx, backoff); err != nil {
			return timeoutErr(ctx, "join via "+strings.Join(seeds, ","), lastErr, opJoin)
		}
		backoff = min(2*backoff, maxBackoff)
	}
	// Wait until replication has brought us the configuration that lists us.
	for {
		if s.isMember() {
			return nil
		}
		if err := s.sleep(ctx, 10*time.Millisecond); err != nil {
			return timeoutErr(ctx, "join: waiting for the configuration that lists this node", nil, opJoin)
		}
	}
}

// sleep waits for d, or returns early with an error when ctx ends or Close
// starts.
func (s *Store) sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-s.closing:
		return ErrClosed
	}
}

func (s *Store) isMember() bool {
	f := s.raft.GetConfiguration()
	if f.Error() != nil {
		return false
	}
	for _, srv := range f.Configuration().Servers {
		if string(srv.ID) == s.cfg.NodeID {
			return true
		}
	}
	return false
}

// Leave removes the node id from the cluster. It runs on the leader
// (forwarded if this node is not); a leader asked to remove itself first
// hands leadership to another voter. When a voter leaves, the leader promotes
// a healthy non-voter in its place. Removing a node that is not a member is
// not an error. A node that leaves should then Close its Store.
func (s *Store) Leave(ctx context.Context, id string) error {
	if err := checkID(id); err != nil {
		return fmt.Errorf("%w: leave: node ID %q %v", ErrBadRequest, clip(id), err)
	}
	_, err := s.do(ctx, request{Op: opLeave, Server: Server{ID: id}}, "leave "+id)
	return err
}

// Members lists the members in the latest configuration this node knows
// (which, on a follower, may trail the leader's by a commit), sorted by ID.
func (s *Store) Members() ([]Member, error) {
	f := s.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		return nil, s.raftErr(err, "reading the configuration")
	}
	_, leader := s.raft.LeaderWithID()
	var out []Member
	for _, srv := range f.Configuration().Servers {
		out = append(out, Member{
			ID:      string(srv.ID),
			Address: string(srv.Address),
			Voter:   srv.Suffrage == raft.Voter,
			Leader:  srv.ID == leader,
		})
	}
	slices.SortFunc(out, func(a, b Member) int { return strings.Compare(a.ID, b.ID) })
	return out, nil
}

// addMember is the leader's half of Join.
func (s *Store) addMember(ctx context.Context, srv Server) error {
	if err := checkID(srv.ID); err != nil {
		return fmt.Errorf("%w: join: node ID %q %v", ErrBadRequest, clip(srv.ID), err)
	}
	if err := checkAddress(srv.Address); err != nil {
		return fmt.Errorf("%w: join: address %q %v", ErrBadRequest, clip(srv.Address), err)
	}
	cfg, _, err := s.configuration()
	if err != nil {
		return err
	}
	id, addr := raft.ServerID(srv.ID), raft.ServerAddress(srv.Address)
	for _, m := range cfg.Servers {
		if m.ID != id {
			continue
		}
		if m.Address == addr {
			s.kickReconcile()
			return nil
		}
		// Same node, new address: keep its suffrage.
		add := s.raft.AddNonvoter
		if m.Suffrage == raft.Voter {
			add = s.raft.AddVoter
		}
		if o := s.submit(ctx, func() raft.Future { return add(id, addr, 0, s.cfg.ElectionTimeout) }); o.err != nil {
			return s.raftErr(o.err, "updating the address of "+srv.ID)
		}
		s.log.Info().Str("peer", srv.ID).Str("address", srv.Address).Msg("member address updated")
		return nil
	}
	for _, m := range cfg.Servers {
		if m.Address == addr {
			// Two nodes cannot listen on one address, but evicting the
			// member there on the word of a joining node would let any
			// holder of a cluster certificate remove a member by claiming
			// its address. The operator removes a member that is gone.
			return fmt.Errorf("%w: %s cannot join at %s: member %s has that address; remove it first if it is gone", ErrAddressInUse, srv.ID, srv.Address, m.ID)
		}
	}
	if o := s.submit(ctx, func() raft.Future { return s.raft.AddNonvoter(id, addr, 0, s.cfg.ElectionTimeout) }); o.err != nil {
		return s.raftErr(o.err, "adding "+srv.ID)
	}
	s.log.Info().Str("peer", srv.ID).Str("address", srv.Address).Msg("member joined as a non-voter")
	s.kickReconcile()
	return nil
}

// removeMember is the leader's half of Leave.
func (s *Store) removeMember(ctx context.Context, id string) error {
	if err := checkID(id); err != nil {
		return fmt.Errorf("%w: leave: node ID %q %v", ErrBadRequest, clip(id), err)
	}
	if id == s.cfg.NodeID {
		if s.otherVoters() == 0 {
			return fmt.Errorf("quotamesh/consensus: leave: %s is the only voter; the cluster would have none", id)
		}
		if o := s.submit(ctx, s.raft.LeadershipTransfer); o.err != nil {
			return s.raftErr(o.err, "handing leadership over before leaving")
		}
		// The new leader removes us: the caller's retry finds it.
		return fmt.Errorf("%w: %s handed leadership over so that it can be removed", ErrNotLeader, id)
	}
	cfg, _, err := s.configuration()
	if err != nil {
		return err
	}
	if !slices.ContainsFunc(cfg.Servers, func(m raft.Server) bool { return string(m.ID) == id }) {
		return nil
	}
	if o := s.submit(ctx, func() raft.Future { return s.raft.RemoveServer(raft.ServerID(id), 0, s.cfg.ElectionTimeout) }); o.err != nil {
		return s.raftErr(o.err, "removing "+id)
	}
	s.log.Info().Str("peer", id).Msg("member removed")
	s.kickReconcile()
	return nil
}

func (s *Store) configuration() (raft.Configuration, uint64, error) {
	f := s.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		return raft.Configuration{}, 0, s.raftErr(err, "reading the configuration")
	}
	return f.Configuration(), f.Index(), nil
}

func (s *Store) kickReconcile() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// run is the Store's one background goroutine. On the leader it applies a
// barrier once per term (so that consistent reads need not wait for one) and
// keeps the voter set right; on other nodes it idles.
func (s *Store) run() {
	defer close(s.loopDone)
	tick := time.NewTicker(s.cfg.ReconcileInterval)
	defer tick.Stop()
	leaderCh := s.raft.LeaderCh()
	for {
		select {
		case <-s.closing:
			return
		case <-tick.C:
		case <-s.kick:
		case <-leaderCh:
		case o := <-s.observed:
			if lo, ok := o.Data.(raft.LeaderObservation); ok {
				s.log.Info().Str("leader", string(lo.LeaderID)).Str("address", string(lo.LeaderAddr)).Msg("leader changed")
			}
			s.signalLeaderChange()
			continue
		}
		if s.raft.State() != raft.Leader {
			s.lastSeen = nil
			continue
		}
		ctx, cancel := context.WithTimeout(s.ctx, s.cfg.ReconcileInterval+s.cfg.RPCTimeout)
		if err := s.ensureReady(ctx, s.raft.CurrentTerm()); err != nil {
			s.log.Debug().Err(err).Msg("barrier after winning the election")
		}
		s.reconcile(ctx)
		cancel()
	}
}

// reconcile makes one change, at most, towards min(MaxVoters, members)
// healthy voters: promote a healthy non-voter while voters are short, demote
// a voter while there are too many, or swap a voter that has been
// unreachable for DeadVoterAfter for a healthy non-voter. After a change it
// runs again at once.
func (s *Store) reconcile(ctx context.Context) {
	cfg, index, err := s.configuration()
	if err != nil {
		return
	}
	self := raft.ServerID(s.cfg.NodeID)
	var voters, nonvoters []raft.Server
	for _, m := range cfg.Servers {
		if m.Suffrage == raft.Voter {
			voters = append(voters, m)
		} else {
			nonvoters = append(nonvoters, m)
		}
	}
	byID := func(a, b raft.Server) int { return strings.Compare(string(a.ID), string(b.ID)) }
	slices.SortFunc(voters, byID)
	slices.SortFunc(nonvoters, byID)

	// Liveness of the other voters, as this leader has seen it this term.
	now := time.Now()
	if term := s.raft.CurrentTerm(); s.lastSeen == nil || s.seenTerm != term {
		s.lastSeen, s.seenTerm = make(map[raft.ServerID]time.Time), term
	}
	isVoter := make(map[raft.ServerID]bool, len(voters))
	for _, v := range voters {
		isVoter[v.ID] = true
		if v.ID == self {
			continue
		}
		if _, ok := s.lastSeen[v.ID]; !ok {
			s.lastSeen[v.ID] = now
		}
		if s.cfg.DeadVoterAfter > 0 && s.probe(ctx, v, 0) == nil {
			s.lastSeen[v.ID] = now
		}
	}
	for id := range s.lastSeen {
		if !isVoter[id] {
			delete(s.lastSeen, id)
		}
	}

	healthy := func() (raft.Server, bool) {
		for _, nv := range nonvoters {
			if err := s.probe(ctx, nv, index); err == nil {
				return nv, true
			} else {
				s.log.Debug().Err(err).Str("peer", string(nv.ID)).Msg("non-voter not ready for a vote")
			}
		}
		return raft.Server{}, false
	}

	switch {
	case len(voters) < s.cfg.MaxVoters && len(nonvoters) > 0:
		nv, ok := healthy()
		if !ok {
			return
		}
		if o := s.submit(ctx, func() raft.Future { return s.raft.AddVoter(nv.ID, nv.Address, index, s.cfg.ElectionTimeout) }); o.err != nil {
			s.log.Warn().Err(o.err).Str("peer", string(nv.ID)).Msg("promoting a non-voter failed")
			return
		}
		s.log.Info().Str("peer", string(nv.ID)).Int("voters", len(voters)+1).Msg("promoted a non-voter")
		s.kickReconcile()

	case len(voters) > s.cfg.MaxVoters:
		// Demote the voter heard from least recently (never this leader).
		var pick raft.Server
		var oldest time.Time
		for _, v := range voters {
			if v.ID == self {
				continue
			}
			if seen := s.lastSeen[v.ID]; pick.ID == "" || seen.Before(oldest) {
				pick, oldest = v, seen
			}
		}
		if o := s.submit(ctx, func() raft.Future { return s.raft.DemoteVoter(pick.ID, index, s.cfg.ElectionTimeout) }); o.err != nil {
			s.log.Warn().Err(o.err).Str("peer", string(pick.ID)).Msg("demoting a voter failed")
			return
		}
		s.log.Info().Str("peer", string(pick.ID)).Int("voters", len(voters)-1).Msg("demoted a voter: more than MaxVoters")
		s.kickReconcile()

	case s.cfg.DeadVoterAfter > 0 && len(nonvoters) > 0:
		var dead raft.Server
		for _, v := range voters {
			if v.ID != self && now.Sub(s.lastSeen[v.ID]) >= s.cfg.DeadVoterAfter {
				dead = v
				break
			}
		}
		if dead.ID == "" {
			return
		}
		nv, ok := healthy()
		if !ok {
			return
		}
		// Promote first, then demote: the voter count never drops below
		// MaxVoters, so the quorum tolerates as many failures throughout.
		if o := s.submit(ctx, func() raft.Future { return s.raft.AddVoter(nv.ID, nv.Address, index, s.cfg.ElectionTimeout) }); o.err != nil {
			s.log.Warn().Err(o.err).Str("peer", string(nv.ID)).Msg("promoting a replacement voter failed")
			return
		}
		if o := s.submit(ctx, func() raft.Future { return s.raft.DemoteVoter(dead.ID, 0, s.cfg.ElectionTimeout) }); o.err != nil {
			s.log.Warn().Err(o.err).Str("peer", string(dead.ID)).Msg("demoting an unreachable voter failed")
			return
		}
		s.log.Warn().Str("peer", string(dead.ID)).Str("replacement", string(nv.ID)).
			Dur("unreachable_for", now.Sub(s.lastSeen[dead.ID])).Msg("replaced an unreachable voter")
		s.kickReconcile()
	}
}

// probe asks a member for its status through the Forwarder. The member is
// healthy if it answers as itself, follows this leader, and has received the
// log up to minIndex (the latest configuration, for a non-voter about to be
// promoted).
func (s *Store) probe(ctx context.Context, m raft.Server, minIndex uint64) error {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.HeartbeatTimeout)
	defer cancel()
	resp, err := s.forward(ctx, string(m.Address), string(m.ID), request{Op: opStatus})
	if err != nil {
		return err
	}
	st := resp.Status
	switch {
	case st.ID != string(m.ID):
		return fmt.Errorf("the member at %s answered as %q, not %q", m.Address, st.ID, m.ID)
	case st.LeaderID != s.cfg.NodeID:
		return fmt.Errorf("member %s follows %q, not this leader", m.ID, st.LeaderID)
	case st.LastIndex < minIndex:
		return fmt.Errorf("member %s has the log up to %d, not yet %d", m.ID, st.LastIndex, minIndex)
	}
	return nil
}

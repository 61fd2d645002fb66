package consensus

import (
	"strconv"
	"time"

	"github.com/hashicorp/raft"
)

// Leader returns the leader this node knows, or empty strings.
func (s *Store) Leader() (id, addr string) {
	a, i := s.raft.LeaderWithID()
	return string(i), string(a)
}

// State is this node's Raft state: "follower", "candidate", "leader",
// "shutdown", or "closed" once Close has been called.
func (s *Store) State() string {
	if !s.open() {
		return "closed"
	}
	return stateName(s.raft.State())
}

func stateName(st raft.RaftState) string {
	switch st {
	case raft.Follower:
		return "follower"
	case raft.Candidate:
		return "candidate"
	case raft.Leader:
		return "leader"
	}
	return "shutdown"
}

func (s *Store) status() status {
	_, id := s.raft.LeaderWithID()
	return status{
		ID:        s.cfg.NodeID,
		State:     stateName(s.raft.State()),
		LeaderID:  string(id),
		LastIndex: s.raft.LastIndex(),
		Applied:   s.fsm.applied.Load(),
	}
}

// Stats is a snapshot of a Store's counters and Raft indexes, for metrics and
// the status command.
type Stats struct {
	// State is as State returns it.
	State string
	// LeaderID is the leader this node knows, or empty.
	LeaderID string
	// Term is Raft's current term; it grows with every election.
	Term uint64
	// LastLogIndex, CommitIndex and AppliedIndex are Raft's (AppliedIndex
	// counts every log entry, not only changes to the table).
	LastLogIndex      uint64
	CommitIndex       uint64
	AppliedIndex      uint64
	LastSnapshotIndex uint64
	// TableIndex is the log index of the last change in Table.
	TableIndex uint64
	// Rules is the number of rules in Table.
	Rules int
	// Voters and NonVoters count the members of the latest configuration
	// this node knows.
	Voters    int
	NonVoters int
	// LastContact is how long ago this follower last heard from the leader
	// (0 on the leader, -1 if never).
	LastContact time.Duration
	// Forwarded counts requests this node sent to a leader; Served counts
	// requests other members forwarded to this one.
	Forwarded uint64
	Served    uint64
}

// Stats returns current counters.
func (s *Store) Stats() Stats {
	_, id := s.raft.LeaderWithID()
	st := Stats{
		State:        s.State(),
		LeaderID:     string(id),
		Term:         s.raft.CurrentTerm(),
		LastLogIndex: s.raft.LastIndex(),
		CommitIndex:  s.raft.CommitIndex(),
		AppliedIndex: s.raft.AppliedIndex(),
		TableIndex:   s.fsm.applied.Load(),
		Rules:        s.Table().Len(),
		Forwarded:    s.forwarded.Load(),
		Served:       s.served.Load(),
		LastContact:  -1,
	}
	if v, err := strconv.ParseUint(s.raft.Stats()["last_snapshot_index"], 10, 64); err == nil {
		st.LastSnapshotIndex = v
	}
	if s.raft.State() == raft.Leader {
		st.LastContact = 0
	} else if t := s.raft.LastContact(); !t.IsZero() {
		st.LastContact = time.Since(t)
	}
	if f := s.raft.GetConfiguration(); f.Error() == nil {
		for _, srv := range f.Configuration().Servers {
			if srv.Suffrage == raft.Voter {
				st.Voters++
			} else {
				st.NonVoters++
			}
		}
	}
	return st
}

package sim

import (
	"fmt"
	"time"

	"github.com/quotamesh/quotamesh/limits"
	"github.com/quotamesh/quotamesh/window"
)

// Reset resets every key of the workload (its rule's pattern) during the run (design.md §8, "Resets"). At At,
// node 0 (as the node an operator asks) picks the floor: the first slot
// edge at least Lead after its clock reads; the reset is committed then,
// and each node applies it Apply[i] after At (Raft delivering it; default
// the RTT), a node that is down or cut off at that time when Apply says.
// A node restarted after At starts with it.
type Reset struct {
	At    time.Duration
	Lead  time.Duration
	Apply map[int]time.Duration
}

// ResetFloor is when a reset took effect: its floor slot's start, as time
// since the load began (on node 0's clock, true time with no skew).
type ResetFloor = time.Duration

func (c Config) validateResets() error {
	for i, r := range c.Resets {
		if r.Lead < 0 || r.Lead > time.Minute {
			return fmt.Errorf("%w: reset %d lead %v, use 0 to 1m", ErrInvalid, i, r.Lead)
		}
		for n, d := range r.Apply {
			if n < 0 || n >= c.Nodes || d < 0 {
				return fmt.Errorf("%w: reset %d applies on node %d after %v: name a node of %d and a delay >= 0", ErrInvalid, i, n, d, c.Nodes)
			}
		}
	}
	return nil
}

// scheduleResets queues the commits of the resets.
func (s *sim) scheduleResets() {
	for i, r := range s.cfg.Resets {
		s.q.push(event{at: s.cfg.Warmup + r.At, kind: evResetCommit, from: i})
	}
}

// handleReset runs a reset's commit (node 0 picks the floor, every node's
// apply is queued) or one node's apply of it.
func (s *sim) handleReset(ev event) {
	r := s.cfg.Resets[ev.from]
	switch ev.kind {
	case evResetCommit:
		floor := window.EpochOf(s.nodeTime(s.nodes[0])+int64(r.Lead)) + 1
		t, err := s.table.WithReset(limits.Reset{Pattern: s.work.Rule, Floor: floor})
		if err != nil {
			panic(fmt.Sprintf("sim: reset: %v", err)) // the key and a floor from a clock are valid
		}
		s.table = t
		s.resetTables = append(s.resetTables, t)
		at := time.Duration(floor*int64(limits.Slot)-base-int64(s.nodes[0].offset)) - s.cfg.Warmup
		s.res.ResetFloors = append(s.res.ResetFloors, at)
		for i := range s.nodes {
			d, ok := r.Apply[i]
			if !ok {
				d = s.cfg.RTT
			}
			s.q.push(event{at: s.now + d, kind: evResetApply, node: i, from: len(s.resetTables) - 1})
		}
	case evResetApply:
		n := s.nodes[ev.node]
		if n.pausedTo > s.now {
			ev.at = n.pausedTo // the process is stopped: Raft's apply waits for it
			s.q.push(ev)
			return
		}
		if !n.down {
			n.eng.SetTable(s.resetTables[ev.from])
		}
	}
}

// The reset's events, numbered apart from queue.go's.
const (
	evResetCommit eventKind = 64 + iota // a reset is committed (Config.Resets[from])
	evResetApply                        // node applies reset resetTables[from]
)

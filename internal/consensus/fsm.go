package consensus

import (
	"context"
	"fmt"
	"io"
	"sync"
	"sync/atomic"

	"github.com/hashicorp/raft"
	"github.com/rs/zerolog"

	"github.com/quotamesh/quotamesh/limits"
)

// dedupWindow is how many request IDs the state machine remembers. A request
// retried after more than this many later changes would be applied again;
// retries happen within seconds, and the table changes rarely.
const dedupWindow = 4096

// applyResult is what the state machine returns for a command: the log index
// it was (first) applied at and its error, as a wire code and message so that
// a duplicate can return exactly what the original did.
type applyResult struct {
	Index uint64
	Code  code
	Msg   string
}

func (r applyResult) err() error { return errorOf(r.Code, r.Msg) }

// fsm is the Raft state machine: the limit table and the dedup window.
//
// Apply, Snapshot and Restore are called by Raft one at a time, on its FSM
// goroutine (Restore also from NewRaft before that goroutine starts), so the
// dedup window needs no lock. The table and applied index are read by any
// goroutine.
type fsm struct {
	table    atomic.Pointer[limits.Table]
	applied  atomic.Uint64 // log index of the last command applied
	onChange func(*limits.Table, uint64)
	log      zerolog.Logger

	// Dedup window, FSM goroutine only.
	results map[uint64]applyResult
	order   []uint64 // ring of IDs in application order
	next    int      // next position to overwrite in order once full

	mu     sync.Mutex
	notify chan struct{} // closed and replaced each time applied advances
}

var (
	_ raft.FSM         = (*fsm)(nil)
	_ raft.FSMSnapshot = (*fsmSnapshot)(nil)
)

func newFSM(log zerolog.Logger, onChange func(*limits.Table, uint64)) *fsm {
	f := &fsm{
		onChange: onChange,
		log:      log,
		results:  make(map[uint64]applyResult),
		notify:   make(chan struct{}),
	}
	empty, _ := limits.NewTable()
	f.table.Store(empty)
	return f
}

// Apply applies one committed command. It must be deterministic: every node
// applies the same commands in the same order and must reach the same table
// and dedup window. A command that fails (a delete of a missing rule, a rule
// that a newer node accepted but this one does not) changes nothing and its
// error is the result.
func (f *fsm) Apply(l *raft.Log) any {
	cmd, err := decodeCommand(l.Data)
	if err != nil {
		// Not ours, or from a newer version: skip it on every node alike.
		f.log.Error().Err(err).Uint64("index", l.Index).Msg("skipping a log entry that does not decode")
		f.advance(l.Index)
		return applyResult{Index: l.Index, Code: codeOf(err), Msg: err.Error()}
	}
	if cmd.ID != 0 {
		if res, ok := f.results[cmd.ID]; ok {
			// A retry of a request already applied: answer as before.
			f.advance(l.Index)
			return res
		}
	}
	old := f.table.Load()
	var t *limits.Table
	switch cmd.Op {
	case opSet:
		t, err = old.With(cmd.Rule.rule())
	case opDelete:
		t, err = old.Without(cmd.Pattern)
	case opReset:
		t, err = old.WithReset(limits.Reset{Pattern: cmd.Pattern, Floor: cmd.Floor})
	}
	res := applyResult{Index: l.Index}
	if err != nil {
		res.Code, res.Msg = codeOf(err), err.Error()
	}
	if cmd.ID != 0 {
		f.remember(cmd.ID, res)
	}
	if err == nil {
		f.table.Store(t)
		// The node first, then the applied index: a writer waiting for
		// its change (waitApplied), or a member asked whether it applied
		// it (AwaitApplied), finds it in force in the node too.
		if f.onChange != nil {
			f.onChange(t, l.Index)
		}
	}
	f.advance(l.Index)
	return res
}

// remember adds a result to the dedup window, evicting the oldest once full.
func (f *fsm) remember(id uint64, res applyResult) {
	if len(f.order) < dedupWindow {
		f.order = append(f.order, id)
	} else {
		delete(f.results, f.order[f.next])
		f.order[f.next] = id
		f.next = (f.next + 1) % dedupWindow
	}
	f.results[id] = res
}

// advance publishes a new applied index and wakes waiters.
func (f *fsm) advance(index uint64) {
	f.applied.Store(index)
	f.mu.Lock()
	close(f.notify)
	f.notify = make(chan struct{})
	f.mu.Unlock()
}

// waitApplied returns once a command at index or later has been applied (or
// a snapshot covering it restored), or when ctx or stop ends first.
func (f *fsm) waitApplied(ctx context.Context, stop <-chan struct{}, index uint64) error {
	for {
		f.mu.Lock()
		ch := f.notify
		f.mu.Unlock()
		if f.applied.Load() >= index {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		case <-stop:
			return ErrClosed
		}
	}
}

// Snapshot captures the state. Tables are immutable, so the table pointer is
// captured as is; the dedup window is copied in application order.
func (f *fsm) Snapshot() (raft.FSMSnapshot, error) {
	s := snapshot{
		Index:  f.applied.Load(),
		Rules:  toWireRules(f.table.Load().Rules()),
		Resets: toWireResets(f.table.Load().Resets()),
		Recent: make([]recent, 0, len(f.order)),
	}
	for i := range f.order {
		id := f.order[(f.next+i)%len(f.order)]
		r := f.results[id]
		s.Recent = append(s.Recent, recent{ID: id, Index: r.Index, Code: r.Code, Msg: r.Msg})
	}
	return &fsmSnapshot{s: s}, nil
}

// Restore replaces the state with a snapshot, from this node's disk at start
// or from the leader.
func (f *fsm) Restore(rc io.ReadCloser) error {
	defer func() { _ = rc.Close() }()
	b, err := io.ReadAll(io.LimitReader(rc, maxSnapshotBytes+1))
	if err != nil {
		return fmt.Errorf("reading snapshot: %w", err)
	}
	s, t, err := decodeSnapshot(b)
	if err != nil {
		return err
	}
	f.results = make(map[uint64]applyResult, len(s.Recent))
	f.order = f.order[:0]
	f.next = 0
	for _, r := range s.Recent {
		f.remember(r.ID, applyResult{Index: r.Index, Code: r.Code, Msg: r.Msg})
	}
	f.table.Store(t)
	if f.onChange != nil {
		f.onChange(t, s.Index)
	}
	f.advance(s.Index)
	f.log.Info().Uint64("index", s.Index).Int("rules", t.Len()).Msg("restored snapshot")
	return nil
}

// fsmSnapshot writes a captured state; Raft calls Persist on its own
// goroutine.
type fsmSnapshot struct{ s snapshot }

func (s *fsmSnapshot) Persist(sink raft.SnapshotSink) error {
	b, err := encodeSnapshot(s.s)
	if err == nil {
		_, err = sink.Write(b)
	}
	if err != nil {
		_ = sink.Cancel()
		return fmt.Errorf("writing snapshot: %w", err)
	}
	return sink.Close()
}

func (s *fsmSnapshot) Release() {}

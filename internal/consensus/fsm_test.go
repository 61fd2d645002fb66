package consensus

import (
	"bytes"
	"errors"
	"io"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"github.com/rs/zerolog"

	"github.com/quotamesh/quotamesh/limits"
)

func entry(t *testing.T, index uint64, c command) *raft.Log {
	t.Helper()
	b, err := encodeCommand(c)
	if err != nil {
		t.Fatal(err)
	}
	return &raft.Log{Index: index, Type: raft.LogCommand, Data: b}
}

// memSink is a raft.SnapshotSink in memory.
type memSink struct{ bytes.Buffer }

func (s *memSink) ID() string    { return "mem" }
func (s *memSink) Cancel() error { return nil }
func (s *memSink) Close() error  { return nil }

func TestFSMStepByStep(t *testing.T) {
	var changes []uint64
	f := newFSM(zerolog.Nop(), func(_ *limits.Table, i uint64) { changes = append(changes, i) })
	a1, a2 := rule("a", "1/s"), rule("a", "2/s")
	for _, step := range []struct {
		index   uint64
		cmd     command
		want    error // nil or the sentinel
		wantIdx uint64
		rules   []limits.Rule
	}{
		{1, command{Op: opSet, ID: 10, Rule: toWire(a1)}, nil, 1, []limits.Rule{a1}},
		{2, command{Op: opSet, ID: 10, Rule: toWire(a2)}, nil, 1, []limits.Rule{a1}}, // retry of ID 10: skipped, answers as before
		{3, command{Op: opSet, ID: 11, Rule: toWire(a2)}, nil, 3, []limits.Rule{a2}},
		{4, command{Op: opDelete, ID: 12, Pattern: "b"}, limits.ErrNoRule, 4, []limits.Rule{a2}},
		{5, command{Op: opDelete, ID: 12, Pattern: "b"}, limits.ErrNoRule, 4, []limits.Rule{a2}}, // the failure is remembered too
		{6, command{Op: opSet, ID: 13, Rule: wireRule{Pattern: "c", Count: 0, Window: time.Second}}, limits.ErrInvalidRate, 6, []limits.Rule{a2}},
		{7, command{Op: opDelete, ID: 14, Pattern: "a"}, nil, 7, nil},
		{8, command{Op: opSet, Rule: toWire(a1)}, nil, 8, []limits.Rule{a1}}, // ID 0: no dedup
		{9, command{Op: opSet, Rule: toWire(a1)}, nil, 9, []limits.Rule{a1}},
	} {
		res := f.Apply(entry(t, step.index, step.cmd)).(applyResult)
		if err := res.err(); (step.want == nil) != (err == nil) || (step.want != nil && !errors.Is(err, step.want)) {
			t.Errorf("step %d: Apply(%+v) err = %v, want %v", step.index, step.cmd, err, step.want)
		}
		if res.Index != step.wantIdx {
			t.Errorf("step %d: result index = %d, want %d", step.index, res.Index, step.wantIdx)
		}
		if got := f.table.Load().Rules(); !equalRules(got, step.rules) {
			t.Errorf("step %d: table = %v, want %v", step.index, got, step.rules)
		}
		if got := f.applied.Load(); got != step.index {
			t.Errorf("step %d: applied = %d, want %d", step.index, got, step.index)
		}
	}
	if want := []uint64{1, 3, 7, 8, 9}; !equalIdx(changes, want) {
		t.Errorf("OnChange indexes = %v, want %v", changes, want)
	}

	// A snapshot restored into a new state machine reproduces the table and
	// the dedup window: a retry of ID 11 is still skipped there.
	snap, err := f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	var sink memSink
	if err := snap.Persist(&sink); err != nil {
		t.Fatal(err)
	}
	var restored []uint64
	g := newFSM(zerolog.Nop(), func(_ *limits.Table, i uint64) { restored = append(restored, i) })
	if err := g.Restore(io.NopCloser(&sink)); err != nil {
		t.Fatal(err)
	}
	if !g.table.Load().Equal(f.table.Load()) || g.applied.Load() != 9 || !equalIdx(restored, []uint64{9}) {
		t.Fatalf("restored table %v at %d (OnChange %v); want %v at 9", g.table.Load().Rules(), g.applied.Load(), restored, f.table.Load().Rules())
	}
	res := g.Apply(entry(t, 10, command{Op: opSet, ID: 11, Rule: toWire(rule("z", "5/s"))})).(applyResult)
	if res.Index != 3 || g.table.Load().Len() != 1 {
		t.Errorf("retry after restore: result %+v, table %v; want skipped with index 3", res, g.table.Load().Rules())
	}
	// Bytes that do not decode are skipped, not applied and not fatal.
	res = g.Apply(&raft.Log{Index: 11, Data: []byte("junk")}).(applyResult)
	if !errors.Is(res.err(), ErrBadRequest) || g.applied.Load() != 11 {
		t.Errorf("junk entry: %+v, applied %d", res, g.applied.Load())
	}
}

func TestFSMDedupWindowEvictsOldest(t *testing.T) {
	f := newFSM(zerolog.Nop(), nil)
	for i := uint64(1); i <= dedupWindow+1; i++ {
		f.Apply(entry(t, i, command{Op: opSet, ID: i, Rule: toWire(rule("k", "1/s"))}))
	}
	if len(f.results) != dedupWindow {
		t.Fatalf("window holds %d, want %d", len(f.results), dedupWindow)
	}
	if _, ok := f.results[1]; ok {
		t.Error("ID 1 still remembered after the window moved past it")
	}
	if _, ok := f.results[dedupWindow+1]; !ok {
		t.Error("newest ID forgotten")
	}
	// Snapshot order is application order, so a restore evicts the same way.
	snap, _ := f.Snapshot()
	s := snap.(*fsmSnapshot).s
	if s.Recent[0].ID != 2 || s.Recent[len(s.Recent)-1].ID != dedupWindow+1 {
		t.Errorf("snapshot window from ID %d to %d; want 2 to %d", s.Recent[0].ID, s.Recent[len(s.Recent)-1].ID, dedupWindow+1)
	}
}

func equalRules(a, b []limits.Rule) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func equalIdx(a, b []uint64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestLogLimiter(t *testing.T) {
	l := &logLimiter{last: make(map[string]*limitState)}
	t0 := time.Unix(100, 0)
	for i, step := range []struct {
		key        string
		at         time.Duration
		ok         bool
		suppressed int
	}{
		{"a", 0, true, 0},
		{"a", 100 * time.Millisecond, false, 0},
		{"b", 100 * time.Millisecond, true, 0},
		{"a", 900 * time.Millisecond, false, 0},
		{"a", time.Second, true, 2},
		{"a", 1500 * time.Millisecond, false, 0},
		{"a", 3 * time.Second, true, 1},
	} {
		ok, n := l.allow(step.key, t0.Add(step.at))
		if ok != step.ok || n != step.suppressed {
			t.Errorf("step %d: allow(%q, t0+%v) = %v, %d; want %v, %d", i, step.key, step.at, ok, n, step.ok, step.suppressed)
		}
	}
}

func TestHCLogAdapter(t *testing.T) {
	var buf bytes.Buffer
	a := newHCLog(zerolog.New(&buf).Level(zerolog.InfoLevel))
	a.Named("net").With("peer", "n2").Error("failed to heartbeat to", "error", errors.New("boom"), "backoff time", 10*time.Millisecond)
	a.Debug("hidden")
	got := buf.String()
	for _, want := range []string{`"level":"error"`, `"sub":"net"`, `"peer":"n2"`, `"error":"boom"`, `"message":"failed to heartbeat to"`} {
		if !bytes.Contains([]byte(got), []byte(want)) {
			t.Errorf("log line %s lacks %s", got, want)
		}
	}
	if bytes.Contains(buf.Bytes(), []byte("hidden")) {
		t.Error("debug message written at info level")
	}
	buf.Reset()
	a.Named("net").Error("failed to heartbeat to") // within a second: suppressed
	if buf.Len() != 0 {
		t.Errorf("repeated error not rate-limited: %s", buf.String())
	}
	if !a.IsInfo() || a.IsDebug() {
		t.Errorf("IsInfo %v IsDebug %v at info level", a.IsInfo(), a.IsDebug())
	}
}

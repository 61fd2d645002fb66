package consensus

import (
	"bytes"
	"errors"
	"io"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/vmihailenco/msgpack/v5"

	"github.com/quotamesh/quotamesh/limits"
)

// TestFSMResets: a reset is a command like a set; it keeps the rules, a
// newer reset of the same pattern replaces an older one, a bad floor is
// refused, and resets survive snapshots.
func TestFSMResets(t *testing.T) {
	f := newFSM(zerolog.Nop(), nil)
	a := rule("user:*", "10/s")
	steps := []struct {
		cmd    command
		want   error
		resets []limits.Reset
	}{
		{command{Op: opSet, ID: 1, Rule: toWire(a)}, nil, nil},
		{command{Op: opReset, ID: 2, Pattern: "user:42", Floor: 100}, nil, []limits.Reset{{Pattern: "user:42", Floor: 100}}},
		{command{Op: opReset, ID: 3, Pattern: "user:*", Floor: 110}, nil, []limits.Reset{{Pattern: "user:42", Floor: 100}, {Pattern: "user:*", Floor: 110}}},
		{command{Op: opReset, ID: 4, Pattern: "user:42", Floor: 120}, nil, []limits.Reset{{Pattern: "user:*", Floor: 110}, {Pattern: "user:42", Floor: 120}}},
		{command{Op: opReset, ID: 5, Pattern: "user:1", Floor: 0}, limits.ErrInvalidReset, []limits.Reset{{Pattern: "user:*", Floor: 110}, {Pattern: "user:42", Floor: 120}}},
		{command{Op: opReset, ID: 6, Pattern: "a b", Floor: 5}, limits.ErrInvalidPattern, []limits.Reset{{Pattern: "user:*", Floor: 110}, {Pattern: "user:42", Floor: 120}}},
		{command{Op: opSet, ID: 7, Rule: toWire(rule("b", "1/s"))}, nil, []limits.Reset{{Pattern: "user:*", Floor: 110}, {Pattern: "user:42", Floor: 120}}},
	}
	for i, s := range steps {
		res := f.Apply(entry(t, uint64(i+1), s.cmd)).(applyResult)
		if err := res.err(); (s.want == nil) != (err == nil) || s.want != nil && !errors.Is(err, s.want) {
			t.Errorf("step %d: Apply(%+v) = %v, want %v", i, s.cmd, err, s.want)
		}
		if got := f.table.Load().Resets(); !equalResets(got, s.resets) {
			t.Errorf("step %d: resets %v, want %v", i, got, s.resets)
		}
	}
	if f.table.Load().Len() != 2 {
		t.Errorf("rules %v, want user:* and b", f.table.Load().Rules())
	}
	snap, err := f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	var sink memSink
	if err := snap.Persist(&sink); err != nil {
		t.Fatal(err)
	}
	g := newFSM(zerolog.Nop(), nil)
	if err := g.Restore(io.NopCloser(&sink)); err != nil {
		t.Fatal(err)
	}
	if !g.table.Load().Equal(f.table.Load()) {
		t.Errorf("restored resets %v, want %v", g.table.Load().Resets(), f.table.Load().Resets())
	}
}

func equalResets(a, b []limits.Reset) bool {
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

// TestResetEncodingCompatible: set and delete entries, and snapshots of a
// table without resets, encode byte for byte as before resets existed.
func TestResetEncodingCompatible(t *testing.T) {
	old := v1Command{V: formatVersion, Op: opDelete, ID: 9, Pattern: "a"}
	oldBytes, _ := msgpack.Marshal(&old)
	if b, err := encodeCommand(command{Op: opDelete, ID: 9, Pattern: "a"}); err != nil || !bytes.Equal(b, oldBytes) {
		t.Errorf("a delete encodes as %x, %v; want the old bytes %x", b, err, oldBytes)
	}
	oldSnap, _ := msgpack.Marshal(&v1Snapshot{V: formatVersion, Index: 3, Rules: []v1Rule{{"a", 1, time.Second}}})
	if b, err := encodeSnapshot(snapshot{Index: 3, Rules: toWireRules([]limits.Rule{rule("a", "1/s")})}); err != nil || !bytes.Equal(b, oldSnap) {
		t.Errorf("a snapshot without resets encodes as %x, %v; want the old bytes %x", b, err, oldSnap)
	}
	// A snapshot with a bad reset is refused, not applied.
	b, _ := encodeSnapshot(snapshot{Index: 3, Resets: []wireReset{{Pattern: "a", Floor: -1}}})
	if _, _, err := decodeSnapshot(b); err == nil {
		t.Errorf("a snapshot with floor -1 decoded")
	}
}

// TestResetReachesACutOffFollower: a reset made while a follower is cut off
// reaches it when it comes back, and survives its restart.
func TestResetReachesACutOffFollower(t *testing.T) {
	c := newCluster(t, 3)
	lead := c.leader()
	if _, err := lead.store.Set(ctxT(t, 5*time.Second), rule("user:*", "10/s")); err != nil {
		t.Fatal(err)
	}
	away := c.follower()
	var rest []string
	for _, n := range c.running() {
		if n != away {
			rest = append(rest, n.addr)
		}
	}
	c.net.Partition([]string{away.addr}, rest)
	idx, err := lead.store.Reset(ctxT(t, 5*time.Second), "user:*", 12345)
	if err != nil {
		t.Fatal(err)
	}
	if missing := lead.store.AwaitApplied(ctxT(t, 2*time.Second), idx); len(missing) != 1 || missing[0] != away.id {
		t.Errorf("AwaitApplied while %s is cut off = %v, want only it", away.id, missing)
	}
	if got := away.store.Table().ResetFloor("user:1"); got != 0 {
		t.Fatalf("the cut-off follower applied the reset (floor %d) while cut off", got)
	}
	c.net.Heal()
	if missing := lead.store.AwaitApplied(ctxT(t, 5*time.Second), idx); len(missing) != 0 {
		t.Errorf("AwaitApplied after the heal = %v, want every member", missing)
	}
	if got := away.store.Table().ResetFloor("user:1"); got != 12345 {
		t.Errorf("AwaitApplied returned, the follower's floor is %d", got)
	}
	c.stop(away)
	c.start(away, nil)
	c.eventually(5*time.Second, "the restarted follower to hold the reset", func() bool {
		return away.store.Table().ResetFloor("user:1") == 12345
	})
	if _, err := lead.store.Reset(ctxT(t, 5*time.Second), "user:*", 0); !errors.Is(err, limits.ErrInvalidReset) {
		t.Errorf("Reset with floor 0 = %v, want ErrInvalidReset", err)
	}
}

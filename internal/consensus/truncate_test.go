package consensus

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// TestRestartAfterLogSuffixTruncated is the cluster-level regression test
// for hashicorp/raft-wal#31: a leader cut off from the others appends
// changes it can never commit; the majority elects a new leader and commits
// other changes at the same indexes; when the old leader rejoins, raft
// deletes its conflicting suffix (DeleteRange on the tail of its log) and
// replaces it. With raft-wal v0.4.0 that node then could not restart:
// raft.NewRaft panicked with "sealed segment has no index block". Here the
// node restarts from its DataDir, after a kill and after a clean stop, and
// ends up with the cluster's table.
func TestRestartAfterLogSuffixTruncated(t *testing.T) {
	// A leader lease of a full second leaves the cut-off leader ample time
	// to append before it steps down, even on a loaded machine.
	c := newCluster(t, 3, func(c *Config) {
		c.HeartbeatTimeout = time.Second
		c.ElectionTimeout = time.Second
		c.LeaderLeaseTimeout = time.Second
	})
	ctx := ctxT(t, 60*time.Second)
	old := c.leader()
	for i := range 5 {
		if _, err := old.store.Set(ctx, rule(fmt.Sprintf("before%d", i), "10/s")); err != nil {
			t.Fatalf("Set before the partition: %v", err)
		}
	}
	c.waitTables(old.store.Table())
	oldTerm := old.store.raft.CurrentTerm()
	committed := old.store.raft.LastIndex()

	var rest []string
	for _, n := range c.running() {
		if n != old {
			rest = append(rest, n.addr)
		}
	}
	c.net.Partition([]string{old.addr}, rest)

	// Changes proposed to the cut-off leader are appended to its log only.
	var wg sync.WaitGroup
	pctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
	for i := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := old.store.Set(pctx, rule(fmt.Sprintf("orphan%d", i), "1/s"))
			if !errors.Is(err, ErrTimeout) {
				t.Errorf("Set orphan%d on the cut-off leader = %v; want ErrTimeout", i, err)
			}
		}()
	}
	wg.Wait()
	cancel()
	orphanLast := old.store.raft.LastIndex()
	if orphanLast <= committed {
		t.Fatalf("the cut-off leader's log ends at %d, as before the partition: it appended nothing, so nothing will be truncated", orphanLast)
	}

	// The majority moves on and writes at the same indexes.
	var lead *testNode
	c.eventually(10*time.Second, "a leader in the majority", func() bool {
		for _, n := range c.running() {
			if n != old && n.store.State() == "leader" {
				lead = n
				return true
			}
		}
		return false
	})
	for i := range 5 {
		if _, err := lead.store.Set(ctx, rule(fmt.Sprintf("after%d", i), "20/s")); err != nil {
			t.Fatalf("Set on the new leader: %v", err)
		}
	}
	want := lead.store.Table()
	if want.Len() != 10 {
		t.Fatalf("the new leader's table has %d rules, want 10: %v", want.Len(), want.Rules())
	}

	// The old leader rejoins: its suffix is deleted and replaced.
	c.net.Heal()
	c.waitTables(want)
	c.eventually(10*time.Second, "the old leader's log to match the new leader's", func() bool {
		return old.store.raft.LastIndex() >= orphanLast
	})
	for idx := committed + 1; idx <= orphanLast; idx++ {
		var l raft.Log
		if err := old.store.wal.GetLog(idx, &l); err != nil {
			t.Fatalf("GetLog(%d) on the old leader after rejoining: %v", idx, err)
		}
		if l.Term == oldTerm {
			t.Fatalf("index %d on the old leader still has its own term %d: the suffix %d..%d was not replaced", idx, oldTerm, committed+1, orphanLast)
		}
	}
	t.Logf("old leader %s: entries %d..%d of term %d replaced; new leader %s", old.id, committed+1, orphanLast, oldTerm, lead.id)

	// It restarts from its DataDir after a kill...
	c.kill(old)
	c.start(old, nil)
	c.waitTables(want)
	// ... and after a clean stop, and so does every other node.
	c.closeAll()
	for _, n := range c.nodes {
		c.start(n, nil)
	}
	c.waitTables(want)
	if rules, err := old.store.List(ctx); err != nil || len(rules) != want.Len() {
		t.Fatalf("List on %s after restarting = %d rules, %v; want %d", old.id, len(rules), err, want.Len())
	}
}

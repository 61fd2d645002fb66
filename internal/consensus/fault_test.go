package consensus

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/quotamesh/quotamesh/limits"
)

// TestLeaderKilledDuringChanges kills the leader (cut off, then stopped
// without a leadership transfer) while every node streams changes, and checks
// that every change acknowledged to any writer is on every surviving node
// once a new leader is elected, and on the killed node once it restarts from
// its DataDir.
func TestLeaderKilledDuringChanges(t *testing.T) {
	c := newCluster(t, 3)
	lead := c.leader()
	ctx := ctxT(t, 30*time.Second)

	var (
		mu    sync.Mutex
		acked = make(map[string]limits.Rule)
		wg    sync.WaitGroup
	)
	stop := make(chan struct{})
	for _, n := range c.running() {
		wg.Add(1)
		go func(id string, s *Store) {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				r := rule(fmt.Sprintf("w-%s-%d", id, i), fmt.Sprintf("%d/s", i+1))
				octx, cancel := context.WithTimeout(ctx, 3*time.Second)
				_, err := s.Set(octx, r)
				cancel()
				switch {
				case err == nil:
					mu.Lock()
					acked[r.Pattern] = r
					mu.Unlock()
				case errors.Is(err, ErrClosed):
					return // this writer's node was killed
				case errors.Is(err, ErrTimeout):
					// Not acknowledged: it may or may not be applied.
				default:
					t.Errorf("writer %s: Set: %v", id, err)
					return
				}
			}
		}(n.id, n.store)
	}

	// Wait for changes to be acknowledged on both sides of the kill, not
	// for fixed times: elections can take seconds on a loaded machine.
	ackedAtLeast := func(n int, within time.Duration) int {
		deadline := time.Now().Add(within)
		for {
			mu.Lock()
			got := len(acked)
			mu.Unlock()
			if got >= n || time.Now().After(deadline) {
				return got
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	before := ackedAtLeast(5, 10*time.Second)
	c.kill(lead)
	ackedAtLeast(before+5, 15*time.Second)
	close(stop)
	wg.Wait()
	if before == 0 || len(acked) <= before {
		t.Fatalf("acknowledged %d changes before the kill and %d in all: the stream did not run on both sides of it", before, len(acked))
	}
	t.Logf("%d changes acknowledged, %d before the leader (%s) was killed", len(acked), before, lead.id)

	newLead := c.leader()
	if newLead == lead {
		t.Fatal("the killed node still leads")
	}
	check := func(n *testNode) {
		t.Helper()
		if _, err := n.store.Sync(ctx); err != nil {
			t.Fatalf("Sync on %s: %v", n.id, err)
		}
		tb := n.store.Table()
		for p, want := range acked {
			if got, ok := tb.Get(p); !ok || got != want {
				t.Errorf("%s: acknowledged %v, table has %v, %v", n.id, want, got, ok)
			}
		}
	}
	for _, n := range c.running() {
		check(n)
	}

	// The killed node comes back from its disk and catches up.
	c.start(lead, c.voters)
	check(lead)
	want := newLead.store.Table()
	c.waitTables(want)
}

// TestRestartFromDisk restarts every node of a cluster from its DataDir, with
// snapshots taken often, and checks the table survives; then a follower that
// was down while the log was compacted past it catches up from a snapshot.
func TestRestartFromDisk(t *testing.T) {
	c := newCluster(t, 3, func(c *Config) {
		c.SnapshotThreshold = 8
		c.SnapshotInterval = 50 * time.Millisecond
	})
	ctx := ctxT(t, 30*time.Second)
	lead := c.leader()
	var rules []limits.Rule
	for i := range 40 {
		r := rule(fmt.Sprintf("k%d:*", i), fmt.Sprintf("%d/min", 100+i))
		if _, err := lead.store.Set(ctx, r); err != nil {
			t.Fatal(err)
		}
		rules = append(rules, r)
	}
	if _, err := lead.store.Delete(ctx, "k0:*"); err != nil {
		t.Fatal(err)
	}
	want := table(t, rules[1:]...)
	c.waitTables(want)
	c.eventually(5*time.Second, "a snapshot on every node", func() bool {
		for _, n := range c.running() {
			if n.store.Stats().LastSnapshotIndex == 0 {
				return false
			}
		}
		return true
	})

	// Whole cluster down, then up again from disk.
	c.closeAll()
	for _, n := range c.nodes {
		c.start(n, c.voters) // Bootstrap is ignored: there is state on disk
	}
	for _, n := range c.running() {
		// The snapshot is restored in Open, before any leader exists.
		if n.store.Table().Len() == 0 {
			t.Errorf("%s: empty table right after restart; want the snapshot's", n.id)
		}
		if n.changes.latest() == nil {
			t.Errorf("%s: OnChange not called for the restored snapshot", n.id)
		}
	}
	c.waitTables(want)
	if rules, err := c.follower().store.List(ctx); err != nil || len(rules) != want.Len() {
		t.Fatalf("List after restart = %d rules, %v; want %d", len(rules), err, want.Len())
	}

	// A follower misses more changes than the log keeps behind a snapshot:
	// it must be sent the snapshot.
	f := c.follower()
	fLast := f.store.raft.LastIndex()
	c.stop(f)
	lead = c.leader()
	for i := 40; i < 80; i++ {
		r := rule(fmt.Sprintf("k%d:*", i), fmt.Sprintf("%d/min", 100+i))
		if _, err := lead.store.Set(ctx, r); err != nil {
			t.Fatal(err)
		}
		rules = append(rules, r)
	}
	want = table(t, rules[1:]...)
	c.eventually(5*time.Second, "the leader to compact its log past the stopped follower's", func() bool {
		first, err := lead.store.wal.FirstIndex()
		return err == nil && first > fLast+1
	})
	c.start(f, nil)
	c.waitTables(want)
}

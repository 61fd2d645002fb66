package consensus

import (
	"sync/atomic"
	"testing"
	"time"
)

// A Store given a LogDelay asks it before every write to its log and
// stable store (the fault suite's slow disk), and still commits.
func TestLogDelayIsAskedBeforeWrites(t *testing.T) {
	var asked atomic.Int64
	c := newCluster(t, 1, func(cfg *Config) {
		cfg.LogDelay = func() time.Duration { asked.Add(1); return time.Millisecond }
	})
	lead := c.leader()
	before := asked.Load()
	if before == 0 {
		t.Fatalf("LogDelay asked %d times while the node bootstrapped and elected itself; want at least once (term and vote are written)", before)
	}
	if _, err := lead.store.Set(ctxT(t, 10*time.Second), rule("orders.create", "1000/s")); err != nil {
		t.Fatalf("Set on a slow disk: %v", err)
	}
	if after := asked.Load(); after <= before {
		t.Errorf("LogDelay asked %d times after a Set, %d before; want more (the entry is written)", after, before)
	}
}

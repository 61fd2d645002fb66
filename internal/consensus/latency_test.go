package consensus

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"
)

// defaultTimings undoes fastTimings: these tests measure the defaults.
func defaultTimings(c *Config) {
	c.HeartbeatTimeout, c.ElectionTimeout, c.LeaderLeaseTimeout = 0, 0, 0
	c.CommitTimeout, c.RPCTimeout, c.ReconcileInterval = 0, 0, 0
}

func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(p*float64(len(sorted))+0.5) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

// measureApply makes changes one at a time on a follower of a 3-node cluster
// with the default timings, each after the previous one reached every node,
// and returns how long each took from the call to Set (forwarding included)
// to OnChange reporting it on every node. The follower's wait for the commit
// index (up to two commit timeouts) is so paid in full, not hidden by the
// next change's AppendEntries.
func measureApply(tb testing.TB, changes int) []time.Duration {
	c := newCluster(tb, 3, defaultTimings)
	f := c.follower()
	ctx := ctxT(tb, 5*time.Minute)
	lat := make([]time.Duration, 0, changes)
	for i := range changes {
		start := time.Now()
		idx, err := f.store.Set(ctx, rule("orders.create", fmt.Sprintf("%d/s", i+1)))
		if err != nil {
			tb.Fatalf("change %d: %v", i, err)
		}
		var last time.Time
		c.eventually(30*time.Second, fmt.Sprintf("change %d on every node", i), func() bool {
			last = time.Time{}
			for _, n := range c.running() {
				at, ok := n.changes.at(idx)
				if !ok {
					return false
				}
				if at.After(last) {
					last = at
				}
			}
			return true
		})
		lat = append(lat, last.Sub(start))
	}
	slices.Sort(lat)
	return lat
}

// TestEveryChangeReachesEveryNode checks that changes made on a follower are
// applied on every node, in order. How fast is a number, measured by
// BenchmarkApplyLatency rather than asserted here: CI machines are shared.
func TestEveryChangeReachesEveryNode(t *testing.T) {
	lat := measureApply(t, 20)
	t.Logf("20 changes, Set on a follower until OnChange on all 3 nodes: P50 %v, max %v (figures: BenchmarkApplyLatency)",
		percentile(lat, 0.50).Round(time.Microsecond), lat[len(lat)-1].Round(time.Microsecond))
}

// BenchmarkApplyLatency reports the apply latency over 100 changes (P50,
// P99, max in ms), whatever b.N is: the figure docs/benchmarks.md quotes for
// "a limit change is applied on every node: P99 over 100 changes <= 1 s".
//
//	go test -run '^$' -bench ApplyLatency -benchtime 1x ./consensus/
func BenchmarkApplyLatency(b *testing.B) {
	// One measurement of 100 changes whatever b.N is (CI runs every
	// benchmark with -benchtime 100x: 100 rounds would take 15 minutes).
	var lat []time.Duration
	for b.Loop() {
		if lat == nil {
			lat = measureApply(b, 100)
		}
	}
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	b.ReportMetric(ms(percentile(lat, 0.50)), "p50-ms")
	b.ReportMetric(ms(percentile(lat, 0.99)), "p99-ms")
	b.ReportMetric(ms(lat[len(lat)-1]), "max-ms")
	b.ReportMetric(0, "ns/op")
}

// TestLeaderFailoverTime measures, with the default timings, how long after
// the leader dies a change made through a surviving node succeeds.
func TestLeaderFailoverTime(t *testing.T) {
	c := newCluster(t, 3, defaultTimings)
	lead := c.leader()
	ctx := ctxT(t, 30*time.Second)
	if _, err := lead.store.Set(ctx, rule("a", "1/s")); err != nil {
		t.Fatal(err)
	}
	var survivor *testNode
	for _, n := range c.running() {
		if n != lead {
			survivor = n
			break
		}
	}
	start := time.Now()
	c.net.Disconnect(lead.addr) // the moment of death, as the others see it
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	_, err := survivor.store.Set(wctx, rule("a", "2/s"))
	cancel()
	took := time.Since(start)
	if err != nil {
		t.Fatalf("Set through %s after the leader died: %v", survivor.id, err)
	}
	newLead, _ := survivor.store.Leader()
	t.Logf("leader %s killed: change acknowledged through %s after %v (new leader %s)", lead.id, survivor.id, took.Round(time.Millisecond), newLead)
	// The figure is logged, not asserted: on a shared CI machine a starved
	// election can take several timeouts. The write above must still succeed.
	c.kill(lead)
}

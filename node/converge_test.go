package node

import (
	"context"
	"fmt"
	"maps"
	"testing"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"

	"github.com/quotamesh/quotamesh/internal/faultnet"
)

// TestConvergesUnderLoss: with 10 % of every node's datagrams dropped,
// three nodes still end up agreeing on what each of them admitted, and every
// view equals the node's own count (nothing lost, nothing counted twice).
func TestConvergesUnderLoss(t *testing.T) {
	c := newCluster(t, 3)
	c.startAll()
	c.waitReady(10 * time.Second)
	r := rule("conv.*", "100000/min") // a minute-long window: counts stay put while we compare
	if _, err := c.nodes["n1"].SetLimit(ctxT(t, 10*time.Second), r); err != nil {
		t.Fatal(err)
	}
	c.waitRule(r)
	for _, tn := range c.running() {
		if err := tn.pc.SetFaults(faultnet.Faults{Drop: 0.1}); err != nil {
			t.Fatal(err)
		}
	}
	// 50, 100 and 150 admissions, spread over 2 s so that hundreds of
	// datagrams cross the lossy sockets meanwhile.
	own := map[string]int64{}
	for step := range 50 {
		for i, tn := range c.running() {
			for range i + 1 {
				if d, err := tn.Allow(context.Background(), "conv.key"); err != nil || !d.Allowed {
					t.Fatalf("step %d: %s: Allow = %+v, %v", step, tn.id, d, err)
				}
				own[tn.id]++
			}
		}
		time.Sleep(40 * time.Millisecond)
	}
	eventually(t, 15*time.Second, "every node to see every node's count", func() string {
		for _, tn := range c.running() {
			got := tn.eng.PerNode(tn.now(), "conv.key")
			if !maps.Equal(got, own) {
				return fmt.Sprintf("%s sees %v, want %v", tn.id, got, own)
			}
		}
		return ""
	})
	var dropped uint64
	for _, tn := range c.running() {
		dropped += tn.pc.Stats().Dropped
	}
	if dropped == 0 {
		t.Error("no datagram was dropped: the test did not test loss")
	}
	t.Logf("converged with %d datagrams dropped", dropped)
}

// BenchmarkDeltaLatency measures how long a count takes from being admitted
// on one node to being seen by its two peers, on loopback (the target: P99
// at most twice the sync interval). A new key each time, admitted on n1; the
// peers are polled every 100 µs. Reports p50, p99 and max in ms, over 200
// samples whatever b.N:
//
//	go test -run '^$' -bench DeltaLatency -benchtime 1x ./node/
func BenchmarkDeltaLatency(b *testing.B) {
	c := newCluster(b, 3)
	c.startAll()
	c.waitReady(10 * time.Second)
	r := rule("lat.*", "1000000/min")
	if _, err := c.nodes["n1"].SetLimit(ctxT(b, 10*time.Second), r); err != nil {
		b.Fatal(err)
	}
	c.waitRule(r)
	n1, peers := c.nodes["n1"], []*tnode{c.nodes["n2"], c.nodes["n3"]}
	h := hdrhistogram.New(1, int64(time.Second), 3)
	measured := false
	for b.Loop() {
		if measured {
			continue // 200 samples once, whatever b.N is
		}
		measured = true
		for i := range 200 {
			key := fmt.Sprintf("lat.%d.%d", b.N, i)
			start := time.Now()
			if !n1.Admit(key) {
				b.Fatalf("n1 did not admit %s", key)
			}
			for _, p := range peers {
				for p.eng.PerNode(p.now(), key)["n1"] < 1 {
					if time.Since(start) > 2*time.Second {
						b.Fatalf("%s never saw %s", p.id, key)
					}
					time.Sleep(100 * time.Microsecond)
				}
				_ = h.RecordValue(int64(time.Since(start)))
			}
			time.Sleep(time.Duration(i%7) * time.Millisecond) // vary the phase against the ticks
		}
	}
	ms := func(v int64) float64 { return float64(v) / 1e6 }
	b.ReportMetric(ms(h.ValueAtQuantile(50)), "p50-ms")
	b.ReportMetric(ms(h.ValueAtQuantile(99)), "p99-ms")
	b.ReportMetric(ms(h.Max()), "max-ms")
	b.ReportMetric(0, "ns/op")
}

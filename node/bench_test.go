package node

import (
	"context"
	"fmt"
	"math/rand/v2"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
	"golang.org/x/time/rate"

	"github.com/quotamesh/quotamesh/limits"
)

// benchCluster starts three nodes and sets a limit high enough that the
// benchmarks measure the admission path (a compare-and-swap), not denials,
// which are cheaper. It returns n1, which syncs with the two others all
// along.
func benchCluster(tb testing.TB) *tnode {
	tb.Helper()
	_, n1 := benchClusterAll(tb)
	return n1
}

// benchClusterAll is benchCluster, with the cluster.
func benchClusterAll(tb testing.TB) (*cluster, *tnode) {
	tb.Helper()
	c := newCluster(tb, 3, func(cfg *Config) { cfg.LogLevel = "error" })
	c.startAll()
	c.waitReady(20 * time.Second)
	for _, r := range []limits.Rule{
		{Pattern: "bench.*", Rate: limits.MustParseRate("4000000000/s")},
		{Pattern: "deny.*", Rate: limits.MustParseRate("1/min")},
	} {
		if _, err := c.nodes["n1"].SetLimit(ctxT(tb, 10*time.Second), r); err != nil {
			tb.Fatal(err)
		}
		c.waitRule(r)
	}
	n1 := c.nodes["n1"]
	// Create the key, and let a few ticks give n1 its share.
	if _, err := n1.Allow(context.Background(), "bench.key"); err != nil {
		tb.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond)
	return c, n1
}

// TestAllowNoAllocs checks the embedded hot path allocates nothing, and
// that it admits on an existing key.
func TestAllowNoAllocs(t *testing.T) {
	n1 := benchCluster(t)
	ctx := context.Background()
	denied := 0
	allocs := testing.AllocsPerRun(10000, func() {
		d, err := n1.AllowN(ctx, "bench.key", 1)
		if err != nil || !d.Allowed {
			denied++
		}
	})
	if allocs != 0 {
		t.Errorf("AllowN allocates %v times per call; want 0", allocs)
	}
	if denied > 0 {
		t.Errorf("%d of 10001 calls denied or failed", denied)
	}
}

// BenchmarkNodeAllowParallel compares embedded AllowN on an existing key
// (node: while n1 syncs with two peers every 20 ms) with golang.org/x/time/rate
// limiters kept in a sync.Map by key (x_time_rate), in the same run, under
// RunParallel (GOMAXPROCS goroutines on one key). admit: every call is
// admitted (a compare-and-swap on the key's shared count); deny: every call
// is denied (the saturated case, which writes no shared cache line).
//
//	go test -run '^$' -bench NodeAllowParallel -benchtime 2s -count 3 ./node/
func BenchmarkNodeAllowParallel(b *testing.B) {
	n1 := benchCluster(b)
	ctx := context.Background()
	nodeCase := func(key string, allowed bool) func(*testing.B) {
		return func(b *testing.B) {
			b.ReportAllocs()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if d, err := n1.AllowN(ctx, key, 1); err != nil || d.Allowed != allowed {
						b.Errorf("AllowN(%s) = %+v, %v", key, d, err)
						return
					}
				}
			})
		}
	}
	rateCase := func(lim *rate.Limiter, allowed bool) func(*testing.B) {
		return func(b *testing.B) {
			var keys sync.Map
			keys.Store("bench.key", lim)
			b.ReportAllocs()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					v, _ := keys.Load("bench.key")
					if v.(*rate.Limiter).Allow() != allowed {
						b.Error("x/time/rate decided otherwise")
						return
					}
				}
			})
		}
	}
	// Use up deny.key's 1/min (its first quota may come a tick later).
	for admitted := false; ; time.Sleep(5 * time.Millisecond) {
		d, err := n1.Allow(ctx, "deny.key")
		if err != nil {
			b.Fatal(err)
		}
		if admitted && !d.Allowed {
			break
		}
		admitted = admitted || d.Allowed
	}
	denied := rate.NewLimiter(rate.Every(time.Minute), 1)
	denied.Allow()
	b.Run("node/admit", nodeCase("bench.key", true))
	b.Run("x_time_rate/admit", rateCase(rate.NewLimiter(rate.Limit(4e9), 4e9), true))
	b.Run("node/deny", nodeCase("deny.key", false))
	b.Run("x_time_rate/deny", rateCase(denied, false))

	// 1000 keys under one pattern, every call admitted: the usual shape of
	// per-user limits, where no two callers fight over one key.
	keys := make([]string, 1000)
	limiters := make([]*rate.Limiter, len(keys))
	for i := range keys {
		keys[i] = fmt.Sprintf("bench.user:%d", i*7919)
		limiters[i] = rate.NewLimiter(rate.Limit(4e9), 4e9)
		if _, err := n1.Allow(ctx, keys[i]); err != nil { // create the windows
			b.Fatal(err)
		}
	}
	b.Run("node.Admit/deny", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if n1.Admit("deny.key") {
					b.Error("deny.key admitted")
					return
				}
			}
		})
	})
	b.Run("node.Admit/1000keys", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			i := rand.IntN(len(keys))
			for pb.Next() {
				if !n1.Admit(keys[i%len(keys)]) {
					b.Error("denied")
					return
				}
				i++
			}
		})
	})
	b.Run("node/1000keys", func(b *testing.B) {
		b.ReportAllocs()
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			i := rand.IntN(len(keys))
			for pb.Next() {
				if d, err := n1.AllowN(ctx, keys[i%len(keys)], 1); err != nil || !d.Allowed {
					b.Errorf("AllowN(%s) = %+v, %v", keys[i%len(keys)], d, err)
					return
				}
				i++
			}
		})
	})
	b.Run("x_time_rate/1000keys", func(b *testing.B) {
		var m sync.Map
		for i, k := range keys {
			m.Store(k, limiters[i])
		}
		b.ReportAllocs()
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			i := rand.IntN(len(keys))
			for pb.Next() {
				v, _ := m.Load(keys[i%len(keys)])
				if !v.(*rate.Limiter).Allow() {
					b.Error("x/time/rate denied")
					return
				}
				i++
			}
		})
	})
}

// BenchmarkNodeAllowLatency measures the latency of embedded AllowN on an
// existing key with two callers in parallel (while n1 syncs with two
// peers), each call timed with time.Now, into HdrHistograms. It reports
// p50, p99, p99.9 and max in ns; the figures include about one time.Now
// (tens of ns). For the 10^7 calls docs/benchmarks.md reports:
//
//	go test -run '^$' -bench NodeAllowLatency -benchtime 10000000x ./node/
func BenchmarkNodeAllowLatency(b *testing.B) {
	n1 := benchCluster(b)
	const callers = 2
	hists := make([]*hdrhistogram.Histogram, callers)
	for i := range hists {
		hists[i] = hdrhistogram.New(1, int64(10*time.Millisecond), 3)
	}
	ctx := context.Background()
	b.ResetTimer()
	var wg sync.WaitGroup
	for i := range callers {
		calls := b.N / callers
		if i == 0 {
			calls += b.N % callers
		}
		wg.Add(1)
		go func(h *hdrhistogram.Histogram) {
			defer wg.Done()
			for range calls {
				start := time.Now()
				_, err := n1.AllowN(ctx, "bench.key", 1)
				d := time.Since(start)
				if err != nil {
					b.Error(err)
					return
				}
				_ = h.RecordValue(int64(d))
			}
		}(hists[i])
	}
	wg.Wait()
	b.StopTimer()
	all := hists[0]
	for _, h := range hists[1:] {
		all.Merge(h)
	}
	b.ReportMetric(float64(all.ValueAtQuantile(50)), "p50-ns")
	b.ReportMetric(float64(all.ValueAtQuantile(99)), "p99-ns")
	b.ReportMetric(float64(all.ValueAtQuantile(99.9)), "p999-ns")
	b.ReportMetric(float64(all.Max()), "max-ns")
	b.ReportMetric(float64(runtime.GOMAXPROCS(0)), "procs")
}

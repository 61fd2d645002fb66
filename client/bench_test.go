package client

import (
	"context"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// The SDK's benchmarks run a client against the lone test node over real
// QUIC on 127.0.0.1 (docs/benchmarks.md). On the shared 2-core machine run
// them one at a time, briefly:
//
//	go test -run '^$' -bench 'ClientAllowParallel' -benchtime 2s -cpu 2 ./client/
//	go test -run '^$' -bench 'ClientStrict' -benchtime 3s -cpu 2 ./client/
//
// Latency percentiles are sampled (one call in 64 is timed) so that timing
// does not dominate what it measures.

// BenchmarkClientAllowParallel measures AllowN through the lease path on
// keys the client already holds leases for: "one-key" has every goroutine
// on one key (one contended token counter), "key-per-goroutine" gives each
// its own. The limit is too high to bind: every call is admitted.
func BenchmarkClientAllowParallel(b *testing.B) {
	for _, mode := range []string{"one-key", "key-per-goroutine"} {
		b.Run(mode, func(b *testing.B) {
			ca := newTestCA(b)
			srv := newTestServer(b, ca, "n1", rule("bench*", "4294967295/s"))
			c := dialT(b, ca, []string{srv.addr()})
			ctx := context.Background()
			var next atomic.Int64
			keyFor := func() string {
				if mode == "one-key" {
					return "bench"
				}
				return "bench" + strconv.FormatInt(next.Add(1), 10)
			}
			// Warm up: leases sized for this demand.
			for range 100_000 {
				if _, err := c.Allow(ctx, "bench"); err != nil {
					b.Fatal(err)
				}
			}
			leases0 := srv.leases.Load()
			var denied atomic.Int64
			var mu sync.Mutex
			var lat []time.Duration
			b.ReportAllocs()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				key := keyFor()
				var own []time.Duration
				var d int64
				for i := 0; pb.Next(); i++ {
					if i&63 == 0 {
						start := time.Now()
						dec, err := c.Allow(ctx, key)
						own = append(own, time.Since(start))
						if err != nil {
							b.Error(err)
							return
						}
						if !dec.Allowed {
							d++
						}
						continue
					}
					dec, err := c.Allow(ctx, key)
					if err != nil {
						b.Error(err)
						return
					}
					if !dec.Allowed {
						d++
					}
				}
				denied.Add(d)
				mu.Lock()
				lat = append(lat, own...)
				mu.Unlock()
			})
			b.StopTimer()
			b.ReportMetric(float64(srv.leases.Load()-leases0)/float64(b.N), "leases/op")
			b.ReportMetric(float64(denied.Load())/float64(b.N), "denied/op")
			reportPercentiles(b, lat)
		})
	}
}

// BenchmarkClientStrict measures strict mode: every call a round trip,
// from 64 goroutines at once so that requests pipeline and batch. It
// reports decisions per second (the ceiling of one connection) and the
// latency of a call.
func BenchmarkClientStrict(b *testing.B) {
	ca := newTestCA(b)
	srv := newTestServer(b, ca, "n1", rule("bench", "4294967295/s"))
	c := dialT(b, ca, []string{srv.addr()}, WithStrict())
	ctx := context.Background()
	if _, err := c.Allow(ctx, "bench"); err != nil {
		b.Fatal(err)
	}
	frames0, reqs0 := srv.batches.Load(), srv.requests.Load()
	var mu sync.Mutex
	var lat []time.Duration
	b.SetParallelism(32) // × GOMAXPROCS goroutines
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		var own []time.Duration
		for i := 0; pb.Next(); i++ {
			t0 := time.Now()
			d, err := c.Allow(ctx, "bench")
			if err != nil {
				b.Error(err)
				return
			}
			if !d.Allowed {
				b.Error("denied")
				return
			}
			if i&63 == 0 {
				own = append(own, time.Since(t0))
			}
		}
		mu.Lock()
		lat = append(lat, own...)
		mu.Unlock()
	})
	elapsed := time.Since(start)
	b.StopTimer()
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "decisions/s")
	if f := srv.batches.Load() - frames0; f > 0 {
		b.ReportMetric(float64(srv.requests.Load()-reqs0)/float64(f), "requests/frame")
	}
	reportPercentiles(b, lat)
}

// reportPercentiles adds p50, p99 and max of ds, in µs.
func reportPercentiles(b *testing.B, ds []time.Duration) {
	if len(ds) == 0 {
		return
	}
	slices.Sort(ds)
	at := func(q float64) time.Duration { return ds[min(len(ds)-1, int(q*float64(len(ds))))] }
	us := float64(time.Microsecond)
	b.ReportMetric(float64(at(0.50))/us, "p50-µs")
	b.ReportMetric(float64(at(0.99))/us, "p99-µs")
	b.ReportMetric(float64(ds[len(ds)-1])/us, "max-µs")
}

// BenchmarkClientAt100k offers 100,000 decisions per second, open loop:
// each of G goroutines issues k calls per millisecond (G×k = 100; calls a
// late tick missed are issued at the next), and every call is timed. It reports the rate achieved and the latency
// percentiles: R4's figure (100k/s through the SDK, P99 ≤ 200 µs). "lease"
// decides from leases on 4 keys; "lease-N-keys" spreads the load over N
// keys, each then called 100k/N times a second: a key called less often
// than once per lease TTL finds its lease lapsed and waits for a round
// trip. "strict" makes each call a round trip, so it needs more goroutines
// to keep up.
func BenchmarkClientAt100k(b *testing.B) {
	for _, tc := range []struct {
		name   string
		strict bool
		g, k   int
		keys   int // spread over this many keys (default 4)
	}{
		{"lease", false, 4, 25, 4},
		{"lease-1000-keys", false, 50, 2, 1000},
		{"lease-10000-keys", false, 50, 2, 10000},
		{"strict", true, 50, 2, 4},
		{"strict-10000-keys", true, 50, 2, 10000},
	} {
		b.Run(tc.name, func(b *testing.B) {
			ca := newTestCA(b)
			srv := newTestServer(b, ca, "n1", rule("bench*", "4294967295/s"))
			var opts []Option
			if tc.strict {
				opts = append(opts, WithStrict())
			}
			c := dialT(b, ca, []string{srv.addr()}, opts...)
			ctx := context.Background()
			for i := range tc.keys {
				if _, err := c.Allow(ctx, "bench"+strconv.Itoa(i)); err != nil {
					b.Fatal(err)
				}
			}
			var left atomic.Int64
			left.Store(int64(b.N))
			var mu sync.Mutex
			lat := make([]time.Duration, 0, b.N)
			b.ResetTimer()
			start := time.Now()
			var wg sync.WaitGroup
			for i := range tc.g {
				wg.Go(func() {
					n := i
					own := make([]time.Duration, 0, b.N/tc.g+tc.k)
					tick := time.NewTicker(time.Millisecond)
					defer tick.Stop()
					issued := 0
					for left.Load() > 0 {
						<-tick.C
						// Catch up on ticks the ticker dropped: k calls per
						// millisecond since start, on average.
						due := tc.k * int(time.Since(start)/time.Millisecond)
						for ; issued < due; issued++ {
							if left.Add(-1) < 0 {
								break
							}
							key := "bench" + strconv.Itoa(n%tc.keys)
							n += tc.g
							t0 := time.Now()
							if _, err := c.Allow(ctx, key); err != nil {
								b.Error(err)
								return
							}
							own = append(own, time.Since(t0))
						}
					}
					mu.Lock()
					lat = append(lat, own...)
					mu.Unlock()
				})
			}
			wg.Wait()
			elapsed := time.Since(start)
			b.StopTimer()
			b.ReportMetric(float64(len(lat))/elapsed.Seconds(), "decisions/s")
			b.ReportMetric(float64(srv.leases.Load())/float64(b.N), "leases/op")
			b.ReportMetric(float64(srv.decides.Load())/float64(b.N), "decides/op")
			reportPercentiles(b, lat)
			if len(lat) > 0 {
				slices.Sort(lat)
				b.ReportMetric(float64(lat[min(len(lat)-1, len(lat)*999/1000)])/float64(time.Microsecond), "p99.9-µs")
			}
		})
	}
}

package window

import (
	"fmt"
	"runtime"
	"strconv"
	"sync"
	"testing"
	"time"

	hdrhistogram "github.com/HdrHistogram/hdrhistogram-go"
	"golang.org/x/time/rate"

	"github.com/quotamesh/quotamesh/internal/clock"
	"github.com/quotamesh/quotamesh/limits"
)

// The benchmarks compare a Window with golang.org/x/time/rate at the same
// limit, both driven by b.RunParallel. A Window reads node time from a
// clock.Coarse on every call, as the node does: that is its real cost.
// x/time/rate reads time.Now inside Allow.
//
//	go test -run '^$' -bench . -cpu 1,2 ./window/

// hot returns a window that already has its per-P counters, as a key under
// load has them after its first 100 ms, so that short benchmark runs measure
// the steady state.
func hot(b *testing.B, r string, now int64) *Window {
	w := mustNew(b, r, now)
	w.inflate()
	return w
}

// BenchmarkAllowParallel: 1000/s with x/time/rate's burst of 1000: after the
// first second almost every call is a denial, the common case for a limiter
// under load.
func BenchmarkAllowParallel(b *testing.B) {
	b.Run("quotamesh", func(b *testing.B) {
		c := clock.NewCoarse(0)
		defer c.Close()
		parallelWindow(b, c, hot(b, "1000/s", c.Now()))
	})
	b.Run("xtimerate", func(b *testing.B) {
		parallelRate(b, rate.NewLimiter(1000, 1000))
	})
}

// BenchmarkAllowParallelAdmitAll: a limit so high that every call is
// admitted (4294967295/s; x/time/rate with the same limit and burst, not
// rate.Inf, which skips its bookkeeping). Every quotamesh call then CASes
// the window's shared total.
func BenchmarkAllowParallelAdmitAll(b *testing.B) {
	b.Run("quotamesh", func(b *testing.B) {
		c := clock.NewCoarse(0)
		defer c.Close()
		parallelWindow(b, c, hot(b, "4294967295/s", c.Now()))
	})
	b.Run("xtimerate", func(b *testing.B) {
		parallelRate(b, rate.NewLimiter(rate.Limit(limits.MaxCount), int(limits.MaxCount)))
	})
}

// parallelWindow and parallelRate keep the limiter in goroutine-local
// variables, so that the loop reads no shared closure that might sit on a
// cache line with the testing.PB counters each goroutine writes.
func parallelWindow(b *testing.B, c *clock.Coarse, w *Window) {
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		c, w, n := c, w, 0
		for pb.Next() {
			if w.Allow(c.Now()) {
				n++
			}
		}
		sink(n)
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "ops/s")
}

func parallelRate(b *testing.B, lim *rate.Limiter) {
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		lim, n := lim, 0
		for pb.Next() {
			if lim.Allow() {
				n++
			}
		}
		sink(n)
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "ops/s")
}

var sinkMu sync.Mutex
var sinkV int

func sink(n int) {
	sinkMu.Lock()
	sinkV += n
	sinkMu.Unlock()
}

// BenchmarkAllowLatency times every call of 2 goroutines, 10^7 calls in
// total whatever b.N is, with the monotonic clock, into one HdrHistogram per
// goroutine, and reports the merged percentiles. The timer's own cost (two
// back-to-back monotonic reads) is measured the same way and reported as
// timer-p50-ns and timer-p99-ns; the percentiles include it.
func BenchmarkAllowLatency(b *testing.B) {
	b.Run("quotamesh", func(b *testing.B) {
		c := clock.NewCoarse(0)
		defer c.Close()
		w := hot(b, "1000/s", c.Now())
		latency(b, func() bool { return w.Allow(c.Now()) })
	})
	b.Run("quotamesh-admitall", func(b *testing.B) {
		c := clock.NewCoarse(0)
		defer c.Close()
		w := hot(b, "4294967295/s", c.Now())
		latency(b, func() bool { return w.Allow(c.Now()) })
	})
	b.Run("xtimerate", func(b *testing.B) {
		lim := rate.NewLimiter(1000, 1000)
		latency(b, lim.Allow)
	})
}

const (
	latencyCalls      = 10_000_000
	latencyGoroutines = 2
)

func latency(b *testing.B, allow func() bool) {
	base := time.Now() // time.Since(base) reads only the monotonic clock
	overhead := newHist()
	for range 1_000_000 {
		t := time.Since(base)
		overhead.RecordValue(int64(time.Since(base) - t))
	}
	calls := max(b.N, latencyCalls)
	hists := make([]*hdrhistogram.Histogram, latencyGoroutines)
	var wg sync.WaitGroup
	b.ResetTimer()
	for g := range hists {
		h := newHist()
		hists[g] = h
		wg.Go(func() {
			for range calls / latencyGoroutines {
				t := time.Since(base)
				allow()
				h.RecordValue(int64(time.Since(base) - t))
			}
		})
	}
	wg.Wait()
	b.StopTimer()
	all := newHist()
	for _, h := range hists {
		all.Merge(h)
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(calls)*latencyGoroutines, "ns/call")
	b.ReportMetric(float64(all.ValueAtQuantile(50)), "p50-ns")
	b.ReportMetric(float64(all.ValueAtQuantile(99)), "p99-ns")
	b.ReportMetric(float64(all.ValueAtQuantile(99.9)), "p999-ns")
	b.ReportMetric(float64(overhead.ValueAtQuantile(50)), "timer-p50-ns")
	b.ReportMetric(float64(overhead.ValueAtQuantile(99)), "timer-p99-ns")
	b.ReportMetric(0, "ns/op") // b.N does not set the work here; see ns/call
}

func newHist() *hdrhistogram.Histogram { return hdrhistogram.New(1, int64(time.Second), 3) }

// BenchmarkMemoryPerKey measures what one key costs: 10^5 windows are
// created and the live heap is read (runtime.MemStats, after a GC) before
// and after, for a 1 s and a 60 s window, alone and through a Registry
// (which adds the map entry and the key string). The measurement is done
// once per process whatever b.N is; the timed loop measures creating a
// window. Windows are cold, their slots in the header's sparse words: a key
// gets a dense ring once more than six of its slots hold counts (two bytes
// a slot while counts stay under 256), a second ring of 480 bytes if its
// window is shorter than a minute, and 64·(S+1) bytes more (S shards, one
// per P up to 16, and their descriptor) once it sees 128 requests in a
// slot. internal/engine's BenchmarkEngineMemoryPerKey measures whole keys.
func BenchmarkMemoryPerKey(b *testing.B) {
	for _, r := range []string{"1000/s", "1000/min"} {
		rt := limits.MustParseRate(r)
		label := rt.Window.String()
		b.Run("window-"+label, func(b *testing.B) {
			perKey := bytesPerKey("window-"+label, func(keep []any) {
				for i := range keep {
					keep[i], _ = New(rt, t0)
				}
			})
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				w, _ := New(rt, t0)
				sinkWindow = w
			}
			b.ReportMetric(perKey, "bytes/key")
		})
		b.Run("registry-"+label, func(b *testing.B) {
			tab := mustTable(b, "k:* "+r)
			perKey := bytesPerKey("registry-"+label, func(keep []any) {
				reg, _ := NewRegistry(Config{}, tab)
				for i := range keep {
					if _, _, err := reg.GetOrCreate(t0, "k:"+strconv.Itoa(i)); err != nil {
						panic(err)
					}
				}
				keep[0] = reg
			})
			b.ReportAllocs()
			b.ResetTimer()
			var reg *Registry
			for i := range b.N {
				if i%10_000 == 0 {
					reg, _ = NewRegistry(Config{}, tab)
				}
				reg.GetOrCreate(t0, "k:"+strconv.Itoa(i))
			}
			b.ReportMetric(perKey, "bytes/key")
		})
	}
}

const memoryKeys = 100_000

var (
	sinkWindow  *Window
	memoryOnce  sync.Mutex
	memoryCache = map[string]float64{}
)

// bytesPerKey runs create once per process for name and returns the live
// heap it added per key.
func bytesPerKey(name string, create func(keep []any)) float64 {
	memoryOnce.Lock()
	defer memoryOnce.Unlock()
	if v, ok := memoryCache[name]; ok {
		return v
	}
	keep := make([]any, memoryKeys)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	create(keep)
	runtime.GC()
	runtime.ReadMemStats(&after)
	runtime.KeepAlive(keep)
	v := float64(after.HeapAlloc-before.HeapAlloc) / memoryKeys
	memoryCache[name] = v
	return v
}

// BenchmarkRegistryAllowParallel: Registry.AllowN over 1000 existing keys
// (1000/s each) against x/time/rate limiters kept in a sync.Map by key, the
// usual way to limit per key with it.
func BenchmarkRegistryAllowParallel(b *testing.B) {
	keys := make([]string, 1000)
	for i := range keys {
		keys[i] = fmt.Sprintf("user:%d", i)
	}
	b.Run("quotamesh", func(b *testing.B) {
		c := clock.NewCoarse(0)
		defer c.Close()
		reg := mustRegistry(b, Config{}, "user:* 1000/s")
		for _, k := range keys {
			w, _, err := reg.GetOrCreate(c.Now(), k)
			if err != nil {
				b.Fatal(err)
			}
			w.inflate()
		}
		b.ReportAllocs()
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			reg, c, keys, i := reg, c, keys, 0
			for pb.Next() {
				reg.Allow(c.Now(), keys[i%len(keys)])
				i++
			}
		})
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "ops/s")
	})
	b.Run("xtimerate", func(b *testing.B) {
		var m sync.Map
		for _, k := range keys {
			m.Store(k, rate.NewLimiter(1000, 1000))
		}
		b.ReportAllocs()
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			m, keys, i := &m, keys, 0
			for pb.Next() {
				v, _ := m.Load(keys[i%len(keys)])
				v.(*rate.Limiter).Allow()
				i++
			}
		})
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "ops/s")
	})
}

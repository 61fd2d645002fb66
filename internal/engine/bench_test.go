package engine

import (
	"fmt"
	"os"
	"runtime"
	"testing"

	"github.com/quotamesh/quotamesh/internal/wire"
	"github.com/quotamesh/quotamesh/limits"
)

// BenchmarkEngineMemoryPerKey reports the heap a node holds per active key
// (bytes/key): its window, key map entry, engine state, mirrored CRDT slots
// and quota register, after a request and a tick for every key. A node of a
// 3-member cluster; 1 s keys under a pattern. 10^6 keys need about a GiB and
// half a minute, so they run only with QM_BENCH_MILLION=1:
//
//	go test -run '^$' -bench EngineMemoryPerKey -benchtime 1x ./engine/
//	QM_BENCH_MILLION=1 go test -run '^$' -bench EngineMemoryPerKey -benchtime 1x -timeout 30m ./engine/
func BenchmarkEngineMemoryPerKey(b *testing.B) {
	sizes := []int{100_000}
	if os.Getenv("QM_BENCH_MILLION") != "" {
		sizes = append(sizes, 1_000_000)
	}
	for _, n := range sizes {
		b.Run(fmt.Sprint("keys=", n), func(b *testing.B) {
			for b.Loop() {
				tb, _ := limits.NewTable(limits.Rule{Pattern: "user:*", Rate: limits.MustParseRate("10/s")})
				runtime.GC()
				var before, after runtime.MemStats
				runtime.ReadMemStats(&before)
				e, err := New(Config{Node: "a", Incarnation: 1}, tb, []string{"a", "b", "c"}, t0)
				if err != nil {
					b.Fatal(err)
				}
				e.PeerUp("b")
				for i := range n {
					e.AllowN(t0+int64(i%100)*ms, fmt.Sprint("user:", i), 1)
				}
				tickWith(e, t0+100*ms, func(string, *wire.Sync) error { return nil })
				runtime.GC()
				runtime.ReadMemStats(&after)
				b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/float64(n), "bytes/key")
				b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/(1<<20), "MiB")
				runtime.KeepAlive(e)
			}
		})
	}
}

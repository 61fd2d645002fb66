package main

import (
	"context"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	hdrhistogram "github.com/HdrHistogram/hdrhistogram-go"

	"github.com/quotamesh/quotamesh/internal/rls"
	"github.com/quotamesh/quotamesh/limits"
)

// TestRLSThroughput measures, for docs/benchmarks.md, decisions per second
// and latency percentiles through the RLS (a gRPC client of the generated
// types to each of three node processes, real TLS, calls spread evenly
// over the nodes) next to the SDK's strict path (every decision a QUIC
// round trip to the key's home node), in the same run: closed loop from
// QM_RLS_BENCH_WORKERS goroutines (default 64) over 1,000 keys, each path
// for QM_RLS_BENCH_SECONDS (default 5), alternating twice; the nodes'
// --gateway-route is QM_RLS_BENCH_ROUTE (default thin, the product's). It runs only with
// QM_RLS_BENCH=1:
//
//	QM_RLS_BENCH=1 go test -run TestRLSThroughput -v ./cmd/quotamesh/
func TestRLSThroughput(t *testing.T) {
	if os.Getenv("QM_RLS_BENCH") != "1" {
		t.Skip("set QM_RLS_BENCH=1 to measure")
	}
	workers, secs := envInt("QM_RLS_BENCH_WORKERS", 64), envInt("QM_RLS_BENCH_SECONDS", 5)
	route := os.Getenv("QM_RLS_BENCH_ROUTE")
	if route == "" {
		route = "thin"
	}
	c := startRLSCluster(t, 51, "--gateway-route", route)
	c.setLimits(t,
		limits.Rule{Pattern: "bench:user=*", Rate: limits.MustParseRate("1000000/s")},
		limits.Rule{Pattern: "sdk.user.*", Rate: limits.MustParseRate("1000000/s")})
	ctx := context.Background()
	paths := []struct {
		name string
		call func(w, i int) error
	}{
		{"RLS (" + route + "), spread over 3 nodes", func(w, i int) error {
			_, err := c.rlsCall(ctx, (w+i)%3, "bench", rls.Entry{Key: "user", Value: fmt.Sprint((w*7919 + i) % 1000)})
			return err
		}},
		{"SDK strict, key to its home node", func(w, i int) error {
			_, err := c.sdk.Allow(ctx, fmt.Sprintf("sdk.user.%d", (w*7919+i)%1000))
			return err
		}},
	}
	for round := range 2 {
		for _, p := range paths {
			ops, errs, h := closedLoop(workers, time.Duration(secs)*time.Second, p.call)
			t.Logf("round %d %-34s %d workers: %8.0f decisions/s  p50 %6.0f µs  p99 %6.0f µs  p99.9 %6.0f µs  errors %d",
				round+1, p.name, workers, float64(ops)/float64(secs), float64(h.ValueAtQuantile(50)), float64(h.ValueAtQuantile(99)),
				float64(h.ValueAtQuantile(99.9)), errs)
			if errs > ops/1000 {
				t.Errorf("%s: %d errors in %d calls", p.name, errs, ops+errs)
			}
		}
	}
}

// closedLoop runs call from workers goroutines for d and returns the calls
// that succeeded, the errors and the latency histogram in microseconds.
func closedLoop(workers int, d time.Duration, call func(w, i int) error) (int64, int64, *hdrhistogram.Histogram) {
	total := hdrhistogram.New(1, 10_000_000, 3)
	var mu sync.Mutex
	var ops, errs int64
	end := time.Now().Add(d)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			h := hdrhistogram.New(1, 10_000_000, 3)
			var n, e int64
			for i := 0; time.Now().Before(end); i++ {
				t0 := time.Now()
				if err := call(w, i); err != nil {
					e++
					continue
				}
				_ = h.RecordValue(max(1, time.Since(t0).Microseconds()))
				n++
			}
			mu.Lock()
			total.Merge(h)
			ops += n
			errs += e
			mu.Unlock()
		})
	}
	wg.Wait()
	return ops, errs, total
}

func envInt(name string, def int) int {
	var v int
	if _, err := fmt.Sscan(os.Getenv(name), &v); err != nil || v <= 0 {
		return def
	}
	return v
}

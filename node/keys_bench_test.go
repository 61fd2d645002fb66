package node

import (
	"context"
	"fmt"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/quotamesh/quotamesh/client"
	"github.com/quotamesh/quotamesh/internal/certs"
	"github.com/quotamesh/quotamesh/internal/cputime"
)

// BenchmarkCurrentQPS measures what a dashboard asking for 1000 keys every
// second costs: CurrentQPS of keys used on all three nodes (each key has a
// view of every node), embedded on n1, and through the SDK (one admin
// stream per call, to the key's home), one caller and 8 at once. The
// figure to read is ns/op × 1000: the time per second of a 1000-key
// dashboard (the SDK cases count both ends, one machine).
//
//	go test -run '^$' -bench CurrentQPS -benchtime 2000x ./node/
func BenchmarkCurrentQPS(b *testing.B) {
	c, n1 := benchClusterAll(b)
	keys := make([]string, 1000)
	ctx := context.Background()
	for i := range keys {
		keys[i] = fmt.Sprintf("bench.user:%d", i)
		for _, tn := range c.running() {
			if _, err := tn.Allow(ctx, keys[i]); err != nil {
				b.Fatal(err)
			}
		}
	}
	time.Sleep(200 * time.Millisecond) // the views arrive
	if st, err := n1.CurrentQPS(ctx, keys[0]); err != nil || len(st.Nodes) != 3 {
		b.Fatalf("CurrentQPS = %+v, %v; want three nodes", st, err)
	}
	b.Run("embedded", func(b *testing.B) {
		defer reportCPU(b)()
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			if _, err := n1.CurrentQPS(ctx, keys[i%len(keys)]); err != nil {
				b.Fatal(err)
			}
			i++
		}
	})
	cb, err := c.ca.IssueClient("dashboard", certs.RoleDecide, time.Hour)
	if err != nil {
		b.Fatal(err)
	}
	sdk, err := client.Dial(ctx, []string{n1.Addr()}, client.WithCA(c.ca.Pool()), client.WithCertificate(cb.TLSCertificate()),
		client.WithServerName("127.0.0.1"), client.WithMaxKeys(0))
	if err != nil {
		b.Fatal(err)
	}
	defer sdk.Close()
	b.Run("sdk", func(b *testing.B) {
		defer reportCPU(b)()
		i := 0
		for b.Loop() {
			if _, err := sdk.CurrentQPS(ctx, keys[i%len(keys)]); err != nil {
				b.Fatal(err)
			}
			i++
		}
	})
	b.Run("sdk/8_callers", func(b *testing.B) {
		defer reportCPU(b)()
		var next atomic.Int64
		b.SetParallelism(max(1, 8/runtime.GOMAXPROCS(0))) // about 8 callers
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if _, err := sdk.CurrentQPS(ctx, keys[next.Add(1)%int64(len(keys))]); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
}

// reportCPU reports the process's CPU time per op (this process runs the
// three nodes and the SDK: their syncing in the background is included)
// when the returned func runs.
func reportCPU(b *testing.B) func() {
	c0, err := cputime.Self()
	if err != nil {
		return func() {}
	}
	return func() {
		if c1, err := cputime.Self(); err == nil && b.N > 0 {
			b.ReportMetric(float64(c1-c0)/float64(b.N), "cpu-ns/op")
		}
	}
}

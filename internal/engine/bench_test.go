package engine

import (
	"fmt"
	"os"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/quotamesh/quotamesh/crdt"
	"github.com/quotamesh/quotamesh/internal/wire"
	"github.com/quotamesh/quotamesh/limits"
)

// BenchmarkIdleKeys measures what keys held but no longer used cost a node
// of a 3-member cluster: the CPU its ticks and housekeeping take per second
// of node time, and the sync bytes it sends a peer per second, after every
// key saw one request and then nothing (1 s keys and 60 s keys, both
// idle-evicted no sooner than 10 s). It runs 5 s of node time (250 ticks,
// 5 housekeepings) starting 2 s after the requests. 10^6 keys only with
// QM_BENCH_MILLION=1:
//
//	go test -run '^$' -bench IdleKeys -benchtime 1x ./internal/engine/
func BenchmarkIdleKeys(b *testing.B) {
	sizes := []int{0, 10_000, 100_000}
	if os.Getenv("QM_BENCH_MILLION") != "" {
		sizes = append(sizes, 1_000_000)
	}
	for _, rate := range []string{"10/s", "600/min"} {
		for _, n := range sizes {
			b.Run(fmt.Sprintf("rate=%s/keys=%d", strings.ReplaceAll(rate, "/", "per"), n), func(b *testing.B) {
				for b.Loop() {
					tb, _ := limits.NewTable(limits.Rule{Pattern: "user:*", Rate: limits.MustParseRate(rate)})
					e, err := New(Config{Node: "a", Incarnation: 1}, tb, []string{"a", "b", "c"}, t0)
					if err != nil {
						b.Fatal(err)
					}
					for _, p := range []string{"b", "c"} {
						e.PeerUp(p)
						e.Hello(t0, p, &wire.Hello{ClusterID: "quotamesh", Node: p, Incarnation: 7, Addr: "x"})
					}
					for i := range n {
						e.AllowN(t0+int64(i%100)*ms, fmt.Sprint("user:", i), 1)
					}
					enc := wire.NewEncoder()
					var buf []byte
					var sent int64
					acks := map[string]uint64{}
					var seq uint64
					tick := func(now int64, count bool) {
						rd := e.Tick(now)
						rd.Send(func(node string, s *wire.Sync) error {
							if count && node == "b" {
								buf, _ = enc.Append(buf[:0], s)
								sent += int64(len(buf))
							}
							if s.Delta.Basis != s.Delta.Seq && s.Delta.Part == s.Delta.Parts-1 {
								acks[node] = s.Delta.Seq // the peer got it all
							}
							return nil
						})
						e.Advance(rd)
						// b and c answer, acknowledging, with nothing of their own.
						seq++
						for _, p := range []string{"b", "c"} {
							d := crdt.Delta{From: crdt.OriginID{Node: p, Incarnation: 7}, Seq: seq, Full: true, Parts: 1,
								Origins: []crdt.OriginState{{ID: crdt.OriginID{Node: p, Incarnation: 7}, AsOf: now}}}
							if err := e.Receive(now, p, &wire.Sync{Seq: seq, Ack: acks[p], Delta: d}); err != nil {
								b.Fatal(err)
							}
						}
					}
					now := t0 + 100*ms
					for ; now < t0+2*1000*ms; now += 20 * ms {
						tick(now, false)
					}
					var before, after syscall.Rusage
					syscall.Getrusage(syscall.RUSAGE_SELF, &before)
					start := now
					for ; now < start+5*1000*ms; now += 20 * ms {
						tick(now, true)
						if (now-start)%(1000*ms) == 0 {
							e.Housekeep(now)
						}
					}
					syscall.Getrusage(syscall.RUSAGE_SELF, &after)
					cpu := time.Duration(after.Utime.Nano()+after.Stime.Nano()-before.Utime.Nano()-before.Stime.Nano()) / 5
					b.ReportMetric(float64(cpu.Microseconds())/1000, "cpu-ms/s")
					b.ReportMetric(float64(sent)/5, "sync-B/s")
					runtime.KeepAlive(e)
				}
			})
		}
	}
}

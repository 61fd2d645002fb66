package engine

import (
	"fmt"
	"os"
	"runtime"
	"strings"
	"testing"

	"github.com/quotamesh/quotamesh/crdt"
	"github.com/quotamesh/quotamesh/internal/wire"
	"github.com/quotamesh/quotamesh/limits"
	"github.com/quotamesh/quotamesh/window"
)

// memCase is one row of BenchmarkEngineMemoryPerKey.
type memCase struct {
	nodes int    // cluster size; the node measured is one of them
	win   string // the rule's window: 1s, 10s, 1m
	hot   bool
	keys  int
}

// rate is the rule of the case: a cold key sees a few requests under a
// per-user limit of 10/s; a hot key runs at twice a limit of 1000/s.
func (c memCase) rate() limits.Rate {
	per := map[string]int64{"1s": 1, "10s": 10, "1m": 60}[c.win]
	if c.hot {
		return limits.MustParseRate(fmt.Sprintf("%d/%s", 1000*per, c.win))
	}
	return limits.MustParseRate(fmt.Sprintf("%d/%s", 10*per, c.win))
}

// slots is how long the case runs: a cold key's requests come in its first
// second; a hot key is offered requests in every slot of a whole window and
// two seconds more, so that every ring is as full as it gets.
func (c memCase) slots() int {
	if c.hot {
		return c.rate().Slots() + 20
	}
	return 10
}

// BenchmarkEngineMemoryPerKey reports the heap one node holds per key
// (bytes/key), all of it counted: the window, the registry's key map node
// and entry, the engine's per-key state, and the replicated state of every
// origin (its own slots and register, and each peer's). The node is one
// member of a cluster of 3 or 10; every peer uses every key too and sends
// the node deltas as a live peer would (its slots every slot, and its quota
// register). Windows of 1 s, 10 s and 60 s:
//
//   - cold: a few requests per key on every node (two at this node, one at
//     each peer, in one slot), far below the key's limit of 10/s;
//   - hot: a limit of 1000/s offered twice that, spread evenly over the
//     nodes: requests in every slot of a whole window at every node, and a
//     burst of 130 at this node that gives the window per-CPU shards.
//
// part=node is the whole node; part=registry is a bare window.Registry fed
// the same requests, the registry-plus-window-alone figure. Each case runs
// once (a few seconds each):
//
//	go test -run '^$' -bench EngineMemoryPerKey -benchtime 1x ./internal/engine/
//
// QM_BENCH_MILLION=1 adds 10^6 cold 1 s keys at 3 nodes (about a GiB).
func BenchmarkEngineMemoryPerKey(b *testing.B) {
	var cases []memCase
	for _, nodes := range []int{3, 10} {
		for _, win := range []string{"1s", "10s", "1m"} {
			cases = append(cases, memCase{nodes: nodes, win: win, keys: 20_000}, memCase{nodes: nodes, win: win, hot: true, keys: 2_000})
		}
	}
	if os.Getenv("QM_BENCH_MILLION") != "" {
		cases = append(cases, memCase{nodes: 3, win: "1s", keys: 1_000_000})
	}
	for _, c := range cases {
		kind := "cold"
		if c.hot {
			kind = "hot"
		}
		name := fmt.Sprintf("nodes=%d/window=%s/%s/keys=%d", c.nodes, c.win, kind, c.keys)
		b.Run(name+"/part=node", func(b *testing.B) {
			for b.Loop() {
				b.ReportMetric(nodeBytesPerKey(b, c), "bytes/key")
			}
		})
		b.Run(name+"/part=registry", func(b *testing.B) {
			for b.Loop() {
				b.ReportMetric(registryBytesPerKey(b, c), "bytes/key")
			}
		})
	}
}

// heapInUse returns the live heap after a full collection.
func heapInUse() uint64 {
	var m runtime.MemStats
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// ownCalls is what this node is offered in one slot of a case: calls of n
// tokens each.
func (c memCase) ownCalls(slot int) (calls int, n int64) {
	if !c.hot {
		return 2, 1
	}
	perSlot := 2 * c.rate().Count / int64(c.rate().Slots()) / int64(c.nodes) // offered here
	if slot == 1 {
		return 1, 130 // the burst that makes the window hot
	}
	return int((perSlot + 4) / 5), 5
}

// peerCounts are what a peer reports for a key in one slot.
func (c memCase) peerCounts() (adm, off uint32) {
	if !c.hot {
		return 1, 1
	}
	perSlot := c.rate().Count / int64(c.rate().Slots()) / int64(c.nodes)
	return uint32(perSlot), uint32(2 * perSlot)
}

// keyActive reports whether key i sees requests in slot s: a cold key in
// one slot of the first second, a hot key in every slot.
func (c memCase) keyActive(i, s int) bool { return c.hot || i%10 == s }

func memKeys(n int) []string {
	keys := make([]string, n)
	for i := range keys {
		keys[i] = fmt.Sprint("user:", i)
	}
	return keys
}

func nodeBytesPerKey(b *testing.B, c memCase) float64 {
	keys := memKeys(c.keys)
	tb, err := limits.NewTable(limits.Rule{Pattern: "user:*", Rate: c.rate()})
	if err != nil {
		b.Fatal(err)
	}
	ids := make([]string, c.nodes)
	for i := range ids {
		ids[i] = fmt.Sprint("n", i)
	}
	self, peers := ids[0], ids[1:]
	base := heapInUse()
	e, err := New(Config{Node: self, Incarnation: 1}, tb, ids, t0)
	if err != nil {
		b.Fatal(err)
	}
	for i, p := range peers {
		e.PeerUp(p)
		if err := e.Hello(t0, p, &wire.Hello{ClusterID: "quotamesh", Node: p, Incarnation: uint64(100 + i), Addr: "x"}); err != nil {
			b.Fatal(err)
		}
	}
	acks := map[string]uint64{}
	frames := map[string]uint64{}
	qseq := map[string]uint64{}
	var entries []crdt.Entry
	var quotas []crdt.QuotaEntry
	for s := range c.slots() {
		slotAt := t0 + int64(s)*100*ms
		// This node's requests.
		for i, key := range keys {
			if !c.keyActive(i, s) {
				continue
			}
			calls, n := c.ownCalls(s)
			for range calls {
				e.AllowN(slotAt+10*ms, key, n)
			}
		}
		// Every peer's delta for the slot: its counts and, once a second,
		// its quota register, as a peer that shares the keys announces it.
		for pi, p := range peers {
			from := crdt.OriginID{Node: p, Incarnation: uint64(100 + pi)}
			adm, off := c.peerCounts()
			entries, quotas = entries[:0], quotas[:0]
			for i, key := range keys {
				if !c.keyActive(i, s) {
					continue
				}
				// A decoded frame holds its own copy of the key.
				key = strings.Clone(key)
				entries = append(entries, crdt.Entry{Key: key, Epoch: window.EpochOf(slotAt), Admitted: adm, Offered: off})
				if !c.hot || s%10 == 0 {
					qseq[p]++
					quotas = append(quotas, crdt.QuotaEntry{Key: key, Epoch: window.EpochOf(slotAt), Seq: qseq[p], Quota: uint32(c.rate().Count / int64(c.nodes))})
				}
			}
			for len(entries) > 0 || len(quotas) > 0 {
				ne, nq := min(len(entries), crdt.MaxDeltaEntries), min(len(quotas), crdt.MaxDeltaEntries)
				frames[p]++
				d := crdt.Delta{From: from, Seq: frames[p], Full: true, Parts: 1,
					Origins: []crdt.OriginState{{ID: from, AsOf: slotAt + 50*ms}},
					Entries: entries[:ne], Quotas: quotas[:nq]}
				if err := e.Receive(slotAt+50*ms, p, &wire.Sync{Seq: frames[p], Ack: acks[p], Delta: d}); err != nil {
					b.Fatal(err)
				}
				entries, quotas = entries[ne:], quotas[nq:]
			}
		}
		// Five ticks a slot (20 ms each): mirror, recompute, send.
		for t := range 5 {
			rd := e.Tick(slotAt + int64(t)*20*ms + 15*ms)
			rd.Send(func(node string, s *wire.Sync) error {
				if s.Delta.Basis != s.Delta.Seq && s.Delta.Part == s.Delta.Parts-1 {
					acks[node] = s.Delta.Seq
				}
				return nil
			})
			e.Advance(rd)
		}
	}
	used := heapInUse() - base
	runtime.KeepAlive(e)
	return float64(used) / float64(c.keys)
}

func registryBytesPerKey(b *testing.B, c memCase) float64 {
	keys := memKeys(c.keys)
	tb, err := limits.NewTable(limits.Rule{Pattern: "user:*", Rate: c.rate()})
	if err != nil {
		b.Fatal(err)
	}
	base := heapInUse()
	r, err := window.NewRegistry(window.Config{}, tb)
	if err != nil {
		b.Fatal(err)
	}
	for s := range c.slots() {
		at := t0 + int64(s)*100*ms + 10*ms
		for i, key := range keys {
			if !c.keyActive(i, s) {
				continue
			}
			calls, n := c.ownCalls(s)
			for range calls {
				r.AllowN(at, key, n)
			}
		}
		r.Drain(func(string) {})
	}
	used := heapInUse() - base
	runtime.KeepAlive(r)
	return float64(used) / float64(c.keys)
}

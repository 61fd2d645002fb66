package crdt

import (
	"fmt"
	"testing"
)

const benchKeys = 1000

func benchKeyNames() []string {
	keys := make([]string, benchKeys)
	for i := range keys {
		keys[i] = fmt.Sprintf("user:%06d", i)
	}
	return keys
}

// BenchmarkMerge merges a normal delta from one peer carrying, for each of
// 1000 active keys, its open and just-closed slot (one sync interval's
// delta), with counts that grow every time as they do in steady state.
func BenchmarkMerge(b *testing.B) {
	keys := benchKeyNames()
	s := mustStore(b, idA, Config{})
	now := t0
	d := normal(idB, now)
	for _, k := range keys {
		d.Entries = append(d.Entries, ent(k, slotOf(now)-1, 1, 1), ent(k, slotOf(now), 1, 1))
	}
	// Steady state: every ring already spans the horizon.
	for range DefaultHorizon + MaxLeadSlots {
		now += slot
		d.Origins[0].AsOf = now
		for j := range d.Entries {
			d.Entries[j].Epoch = slotOf(now) - 1 + int64(j%2)
		}
		if _, err := s.Merge(d, now); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		now += 20 * ms
		d.Origins[0].AsOf = now
		for j := range d.Entries {
			d.Entries[j].Epoch = slotOf(now) - 1 + int64(j%2)
			d.Entries[j].Admitted, d.Entries[j].Offered = uint32(i+2), uint32(i+2)
		}
		if _, err := s.Merge(d, now); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*benchKeys), "ns/key")
}

// BenchmarkViews reads the views of 1000 keys held by 3 other origins every
// 20 ms, as the node does each tick, while deltas keep arriving.
func BenchmarkViews(b *testing.B) {
	keys := benchKeyNames()
	s := mustStore(b, idA, Config{})
	now := t0
	peers := []OriginID{idB, idC, idD}
	merge := func() {
		for _, p := range peers {
			d := normal(p, now)
			for _, k := range keys {
				d.Entries = append(d.Entries, ent(k, slotOf(now), 1, 2))
			}
			if _, err := s.Merge(d, now); err != nil {
				b.Fatal(err)
			}
		}
	}
	// Fill a full 60 s window first.
	for range 600 {
		now += slot
		merge()
	}
	var sink int64
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		now += 20 * ms
		for _, k := range keys {
			s.Views(k, 600, 5, now, func(_ OriginInfo, v View) { sink += v.Admitted + v.Demand })
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*benchKeys), "ns/key")
	_ = sink
}

// BenchmarkRecordAndDelta is the sending side of one sync interval: mirror
// the open and just-closed slot of 1000 active keys, close the interval and
// build the delta for one peer.
func BenchmarkRecordAndDelta(b *testing.B) {
	keys := benchKeyNames()
	s := mustStore(b, idA, Config{})
	now := t0
	s.SetOwnAsOf(now)
	s.Tick()
	s.DeltaFor("b", now)
	s.Ack("b", s.last)
	slots := make([]SlotCounts, 2)
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		now += 20 * ms
		e := slotOf(now)
		slots[0] = SlotCounts{Epoch: e - 1, Admitted: uint32(i + 1), Offered: uint32(i + 1)}
		slots[1] = SlotCounts{Epoch: e, Admitted: uint32(i + 1), Offered: uint32(i + 1)}
		for _, k := range keys {
			if err := s.RecordOwn(k, slots); err != nil {
				b.Fatal(err)
			}
		}
		s.SetOwnAsOf(now)
		seq := s.Tick()
		parts := s.DeltaFor("b", now)
		if len(parts[0].Entries) != 2*benchKeys {
			b.Fatalf("delta has %d entries", len(parts[0].Entries))
		}
		s.Ack("b", seq)
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*benchKeys), "ns/key")
}

// BenchmarkFullState builds the full state of 1000 keys with a full 60 s
// window from 3 origins (1.8 million slots), split into 1 MiB parts.
func BenchmarkFullState(b *testing.B) {
	keys := benchKeyNames()
	s := mustStore(b, idA, Config{})
	now := t0
	for range 600 {
		now += slot
		for _, p := range []OriginID{idB, idC, idD} {
			d := normal(p, now)
			for _, k := range keys {
				d.Entries = append(d.Entries, ent(k, slotOf(now), 7, 9))
			}
			if _, err := s.Merge(d, now); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.ReportAllocs()
	b.ResetTimer()
	var parts []Delta
	for range b.N {
		s.ResetPeer("e")
		parts = s.DeltaFor("e", now)
	}
	b.ReportMetric(float64(len(parts)), "parts")
	b.ReportMetric(float64(entryCount(parts)), "entries")
}

// BenchmarkDeltaFor99Peers builds one sync interval's deltas for 99 peers
// (a 100-node cluster) that acknowledged the same interval, with 1000
// active keys: peers at the same acknowledgement share one delta.
func BenchmarkDeltaFor99Peers(b *testing.B) {
	keys := benchKeyNames()
	s := mustStore(b, idA, Config{})
	now := t0
	peers := make([]string, 99)
	for i := range peers {
		peers[i] = fmt.Sprintf("peer%02d", i)
	}
	s.SetOwnAsOf(now)
	seq := s.Tick()
	for _, p := range peers {
		s.DeltaFor(p, now)
		s.Ack(p, seq)
	}
	slots := make([]SlotCounts, 2)
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		now += 20 * ms
		e := slotOf(now)
		slots[0] = SlotCounts{Epoch: e - 1, Admitted: uint32(i + 1), Offered: uint32(i + 1)}
		slots[1] = SlotCounts{Epoch: e, Admitted: uint32(i + 1), Offered: uint32(i + 1)}
		for _, k := range keys {
			if err := s.RecordOwn(k, slots); err != nil {
				b.Fatal(err)
			}
		}
		s.SetOwnAsOf(now)
		seq := s.Tick()
		for _, p := range peers {
			s.DeltaFor(p, now)
			s.Ack(p, seq)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*benchKeys), "ns/key")
}

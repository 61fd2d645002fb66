package wire

import (
	"fmt"
	"testing"

	"github.com/quotamesh/quotamesh/crdt"
	"github.com/quotamesh/quotamesh/limits"
)

// syncDelta returns one sync interval's normal delta of a store whose keys
// (user:000000 ...) were all active: each carries its open and just-closed
// slot, with counts in the hundreds.
func syncDelta(b *testing.B, keys int) crdt.Delta {
	self := crdt.OriginID{Node: "node-07", Incarnation: 0x9e3779b97f4a7c15}
	s, err := crdt.NewStore(self, crdt.Config{})
	if err != nil {
		b.Fatal(err)
	}
	now := t0 + 60*1e6 // 60 ms into a slot
	e := now / int64(limits.Slot)
	s.SetOwnAsOf(now - 20*1e6)
	seq := s.Tick()
	s.DeltaFor("peer", now)
	s.Ack("peer", seq)
	for i := range keys {
		slots := []crdt.SlotCounts{
			{Epoch: e - 1, Admitted: uint32(100 + i%50), Offered: uint32(180 + i%70)},
			{Epoch: e, Admitted: uint32(60 + i%40), Offered: uint32(90 + i%60)},
		}
		if err := s.RecordOwn(fmt.Sprintf("user:%06d", i), slots); err != nil {
			b.Fatal(err)
		}
	}
	s.SetOwnAsOf(now)
	s.Tick()
	parts := s.DeltaFor("peer", now)
	if len(parts) != 1 || parts[0].Full || len(parts[0].Entries) != 2*keys {
		b.Fatalf("delta: %d parts, full %v", len(parts), parts[0].Full)
	}
	return parts[0]
}

// BenchmarkEncodeSync encodes the sync frame of 1000 active keys with a
// reused Encoder and buffer.
func BenchmarkEncodeSync(b *testing.B) {
	m := &Sync{Seq: 12345, Ack: 67890, Delta: syncDelta(b, 1000)}
	enc := NewEncoder()
	buf, err := enc.Append(nil, m)
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(buf)))
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		if buf, err = enc.Append(buf[:0], m); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*1000), "ns/key")
}

// BenchmarkDecodeSync decodes the sync frame of 1000 active keys (2000
// entries) with a reused Decoder.
func BenchmarkDecodeSync(b *testing.B) {
	body, err := Encode(&Sync{Seq: 12345, Ack: 67890, Delta: syncDelta(b, 1000)})
	if err != nil {
		b.Fatal(err)
	}
	dec := NewDecoder()
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		if _, err := dec.Decode(body); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*1000), "ns/key")
}

// BenchmarkWireBytes reports the bytes one peer receives per sync interval
// (20 ms): the heartbeat frame when no key is active, the frame for one
// active key (open plus just-closed slot), and the marginal bytes of each
// further active key, measured over 1000 keys. Frame bytes include the
// length prefix, not QUIC's own overhead.
func BenchmarkWireBytes(b *testing.B) {
	frame := func(keys int) int {
		d := syncDelta(b, max(keys, 1))
		if keys == 0 {
			d.Entries = nil
		}
		f, err := Append(nil, &Sync{Seq: 1 << 20, Ack: 1 << 40, Delta: d})
		if err != nil {
			b.Fatal(err)
		}
		return len(f)
	}
	var empty, one, many int
	for range b.N {
		empty, one, many = frame(0), frame(1), frame(1000)
	}
	b.ReportMetric(float64(empty), "B/heartbeat")
	b.ReportMetric(float64(one), "B/frame-1key")
	b.ReportMetric(float64(many-empty)/1000, "B/key")
}

package wire

import (
	"bytes"
	"encoding/binary"
	"io"
	"math/rand/v2"
	"testing"

	"github.com/quotamesh/quotamesh/crdt"
	"github.com/quotamesh/quotamesh/limits"
)

// seedBodies returns valid bodies of every message type, small and large,
// and a few invalid ones, to seed the fuzzers.
func seedBodies(f *testing.F) [][]byte {
	var out [][]byte
	for seed := uint64(1); seed <= 12; seed++ {
		g := gen{rand.New(rand.NewPCG(seed, 11))}
		b, err := Encode(g.message())
		if err != nil {
			f.Fatal(err)
		}
		out = append(out, b)
	}
	for _, m := range []Message{
		&Hello{ClusterID: "prod", Node: "n1", Incarnation: 0xdeadbeef, Addr: "10.0.0.1:7946"},
		&Sync{Seq: 1, Delta: crdt.Delta{From: crdt.OriginID{Node: "n1", Incarnation: 1}, Seq: 1, Basis: 1, Parts: 1,
			Origins: []crdt.OriginState{{ID: crdt.OriginID{Node: "n1", Incarnation: 1}, AsOf: t0}}}},
		&ClientBatch{Items: []ClientRequest{{ID: 1, Op: OpDecide, Key: "orders.create", N: 1}, {ID: 2, Op: OpLease, Key: "user:42", Want: 50, Offered: 120, SettleID: 77, SettleUsed: 3}}},
		&ClientReplies{Items: []ClientReply{{ID: 1, Allowed: true, Remaining: 9, Limit: limits.MustParseRate("10/s")}, {ID: 2, Code: CodeInvalidKey, Message: "bad key", RetryAfter: 5}}},
		&ClientReplies{Items: []ClientReply{{ID: 3, Allowed: true, Remaining: 4, Limit: limits.MustParseRate("10/s"), Decided: t0 + 99_000_000}, {ID: 4, Decided: 1}}},
		&AdminRequest{ID: 7, Op: AdminLimitSet, Rule: limits.Rule{Pattern: "user:*", Rate: limits.MustParseRate("10/s")}},
		&AdminReply{ID: 7, Rules: []limits.Rule{{Pattern: "a", Rate: limits.MustParseRate("1/s")}}, Index: 42, Status: []byte(`{}`)},
		&AdminReply{ID: 9, Rules: []limits.Rule{{Pattern: "b:*", Rate: limits.MustParseRate("5/s"), Shadow: true}}},
		&AdminReply{ID: 8, Members: []Member{{Node: "n1", Addr: "10.0.0.1:7946"}, {Node: "n2", Addr: "10.0.0.2:7946"}}},
		&AdminRequest{ID: 10, Op: AdminKeyShow, Pattern: "user:42"},
		&AdminRequest{ID: 11, Op: AdminKeyReset, Pattern: "user:*"},
		&AdminReply{ID: 11, Index: 43, Status: []byte(`{"pattern":"user:*","at":"2026-01-01T00:00:00.3Z","index":43}`)},
	} {
		b, err := Encode(m)
		if err != nil {
			f.Fatal(err)
		}
		out = append(out, b)
	}
	return append(out, raw(syncFields()...), raw(2, 1), raw(Version, 40), []byte{0x92, 0x01})
}

// FuzzDecode: no input makes Decode panic or fail without a sentinel error;
// whatever decodes is valid, re-encodes to a canonical body that decodes to
// the same message, and (a Sync) merges into a store whose views can be
// read.
func FuzzDecode(f *testing.F) {
	for _, b := range seedBodies(f) {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		m, err := Decode(body)
		if err != nil {
			if !isSentinel(err) {
				t.Fatalf("Decode error %v wraps no sentinel", err)
			}
			return
		}
		if err := m.validate(); err != nil {
			t.Fatalf("Decode returned an invalid message: %v", err)
		}
		canon, err := Encode(m)
		if err != nil {
			t.Fatalf("Encode(Decode(body)) = %v", err)
		}
		m2, err := Decode(canon)
		if err != nil || !equal(m2, m) {
			t.Fatalf("re-encoded message decodes to %+v, %v; want %+v", m2, err, m)
		}
		if again, _ := Encode(m2); !bytes.Equal(again, canon) {
			t.Fatalf("encoding is not canonical")
		}
		if s, ok := m.(*Sync); ok {
			self := crdt.OriginID{Node: "fuzz", Incarnation: 1}
			if s.Delta.From == self {
				return
			}
			st, err := crdt.NewStore(self, crdt.Config{})
			if err != nil {
				t.Fatal(err)
			}
			now := int64(1) << 61
			if _, err := st.Merge(s.Delta, now); err != nil {
				t.Fatalf("Merge of a decoded delta: %v", err)
			}
			for _, e := range s.Delta.Entries {
				st.Views(e.Key, 600, 5, now, func(crdt.OriginInfo, crdt.View) {})
			}
			st.GC(now)
		}
	})
}

// FuzzReadFrame: the one frame reader, on every stream. ReadFrame never
// panics, returns no body that is empty or above the cap, ends with io.EOF
// only at a frame boundary at the end of the input, fails otherwise with a
// sentinel error, and the frames it returns re-frame to exactly the bytes it
// consumed (so every length prefix it accepted was minimal).
func FuzzReadFrame(f *testing.F) {
	var stream []byte
	for _, b := range seedBodies(f) {
		fr, err := AppendFrame(nil, b, 0)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(fr, 0)
		f.Add(fr[:len(fr)/2], 0)
		f.Add(fr, len(b)-1)
		stream = append(stream, fr...)
	}
	f.Add(stream, 0)
	f.Add(stream, FrameLimit+1)
	f.Add(binary.AppendUvarint(nil, 1<<40), 1024)
	f.Add([]byte{0x80, 0x80, 0x40}, 0)
	f.Add([]byte{0x81, 0x00, 'x'}, 0)
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01}, 1<<20)
	f.Fuzz(func(t *testing.T, data []byte, max int) {
		limit := max
		if limit <= 0 {
			limit = MaxFrame
		}
		limit = min(limit, FrameLimit)
		r := bytes.NewReader(data)
		var again []byte
		for {
			body, err := ReadFrame(r, max)
			if err != nil {
				if err == io.EOF && len(again) != len(data) {
					t.Fatalf("io.EOF after %d of %d bytes", len(again), len(data))
				}
				if err != io.EOF && !isSentinel(err) {
					t.Fatalf("ReadFrame error %v wraps no sentinel", err)
				}
				return
			}
			if len(body) == 0 || len(body) > limit {
				t.Fatalf("ReadFrame returned %d bytes with cap %d", len(body), limit)
			}
			start := len(again)
			again, err = AppendFrame(again, body, max)
			if err != nil {
				t.Fatalf("AppendFrame of a body ReadFrame returned: %v", err)
			}
			if consumed := data[start : len(data)-r.Len()]; !bytes.Equal(again[start:], consumed) {
				t.Fatalf("re-framed %x; consumed %x", again[start:], consumed)
			}
		}
	})
}

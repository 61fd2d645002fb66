package wire

import (
	"bytes"
	"errors"
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
		&ClientBatch{Items: []ClientRequest{{ID: 1, Op: OpDecide, Key: "orders.create", N: 1}, {ID: 2, Op: OpLease, Key: "user:42", N: 50, Offered: 120, ReturnN: 3, ReturnGrantedAt: t0}}},
		&ClientReplies{Items: []ClientReply{{ID: 1, Allowed: true, Remaining: 9, Limit: limits.MustParseRate("10/s")}, {ID: 2, Code: CodeInvalidKey, Message: "bad key", RetryAfter: 5}}},
		&AdminRequest{ID: 7, Op: AdminLimitSet, Rule: limits.Rule{Pattern: "user:*", Rate: limits.MustParseRate("10/s")}},
		&AdminReply{ID: 7, Rules: []limits.Rule{{Pattern: "a", Rate: limits.MustParseRate("1/s")}}, Index: 42, Status: []byte(`{}`)},
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

// FuzzReadFrame: ReadFrame never panics, reads no more than the cap, and
// whatever it returns re-frames to exactly the bytes it consumed.
func FuzzReadFrame(f *testing.F) {
	for _, b := range seedBodies(f) {
		fr, err := AppendFrame(nil, b)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(fr, 0)
		f.Add(fr[:len(fr)/2], 0)
		f.Add(fr, len(b)-1)
	}
	f.Add([]byte{0x80, 0x80, 0x40}, 0)
	f.Add([]byte{0x81, 0x00, 'x'}, 0)
	f.Fuzz(func(t *testing.T, data []byte, max int) {
		r := bytes.NewReader(data)
		body, err := ReadFrame(r, max)
		if err != nil {
			if errors.Is(err, io.EOF) && len(data) != 0 {
				t.Fatalf("io.EOF with %d bytes to read", len(data))
			}
			if !errors.Is(err, io.EOF) && !isSentinel(err) {
				t.Fatalf("ReadFrame error %v wraps no sentinel", err)
			}
			return
		}
		limit := max
		if limit <= 0 || limit > MaxFrame {
			limit = MaxFrame
		}
		if len(body) == 0 || len(body) > limit {
			t.Fatalf("ReadFrame returned %d bytes with cap %d", len(body), limit)
		}
		consumed := data[:len(data)-r.Len()]
		again, err := AppendFrame(nil, body)
		if err != nil || !bytes.Equal(again, consumed) {
			t.Fatalf("re-framed %x, %v; consumed %x", again, err, consumed)
		}
	})
}

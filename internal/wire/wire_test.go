package wire

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"reflect"
	"runtime"
	"slices"
	"strings"
	"testing"
	"testing/iotest"
	"time"

	"github.com/quotamesh/quotamesh/crdt"
	"github.com/quotamesh/quotamesh/limits"
	"github.com/vmihailenco/msgpack/v5"
)

const t0 = int64(1_700_000_000) * 1e9

// gen makes random valid messages, including extreme values.
type gen struct{ r *rand.Rand }

func (g gen) pick(n int) int { return g.r.IntN(n) }

func (g gen) text(max int) string {
	n := 1 + g.r.IntN(max)
	if g.r.IntN(4) == 0 {
		n = max
	}
	b := make([]byte, n)
	for i := range b {
		b[i] = byte('!' + g.r.IntN('~'-'!'+1))
	}
	return string(b)
}

func (g gen) u64() uint64 {
	switch g.r.IntN(5) {
	case 0:
		return 0
	case 1:
		return math.MaxUint64
	case 2:
		return uint64(g.r.IntN(200))
	}
	return g.r.Uint64()
}

func (g gen) u32() uint32 {
	switch g.r.IntN(4) {
	case 0:
		return 0
	case 1:
		return math.MaxUint32
	}
	return uint32(g.r.IntN(1 << (1 + g.r.IntN(31))))
}

func (g gen) origin() crdt.OriginID {
	return crdt.OriginID{Node: g.text(crdt.MaxNodeIDLen), Incarnation: max(1, g.u64())}
}

func (g gen) delta() crdt.Delta {
	d := crdt.Delta{From: g.origin(), Seq: max(1, g.u64()), Parts: 1 + g.r.IntN(crdt.MaxParts)}
	d.Part = g.r.IntN(d.Parts)
	d.Full = g.r.IntN(2) == 0
	if !d.Full {
		d.Basis = 1 + g.r.Uint64N(d.Seq)
	}
	times := []int64{0, 1, t0, crdt.MaxTime, g.r.Int64N(crdt.MaxTime)}
	d.Origins = []crdt.OriginState{{ID: d.From, AsOf: times[g.r.IntN(len(times))]}}
	if d.Full {
		for range g.r.IntN(6) {
			ages := []int64{0, 1, crdt.MaxAge, g.r.Int64N(crdt.MaxAge)}
			d.Origins = append(d.Origins, crdt.OriginState{ID: g.origin(), AsOf: times[g.r.IntN(len(times))], Age: ages[g.r.IntN(len(ages))]})
		}
		g.r.Shuffle(len(d.Origins), func(i, j int) { d.Origins[i], d.Origins[j] = d.Origins[j], d.Origins[i] })
	}
	keys := []string{"k", "user:42", strings.Repeat("x", limits.MaxKeyLen), g.text(limits.MaxKeyLen)}
	for range g.r.IntN(40) {
		oi := g.r.IntN(len(d.Origins))
		top := min(d.Origins[oi].AsOf/int64(limits.Slot)+crdt.MaxLeadSlots, crdt.MaxEpoch)
		e := top - g.r.Int64N(min(top, 700))
		if g.r.IntN(10) == 0 {
			e = 1 + g.r.Int64N(top)
		}
		if e < 1 {
			continue
		}
		o := g.u32()
		a := min(g.u32(), o)
		d.Entries = append(d.Entries, crdt.Entry{Origin: oi, Key: keys[g.r.IntN(len(keys))], Epoch: e, Admitted: a, Offered: o})
	}
	for range g.r.IntN(8) {
		oi := g.r.IntN(len(d.Origins))
		top := min(d.Origins[oi].AsOf/int64(limits.Slot)+crdt.MaxLeadSlots, crdt.MaxEpoch)
		if top < 1 {
			continue
		}
		d.Quotas = append(d.Quotas, crdt.QuotaEntry{Origin: oi, Key: keys[g.r.IntN(len(keys))], Epoch: top - g.r.Int64N(min(top, 700)), Seq: 1 + g.r.Uint64N(1<<62), Quota: g.u32()})
	}
	return d
}

func (g gen) message() Message {
	switch g.r.IntN(8) {
	case 0:
		return &Hello{ClusterID: g.text(MaxClusterIDLen), Node: g.text(crdt.MaxNodeIDLen), Incarnation: max(1, g.u64()), Addr: g.text(MaxAddrLen)}
	case 1:
		return g.clientBatch()
	case 2:
		return g.clientReplies()
	case 3:
		return g.adminRequest()
	case 4:
		return g.adminReply()
	}
	m := &Sync{Seq: g.u64(), Ack: g.u64(), Offset: g.r.Int64N(2*MaxOffset+1) - MaxOffset, Delta: g.delta()}
	for range g.r.IntN(3) {
		m.Misses = append(m.Misses, fmt.Sprintf("n%d", g.r.IntN(100)))
	}
	return m
}

func (g gen) i64() int64 { return int64(g.u64()) }

func (g gen) rate() limits.Rate {
	if g.r.IntN(3) == 0 {
		return limits.Rate{}
	}
	return limits.Rate{Count: 1 + g.r.Int64N(limits.MaxCount), Window: time.Duration(1+g.r.IntN(limits.MaxSlots)) * limits.Slot}
}

func (g gen) clientBatch() *ClientBatch {
	m := &ClientBatch{Items: make([]ClientRequest, 1+g.r.IntN(20))}
	for i := range m.Items {
		m.Items[i] = ClientRequest{ID: g.u64(), Op: Op(1 + g.r.IntN(2)), Key: g.text(limits.MaxKeyLen), N: g.i64(), Want: g.i64(), Offered: g.i64(), SettleID: g.u64(), SettleUsed: g.i64()}
	}
	return m
}

func (g gen) clientReplies() *ClientReplies {
	m := &ClientReplies{Items: make([]ClientReply, 1+g.r.IntN(20))}
	for i := range m.Items {
		m.Items[i] = ClientReply{ID: g.u64(), Code: Code(g.r.IntN(int(maxCode) + 1)), Message: g.text(MaxMessageLen), Allowed: g.r.IntN(2) == 0,
			LeaseID: g.u64(), Granted: g.i64(), TTL: time.Duration(g.r.Int64N(1 << 62)), Remaining: g.i64(),
			RetryAfter: time.Duration(g.r.Int64N(1 << 62)), Limit: g.rate(), Unlimited: g.r.IntN(2) == 0}
		switch g.r.IntN(4) {
		case 0:
			m.Items[i].Decided = t0 + g.r.Int64N(1e12)
		case 1:
			m.Items[i].Decided = []int64{1, math.MaxInt64}[g.r.IntN(2)]
		}
	}
	return m
}

func (g gen) adminRequest() *AdminRequest {
	return &AdminRequest{ID: g.u64(), Op: AdminOp(1 + g.r.IntN(int(maxAdminOp))), Rule: limits.Rule{Pattern: g.text(limits.MaxKeyLen), Rate: g.rate(), Shadow: g.r.IntN(2) == 0},
		Pattern: g.text(limits.MaxKeyLen), Node: g.text(64), Addr: g.text(MaxAddrLen)}
}

func (g gen) adminReply() *AdminReply {
	m := &AdminReply{ID: g.u64(), Code: Code(g.r.IntN(int(maxCode) + 1)), Message: g.text(MaxMessageLen), Index: g.u64()}
	for range g.r.IntN(5) {
		r := g.rate()
		if r == (limits.Rate{}) {
			r = limits.MustParseRate("10/s")
		}
		m.Rules = append(m.Rules, limits.Rule{Pattern: "k" + g.text(20), Rate: r, Shadow: g.r.IntN(2) == 0})
	}
	if g.r.IntN(2) == 0 {
		m.Status = []byte(`{"node":"` + g.text(30) + `"}`)
	}
	for range g.r.IntN(4) {
		m.Members = append(m.Members, Member{Node: "n" + g.text(20), Addr: g.text(40)})
	}
	return m
}

// equal compares messages, with nil and empty slices alike.
func equal(a, b Message) bool {
	norm := func(m Message) Message {
		if s, ok := m.(*Sync); ok && len(s.Delta.Entries) == 0 {
			c := *s
			c.Delta.Entries = nil
			return &c
		}
		return m
	}
	return reflect.DeepEqual(norm(a), norm(b))
}

func TestRoundTrip(t *testing.T) {
	enc, dec := NewEncoder(), NewDecoder()
	var buf []byte
	for seed := uint64(1); seed <= 3000; seed++ {
		g := gen{rand.New(rand.NewPCG(seed, 3))}
		m := g.message()
		if err := m.validate(); err != nil {
			t.Fatalf("seed %d: generated an invalid message: %v", seed, err)
		}
		body, err := enc.AppendBody(nil, m)
		if err != nil {
			t.Fatalf("seed %d: AppendBody(%+v): %v", seed, m, err)
		}
		got, err := dec.Decode(body)
		if err != nil {
			t.Fatalf("seed %d: Decode(AppendBody(%+v)): %v", seed, m, err)
		}
		if !equal(got, m) {
			t.Fatalf("seed %d: round trip\n got %+v\nwant %+v", seed, got, m)
		}
		// Framed, several frames in a row on one stream.
		buf, err = enc.Append(buf[:0], m)
		if err != nil {
			t.Fatal(err)
		}
		buf, _ = enc.Append(buf, &Hello{ClusterID: "c", Node: "n", Incarnation: 1, Addr: "a:1"})
		r := bytes.NewReader(buf)
		fb, err := ReadFrame(r, 0)
		if err != nil || !bytes.Equal(fb, body) {
			t.Fatalf("seed %d: ReadFrame = %d bytes, %v; want the body (%d bytes)", seed, len(fb), err, len(body))
		}
		if _, err := ReadFrame(r, 0); err != nil {
			t.Fatalf("seed %d: second ReadFrame: %v", seed, err)
		}
		if _, err := ReadFrame(r, 0); err != io.EOF {
			t.Fatalf("seed %d: ReadFrame at the end = %v, want io.EOF", seed, err)
		}
		if s, ok := m.(*Sync); ok {
			if frame, bound := len(buf)-len(fb)+len(body), s.Delta.SizeBound(); len(body)+maxPrefix > bound {
				t.Fatalf("seed %d: frame of %d bytes exceeds SizeBound %d", seed, frame, bound)
			}
		}
	}
}

// TestSizeBoundWorstCase encodes deltas built to be as large as possible
// per origin, run and entry, and checks crdt's bound, and that the parts a
// store cuts with the default config fit a frame.
func TestSizeBoundWorstCase(t *testing.T) {
	long := func(c byte, n int) string { return strings.Repeat(string(c), n) }
	d := crdt.Delta{From: crdt.OriginID{Node: long('f', 64), Incarnation: math.MaxUint64}, Seq: math.MaxUint64, Full: true, Part: crdt.MaxParts - 1, Parts: crdt.MaxParts}
	for i := range 2000 {
		id := crdt.OriginID{Node: fmt.Sprintf("%064d", i), Incarnation: math.MaxUint64}
		if i == 0 {
			id = d.From
		}
		age := crdt.MaxAge
		if i == 0 {
			age = 0
		}
		d.Origins = append(d.Origins, crdt.OriginState{ID: id, AsOf: crdt.MaxTime, Age: age})
	}
	for i := range 2000 {
		// Every entry its own run, epochs alternating far apart, counts at
		// their largest, origin indices at their largest.
		e := crdt.MaxEpoch
		if i%2 == 1 {
			e = 1
		}
		d.Entries = append(d.Entries, crdt.Entry{Origin: len(d.Origins) - 1, Key: fmt.Sprintf("%0256d", i), Epoch: e, Admitted: math.MaxUint32, Offered: math.MaxUint32})
	}
	if err := d.Validate(); err != nil {
		t.Fatal(err)
	}
	frame, err := Append(nil, &Sync{Seq: math.MaxUint64, Ack: math.MaxUint64, Delta: d})
	if err != nil {
		t.Fatal(err)
	}
	if len(frame) > d.SizeBound() {
		t.Errorf("worst-case frame of %d bytes exceeds SizeBound %d", len(frame), d.SizeBound())
	}
	t.Logf("worst case: %d bytes encoded, SizeBound %d", len(frame), d.SizeBound())

	// A store's full state of long keys, cut with the default config.
	s, err := crdt.NewStore(crdt.OriginID{Node: long('a', 64), Incarnation: 1}, crdt.Config{})
	if err != nil {
		t.Fatal(err)
	}
	s.SetOwnAsOf(t0)
	e := t0 / int64(limits.Slot)
	for i := range 6000 {
		slots := []crdt.SlotCounts{{Epoch: e, Admitted: math.MaxUint32, Offered: math.MaxUint32}, {Epoch: e - 600, Admitted: 1, Offered: math.MaxUint32}}
		if err := s.RecordOwn(fmt.Sprintf("%0256d", i), slots); err != nil {
			t.Fatal(err)
		}
	}
	s.Tick()
	parts := s.DeltaFor("peer", t0)
	if len(parts) < 2 {
		t.Fatalf("%d parts; want the state split", len(parts))
	}
	for i, p := range parts {
		frame, err := Append(nil, &Sync{Seq: math.MaxUint64, Ack: math.MaxUint64, Delta: p})
		if err != nil {
			t.Fatalf("part %d: %v", i, err)
		}
		if len(frame) > MaxFrame || len(frame) > p.SizeBound() {
			t.Errorf("part %d: frame of %d bytes, SizeBound %d, MaxFrame %d", i, len(frame), p.SizeBound(), MaxFrame)
		}
	}
}

// raw builds msgpack bodies field by field, valid or not.
type rawBytes []byte

func raw(fields ...any) []byte {
	var buf bytes.Buffer
	e := msgpack.NewEncoder(&buf)
	var put func(v any)
	put = func(v any) {
		switch v := v.(type) {
		case int:
			e.EncodeInt(int64(v))
		case int64:
			e.EncodeInt(v)
		case uint64:
			e.EncodeUint(v)
		case string:
			e.EncodeString(v)
		case nil:
			e.EncodeNil()
		case bool:
			e.EncodeBool(v)
		case float64:
			e.EncodeFloat64(v)
		case rawBytes:
			buf.Write(v)
		case []any:
			e.EncodeArrayLen(len(v))
			for _, x := range v {
				put(x)
			}
		default:
			panic(fmt.Sprintf("raw: %T", v))
		}
	}
	put(fields)
	return buf.Bytes()
}

// syncFields returns the fields of a valid Sync body; tests change one.
func syncFields() []any {
	e := t0 / int64(limits.Slot)
	// seq, ack, offset, delta seq, basis gap, flags (full), part, parts,
	// origins, from, runs, quotas, misses.
	return []any{Version, int(TypeSync), 1, 0, -3, 9, 0, 1, 0, 1,
		[]any{[]any{"b", 7, t0, 0}, []any{"c", 8, t0, 5}},
		0,
		[]any{[]any{"k", 0, e, 3, 4, 1, -1, 1, 1}, []any{"j", 1, 0, 0, 2}},
		[]any{[]any{"k", 1, e, 3, 500}},
		[]any{"d"},
	}
}

func with(fields []any, i int, v any) []any { fields[i] = v; return fields }

func TestDecodeErrors(t *testing.T) {
	e := t0 / int64(limits.Slot)
	if _, err := Decode(raw(syncFields()...)); err != nil {
		t.Fatalf("the valid sync body does not decode: %v", err)
	}
	hello := func() []any { return []any{Version, int(TypeHello), "cluster", "node", 1, "127.0.0.1:7000"} }
	if _, err := Decode(raw(hello()...)); err != nil {
		t.Fatalf("the valid hello body does not decode: %v", err)
	}
	tests := []struct {
		name     string
		body     []byte
		want     error
		mentions string
	}{
		{"empty", nil, ErrMalformed, "message"},
		{"not an array", []byte{0x01}, ErrMalformed, "not an array"},
		{"a map", []byte{0x80}, ErrMalformed, "not an array"},
		{"too short", raw(Version), ErrMalformed, "version and a type"},
		{"version 2", raw(2, int(TypeSync)), ErrVersion, "version 2"},
		{"version 0", raw(0, int(TypeSync)), ErrVersion, "version 0"},
		{"version negative", raw(-1, 1), ErrMalformed, "version"},
		{"version as string", raw("1", 1), ErrMalformed, "not an unsigned integer"},
		{"version nil", raw(nil, 1), ErrMalformed, "not an unsigned integer"},
		{"type 3", raw(Version, 3), ErrUnknownType, "type 3"},
		{"unknown type 40", raw(Version, 40), ErrUnknownType, "type 40"},
		{"type 300", raw(Version, 300), ErrUnknownType, "type 300"},
		{"hello missing a field", raw(hello()[:5]...), ErrMalformed, "fields"},
		{"hello extra field", raw(append(hello(), 1)...), ErrMalformed, "fields"},
		{"trailing bytes", append(raw(hello()...), 0), ErrMalformed, "bytes after"},
		{"hello truncated in a string", raw(hello()...)[:12], ErrMalformed, "only 0 left"},
		{"hello truncated before a field", raw(hello()...)[:11], ErrMalformed, "unexpected EOF"},
		{"hello incarnation 0", raw(with(hello(), 4, 0)...), ErrMalformed, "incarnation 0"},
		{"hello empty cluster", raw(with(hello(), 2, "")...), ErrMalformed, "cluster ID is empty"},
		{"hello cluster too long", raw(with(hello(), 2, strings.Repeat("c", 65))...), ErrTooLarge, "cluster ID of 65 bytes"},
		{"hello node too long", raw(with(hello(), 3, strings.Repeat("n", 65))...), ErrTooLarge, "node of 65 bytes"},
		{"hello address with space", raw(with(hello(), 5, "a b")...), ErrMalformed, "0x20"},
		{"hello incarnation as float", raw(with(hello(), 4, 1.0)...), ErrMalformed, "not an unsigned integer"},
		{"hello node as bytes", raw(with(hello(), 3, rawBytes{0xc4, 1, 'n'})...), ErrMalformed, "not a string"},
		{"string longer than the body", raw(with(hello(), 2, rawBytes{0xdb, 0, 0, 0, 50, 'c'})...), ErrMalformed, "only"},
		{"string of 4 GiB", raw(with(hello(), 2, rawBytes{0xdb, 0xff, 0xff, 0xff, 0xff})...), ErrTooLarge, "4294967295 bytes"},
		{"sync from index out of range", raw(with(syncFields(), 11, 2)...), ErrMalformed, "delta from: 2 out of range"},
		{"sync from index negative", raw(with(syncFields(), 11, -1)...), ErrMalformed, "delta from"},
		{"sync unknown flag", raw(with(syncFields(), 7, 2)...), ErrMalformed, "unknown bits"},
		{"sync part past parts", raw(with(syncFields(), 8, 1)...), ErrMalformed, "part 1"},
		{"sync parts beyond MaxParts", raw(with(syncFields(), 9, crdt.MaxParts+1)...), ErrMalformed, "delta parts"},
		{"sync full with basis", raw(with(syncFields(), 6, 3)...), ErrMalformed, "basis gap 3 in a full state"},
		{"sync normal without basis", raw(with(with(syncFields(), 7, 0), 6, 9)...), ErrMalformed, "leaves no basis"},
		{"origins claim 4 billion", raw(with(syncFields(), 10, rawBytes{0xdd, 0xff, 0xff, 0xff, 0xff})...), ErrTooLarge, "4294967295 values"},
		{"origins claim more than fit", raw(with(syncFields(), 10, rawBytes{0xdc, 0x27, 0x10})...), ErrMalformed, "cannot fit"},
		{"origin state of 3 values", raw(with(syncFields(), 10, []any{[]any{"b", 7, t0}})...), ErrMalformed, "not 4"},
		{"origin age negative", raw(with(syncFields(), 10, []any{[]any{"b", 7, t0, 0}, []any{"c", 8, t0, -5}})...), ErrMalformed, "age -5"},
		{"origin asOf beyond int64", raw(with(syncFields(), 10, []any{[]any{"b", 7, uint64(math.MaxUint64), 0}})...), ErrMalformed, "does not fit int64"},
		{"entries claim more than 100000", raw(with(syncFields(), 12, rawBytes{0xdd, 0, 1, 0x86, 0xa1})...), ErrTooLarge, "100001 values"},
		{"entry run claims more than 100000 entries", raw(with(syncFields(), 12, []any{rawBytes{0xdd, 0, 6, 0x1a, 0x85, 0, 0, 0}})...), ErrTooLarge, "400005 values"},
		{"entry run longer than the body", raw(with(syncFields(), 12, []any{rawBytes{0xdd, 0, 0, 0, 0x41, 0xa1, 'k', 0, 0, 0, 0}})...), ErrMalformed, "cannot fit"},
		{"entry run of a key alone", raw(with(syncFields(), 12, []any{[]any{"kkkkkkkkk"}})...), ErrMalformed, "run of 1 values"},
		{"entry run of 6 values", raw(with(syncFields(), 12, []any{[]any{"k", 0, e, 1, 1, 1}})...), ErrMalformed, "run of 6 values"},
		{"key too long", raw(with(syncFields(), 12, []any{[]any{strings.Repeat("k", 257), 0, e, 1, 1}})...), ErrTooLarge, "key of 257 bytes"},
		{"key invalid", raw(with(syncFields(), 12, []any{[]any{"k\x00", 0, e, 1, 1}})...), ErrMalformed, "0x00"},
		{"origin index out of range", raw(with(syncFields(), 12, []any{[]any{"k", 2, e, 1, 1}})...), ErrMalformed, "origin: 2 out of range"},
		{"epoch zero", raw(with(syncFields(), 12, []any{[]any{"k", 0, 0, 1, 1}})...), ErrMalformed, "epoch 0"},
		{"epoch negative", raw(with(syncFields(), 12, []any{[]any{"k", 0, e, 1, 1, 0, -e - 1, 1, 1}})...), ErrMalformed, "epoch -1"},
		{"epoch beyond MaxEpoch", raw(with(syncFields(), 12, []any{[]any{"k", 0, crdt.MaxEpoch + 1, 1, 1}})...), ErrMalformed, "out of range"},
		{"epoch overflow", raw(with(syncFields(), 12, []any{[]any{"k", 0, e, 1, 1, 0, int64(math.MaxInt64), 1, 1}})...), ErrMalformed, "overflows"},
		{"epoch ahead of asOf", raw(with(syncFields(), 12, []any{[]any{"k", 0, e + crdt.MaxLeadSlots + 1, 1, 1}})...), ErrMalformed, "ahead"},
		{"count of 2^32", raw(with(syncFields(), 12, []any{[]any{"k", 0, e, 1, uint64(1 << 32)}})...), ErrMalformed, "offered: 4294967296 out of range"},
		{"count negative fixnum", raw(with(syncFields(), 12, []any{[]any{"k", 0, e, -1, 1}})...), ErrMalformed, "not an unsigned integer"},
		{"count negative", raw(with(syncFields(), 12, []any{[]any{"k", 0, e, -200, 1}})...), ErrMalformed, "-200 is negative"},
		{"admitted above offered", raw(with(syncFields(), 12, []any{[]any{"k", 0, e, 2, 1}})...), ErrMalformed, "exceeds offered"},
		{"body over 1 MiB", make([]byte, MaxFrame+1), ErrTooLarge, "body of"},
	}
	// A normal delta may carry other origins' counts: a node relays them
	// above the full-mesh size (design.md §7, "Sync traffic").
	if m, err := Decode(raw(with(with(with(syncFields(), 7, 0), 5, 2), 6, 1)...)); err != nil {
		t.Errorf("a normal delta relaying a second origin: %v; want it decoded", err)
	} else if s, ok := m.(*Sync); !ok || len(s.Delta.Origins) != 2 {
		t.Errorf("a normal delta relaying a second origin decoded as %+v", m)
	}
	for i, tt := range tests {
		m, err := Decode(tt.body)
		if err == nil {
			t.Errorf("step %d (%s): Decode = %+v, nil; want %v", i, tt.name, m, tt.want)
			continue
		}
		if !errors.Is(err, tt.want) || !strings.Contains(err.Error(), tt.mentions) {
			t.Errorf("step %d (%s): Decode error %q; want %v mentioning %q", i, tt.name, err, tt.want, tt.mentions)
		}
	}
}

// TestDecodeTruncatedAndCorrupted: every prefix of valid bodies, and every
// single-byte change of them, decodes to a valid message or a wrapped
// sentinel error, never a panic.
func TestDecodeTruncatedAndCorrupted(t *testing.T) {
	g := gen{rand.New(rand.NewPCG(1, 1))}
	for range 20 {
		body, err := Encode(g.message())
		if err != nil {
			t.Fatal(err)
		}
		for n := range body {
			if _, err := Decode(body[:n]); !isSentinel(err) {
				t.Fatalf("Decode of %d of %d bytes = %v; want a sentinel error", n, len(body), err)
			}
		}
		for range 200 {
			c := bytes.Clone(body)
			c[g.r.IntN(len(c))] = byte(g.r.IntN(256))
			if m, err := Decode(c); err != nil && !isSentinel(err) {
				t.Fatalf("Decode of a corrupted body = %v, not a sentinel", err)
			} else if err == nil {
				if err := m.validate(); err != nil {
					t.Fatalf("Decode returned an invalid message: %v", err)
				}
			}
		}
	}
}

func isSentinel(err error) bool {
	for _, s := range []error{ErrTooLarge, ErrMalformed, ErrVersion, ErrUnknownType} {
		if errors.Is(err, s) {
			return true
		}
	}
	return false
}

// TestDecodeAllocationIsBounded: bodies that claim huge arrays or strings
// allocate little, and a full 1 MiB frame at most a few times its size.
func TestDecodeAllocationIsBounded(t *testing.T) {
	liars := [][]byte{
		raw(with(syncFields(), 10, rawBytes{0xdd, 0, 0, 0x27, 0x10})...),
		raw(with(syncFields(), 12, rawBytes{0xdd, 0, 1, 0x86, 0xa0})...),
		raw(with(syncFields(), 12, []any{rawBytes{0xdd, 0, 6, 0x1a, 0x81}})...),
		raw(Version, int(TypeHello), rawBytes{0xdb, 0, 0, 0xff, 0xff}),
	}
	dec := NewDecoder()
	for i, body := range liars {
		if got := allocated(func() { dec.Decode(body) }); got > 4096 {
			t.Errorf("body %d (%d bytes) claiming a huge array allocated %d bytes", i, len(body), got)
		}
	}
	// A real frame full of tiny entries.
	d := crdt.Delta{From: crdt.OriginID{Node: "a", Incarnation: 1}, Seq: 1, Full: true, Parts: 1, Origins: []crdt.OriginState{{ID: crdt.OriginID{Node: "a", Incarnation: 1}, AsOf: t0}}}
	e := t0 / int64(limits.Slot)
	for i := range crdt.MaxDeltaEntries {
		d.Entries = append(d.Entries, crdt.Entry{Key: "k", Epoch: e - int64(i%2), Admitted: 1, Offered: 1})
	}
	body, err := Encode(&Sync{Seq: 1, Delta: d})
	if err != nil {
		t.Fatal(err)
	}
	got := allocated(func() {
		if _, err := dec.Decode(body); err != nil {
			t.Fatal(err)
		}
	})
	// The entries themselves are 10 times the body here (40 bytes each for 4
	// bytes on the wire); the race detector's build allocates a temporary
	// of the same size when growing the slice.
	if got > uint64(24*len(body)) {
		t.Errorf("decoding a %d-byte body of %d entries allocated %d bytes", len(body), len(d.Entries), got)
	}
	t.Logf("%d-byte body of %d entries: %d bytes allocated", len(body), len(d.Entries), got)
}

// allocated returns the bytes the heap grew by while f ran: the least of
// five runs, since the counter is the process's and a goroutine of the
// runtime or of another test may allocate during any one of them (seen:
// 6 KB on top of a liar's few hundred bytes, once in many runs).
func allocated(f func()) uint64 {
	least := uint64(math.MaxUint64)
	for range 5 {
		var a, b runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&a)
		f()
		runtime.ReadMemStats(&b)
		least = min(least, b.TotalAlloc-a.TotalAlloc)
	}
	return least
}

func TestReadFrame(t *testing.T) {
	tests := []struct {
		name     string
		in       []byte
		max      int
		want     []byte
		err      error
		mentions string
	}{
		{"one byte", []byte{1, 'x'}, 0, []byte("x"), nil, ""},
		{"two-byte length", append([]byte{0x80, 0x01}, make([]byte, 128)...), 0, make([]byte, 128), nil, ""},
		{"clean end", nil, 0, nil, io.EOF, "EOF"},
		{"empty frame", []byte{0}, 0, nil, ErrMalformed, "empty frame"},
		{"truncated length", []byte{0x80}, 0, nil, ErrMalformed, "unexpected EOF"},
		{"truncated body", []byte{5, 'a', 'b'}, 0, nil, ErrMalformed, "read 2 of 5 bytes"},
		{"non-minimal length", []byte{0x81, 0x00, 'x'}, 0, nil, ErrMalformed, "not minimal"},
		{"above max", []byte{5, 1, 2, 3, 4, 5}, 4, nil, ErrTooLarge, "frame of 5 bytes; at most 4"},
		{"above MaxFrame", []byte{0x81, 0x80, 0x40}, 0, nil, ErrTooLarge, "frame of 1048577 bytes"},
		{"prefix of four bytes", []byte{0x80, 0x80, 0x80, 0x01}, 0, nil, ErrTooLarge, "longer than 3 bytes"},
		{"prefix longer than the cap's", []byte{0x80, 0x01}, 100, nil, ErrTooLarge, "longer than 1 bytes"},
		{"max above MaxFrame", append([]byte{0x81, 0x80, 0x40}, make([]byte, MaxFrame+1)...), 2 * MaxFrame, make([]byte, MaxFrame+1), nil, ""},
		{"max above FrameLimit means FrameLimit", []byte{0x81, 0x80, 0x80, 0x20}, 1 << 30, nil, ErrTooLarge, "at most 67108864"},
	}
	for i, tt := range tests {
		got, err := ReadFrame(bytes.NewReader(tt.in), tt.max)
		if tt.err == nil {
			if err != nil || !bytes.Equal(got, tt.want) {
				t.Errorf("step %d (%s): ReadFrame = %q, %v; want %q, nil", i, tt.name, got, err, tt.want)
			}
			continue
		}
		if !errors.Is(err, tt.err) || !strings.Contains(fmt.Sprint(err), tt.mentions) {
			t.Errorf("step %d (%s): ReadFrame error %v; want %v mentioning %q", i, tt.name, err, tt.err, tt.mentions)
		}
	}
	// A stream that fails passes its own error on, not a format error.
	errReset := errors.New("stream reset")
	for _, in := range []io.Reader{iotest.ErrReader(errReset), io.MultiReader(bytes.NewReader([]byte{5, 'a'}), iotest.ErrReader(errReset))} {
		if _, err := ReadFrame(bufio.NewReader(in), 0); !errors.Is(err, errReset) || isSentinel(err) {
			t.Errorf("ReadFrame of a failing stream = %v; want %v and no sentinel", err, errReset)
		}
	}
	// A frame claiming 1 MiB on a stream that stalls holds at most a chunk.
	if got := allocated(func() { ReadFrame(bytes.NewReader([]byte{0x80, 0x80, 0x40, 1}), 0) }); got > 100<<10 {
		t.Errorf("a truncated 1 MiB frame allocated %d bytes", got)
	}
	if got, err := AppendFrame([]byte("x"), nil, 0); !errors.Is(err, ErrMalformed) || string(got) != "x" {
		t.Errorf("AppendFrame(empty) = %q, %v; want \"x\", ErrMalformed", got, err)
	}
	if _, err := AppendFrame(nil, make([]byte, MaxFrame+1), 0); !errors.Is(err, ErrTooLarge) {
		t.Errorf("AppendFrame(MaxFrame+1) = %v, want ErrTooLarge", err)
	}
	if _, err := AppendFrame(nil, make([]byte, 11), 10); !errors.Is(err, ErrTooLarge) {
		t.Errorf("AppendFrame(11 bytes, max 10) = %v, want ErrTooLarge", err)
	}
	f, err := AppendFrame([]byte("x"), make([]byte, MaxFrame), 0)
	if err != nil {
		t.Fatal(err)
	}
	if body, err := ReadFrame(bytes.NewReader(f[1:]), 0); err != nil || len(body) != MaxFrame {
		t.Errorf("ReadFrame of a MaxFrame frame = %d bytes, %v", len(body), err)
	}
}

func TestEncodeRefusesInvalid(t *testing.T) {
	bad := []Message{
		&Hello{ClusterID: "c", Node: "n", Incarnation: 0, Addr: "a"},
		&Hello{ClusterID: "", Node: "n", Incarnation: 1, Addr: "a"},
		&Sync{Seq: 1},
	}
	for i, m := range bad {
		dst := []byte("keep")
		out, err := Append(dst, m)
		if !errors.Is(err, ErrMalformed) || string(out) != "keep" {
			t.Errorf("step %d: Append(%+v) = %q, %v; want dst unchanged and ErrMalformed", i, m, out, err)
		}
	}
}

// TestRelayAndMissesDecode: a relay (a normal delta whose basis is its own
// interval) may carry other origins, and the misses list comes through.
func TestRelayAndMissesDecode(t *testing.T) {
	m, err := Decode(raw(with(with(syncFields(), 7, 0), 5, 1)...))
	if err != nil {
		t.Fatalf("Decode(relay) = %v", err)
	}
	s, ok := m.(*Sync)
	if !ok || !s.Delta.IsRelay() || len(s.Delta.Origins) != 2 || !slices.Equal(s.Misses, []string{"d"}) {
		t.Errorf("Decode(relay) = %+v, want a relay with 2 origins and misses [d]", m)
	}
	if _, err := Decode(raw(with(syncFields(), 14, []any{"bad id"})...)); !errors.Is(err, ErrMalformed) {
		t.Errorf("Decode(misses with a space) = %v, want ErrMalformed", err)
	}
}

// TestNames: every op and code has its own name, which labels metrics; an
// unknown value says its number.
func TestNames(t *testing.T) {
	seen := map[string]bool{}
	check := func(what string, name string, known bool) {
		t.Helper()
		if known && (name == "" || strings.ContainsAny(name, " ()") || seen[name]) {
			t.Errorf("%s: name %q is empty, not snake case, or taken", what, name)
		}
		if !known && !strings.HasSuffix(name, ")") {
			t.Errorf("%s: unknown value named %q; want its number", what, name)
		}
		seen[name] = true
	}
	for c := range Code(NumCodes + 1) {
		check(fmt.Sprintf("Code(%d)", c), c.String(), c <= maxCode)
	}
	clear(seen)
	for op := range AdminOp(maxAdminOp + 2) {
		check(fmt.Sprintf("AdminOp(%d)", op), op.String(), op >= AdminLimitSet && op <= maxAdminOp)
	}
	clear(seen)
	for op := range Op(4) {
		check(fmt.Sprintf("Op(%d)", op), op.String(), op == OpDecide || op == OpLease)
	}
	got := []string{OpDecide.String(), OpLease.String(), CodeOK.String(), CodeNoRule.String(), CodeInternal.String(),
		AdminLimitSet.String(), AdminStatus.String(), AdminLeave.String(), AdminKeyShow.String(), AdminKeyReset.String()}
	want := []string{"decide", "lease", "ok", "no_rule", "internal", "limit_set", "status", "leave", "key_show", "key_reset"}
	if !slices.Equal(got, want) {
		t.Errorf("names = %q; want the metric labels %q", got, want)
	}
}

// TestClientReplyDecided: a reply's decision time is a twelfth value,
// written only when set, so a reply without it is the eleven values an
// SDK of the older protocol reads; it costs 9 bytes; a present value must
// be a positive Unix time in nanoseconds.
func TestClientReplyDecided(t *testing.T) {
	base := ClientReply{ID: 7, Allowed: true, Remaining: 9, TTL: 50 * time.Millisecond, Limit: limits.MustParseRate("10/s")}
	stamped := base
	stamped.Decided = t0 + 123_456_789
	old, err := Encode(&ClientReplies{Items: []ClientReply{base}})
	if err != nil {
		t.Fatal(err)
	}
	// [version, type, [reply]]: the reply's header is the fifth byte.
	if got, want := old[4], byte(0x9b); got != want {
		t.Errorf("reply without a decision time: header %#x; want %#x (11 values, as before)", got, want)
	}
	body, err := Encode(&ClientReplies{Items: []ClientReply{stamped}})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := body[4], byte(0x9c); got != want {
		t.Errorf("reply with a decision time: header %#x; want %#x (12 values)", got, want)
	}
	if got, want := len(body)-len(old), 9; got != want {
		t.Errorf("a decision time costs %d bytes; want %d", got, want)
	}
	m, err := Decode(body)
	if err != nil {
		t.Fatalf("Decode: %v", err)
	}
	if got := m.(*ClientReplies).Items[0]; got != stamped {
		t.Errorf("round trip: got %+v; want %+v", got, stamped)
	}
	reply := func(extra ...any) []byte {
		r := []any{7, 0, "", true, 0, 0, int(50 * time.Millisecond), 9, 0, []any{10, int(time.Second)}, false}
		return raw(Version, int(TypeClientReplies), []any{append(r, extra...)})
	}
	if m, err := Decode(reply()); err != nil || m.(*ClientReplies).Items[0].Decided != 0 {
		t.Errorf("Decode(11 values) = %+v, %v; want Decided 0", m, err)
	}
	if m, err := Decode(reply(t0)); err != nil || m.(*ClientReplies).Items[0].Decided != t0 {
		t.Errorf("Decode(12 values) = %+v, %v; want Decided %d", m, err, t0)
	}
	for i, tt := range []struct {
		name     string
		body     []byte
		want     error
		mentions string
	}{
		{"decided zero", reply(0), ErrMalformed, "reply decided: 0"},
		{"decided negative", reply(-5), ErrMalformed, "reply decided: -5"},
		{"decided beyond int64", reply(uint64(math.MaxUint64)), ErrMalformed, "does not fit int64"},
		{"decided as string", reply("now"), ErrMalformed, "reply decided"},
		{"decided as nil", reply(nil), ErrMalformed, "reply decided"},
		{"13 values", reply(t0, 1), ErrTooLarge, "client reply: 13 values"},
		{"10 values", raw(Version, int(TypeClientReplies), []any{[]any{7, 0, "", true, 0, 0, 0, 9, 0, []any{10, int(time.Second)}}}), ErrMalformed, "not 11 or 12"},
	} {
		m, err := Decode(tt.body)
		if !errors.Is(err, tt.want) || err == nil || !strings.Contains(err.Error(), tt.mentions) {
			t.Errorf("step %d (%s): Decode = %+v, %v; want %v mentioning %q", i, tt.name, m, err, tt.want, tt.mentions)
		}
	}
	if _, err := Encode(&ClientReplies{Items: []ClientReply{{ID: 1, Decided: -1}}}); !errors.Is(err, ErrMalformed) {
		t.Errorf("Encode(Decided -1) = %v; want ErrMalformed", err)
	}
}

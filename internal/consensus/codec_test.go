package consensus

import (
	"errors"
	"fmt"
	"reflect"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"github.com/rs/zerolog"
	"github.com/vmihailenco/msgpack/v5"

	"github.com/quotamesh/quotamesh/limits"
)

func TestErrorCodesKeepIdentity(t *testing.T) {
	for _, s := range sentinels {
		orig := fmt.Errorf("%w: %q: something", s.err, "x")
		if got := codeOf(orig); got != s.code {
			t.Errorf("codeOf(%v) = %d, want %d", orig, got, s.code)
		}
		// Through a response and back, as across a Forwarder.
		b := encodeResponse(response{Code: codeOf(orig), Msg: orig.Error()})
		resp, err := decodeResponse(b)
		if err != nil {
			t.Fatal(err)
		}
		rebuilt := resp.err()
		if !errors.Is(rebuilt, s.err) || rebuilt.Error() != orig.Error() {
			t.Errorf("rebuilt %v (Is %v = %v); want %v", rebuilt, s.err, errors.Is(rebuilt, s.err), orig)
		}
	}
	// limits' own errors, as the leader's state machine returns them.
	_, err := (&limits.Table{}).Without("gone")
	if back := errorOf(codeOf(err), err.Error()); !errors.Is(back, limits.ErrNoRule) || back.Error() != err.Error() {
		t.Errorf("ErrNoRule rebuilt as %v", back)
	}
	other := errors.New("disk on fire")
	if back := errorOf(codeOf(other), other.Error()); back == nil || back.Error() != "disk on fire" {
		t.Errorf("other error rebuilt as %v", back)
	}
	if errorOf(codeOK, "") != nil {
		t.Error("codeOK rebuilt as an error")
	}
}

func TestCodecRoundTrip(t *testing.T) {
	cmd := command{Op: opSet, ID: 42, Rule: toWire(rule("user:*", "50/s"))}
	b, err := encodeCommand(cmd)
	if err != nil {
		t.Fatal(err)
	}
	got, err := decodeCommand(b)
	cmd.V = formatVersion
	if err != nil || got != cmd {
		t.Errorf("command round trip = %+v, %v; want %+v", got, err, cmd)
	}

	req := request{Op: opJoin, ID: 9, Server: Server{"n1", "10.0.0.1:7000"}, Hops: 1, Budget: time.Second}
	b, err = encodeRequest(req)
	if err != nil {
		t.Fatal(err)
	}
	gotReq, err := decodeRequest(b)
	req.V = formatVersion
	if err != nil || gotReq != req {
		t.Errorf("request round trip = %+v, %v; want %+v", gotReq, err, req)
	}

	snap := snapshot{Index: 7, Rules: toWireRules([]limits.Rule{rule("a", "1/s"), rule("b:*", "2/min")}), Recent: []recent{{ID: 1, Index: 5, Code: codeNoRule, Msg: "m"}}}
	b, err = encodeSnapshot(snap)
	if err != nil {
		t.Fatal(err)
	}
	gotSnap, tb, err := decodeSnapshot(b)
	snap.V = formatVersion
	if err != nil || !reflect.DeepEqual(gotSnap, snap) || tb.Len() != 2 {
		t.Errorf("snapshot round trip = %+v, %v, %v; want %+v", gotSnap, tb, err, snap)
	}
}

func TestDecodersRefuse(t *testing.T) {
	big := make([]byte, maxMessageBytes+1)
	for _, tc := range []struct {
		name string
		err  error
	}{
		{"garbage request", func() error { _, err := decodeRequest([]byte{0xc1}); return err }()},
		{"oversized request", func() error { _, err := decodeRequest(big); return err }()},
		{"oversized response", func() error { _, err := decodeResponse(big); return err }()},
		{"oversized command", func() error { _, err := decodeCommand(big); return err }()},
		{"request of another version", func() error {
			b, _ := msgpack.Marshal(map[string]any{"v": 9, "o": uint8(opSync)})
			_, err := decodeRequest(b)
			return err
		}()},
		{"unknown request op", func() error {
			b, _ := encodeRequest(request{Op: 99})
			_, err := decodeRequest(b)
			return err
		}()},
		{"command that is not a change", func() error {
			b, _ := encodeCommand(command{Op: opSync})
			_, err := decodeCommand(b)
			return err
		}()},
	} {
		if !errors.Is(tc.err, ErrBadRequest) {
			t.Errorf("%s: err = %v; want ErrBadRequest", tc.name, tc.err)
		}
	}
	// A snapshot with an invalid rule never becomes a table.
	b, _ := encodeSnapshot(snapshot{Rules: []wireRule{{Pattern: "a**", Count: 1, Window: time.Second}}})
	if _, _, err := decodeSnapshot(b); !errors.Is(err, limits.ErrInvalidPattern) {
		t.Errorf("snapshot with a bad pattern: %v; want ErrInvalidPattern", err)
	}
}

// The fuzz targets check that nothing a peer or a disk can hand these
// decoders makes them panic, and that whatever they accept encodes back to
// something they accept the same way.

func FuzzDecodeRequest(f *testing.F) {
	for _, r := range []request{
		{Op: opSet, ID: 1, Rule: toWire(rule("user:*", "50/s"))},
		{Op: opDelete, ID: 2, Pattern: "k"},
		{Op: opSync, Budget: time.Second},
		{Op: opJoin, Server: Server{"n1", "n1:7000"}, Hops: 1},
		{Op: opStatus},
		{Op: opReset, ID: 3, Pattern: "user:*", Floor: 17_000_000_000},
	} {
		b, err := encodeRequest(r)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := decodeRequest(b)
		if err != nil {
			return
		}
		b2, err := encodeRequest(r)
		if err != nil {
			t.Fatalf("re-encoding %+v: %v", r, err)
		}
		r2, err := decodeRequest(b2)
		if err != nil || r2 != r {
			t.Fatalf("round trip of %+v = %+v, %v", r, r2, err)
		}
	})
}

func FuzzDecodeCommand(f *testing.F) {
	for _, c := range []command{
		{Op: opSet, ID: 1, Rule: toWire(rule("orders.create", "1000/s"))},
		{Op: opDelete, ID: 2, Pattern: "user:*"},
		{Op: opReset, ID: 3, Pattern: "user:42", Floor: 17_000_000_000},
	} {
		b, err := encodeCommand(c)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := decodeCommand(b)
		if err != nil {
			return
		}
		// Whatever decodes is applied deterministically, or refused.
		fsm := newFSM(zerolog.Nop(), nil)
		res := fsm.Apply(&raft.Log{Index: 1, Data: b}).(applyResult)
		if n := fsm.table.Load().Len(); res.Code == codeOK && c.Op == opSet && n != 1 {
			t.Fatalf("applied %+v but the table has %d rules", c, n)
		}
		if res.Code != codeOK && (fsm.table.Load().Len() != 0 || len(fsm.table.Load().Resets()) != 0) {
			t.Fatalf("refused %+v (%s) but the table changed", c, res.Msg)
		}
	})
}

func FuzzDecodeSnapshot(f *testing.F) {
	b, err := encodeSnapshot(snapshot{Index: 3, Rules: toWireRules([]limits.Rule{rule("a", "1/s")}), Recent: []recent{{ID: 1, Index: 3}},
		Resets: []wireReset{{Pattern: "a", Floor: 17_000_000_000}}})
	if err != nil {
		f.Fatal(err)
	}
	f.Add(b)
	f.Fuzz(func(t *testing.T, b []byte) {
		_, tb, err := decodeSnapshot(b)
		if err == nil && tb == nil {
			t.Fatal("nil table without an error")
		}
	})
}

package engine

import (
	"fmt"
	"testing"

	"github.com/quotamesh/quotamesh/internal/wire"
)

// TestAdvanceCountsAPrefix: frames a peer did not take are numbered again
// and, for a split full state, returned again first; the sequence numbers
// count only what went out.
func TestAdvanceCountsAPrefix(t *testing.T) {
	cfg := Config{Node: "a", Incarnation: 1}
	cfg.Store.MaxEntriesPerDelta = 2
	e := newEngine(t, cfg, table(t, "k:*", "100/s"), []string{"a", "b"}, t0)
	e.PeerUp("b")
	for i := range 5 {
		e.AllowN(t0, fmt.Sprint("k:", i), 1)
	}
	rd := e.Tick(t0 + 20*ms)
	if len(rd.Peers) != 1 || rd.Peers[0].Node != "b" {
		t.Fatalf("Ready peers %+v, want b alone", rd.Peers)
	}
	first := rd.Peers[0].Frames
	if len(first) < 3 || !first[0].Delta.Full {
		t.Fatalf("first frames: %d, full %v; want a full state in 3 or more parts", len(first), first[0].Delta.Full)
	}
	for i, f := range first {
		if f.Seq != uint64(i+1) || f.Delta.Part != i {
			t.Fatalf("frame %d: Seq %d, part %d; want %d, %d", i, f.Seq, f.Delta.Part, i+1, i)
		}
	}
	rd.Peers[0].Sent = 1
	if st := e.Advance(rd); st.Frames != 1 {
		t.Errorf("Advance stats %+v, want 1 frame", st)
	}

	rd = e.Tick(t0 + 40*ms)
	again := rd.Peers[0].Frames
	if len(again) != len(first)-1 {
		t.Fatalf("second tick: %d frames, want the %d parts not sent", len(again), len(first)-1)
	}
	for i, f := range again {
		if f.Seq != uint64(i+2) || f.Delta.Part != i+1 || f.Delta.Seq != first[0].Delta.Seq {
			t.Errorf("frame %d: Seq %d, part %d of interval %d; want %d, %d of %d", i, f.Seq, f.Delta.Part, f.Delta.Seq, i+2, i+1, first[0].Delta.Seq)
		}
	}
	rd.Send(func(string, *wire.Sync) error { return nil })
	e.Advance(rd)

	e.AllowN(t0+50*ms, "k:0", 1) // news for b: a frame goes
	rd = e.Tick(t0 + 60*ms)
	if f := rd.Peers[0].Frames; f[0].Delta.Full || f[0].Seq != uint64(len(first)+1) {
		t.Errorf("third tick: full %v, Seq %d; want a normal delta numbered %d", f[0].Delta.Full, f[0].Seq, len(first)+1)
	}
	e.Advance(rd)
}

// TestAdvanceAfterPeerUp: a stream replaced between Tick and Advance keeps
// its own numbering.
func TestAdvanceAfterPeerUp(t *testing.T) {
	e := newEngine(t, Config{Node: "a", Incarnation: 1}, table(t, "k", "100/s"), []string{"a", "b"}, t0)
	e.PeerUp("b")
	rd := e.Tick(t0 + 20*ms)
	rd.Send(func(string, *wire.Sync) error { return nil })
	e.PeerUp("b")
	e.Advance(rd)
	rd = e.Tick(t0 + 40*ms)
	if f := rd.Peers[0].Frames[0]; f.Seq != 1 || !f.Delta.Full {
		t.Errorf("first frame on the new stream: Seq %d, full %v; want 1, a full state", f.Seq, f.Delta.Full)
	}
	e.Advance(rd)
}

// TestTickAndAdvanceAlternate: a Tick before the last Ready was advanced,
// and an Advance of any Ready but the last, are programming errors.
func TestTickAndAdvanceAlternate(t *testing.T) {
	mustPanic := func(what string, f func()) {
		t.Helper()
		defer func() {
			if recover() == nil {
				t.Errorf("%s did not panic", what)
			}
		}()
		f()
	}
	e := newEngine(t, Config{Node: "a"}, table(t, "k", "10/s"), []string{"a"}, t0)
	rd := e.Tick(t0)
	mustPanic("Tick before Advance", func() { e.Tick(t0 + 20*ms) })
	e.Advance(rd)
	mustPanic("a second Advance", func() { e.Advance(rd) })
	mustPanic("Advance of a zero Ready", func() { e.Advance(Ready{}) })
	e.Advance(e.Tick(t0 + 20*ms))
}

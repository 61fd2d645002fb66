package crdt

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
)

// ownStore returns a store of idA that counted n keys in the slot of t0.
func ownStore(t *testing.T, cfg Config, n int) *Store {
	t.Helper()
	s := mustStore(t, idA, cfg)
	e := slotOf(t0)
	for i := range n {
		if err := s.RecordOwn(fmt.Sprintf("key%04d", i), []SlotCounts{{Epoch: e - 1, Admitted: 1, Offered: 2}, {Epoch: e, Admitted: 3, Offered: 3}}); err != nil {
			t.Fatal(err)
		}
	}
	s.SetOwnAsOf(t0)
	return s
}

func entryCount(parts []Delta) int {
	n := 0
	for _, d := range parts {
		n += len(d.Entries)
	}
	return n
}

func TestDeltaForFullThenSinceAck(t *testing.T) {
	s := ownStore(t, Config{}, 3)
	seq := s.Tick()
	parts := s.DeltaFor("b", t0)
	if len(parts) != 1 || !parts[0].Full || parts[0].Seq != seq || len(parts[0].Entries) != 6 {
		t.Fatalf("first DeltaFor = %+v; want one full part with seq %d and 6 entries", parts, seq)
	}
	s.Sent("b", 1)
	s.Tick()
	if parts = s.DeltaFor("b", t0); len(parts) != 1 || parts[0].Full || parts[0].Basis != seq {
		t.Fatalf("delta while the full state is unacknowledged = %+v; want a normal delta on it", parts)
	}
	s.Ack("b", seq)

	// Nothing changed: a heartbeat with the new asOf and no entries.
	s.SetOwnAsOf(t0 + 20*ms)
	seq2 := s.Tick()
	parts = s.DeltaFor("b", t0+20*ms)
	if len(parts) != 1 || parts[0].Full || parts[0].Basis != seq || parts[0].Seq != seq2 || len(parts[0].Entries) != 0 ||
		parts[0].Origins[0] != (OriginState{ID: idA, AsOf: t0 + 20*ms}) {
		t.Fatalf("heartbeat = %+v; want a normal delta since %d with asOf only", parts, seq)
	}

	// One slot changed: only it is sent, at its current value.
	if err := s.RecordOwn("key0001", []SlotCounts{{Epoch: slotOf(t0), Admitted: 9, Offered: 9}}); err != nil {
		t.Fatal(err)
	}
	s.Tick()
	parts = s.DeltaFor("b", t0+40*ms)
	want := []Entry{{Origin: 0, Key: "key0001", Epoch: slotOf(t0), Admitted: 9, Offered: 9}}
	if len(parts) != 1 || fmt.Sprint(parts[0].Entries) != fmt.Sprint(want) {
		t.Fatalf("delta after one change = %+v; want entries %v", parts, want)
	}

	// A peer that lags more than DeltaIntervals gets a full state again.
	for range DefaultDeltaIntervals {
		s.Tick()
	}
	if parts = s.DeltaFor("b", t0+sec); !parts[0].Full {
		t.Errorf("delta to a peer %d intervals behind is not full: %+v", DefaultDeltaIntervals+1, parts[0])
	}
	// So does one acknowledging an interval this store never closed (meant
	// for a previous incarnation).
	s.Ack("b", s.last+1)
	if parts = s.DeltaFor("b", t0+sec); !parts[0].Full {
		t.Errorf("delta after a foreign acknowledgement is not full: %+v", parts[0])
	}
	s.Ack("b", s.last)
	if parts = s.DeltaFor("b", t0+sec); parts[0].Full {
		t.Errorf("delta after a current acknowledgement is full")
	}
	// An acknowledgement covering parts not yet sent drops them.
	s.ResetPeer("b")
	if parts = s.DeltaFor("b", t0+sec); !parts[0].Full {
		t.Fatalf("delta after ResetPeer is not full")
	}
	s.Ack("b", parts[0].Seq)
	if parts = s.DeltaFor("b", t0+sec); parts[0].Full {
		t.Errorf("full state still pending after it was acknowledged")
	}
	s.ResetPeer("b")
	if parts = s.DeltaFor("b", t0+sec); !parts[0].Full {
		t.Errorf("delta after ResetPeer is not full")
	}
}

func TestDeltaSplitting(t *testing.T) {
	long := strings.Repeat("k", 256)
	for _, cfg := range []Config{
		{MaxEntriesPerDelta: 7},
		{MaxDeltaBytes: MinMaxDeltaBytes},
	} {
		s := mustStore(t, idA, cfg)
		e := slotOf(t0)
		for i := range 40 {
			key := fmt.Sprintf("%s%03d", long[:253], i)
			if err := s.RecordOwn(key, []SlotCounts{{Epoch: e, Admitted: 1, Offered: 1}, {Epoch: e - 1, Admitted: 2, Offered: 2}}); err != nil {
				t.Fatal(err)
			}
		}
		// Other origins, one of them without slots.
		mustMerge(t, s, normal(idB, t0, ent("x", e, 1, 1)), t0)
		mustMerge(t, s, normal(idC, t0), t0)
		s.SetOwnAsOf(t0)
		seq := s.Tick()
		parts := s.DeltaFor("d", t0)
		if len(parts) < 2 {
			t.Fatalf("%+v: %d parts, want several", cfg, len(parts))
		}
		seen := map[OriginID]bool{}
		for i, d := range parts {
			if err := d.Validate(); err != nil {
				t.Fatalf("%+v: part %d invalid: %v", cfg, i, err)
			}
			if d.Part != i || d.Parts != len(parts) || d.Seq != seq || !d.Full || d.Origins[0].ID != idA {
				t.Errorf("%+v: part %d = {Part %d, Parts %d, Seq %d, Full %v, first origin %v}", cfg, i, d.Part, d.Parts, d.Seq, d.Full, d.Origins[0].ID)
			}
			if n := len(d.Entries); cfg.MaxEntriesPerDelta > 0 && n > cfg.MaxEntriesPerDelta {
				t.Errorf("%+v: part %d has %d entries", cfg, i, n)
			}
			if b := d.SizeBound(); cfg.MaxDeltaBytes > 0 && b > cfg.MaxDeltaBytes {
				t.Errorf("%+v: part %d SizeBound %d exceeds MaxDeltaBytes", cfg, i, b)
			}
			for _, o := range d.Origins {
				seen[o.ID] = true
			}
		}
		if got := entryCount(parts); got != 81 {
			t.Errorf("%+v: parts carry %d entries, want 81", cfg, got)
		}
		if !seen[idB] || !seen[idC] {
			t.Errorf("%+v: full state lacks origins: %v", cfg, seen)
		}
		// A receiver that merges all parts in order acknowledges the seq.
		r := mustStore(t, idD, Config{})
		for i, d := range parts {
			mustMerge(t, r, d, t0)
			if got, want := r.AckFor("a"), map[bool]uint64{true: seq, false: 0}[i == len(parts)-1]; got != want {
				t.Errorf("%+v: AckFor after part %d = %d, want %d", cfg, i, got, want)
			}
		}
	}
}

func TestSplitDeltaPendingAndInflight(t *testing.T) {
	cfg := Config{MaxEntriesPerDelta: 4, DeltaIntervals: 5}
	s := ownStore(t, cfg, 5) // 10 entries: 3 parts
	seq := s.Tick()
	parts := s.DeltaFor("b", t0)
	if len(parts) != 3 {
		t.Fatalf("%d parts, want 3", len(parts))
	}
	// The transport took one part; the rest come back first, unchanged,
	// even after another tick.
	s.Sent("b", 1)
	s.Tick()
	again := s.DeltaFor("b", t0+20*ms)
	if len(again) != 2 || again[0].Part != 1 || again[0].Seq != seq {
		t.Fatalf("after Sent(1): %d parts starting at part %d seq %d; want parts 1-2 of seq %d", len(again), again[0].Part, again[0].Seq, seq)
	}
	s.Sent("b", 2)
	// All sent, not yet acknowledged: deltas build on the full state
	// meanwhile instead of starting it again.
	s.Tick()
	next := s.DeltaFor("b", t0+40*ms)
	if len(next) != 1 || next[0].Full || next[0].Basis != seq {
		t.Fatalf("delta while the full state is in flight = %+v; want a normal delta on basis %d", next, seq)
	}
	// The receiver never completes it (a part was lost): once it lags
	// DeltaIntervals behind, the sender starts over with a full state.
	for range cfg.DeltaIntervals {
		s.Tick()
	}
	if next = s.DeltaFor("b", t0+sec); !next[0].Full {
		t.Fatalf("delta after an unacknowledged in-flight full state = %+v; want full", next[0])
	}
	s.Sent("b", len(next))
	s.Ack("b", next[0].Seq)
	s.Tick()
	if next = s.DeltaFor("b", t0+sec); next[0].Full || next[0].Basis != next[0].Seq-1 {
		t.Fatalf("delta after acknowledgement = %+v; want normal on the acknowledged seq", next[0])
	}
}

func TestAckForNeedsEveryPartAndBasis(t *testing.T) {
	from := idB
	part := func(seq, basis uint64, p, n int) Delta {
		d := normal(from, t0)
		d.Seq, d.Basis, d.Part, d.Parts = seq, basis, p, n
		if basis == 0 {
			d.Full = true
		}
		return d
	}
	steps := []struct {
		d    Delta
		want uint64
	}{
		{part(10, 0, 0, 2), 0},  // first part of a full state
		{part(10, 0, 1, 2), 10}, // complete
		{part(11, 10, 0, 1), 11},
		{part(13, 12, 0, 1), 11}, // built on 12, which never arrived
		{part(12, 11, 0, 1), 12},
		{part(13, 12, 0, 1), 13}, // re-sent: now it completes
		{part(11, 10, 0, 1), 13}, // old, duplicated: no regression
		{part(15, 13, 0, 3), 13},
		{part(15, 13, 2, 3), 13}, // part 1 missing
		{part(15, 13, 1, 3), 13},
		{part(16, 0, 0, 1), 16}, // a full state always completes
	}
	s := mustStore(t, idA, Config{})
	for i, st := range steps {
		mustMerge(t, s, st.d, t0)
		if got := s.AckFor("b"); got != st.want {
			t.Errorf("step %d: after seq %d basis %d part %d/%d: AckFor = %d, want %d", i, st.d.Seq, st.d.Basis, st.d.Part, st.d.Parts, got, st.want)
		}
	}
	// A new incarnation of b starts from nothing.
	from = OriginID{"b", 0xb2}
	mustMerge(t, s, part(3, 2, 0, 1), t0)
	if got := s.AckFor("b"); got != 0 {
		t.Errorf("AckFor after b restarted = %d, want 0", got)
	}
}

func TestFullStateLeavesOutThePeersOwnOrigin(t *testing.T) {
	s := ownStore(t, Config{}, 1)
	e := slotOf(t0)
	mustMerge(t, s, normal(idB, t0, ent("x", e, 1, 1)), t0)
	mustMerge(t, s, normal(idC, t0, ent("x", e, 2, 2)), t0)
	s.Tick()
	for _, d := range s.DeltaFor("b", t0) {
		for _, o := range d.Origins {
			if o.ID == idB {
				t.Errorf("full state for b carries b's own origin")
			}
		}
	}
}

func TestConfigValidate(t *testing.T) {
	good := []Config{{}, {Grace: time.Millisecond, DeltaIntervals: 1, MaxEntriesPerDelta: 1, MaxDeltaBytes: MinMaxDeltaBytes, ForgetAfter: time.Second}}
	for i, c := range good {
		if err := c.Validate(); err != nil {
			t.Errorf("step %d: Validate(%+v) = %v, want nil", i, c, err)
		}
	}
	bad := []struct {
		c        Config
		mentions string
	}{
		{Config{Grace: -1}, "Grace -1ns"},
		{Config{Grace: 11 * time.Second}, "Grace 11s"},
		{Config{DeltaIntervals: -1}, "DeltaIntervals -1"},
		{Config{MaxEntriesPerDelta: MaxDeltaEntries + 1}, "MaxEntriesPerDelta 100001"},
		{Config{MaxDeltaBytes: 100}, "MaxDeltaBytes 100"},
		{Config{MaxDeltaBytes: 1 << 20}, "MaxDeltaBytes 1048576"},
		{Config{ForgetAfter: time.Millisecond}, "ForgetAfter 1ms"},
	}
	for i, tt := range bad {
		err := tt.c.Validate()
		if !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), tt.mentions) {
			t.Errorf("step %d: Validate(%+v) = %v; want ErrInvalidConfig mentioning %q", i, tt.c, err, tt.mentions)
		}
		if _, err := NewStore(idA, tt.c); !errors.Is(err, ErrInvalidConfig) {
			t.Errorf("step %d: NewStore = %v; want ErrInvalidConfig", i, err)
		}
	}
	for _, id := range []OriginID{{}, {"a", 0}, {"", 1}, {"a b", 1}} {
		if _, err := NewStore(id, Config{}); !errors.Is(err, ErrInvalidOrigin) {
			t.Errorf("NewStore(%v) = %v; want ErrInvalidOrigin", id, err)
		}
	}
}

func TestRecordOwn(t *testing.T) {
	s := mustStore(t, idA, Config{})
	s.SetOwnAsOf(t0)
	e := slotOf(t0)
	for i, tt := range []struct {
		key   string
		slots []SlotCounts
	}{
		{"", []SlotCounts{{Epoch: e, Admitted: 1, Offered: 1}}},
		{"a b", []SlotCounts{{Epoch: e, Admitted: 1, Offered: 1}}},
		{"k", []SlotCounts{{Epoch: e, Admitted: 1, Offered: 1}, {Epoch: 0, Admitted: 1, Offered: 1}}},
		{"k", []SlotCounts{{Epoch: MaxEpoch + 1, Admitted: 1, Offered: 1}}},
	} {
		if err := s.RecordOwn(tt.key, tt.slots); !errors.Is(err, ErrInvalidSlot) {
			t.Errorf("step %d: RecordOwn(%q, %v) = %v; want ErrInvalidSlot", i, tt.key, tt.slots, err)
		}
	}
	if len(s.keys) != 0 {
		t.Fatalf("rejected RecordOwn calls left %d keys", len(s.keys))
	}
	// Values only grow; offered is raised to admitted; zero slots and
	// slots beyond the horizon are not stored.
	steps := []struct {
		in   SlotCounts
		want uint64
	}{
		{SlotCounts{Epoch: e, Admitted: 5, Offered: 7}, pack(5, 7)},
		{SlotCounts{Epoch: e, Admitted: 3, Offered: 9}, pack(5, 9)},
		{SlotCounts{Epoch: e, Admitted: 12, Offered: 10}, pack(12, 12)},
		{SlotCounts{Epoch: e - 1}, 0},
		{SlotCounts{Epoch: e - int64(DefaultHorizon) - 1, Admitted: 1, Offered: 1}, 0},
	}
	for i, st := range steps {
		if err := s.RecordOwn("k", []SlotCounts{st.in}); err != nil {
			t.Fatal(err)
		}
		if got := s.keys["k"].seriesOf(s.own).get(st.in.Epoch); got != st.want {
			t.Errorf("step %d: RecordOwn(%+v): slot = %s, want %s", i, st.in, fmtPacked(got), fmtPacked(st.want))
		}
	}
}

// TestOwnLogsFreedWhenStale: a key whose own state has not changed for
// DeltaIntervals intervals keeps no change log, and every delta since an
// acknowledgement still carries exactly what changed after it: the same
// entries as a reference built from every change ever recorded.
func TestOwnLogsFreedWhenStale(t *testing.T) {
	const intervals = 8
	s := mustStore(t, idA, Config{DeltaIntervals: intervals})
	type rec struct {
		seq uint64
		key string
		e   int64
		v   SlotCounts
	}
	var changes []rec
	vals := map[string]map[int64]SlotCounts{}
	now := t0
	for step := range 200 {
		now += 20 * ms
		// Keys change at different paces: key0 every tick, key1 every 5th,
		// key2 every 40th, so that key2's log goes stale between changes.
		for i, every := range []int{1, 5, 40} {
			if step%every != 0 {
				continue
			}
			key := fmt.Sprint("key", i)
			e := slotOf(now)
			if vals[key] == nil {
				vals[key] = map[int64]SlotCounts{}
			}
			v := vals[key][e]
			v.Epoch, v.Admitted, v.Offered = e, v.Admitted+1, v.Offered+2
			vals[key][e] = v
			if err := s.RecordOwn(key, []SlotCounts{v}); err != nil {
				t.Fatal(err)
			}
			changes = append(changes, rec{s.last + 1, key, e, v})
		}
		s.SetOwnAsOf(now)
		seq := s.Tick()
		n := 0
		for ks := s.head; ks != nil; ks = ks.own.next {
			n++
			if ks.own.last()+intervals <= seq {
				t.Fatalf("step %d: %s's log (last change %d) kept at interval %d", step, ks.key, ks.own.last(), seq)
			}
		}
		for _, ks := range s.keys {
			if ks.own != nil {
				n--
			}
		}
		if n != 0 {
			t.Fatalf("step %d: change list and keys with logs differ by %d", step, n)
		}
		// A delta since every basis a peer may still hold.
		for basis := seq - min(seq-s.seqBase, intervals); basis < seq; basis++ {
			got := map[string]bool{}
			for _, d := range s.buildSince(now, basis) {
				for _, en := range d.Entries {
					got[fmt.Sprint(en.Key, en.Epoch, en.Admitted, en.Offered)] = true
				}
			}
			want := map[string]bool{}
			for _, c := range changes {
				if c.seq > basis {
					cur := vals[c.key][c.e]
					want[fmt.Sprint(c.key, c.e, cur.Admitted, cur.Offered)] = true
				}
			}
			for w := range want {
				if !got[w] {
					t.Fatalf("step %d: delta since %d lacks %s; has %v", step, basis, w, got)
				}
			}
		}
	}
	if ks := s.keys["key2"]; ks.own != nil {
		t.Errorf("key2, unchanged for %d intervals, still has a log", 200-160)
	}
}

// TestReleaseDeltas: after ReleaseDeltas the store holds no normal delta,
// and the next DeltaFor builds the same one again; pending parts of a full
// state stay.
func TestReleaseDeltas(t *testing.T) {
	s := ownStore(t, Config{MaxEntriesPerDelta: 2}, 3)
	seq := s.Tick()
	full := s.DeltaFor("b", t0)
	s.Ack("c", seq)
	first := s.DeltaFor("c", t0)
	s.ReleaseDeltas()
	if len(s.cached) != 0 {
		t.Errorf("%d deltas cached after ReleaseDeltas", len(s.cached))
	}
	if again := s.DeltaFor("c", t0); fmt.Sprint(again) != fmt.Sprint(first) {
		t.Errorf("delta after ReleaseDeltas = %+v, want %+v", again, first)
	}
	if pending := s.DeltaFor("b", t0); len(full) < 2 || fmt.Sprint(pending) != fmt.Sprint(full) {
		t.Errorf("full state parts after ReleaseDeltas = %d parts, want the %d pending", len(pending), len(full))
	}
}

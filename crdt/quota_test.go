package crdt

import (
	"testing"

	"github.com/quotamesh/quotamesh/limits"
)

// TestQuotaRegister: a quota register follows its origin's latest
// announcement (a quota may fall, also within a slot), travels in normal
// deltas only when it changed, and reserves only while it is from a slot in
// the view's window.
func TestQuotaRegister(t *testing.T) {
	a := mustStore(t, idA, Config{})
	b := mustStore(t, idB, Config{})
	now := t0
	e := slotOf(now)
	ship := func(step int, wantQuotas int) {
		t.Helper()
		a.SetOwnAsOf(now)
		a.Tick()
		n := 0
		for _, d := range a.DeltaFor("b", now) {
			n += len(d.Quotas)
			mustMerge(t, b, d, now)
			b.Ack(idA.Node, 0)
			a.Ack("b", b.AckFor(idA.Node))
		}
		if n != wantQuotas {
			t.Errorf("step %d: delta carried %d quota registers, want %d", step, n, wantQuotas)
		}
	}
	view := func() View { return viewsOf(b, "k", 10, 0, now)[idA] }
	steps := []struct {
		epoch     int64
		quota     uint32
		advance   int64 // slots of time before shipping
		wantShip  int
		wantQuota int64
	}{
		{e, 500, 0, 1, 500},     // first announcement (part of the full state)
		{e, 400, 0, 1, 400},     // lower within the slot: the latest wins
		{e, 600, 0, 1, 600},     // higher within the slot
		{e + 1, 100, 1, 1, 100}, // a later slot: quotas can fall
		{e + 1, 100, 10, 1, 0},  // renewed, but ten slots on the register is outside the window
	}
	for i, st := range steps {
		if err := a.RecordOwnQuota("k", st.epoch, st.quota); err != nil {
			t.Fatalf("step %d: RecordOwnQuota = %v", i, err)
		}
		now += st.advance * int64(limits.Slot)
		ship(i, st.wantShip)
		if got := view().Quota; got != st.wantQuota {
			t.Errorf("step %d: view quota = %d, want %d", i, got, st.wantQuota)
		}
	}
	if err := a.RecordOwnQuota("bad key", e, 1); err == nil {
		t.Error("RecordOwnQuota(bad key) = nil, want an error")
	}
	if err := a.RecordOwnQuota("k", 0, 1); err == nil {
		t.Error("RecordOwnQuota(epoch 0) = nil, want an error")
	}
	// GC forgets a register older than the horizon.
	now += 2 * int64(DefaultHorizon) * int64(limits.Slot)
	a.SetOwnAsOf(now)
	b.GC(now)
	if ks := b.keys["k"]; ks != nil {
		for _, sr := range ks.series {
			if sr.qEpoch != 0 {
				t.Errorf("after GC far past the horizon the register is still (%d, %d)", sr.qEpoch, sr.quota)
			}
		}
	}
}

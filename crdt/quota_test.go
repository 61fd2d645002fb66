package crdt

import (
	"testing"

	"github.com/quotamesh/quotamesh/limits"
)

// TestQuotaRegister: a quota register follows its origin's latest
// announcement (a quota may fall, also within a slot), travels in normal
// deltas only when it changed, and holds however old it is until its
// origin replaces it; a withdrawal (a register of zero) lets GC drop it.
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
		{e, 500, 0, 1, 500},      // first announcement (part of the full state)
		{e, 400, 0, 1, 400},      // lower within the slot: the latest wins
		{e, 600, 0, 1, 600},      // higher within the slot
		{e + 1, 100, 1, 1, 100},  // a later slot: quotas can fall
		{e + 1, 100, 30, 1, 100}, // announced again, thirty slots later: still held
		{e + 40, 0, 0, 1, 0},     // withdrawn
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
	// GC drops a withdrawn register once no slot is left.
	now += 2 * int64(DefaultHorizon) * int64(limits.Slot)
	a.SetOwnAsOf(now)
	b.GC(now)
	if ks := b.keys["k"]; ks != nil {
		t.Errorf("after GC the key holds %d series; the withdrawn register should be gone", len(ks.series))
	}
}

// TestHeldRegisterOutlivesTheHorizon: a register that holds room stays,
// through GC, however long its origin does not change it.
func TestHeldRegisterOutlivesTheHorizon(t *testing.T) {
	a := mustStore(t, idA, Config{})
	b := mustStore(t, idB, Config{})
	now := t0
	if err := a.RecordOwnQuota("k", slotOf(now), 300); err != nil {
		t.Fatal(err)
	}
	a.SetOwnAsOf(now)
	a.Tick()
	for _, d := range a.DeltaFor("b", now) {
		mustMerge(t, b, d, now)
	}
	for range 5 {
		now += 2 * int64(DefaultHorizon) * int64(limits.Slot)
		a.SetOwnAsOf(now)
		a.Tick()
		for _, d := range a.DeltaFor("b", now) {
			mustMerge(t, b, d, now)
		}
		b.GC(now)
	}
	if v := viewsOf(b, "k", 10, 0, now)[idA]; v.Quota != 300 || !v.Announced {
		t.Errorf("view long after the announcement = %+v, want the register of 300", v)
	}
}

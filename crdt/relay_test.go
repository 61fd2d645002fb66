package crdt

import "testing"

// TestRelayPassesOnAThirdOrigin: b relays c's slots, state and quota
// register to a, which cannot hear c; the relay never moves a's
// acknowledgement of b, and once sent, the next relay carries only the
// slots that may still change.
func TestRelayPassesOnAThirdOrigin(t *testing.T) {
	a, b, c := mustStore(t, idA, Config{}), mustStore(t, idB, Config{}), mustStore(t, idC, Config{})
	e := t0 / slot
	for i := range int64(5) {
		if err := c.RecordOwn("k", []SlotCounts{{Epoch: e + i, Admitted: 10, Offered: 20}}); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.RecordOwnQuota("k", e+4, 77); err != nil {
		t.Fatal(err)
	}
	c.SetOwnAsOf(t0 + 4*slot + 50*ms)
	c.Tick()
	send := func(from, to *Store, peer string, now int64) {
		parts := from.DeltaFor(peer, now)
		for _, d := range parts {
			mustMerge(t, to, d, now)
		}
		from.Sent(peer, len(parts))
	}
	send(c, b, "b", t0+5*slot)
	// a and b know each other: a acknowledges b's interval.
	b.Tick()
	send(b, a, "a", t0+5*slot)
	ack := a.AckFor("b")

	parts := b.RelayFor("a", t0+5*slot, []OriginID{idC, idA, {"x", 1}})
	if len(parts) != 1 || !parts[0].IsRelay() {
		t.Fatalf("RelayFor = %+v, want one relay part", parts)
	}
	if err := parts[0].Validate(); err != nil {
		t.Fatalf("relay does not validate: %v", err)
	}
	if got := len(parts[0].Entries); got != 5 {
		t.Errorf("first relay carries %d entries, want all 5 of c's slots", got)
	}
	for _, o := range parts[0].Origins {
		if o.ID == idA || o.ID.Node == "x" {
			t.Errorf("relay carries %v: the receiver's own and unknown origins are skipped", o.ID)
		}
	}
	mustMerge(t, a, parts[0], t0+5*slot+ms)
	b.RelaySent("a")
	if got := a.AckFor("b"); got != ack {
		t.Errorf("a's acknowledgement of b after a relay: %d, want %d as before", got, ack)
	}
	v, ok := viewsOf(a, "k", 10, 5, t0+5*slot+ms)[idC]
	if !ok || v.Admitted != 50 || v.Quota != 77 {
		t.Fatalf("a's view of c after the relay: %+v (present %v), want 50 admitted and quota 77", v, ok)
	}
	var relayed OriginInfo
	for _, o := range a.Origins() {
		if o.ID == idC {
			relayed = o
		}
	}
	if !relayed.Relayed || relayed.HeardAt < t0+5*slot-100*ms {
		t.Errorf("a's info of c: %+v, want relayed and heard recently", relayed)
	}

	// Later relays start at the slot before c's asOf slot at the last one.
	if err := c.RecordOwn("k", []SlotCounts{{Epoch: e + 5, Admitted: 3, Offered: 3}}); err != nil {
		t.Fatal(err)
	}
	c.SetOwnAsOf(t0 + 5*slot + 40*ms)
	c.Tick()
	send(c, b, "b", t0+6*slot)
	parts = b.RelayFor("a", t0+6*slot, []OriginID{idC})
	if len(parts) != 1 {
		t.Fatalf("second RelayFor = %d parts, want 1", len(parts))
	}
	for _, en := range parts[0].Entries {
		if en.Epoch < e+3 {
			t.Errorf("second relay re-sends slot %d, before %d", en.Epoch, e+3)
		}
	}
	mustMerge(t, a, parts[0], t0+6*slot)
	if v := viewsOf(a, "k", 10, 5, t0+6*slot)[idC]; v.Admitted != 53 {
		t.Errorf("a's view of c after the second relay: %+v, want 53 admitted", v)
	}
	// Nothing to relay: nil.
	if parts := b.RelayFor("a", t0+6*slot, []OriginID{idB}); parts != nil {
		t.Errorf("relaying only the relayer's own origin = %+v, want nil", parts)
	}
}

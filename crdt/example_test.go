package crdt_test

import (
	"fmt"
	"time"

	"github.com/quotamesh/quotamesh/crdt"
	"github.com/quotamesh/quotamesh/limits"
)

// Two nodes' stores: a records what its window admitted, ships a delta, and
// b reads a's count from it. Merging the same delta again changes nothing.
func Example() {
	a, err := crdt.NewStore(crdt.OriginID{Node: "a", Incarnation: 1}, crdt.Config{})
	if err != nil {
		panic(err)
	}
	b, err := crdt.NewStore(crdt.OriginID{Node: "b", Incarnation: 1}, crdt.Config{})
	if err != nil {
		panic(err)
	}
	now := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano()
	slot := now / int64(limits.Slot)

	// a's window of orders.create admitted 7 of 9 requests in the open slot.
	if err := a.RecordOwn("orders.create", []crdt.SlotCounts{{Epoch: slot, Admitted: 7, Offered: 9}}); err != nil {
		panic(err)
	}
	a.SetOwnAsOf(now)
	a.Tick()
	deltas := a.DeltaFor("b", now)
	a.Sent("b", len(deltas))
	for _, d := range deltas {
		st, err := b.Merge(d, now)
		fmt.Printf("full %v: %d changed, %v\n", d.Full, st.Changed, err)
		st, err = b.Merge(d, now)
		fmt.Printf("again: %d changed, %d unchanged, %v\n", st.Changed, st.Unchanged, err)
	}
	a.Ack("b", b.AckFor("a"))

	// b's view of a's 1 s window (10 slots) of the key.
	b.Views("orders.create", 10, 0, now, func(o crdt.OriginInfo, v crdt.View) {
		fmt.Printf("%v admitted %d\n", o.ID, v.Admitted)
	})
	// Output:
	// full true: 1 changed, <nil>
	// again: 0 changed, 1 unchanged, <nil>
	// a#1 admitted 7
}

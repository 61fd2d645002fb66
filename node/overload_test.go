package node

import (
	"testing"
	"time"

	"github.com/quotamesh/quotamesh/internal/wire"
)

// TestOverWait steps the shedding rule through fixed instants: a batch is
// shed once it waited more than the bound in the node, the time the stream
// stalled on its client not counted; never with the rule off, never on a
// clock going backwards.
func TestOverWait(t *testing.T) {
	const ms = int64(time.Millisecond)
	const bound = 25 * time.Millisecond
	for i, s := range []struct {
		readAt, stalledAtRead, now, stalledNow int64
		max                                    time.Duration
		want                                   bool
	}{
		{0, 0, 0, 0, bound, false},                         // decided as soon as read
		{0, 0, 25 * ms, 0, bound, false},                   // waited exactly the bound
		{0, 0, 25*ms + 1, 0, bound, true},                  // waited past it
		{10 * ms, 0, 100 * ms, 0, bound, true},             // long behind other batches
		{10 * ms, 5 * ms, 100 * ms, 80 * ms, bound, false}, // 75 ms of the 90 waiting for the client to read
		{10 * ms, 5 * ms, 100 * ms, 60 * ms, bound, true},  // 55 ms of the 90: 35 were the node's
		{100 * ms, 0, 10 * ms, 0, bound, false},            // the clock went backwards
		{0, 0, time.Hour.Nanoseconds(), 0, 0, false},       // off (a zero bound)
		{0, 0, time.Hour.Nanoseconds(), 0, -1, false},      // off (negative)
	} {
		if got := overWait(s.readAt, s.stalledAtRead, s.now, s.stalledNow, s.max); got != s.want {
			t.Errorf("step %d: overWait(%d, %d, %d, %d, %v) = %v, want %v", i, s.readAt, s.stalledAtRead, s.now, s.stalledNow, s.max, got, s.want)
		}
	}
}

// TestSheddable: requests that carry counts (a settlement, demand) are
// always decided.
func TestSheddable(t *testing.T) {
	for i, s := range []struct {
		r    wire.ClientRequest
		want bool
	}{
		{wire.ClientRequest{Op: wire.OpDecide, Key: "k", N: 1}, true},
		{wire.ClientRequest{Op: wire.OpDecide, Key: "k", N: 1, Want: 10}, true},
		{wire.ClientRequest{Op: wire.OpLease, Key: "k", Want: 10}, true},
		{wire.ClientRequest{Op: wire.OpDecide, Key: "k", N: 1, SettleID: 3, SettleUsed: 2}, false},
		{wire.ClientRequest{Op: wire.OpLease, Key: "k", SettleID: 3}, false},
		{wire.ClientRequest{Op: wire.OpLease, Key: "k", Offered: 4}, false},
	} {
		if got := sheddable(&s.r); got != s.want {
			t.Errorf("step %d: sheddable(%+v) = %v, want %v", i, s.r, got, s.want)
		}
	}
}

// TestOverloadedAnswers: a node answers "overloaded" only to batches that
// waited past ClientMaxWait behind others. Batches sent one at a time,
// each after the previous reply, never wait: none is shed (a normal load
// gets no "overloaded" answer). Batches written all at once, far more
// than a millisecond of decisions, wait behind each other: with a 1 ms
// bound the late ones are answered CodeOverloaded at once, save requests
// that settle a lease, and the metric counts every one.
func TestOverloadedAnswers(t *testing.T) {
	n1, adm := oneNodeWithRule(t, "u:*", "1000000/s", func(cfg *Config) { cfg.ClientMaxWait = time.Millisecond })
	overloaded := func() float64 {
		return metricValue(t, n1.gatherer, metricClientRequests, map[string]string{"op": "decide", "code": "overloaded"})
	}
	id := uint64(100)
	items := func(k int, settle bool) []wire.ClientRequest {
		out := make([]wire.ClientRequest, k)
		for i := range out {
			id++
			out[i] = wire.ClientRequest{ID: id, Op: wire.OpDecide, Key: "u:" + string(rune('a'+i%26)), N: 1}
			if settle && i == 0 {
				out[i].SettleID, out[i].SettleUsed = 1<<40, 1 // a lease the node never granted: settled as nothing
			}
		}
		return out
	}
	for range 50 {
		for _, r := range adm.batch(items(10, false)...) {
			if r.Code != wire.CodeOK {
				t.Fatalf("one batch at a time: reply %+v; want OK", r)
			}
		}
	}
	if v := overloaded(); v != 0 {
		t.Fatalf("one batch at a time: %v answered overloaded; want 0", v)
	}

	const batches, per = 40, 2000
	for range batches {
		adm.send(&wire.ClientBatch{Items: items(per, true)})
	}
	shed := 0
	for b := range batches {
		r, ok := adm.recv().(*wire.ClientReplies)
		if !ok || len(r.Items) != per {
			t.Fatalf("batch %d: no replies of %d", b, per)
		}
		for i, rep := range r.Items {
			switch {
			case rep.Code == wire.CodeOverloaded && i == 0:
				t.Fatalf("batch %d: the settlement was answered overloaded", b)
			case rep.Code == wire.CodeOverloaded:
				shed++
				if rep.Allowed || rep.Message != "" {
					t.Fatalf("batch %d: overloaded reply %+v; want no decision and no message", b, rep)
				}
			case rep.Code != wire.CodeOK:
				t.Fatalf("batch %d: reply %+v; want OK or overloaded", b, rep)
			}
		}
	}
	if shed == 0 {
		t.Fatalf("%d batches of %d written at once, 1 ms bound: none answered overloaded", batches, per)
	}
	if v := overloaded(); v != float64(shed) {
		t.Errorf("metric counts %v overloaded answers; the replies had %d", v, shed)
	}
}

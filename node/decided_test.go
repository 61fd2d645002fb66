package node

import (
	"testing"

	"github.com/quotamesh/quotamesh/internal/wire"
)

// TestRepliesCarryDecisionTimes: on the current client protocol a reply to
// a decision carries the node's time of it (the time its window counted
// the admission), between the request and the reply on the node's clock;
// a lease request, a refused request and every reply on the older
// protocol (quotamesh-client/2) carry none.
func TestRepliesCarryDecisionTimes(t *testing.T) {
	n1, adm := oneNodeWithRule(t, "api.*", "3/s")
	for i, tc := range []struct {
		req     wire.ClientRequest
		decided bool
	}{
		{wire.ClientRequest{ID: 10, Op: wire.OpDecide, Key: "api.x", N: 1}, true},
		{wire.ClientRequest{ID: 11, Op: wire.OpDecide, Key: "api.x", N: 2, Want: 1}, true},
		{wire.ClientRequest{ID: 12, Op: wire.OpDecide, Key: "api.x", N: 1}, true}, // denied: decided all the same
		{wire.ClientRequest{ID: 13, Op: wire.OpDecide, Key: "free", N: 1}, true},  // no rule: the unknown-key policy decided
		{wire.ClientRequest{ID: 14, Op: wire.OpLease, Key: "api.y", Want: 1}, false},
		{wire.ClientRequest{ID: 15, Op: wire.OpDecide, Key: "api.x", N: 0}, false},
		{wire.ClientRequest{ID: 16, Op: wire.OpDecide, Key: "api x", N: 1}, false},
	} {
		before := n1.now()
		r := adm.batch(tc.req)[0]
		after := n1.now()
		switch {
		case !tc.decided && r.Decided != 0:
			t.Errorf("step %d: %+v carries decision time %d; want none", i, r, r.Decided)
		case tc.decided && (r.Decided < before || r.Decided > after):
			t.Errorf("step %d: %+v: decision time %d outside the node's %d to %d", i, r, r.Decided, before, after)
		}
	}
	// The older protocol: the same answers without the time, so its SDKs
	// read every reply.
	for _, r := range n1.answerBatch(1, false, []wire.ClientRequest{{ID: 20, Op: wire.OpDecide, Key: "api.z", N: 1}}, false, nil) {
		if r.Code != wire.CodeOK || !r.Allowed || r.Decided != 0 {
			t.Errorf("reply on quotamesh-client/2: %+v; want allowed, no decision time", r)
		}
	}
}

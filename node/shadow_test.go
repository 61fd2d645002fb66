package node

import (
	"testing"
	"time"

	"github.com/quotamesh/quotamesh/internal/wire"
	"github.com/quotamesh/quotamesh/limits"
)

// TestShadowRule: a shadow rule's keys are decided and counted as under an
// enforcing rule, but nothing is denied: not embedded (AllowN, Admit), not
// a client's decision, not a client's lease; what would have been denied
// shows in the metric and the status. Turning the rule into an enforcing
// one through Raft denies again.
func TestShadowRule(t *testing.T) {
	c := newCluster(t, 1)
	c.startAll()
	c.waitReady(10 * time.Second)
	n1 := c.nodes["n1"]
	ctx := ctxT(t, 20*time.Second)
	shadow := limits.Rule{Pattern: "s:*", Rate: limits.MustParseRate("10/s"), Shadow: true}
	if _, err := n1.SetLimit(ctx, shadow); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "the shadow rule applied", func() string {
		if r, ok := n1.store.Table().Get("s:*"); !ok || !r.Shadow {
			return "not yet"
		}
		return ""
	})

	var admitted int
	for i := range 30 {
		d, err := n1.AllowN(ctx, "s:a", 1)
		if err != nil || !d.Allowed {
			t.Fatalf("step %d: AllowN(s:a, 1) = %+v, %v; want allowed (shadow)", i, d, err)
		}
		if d.Limit != shadow.Rate {
			t.Errorf("step %d: limit %v, want %v", i, d.Limit, shadow.Rate)
		}
		admitted++
	}
	if !n1.Admit("s:a") {
		t.Error("Admit(s:a) under a shadow rule = false")
	}
	// Above the whole limit: still let through.
	if d, err := n1.AllowN(ctx, "s:a", 50); err != nil || !d.Allowed {
		t.Errorf("AllowN(s:a, 50) = %+v, %v; want allowed", d, err)
	}
	// Counted as under the limit: the window holds the admissions the
	// rule allows, no more.
	w, _, ok := n1.eng.Registry().Lookup("s:a")
	if !ok || w.Total() > 10 {
		t.Errorf("window of s:a: %v, total %d; want at most 10 counted", ok, w.Total())
	}

	cl := dialRaw(t, c, n1, "app")
	reps := cl.batch(wire.ClientRequest{ID: 1, Op: wire.OpDecide, Key: "s:a", N: 3},
		wire.ClientRequest{ID: 2, Op: wire.OpLease, Key: "s:a", Want: 5})
	if r := reps[0]; r.Code != wire.CodeOK || !r.Allowed {
		t.Errorf("client decision under a shadow rule: %+v; want allowed", r)
	}
	if r := reps[1]; r.Code != wire.CodeOK || r.Granted != 1 || r.TTL == 0 || r.Remaining <= 0 {
		// MaxLeaseFraction 0.1 of 10/s caps a lease at 1 token.
		t.Errorf("client lease under a shadow rule: %+v; want 1 token granted with room left", r)
	}

	denied := metricValue(t, n1.gatherer, metricShadowDenied, map[string]string{"rule": "s:*"})
	// 30+1 embedded, minus the 10 the window admitted, plus 50, 3, and the
	// lease's 1.
	if want := float64(30 + 1 - 10 + 50 + 3 + 1); denied != want {
		t.Errorf("%s{rule=s:*} = %v, want %v", metricShadowDenied, denied, want)
	}
	st := n1.Status(0)
	if len(st.Shadow) != 1 || st.Shadow[0].Pattern != "s:*" || float64(st.Shadow[0].WouldDeny) != denied {
		t.Errorf("status shadow = %+v; want s:* with %v", st.Shadow, denied)
	}

	// Enforcing again: denied, and the shadow series is gone.
	if _, err := n1.SetLimit(ctx, limits.Rule{Pattern: "s:*", Rate: shadow.Rate}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "the rule enforcing", func() string {
		if d, _ := n1.AllowN(ctx, "s:a", 1); d.Allowed {
			return "still allowed"
		}
		return ""
	})
	if st := n1.Status(0); len(st.Shadow) != 0 {
		t.Errorf("status shadow after the rule enforces: %+v", st.Shadow)
	}
}

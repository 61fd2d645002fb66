package client

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/quotamesh/quotamesh"
	"github.com/quotamesh/quotamesh/internal/route"
	"github.com/quotamesh/quotamesh/internal/wire"
	"github.com/quotamesh/quotamesh/limits"
)

func TestStrictDecisions(t *testing.T) {
	ca := newTestCA(t)
	srv := newTestServer(t, ca, "n1", rule("orders", "5/s"), rule("user:*", "2/s"))
	c := dialT(t, ca, []string{srv.addr()}, WithStrict())
	ctx := ctxT(t, 5*time.Second)

	steps := []struct {
		key     string
		n       int64
		allowed bool
		remain  int64
	}{
		{"orders", 1, true, 4},
		{"orders", 3, true, 1},
		{"orders", 2, false, 0}, // a denial has no Remaining (quotamesh.Decision)
		{"orders", 1, true, 0},
		{"orders", 1, false, 0},
		{"user:7", 2, true, 0},
		{"user:8", 1, true, 1},
	}
	for i, s := range steps {
		d, err := c.AllowN(ctx, s.key, s.n)
		if err != nil {
			t.Fatalf("step %d: AllowN(%q, %d): %v", i, s.key, s.n, err)
		}
		if d.Allowed != s.allowed || d.Remaining != s.remain {
			t.Errorf("step %d: AllowN(%q, %d) = allowed %v remaining %d, want %v %d", i, s.key, s.n, d.Allowed, d.Remaining, s.allowed, s.remain)
		}
		if !d.Allowed && d.RetryAfter <= 0 {
			t.Errorf("step %d: a denial with RetryAfter %v", i, d.RetryAfter)
		}
		if d.Limit != limits.MustParseRate(map[bool]string{true: "5/s", false: "2/s"}[s.key == "orders"]) {
			t.Errorf("step %d: Limit %v", i, d.Limit)
		}
	}
	d, err := c.Allow(ctx, "unknown")
	if err != nil || !d.Allowed || !d.Unlimited {
		t.Errorf("Allow(unknown) = %+v, %v; want allowed, unlimited", d, err)
	}
	if _, err := c.AllowN(ctx, "orders", 6); !errors.Is(err, quotamesh.ErrExceedsLimit) {
		t.Errorf("AllowN(orders, 6) above the limit: %v, want ErrExceedsLimit", err)
	}
	if got := srv.decides.Load(); got != int64(len(steps)+2) {
		t.Errorf("the node decided %d requests, want %d (one round trip each)", got, len(steps)+2)
	}
	if srv.leases.Load() != 0 {
		t.Errorf("strict mode asked for %d leases", srv.leases.Load())
	}
}

func TestStrictPipelinesConcurrentCallers(t *testing.T) {
	ca := newTestCA(t)
	srv := newTestServer(t, ca, "n1", rule("k", "100000/s"))
	c := dialT(t, ca, []string{srv.addr()}, WithStrict())
	ctx := ctxT(t, 10*time.Second)
	const workers, each = 32, 100
	var allowed atomic.Int64
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for range each {
				d, err := c.Allow(ctx, "k")
				if err != nil {
					t.Error(err)
					return
				}
				if d.Allowed {
					allowed.Add(1)
				}
			}
		})
	}
	wg.Wait()
	if allowed.Load() != workers*each {
		t.Errorf("allowed %d, want %d", allowed.Load(), workers*each)
	}
	b, r := srv.batches.Load(), srv.requests.Load()
	t.Logf("%d requests in %d frames (%.1f per frame)", r, b, float64(r)/float64(b))
	if b >= r {
		t.Errorf("%d frames for %d requests: concurrent callers are not batched", b, r)
	}
}

func TestBadInputFailsBeforeTheNetwork(t *testing.T) {
	ca := newTestCA(t)
	srv := newTestServer(t, ca, "n1", rule("k", "10/s"))
	for _, strict := range []bool{false, true} {
		var opts []Option
		if strict {
			opts = append(opts, WithStrict())
		}
		c := dialT(t, ca, []string{srv.addr()}, opts...)
		ctx := ctxT(t, 5*time.Second)
		before := srv.requests.Load()
		cases := []struct {
			key  string
			n    int64
			want error
		}{
			{"", 1, limits.ErrInvalidKey},
			{"has space", 1, limits.ErrInvalidKey},
			{"bad\x00byte", 1, limits.ErrInvalidKey},
			{strings.Repeat("k", limits.MaxKeyLen+1), 1, limits.ErrInvalidKey},
			{"k", 0, quotamesh.ErrInvalidN},
			{"k", -3, quotamesh.ErrInvalidN},
			{"", 0, quotamesh.ErrInvalidN},
		}
		for _, tc := range cases {
			d, err := c.AllowN(ctx, tc.key, tc.n)
			if !errors.Is(err, tc.want) {
				t.Errorf("strict=%v: AllowN(%q, %d) = %v, want %v", strict, clip(tc.key), tc.n, err, tc.want)
			}
			if d.Allowed {
				t.Errorf("strict=%v: AllowN(%q, %d) allowed", strict, clip(tc.key), tc.n)
			}
		}
		if err := c.Close(); err != nil {
			t.Fatal(err)
		}
		for _, tc := range []struct {
			key string
			n   int64
		}{{"k", 1}, {"fresh", 1}} {
			if _, err := c.AllowN(ctx, tc.key, tc.n); !errors.Is(err, quotamesh.ErrClosed) {
				t.Errorf("strict=%v: AllowN(%q) after Close = %v, want ErrClosed", strict, tc.key, err)
			}
		}
		if _, err := c.ListLimits(ctx); !errors.Is(err, quotamesh.ErrClosed) {
			t.Errorf("ListLimits after Close = %v, want ErrClosed", err)
		}
		if got := srv.requests.Load(); got != before {
			t.Errorf("strict=%v: bad input and closed calls sent %d requests", strict, got-before)
		}
	}
}

func TestDialErrors(t *testing.T) {
	ca := newTestCA(t)
	ctx := ctxT(t, 5*time.Second)
	if _, err := Dial(ctx, nil, ca.opts(t)...); !errors.Is(err, ErrInvalidConfig) {
		t.Errorf("Dial without addresses = %v, want ErrInvalidConfig", err)
	}
	if _, err := Dial(ctx, []string{"127.0.0.1:1"}); !errors.Is(err, ErrInvalidConfig) {
		t.Errorf("Dial without a CA = %v, want ErrInvalidConfig", err)
	}
	for _, o := range []Option{WithLeaseTTL(0), WithRequestTimeout(0), WithMaxKeys(-1), WithMaxInFlight(0), WithIdleTimeout(time.Millisecond)} {
		if _, err := Dial(ctx, []string{"127.0.0.1:1"}, ca.opts(t, o)...); !errors.Is(err, ErrInvalidConfig) {
			t.Errorf("Dial with a bad option = %v, want ErrInvalidConfig", err)
		}
	}
	// Nothing listens: unavailable within the dial timeout.
	start := time.Now()
	_, err := Dial(ctx, []string{"127.0.0.1:9", "127.0.0.1:19"}, ca.opts(t, WithDialTimeout(200*time.Millisecond))...)
	if !errors.Is(err, quotamesh.ErrUnavailable) {
		t.Errorf("Dial to no node = %v, want ErrUnavailable", err)
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("Dial to no node took %v with a 200ms dial timeout", took)
	}
	// A node of another cluster is refused at once, as a certificate
	// problem.
	other := newTestServer(t, newTestCA(t), "x1")
	start = time.Now()
	if _, err := Dial(ctx, []string{other.addr()}, ca.opts(t, WithDialTimeout(5*time.Second))...); !errors.Is(err, ErrCertificate) {
		t.Errorf("Dial to a node of another CA = %v, want ErrCertificate", err)
	}
	if took := time.Since(start); took > time.Second {
		t.Errorf("Dial to a node of another CA took %v; want a refusal at once", took)
	}
}

func TestContextDeadlines(t *testing.T) {
	ca := newTestCA(t)
	srv := newTestServer(t, ca, "n1", rule("k", "100/s"))
	for _, strict := range []bool{true, false} {
		var opts []Option
		if strict {
			opts = append(opts, WithStrict())
		}
		c := dialT(t, ca, []string{srv.addr()}, append(opts, WithRequestTimeout(2*time.Second))...)
		srv.mute.Store(true)
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		start := time.Now()
		_, err := c.Allow(ctx, "k")
		took := time.Since(start)
		cancel()
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("strict=%v: Allow past its deadline = %v, want DeadlineExceeded", strict, err)
		}
		if took > 500*time.Millisecond {
			t.Errorf("strict=%v: Allow with a 50ms deadline took %v", strict, took)
		}
		// A cancelled context, too.
		ctx, cancel = context.WithCancel(context.Background())
		go func() { time.Sleep(20 * time.Millisecond); cancel() }()
		if _, err := c.Allow(ctx, "k2"); !errors.Is(err, context.Canceled) {
			t.Errorf("strict=%v: Allow cancelled = %v, want Canceled", strict, err)
		}
		// The request timeout bounds a call whose context has no deadline.
		c2 := dialT(t, ca, []string{srv.addr()}, append(opts, WithRequestTimeout(100*time.Millisecond))...)
		start = time.Now()
		if _, err := c2.Allow(context.Background(), "k3"); !errors.Is(err, quotamesh.ErrUnavailable) {
			t.Errorf("strict=%v: Allow with no reply = %v, want ErrUnavailable", strict, err)
		}
		if took := time.Since(start); took > time.Second {
			t.Errorf("strict=%v: a 100ms request timeout took %v", strict, took)
		}
		srv.mute.Store(false)
		// Late replies are dropped; the client still works.
		ctx5 := ctxT(t, 5*time.Second)
		if d, err := c.Allow(ctx5, "k4"); err != nil || !d.Allowed {
			t.Errorf("strict=%v: Allow after late replies = %+v, %v", strict, d, err)
		}
	}
}

func TestCloseSemantics(t *testing.T) {
	ca := newTestCA(t)
	srv := newTestServer(t, ca, "n1", rule("k", "1000/s"))
	c := dialT(t, ca, []string{srv.addr()}, WithStrict(), WithRequestTimeout(5*time.Second))
	srv.mute.Store(true)
	errc := make(chan error, 4)
	for range 4 {
		go func() {
			_, err := c.Allow(context.Background(), "k")
			errc <- err
		}()
	}
	time.Sleep(50 * time.Millisecond)
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	for range 4 {
		select {
		case err := <-errc:
			if !errors.Is(err, quotamesh.ErrClosed) {
				t.Errorf("a call in flight at Close = %v, want ErrClosed", err)
			}
		case <-time.After(2 * time.Second):
			t.Fatal("a call in flight at Close did not return")
		}
	}
	if err := c.Close(); err != nil {
		t.Errorf("second Close = %v", err)
	}
	if c.Node() != "" {
		t.Errorf("Node after Close = %q", c.Node())
	}
}

func TestShuttingDownNodeMovesCallsElsewhere(t *testing.T) {
	ca := newTestCA(t)
	a := newTestServer(t, ca, "a", rule("k", "1000/s"))
	b := newTestServer(t, ca, "b", rule("k", "1000/s"))
	cluster(a, b)
	c := dialT(t, ca, []string{a.addr(), b.addr()}, WithStrict())
	servers := map[string]*testServer{"a": a, "b": b}
	home, _ := route.New("a", "b").Home("k")
	first, other := servers[home], servers[map[string]string{"a": "b", "b": "a"}[home]]
	first.drain.Store(true)
	d, err := c.Allow(ctxT(t, 5*time.Second), "k")
	if err != nil || !d.Allowed {
		t.Fatalf("Allow while the node drains = %+v, %v", d, err)
	}
	if other.decided.Load() != 1 {
		t.Errorf("the call was not decided by %s after %s said it is shutting down", other.id, first.id)
	}
	if c.Stats().Failovers < 1 {
		t.Errorf("no failover counted")
	}
}

func TestRepliesMapToSentinels(t *testing.T) {
	for _, tc := range []struct {
		code wire.Code
		want error
	}{
		{wire.CodeInvalidKey, limits.ErrInvalidKey},
		{wire.CodeInvalidN, quotamesh.ErrInvalidN},
		{wire.CodeExceedsLimit, quotamesh.ErrExceedsLimit},
		{wire.CodeTooManyKeys, quotamesh.ErrTooManyKeys},
		{wire.CodeBadRequest, ErrBadRequest},
		{wire.CodeForbidden, ErrForbidden},
		{wire.CodeNoRule, limits.ErrNoRule},
		{wire.CodeInvalidRate, limits.ErrInvalidRate},
		{wire.CodeUnavailable, quotamesh.ErrUnavailable},
		{wire.CodeShuttingDown, ErrShuttingDown},
		{wire.CodeInternal, ErrInternal},
		{wire.CodeOverloaded, quotamesh.ErrOverloaded},
		{wire.Code(200), ErrInternal},
	} {
		err := codeErr(tc.code, "because")
		if !errors.Is(err, tc.want) {
			t.Errorf("codeErr(%d) = %v, want %v", tc.code, err, tc.want)
		}
		if !strings.Contains(err.Error(), "because") {
			t.Errorf("codeErr(%d) = %q drops the node's message", tc.code, err)
		}
	}
	if codeErr(wire.CodeOK, "") != nil {
		t.Error("codeErr(OK) is not nil")
	}
}

// TestNodeOverloadedMapsToPolicy: a node's "overloaded" answer reaches the
// caller as the overload policy's decision with an error wrapping
// quotamesh.ErrOverloaded, in strict mode and for a key without lease
// state, and is counted as the node's; once the node decides again, so
// does the SDK.
func TestNodeOverloadedMapsToPolicy(t *testing.T) {
	for _, tc := range []struct {
		policy  OverloadPolicy
		allowed bool
	}{{OverloadDeny, false}, {OverloadAllow, true}, {OverloadError, false}} {
		for _, strict := range []bool{true, false} {
			ca := newTestCA(t)
			srv := newTestServer(t, ca, "n1", rule("k", "1000/s"))
			opts := []Option{WithOverload(tc.policy, 5*time.Millisecond)}
			if strict {
				opts = append(opts, WithStrict())
			}
			c := dialT(t, ca, []string{srv.addr()}, opts...)
			ctx := ctxT(t, 5*time.Second)
			srv.overload.Store(true)
			d, err := c.Allow(ctx, "k")
			if !errors.Is(err, quotamesh.ErrOverloaded) || d.Allowed != tc.allowed {
				t.Errorf("policy %d, strict %v: Allow = %+v, %v; want allowed %v and ErrOverloaded", tc.policy, strict, d, err, tc.allowed)
			}
			if tc.policy == OverloadDeny && d.RetryAfter <= 0 {
				t.Errorf("policy deny, strict %v: RetryAfter %v, want the overload wait", strict, d.RetryAfter)
			}
			if tc.policy == OverloadError && d != (quotamesh.Decision{}) {
				t.Errorf("policy error, strict %v: Decision %+v, want the zero Decision", strict, d)
			}
			if st := c.Stats(); st.Overloads != 1 || st.NodeOverloads != 1 {
				t.Errorf("policy %d, strict %v: Overloads %d, NodeOverloads %d; want 1, 1", tc.policy, strict, st.Overloads, st.NodeOverloads)
			}
			srv.overload.Store(false)
			if d, err := c.Allow(ctx, "k"); err != nil || !d.Allowed {
				t.Errorf("policy %d, strict %v: after the overload Allow = %+v, %v; want allowed", tc.policy, strict, d, err)
			}
			_ = c.Close()
		}
	}
}

// TestOverloadPolicy: with every place in flight taken by calls a node does
// not answer, the next call is answered at once by the overload policy,
// with an error wrapping quotamesh.ErrOverloaded.
func TestOverloadPolicy(t *testing.T) {
	for _, tc := range []struct {
		policy  OverloadPolicy
		allowed bool
	}{{OverloadDeny, false}, {OverloadAllow, true}, {OverloadError, false}} {
		ca := newTestCA(t)
		srv := newTestServer(t, ca, "n1", rule("k", "1000/s"))
		c := dialT(t, ca, []string{srv.addr()}, WithStrict(), WithMaxInFlight(4),
			WithOverload(tc.policy, 5*time.Millisecond), WithRequestTimeout(2*time.Second))
		srv.mute.Store(true)
		ctx := ctxT(t, 5*time.Second)
		var wg sync.WaitGroup
		for range 4 {
			wg.Go(func() { _, _ = c.Allow(ctx, "k") }) // hold every place
		}
		eventually(t, 2*time.Second, "the places taken", func() bool { return len(c.slots) == 4 })
		start := time.Now()
		d, err := c.Allow(ctx, "k")
		took := time.Since(start)
		if !errors.Is(err, quotamesh.ErrOverloaded) || d.Allowed != tc.allowed {
			t.Errorf("policy %d: Allow = %+v, %v; want allowed %v and ErrOverloaded", tc.policy, d, err, tc.allowed)
		}
		if tc.policy == OverloadDeny && d.RetryAfter <= 0 {
			t.Errorf("policy deny: RetryAfter %v, want the overload wait", d.RetryAfter)
		}
		if took > time.Second {
			t.Errorf("policy %d: the overloaded call took %v", tc.policy, took)
		}
		if c.Stats().Overloads != 1 {
			t.Errorf("Overloads = %d, want 1", c.Stats().Overloads)
		}
		_ = c.Close()
		wg.Wait()
	}
}

// TestDecisionCarriesTheNodesTime: a decision a node made carries the
// node's time of it (the reply's Decided, exactly), between the call and
// its return on the shared clock; a call the SDK decides alone from a
// lease carries none.
func TestDecisionCarriesTheNodesTime(t *testing.T) {
	ca := newTestCA(t)
	srv := newTestServer(t, ca, "n1", rule("orders", "5/s"), rule("k", "100000/s"))
	strict := dialT(t, ca, []string{srv.addr()}, WithStrict())
	ctx := ctxT(t, 5*time.Second)
	for i, allowed := range []bool{true, true, true, true, true, false} {
		before := time.Now()
		d, err := strict.Allow(ctx, "orders")
		after := time.Now()
		if err != nil || d.Allowed != allowed {
			t.Fatalf("step %d: Allow(orders) = %+v, %v; want allowed %v", i, d, err, allowed)
		}
		want := time.Unix(0, srv.lastDecided.Load())
		if !d.Decided.Equal(want) {
			t.Errorf("step %d: Decided %v; want the node's %v", i, d.Decided, want)
		}
		if d.Decided.Before(before.Truncate(0)) || d.Decided.After(after.Truncate(0)) {
			t.Errorf("step %d: Decided %v outside the call, %v to %v", i, d.Decided, before, after)
		}
	}

	leases := dialT(t, ca, []string{srv.addr()})
	local := 0
	for i := range 500 {
		decides := srv.decides.Load()
		d, err := leases.Allow(ctx, "k")
		if err != nil || !d.Allowed {
			t.Fatalf("call %d: %+v, %v", i, d, err)
		}
		switch byNode := srv.decides.Load() > decides; {
		case byNode && d.Decided.IsZero():
			t.Errorf("call %d: decided by the node, with no decision time", i)
		case !byNode && !d.Decided.IsZero():
			t.Errorf("call %d: decided from a lease, with decision time %v", i, d.Decided)
		case !byNode:
			local++
		}
	}
	if local == 0 {
		t.Error("no call was decided from a lease")
	}
}

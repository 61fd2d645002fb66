package client

import (
	"errors"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/quotamesh/quotamesh"
	"github.com/quotamesh/quotamesh/internal/route"
)

// TestFailover kills the node the client uses while callers run, and
// checks that they move to the other node: strict calls in flight are sent
// again, leases of the dead node lapse and new ones come from the other.
func TestFailover(t *testing.T) {
	for _, strict := range []bool{true, false} {
		name := map[bool]string{true: "strict", false: "lease"}[strict]
		t.Run(name, func(t *testing.T) {
			ca := newTestCA(t)
			a := newTestServer(t, ca, "a", rule("k*", "1000000/s"))
			b := newTestServer(t, ca, "b", rule("k*", "1000000/s"))
			cluster(a, b)
			var opts []Option
			if strict {
				opts = append(opts, WithStrict())
			}
			c := dialT(t, ca, []string{a.addr(), b.addr()}, opts...)
			servers := map[string]*testServer{"a": a, "b": b}
			first := servers[c.Node()]
			if first == nil {
				t.Fatalf("connected to %q", c.Node())
			}
			ctx := ctxT(t, 20*time.Second)
			var allowed, unavailable, other atomic.Int64
			stop := make(chan struct{})
			var wg sync.WaitGroup
			for w := range 8 {
				wg.Go(func() {
					for i := 0; ; i++ {
						select {
						case <-stop:
							return
						default:
						}
						d, err := c.Allow(ctx, []string{"k1", "k2", "k3"}[(w+i)%3])
						switch {
						case err == nil && d.Allowed:
							allowed.Add(1)
						case errors.Is(err, quotamesh.ErrUnavailable):
							unavailable.Add(1)
						default:
							other.Add(1)
							t.Errorf("Allow: %+v, %v", d, err)
						}
						if strict || i%64 == 0 {
							time.Sleep(100 * time.Microsecond)
						}
					}
				})
			}
			time.Sleep(200 * time.Millisecond)
			before := allowed.Load()
			first.kill()
			killed := time.Now()
			eventually(t, 5*time.Second, "the client connected to the other node", func() bool {
				n := c.Node()
				return n != "" && n != first.id
			})
			moved := time.Since(killed)
			mark := allowed.Load()
			time.Sleep(200 * time.Millisecond)
			close(stop)
			wg.Wait()
			second := servers[c.Node()]
			t.Logf("moved from %s to %s in %v; allowed %d before the kill, %d after; %d unavailable; second node decided %d, leased %d",
				first.id, second.id, moved.Round(time.Millisecond), before, allowed.Load()-before, unavailable.Load(), second.decides.Load(), second.leases.Load())
			if allowed.Load() <= mark {
				t.Error("no call allowed after the failover")
			}
			if second.requests.Load() == 0 {
				t.Error("the second node got no request")
			}
			if c.Stats().Failovers != 1 {
				t.Errorf("Failovers = %d, want 1", c.Stats().Failovers)
			}
			if moved > 2*time.Second {
				t.Errorf("failover after a clean kill took %v", moved)
			}
		})
	}
}

// TestFailoverFromASilentNode drops every datagram of the node the client
// uses: the client notices by the QUIC idle timeout and moves.
func TestFailoverFromASilentNode(t *testing.T) {
	ca := newTestCA(t)
	a := newTestServer(t, ca, "a", rule("k", "1000000/s"))
	b := newTestServer(t, ca, "b", rule("k", "1000000/s"))
	cluster(a, b)
	c := dialT(t, ca, []string{a.addr(), b.addr()}, WithStrict(), WithIdleTimeout(300*time.Millisecond), WithRequestTimeout(2*time.Second))
	ctx := ctxT(t, 10*time.Second)
	if _, err := c.Allow(ctx, "k"); err != nil {
		t.Fatal(err)
	}
	servers := map[string]*testServer{"a": a, "b": b}
	home, _ := route.New("a", "b").Home("k")
	first, other := servers[home], servers[map[string]string{"a": "b", "b": "a"}[home]]
	first.silence()
	start := time.Now()
	// This call is sent to the silent node, then again to the other one.
	d, err := c.Allow(ctx, "k")
	took := time.Since(start)
	if err != nil || !d.Allowed {
		t.Fatalf("Allow across a silent node = %+v, %v", d, err)
	}
	t.Logf("answered by %s after %v", other.id, took.Round(time.Millisecond))
	if other.decided.Load() != 1 {
		t.Errorf("the call was not decided by %s", other.id)
	}
	if slices.Contains(c.Nodes(), first.id) {
		t.Errorf("still connected to the silent node %s", first.id)
	}
	if took > 1500*time.Millisecond {
		t.Errorf("a 300ms idle timeout took %v to fail over", took)
	}
}

// TestAllNodesDown: calls fail with ErrUnavailable within the request
// timeout, and the client recovers when a node comes back at the address.
func TestAllNodesDown(t *testing.T) {
	for _, strict := range []bool{true, false} {
		name := map[bool]string{true: "strict", false: "lease"}[strict]
		t.Run(name, func(t *testing.T) {
			ca := newTestCA(t)
			a := newTestServer(t, ca, "a", rule("k", "1000/s"))
			opts := []Option{WithRequestTimeout(150 * time.Millisecond), WithDialTimeout(500 * time.Millisecond)}
			if strict {
				opts = append(opts, WithStrict())
			}
			c := dialT(t, ca, []string{a.addr()}, opts...)
			ctx := ctxT(t, 10*time.Second)
			// The 150 ms request timeout is tight on a loaded machine: the
			// first call may time out and is tried again.
			eventually(t, 5*time.Second, "a first call answered", func() bool {
				_, err := c.Allow(ctx, "k")
				return err == nil
			})
			addr := a.addr()
			a.kill()
			eventually(t, 2*time.Second, "the client notices", func() bool { return c.Node() == "" })
			for _, key := range []string{"new", "other"} {
				start := time.Now()
				if _, err := c.Allow(ctx, key); !errors.Is(err, quotamesh.ErrUnavailable) {
					t.Errorf("Allow(%s) with no node = %v, want ErrUnavailable", key, err)
				}
				if took := time.Since(start); took > time.Second {
					t.Errorf("Allow with no node took %v; request timeout 150ms", took)
				}
			}
			newTestServerAt(t, ca, "a", addr, rule("k", "1000/s"))
			eventually(t, 5*time.Second, "the client reconnects", func() bool { return c.Node() == "a" })
			if d, err := c.Allow(ctx, "new"); err != nil || !d.Allowed {
				t.Errorf("Allow after the node came back = %+v, %v", d, err)
			}
		})
	}
}

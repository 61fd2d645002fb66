package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/quotamesh/quotamesh"
	"github.com/quotamesh/quotamesh/client"
	"github.com/quotamesh/quotamesh/internal/certs"
	"github.com/quotamesh/quotamesh/limits"
)

// fill admits key on tn until it is denied, and returns how many it
// admitted.
func fill(t *testing.T, tn *tnode, key string) int {
	t.Helper()
	n := 0
	for range 1000 {
		d, err := tn.Allow(context.Background(), key)
		if err != nil {
			t.Fatalf("%s: Allow(%s): %v", tn.id, key, err)
		}
		if !d.Allowed {
			return n
		}
		n++
	}
	t.Fatalf("%s: %s never denied", tn.id, key)
	return n
}

// fillAll fills key on every node until a round admits nothing twice in
// a row (room a node holds unused moves to the others within a few sync
// intervals), and returns how many were admitted.
func fillAll(t *testing.T, nodes []*tnode, key string) int {
	t.Helper()
	total, idle := 0, 0
	for round := 0; round < 30 && idle < 2; round++ {
		got := 0
		for _, tn := range nodes {
			got += fill(t, tn, key)
		}
		if total += got; got == 0 {
			idle++
		} else {
			idle = 0
		}
		time.Sleep(100 * time.Millisecond)
	}
	return total
}

func udp(t *testing.T, addr string) net.Addr {
	t.Helper()
	a, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// TestResetAcrossAPartition: a key whose 10 s window is full is reset on
// n1 while n3 is cut off. n1 and n2 admit again as soon as Reset returns;
// n3 keeps counting the old admissions (it has not heard of the reset) and
// so admits nothing the others could not; when it rejoins, Raft brings it
// the reset, after which it counts exactly what the others count, admits
// again, and the cluster's window holds the limit.
func TestResetAcrossAPartition(t *testing.T) {
	c := newCluster(t, 3)
	c.startAll()
	c.waitReady(15 * time.Second)
	ctx := ctxT(t, 60*time.Second)
	n1, n2, n3 := c.nodes["n1"], c.nodes["n2"], c.nodes["n3"]
	r := rule("k", "30/10s")
	if _, err := n1.SetLimit(ctx, r); err != nil {
		t.Fatal(err)
	}
	c.waitRule(r)
	before := fillAll(t, []*tnode{n1, n2, n3}, "k")
	if before < 27 || before > 30 {
		t.Fatalf("filled the window with %d admissions, want about 30", before)
	}

	n3.pc.Block(udp(t, n1.addr), udp(t, n2.addr))
	n1.pc.Block(udp(t, n3.addr))
	n2.pc.Block(udp(t, n3.addr))
	res, err := n1.Reset(ctx, "k")
	if err != nil {
		t.Fatal(err)
	}
	if wait := time.Until(res.At); wait > 0 {
		t.Errorf("Reset returned %v before its floor %v", wait, res.At)
	}
	if len(res.Pending) != 1 || res.Pending[0] != "n3" {
		t.Errorf("Reset pending on %v, want n3 (cut off)", res.Pending)
	}
	after := 0
	for _, tn := range []*tnode{n1, n2} {
		if d, err := tn.Allow(ctx, "k"); err != nil || !d.Allowed {
			t.Errorf("%s right after the reset: %+v, %v; want admitted", tn.id, d, err)
		} else {
			after++
		}
	}
	st, err := n3.CurrentQPS(ctx, "k")
	if err != nil {
		t.Fatal(err)
	}
	if !st.ResetAt.IsZero() || n3.Table().ResetFloor("k") != 0 {
		t.Fatalf("cut-off n3 knows of the reset: %+v", st)
	}
	if d, _ := n3.Allow(ctx, "k"); d.Allowed {
		t.Errorf("cut-off n3 admitted: it counts the old window, which is full")
	}

	n1.pc.Heal()
	n2.pc.Heal()
	n3.pc.Heal()
	eventually(t, 15*time.Second, "n3 applies the reset and serves", func() string {
		if n3.Table().ResetFloor("k") == 0 {
			return "no reset on n3"
		}
		if why := n3.notReady(); len(why) > 0 {
			return strings.Join(why, "; ")
		}
		return ""
	})
	eventually(t, 5*time.Second, "n3 counts what n1 counts", func() string {
		a, _ := n1.CurrentQPS(ctx, "k")
		b, _ := n3.CurrentQPS(ctx, "k")
		if a.Admitted != int64(after) || b.Admitted != a.Admitted || !b.ResetAt.Equal(a.ResetAt) {
			return fmt.Sprintf("n1 %d (reset %v), n3 %d (reset %v); %d admitted since the reset", a.Admitted, a.ResetAt, b.Admitted, b.ResetAt, after)
		}
		return ""
	})
	after += fillAll(t, []*tnode{n1, n2, n3}, "k")
	if after > 30 {
		t.Errorf("%d admitted since the reset, within one 10 s window: want at most the limit of 30", after)
	}
	if after < 27 {
		t.Errorf("%d admitted since the reset: the window should have filled again (30)", after)
	}
	if time.Since(res.At) > 9*time.Second {
		t.Errorf("the checks took %v: no longer within one window of the reset", time.Since(res.At))
	}
}

// TestKeysThroughTheSDKAndAdminAPI: CurrentQPS and Reset from the SDK (the
// key's home answers CurrentQPS), the read-only JSON on the admin
// listener, and roles: reading needs a client certificate, resetting the
// admin role.
func TestKeysThroughTheSDKAndAdminAPI(t *testing.T) {
	c := newCluster(t, 3)
	c.startAll()
	c.waitReady(15 * time.Second)
	ctx := ctxT(t, 30*time.Second)
	n1 := c.nodes["n1"]
	r := rule("user:*", "5/10s")
	if _, err := n1.SetLimit(ctx, r); err != nil {
		t.Fatal(err)
	}
	c.waitRule(r)
	dial := func(name string, role certs.Role) *client.Client {
		b, err := c.ca.IssueClient(name, role, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		cl, err := client.Dial(ctx, []string{n1.Addr()}, client.WithCA(c.ca.Pool()), client.WithCertificate(b.TLSCertificate()),
			client.WithServerName("127.0.0.1"), client.WithStrict())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cl.Close() })
		return cl
	}
	admin, reader := dial("ops", certs.RoleAdmin), dial("app", certs.RoleDecide)
	var insp quotamesh.Inspector = admin
	// A key's first calls get an even split of its limit until the other
	// nodes could have shown their use of it (a grace period): then the
	// home takes it all.
	if d, err := reader.Allow(ctx, "user:42"); err != nil || !d.Allowed {
		t.Fatalf("Allow: %+v, %v", d, err)
	}
	// The grace period is a few sync intervals; a busy machine stretches
	// them, so wait for the home's room rather than a fixed time.
	for got, start := 0, time.Now(); got < 4; {
		d, err := reader.Allow(ctx, "user:42")
		switch {
		case err != nil:
			t.Fatalf("Allow: %v", err)
		case d.Allowed:
			got++
		case time.Since(start) > 5*time.Second:
			t.Fatalf("after 5 s the home has admitted %d more of the key's 5, want 4: %+v", got, d)
		default:
			time.Sleep(50 * time.Millisecond)
		}
	}
	if d, _ := reader.Allow(ctx, "user:42"); d.Allowed {
		t.Fatal("the sixth call in the window was admitted")
	}
	eventually(t, 5*time.Second, "the home's stats", func() string {
		st, err := reader.CurrentQPS(ctx, "user:42")
		if err != nil {
			return err.Error()
		}
		if st.Rule != "user:*" || st.Limit != r.Rate || st.Admitted != 5 || st.Remaining != 0 || st.Cluster.Admitted < 0.5 {
			return fmt.Sprintf("%+v", st)
		}
		if home, _ := n1.homeOf("user:42"); st.Node != home {
			return fmt.Sprintf("answered by %s, the key's home is %s", st.Node, home)
		}
		return ""
	})
	if _, err := reader.Reset(ctx, "user:42"); !errors.Is(err, client.ErrForbidden) {
		t.Errorf("Reset with a decide certificate = %v, want ErrForbidden", err)
	}
	res, err := insp.Reset(ctx, "user:*")
	if err != nil || res.Pattern != "user:*" || res.At.IsZero() || res.Index == 0 || len(res.Pending) != 0 {
		t.Fatalf("Reset = %+v, %v", res, err)
	}
	if d, err := reader.Allow(ctx, "user:42"); err != nil || !d.Allowed {
		t.Errorf("after the reset: %+v, %v; want admitted", d, err)
	}
	if _, err := insp.Reset(ctx, "a b"); !errors.Is(err, limits.ErrInvalidPattern) {
		t.Errorf("Reset(%q) = %v, want ErrInvalidPattern", "a b", err)
	}
	if _, err := reader.CurrentQPS(ctx, ""); !errors.Is(err, limits.ErrInvalidKey) {
		t.Errorf("CurrentQPS(\"\") = %v, want ErrInvalidKey", err)
	}

	home, _ := n1.homeOf("user:42")
	code, body := httpGet(t, "http://"+c.nodes[home].AdminAddr()+"/keys/user:42")
	var st quotamesh.KeyStats
	if err := json.Unmarshal([]byte(body), &st); code != 200 || err != nil || st.Key != "user:42" || st.ResetAt.IsZero() || st.Admitted != 1 {
		t.Errorf("GET /keys/user:42 = %d %s (%v)", code, body, err)
	}
	if code, _ := httpGet(t, "http://"+n1.AdminAddr()+"/keys/a%20b"); code != 400 {
		t.Errorf("GET /keys/a%%20b = %d, want 400", code)
	}
	if code, _ := httpDo(t, "POST", "http://"+n1.AdminAddr()+"/keys/user:42"); code != 405 {
		t.Errorf("POST /keys/user:42 = %d, want 405: the admin listener only reads", code)
	}
}

package consensus

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
)

// voters returns the member IDs that vote and those that do not, as n sees
// them.
func voters(t testing.TB, n *testNode) (vote, novote []string) {
	t.Helper()
	ms, err := n.store.Members()
	if err != nil {
		t.Fatalf("Members on %s: %v", n.id, err)
	}
	for _, m := range ms {
		if m.Voter {
			vote = append(vote, m.ID)
		} else {
			novote = append(novote, m.ID)
		}
	}
	return vote, novote
}

// waitShape waits until every running node sees total members of which
// nVoters vote.
func (c *cluster) waitShape(total, nVoters int) {
	c.t.Helper()
	c.eventually(10*time.Second, fmt.Sprintf("%d members, %d voting, on every node", total, nVoters), func() bool {
		for _, n := range c.running() {
			v, nv := voters(c.t, n)
			if len(v) != nVoters || len(v)+len(nv) != total {
				return false
			}
		}
		return true
	})
}

func TestMembership(t *testing.T) {
	c := newCluster(t, 1, func(c *Config) {
		c.MaxVoters = 5
		c.DeadVoterAfter = 600 * time.Millisecond
	})
	ctx := ctxT(t, 30*time.Second)
	first := c.leader()

	// Six nodes join at run time: the first through the leader, the others
	// through a follower (n2), which passes the request on. Only MaxVoters
	// of the seven vote.
	for i := 2; i <= 7; i++ {
		n := c.node(fmt.Sprintf("n%d", i))
		c.start(n, nil)
		seed := first.addr
		if i > 2 {
			seed = c.byID["n2"].addr
		}
		if err := n.store.JoinVia(ctx, seed); err != nil {
			t.Fatalf("%s JoinVia(%s): %v", n.id, seed, err)
		}
	}
	c.waitShape(7, 5)

	// Non-voters get every change too.
	want := rule("orders.create", "1000/s")
	if _, err := c.byID["n7"].store.Set(ctx, want); err != nil {
		t.Fatalf("Set on n7: %v", err)
	}
	c.waitTables(table(t, want))

	// Joining again is harmless.
	if err := c.byID["n3"].store.Join(ctx, "n7", c.byID["n7"].addr); err != nil {
		t.Fatalf("Join of a member: %v", err)
	}

	// A voter (not the leader) leaves, asked through a non-voter: a
	// non-voter is promoted in its place.
	lead := c.leader()
	v, nv := voters(t, lead)
	var leaving *testNode
	for _, id := range v {
		if id != lead.id {
			leaving = c.byID[id]
			break
		}
	}
	if err := c.byID[nv[0]].store.Leave(ctx, leaving.id); err != nil {
		t.Fatalf("Leave(%s) through %s: %v", leaving.id, nv[0], err)
	}
	c.stop(leaving)
	c.waitShape(6, 5)

	// The leader itself leaves: it hands leadership over first.
	if err := lead.store.Leave(ctx, lead.id); err != nil {
		t.Fatalf("leader Leave(self): %v", err)
	}
	c.stop(lead)
	c.waitShape(5, 5)
	if err := c.leader().store.Leave(ctx, "no-such-node"); err != nil {
		t.Errorf("Leave of a non-member = %v; want nil", err)
	}

	// A voter dies without leaving while a healthy non-voter waits: after
	// DeadVoterAfter the non-voter takes its vote.
	spare := c.node("n8")
	c.start(spare, nil)
	if err := spare.store.JoinVia(ctx, c.leader().addr); err != nil {
		t.Fatalf("n8 JoinVia: %v", err)
	}
	c.waitShape(6, 5)
	lead = c.leader()
	var dead *testNode
	for _, id := range must(voters(t, lead)) {
		if id != lead.id {
			dead = c.byID[id]
			break
		}
	}
	c.kill(dead)
	c.eventually(10*time.Second, "n8 to replace "+dead.id, func() bool {
		v, _ := voters(t, c.leader())
		return len(v) == 5 && contains(v, "n8") && !contains(v, dead.id)
	})
	// The cluster still commits with the replacement's vote.
	if _, err := spare.store.Set(ctx, rule("after.replace", "5/s")); err != nil {
		t.Fatalf("Set after the replacement: %v", err)
	}
}

func must(vote, _ []string) []string { return vote }

func contains(xs []string, x string) bool {
	for _, y := range xs {
		if y == x {
			return true
		}
	}
	return false
}

func TestJoinErrors(t *testing.T) {
	c := newCluster(t, 1, func(c *Config) { c.MaxVoters = 1 })
	n := c.leader()
	ctx := ctxT(t, 5*time.Second)
	if err := n.store.Join(ctx, "", "x:1"); err == nil {
		t.Error("Join with an empty ID succeeded")
	}
	if err := n.store.Join(ctx, "x", "has space"); err == nil {
		t.Error("Join with a bad address succeeded")
	}
	if err := n.store.Leave(ctx, n.id); err == nil {
		t.Error("the only voter left")
	}
	// MaxVoters 1: a joining node stays a non-voter.
	o := c.node("n2")
	c.start(o, nil)
	if err := o.store.JoinVia(ctx, n.addr); err != nil {
		t.Fatal(err)
	}
	c.waitShape(2, 1)
	// A node claiming a member's address must not evict that member.
	if err := n.store.Join(ctx, "rogue", o.addr); !errors.Is(err, ErrAddressInUse) {
		t.Errorf("Join(rogue, %s) = %v, want ErrAddressInUse", o.addr, err)
	}
	c.waitShape(2, 1)
}

// TestHandleForwardFrom checks who may send what: a node that is not a
// member may only join as itself; members may send anything.
func TestHandleForwardFrom(t *testing.T) {
	c := newCluster(t, 3)
	ctx := ctxT(t, 20*time.Second)
	lead, f := c.leader(), c.follower()
	call := func(n *testNode, caller string, r request) error {
		t.Helper()
		b, err := encodeRequest(r)
		if err != nil {
			t.Fatal(err)
		}
		out, herr := n.store.HandleForwardFrom(ctx, caller, b)
		resp, err := decodeResponse(out)
		if err != nil {
			t.Fatalf("response to %s's %v: %v", caller, r.Op, err)
		}
		if rerr := resp.err(); errors.Is(rerr, ErrForbidden) != errors.Is(herr, ErrForbidden) {
			t.Fatalf("HandleForwardFrom returned %v but the response says %v", herr, rerr)
		}
		return resp.err()
	}
	before := lead.store.raft.LastIndex()
	for _, tc := range []struct {
		name   string
		caller string
		r      request
	}{
		{"stranger sets a rule", "stranger", request{Op: opSet, ID: 11, Rule: toWire(rule("k", "10/s"))}},
		{"stranger deletes", "stranger", request{Op: opDelete, ID: 12, Pattern: "k"}},
		{"stranger reads", "stranger", request{Op: opSync}},
		{"stranger probes", "stranger", request{Op: opStatus}},
		{"stranger removes a member", "stranger", request{Op: opLeave, Server: Server{ID: f.id}}},
		{"stranger joins another node", "stranger", request{Op: opJoin, Server: Server{ID: "n9", Address: "n9:7000"}}},
		{"anonymous joins", "", request{Op: opJoin, Server: Server{ID: "n9", Address: "n9:7000"}}},
	} {
		if err := call(lead, tc.caller, tc.r); !errors.Is(err, ErrForbidden) || !strings.Contains(err.Error(), "not a member") {
			t.Errorf("%s: err = %v; want ErrForbidden", tc.name, err)
		}
	}
	if after := lead.store.raft.LastIndex(); after != before {
		t.Errorf("the leader's last index went from %d to %d after refused requests", before, after)
	}

	// A stranger joining as itself is let in, through a follower (which
	// passes the request on to the leader) as through the leader.
	c.eventually(5*time.Second, "the follower to know the leader", func() bool {
		id, _ := f.store.Leader()
		return id == lead.id
	})
	if err := call(f, "n4", request{Op: opJoin, Server: Server{ID: "n4", Address: "n4:7000"}}); err != nil {
		t.Fatalf("n4 joining as itself through a follower: %v", err)
	}
	c.waitShape(4, 3)
	// A member may join another node (an operator's join given to it) and
	// send anything else.
	if err := call(f, f.id, request{Op: opJoin, Server: Server{ID: "n5", Address: "n5:7000"}}); err != nil {
		t.Fatalf("member %s joining n5: %v", f.id, err)
	}
	if err := call(lead, f.id, request{Op: opSet, ID: 13, Rule: toWire(rule("k", "10/s"))}); err != nil {
		t.Fatalf("member %s setting a rule: %v", f.id, err)
	}
	// Now a member, n4 may send anything too.
	if err := call(lead, "n4", request{Op: opLeave, Server: Server{ID: "n5"}}); err != nil {
		t.Fatalf("member n4 removing n5: %v", err)
	}
	if err := lead.store.Leave(ctx, "n4"); err != nil {
		t.Fatal(err)
	}
	c.waitShape(3, 3)
}

// TestBootstrapBeyondMaxVoters: seven initial members given in one list
// start as five voters and two non-voters, every node with the same
// configuration, and the cluster commits.
func TestBootstrapBeyondMaxVoters(t *testing.T) {
	c := newCluster(t, 7, func(c *Config) { c.MaxVoters = 5 })
	c.waitShape(7, 5)
	ctx := ctxT(t, 20*time.Second)
	want := rule("orders.create", "100/s")
	if _, err := c.byID["n7"].store.Set(ctx, want); err != nil {
		t.Fatalf("Set through a non-voter: %v", err)
	}
	c.waitTables(table(t, want))
	ms, err := c.byID["n1"].store.Members()
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range ms {
		if wantVoter := m.ID <= "n5"; m.Voter != wantVoter {
			t.Errorf("member %s voter %v, want %v (the first five of the list vote)", m.ID, m.Voter, wantVoter)
		}
	}
}

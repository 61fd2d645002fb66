package node

import (
	"bufio"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/quotamesh/quotamesh/internal/certs"
	"github.com/quotamesh/quotamesh/internal/wire"
	"github.com/quotamesh/quotamesh/limits"
	"github.com/quotamesh/quotamesh/transport"
)

// rawClient is a client speaking the wire protocol by hand on one stream.
type rawClient struct {
	t    testing.TB
	conn *transport.ClientConn
	s    *transport.Stream
	br   *bufio.Reader
}

func dialRaw(t testing.TB, c *cluster, tn *tnode, name string) *rawClient {
	t.Helper()
	cfg := transport.ClientConfig{CAs: c.ca.Pool(), NodeID: tn.id}
	if name != "" {
		role := certs.RoleDecide
		if name == "admin" {
			role = certs.RoleAdmin
		}
		b, err := c.ca.IssueClient(name, role, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		cert := b.TLSCertificate()
		cfg.Certificate = &cert
	}
	ctx := ctxT(t, 10*time.Second)
	conn, err := transport.DialClient(ctx, tn.Addr(), cfg)
	if err != nil {
		t.Fatalf("dial %s as %q: %v", tn.id, name, err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	s, err := conn.OpenStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return &rawClient{t: t, conn: conn, s: s, br: bufio.NewReader(s)}
}

func (c *rawClient) send(m wire.Message) {
	c.t.Helper()
	b, err := wire.Append(nil, m)
	if err != nil {
		c.t.Fatal(err)
	}
	_ = c.s.SetWriteDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.s.Write(b); err != nil {
		c.t.Fatalf("write: %v", err)
	}
}

func (c *rawClient) recv() wire.Message {
	c.t.Helper()
	_ = c.s.SetReadDeadline(time.Now().Add(15 * time.Second))
	body, err := wire.ReadFrame(c.br, 0)
	if err != nil {
		c.t.Fatalf("read: %v", err)
	}
	m, err := wire.Decode(body)
	if err != nil {
		c.t.Fatalf("decode: %v", err)
	}
	return m
}

func (c *rawClient) batch(items ...wire.ClientRequest) []wire.ClientReply {
	c.t.Helper()
	c.send(&wire.ClientBatch{Items: items})
	r, ok := c.recv().(*wire.ClientReplies)
	if !ok {
		c.t.Fatal("no ClientReplies")
	}
	return r.Items
}

func (c *rawClient) admin(req wire.AdminRequest) *wire.AdminReply {
	c.t.Helper()
	c.send(&req)
	r, ok := c.recv().(*wire.AdminReply)
	if !ok {
		c.t.Fatal("no AdminReply")
	}
	return r
}

// oneNodeWithRule starts a one-node cluster (opts applied to its config),
// sets rule pattern at rate through an admin connection, and returns the
// node and that connection.
func oneNodeWithRule(t *testing.T, pattern, rate string, opts ...func(*Config)) (*tnode, *rawClient) {
	t.Helper()
	c := newCluster(t, 1, opts...)
	c.startAll()
	c.waitReady(10 * time.Second)
	n1 := c.nodes["n1"]
	adm := dialRaw(t, c, n1, "admin")
	if r := adm.admin(wire.AdminRequest{ID: 1, Op: wire.AdminLimitSet, Rule: limits.Rule{Pattern: pattern, Rate: limits.MustParseRate(rate)}}); r.Code != wire.CodeOK {
		t.Fatalf("limit set %s %s: %+v", pattern, rate, r)
	}
	return n1, adm
}

// TestClientProtocol speaks the client protocol over real QUIC: decisions,
// leases, error codes, pipelining, and admin operations with and without an
// admin certificate.
func TestClientProtocol(t *testing.T) {
	c := newCluster(t, 1)
	c.startAll()
	c.waitReady(10 * time.Second)
	n1 := c.nodes["n1"]
	adm := dialRaw(t, c, n1, "admin")

	// Admin: set, get, list, status.
	r := adm.admin(wire.AdminRequest{ID: 1, Op: wire.AdminLimitSet, Rule: limits.Rule{Pattern: "api.*", Rate: limits.MustParseRate("10/s")}})
	if r.ID != 1 || r.Code != wire.CodeOK || r.Index == 0 {
		t.Fatalf("limit set: %+v", r)
	}
	if r := adm.admin(wire.AdminRequest{ID: 2, Op: wire.AdminLimitGet, Pattern: "api.*"}); r.Code != wire.CodeOK || len(r.Rules) != 1 || r.Rules[0].Rate.Count != 10 {
		t.Errorf("limit get: %+v", r)
	}
	// As a delete of a missing rule: CodeNoRule (the SDK reads an empty OK
	// as a protocol violation).
	if r := adm.admin(wire.AdminRequest{ID: 3, Op: wire.AdminLimitGet, Pattern: "none"}); r.Code != wire.CodeNoRule || len(r.Rules) != 0 {
		t.Errorf("limit get of a missing rule: %+v; want CodeNoRule and no rule", r)
	}
	if r := adm.admin(wire.AdminRequest{ID: 4, Op: wire.AdminLimitList}); r.Code != wire.CodeOK || len(r.Rules) != 1 {
		t.Errorf("limit list: %+v", r)
	}
	st := adm.admin(wire.AdminRequest{ID: 5, Op: wire.AdminStatus})
	var doc Status
	if st.Code != wire.CodeOK || json.Unmarshal(st.Status, &doc) != nil || doc.Node != "n1" || doc.Raft.Leader != "n1" {
		t.Errorf("status: code %d, %.300s", st.Code, st.Status)
	}
	if r := adm.admin(wire.AdminRequest{ID: 6, Op: wire.AdminLimitSet, Rule: limits.Rule{Pattern: "bad", Rate: limits.Rate{Count: 5, Window: 150 * time.Millisecond}}}); r.Code != wire.CodeInvalidRate || !strings.Contains(r.Message, "150ms") {
		t.Errorf("limit set of a bad rate: %+v; want CodeInvalidRate naming 150ms", r)
	}
	if r := adm.admin(wire.AdminRequest{ID: 7, Op: wire.AdminLimitDelete, Pattern: "none"}); r.Code != wire.CodeNoRule {
		t.Errorf("limit delete of a missing rule: %+v; want CodeNoRule", r)
	}

	// Decisions and leases, pipelined: three batches written before any
	// reply is read come back in order.
	adm.send(&wire.ClientBatch{Items: []wire.ClientRequest{{ID: 10, Op: wire.OpDecide, Key: "api.x", N: 4}}})
	adm.send(&wire.ClientBatch{Items: []wire.ClientRequest{{ID: 11, Op: wire.OpDecide, Key: "api.x", N: 4}}})
	adm.send(&wire.ClientBatch{Items: []wire.ClientRequest{
		{ID: 12, Op: wire.OpDecide, Key: "api.x", N: 4},
		{ID: 13, Op: wire.OpDecide, Key: "free", N: 1},
	}})
	var got []wire.ClientReply
	for range 3 {
		got = append(got, adm.recv().(*wire.ClientReplies).Items...)
	}
	want := []struct {
		id        uint64
		allowed   bool
		unlimited bool
	}{{10, true, false}, {11, true, false}, {12, false, false}, {13, true, true}}
	if len(got) != len(want) {
		t.Fatalf("replies %+v", got)
	}
	for i, w := range want {
		g := got[i]
		if g.ID != w.id || g.Code != wire.CodeOK || g.Allowed != w.allowed || g.Unlimited != w.unlimited {
			t.Errorf("reply %d = %+v; want ID %d allowed %v unlimited %v", i, g, w.id, w.allowed, w.unlimited)
		}
	}
	if g := got[2]; g.RetryAfter <= 0 || g.Limit.Count != 10 {
		t.Errorf("denial %+v; want a RetryAfter and the limit", g)
	}
	lease := adm.batch(wire.ClientRequest{ID: 20, Op: wire.OpLease, Key: "api.y", Want: 5, Offered: 5})[0]
	if lease.Code != wire.CodeOK || lease.Granted != 1 || lease.TTL <= 0 || lease.LeaseID == 0 || lease.Remaining != 9 {
		// MaxLeaseFraction 0.1 of 10/s caps a grant at one token.
		t.Errorf("lease: %+v; want lease of 1 token with a TTL, 9 remaining", lease)
	}
	back := adm.batch(wire.ClientRequest{ID: 21, Op: wire.OpLease, Key: "api.y", SettleID: lease.LeaseID, SettleUsed: 0})[0]
	if back.Code != wire.CodeOK || back.Remaining != 10 {
		t.Errorf("lease settled unused: %+v; want the token back (10 remaining)", back)
	}
	// A decision can carry a lease request.
	ride := adm.batch(wire.ClientRequest{ID: 22, Op: wire.OpDecide, Key: "api.y", N: 1, Want: 3})[0]
	if ride.Code != wire.CodeOK || !ride.Allowed || ride.Granted != 1 || ride.Remaining != 8 {
		t.Errorf("decision with a lease riding on it: %+v; want allowed, 1 token, 8 remaining", ride)
	}

	// Bad input gets its code, per request, and the stream goes on.
	bad := adm.batch(
		wire.ClientRequest{ID: 30, Op: wire.OpDecide, Key: "api x", N: 1},
		wire.ClientRequest{ID: 31, Op: wire.OpDecide, Key: "api.x", N: 0},
		wire.ClientRequest{ID: 32, Op: wire.OpDecide, Key: "api.x", N: -2},
		wire.ClientRequest{ID: 33, Op: wire.OpDecide, Key: "api.x", N: 11},
		wire.ClientRequest{ID: 34, Op: wire.OpLease, Key: "api.x", Want: -1},
		wire.ClientRequest{ID: 35, Op: wire.OpLease, Key: "api.x", N: 1},
	)
	for i, code := range []wire.Code{wire.CodeInvalidKey, wire.CodeInvalidN, wire.CodeInvalidN, wire.CodeExceedsLimit, wire.CodeInvalidN, wire.CodeBadRequest} {
		if bad[i].Code != code || bad[i].Message == "" || bad[i].Allowed {
			t.Errorf("bad request %d: %+v; want code %d with a message", bad[i].ID, bad[i], code)
		}
	}

	// A decide-only client decides and reads, but may change nothing.
	bob := dialRaw(t, c, n1, "bob")
	if r := bob.batch(wire.ClientRequest{ID: 1, Op: wire.OpDecide, Key: "free", N: 1})[0]; r.Code != wire.CodeOK || !r.Allowed {
		t.Errorf("bob's decision: %+v", r)
	}
	for _, op := range []wire.AdminOp{wire.AdminLimitList, wire.AdminStatus, wire.AdminMembers} {
		if r := bob.admin(wire.AdminRequest{ID: 2, Op: op}); r.Code != wire.CodeOK {
			t.Errorf("bob's read %v: %+v; want CodeOK", op, r)
		}
	}
	for _, op := range []wire.AdminOp{wire.AdminLimitSet, wire.AdminLimitDelete, wire.AdminJoin, wire.AdminLeave} {
		req := wire.AdminRequest{ID: 3, Op: op, Pattern: "api.*", Node: "n1", Addr: "127.0.0.1:1", Rule: limits.Rule{Pattern: "x", Rate: limits.MustParseRate("1/s")}}
		if r := bob.admin(req); r.Code != wire.CodeForbidden || !strings.Contains(r.Message, "role decide") {
			t.Errorf("bob's admin op %v: %+v; want CodeForbidden naming the role", op, r)
		}
	}
	if _, ok := n1.Table().Get("x"); ok {
		t.Error("a refused admin operation changed the table")
	}
	if _, ok := n1.Table().Get("api.*"); !ok {
		t.Error("a refused delete removed the rule")
	}

	// A frame that does not decode ends the stream, not the node.
	if _, err := adm.s.Write([]byte{3, 0xc1, 0xc1, 0xc1}); err != nil {
		t.Fatal(err)
	}
	_ = adm.s.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := wire.ReadFrame(adm.br, 0); err == nil {
		t.Error("the stream answered a garbage frame")
	}
	if !n1.Ready() {
		t.Error("node not ready after a bad client frame")
	}
}

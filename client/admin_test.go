package client

import (
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/quotamesh/quotamesh"
	"github.com/quotamesh/quotamesh/internal/certs"
	"github.com/quotamesh/quotamesh/internal/wire"
	"github.com/quotamesh/quotamesh/limits"
)

func TestAdminLimits(t *testing.T) {
	ca := newTestCA(t)
	srv := newTestServer(t, ca, "n1", rule("a", "10/s"))
	c := dialT(t, ca, []string{srv.addr()})
	ctx := ctxT(t, 5*time.Second)

	idx, err := c.SetLimit(ctx, rule("orders.*", "1000/s"))
	if err != nil || idx == 0 {
		t.Fatalf("SetLimit = %d, %v", idx, err)
	}
	got, err := c.GetLimit(ctx, "orders.*")
	if err != nil || got != rule("orders.*", "1000/s") {
		t.Errorf("GetLimit = %v, %v", got, err)
	}
	rules, err := c.ListLimits(ctx)
	if err != nil || len(rules) != 2 {
		t.Errorf("ListLimits = %v, %v; want 2 rules", rules, err)
	}
	// The new rule governs decisions.
	d, err := c.Allow(ctx, "orders.create")
	if err != nil || !d.Allowed || d.Limit.Count != 1000 {
		t.Errorf("Allow under the new rule = %+v, %v", d, err)
	}
	if _, err := c.DeleteLimit(ctx, "orders.*"); err != nil {
		t.Errorf("DeleteLimit = %v", err)
	}
	if _, err := c.GetLimit(ctx, "orders.*"); !errors.Is(err, limits.ErrNoRule) {
		t.Errorf("GetLimit of a deleted rule = %v, want limits.ErrNoRule", err)
	}
	if _, err := c.DeleteLimit(ctx, "orders.*"); !errors.Is(err, limits.ErrNoRule) {
		t.Errorf("DeleteLimit of a missing rule = %v, want limits.ErrNoRule", err)
	}
	// Checked before sending.
	before := srv.requests.Load()
	if _, err := c.SetLimit(ctx, limits.Rule{Pattern: "x", Rate: limits.Rate{Count: 0, Window: time.Second}}); !errors.Is(err, limits.ErrInvalidRate) {
		t.Errorf("SetLimit with a zero count = %v, want ErrInvalidRate", err)
	}
	if _, err := c.SetLimit(ctx, rule("bad pattern", "1/s")); !errors.Is(err, limits.ErrInvalidPattern) {
		t.Errorf("SetLimit with a bad pattern = %v, want ErrInvalidPattern", err)
	}
	if _, err := c.GetLimit(ctx, "**"); !errors.Is(err, limits.ErrInvalidPattern) {
		t.Errorf("GetLimit(**) = %v, want ErrInvalidPattern", err)
	}
	if srv.requests.Load() != before {
		t.Error("invalid admin input reached the node")
	}

	st, err := c.Status(ctx)
	if err != nil {
		t.Fatalf("Status: %v", err)
	}
	var doc struct{ Node string }
	if err := json.Unmarshal(st, &doc); err != nil || doc.Node != "n1" {
		t.Errorf("Status = %s, %v", st, err)
	}
	if _, err := c.Join(ctx, "n2", "127.0.0.1:7001"); err != nil {
		t.Errorf("Join = %v", err)
	}
	if _, err := c.Leave(ctx, "n2"); err != nil {
		t.Errorf("Leave = %v", err)
	}
}

func TestAdminCodesMapToSentinels(t *testing.T) {
	ca := newTestCA(t)
	srv := newTestServer(t, ca, "n1")
	c := dialT(t, ca, []string{srv.addr()})
	ctx := ctxT(t, 5*time.Second)
	for _, tc := range []struct {
		code wire.Code
		want error
	}{
		{wire.CodeForbidden, ErrForbidden},
		{wire.CodeUnavailable, quotamesh.ErrUnavailable},
		{wire.CodeNoRule, limits.ErrNoRule},
		{wire.CodeInvalidRate, limits.ErrInvalidRate},
		{wire.CodeBadRequest, ErrBadRequest},
		{wire.CodeShuttingDown, ErrShuttingDown},
		{wire.CodeInternal, ErrInternal},
	} {
		hook := func(*wire.AdminRequest) *wire.AdminReply {
			return &wire.AdminReply{Code: tc.code, Message: "canned"}
		}
		srv.adminHook.Store(&hook)
		if _, err := c.SetLimit(ctx, rule("k", "1/s")); !errors.Is(err, tc.want) {
			t.Errorf("SetLimit answered code %d = %v, want %v", tc.code, err, tc.want)
		}
	}
	// A reply with another ID, or a get with no rule, is a protocol error.
	for _, bad := range []func(*wire.AdminRequest) *wire.AdminReply{
		func(*wire.AdminRequest) *wire.AdminReply { return &wire.AdminReply{} },
	} {
		srv.adminHook.Store(&bad)
		if _, err := c.GetLimit(ctx, "k"); !errors.Is(err, ErrProtocol) {
			t.Errorf("GetLimit answered by an empty reply = %v, want ErrProtocol", err)
		}
		if _, err := c.Status(ctx); !errors.Is(err, ErrProtocol) {
			t.Errorf("Status answered with no JSON = %v, want ErrProtocol", err)
		}
	}
	// A node that never answers: the context's deadline.
	slow := func(*wire.AdminRequest) *wire.AdminReply {
		time.Sleep(300 * time.Millisecond)
		return &wire.AdminReply{}
	}
	srv.adminHook.Store(&slow)
	short := ctxT(t, 50*time.Millisecond)
	start := time.Now()
	if _, err := c.ListLimits(short); err == nil {
		t.Error("ListLimits past its deadline succeeded")
	}
	if took := time.Since(start); took > 250*time.Millisecond {
		t.Errorf("ListLimits with a 50ms deadline took %v", took)
	}
}

func TestAdminNeedsAdminCertificate(t *testing.T) {
	ca := newTestCA(t)
	srv := newTestServer(t, ca, "n1")
	b, err := ca.ca.IssueClient("app", certs.RoleDecide, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	c, err := Dial(ctxT(t, 5*time.Second), []string{srv.addr()}, WithCA(ca.ca.Pool()), WithCertificate(b.TLSCertificate()), WithLogger(testLogger(t)))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Join(ctxT(t, 5*time.Second), "n2", "127.0.0.1:7001"); !errors.Is(err, ErrForbidden) {
		t.Errorf("Join with a non-admin certificate = %v, want ErrForbidden", err)
	}
}

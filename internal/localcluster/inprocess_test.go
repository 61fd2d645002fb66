package localcluster

import (
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/quotamesh/quotamesh/limits"
)

// An in-process cluster becomes ready, applies a limit on every node, and
// closes; its certificates are where `certs init` puts them.
func TestInProcess(t *testing.T) {
	ctx := waitCtx(t)
	c, err := StartInProcess(ctx, t.TempDir(), 2, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := c.Close(); err != nil {
			t.Error(err)
		}
	})
	if err := c.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	rule := limits.Rule{Pattern: "k", Rate: limits.Rate{Count: 5, Window: time.Second}}
	if _, err := c.SetLimit(ctx, rule); err != nil {
		t.Fatal(err)
	}
	for _, n := range c.Nodes {
		if got, ok := n.Table().Get("k"); !ok || got != rule {
			t.Errorf("%s has %v, %v; want %v", n.ID(), got, ok, rule)
		}
	}
	if got := c.Addrs(); len(got) != 2 || got[0] != c.Nodes[0].Addr() {
		t.Errorf("Addrs() = %v", got)
	}
}

package main

import (
	"context"
	"encoding/json"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/quotamesh/quotamesh/internal/localcluster"
	"github.com/quotamesh/quotamesh/limits"
	"github.com/quotamesh/quotamesh/node"
)

// TestLimitAndStatus runs the operator commands against a real 3-node
// cluster in this process, as an operator would with the certificates of
// 'certs init'.
func TestLimitAndStatus(t *testing.T) {
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	lc, err := localcluster.StartInProcess(ctx, dir, 3, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := lc.Close(); err != nil {
			t.Error(err)
		}
	}()
	if err := lc.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	conn := []string{"--addr", lc.Nodes[1].Addr(), "--certs", lc.CertDir, "--timeout", "20s"}
	cli := func(want int, args ...string) string {
		t.Helper()
		code, out, errs := runCmd(t, time.Minute, append(args, conn...)...)
		if code != want {
			t.Fatalf("%v: exit %d, stdout %q, stderr %q; want exit %d", args, code, out, errs, want)
		}
		return out + errs
	}

	if out := cli(0, "limit", "set", "orders.create", "300/s"); !strings.Contains(out, "orders.create 300/s set (Raft index") {
		t.Errorf("limit set: %q", out)
	}
	cli(0, "limit", "set", "user:*", "10/s")
	// Applied everywhere through Raft, not only on the node asked.
	if err := lc.WaitApplied(ctx, limits.Rule{Pattern: "orders.create", Rate: limits.Rate{Count: 300, Window: time.Second}}); err != nil {
		t.Fatal(err)
	}
	if out := cli(0, "limit", "get", "orders.create"); out != "orders.create 300/s\n" {
		t.Errorf("limit get: %q", out)
	}
	if out := cli(0, "limit", "get", "user:42"); !strings.Contains(out, "user:* 10/s (key user:42 matches this rule)") {
		t.Errorf("limit get of a key matched by a pattern: %q", out)
	}
	var rules []ruleJSON
	if err := json.Unmarshal([]byte(cli(0, "limit", "list", "--json")), &rules); err != nil || len(rules) != 2 ||
		rules[0].Pattern != "orders.create" || rules[0].Rate.String() != "300/s" || rules[1].PerSecond != 10 {
		t.Errorf("limit list --json: %+v, %v; want orders.create 300/s and user:* 10/s", rules, err)
	}
	if out := cli(0, "limit", "delete", "user:*"); !strings.Contains(out, "user:* deleted") {
		t.Errorf("limit delete: %q", out)
	}
	if out := cli(1, "limit", "delete", "user:*"); !strings.Contains(out, "no such rule") {
		t.Errorf("limit delete of a missing rule: %q", out)
	}
	if out := cli(1, "limit", "get", "nothing.here"); !strings.Contains(out, `limit get "nothing.here": quotamesh/limits: no such rule`) {
		t.Errorf("limit get of a missing rule: %q", out)
	}
	if out := cli(2, "limit", "set", "orders.create", "300/fortnight"); !strings.Contains(out, `"300/fortnight"`) || !strings.Contains(out, "1000/s") {
		t.Errorf("limit set with a bad rate: %q; want the value and the allowed forms", out)
	}

	// Some traffic, so that status has a top key.
	for _, n := range lc.Nodes {
		for range 50 {
			if _, err := n.Allow(ctx, "orders.create"); err != nil {
				t.Fatal(err)
			}
		}
	}
	out := cli(0, "status")
	for _, want := range []string{"3 members", "Raft leader n", "n1 ", "n2 *", "n3 ", "ready", "orders.create", "300/s"} {
		if !strings.Contains(out, want) {
			t.Errorf("status: no %q in\n%s", want, out)
		}
	}
	var st node.Status
	if err := json.Unmarshal([]byte(cli(0, "status", "--json")), &st); err != nil || st.Node != "n2" || len(st.Members) != 3 {
		t.Errorf("status --json: node %q, %d members, %v; want n2 and 3 members", st.Node, len(st.Members), err)
	}

	checkMetricsDocumented(t, lc.Nodes[0].AdminAddr())

	// n3 leaves and joins again; n1 applies each change soon after.
	members := func(want int) {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for len(lc.Nodes[0].Status(0).Members) != want {
			if time.Now().After(deadline) {
				t.Fatalf("n1 sees %d members; want %d", len(lc.Nodes[0].Status(0).Members), want)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	if out := cli(0, "leave", "n3"); !strings.Contains(out, "n3 left") {
		t.Errorf("leave n3: %q", out)
	}
	members(2)
	if out := cli(0, "join", "n3", lc.Nodes[2].Advertise()); !strings.Contains(out, "n3 at "+lc.Nodes[2].Advertise()+" joined") {
		t.Errorf("join n3: %q", out)
	}
	members(3)
	if out := cli(2, "join", "n 4", "127.0.0.1:1"); !strings.Contains(out, `"n 4"`) {
		t.Errorf("join with a bad ID: %q", out)
	}
}

func TestLimitUnreachable(t *testing.T) {
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	lc, err := localcluster.StartInProcess(ctx, dir, 1, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	certDir := lc.CertDir
	if err := lc.Close(); err != nil { // only the certificates are needed
		t.Fatal(err)
	}
	code, _, errs := runCmd(t, time.Minute, "limit", "list", "--addr", "127.0.0.1:9", "--certs", certDir, "--timeout", "1s")
	if code != 1 || !strings.Contains(errs, "no node answered at 127.0.0.1:9 within 1s") {
		t.Errorf("exit %d, stderr %q; want 1 and no node answered", code, errs)
	}
	// A --certs directory that does not exist is a bad value: usage.
	code, _, errs = runCmd(t, time.Minute, "status", "--certs", dir+"/nowhere")
	if code != 2 || !strings.Contains(errs, "reading the cluster CA") {
		t.Errorf("exit %d, stderr %q; want 2 and the CA named", code, errs)
	}
	if _, err := os.Stat(certDir); err != nil {
		t.Fatal(err)
	}
}

func TestAdminUsage(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"limit", "sett", "x"}, `unknown command "sett"`},
		{[]string{"limit", "set", "orders.create"}, "accepts 2 arg(s)"},
		{[]string{"limit", "set", "a**", "1/s"}, `"a**"`},
		{[]string{"status", "--timeout", "0s"}, "--timeout 0s"},
		{[]string{"status", "--addr", "localhost"}, `--addr "localhost"`},
		{[]string{"join", "n4", "nowhere"}, `address "nowhere"`},
		{[]string{"join", "n4", "h:99999"}, `port "99999"`},
		{[]string{"status", "--addr", "127.0.0.1:99999"}, `port "99999"`},
		{[]string{"status", "--addr", "nosuchhost.invalid:7941"}, `host "nosuchhost.invalid" does not resolve`},
		{[]string{"limit", "set", "k", "-5/s"}, `count "-5" is negative`},
		{[]string{"limit", "set", "k", "10/S"}, `write "s"`},
		{[]string{"limit", "set", "k", " 10/s"}, "white space"},
		{[]string{"limit", "set", "*", "1/s"}, "--all-keys"},
		{[]string{"serve", "--id", "n1", "--certs", "c", "--cluster-id", ""}, "--cluster-id: empty"},
		{[]string{"serve", "--id", "n1", "--certs", "c", "--sync-interval", "-10ms"}, "--sync-interval: -10ms"},
		{[]string{"serve", "--id", "n1", "--certs", "c", "--listen", "127.0.0.1:99999"}, `port "99999"`},
		{[]string{"certs", "init", "--dir", "x", "--clients", "bob"}, "bob=decide"},
	} {
		code, _, errs := runCmd(t, 10*time.Second, c.args...)
		if code != 2 || !strings.Contains(errs, c.want) {
			t.Errorf("%v: exit %d, stderr %q; want 2 and %q", c.args, code, errs, c.want)
		}
	}
}

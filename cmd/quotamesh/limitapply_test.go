package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/quotamesh/quotamesh/internal/localcluster"
	"github.com/quotamesh/quotamesh/limits"
)

// TestLimitApply runs 'limit apply' and 'limit export' against a real
// 3-node cluster, outside in: the happy paths (a dry run changes nothing,
// apply adds and changes, --prune deletes, an export applies back as no
// change) and bad files, each refused with its file, line and key and with
// nothing applied.
func TestLimitApply(t *testing.T) {
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
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
	conn := []string{"--addr", lc.Nodes[0].Addr(), "--certs", lc.CertDir, "--timeout", "20s"}
	cli := func(want int, args ...string) string {
		t.Helper()
		code, out, errs := runCmd(t, time.Minute, append(args, conn...)...)
		if code != want {
			t.Fatalf("%v: exit %d, stdout %q, stderr %q; want exit %d", args, code, out, errs, want)
		}
		return out + errs
	}
	write := func(name, text string) string {
		t.Helper()
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	rules := func() []limits.Rule {
		t.Helper()
		rs, err := lc.Nodes[2].ListLimits(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return rs
	}

	cli(0, "limit", "set", "old.rule", "5/s")
	cli(0, "limit", "set", "orders.create", "500/s")
	v1 := write("v1.yaml", `
limits:
  - pattern: orders.create
    rate: 1000/s
  - pattern: "user:*"
    rate: 10/s
    shadow: true
`)
	out := cli(0, "limit", "apply", "-f", v1, "--dry-run")
	for _, want := range []string{"+ user:* 10/s shadow", "~ orders.create 500/s -> 1000/s", "old.rule 5/s (not in the file; kept: --prune deletes it)", "nothing applied"} {
		if !strings.Contains(out, want) {
			t.Errorf("dry run: no %q in\n%s", want, out)
		}
	}
	if n := len(rules()); n != 2 {
		t.Fatalf("after a dry run: %d rules, want the 2 set before", n)
	}
	out = cli(0, "limit", "apply", "-f", v1)
	if !strings.Contains(out, "applied: 1 added, 1 changed, 0 deleted") {
		t.Errorf("apply: %s", out)
	}
	want := []limits.Rule{{Pattern: "old.rule", Rate: limits.MustParseRate("5/s")},
		{Pattern: "orders.create", Rate: limits.MustParseRate("1000/s")},
		{Pattern: "user:*", Rate: limits.MustParseRate("10/s"), Shadow: true}}
	for _, r := range want {
		if err := lc.WaitApplied(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	out = cli(0, "limit", "apply", "-f", v1, "--prune")
	if !strings.Contains(out, "- old.rule 5/s") || !strings.Contains(out, "applied: 0 added, 0 changed, 1 deleted") {
		t.Errorf("apply --prune: %s", out)
	}
	if got := rules(); len(got) != 2 {
		t.Errorf("after --prune: %v", got)
	}

	// Export writes what apply reads: applying it back changes nothing.
	exported := filepath.Join(dir, "export.yaml")
	cli(0, "limit", "export", "-o", exported)
	b, _ := os.ReadFile(exported)
	if !strings.Contains(string(b), "shadow: true") || !strings.Contains(string(b), "rate: 1000/s") {
		t.Errorf("export:\n%s", b)
	}
	if out := cli(0, "limit", "apply", "-f", exported, "--prune"); !strings.Contains(out, "no changes") {
		t.Errorf("apply of the export: %s", out)
	}
	if out := cli(0, "limit", "export"); !strings.Contains(out, "pattern: user:*") && !strings.Contains(out, `pattern: 'user:*'`) {
		t.Errorf("export to stdout:\n%s", out)
	}

	// Bad files: exit 2, file:line and key named, nothing applied.
	before := rules()
	for _, tc := range []struct{ name, text, want string }{
		{"malformed.yaml", "limits:\n  - pattern: a\n    rate: [1/s\n", "malformed.yaml"},
		{"unknown.yaml", "limits:\n  - pattern: a\n    rate: 1/s\n    burst: 5\n", "unknown.yaml:4: limits[0]: key burst: unknown"},
		{"top.yaml", "rules:\n  - pattern: a\n", "top.yaml:1: key rules: unknown"},
		{"type.yaml", "limits:\n  - pattern: a\n    rate: 1/s\n    shadow: maybe\n", `type.yaml:4: limits[0]: key shadow: "maybe" (str) is not true or false`},
		{"list.yaml", "limits:\n  - pattern: [a]\n    rate: 1/s\n", "list.yaml:2: limits[0]: key pattern: a list is not a string"},
		{"rate.yaml", "limits:\n  - pattern: ok.one\n    rate: 1/s\n  - pattern: b\n    rate: 10/fortnight\n", `rate.yaml:5: limits[1] (pattern b): key rate: quotamesh/limits: invalid rate "10/fortnight"`},
		{"pattern.yaml", "limits:\n  - pattern: 'a**'\n    rate: 1/s\n", "pattern.yaml:2: limits[0]: key pattern:"},
		{"dup.yaml", "limits:\n  - pattern: a\n    rate: 1/s\n  - pattern: a\n    rate: 2/s\n", `dup.yaml:4: limits[1]: key pattern: "a" is already the pattern of the rule on line 2`},
		{"norate.yaml", "limits:\n  - pattern: a\n", "norate.yaml:2: limits[0]: no rate"},
		{"empty.yaml", "", "empty.yaml: the file is empty"},
	} {
		p := write(tc.name, tc.text)
		code, out, errs := runCmd(t, time.Minute, append([]string{"limit", "apply", "-f", p}, conn...)...)
		if code != 2 || !strings.Contains(errs, tc.want) || out != "" {
			t.Errorf("%s: exit %d, stdout %q, stderr %q; want 2 and %q", tc.name, code, out, errs, tc.want)
		}
	}
	if code, _, errs := runCmd(t, time.Minute, append([]string{"limit", "apply"}, conn...)...); code != 2 || !strings.Contains(errs, "-f FILE is required") {
		t.Errorf("apply without -f: %d %q", code, errs)
	}
	if after := rules(); len(after) != len(before) {
		t.Errorf("bad files changed the table: %v -> %v", before, after)
	}
}

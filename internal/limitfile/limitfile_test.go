package limitfile

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/quotamesh/quotamesh/limits"
)

func TestParseErrorsNameTheLineAndKey(t *testing.T) {
	for _, tc := range []struct{ name, in, want string }{
		{"empty", "", "the file is empty"},
		{"not a mapping", "- a\n", "must be a mapping"},
		{"unknown top key", "rules: []\n", "key rules: unknown"},
		{"null list", "limits:\n", "empty; write limits: []"},
		{"not a list", "limits: 3\n", "want a list of rules"},
		{"item not a mapping", "limits:\n  - 3\n", "limits[0]: want a mapping"},
		{"unknown rule key", "limits:\n  - pattern: a\n    rate: 1/s\n    burst: 3\n", "f.yaml:4: limits[0]: key burst: unknown"},
		{"key twice", "limits:\n  - pattern: a\n    pattern: b\n    rate: 1/s\n", "key pattern: given twice"},
		{"wrong type", "limits:\n  - pattern: a\n    rate: 1/s\n    shadow: maybe\n", "key shadow: \"maybe\" (str) is not true or false"},
		{"no rate", "limits:\n  - pattern: a\n", "limits[0]: no rate"},
		{"bad rate", "limits:\n  - pattern: a\n    rate: fast\n", "f.yaml:3: limits[0] (pattern a): key rate:"},
		{"bad pattern", "limits:\n  - pattern: \"a**\"\n    rate: 1/s\n", "key pattern:"},
		{"pattern twice", "limits:\n  - pattern: a\n    rate: 1/s\n  - pattern: a\n    rate: 2/s\n", "limits[1]"},
		{"malformed yaml", "limits: [\n", "f.yaml:"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse("f.yaml", []byte(tc.in))
			if err == nil || !errors.Is(err, ErrBadFile) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Parse(%q) = %v, want ErrBadFile containing %q", tc.in, err, tc.want)
			}
		})
	}
}

func TestWriteThenParseIsTheSameTable(t *testing.T) {
	rules := []limits.Rule{
		{Pattern: "user:*", Rate: limits.MustParseRate("10/s"), Shadow: true},
		{Pattern: "orders.create", Rate: limits.MustParseRate("1000/s")},
	}
	var b bytes.Buffer
	if err := Write(&b, rules, "exported\nby a test"); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(b.String(), "# exported\n# by a test\n") {
		t.Errorf("header not written as comments:\n%s", b.String())
	}
	got, err := Parse("out.yaml", b.Bytes())
	if err != nil {
		t.Fatalf("Parse(Write(rules)): %v\n%s", err, b.String())
	}
	if len(got) != 2 || got[0] != rules[1] || got[1] != rules[0] {
		t.Errorf("round trip = %v, want %v sorted by pattern", got, rules)
	}
}

func TestCompare(t *testing.T) {
	r := func(p, rate string) limits.Rule { return limits.Rule{Pattern: p, Rate: limits.MustParseRate(rate)} }
	live := []limits.Rule{r("a", "1/s"), r("b", "2/s"), r("c", "3/s")}
	want := []limits.Rule{r("a", "1/s"), r("b", "5/s"), r("d", "4/s")}
	d := Compare(live, want)
	if len(d.Add) != 1 || d.Add[0].Pattern != "d" || len(d.Change) != 1 || d.Change[0][1].Pattern != "b" ||
		len(d.Remove) != 1 || d.Remove[0].Pattern != "c" || d.Same != 1 {
		t.Fatalf("Compare = %+v", d)
	}
	if d.Empty(false) || d.Empty(true) {
		t.Error("a diff with additions reported empty")
	}
	only := Compare(live, live[:2])
	if !only.Empty(false) || only.Empty(true) {
		t.Errorf("removals only: Empty(false)=%v Empty(true)=%v, want true, false", only.Empty(false), only.Empty(true))
	}
	var b bytes.Buffer
	d.Print(&b, false)
	if !strings.Contains(b.String(), "+ d") || !strings.Contains(b.String(), "~ b") || !strings.Contains(b.String(), "kept: --prune deletes it") {
		t.Errorf("Print without prune:\n%s", b.String())
	}
}

// FuzzParse: any input gives rules or an ErrBadFile, never a panic, and
// what parses writes back to the same table.
func FuzzParse(f *testing.F) {
	f.Add([]byte("limits:\n  - pattern: \"user:*\"\n    rate: 10/s\n    shadow: true\n"))
	f.Add([]byte("limits: []\n"))
	f.Add([]byte("limits:\n  - pattern: a\n    rate: 100/min\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		rules, err := Parse("fuzz", data)
		if err != nil {
			if !errors.Is(err, ErrBadFile) {
				t.Fatalf("error without ErrBadFile: %v", err)
			}
			return
		}
		var b bytes.Buffer
		if err := Write(&b, rules, ""); err != nil {
			t.Fatal(err)
		}
		again, err := Parse("again", b.Bytes())
		if err != nil || len(again) != len(rules) {
			t.Fatalf("written table does not parse back: %v\n%s", err, b.String())
		}
		for i := range rules {
			if again[i] != rules[i] {
				t.Fatalf("rule %d: %v written, %v read back", i, rules[i], again[i])
			}
		}
	})
}

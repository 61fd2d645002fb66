// Package limitfile reads, writes and compares limits files, the YAML form
// of the limit table that `quotamesh limit apply -f` reads and `limit
// export` writes.
package limitfile

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/quotamesh/quotamesh/limits"
)

// A limits file, as `limit apply -f` reads it and `limit export` writes it:
//
//	limits:
//	  - pattern: orders.create
//	    rate: 1000/s
//	  - pattern: "user:*"
//	    rate: 10/s
//	    shadow: true      # observe only: decides and counts, never denies
//
// The file is the whole table: apply makes the cluster's rules what the
// file says (deleting the others only with --prune).
const limitsFileKey = "limits"

// ErrBadFile marks an error in a limits file (the CLI exits with code 2).
var ErrBadFile = errors.New("bad limits file")

// fileRule is one rule of a limits file as written.
type fileRule struct {
	Pattern string `yaml:"pattern"`
	Rate    string `yaml:"rate"`
	Shadow  bool   `yaml:"shadow,omitempty"`
}

// Read reads and checks a limits file ("-" is standard input).
// Every problem names the file, the line and the key: malformed YAML, an
// unknown key, a value of the wrong type, a missing pattern or rate, a bad
// pattern or rate, a pattern given twice.
func Read(path string, stdin io.Reader) ([]limits.Rule, error) {
	var data []byte
	var err error
	if path == "-" {
		data, err = io.ReadAll(io.LimitReader(stdin, 64<<20))
		path = "(stdin)"
	} else {
		data, err = os.ReadFile(path)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadFile, err)
	}
	return Parse(path, data)
}

// Parse checks the contents of a limits file; name is what errors call
// the file. The rules come back sorted by pattern.
func Parse(path string, data []byte) ([]limits.Rule, error) {
	bad := func(line int, format string, args ...any) error {
		return fmt.Errorf("%w: %s:%d: %s", ErrBadFile, path, line, fmt.Sprintf(format, args...))
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, fmt.Errorf("%w: %s: %s", ErrBadFile, path, strings.TrimPrefix(err.Error(), "yaml: "))
	}
	if len(doc.Content) == 0 {
		return nil, fmt.Errorf("%w: %s: the file is empty; write %s: followed by a list of rules (an empty list is [])", ErrBadFile, path, limitsFileKey)
	}
	root := doc.Content[0]
	if root.Kind != yaml.MappingNode {
		return nil, bad(root.Line, "the file must be a mapping with the key %s", limitsFileKey)
	}
	var list *yaml.Node
	for i := 0; i+1 < len(root.Content); i += 2 {
		k, v := root.Content[i], root.Content[i+1]
		if k.Value != limitsFileKey {
			return nil, bad(k.Line, "key %s: unknown; the file has one key, %s", k.Value, limitsFileKey)
		}
		list = v
	}
	if list == nil {
		return nil, bad(root.Line, "no %s key", limitsFileKey)
	}
	if list.Kind != yaml.SequenceNode {
		if list.Tag == "!!null" {
			return nil, bad(list.Line, "key %s: empty; write %s: [] for no rules", limitsFileKey, limitsFileKey)
		}
		return nil, bad(list.Line, "key %s: want a list of rules (- pattern: ..., rate: ...)", limitsFileKey)
	}
	rules := make([]limits.Rule, 0, len(list.Content))
	seen := map[string]int{}
	for i, item := range list.Content {
		where := fmt.Sprintf("%s[%d]", limitsFileKey, i)
		if item.Kind != yaml.MappingNode {
			return nil, bad(item.Line, "%s: want a mapping with pattern and rate", where)
		}
		lines := map[string]int{}
		for j := 0; j+1 < len(item.Content); j += 2 {
			k := item.Content[j]
			if !slices.Contains([]string{"pattern", "rate", "shadow"}, k.Value) {
				return nil, bad(k.Line, "%s: key %s: unknown; a rule has pattern, rate and shadow", where, k.Value)
			}
			if _, dup := lines[k.Value]; dup {
				return nil, bad(k.Line, "%s: key %s: given twice", where, k.Value)
			}
			lines[k.Value] = k.Line
			v := item.Content[j+1]
			switch want := map[string]string{"pattern": "!!str", "rate": "!!str", "shadow": "!!bool"}[k.Value]; {
			case v.Kind != yaml.ScalarNode || (v.Tag != want && !(want == "!!str" && v.Tag == "!!int")):
				kind := map[string]string{"!!str": "a string", "!!bool": "true or false"}[want]
				return nil, bad(v.Line, "%s: key %s: %s is not %s", where, k.Value, describe(v), kind)
			}
		}
		var fr fileRule
		if err := item.Decode(&fr); err != nil {
			return nil, bad(item.Line, "%s: %s", where, strings.TrimPrefix(err.Error(), "yaml: "))
		}
		for _, k := range []string{"pattern", "rate"} {
			if _, ok := lines[k]; !ok {
				return nil, bad(item.Line, "%s: no %s", where, k)
			}
		}
		if _, err := limits.ParsePattern(fr.Pattern); err != nil {
			return nil, bad(lines["pattern"], "%s: key pattern: %v", where, err)
		}
		rate, err := limits.ParseRate(fr.Rate)
		if err != nil {
			return nil, bad(lines["rate"], "%s (pattern %s): key rate: %v", where, fr.Pattern, err)
		}
		if first, dup := seen[fr.Pattern]; dup {
			return nil, bad(lines["pattern"], "%s: key pattern: %q is already the pattern of the rule on line %d", where, fr.Pattern, first)
		}
		seen[fr.Pattern] = lines["pattern"]
		rules = append(rules, limits.Rule{Pattern: fr.Pattern, Rate: rate, Shadow: fr.Shadow})
	}
	if len(rules) > limits.MaxRules {
		return nil, bad(list.Line, "%d rules; at most %d are allowed", len(rules), limits.MaxRules)
	}
	slices.SortFunc(rules, func(a, b limits.Rule) int { return strings.Compare(a.Pattern, b.Pattern) })
	return rules, nil
}

// describe names a YAML value for an error message.
func describe(v *yaml.Node) string {
	switch v.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	}
	return fmt.Sprintf("%q (%s)", v.Value, strings.TrimPrefix(v.Tag, "!!"))
}

// Write writes rules in the format Read reads, sorted
// by pattern.
func Write(w io.Writer, rules []limits.Rule, header string) error {
	rules = slices.Clone(rules)
	slices.SortFunc(rules, func(a, b limits.Rule) int { return strings.Compare(a.Pattern, b.Pattern) })
	out := struct {
		Limits []fileRule `yaml:"limits"`
	}{Limits: make([]fileRule, 0, len(rules))}
	for _, r := range rules {
		out.Limits = append(out.Limits, fileRule{Pattern: r.Pattern, Rate: r.Rate.String(), Shadow: r.Shadow})
	}
	var b bytes.Buffer
	for _, l := range strings.Split(strings.TrimSpace(header), "\n") {
		if l != "" {
			fmt.Fprintf(&b, "# %s\n", l)
		}
	}
	enc := yaml.NewEncoder(&b)
	enc.SetIndent(2)
	if err := enc.Encode(out); err != nil {
		return err
	}
	if err := enc.Close(); err != nil {
		return err
	}
	_, err := w.Write(b.Bytes())
	return err
}

// Diff is what apply changes: rules to set (new or different) and
// rules to delete (in the cluster, not in the file).
type Diff struct {
	Add    []limits.Rule    // in the file, not in the cluster
	Change [][2]limits.Rule // old, new
	Remove []limits.Rule    // in the cluster, not in the file
	Same   int              // rules the file and the cluster agree on
}

// Compare says what applying want to a cluster whose table is live changes.
func Compare(live, want []limits.Rule) Diff {
	var d Diff
	byPattern := make(map[string]limits.Rule, len(live))
	for _, r := range live {
		byPattern[r.Pattern] = r
	}
	inFile := make(map[string]bool, len(want))
	for _, r := range want {
		inFile[r.Pattern] = true
		old, ok := byPattern[r.Pattern]
		switch {
		case !ok:
			d.Add = append(d.Add, r)
		case old != r:
			d.Change = append(d.Change, [2]limits.Rule{old, r})
		default:
			d.Same++
		}
	}
	for _, r := range live {
		if !inFile[r.Pattern] {
			d.Remove = append(d.Remove, r)
		}
	}
	return d
}

// print writes the diff: + added, ~ changed, - deleted (with prune), and
// the rules only the cluster has, kept without prune.
func (d Diff) Print(w io.Writer, prune bool) {
	for _, r := range d.Add {
		fmt.Fprintf(w, "+ %s\n", r)
	}
	for _, c := range d.Change {
		fmt.Fprintf(w, "~ %s -> %s\n", c[0], strings.TrimPrefix(c[1].String(), c[1].Pattern+" "))
	}
	for _, r := range d.Remove {
		if prune {
			fmt.Fprintf(w, "- %s\n", r)
		} else {
			fmt.Fprintf(w, "  %s (not in the file; kept: --prune deletes it)\n", r)
		}
	}
}

// empty reports whether applying changes nothing.
func (d Diff) Empty(prune bool) bool {
	return len(d.Add) == 0 && len(d.Change) == 0 && (!prune || len(d.Remove) == 0)
}

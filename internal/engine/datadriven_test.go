package engine

// A small interpreter for data-driven test files in the style of
// etcd-io/raft's testdata (github.com/cockroachdb/datadriven): a file is a
// sequence of directives, each a command line, a line "----" and the
// expected output up to the next blank line. Lines starting with '#', and
// blank lines, between directives are comments; they are kept when the file
// is rewritten with -rewrite.

import (
	"flag"
	"fmt"
	"os"
	"strings"
	"testing"
)

var rewrite = flag.Bool("rewrite", false, "rewrite the expected output of the data-driven tests in testdata/ with what they print")

// directive is one command of a data-driven file.
type directive struct {
	pos     string   // file:line of the command, for messages
	comment []string // the comment and blank lines before it
	cmd     string
	args    map[string]string // key=value arguments
	words   []string          // arguments without '='
	want    string
}

// arg returns the argument key, or def if it is absent.
func (d *directive) arg(key, def string) string {
	if v, ok := d.args[key]; ok {
		return v
	}
	return def
}

// runDataDriven runs every directive of the file at path through run, which
// returns the directive's output, and compares that with the expected
// output; with -rewrite it writes the outputs back into the file instead.
func runDataDriven(t *testing.T, path string, run func(d *directive) string) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	ds, trailer := parseDirectives(t, path, string(data))
	var out strings.Builder
	for _, d := range ds {
		got := strings.TrimRight(run(d), "\n")
		if strings.Contains(got, "\n\n") {
			t.Fatalf("%s: %s printed a blank line, which would end its output:\n%s", d.pos, d.cmd, got)
		}
		for _, l := range d.comment {
			out.WriteString(l + "\n")
		}
		out.WriteString(d.cmd + "\n----\n")
		if got != "" {
			out.WriteString(got + "\n")
		}
		out.WriteString("\n")
		if !*rewrite && got != d.want {
			t.Errorf("%s: %s\ngot:\n%s\nwant:\n%s", d.pos, d.cmd, got, d.want)
		}
	}
	for _, l := range trailer {
		out.WriteString(l + "\n")
	}
	if *rewrite {
		if err := os.WriteFile(path, []byte(strings.TrimRight(out.String(), "\n")+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// parseDirectives splits a data-driven file into directives and the comment
// lines after the last one.
func parseDirectives(t *testing.T, path, data string) ([]*directive, []string) {
	t.Helper()
	lines := strings.Split(strings.TrimRight(data, "\n"), "\n")
	var ds []*directive
	var comment []string
	for i := 0; i < len(lines); i++ {
		l := lines[i]
		if strings.TrimSpace(l) == "" || strings.HasPrefix(l, "#") {
			comment = append(comment, l)
			continue
		}
		d := &directive{pos: fmt.Sprintf("%s:%d", path, i+1), comment: comment, cmd: l, args: map[string]string{}}
		comment = nil
		for _, f := range strings.Fields(l)[1:] {
			if k, v, ok := strings.Cut(f, "="); ok {
				d.args[k] = v
			} else {
				d.words = append(d.words, f)
			}
		}
		if i+1 >= len(lines) || lines[i+1] != "----" {
			t.Fatalf("%s: %q is not followed by a line \"----\"", d.pos, l)
		}
		i += 2
		var want []string
		for ; i < len(lines) && lines[i] != ""; i++ {
			want = append(want, lines[i])
		}
		d.want = strings.Join(want, "\n")
		ds = append(ds, d)
	}
	return ds, comment
}

package serveconfig

import (
	"fmt"
	"io"
	"reflect"
	"strconv"
	"strings"
	"time"
)

// WriteReference writes a YAML configuration file for `quotamesh
// serve` that sets every key to its default, each under a comment saying
// what it does and which flag and environment variable set it too. It is
// generated from Options, so it cannot drift from the code;
// docs/operations.md embeds it (a test checks).
func WriteReference(w io.Writer) error {
	o := Defaults()
	v := reflect.ValueOf(o)
	t := v.Type()
	var b strings.Builder
	b.WriteString("# quotamesh serve --config FILE: every key with its default.\n")
	b.WriteString("# Precedence: defaults < this file < QUOTAMESH_* environment < flags.\n")
	for i := range t.NumField() {
		f := t.Field(i)
		key, flag := f.Tag.Get("yaml"), f.Tag.Get("flag")
		env := EnvPrefix + strings.ToUpper(strings.ReplaceAll(flag, "-", "_"))
		fmt.Fprintf(&b, "\n# %s\n# (--%s, %s)\n%s: %s\n", f.Tag.Get("usage"), flag, env, key, yamlValue(v.Field(i)))
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// yamlValue writes a default as YAML.
func yamlValue(v reflect.Value) string {
	switch x := v.Interface().(type) {
	case string:
		if x == "" || strings.ContainsAny(x, ":#") {
			return strconv.Quote(x)
		}
		return x
	case []string:
		q := make([]string, len(x))
		for i, s := range x {
			q[i] = yamlValue(reflect.ValueOf(s))
		}
		return "[" + strings.Join(q, ", ") + "]"
	case time.Duration:
		return x.String()
	}
	return fmt.Sprint(v.Interface())
}

package main

import (
	"bufio"
	"net/http"
	"os"
	"strings"
	"testing"

	"github.com/quotamesh/quotamesh/internal/serveconfig"
)

const operationsDoc = "../../docs/operations.md"

// TestOperationsDocConfigReference checks that docs/operations.md embeds
// what `serve --print-config` prints now.
func TestOperationsDocConfigReference(t *testing.T) {
	doc, err := os.ReadFile(operationsDoc)
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	if err := serveconfig.WriteReference(&b); err != nil {
		t.Fatal(err)
	}
	want := "<!-- BEGIN quotamesh serve --print-config -->\n```yaml\n" + b.String() + "```\n<!-- END quotamesh serve --print-config -->\n"
	if !strings.Contains(string(doc), want) {
		t.Errorf("%s does not hold the current configuration reference; regenerate it with 'quotamesh serve --print-config':\n%s", operationsDoc, b.String())
	}
}

// checkMetricsDocumented checks that every quotamesh_ metric a node serves
// at adminAddr is listed in docs/operations.md.
func checkMetricsDocumented(t *testing.T, adminAddr string) {
	t.Helper()
	doc, err := os.ReadFile(operationsDoc)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.Get("http://" + adminAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	seen := 0
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 3 || f[0] != "#" || f[1] != "TYPE" || !strings.HasPrefix(f[2], "quotamesh_") {
			continue
		}
		seen++
		if !strings.Contains(string(doc), "`"+f[2]+"`") {
			t.Errorf("metric %s is not listed in %s", f[2], operationsDoc)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if seen < 10 {
		t.Errorf("only %d quotamesh_ metrics served; want the node's and the transport's", seen)
	}
}

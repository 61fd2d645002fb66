package check

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/rulefmt"
	"github.com/prometheus/prometheus/promql"
	"github.com/prometheus/prometheus/promql/parser"
)

const rulesFile = "../prometheus/quotamesh-alerts.yaml"

// TestAlertRules checks the alerting rules with Prometheus' own rule
// checker (what promtool check rules runs): YAML shape, unknown fields,
// PromQL, templates; and that every alert says how severe it is and what
// it means.
func TestAlertRules(t *testing.T) {
	groups, errs := rulefmt.ParseFile(rulesFile, false, model.UTF8Validation, parser.NewParser(parser.Options{}), slog.New(slog.DiscardHandler))
	for _, err := range errs {
		t.Error(err)
	}
	if groups == nil {
		return
	}
	n := 0
	for _, g := range groups.Groups {
		for _, r := range g.Rules {
			n++
			if r.Alert == "" {
				t.Errorf("rule %q is not an alert", r.Expr)
			}
			if r.Labels["severity"] == "" || r.Annotations["summary"] == "" || r.Annotations["description"] == "" {
				t.Errorf("alert %s: want a severity label and summary and description annotations", r.Alert)
			}
		}
	}
	for _, want := range []string{"QuotaMeshFenced", "QuotaMeshNoRaftLeader", "QuotaMeshSyncLag", "QuotaMeshHandshakesRefused", "QuotaMeshCertificateExpiresSoon"} {
		if !strings.Contains(mustRead(t, rulesFile), "alert: "+want) {
			t.Errorf("no alert %s", want)
		}
	}
	if n == 0 {
		t.Error("no rules")
	}
}

// appearsLater are metrics a healthy node exports only once something
// happens: a refused handshake. Their queries still run, and their names
// must be in docs/operations.md's metric table.
var appearsLater = []string{"quotamesh_transport_handshakes_refused_total"}

// TestQueriesAgainstANode starts three real nodes (the quotamesh binary,
// built from this repository) with the RLS and HTTP listeners, sets
// limits with 'quotamesh limit apply' (a shadow rule among them), sends
// HTTP decisions that are admitted, denied and shadowed, scrapes every
// node's /metrics three times into an in-memory store (memStore), then
// runs every query of the Grafana dashboard and every alert expression
// through Prometheus' PromQL engine: each must run, each metric it names
// must be one the node exports, and every dashboard panel must show data.
func TestQueriesAgainstANode(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and starts three nodes")
	}
	bin := buildQuotamesh(t)
	dir := t.TempDir()
	run(t, bin, "certs", "init", "--dir", filepath.Join(dir, "certs"), "--nodes", "n1,n2,n3")
	quic, admin, httpAddr := make([]string, 3), make([]string, 3), make([]string, 3)
	var boot []string
	for i := range 3 {
		quic[i], admin[i], httpAddr[i] = freePort(t, "udp"), freePort(t, "tcp"), freePort(t, "tcp")
		boot = append(boot, fmt.Sprintf("n%d=%s", i+1, quic[i]))
	}
	for i := range 3 {
		cmd := exec.Command(bin, "serve", "--id", fmt.Sprintf("n%d", i+1), "--listen", quic[i], "--admin-listen", admin[i],
			"--http-listen", httpAddr[i], "--rls-listen", freePort(t, "tcp"), "--data-dir", filepath.Join(dir, fmt.Sprintf("n%d", i+1)),
			"--certs", filepath.Join(dir, "certs"), "--bootstrap", strings.Join(boot, ","), "--log-format", "json")
		logf, err := os.Create(filepath.Join(dir, fmt.Sprintf("n%d.log", i+1)))
		if err != nil {
			t.Fatal(err)
		}
		cmd.Stdout, cmd.Stderr = logf, logf
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			_ = cmd.Process.Signal(os.Interrupt)
			done := make(chan struct{})
			go func() { _ = cmd.Wait(); close(done) }()
			select {
			case <-done:
			case <-time.After(10 * time.Second):
				_ = cmd.Process.Kill()
				<-done
			}
			logf.Close()
		})
	}
	for i := range 3 {
		waitReady(t, admin[i], filepath.Join(dir, fmt.Sprintf("n%d.log", i+1)))
	}
	limitsFile := filepath.Join(dir, "limits.yaml")
	if err := os.WriteFile(limitsFile, []byte("limits:\n  - pattern: \"api:user=*\"\n    rate: 5/s\n  - pattern: \"try:*\"\n    rate: 2/s\n    shadow: true\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	run(t, bin, "limit", "apply", "-f", limitsFile, "--addr", quic[0], "--certs", filepath.Join(dir, "certs"))

	hc := httpsClient(t, filepath.Join(dir, "certs"))
	var scrapes [3][3]string // round, node
	for round := range 3 {
		for i := range 10 {
			for _, key := range []string{"api:user=1", "try:user=1", "free.key"} {
				post(t, hc, httpAddr[i%3], key)
			}
		}
		time.Sleep(1200 * time.Millisecond) // the node derives decision counters every second
		for i := range 3 {
			scrapes[round][i] = get(t, "http://"+admin[i]+"/metrics")
		}
	}

	db := newMemStore()
	base := time.Now().Truncate(time.Minute)
	present := map[string]bool{}
	for round := range scrapes {
		for i, text := range scrapes[round] {
			loadScrape(t, db, text, fmt.Sprintf("n%d", i+1), base.Add(time.Duration(round)*15*time.Second), present)
		}
	}
	at := base.Add(30 * time.Second)
	eng := promql.NewEngine(promql.EngineOpts{MaxSamples: 1_000_000, Timeout: time.Minute, LookbackDelta: 5 * time.Minute})
	eval := func(what, expr string) (int, error) {
		q, err := eng.NewInstantQuery(context.Background(), db, nil, expr, at)
		if err != nil {
			return 0, fmt.Errorf("%s: %w", what, err)
		}
		defer q.Close()
		res := q.Exec(context.Background())
		if res.Err != nil {
			return 0, fmt.Errorf("%s: %w", what, res.Err)
		}
		switch v := res.Value.(type) {
		case promql.Vector:
			return len(v), nil
		case promql.Scalar:
			return 1, nil
		}
		return 0, fmt.Errorf("%s: unexpected %T", what, res.Value)
	}
	documented := mustRead(t, "../../docs/operations.md")
	checkNames := func(what, expr string) {
		e, err := parser.NewParser(parser.Options{}).ParseExpr(expr)
		if err != nil {
			t.Errorf("%s: %v", what, err)
			return
		}
		parser.Inspect(e, func(n parser.Node, _ []parser.Node) error {
			vs, ok := n.(*parser.VectorSelector)
			if !ok {
				return nil
			}
			name := vs.Name
			if name == "" || name == "up" {
				return nil
			}
			switch {
			case present[name]:
			case slices.Contains(appearsLater, name) && strings.Contains(documented, "`"+name+"`"):
			default:
				t.Errorf("%s: metric %s is not exported by the node (nor a documented one that appears later)", what, name)
			}
			return nil
		})
	}

	var dash struct {
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal([]byte(mustRead(t, "../grafana/quotamesh.json")), &dash); err != nil {
		t.Fatalf("dashboard: %v", err)
	}
	vars := strings.NewReplacer("$__rate_interval", "1m", "$__interval", "15s", "$instance", ".*", "${instance}", ".*")
	for _, p := range dash.Panels {
		rows := 0
		for _, tg := range p.Targets {
			expr := vars.Replace(tg.Expr)
			checkNames("panel "+p.Title, expr)
			n, err := eval("panel "+p.Title, expr)
			if err != nil {
				t.Error(err)
			}
			rows += n
		}
		if rows == 0 && !mentions(p.Targets, appearsLater) {
			t.Errorf("panel %q shows no data against a live node", p.Title)
		}
	}
	groups, _ := rulefmt.ParseFile(rulesFile, false, model.UTF8Validation, parser.NewParser(parser.Options{}), slog.New(slog.DiscardHandler))
	if groups != nil {
		for _, g := range groups.Groups {
			for _, r := range g.Rules {
				checkNames("alert "+r.Alert, r.Expr)
				if n, err := eval("alert "+r.Alert, r.Expr); err != nil {
					t.Error(err)
				} else if n > 0 && r.Alert != "QuotaMeshShadowRuleWouldDeny" {
					t.Errorf("alert %s fires against a healthy node", r.Alert)
				}
			}
		}
	}
}

func mentions(targets []struct {
	Expr string `json:"expr"`
}, names []string) bool {
	for _, tg := range targets {
		for _, n := range names {
			if strings.Contains(tg.Expr, n) {
				return true
			}
		}
	}
	return false
}

// loadScrape parses a text exposition and appends every sample at ts,
// with job="quotamesh" and the instance as Prometheus would add them, and
// up=1.
func loadScrape(t *testing.T, db *memStore, text, instance string, ts time.Time, present map[string]bool) {
	t.Helper()
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(text))
	if err != nil {
		t.Fatalf("parsing the scrape: %v", err)
	}
	ms := ts.UnixMilli()
	add := func(name string, m *dto.Metric, extra map[string]string, v float64) {
		b := labels.NewBuilder(labels.EmptyLabels())
		b.Set(labels.MetricName, name)
		b.Set("job", "quotamesh")
		b.Set("instance", instance)
		for _, lp := range m.GetLabel() {
			b.Set(lp.GetName(), lp.GetValue())
		}
		for k, v := range extra {
			b.Set(k, v)
		}
		if err := db.Append(b.Labels(), ms, v); err != nil {
			t.Fatal(err)
		}
	}
	for name, f := range fams {
		present[name] = true
		for _, m := range f.GetMetric() {
			switch f.GetType() {
			case dto.MetricType_COUNTER:
				add(name, m, nil, m.GetCounter().GetValue())
			case dto.MetricType_GAUGE:
				add(name, m, nil, m.GetGauge().GetValue())
			case dto.MetricType_UNTYPED:
				add(name, m, nil, m.GetUntyped().GetValue())
			case dto.MetricType_HISTOGRAM:
				h := m.GetHistogram()
				for _, bk := range h.GetBucket() {
					add(name+"_bucket", m, map[string]string{"le": fmt.Sprint(bk.GetUpperBound())}, float64(bk.GetCumulativeCount()))
				}
				add(name+"_bucket", m, map[string]string{"le": "+Inf"}, float64(h.GetSampleCount()))
				add(name+"_sum", m, nil, h.GetSampleSum())
				add(name+"_count", m, nil, float64(h.GetSampleCount()))
				present[name+"_bucket"], present[name+"_sum"], present[name+"_count"] = true, true, true
			case dto.MetricType_SUMMARY:
				s := m.GetSummary()
				for _, q := range s.GetQuantile() {
					add(name, m, map[string]string{"quantile": fmt.Sprint(q.GetQuantile())}, q.GetValue())
				}
				add(name+"_sum", m, nil, s.GetSampleSum())
				add(name+"_count", m, nil, float64(s.GetSampleCount()))
			}
		}
	}
	add("up", &dto.Metric{}, nil, 1)
}

// buildQuotamesh builds the binary of this repository (or uses
// QUOTAMESH_BIN).
func buildQuotamesh(t *testing.T) string {
	t.Helper()
	if b := os.Getenv("QUOTAMESH_BIN"); b != "" {
		return b
	}
	out := filepath.Join(t.TempDir(), "quotamesh")
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("go", "build", "-o", out, "./cmd/quotamesh")
	cmd.Dir = root
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/quotamesh: %v\n%s", err, b)
	}
	return out
}

func run(t *testing.T, bin string, args ...string) {
	t.Helper()
	if b, err := exec.Command(bin, args...).CombinedOutput(); err != nil {
		t.Fatalf("quotamesh %v: %v\n%s", args, err, b)
	}
}

func freePort(t *testing.T, network string) string {
	t.Helper()
	if network == "udp" {
		c, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		return c.LocalAddr().String()
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func waitReady(t *testing.T, admin, logPath string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if resp, err := http.Get("http://" + admin + "/readyz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	b, _ := os.ReadFile(logPath)
	t.Fatalf("node at %s not ready within 30 s; its log:\n%s", admin, tail(string(b), 30))
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

func get(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

func post(t *testing.T, hc *http.Client, addr, key string) {
	t.Helper()
	resp, err := hc.Post("https://"+addr+"/v1/allow", "application/json", strings.NewReader(`{"key": "`+key+`"}`))
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 && resp.StatusCode != 429 {
		t.Fatalf("POST /v1/allow %s: %s", key, resp.Status)
	}
}

func mustRead(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

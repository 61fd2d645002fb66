// Package check renders QuotaMesh's Helm chart as `helm template` does
// (Helm's own action package, client-side dry run) and checks every
// deployment file of the repository: the rendered chart and the plain
// manifests against the Kubernetes API schemas, the Prometheus rules with
// Prometheus' rule checker, the Grafana dashboard's queries against a real
// scrape of a node, and the Envoy example against Envoy's generated types.
//
// It is a module of its own (deploy/check/go.mod) so that Helm, the
// Kubernetes API types and Prometheus, which only these checks need, never
// enter the quotamesh module's dependency graph or its binary. It uses no
// network: `go test ./...` here needs only the Go module proxy, once.
package check

import (
	"fmt"
	"io"
	"log/slog"
	"strings"

	"helm.sh/helm/v4/pkg/action"
	chart "helm.sh/helm/v4/pkg/chart/v2"
	"helm.sh/helm/v4/pkg/chart/v2/loader"
	releasev1 "helm.sh/helm/v4/pkg/release/v1"
	"helm.sh/helm/v4/pkg/storage"
	"helm.sh/helm/v4/pkg/storage/driver"
)

// Render renders the chart in dir with values (merged over its
// values.yaml) as release name in namespace, the way `helm template
// --namespace namespace name dir` does: the manifests Helm would install,
// in its install order, then the hooks, each document headed by its
// "# Source:" line.
func Render(dir, name, namespace string, values map[string]any) (string, error) {
	ch, err := loader.Load(dir)
	if err != nil {
		return "", fmt.Errorf("loading the chart %s: %w", dir, err)
	}
	return render(ch, name, namespace, values)
}

func render(ch *chart.Chart, name, namespace string, values map[string]any) (string, error) {
	cfg := action.NewConfiguration(action.ConfigurationSetLogger(slog.NewTextHandler(io.Discard, nil)))
	cfg.Releases = storage.Init(driver.NewMemory())
	inst := action.NewInstall(cfg)
	inst.DryRunStrategy = action.DryRunClient
	inst.ReleaseName = name
	inst.Namespace = namespace
	inst.Replace = true
	rr, err := inst.Run(ch, values)
	if err != nil {
		return "", fmt.Errorf("rendering the chart: %w", err)
	}
	rel, ok := rr.(*releasev1.Release)
	if !ok {
		return "", fmt.Errorf("rendering the chart: unexpected release type %T", rr)
	}
	var b strings.Builder
	b.WriteString(strings.TrimSpace(rel.Manifest))
	b.WriteByte('\n')
	for _, h := range rel.Hooks {
		fmt.Fprintf(&b, "---\n# Source: %s\n%s\n", h.Path, h.Manifest)
	}
	return b.String(), nil
}

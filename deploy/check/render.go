// Package check renders QuotaMesh's Helm chart as `helm template` does
// (Helm's chart loader, values coalescing and template engine, and its
// install-order sorting of manifests and hooks) and checks every
// deployment file of the repository: the rendered chart and the plain
// manifests against the Kubernetes API schemas, the Prometheus rules with
// Prometheus' rule checker, the Grafana dashboard's queries against a real
// scrape of a node, and the Envoy example against Envoy's generated types.
//
// It is a module of its own (deploy/check/go.mod) so that Helm, the
// Kubernetes API types and Prometheus, which only these checks need, never
// enter the quotamesh module's dependency graph or its binary. It uses no
// network: `go test ./...` here needs only the Go module proxy, once.
//
// It imports the few Helm packages that rendering needs rather than
// Helm's action package (kube clients, OCI registry, release storage,
// plugins), and Prometheus' PromQL engine on an in-memory store rather
// than its TSDB: CI builds this module with an empty build cache.
package check

import (
	"context"
	"fmt"
	"strings"

	"helm.sh/helm/v4/pkg/chart/common"
	"helm.sh/helm/v4/pkg/chart/common/util"
	chart "helm.sh/helm/v4/pkg/chart/v2"
	"helm.sh/helm/v4/pkg/chart/v2/loader"
	chartutil "helm.sh/helm/v4/pkg/chart/v2/util"
	"helm.sh/helm/v4/pkg/engine"
	releaseutil "helm.sh/helm/v4/pkg/release/v1/util"
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

// render follows what Helm's action.Install does for a client-side dry
// run (helm template): the release name is validated, dependencies
// processed, values coalesced and checked against the chart's
// values.schema.json, with Helm's default capabilities (no cluster);
// every template is rendered, NOTES.txt set aside, and the rest split
// into manifests and hooks, each sorted in install order.
func render(ch *chart.Chart, name, namespace string, values map[string]any) (string, error) {
	if err := chartutil.ValidateReleaseName(name); err != nil {
		return "", fmt.Errorf("release name %q: %w", name, err)
	}
	if err := chartutil.ProcessDependencies(ch, values); err != nil {
		return "", fmt.Errorf("chart dependencies: %w", err)
	}
	caps := common.DefaultCapabilities.Copy()
	if kv := ch.Metadata.KubeVersion; kv != "" && !chartutil.IsCompatibleRange(kv, caps.KubeVersion.String()) {
		return "", fmt.Errorf("chart requires kubeVersion %s, incompatible with Kubernetes %s", kv, caps.KubeVersion.Version)
	}
	opts := common.ReleaseOptions{Name: name, Namespace: namespace, Revision: 1, IsInstall: true}
	vals, err := util.ToRenderValuesWithSchemaValidation(ch, values, opts, caps, false)
	if err != nil {
		return "", fmt.Errorf("chart values: %w", err)
	}
	var e engine.Engine
	files, err := e.RenderWithContext(context.Background(), ch, vals)
	if err != nil {
		return "", fmt.Errorf("rendering the chart: %w", err)
	}
	for f := range files { // the notes, of the chart and its subcharts: printed, not installed
		if strings.HasSuffix(f, "NOTES.txt") {
			delete(files, f)
		}
	}
	hooks, manifests, err := releaseutil.SortManifests(files, nil, releaseutil.InstallOrder)
	if err != nil {
		return "", fmt.Errorf("rendering the chart: %w", err)
	}
	var m strings.Builder
	for _, mf := range manifests {
		fmt.Fprintf(&m, "---\n# Source: %s\n%s\n", mf.Name, mf.Content)
	}
	var b strings.Builder
	b.WriteString(strings.TrimSpace(m.String()))
	b.WriteByte('\n')
	for _, h := range hooks {
		fmt.Fprintf(&b, "---\n# Source: %s\n%s\n", h.Path, h.Manifest)
	}
	return b.String(), nil
}

package check

import (
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
)

var update = flag.Bool("update", false, "rewrite the plain manifests in deploy/kubernetes from the chart")

const chartDir = "../helm/quotamesh"

// variants are the renderings CI checks; those with a file are the plain
// manifests of deploy/kubernetes, which must be exactly the chart's
// rendering (go test -update rewrites them), so that the chart is the one
// source of both.
var variants = []struct {
	name, file string
	values     map[string]any
}{
	{"defaults", "../kubernetes/quotamesh.yaml", nil},
	{"cert-manager", "../kubernetes/cert-manager/quotamesh.yaml", map[string]any{"certManager": map[string]any{"enabled": true}}},
	{"five nodes, no RLS or HTTP, no limits job, a storage class", "", map[string]any{
		"replicas": 5, "listeners": map[string]any{"rls": 0, "http": 0}, "limits": map[string]any{"enabled": false},
		"storage": map[string]any{"storageClassName": "fast"}, "extraConfig": map[string]any{"policy": "available"}}},
}

func TestChartAndManifests(t *testing.T) {
	v := NewValidator()
	for _, vr := range variants {
		out, err := Render(chartDir, "quotamesh", "quotamesh", vr.values)
		if err != nil {
			t.Fatalf("%s: %v", vr.name, err)
		}
		objs, err := v.Validate("helm template ("+vr.name+")", []byte(out))
		if err != nil {
			t.Errorf("%v", err)
			continue
		}
		kinds := map[string]int{}
		for _, o := range objs {
			kinds[o.Kind]++
			if ss, ok := o.Typed.(*appsv1.StatefulSet); ok {
				want := int32(3)
				if r, ok := vr.values["replicas"].(int); ok {
					want = int32(r)
				}
				if *ss.Spec.Replicas != want {
					t.Errorf("%s: replicas %d, want %d", vr.name, *ss.Spec.Replicas, want)
				}
			}
		}
		for _, k := range []string{"StatefulSet", "Service", "PodDisruptionBudget", "ConfigMap"} {
			if kinds[k] == 0 {
				t.Errorf("%s: no %s rendered (%v)", vr.name, k, kinds)
			}
		}
		if vr.file == "" {
			continue
		}
		header := "# Generated from deploy/helm/quotamesh by 'go test ./... -update' in deploy/check\n" +
			"# (helm template --namespace quotamesh quotamesh deploy/helm/quotamesh" + setFlags(vr.values) + "): edit the chart, not this file.\n"
		want := header + out
		if *update {
			if err := os.MkdirAll(filepath.Dir(vr.file), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(vr.file, []byte(want), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		got, err := os.ReadFile(vr.file)
		if err != nil {
			t.Errorf("%s: %v (go test -update writes it)", vr.file, err)
			continue
		}
		if string(got) != want {
			t.Errorf("%s is not the chart's rendering: run 'go test ./... -update' in deploy/check", vr.file)
		}
		if _, err := v.Validate(vr.file, got); err != nil {
			t.Error(err)
		}
	}
	// Hand-written manifests beside the generated ones.
	files, _ := filepath.Glob("../kubernetes/*/*.yaml")
	more, _ := filepath.Glob("../kubernetes/*.yaml")
	for _, f := range append(files, more...) {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := v.Validate(f, b); err != nil {
			t.Error(err)
		}
	}
}

func setFlags(values map[string]any) string {
	if c, ok := values["certManager"].(map[string]any); ok && c["enabled"] == true {
		return " --set certManager.enabled=true"
	}
	return ""
}

// TestValidatorRefuses: the validator is not a no-op; each of these is a
// mistake the API server would refuse or a pod would fail on.
func TestValidatorRefuses(t *testing.T) {
	out, err := Render(chartDir, "quotamesh", "quotamesh", nil)
	if err != nil {
		t.Fatal(err)
	}
	v := NewValidator()
	for _, tc := range []struct{ name, old, new, want string }{
		{"unknown field", "podManagementPolicy: Parallel", "podManagementPolicy: Parallel\n  podManagmentPolicy: Parallel", "unknown field"},
		{"wrong type", "replicas: 3", "replicas: three", "replicas"},
		{"unknown kind", "kind: PodDisruptionBudget", "kind: PodDisruptionBudgett", "not a kind"},
		{"missing volume", "mountPath: /var/lib/quotamesh", "mountPath: /var/lib/quotamesh\n            - name: nowhere\n              mountPath: /x", `volume "nowhere"`},
		{"probe port", "port: admin", "port: admn", `port "admn"`},
		{"selector", "serviceName: quotamesh-peers", "serviceName: quotamesh-peer", "serviceName"},
	} {
		bad := strings.Replace(out, tc.old, tc.new, 1)
		if bad == out {
			t.Fatalf("%s: %q not found in the rendering", tc.name, tc.old)
		}
		if _, err := v.Validate(tc.name, []byte(bad)); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v; want an error naming %q", tc.name, err, tc.want)
		}
	}
}

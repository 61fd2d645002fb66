package check

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer/json"
	"k8s.io/apimachinery/pkg/util/managedfields"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/applyconfigurations"
	"k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/yaml"
)

// Object is one document of a manifest stream, decoded.
type Object struct {
	// Source is where it came from: the "# Source:" line Helm writes, or
	// the file, and its index in the stream.
	Source string
	Kind   string
	Name   string
	// Typed is the Kubernetes API object (nil for kinds outside the core
	// API, such as cert-manager's).
	Typed runtime.Object
}

// Validator checks Kubernetes manifests against the API's schemas: the
// typed Go structs of k8s.io/api (strict decoding: no unknown or
// duplicate field, every value of its field's type) and the OpenAPI-derived
// schema that server-side apply validates with (client-go's
// applyconfigurations), then the references between objects.
type Validator struct {
	strict runtime.Decoder
	types  managedfields.TypeConverter
}

// NewValidator returns a validator for the API version of k8s.io/api this
// module requires.
func NewValidator() *Validator {
	return &Validator{
		strict: json.NewSerializerWithOptions(json.DefaultMetaFactory, scheme.Scheme, scheme.Scheme,
			json.SerializerOptions{Yaml: true, Strict: true}),
		types: applyconfigurations.NewTypeConverter(scheme.Scheme),
	}
}

// Validate decodes and checks every document of stream (YAML, "---"
// separated), naming source and the document in errors, and returns the
// objects.
func (v *Validator) Validate(source string, stream []byte) ([]Object, error) {
	var objs []Object
	var errs []error
	r := utilyaml.NewYAMLReader(bufioReader(stream))
	for i := 0; ; i++ {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("%s: document %d: %w", source, i, err)
		}
		where := fmt.Sprintf("%s: document %d", source, i)
		if s := sourceLine(doc); s != "" {
			where = fmt.Sprintf("%s (%s)", where, s)
		}
		if len(bytes.TrimSpace(stripComments(doc))) == 0 {
			continue
		}
		o, err := v.object(where, doc)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		objs = append(objs, o)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if err := crossCheck(objs); err != nil {
		return nil, fmt.Errorf("%s: %w", source, err)
	}
	return objs, nil
}

func (v *Validator) object(where string, doc []byte) (Object, error) {
	var u unstructured.Unstructured
	js, err := yaml.YAMLToJSONStrict(doc)
	if err != nil {
		return Object{}, fmt.Errorf("%s: %w", where, err)
	}
	if err := u.UnmarshalJSON(js); err != nil {
		return Object{}, fmt.Errorf("%s: %w", where, err)
	}
	o := Object{Source: where, Kind: u.GetKind(), Name: u.GetName()}
	where = fmt.Sprintf("%s %s %q", where, o.Kind, o.Name)
	gvk := u.GroupVersionKind()
	if o.Name == "" {
		return o, fmt.Errorf("%s: no metadata.name", where)
	}
	if gvk.Group == "cert-manager.io" {
		return o, checkCertManager(where, js)
	}
	if !scheme.Scheme.Recognizes(gvk) {
		return o, fmt.Errorf("%s: %s is not a kind of the Kubernetes API", where, gvk)
	}
	obj, _, err := v.strict.Decode(doc, nil, nil)
	if err != nil {
		return o, fmt.Errorf("%s: %w", where, err)
	}
	if _, err := v.types.ObjectToTyped(&u); err != nil {
		return o, fmt.Errorf("%s: against the API schema: %w", where, err)
	}
	o.Typed = obj
	return o, nil
}

// crossCheck checks what the API server would only find out later, or
// never: selectors that select the pods, services and volumes that exist,
// probes on ports the container has.
func crossCheck(objs []Object) error {
	var errs []error
	bad := func(o Object, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s %s %q: %s", o.Source, o.Kind, o.Name, fmt.Sprintf(format, args...)))
	}
	services := map[string]*corev1.Service{}
	configMaps := map[string]bool{}
	var podLabels []map[string]string
	for _, o := range objs {
		switch t := o.Typed.(type) {
		case *corev1.Service:
			services[t.Name] = t
		case *corev1.ConfigMap:
			configMaps[t.Name] = true
		case *appsv1.StatefulSet:
			podLabels = append(podLabels, t.Spec.Template.Labels)
		}
	}
	selects := func(sel map[string]string) bool {
		return slices.ContainsFunc(podLabels, func(l map[string]string) bool { return labels.SelectorFromSet(sel).Matches(labels.Set(l)) })
	}
	for _, o := range objs {
		switch t := o.Typed.(type) {
		case *appsv1.StatefulSet:
			sel, err := metaSelector(t.Spec.Selector)
			if err != nil || !sel.Matches(labels.Set(t.Spec.Template.Labels)) {
				bad(o, "spec.selector does not select the pod template's labels %v", t.Spec.Template.Labels)
			}
			if s, ok := services[t.Spec.ServiceName]; !ok || s.Spec.ClusterIP != corev1.ClusterIPNone {
				bad(o, "spec.serviceName %q is not a headless Service of these manifests", t.Spec.ServiceName)
			}
			var claims []string
			for _, c := range t.Spec.VolumeClaimTemplates {
				claims = append(claims, c.Name)
			}
			errs = append(errs, checkPod(o, &t.Spec.Template.Spec, claims, configMaps)...)
		case *batchv1.Job:
			errs = append(errs, checkPod(o, &t.Spec.Template.Spec, nil, configMaps)...)
			if p := t.Spec.Template.Spec.RestartPolicy; p != corev1.RestartPolicyOnFailure && p != corev1.RestartPolicyNever {
				bad(o, "restartPolicy %q: a Job's pods need OnFailure or Never", p)
			}
		case *corev1.Service:
			if !selects(t.Spec.Selector) {
				bad(o, "spec.selector %v selects no pod of these manifests", t.Spec.Selector)
			}
		case *policyv1.PodDisruptionBudget:
			if t.Spec.Selector == nil || !selects(t.Spec.Selector.MatchLabels) {
				bad(o, "spec.selector selects no pod of these manifests")
			}
		}
	}
	return errors.Join(errs...)
}

func checkPod(o Object, spec *corev1.PodSpec, claims []string, configMaps map[string]bool) []error {
	var errs []error
	bad := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s %s %q: %s", o.Source, o.Kind, o.Name, fmt.Sprintf(format, args...)))
	}
	volumes := slices.Clone(claims)
	for _, v := range spec.Volumes {
		volumes = append(volumes, v.Name)
		if v.ConfigMap != nil && !configMaps[v.ConfigMap.Name] {
			bad("volume %q: ConfigMap %q is not in these manifests", v.Name, v.ConfigMap.Name)
		}
	}
	for _, c := range spec.Containers {
		for _, m := range c.VolumeMounts {
			if !slices.Contains(volumes, m.Name) {
				bad("container %q mounts volume %q, which the pod does not have", c.Name, m.Name)
			}
		}
		ports := map[string]bool{}
		for _, p := range c.Ports {
			ports[p.Name] = true
		}
		for what, p := range map[string]*corev1.Probe{"readinessProbe": c.ReadinessProbe, "livenessProbe": c.LivenessProbe, "startupProbe": c.StartupProbe} {
			if p != nil && p.HTTPGet != nil && p.HTTPGet.Port.StrVal != "" && !ports[p.HTTPGet.Port.StrVal] {
				bad("container %q: %s on port %q, which it does not name", c.Name, what, p.HTTPGet.Port.StrVal)
			}
		}
	}
	return errs
}

// sourceLine returns the "# Source: ..." comment Helm heads a document
// with.
func sourceLine(doc []byte) string {
	for _, l := range strings.Split(string(doc), "\n") {
		if s, ok := strings.CutPrefix(strings.TrimSpace(l), "# Source: "); ok {
			return s
		}
	}
	return ""
}

func stripComments(doc []byte) []byte {
	var b bytes.Buffer
	for _, l := range strings.Split(string(doc), "\n") {
		if t := strings.TrimSpace(l); t != "" && !strings.HasPrefix(t, "#") && t != "---" {
			b.WriteString(l)
			b.WriteByte('\n')
		}
	}
	return b.Bytes()
}

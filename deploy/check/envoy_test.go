package check

import (
	"strings"
	"testing"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	ratelimitv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ratelimit/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"sigs.k8s.io/yaml"
)

// TestEnvoyExample decodes the Envoy example into Envoy's own bootstrap
// type (every typed_config resolved to its generated type; an unknown
// field is an error) and runs the generated validation rules, then checks
// that it asks QuotaMesh's RLS, in the domain and with the descriptors
// docs/operations.md describes.
func TestEnvoyExample(t *testing.T) {
	js, err := yaml.YAMLToJSONStrict([]byte(mustRead(t, "../envoy/envoy.yaml")))
	if err != nil {
		t.Fatal(err)
	}
	var b bootstrapv3.Bootstrap
	if err := protojson.Unmarshal(js, &b); err != nil {
		t.Fatalf("envoy.yaml: %v", err)
	}
	if err := b.ValidateAll(); err != nil {
		t.Fatalf("envoy.yaml: %v", err)
	}
	var hcm hcmv3.HttpConnectionManager
	if err := b.GetStaticResources().GetListeners()[0].GetFilterChains()[0].GetFilters()[0].GetTypedConfig().UnmarshalTo(&hcm); err != nil {
		t.Fatal(err)
	}
	var rl ratelimitv3.RateLimit
	if err := hcm.GetHttpFilters()[0].GetTypedConfig().UnmarshalTo(&rl); err != nil {
		t.Fatal(err)
	}
	if rl.GetDomain() != "edge" || rl.GetRateLimitService().GetGrpcService().GetEnvoyGrpc().GetClusterName() != "quotamesh_rls" {
		t.Errorf("rate limit filter: domain %q, cluster %q", rl.GetDomain(), rl.GetRateLimitService().GetGrpcService().GetEnvoyGrpc().GetClusterName())
	}
	routes := hcm.GetRouteConfig().GetVirtualHosts()[0].GetRoutes()[0].GetRoute().GetRateLimits()
	var actions []string
	for _, r := range routes {
		for _, a := range r.GetActions() {
			actions = append(actions, strings.SplitN(a.String(), ":", 2)[0])
		}
	}
	if len(routes) != 2 || !strings.Contains(strings.Join(actions, ","), "remote_address") || !strings.Contains(strings.Join(actions, ","), "request_headers") {
		t.Errorf("rate_limits: %v; want a remote_address and a request_headers descriptor", actions)
	}
}

package node

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	rlv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/common/ratelimit/v3"
	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/quotamesh/quotamesh/internal/certs"
	"github.com/quotamesh/quotamesh/internal/httpapi"
	"github.com/quotamesh/quotamesh/internal/rls"
	"github.com/quotamesh/quotamesh/limits"
)

// TestGateways: the RLS and HTTP decision APIs of a node that requires
// client certificates, over real TLS on 127.0.0.1: a CA-signed client is
// served, an anonymous caller and one from another CA are refused at the
// handshake; decisions count in the same windows as embedded ones; a
// shadow rule never answers OVER_LIMIT.
func TestGateways(t *testing.T) {
	c := newCluster(t, 1, func(cfg *Config) {
		cfg.Gateway = GatewayConfig{RLSListen: "127.0.0.1:0", HTTPListen: "127.0.0.1:0"}
	})
	c.startAll()
	c.waitReady(10 * time.Second)
	n1 := c.nodes["n1"]
	ctx := ctxT(t, 30*time.Second)
	for _, r := range []limits.Rule{
		{Pattern: "edge:remote_address=*", Rate: limits.MustParseRate("5/s")},
		{Pattern: "shadow:*", Rate: limits.MustParseRate("5/s"), Shadow: true},
	} {
		if _, err := n1.SetLimit(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, 5*time.Second, "rules applied", func() string {
		if n1.store.Table().Len() != 2 {
			return "not yet"
		}
		return ""
	})

	b, err := c.ca.IssueClient("envoy", certs.RoleDecide, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	good := &tls.Config{RootCAs: c.ca.Pool(), ServerName: "127.0.0.1", Certificates: []tls.Certificate{b.TLSCertificate()}}
	other := newTestCA(t)
	ob, _ := other.IssueClient("envoy", certs.RoleDecide, time.Hour)
	for name, tc := range map[string]*tls.Config{
		"good":      good,
		"anonymous": {RootCAs: c.ca.Pool(), ServerName: "127.0.0.1"},
		"other CA":  {RootCAs: c.ca.Pool(), ServerName: "127.0.0.1", Certificates: []tls.Certificate{ob.TLSCertificate()}},
	} {
		cc, err := grpc.NewClient(n1.RLSAddr(), grpc.WithTransportCredentials(credentials.NewTLS(tc)))
		if err != nil {
			t.Fatal(err)
		}
		rc := rlsv3.NewRateLimitServiceClient(cc)
		var codes []string
		for range 7 {
			r, err := rc.ShouldRateLimit(ctx, &rlsv3.RateLimitRequest{Domain: "edge",
				Descriptors: []*rlv3.RateLimitDescriptor{rls.Descriptor(rls.Entry{Key: "remote_address", Value: "10.0.0.1"})}})
			if err != nil {
				codes = append(codes, "error")
				continue
			}
			codes = append(codes, r.OverallCode.String())
		}
		switch got := strings.Join(codes, ","); {
		case name == "good" && got != "OK,OK,OK,OK,OK,OVER_LIMIT,OVER_LIMIT":
			t.Errorf("%s: %s; want 5 OK then OVER_LIMIT", name, got)
		case name != "good" && strings.Count(got, "error") != 7:
			t.Errorf("%s: %s; want every call refused", name, got)
		}
		if name == "good" {
			for i := range 8 {
				r, err := rc.ShouldRateLimit(ctx, &rlsv3.RateLimitRequest{Domain: "shadow",
					Descriptors: []*rlv3.RateLimitDescriptor{rls.Descriptor(rls.Entry{Key: "user", Value: "7"})}})
				if err != nil || r.OverallCode != rlsv3.RateLimitResponse_OK {
					t.Errorf("shadow step %d: %v, %v; want OK", i, r, err)
				}
			}
		}
		_ = cc.Close()
	}
	// The RLS's admissions are the embedded path's: the key is spent.
	if d, _ := n1.AllowN(ctx, "edge:remote_address=10.0.0.1", 1); d.Allowed {
		t.Error("embedded AllowN after the RLS spent the key: allowed")
	}
	if v := metricValue(t, n1.gatherer, metricShadowDenied, map[string]string{"rule": "shadow:*"}); v != 3 {
		t.Errorf("shadow denials %v, want 3", v)
	}

	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: good}, Timeout: 10 * time.Second}
	defer hc.CloseIdleConnections()
	post := func(cl *http.Client, body string) (int, string, error) {
		resp, err := cl.Post("https://"+n1.HTTPAddr()+httpapi.Path, "application/json", strings.NewReader(body))
		if err != nil {
			return 0, "", err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b), nil
	}
	code, body, err := post(hc, `{"key": "edge:remote_address=10.0.0.2", "n": 5}`)
	var r httpapi.Response
	if err != nil || code != 200 || json.Unmarshal([]byte(body), &r) != nil || r.Rule != "edge:remote_address=*" || r.Remaining != 0 {
		t.Errorf("HTTP allow: %d %s %v", code, body, err)
	}
	if code, body, err := post(hc, `{"key": "edge:remote_address=10.0.0.2"}`); err != nil || code != 429 {
		t.Errorf("HTTP denied: %d %s %v", code, body, err)
	}
	anon := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: c.ca.Pool(), ServerName: "127.0.0.1"}}, Timeout: 10 * time.Second}
	defer anon.CloseIdleConnections()
	if _, _, err := post(anon, `{"key": "k"}`); err == nil {
		t.Error("HTTP without a client certificate: served")
	}
	if v := metricValue(t, n1.gatherer, metricAPIDecisions, map[string]string{"api": "http", "rule": "edge:remote_address=*", "result": "denied"}); v != 1 {
		t.Errorf("%s{http, denied} = %v, want 1", metricAPIDecisions, v)
	}
	if v := metricValue(t, n1.gatherer, metricAPIRequests, map[string]string{"api": "rls", "outcome": "over_limit"}); v != 2 {
		t.Errorf("%s{rls, over_limit} = %v, want 2", metricAPIRequests, v)
	}

	// Shutdown closes both listeners; later calls fail fast.
	addr := n1.RLSAddr()
	if err := n1.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	n1.Node = nil
	cc, _ := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(good)))
	defer cc.Close()
	cctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	if _, err := rlsv3.NewRateLimitServiceClient(cc).ShouldRateLimit(cctx, &rlsv3.RateLimitRequest{Domain: "edge",
		Descriptors: []*rlv3.RateLimitDescriptor{rls.Descriptor(rls.Entry{Key: "a", Value: "b"})}}); err == nil {
		t.Error("RLS after shutdown: answered")
	}
}

// TestGatewayRouteHome: with RouteHome, and with the default RouteThin
// for a key nobody has used (thin), a decision asked of one node is made
// at the key's home node; the node's client to its peers closes with the
// node.
func TestGatewayRouteHome(t *testing.T) {
	for _, r := range []GatewayRoute{RouteHome, ""} {
		t.Run(string(r)+"_", func(t *testing.T) { testGatewayRoute(t, r) })
	}
}

func testGatewayRoute(t *testing.T, r GatewayRoute) {
	c := newCluster(t, 3, func(cfg *Config) {
		cfg.Gateway = GatewayConfig{HTTPListen: "127.0.0.1:0", Route: r}
	})
	c.startAll()
	c.waitReady(15 * time.Second)
	n1 := c.nodes["n1"]
	ctx := ctxT(t, 30*time.Second)
	if _, err := n1.SetLimit(ctx, limits.Rule{Pattern: "k.*", Rate: limits.MustParseRate("100/s")}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "rule applied everywhere", func() string {
		for _, tn := range c.running() {
			if tn.store.Table().Len() != 1 {
				return tn.id
			}
		}
		return ""
	})
	// A key homed on another node, and one homed on n1.
	var away, here string
	for i := 0; away == "" || here == ""; i++ {
		k := fmt.Sprintf("k.%d", i)
		switch h, _ := n1.homeOf(k); {
		case h == "n1" && here == "":
			here = k
		case h != "n1" && away == "":
			away = k
		}
	}
	cb, err := c.ca.IssueClient("gateway-test", certs.RoleDecide, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: c.ca.Pool(), ServerName: "127.0.0.1",
		Certificates: []tls.Certificate{cb.TLSCertificate()}}}, Timeout: 10 * time.Second}
	defer hc.CloseIdleConnections()
	for _, k := range []string{away, here} {
		resp, err := hc.Post("https://"+n1.HTTPAddr()+httpapi.Path, "application/json", strings.NewReader(`{"key": "`+k+`"}`))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("%s: %s", k, resp.Status)
		}
	}
	home, _ := n1.homeOf(away)
	if _, _, ok := c.nodes[home].eng.Registry().Lookup(away); !ok {
		t.Errorf("key %s was not decided at its home %s", away, home)
	}
	if _, _, ok := n1.eng.Registry().Lookup(away); ok {
		t.Errorf("key %s, homed on %s, was decided on n1 too", away, home)
	}
	if _, _, ok := n1.eng.Registry().Lookup(here); !ok {
		t.Errorf("key %s, homed on n1, was not decided there", here)
	}
}

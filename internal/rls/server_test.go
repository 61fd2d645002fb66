package rls

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	rlv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/common/ratelimit/v3"
	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/quotamesh/quotamesh"
	"github.com/quotamesh/quotamesh/limits"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fakeDecider admits up to limit tokens per key, forever; keys outside
// rules are unlimited; "down" is unavailable.
type fakeDecider struct {
	rules map[string]limits.Rate // key prefix before ':' ... → rate
	used  map[string]int64
	down  bool
	calls []string
}

func (f *fakeDecider) Decide(_ context.Context, key string, n int64) (quotamesh.Decision, string, error) {
	f.calls = append(f.calls, key)
	if f.down {
		return quotamesh.Decision{}, "", quotamesh.ErrUnavailable
	}
	for p, r := range f.rules {
		if !strings.HasPrefix(key, strings.TrimSuffix(p, "*")) {
			continue
		}
		if n > r.Count {
			return quotamesh.Decision{Limit: r}, p, quotamesh.ErrExceedsLimit
		}
		if f.used[key]+n > r.Count {
			return quotamesh.Decision{Limit: r, RetryAfter: 300 * time.Millisecond}, p, nil
		}
		f.used[key] += n
		return quotamesh.Decision{Allowed: true, Limit: r, Remaining: r.Count - f.used[key]}, p, nil
	}
	return quotamesh.Decision{Allowed: true, Unlimited: true}, "", nil
}

func serve(t *testing.T, cfg Config) rlsv3.RateLimitServiceClient {
	t.Helper()
	ln := bufconn.Listen(1 << 20)
	s := New(cfg)
	done := make(chan error, 1)
	go func() { done <- s.Serve(ln) }()
	cc, err := grpc.NewClient("passthrough:///bufnet",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return ln.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cc.Close()
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		s.GracefulStop(ctx)
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return rlsv3.NewRateLimitServiceClient(cc)
}

func TestShouldRateLimit(t *testing.T) {
	f := &fakeDecider{rules: map[string]limits.Rate{"edge:remote_address=*": limits.MustParseRate("3/s"), "api:user=*": limits.MustParseRate("100/5s")}, used: map[string]int64{}}
	var outcomes []Outcome
	c := serve(t, Config{Decider: f, Observe: func(o Outcome, _ bool) { outcomes = append(outcomes, o) }})
	ctx := context.Background()
	ip := Descriptor(Entry{"remote_address", "10.0.0.1"})

	for i := range 3 {
		r, err := c.ShouldRateLimit(ctx, &rlsv3.RateLimitRequest{Domain: "edge", Descriptors: []*rlv3.RateLimitDescriptor{ip}})
		if err != nil || r.OverallCode != rlsv3.RateLimitResponse_OK {
			t.Fatalf("step %d: %v, %v; want OK", i, r, err)
		}
		st := r.Statuses[0]
		if st.CurrentLimit.GetRequestsPerUnit() != 3 || st.CurrentLimit.GetUnit() != rlsv3.RateLimitResponse_RateLimit_SECOND ||
			st.LimitRemaining != uint32(2-i) || st.DurationUntilReset.AsDuration() != time.Second {
			t.Errorf("step %d: status %v; want 3/SECOND, remaining %d, reset 1s", i, st, 2-i)
		}
		if i == 0 && (len(r.ResponseHeadersToAdd) != 2 || r.ResponseHeadersToAdd[0].Key != "RateLimit-Policy" ||
			r.ResponseHeadersToAdd[0].Value != `"edge:remote_address=*";q=3;w=1` || r.ResponseHeadersToAdd[1].Value != `"edge:remote_address=*";r=2`) {
			t.Errorf("headers: %v", r.ResponseHeadersToAdd)
		}
	}
	if f.calls[0] != "edge:remote_address=10.0.0.1" {
		t.Errorf("key %q", f.calls[0])
	}
	r, err := c.ShouldRateLimit(ctx, &rlsv3.RateLimitRequest{Domain: "edge", Descriptors: []*rlv3.RateLimitDescriptor{ip, Descriptor(Entry{"other", "x"})}})
	if err != nil || r.OverallCode != rlsv3.RateLimitResponse_OVER_LIMIT || r.Statuses[0].Code != rlsv3.RateLimitResponse_OVER_LIMIT ||
		r.Statuses[1].Code != rlsv3.RateLimitResponse_OK || r.Statuses[0].DurationUntilReset.AsDuration() != 300*time.Millisecond {
		t.Fatalf("over limit with an unmatched descriptor: %v, %v", r, err)
	}
	hdr := map[string]string{}
	for _, h := range r.ResponseHeadersToAdd {
		hdr[h.Key] = h.Value
	}
	if hdr["Retry-After"] != "1" || hdr["RateLimit"] != `"edge:remote_address=*";r=0;t=1` {
		t.Errorf("denial headers: %v", hdr)
	}

	// hits_addend, request level and descriptor level; a 5 s window.
	user := Descriptor(Entry{"user", "42"})
	r, err = c.ShouldRateLimit(ctx, &rlsv3.RateLimitRequest{Domain: "api", HitsAddend: 60, Descriptors: []*rlv3.RateLimitDescriptor{user}})
	if err != nil || r.OverallCode != rlsv3.RateLimitResponse_OK || r.Statuses[0].LimitRemaining != 40 || r.Statuses[0].CurrentLimit.GetUnitMultiplier().GetValue() != 5 {
		t.Fatalf("hits_addend 60: %v, %v; want OK, 40 remaining, 100 per 5 SECOND", r, err)
	}
	user.HitsAddend = wrapperspb.UInt64(50)
	if r, err = c.ShouldRateLimit(ctx, &rlsv3.RateLimitRequest{Domain: "api", HitsAddend: 1, Descriptors: []*rlv3.RateLimitDescriptor{user}}); err != nil || r.OverallCode != rlsv3.RateLimitResponse_OVER_LIMIT {
		t.Fatalf("descriptor hits_addend 50 with 40 left: %v, %v; want OVER_LIMIT", r, err)
	}
	user.HitsAddend = wrapperspb.UInt64(500)
	if r, err = c.ShouldRateLimit(ctx, &rlsv3.RateLimitRequest{Domain: "api", Descriptors: []*rlv3.RateLimitDescriptor{user}}); err != nil || r.OverallCode != rlsv3.RateLimitResponse_OVER_LIMIT ||
		r.Statuses[0].DurationUntilReset.AsDuration() != 5*time.Second {
		t.Fatalf("hits above the whole limit: %v, %v; want OVER_LIMIT, reset after the window", r, err)
	}
	neg := Descriptor(Entry{"user", "42"})
	neg.IsNegativeHits = true
	if r, err = c.ShouldRateLimit(ctx, &rlsv3.RateLimitRequest{Domain: "api", Descriptors: []*rlv3.RateLimitDescriptor{neg}}); err != nil || r.OverallCode != rlsv3.RateLimitResponse_OK {
		t.Fatalf("negative hits: %v, %v; want OK", r, err)
	}

	// A limit override is not honoured: the cluster's rule decides.
	ov := Descriptor(Entry{"remote_address", "10.0.0.9"})
	ov.Limit = &rlv3.RateLimitDescriptor_RateLimitOverride{RequestsPerUnit: 1000, Unit: typev3.RateLimitUnit_SECOND}
	r, err = c.ShouldRateLimit(ctx, &rlsv3.RateLimitRequest{Domain: "edge", Descriptors: []*rlv3.RateLimitDescriptor{ov}})
	if err != nil || r.Statuses[0].CurrentLimit.GetRequestsPerUnit() != 3 {
		t.Errorf("override: %v, %v; want the cluster's 3/s", r, err)
	}

	// Bad requests: INVALID_ARGUMENT, and nothing decided.
	before := len(f.calls)
	for name, req := range map[string]*rlsv3.RateLimitRequest{
		"no descriptors":                    {Domain: "edge"},
		"empty descriptor after a good one": {Domain: "edge", Descriptors: []*rlv3.RateLimitDescriptor{ip, {}}},
		"key too long":                      {Domain: "edge", Descriptors: []*rlv3.RateLimitDescriptor{Descriptor(Entry{"v", strings.Repeat("\x01", 90)})}},
		"too many descriptors":              {Domain: "edge", Descriptors: make([]*rlv3.RateLimitDescriptor, MaxDescriptors+1)},
	} {
		if _, err := c.ShouldRateLimit(ctx, req); status.Code(err) != codes.InvalidArgument {
			t.Errorf("%s: %v; want InvalidArgument", name, err)
		}
	}
	if len(f.calls) != before {
		t.Errorf("bad requests decided %v", f.calls[before:])
	}
	f.down = true
	if _, err := c.ShouldRateLimit(ctx, &rlsv3.RateLimitRequest{Domain: "edge", Descriptors: []*rlv3.RateLimitDescriptor{ip}}); status.Code(err) != codes.Unavailable {
		t.Errorf("node not serving: %v; want Unavailable", err)
	}
	want := []Outcome{"ok", "ok", "ok", "over_limit", "ok", "over_limit", "over_limit", "ok", "ok", "bad_request", "bad_request", "bad_request", "bad_request", "unavailable"}
	if strings.Join(toStrings(outcomes), ",") != strings.Join(toStrings(want), ",") {
		t.Errorf("outcomes %v, want %v", outcomes, want)
	}
}

func TestUnmatchedAndRefusedOverride(t *testing.T) {
	f := &fakeDecider{rules: map[string]limits.Rate{"edge:*": limits.MustParseRate("10/100ms")}, used: map[string]int64{}}
	c := serve(t, Config{Decider: f, Unmatched: true, RefuseOverride: true})
	ctx := context.Background()
	r, err := c.ShouldRateLimit(ctx, &rlsv3.RateLimitRequest{Domain: "other", Descriptors: []*rlv3.RateLimitDescriptor{Descriptor(Entry{"a", "b"})}})
	if err != nil || r.OverallCode != rlsv3.RateLimitResponse_OVER_LIMIT || r.Statuses[0].CurrentLimit != nil {
		t.Errorf("unmatched with Unmatched set: %v, %v; want OVER_LIMIT without a limit", r, err)
	}
	r, err = c.ShouldRateLimit(ctx, &rlsv3.RateLimitRequest{Domain: "edge", Descriptors: []*rlv3.RateLimitDescriptor{Descriptor(Entry{"a", "b"})}})
	if cl := r.GetStatuses()[0].GetCurrentLimit(); err != nil || cl.GetRequestsPerUnit() != 100 || cl.GetName() != "edge:* 10/100ms" {
		t.Errorf("a 100 ms window: %v, %v; want 100 per SECOND named with the exact rate", r, err)
	}
	ov := Descriptor(Entry{"a", "b"})
	ov.Limit = &rlv3.RateLimitDescriptor_RateLimitOverride{RequestsPerUnit: 5, Unit: typev3.RateLimitUnit_SECOND}
	if _, err := c.ShouldRateLimit(ctx, &rlsv3.RateLimitRequest{Domain: "edge", Descriptors: []*rlv3.RateLimitDescriptor{ov}}); status.Code(err) != codes.InvalidArgument ||
		!strings.Contains(err.Error(), "override") {
		t.Errorf("refused override: %v; want InvalidArgument naming the override", err)
	}
}

func toStrings(os []Outcome) []string {
	out := make([]string, len(os))
	for i, o := range os {
		out[i] = string(o)
	}
	return out
}

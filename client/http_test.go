package client

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/quotamesh/quotamesh"
	"github.com/quotamesh/quotamesh/limits"
)

// scripted is a Limiter answering from a list, for the middleware's tests.
type scripted struct {
	d   quotamesh.Decision
	err error
	key string
}

func (s *scripted) Allow(ctx context.Context, key string) (quotamesh.Decision, error) {
	return s.AllowN(ctx, key, 1)
}

func (s *scripted) AllowN(_ context.Context, key string, _ int64) (quotamesh.Decision, error) {
	s.key = key
	return s.d, s.err
}

func (s *scripted) Close() error { return nil }

func TestMiddlewareHeaders(t *testing.T) {
	byUser := func(r *http.Request) string { return r.Header.Get("X-User") }
	ok := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusTeapot) })
	rate := limits.MustParseRate("100/min")
	for _, tc := range []struct {
		name        string
		d           quotamesh.Decision
		err         error
		opts        []MiddlewareOption
		user        string
		status      int
		retryAfter  string
		rateLimit   string
		policy      string
		limiterSeen bool
	}{
		{name: "allowed", d: quotamesh.Decision{Allowed: true, Remaining: 41, Limit: rate},
			user: "u1", status: http.StatusTeapot, rateLimit: `"default";r=41`, policy: `"default";q=100;w=60`},
		{name: "denied", d: quotamesh.Decision{RetryAfter: 1500 * time.Millisecond, Limit: rate},
			user: "u1", status: http.StatusTooManyRequests, retryAfter: "2", rateLimit: `"default";r=0;t=2`, policy: `"default";q=100;w=60`},
		{name: "denied within a second", d: quotamesh.Decision{RetryAfter: 3 * time.Millisecond, Limit: limits.MustParseRate("5/100ms")},
			opts: []MiddlewareOption{WithPolicyName(`per "user"`)},
			user: "u1", status: http.StatusTooManyRequests, retryAfter: "1", rateLimit: `"per \"user\"";r=0;t=1`, policy: `"per \"user\"";q=5`},
		{name: "denied forever", d: quotamesh.Decision{RetryAfter: retryNever, Limit: rate},
			user: "u1", status: http.StatusTooManyRequests, rateLimit: `"default";r=0`, policy: `"default";q=100;w=60`},
		{name: "unlimited", d: quotamesh.Decision{Allowed: true, Unlimited: true}, user: "u1", status: http.StatusTeapot},
		{name: "exempt", d: quotamesh.Decision{}, user: "", status: http.StatusTeapot},
		{name: "fail open", err: quotamesh.ErrUnavailable, user: "u1", status: http.StatusTeapot},
		{name: "fail closed", err: quotamesh.ErrUnavailable, opts: []MiddlewareOption{WithFailClosed()},
			user: "u1", status: http.StatusServiceUnavailable, retryAfter: "1"},
		{name: "malformed key refused even failing open", err: limits.ErrInvalidKey,
			user: "u1", status: http.StatusBadRequest},
		{name: "full registry denies", d: quotamesh.Decision{Unlimited: true}, err: quotamesh.ErrTooManyKeys,
			user: "u1", status: http.StatusTooManyRequests},
	} {
		t.Run(tc.name, func(t *testing.T) {
			lim := &scripted{d: tc.d, err: tc.err}
			var hooked error
			opts := append(tc.opts, WithErrorHook(func(_ *http.Request, err error) { hooked = err }))
			h := Middleware(lim, byUser, opts...)(ok)
			req := httptest.NewRequest("GET", "/", nil)
			if tc.user != "" {
				req.Header.Set("X-User", tc.user)
			}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			res := rec.Result()
			if res.StatusCode != tc.status {
				t.Errorf("status %d, want %d", res.StatusCode, tc.status)
			}
			for _, f := range []struct{ name, want string }{
				{"Retry-After", tc.retryAfter}, {"RateLimit", tc.rateLimit}, {"RateLimit-Policy", tc.policy},
			} {
				if got := res.Header.Get(f.name); got != f.want {
					t.Errorf("%s: %q, want %q", f.name, got, f.want)
				}
			}
			if tc.user != "" && lim.key != tc.user {
				t.Errorf("limiter asked for key %q, want %q", lim.key, tc.user)
			}
			if !errors.Is(hooked, tc.err) {
				t.Errorf("error hook saw %v, want %v", hooked, tc.err)
			}
		})
	}
}

// TestMiddlewareRefusesMalformedKeys: a client choosing a malformed key
// must not skip the limit.
func TestMiddlewareRefusesMalformedKeys(t *testing.T) {
	ca := newTestCA(t)
	srv := newTestServer(t, ca, "n1", rule("ip:*", "3/s"))
	c := dialT(t, ca, []string{srv.addr()})
	h := Middleware(c, func(r *http.Request) string { return "ip:" + r.Header.Get("X-Ip") })(
		http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok")) }))
	req := httptest.NewRequest("GET", "/", nil)
	req.Header.Set("X-Ip", "1.2.3.4 evil")
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Code != http.StatusBadRequest {
		t.Errorf("a malformed key got %d, want 400", rec.Code)
	}
}

// TestMiddlewareWithClient puts the middleware in front of a handler with
// a real client: the 4th request of a 3/s key gets 429.
func TestMiddlewareWithClient(t *testing.T) {
	ca := newTestCA(t)
	srv := newTestServer(t, ca, "n1", rule("ip:*", "3/s"))
	c := dialT(t, ca, []string{srv.addr()})
	h := Middleware(c, func(r *http.Request) string { return "ip:" + r.Header.Get("X-Ip") })(
		http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok")) }))
	ts := httptest.NewServer(h)
	defer ts.Close()
	var codes []int
	for range 4 {
		req, _ := http.NewRequest("GET", ts.URL, nil)
		req.Header.Set("X-Ip", "10.0.0.1")
		res, err := ts.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_ = res.Body.Close()
		codes = append(codes, res.StatusCode)
		if res.Header.Get("RateLimit-Policy") != `"default";q=3;w=1` {
			t.Errorf("RateLimit-Policy %q", res.Header.Get("RateLimit-Policy"))
		}
		if res.StatusCode == http.StatusTooManyRequests && res.Header.Get("Retry-After") != "1" {
			t.Errorf("429 with Retry-After %q", res.Header.Get("Retry-After"))
		}
	}
	want := []int{200, 200, 200, 429}
	for i := range want {
		if codes[i] != want[i] {
			t.Fatalf("statuses %v, want %v", codes, want)
		}
	}
}

package client

import (
	"errors"
	"net/http"
	"strconv"

	"github.com/quotamesh/quotamesh"
	"github.com/quotamesh/quotamesh/internal/rlheader"
	"github.com/quotamesh/quotamesh/limits"
)

// The HTTP middleware writes the rate limit fields of the IETF draft as
// package rlheader describes them: RateLimit-Policy and RateLimit for keys
// under a rule, Retry-After on denials.

// MiddlewareOption configures Middleware.
type MiddlewareOption func(*middleware)

// WithPolicyName names the quota policy in the RateLimit and
// RateLimit-Policy fields (default "default"). Characters outside printable
// ASCII are dropped.
func WithPolicyName(name string) MiddlewareOption {
	return func(m *middleware) { m.policy = name }
}

// WithFailClosed makes the middleware answer 503 Service Unavailable when
// the limiter cannot decide (no node reachable, the context ended, ...). By
// default such requests are let through: a rate limiter that fails takes
// no service down with it. A malformed key is refused either way.
func WithFailClosed() MiddlewareOption { return func(m *middleware) { m.failClosed = true } }

// WithErrorHook calls f with every error the limiter returns (for logs or
// metrics), before the fail-open or fail-closed answer.
func WithErrorHook(f func(*http.Request, error)) MiddlewareOption {
	return func(m *middleware) { m.onError = f }
}

type middleware struct {
	lim        quotamesh.Limiter
	key        func(*http.Request) string
	policy     string // quoted, ready for the fields
	failClosed bool
	onError    func(*http.Request, error)
	next       http.Handler
}

// Middleware returns HTTP middleware that admits each request through lim
// under the key key(r) returns (a request for which it returns "" is
// exempt). A denied request gets 429 Too Many Requests with Retry-After
// (whole seconds, rounded up) and the RateLimit fields; an admitted one
// goes to the next handler with RateLimit-Policy and RateLimit set. Keys
// that match no rule get no fields. A key that is not a valid key
// (limits.ValidateKey: 1 to 256 bytes of printable ASCII without spaces) is
// answered 400 Bad Request: a key made from request data must be cleaned
// or hashed by key.
func Middleware(lim quotamesh.Limiter, key func(*http.Request) string, opts ...MiddlewareOption) func(http.Handler) http.Handler {
	m := middleware{lim: lim, key: key, policy: "default"}
	for _, o := range opts {
		o(&m)
	}
	m.policy = rlheader.SFString(m.policy)
	return func(next http.Handler) http.Handler {
		h := m
		h.next = next
		return &h
	}
}

func (m *middleware) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	key := m.key(r)
	if key == "" {
		m.next.ServeHTTP(w, r)
		return
	}
	d, err := m.lim.Allow(r.Context(), key)
	if err != nil {
		if m.onError != nil {
			m.onError(r, err)
		}
		if errors.Is(err, limits.ErrInvalidKey) {
			// Never let such a request through: a client that controls
			// what the key is made of could otherwise skip the limit.
			http.Error(w, "malformed rate limit key", http.StatusBadRequest)
			return
		}
		// A full registry still answered (the node's when-full policy).
		if !errors.Is(err, quotamesh.ErrTooManyKeys) {
			if m.failClosed {
				w.Header().Set("Retry-After", "1")
				http.Error(w, "rate limiter unavailable", http.StatusServiceUnavailable)
				return
			}
			m.next.ServeHTTP(w, r)
			return
		}
	}
	h := w.Header()
	if !d.Unlimited && d.Limit != (limits.Rate{}) {
		h.Set(rlheader.Policy, rlheader.PolicyField(m.policy, d.Limit))
		h.Set(rlheader.Limit, rlheader.LimitField(m.policy, d))
	}
	if d.Allowed {
		m.next.ServeHTTP(w, r)
		return
	}
	if s, ok := rlheader.RetrySeconds(d.RetryAfter); ok {
		h.Set(rlheader.RetryAfter, strconv.FormatInt(s, 10))
	}
	http.Error(w, "too many requests", http.StatusTooManyRequests)
}

package client

import (
	"errors"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/quotamesh/quotamesh"
	"github.com/quotamesh/quotamesh/limits"
)

// The HTTP middleware writes the fields of draft-ietf-httpapi-ratelimit-
// headers-11 (May 2026; the syntax is unchanged since -09), as Structured
// Field lists (RFC 9651):
//
//	RateLimit-Policy: "<policy>";q=<count>;w=<window seconds>
//	RateLimit: "<policy>";r=<remaining>[;t=<seconds>]
//
// q and w are the key's rule (w only for windows of whole seconds, since
// the draft has no sub-second windows). r is what the deciding node or
// lease could still admit: a hint, as the draft says, not the cluster-wide
// remainder. t is given on denials only, equal to Retry-After: on a sliding
// window room comes back slot by slot, so no honest reset time exists for
// an allowed request.

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
	m.policy = sfString(m.policy)
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
		h.Set("RateLimit-Policy", policyField(m.policy, d.Limit))
		h.Set("RateLimit", limitField(m.policy, d))
	}
	if d.Allowed {
		m.next.ServeHTTP(w, r)
		return
	}
	if s, ok := retrySeconds(d.RetryAfter); ok {
		h.Set("Retry-After", strconv.FormatInt(s, 10))
	}
	http.Error(w, "too many requests", http.StatusTooManyRequests)
}

// policyField is a RateLimit-Policy value: "name";q=count[;w=seconds].
func policyField(name string, r limits.Rate) string {
	b := make([]byte, 0, len(name)+32)
	b = append(b, name...)
	b = append(b, ";q="...)
	b = strconv.AppendInt(b, r.Count, 10)
	if r.Window%time.Second == 0 {
		b = append(b, ";w="...)
		b = strconv.AppendInt(b, int64(r.Window/time.Second), 10)
	}
	return string(b)
}

// limitField is a RateLimit value: "name";r=remaining[;t=seconds].
func limitField(name string, d quotamesh.Decision) string {
	b := make([]byte, 0, len(name)+32)
	b = append(b, name...)
	b = append(b, ";r="...)
	b = strconv.AppendInt(b, max(d.Remaining, 0), 10)
	if s, ok := retrySeconds(d.RetryAfter); ok && !d.Allowed {
		b = append(b, ";t="...)
		b = strconv.AppendInt(b, s, 10)
	}
	return string(b)
}

// retrySeconds rounds a RetryAfter up to whole seconds, at least 1 (HTTP's
// delay-seconds); false when there is none or waiting cannot help.
func retrySeconds(d time.Duration) (int64, bool) {
	if d <= 0 || d > time.Duration(math.MaxInt64)-time.Second {
		return 0, false
	}
	return max(1, int64((d+time.Second-1)/time.Second)), true
}

// sfString quotes s as a Structured Field String (RFC 9651 §3.3.3): only
// printable ASCII, with '"' and '\' escaped.
func sfString(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x20 || c > 0x7e {
			continue
		}
		if c == '"' || c == '\\' {
			b.WriteByte('\\')
		}
		b.WriteByte(c)
	}
	b.WriteByte('"')
	return b.String()
}

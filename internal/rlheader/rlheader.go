// Package rlheader writes the rate limit header fields of
// draft-ietf-httpapi-ratelimit-headers-11 (May 2026; the syntax is
// unchanged since -09) as Structured Field lists (RFC 9651), the same way
// for every surface that answers HTTP or tells a proxy what to answer: the
// SDK's HTTP middleware, the node's HTTP decision API and its Envoy rate
// limit service.
//
//	RateLimit-Policy: "<policy>";q=<count>;w=<window seconds>
//	RateLimit: "<policy>";r=<remaining>[;t=<seconds>]
//	Retry-After: <seconds>
//
// q and w are the key's rule (w only for windows of whole seconds, since
// the draft has no sub-second windows). r is what the deciding node or
// lease could still admit: a hint, as the draft says, not the cluster-wide
// remainder. t is given on denials only, equal to Retry-After: on a sliding
// window room comes back slot by slot, so no honest reset time exists for
// an allowed request.
//
// The package is pure.
package rlheader

import (
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/quotamesh/quotamesh"
	"github.com/quotamesh/quotamesh/limits"
)

// Field names.
const (
	Policy     = "RateLimit-Policy"
	Limit      = "RateLimit"
	RetryAfter = "Retry-After"
)

// Fields returns the fields for decision d of a policy named name (as
// given, unquoted): none for a key that no rule governs, RateLimit-Policy
// and RateLimit otherwise, and Retry-After on a denial that a wait can
// help. Each is a name and a value, in that order.
func Fields(name string, d quotamesh.Decision) [][2]string {
	var out [][2]string
	q := SFString(name)
	if !d.Unlimited && d.Limit != (limits.Rate{}) {
		out = append(out, [2]string{Policy, PolicyField(q, d.Limit)}, [2]string{Limit, LimitField(q, d)})
	}
	if s, ok := RetrySeconds(d.RetryAfter); ok && !d.Allowed {
		out = append(out, [2]string{RetryAfter, strconv.FormatInt(s, 10)})
	}
	return out
}

// PolicyField is a RateLimit-Policy value: "name";q=count[;w=seconds].
// quoted is the policy name as SFString returns it.
func PolicyField(quoted string, r limits.Rate) string {
	b := make([]byte, 0, len(quoted)+32)
	b = append(b, quoted...)
	b = append(b, ";q="...)
	b = strconv.AppendInt(b, r.Count, 10)
	if r.Window%time.Second == 0 {
		b = append(b, ";w="...)
		b = strconv.AppendInt(b, int64(r.Window/time.Second), 10)
	}
	return string(b)
}

// LimitField is a RateLimit value: "name";r=remaining[;t=seconds]. quoted
// is the policy name as SFString returns it.
func LimitField(quoted string, d quotamesh.Decision) string {
	b := make([]byte, 0, len(quoted)+32)
	b = append(b, quoted...)
	b = append(b, ";r="...)
	b = strconv.AppendInt(b, max(d.Remaining, 0), 10)
	if s, ok := RetrySeconds(d.RetryAfter); ok && !d.Allowed {
		b = append(b, ";t="...)
		b = strconv.AppendInt(b, s, 10)
	}
	return string(b)
}

// RetrySeconds rounds a RetryAfter up to whole seconds, at least 1 (HTTP's
// delay-seconds); false when there is none or waiting cannot help.
func RetrySeconds(d time.Duration) (int64, bool) {
	if d <= 0 || d > time.Duration(math.MaxInt64)-time.Second {
		return 0, false
	}
	return max(1, int64((d+time.Second-1)/time.Second)), true
}

// SFString quotes s as a Structured Field String (RFC 9651 §3.3.3): only
// printable ASCII, with '"' and '\' escaped.
func SFString(s string) string {
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

package httpapi

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/quotamesh/quotamesh"
	"github.com/quotamesh/quotamesh/limits"
)

type fakeDecider struct {
	used  int64
	calls int
	down  bool
}

func (f *fakeDecider) Decide(_ context.Context, key string, n int64) (quotamesh.Decision, string, error) {
	f.calls++
	r := limits.MustParseRate("5/s")
	switch {
	case f.down:
		return quotamesh.Decision{}, "", quotamesh.ErrUnavailable
	case !strings.HasPrefix(key, "user:"):
		return quotamesh.Decision{Allowed: true, Unlimited: true}, "", nil
	case n > r.Count:
		return quotamesh.Decision{Limit: r}, "user:*", quotamesh.ErrExceedsLimit
	case f.used+n > r.Count:
		return quotamesh.Decision{Limit: r, RetryAfter: 1500 * time.Millisecond}, "user:*", nil
	}
	f.used += n
	return quotamesh.Decision{Allowed: true, Limit: r, Remaining: r.Count - f.used}, "user:*", nil
}

func TestAllow(t *testing.T) {
	f := &fakeDecider{}
	var outcomes []string
	srv := httptest.NewServer(New(Config{Decider: f, Observe: func(o Outcome) { outcomes = append(outcomes, string(o)) }}).Handler())
	defer srv.Close()
	post := func(ctype, body string) (int, http.Header, string) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodPost, srv.URL+Path, strings.NewReader(body))
		if ctype != "" {
			req.Header.Set("Content-Type", ctype)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, resp.Header, string(b)
	}

	code, h, body := post("application/json", `{"key": "user:42", "n": 2}`)
	var r Response
	if code != 200 || json.Unmarshal([]byte(body), &r) != nil ||
		r != (Response{Allowed: true, Key: "user:42", N: 2, Remaining: 3, Limit: "5/s", Rule: "user:*"}) {
		t.Fatalf("allowed: %d %s", code, body)
	}
	if h.Get("RateLimit-Policy") != `"user:*";q=5;w=1` || h.Get("RateLimit") != `"user:*";r=3` {
		t.Errorf("headers %v", h)
	}
	code, h, body = post("", `{"key": "user:42", "n": 4}`)
	if code != 429 || json.Unmarshal([]byte(body), &r) != nil || r.Allowed || r.RetryAfterMs != 1500 || h.Get("Retry-After") != "2" {
		t.Errorf("denied: %d %v %s", code, h, body)
	}
	code, _, body = post("application/json; charset=utf-8", `{"key": "free"}`)
	if code != 200 || json.Unmarshal([]byte(body), &r) != nil || !r.Unlimited || r.N != 1 || r.Limit != "" {
		t.Errorf("unmatched key: %d %s", code, body)
	}

	calls := f.calls
	for _, tc := range []struct {
		ctype, body string
		code        int
		want        string
	}{
		{"", `{"key": "user:1"`, 400, "malformed JSON"},
		{"", `{"key": "user:1", "count": 1}`, 400, `unknown field "count"`},
		{"", `{"key": 42}`, 400, `field "key": got a JSON number, want a string`},
		{"", `{"key": "user:1", "n": "1"}`, 400, `field "n": got a JSON string, want a whole number`},
		{"", `{"key": "user:1", "n": 1.5}`, 400, `field "n"`},
		{"", `{"n": 1}`, 400, `field "key" is missing`},
		{"", `{"key": "user:1", "n": -3}`, 400, `field "n" is -3`},
		{"", `{"key": "user:1"} {"key": "user:2"}`, 400, "more than one JSON value"},
		{"", ``, 400, "empty body"},
		{"", `[]`, 400, "want"},
		{"text/plain", `{"key": "user:1"}`, 415, "application/json"},
		{"", `{"key": "` + strings.Repeat("a", 20000) + `"}`, 413, "body over"},
	} {
		code, _, body := post(tc.ctype, tc.body)
		var e Error
		if code != tc.code || json.Unmarshal([]byte(body), &e) != nil || !strings.Contains(e.Error, tc.want) {
			t.Errorf("%.40q: %d %s; want %d and %q", tc.body, code, body, tc.code, tc.want)
		}
	}
	if f.calls != calls {
		t.Errorf("bad requests were decided: %d calls", f.calls-calls)
	}
	if code, _, body := post("", `{"key": "user:1", "n": 6}`); code != 422 || !strings.Contains(body, "exceeds_limit") {
		t.Errorf("n above the limit: %d %s", code, body)
	}
	resp, err := http.Get(srv.URL + Path)
	if err != nil || resp.StatusCode != 405 || resp.Header.Get("Allow") != "POST" {
		t.Errorf("GET: %v %v", resp, err)
	}
	resp.Body.Close()
	f.down = true
	if code, h, _ := post("", `{"key": "user:1"}`); code != 503 || h.Get("Retry-After") != "1" {
		t.Errorf("unavailable: %d %v", code, h)
	}
	if len(outcomes) < 4 || outcomes[0] != "allowed" || outcomes[1] != "denied" || outcomes[len(outcomes)-1] != "unavailable" {
		t.Errorf("outcomes %v", outcomes)
	}
}

// FuzzParse: no body makes parse panic, and whatever it accepts has a key
// and a positive n.
func FuzzParse(f *testing.F) {
	for _, s := range []string{`{"key": "user:42", "n": 2}`, `{"key": "a"}`, `{"n": -1}`, `[]`, `{"key": "a"} x`, ``} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		req, err := parse(body)
		if err == nil && (req.Key == "" || req.N <= 0) {
			t.Fatalf("parse(%q) = %+v with no error", body, req)
		}
	})
}
